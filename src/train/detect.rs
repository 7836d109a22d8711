//! Detection from segmentation: the connected regions of a predicted probability map become
//! candidates, the regions of the truth mask become the nodules to find, and detection is measured
//! the way LUNA16 measures it.
//!
//! - **Regions** are 26-connected, on the series' pack grid. A region's centre is the mean of its
//!   voxel centres in patient coordinates (DICOM LPS, mm); its diameter is that of the sphere of
//!   the same volume, `(6V/π)^(1/3)`. A candidate's score is the highest probability in its region
//!   (voxels above `[eval] threshold` form the regions).
//! - **A hit** is a candidate whose centre lies strictly within a nodule's radius (half its
//!   diameter) of the nodule's centre. A candidate that hits no nodule is a false positive; one that
//!   hits a nodule is never a false positive, and one candidate may hit several nodules. A nodule's
//!   score is the highest score of the candidates that hit it (LUNA16 counts the others as
//!   duplicates, neither true nor false positives).
//! - **The FROC curve**: for every distinct score t, from the highest down, the false positives with
//!   a score ≥ t per scan against the fraction of all nodules whose score is ≥ t; it starts at
//!   (0, 0), and where several thresholds give the same false-positive rate the highest sensitivity
//!   is kept. Sensitivity at a rate r is read by linear interpolation between the curve's points
//!   (as LUNA16's and MONAI's `np.interp`), and past the curve's last point is that point's
//!   sensitivity.
//! - **CPM** is the mean sensitivity at 1/8, 1/4, 1/2, 1, 2, 4 and 8 false positives per scan, with a
//!   percentile-bootstrap interval over scans. Undefined when no scan has a nodule.
//!
//! Nodules that no candidate hits lower the sensitivity everywhere and never enter the curve. No
//! region is set aside as an "irrelevant finding" (LUNA16's excluded annotations): masks carry no
//! such class.

use super::metrics::{bootstrap, Interval};
use crate::catalog::labels::masks::label_components;
use crate::data::mapback::SeriesGeometry;
use serde::{Deserialize, Serialize};

/// The false-positive rates (per scan) of the FROC points and the CPM.
pub const FP_RATES: [f64; 7] = [0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0];

/// A region in patient coordinates: a candidate (with its score) or a nodule (score 1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Region {
    /// Mean voxel centre, LPS mm.
    pub centre_mm: [f64; 3],
    /// Diameter of the sphere of the region's volume, mm.
    pub diameter_mm: f64,
    pub score: f64,
    pub voxels: u64,
}

/// One scan's nodules and candidates.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Scan {
    pub nodules: Vec<Region>,
    pub candidates: Vec<Region>,
}

/// The volume of one voxel of `g`, mm³.
pub fn voxel_volume(g: &SeriesGeometry) -> f64 {
    let (a, b, c) = (g.slice_step, g.row_step, g.col_step);
    let det = a[0] * (b[1] * c[2] - b[2] * c[1]) - a[1] * (b[0] * c[2] - b[2] * c[0])
        + a[2] * (b[0] * c[1] - b[1] * c[0]);
    det.abs()
}

/// The regions of the voxels where `fg` holds on a (slices, rows, cols) grid placed by `g`; each
/// region's score is `score` of its voxel indices.
pub fn regions(
    shape: [usize; 3],
    g: &SeriesGeometry,
    fg: impl Fn(usize) -> bool,
    score: impl Fn(&[usize]) -> f64,
) -> Vec<Region> {
    let (labels, count) = label_components(shape, fg);
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); count];
    for (i, &l) in labels.iter().enumerate() {
        if l != 0 {
            members[l as usize - 1].push(i);
        }
    }
    let [_, rows, cols] = shape;
    let voxel = voxel_volume(g);
    members
        .iter()
        .map(|m| {
            let mut sum = [0.0f64; 3];
            for &i in m {
                sum[0] += (i / (rows * cols)) as f64;
                sum[1] += (i / cols % rows) as f64;
                sum[2] += (i % cols) as f64;
            }
            let mean = sum.map(|s| s / m.len() as f64);
            let volume = m.len() as f64 * voxel;
            Region {
                centre_mm: g.to_patient(mean),
                diameter_mm: (6.0 * volume / std::f64::consts::PI).cbrt(),
                score: score(m),
                voxels: m.len() as u64,
            }
        })
        .collect()
}

/// Candidates of a probability map on the pack grid: regions above `threshold`, scored by their
/// highest probability.
pub fn candidates(prob: &[f32], shape: [usize; 3], g: &SeriesGeometry, threshold: f64) -> Vec<Region> {
    regions(
        shape,
        g,
        |i| prob[i] as f64 > threshold,
        |m| {
            m.iter()
                .map(|&i| prob[i] as f64)
                .fold(f64::NEG_INFINITY, f64::max)
        },
    )
}

/// The nodules of a truth mask on the pack grid.
pub fn nodules(mask: &[bool], shape: [usize; 3], g: &SeriesGeometry) -> Vec<Region> {
    regions(shape, g, |i| mask[i], |_| 1.0)
}

fn hits(c: &Region, n: &Region) -> bool {
    let d2: f64 = (0..3).map(|a| (c.centre_mm[a] - n.centre_mm[a]).powi(2)).sum();
    d2 < (n.diameter_mm / 2.0).powi(2)
}

/// Whether `c` hits any of `nodules`.
pub fn hits_any(c: &Region, nodules: &[Region]) -> bool {
    nodules.iter().any(|n| hits(c, n))
}

/// The FROC curve of `scans` as (false positives per scan, sensitivity) points with strictly
/// increasing rates, from (0, 0); None without scans or nodules.
pub fn froc_curve(scans: &[&Scan]) -> Option<Vec<(f64, f64)>> {
    let nodules: usize = scans.iter().map(|s| s.nodules.len()).sum();
    if scans.is_empty() || nodules == 0 {
        return None;
    }
    // (score, true positive): each hit nodule once at its best score, each false positive.
    let mut events: Vec<(f64, bool)> = Vec::new();
    for s in scans {
        for n in &s.nodules {
            let best = s
                .candidates
                .iter()
                .filter(|c| hits(c, n))
                .map(|c| c.score)
                .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
            if let Some(best) = best {
                events.push((best, true));
            }
        }
        for c in &s.candidates {
            if !s.nodules.iter().any(|n| hits(c, n)) {
                events.push((c.score, false));
            }
        }
    }
    events.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut curve: Vec<(f64, f64)> = vec![(0.0, 0.0)];
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut i = 0;
    while i < events.len() {
        let t = events[i].0;
        while i < events.len() && events[i].0.total_cmp(&t).is_eq() {
            match events[i].1 {
                true => tp += 1,
                false => fp += 1,
            }
            i += 1;
        }
        let point = (fp as f64 / scans.len() as f64, tp as f64 / nodules as f64);
        match curve.last_mut() {
            Some(last) if last.0 == point.0 => last.1 = last.1.max(point.1),
            _ => curve.push(point),
        }
    }
    Some(curve)
}

/// Sensitivity at `rate` false positives per scan, interpolated on `curve`.
pub fn sensitivity_at(curve: &[(f64, f64)], rate: f64) -> f64 {
    match curve.iter().position(|p| p.0 >= rate) {
        None => curve.last().map_or(0.0, |p| p.1),
        Some(0) => curve[0].1,
        Some(j) => {
            let ((x0, y0), (x1, y1)) = (curve[j - 1], curve[j]);
            y0 + (y1 - y0) * (rate - x0) / (x1 - x0)
        }
    }
}

/// The mean sensitivity at [`FP_RATES`].
pub fn cpm(scans: &[&Scan]) -> Option<f64> {
    let curve = froc_curve(scans)?;
    Some(FP_RATES.iter().map(|&r| sensitivity_at(&curve, r)).sum::<f64>() / FP_RATES.len() as f64)
}

/// Detection measured over scans.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Froc {
    pub scans: usize,
    pub nodules: usize,
    pub candidates: usize,
    /// Nodules hit by any candidate (the curve's highest sensitivity).
    pub nodules_hit: usize,
    /// Sensitivity at each of [`FP_RATES`].
    pub sensitivity: Vec<f64>,
    /// CPM with its bootstrap interval over scans.
    pub cpm: Interval,
}

/// FROC points and CPM of `scans`, the CPM's interval from `resamples` bootstrap draws of scans.
pub fn froc(scans: &[Scan], resamples: u32, level: f64, seed: u64) -> Option<Froc> {
    let all: Vec<&Scan> = scans.iter().collect();
    let curve = froc_curve(&all)?;
    let cpm = bootstrap(scans.len(), None, resamples, level, seed, |idx| {
        cpm(&idx.iter().map(|&i| &scans[i]).collect::<Vec<_>>())
    })?;
    Some(Froc {
        scans: scans.len(),
        nodules: scans.iter().map(|s| s.nodules.len()).sum(),
        candidates: scans.iter().map(|s| s.candidates.len()).sum(),
        nodules_hit: scans
            .iter()
            .map(|s| {
                s.nodules
                    .iter()
                    .filter(|n| s.candidates.iter().any(|c| hits(c, n)))
                    .count()
            })
            .sum(),
        sensitivity: FP_RATES.iter().map(|&r| sensitivity_at(&curve, r)).collect(),
        cpm,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(x: f64, score: f64) -> Region {
        Region {
            centre_mm: [x, 0.0, 0.0],
            diameter_mm: 10.0,
            score,
            voxels: 1,
        }
    }

    #[test]
    fn one_scan_with_a_hit_and_a_false_positive_above_it() {
        let scan = Scan {
            nodules: vec![at(0.0, 1.0)],
            candidates: vec![at(3.0, 0.6), at(50.0, 0.9)],
        };
        let curve = froc_curve(&[&scan]).unwrap();
        assert_eq!(curve, vec![(0.0, 0.0), (1.0, 1.0)]);
        assert_eq!(sensitivity_at(&curve, 0.5), 0.5);
        assert_eq!(sensitivity_at(&curve, 8.0), 1.0);
    }

    #[test]
    fn a_region_sits_at_its_patient_centre_with_its_equivalent_diameter() {
        // 2 slices 2.5 mm apart, 0.5 mm pixels; a 2×2×2 block at slices 0–1, rows 1–2, cols 1–2.
        let g = SeriesGeometry::new(
            [10.0, 20.0, 30.0],
            [1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
            [0.5, 0.5],
            [0.0, 0.0, 2.5],
        );
        let shape = [2, 4, 4];
        let mask: Vec<bool> = (0..32)
            .map(|i| {
                let (r, c) = (i / 4 % 4, i % 4);
                (1..=2).contains(&r) && (1..=2).contains(&c)
            })
            .collect();
        let r = &nodules(&mask, shape, &g)[0];
        assert_eq!(r.voxels, 8);
        assert_eq!(r.centre_mm, [10.75, 20.75, 31.25]);
        let volume = 8.0 * 0.5 * 0.5 * 2.5;
        assert!((r.diameter_mm - (6.0 * volume / std::f64::consts::PI).cbrt()).abs() < 1e-12);
    }
}
