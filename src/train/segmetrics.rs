//! Segmentation metrics per case (binary masks in (slice, row, column) order, voxel spacing in mm),
//! following MONAI's definitions so the numbers compare with a MONAI run:
//!
//! - **Dice** 2|P∩G| / (|P|+|G|) and **IoU** |P∩G| / |P∪G|; undefined (`None`) when the truth is
//!   empty (MONAI's `ignore_empty=True`): a case without a lesion says nothing about overlap.
//! - **Surface distances.** A mask's surface is its voxels with a background 6-neighbour, the
//!   outside of the volume counting as background (`mask ^ binary_erosion(mask)` with the 3D cross).
//!   For every surface voxel of one mask, the Euclidean distance (mm) to the nearest surface voxel
//!   of the other, computed exactly by a separable squared distance transform.
//!   - **HD95**: the larger of the two directed 95th percentiles (numpy's linear interpolation), as
//!     MONAI's `compute_hausdorff_distance(percentile=95)`;
//!   - **MSD** (mean surface distance): the mean over both directions' distances together, as
//!     MONAI's `compute_average_surface_distance(symmetric=True)`.
//!
//!   Both are undefined when either mask is empty.
//!
//! Intervals over cases are percentile bootstraps (`metrics::bootstrap`) of the mean over the cases
//! where the metric is defined.

use super::metrics::{bootstrap, Interval};

/// The metrics of one case; `None` where undefined (see the module notes).
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct CaseMetrics {
    pub dice: Option<f64>,
    pub iou: Option<f64>,
    pub hd95: Option<f64>,
    pub msd: Option<f64>,
}

/// Computes every metric of one case. `dims` = (slices, rows, cols), `spacing` in mm along them.
pub fn case_metrics(pred: &[bool], truth: &[bool], dims: [usize; 3], spacing: [f64; 3]) -> CaseMetrics {
    assert_eq!(
        pred.len(),
        truth.len(),
        "prediction and truth cover the same grid"
    );
    assert_eq!(pred.len(), dims.iter().product::<usize>(), "masks match dims");
    let (mut inter, mut p, mut g) = (0u64, 0u64, 0u64);
    for (&a, &b) in pred.iter().zip(truth) {
        inter += (a && b) as u64;
        p += a as u64;
        g += b as u64;
    }
    let (dice, iou) = if g == 0 {
        (None, None)
    } else {
        (
            Some(2.0 * inter as f64 / (p + g) as f64),
            Some(inter as f64 / (p + g - inter) as f64),
        )
    };
    let (hd95, msd) = if p == 0 || g == 0 {
        (None, None)
    } else {
        let (sp, sg) = (surface(pred, dims), surface(truth, dims));
        let d_pg = distances_to(&sp, &sg, dims, spacing);
        let d_gp = distances_to(&sg, &sp, dims, spacing);
        let hd95 = percentile(&d_pg, 95.0).max(percentile(&d_gp, 95.0));
        let all = d_pg.len() + d_gp.len();
        let msd = (d_pg.iter().sum::<f64>() + d_gp.iter().sum::<f64>()) / all as f64;
        (Some(hd95), Some(msd))
    };
    CaseMetrics { dice, iou, hd95, msd }
}

/// Voxels of `mask` with a background 6-neighbour (outside the volume is background).
pub fn surface(mask: &[bool], dims: [usize; 3]) -> Vec<bool> {
    let [n, rows, cols] = dims;
    let at = |k: usize, r: usize, c: usize| (k * rows + r) * cols + c;
    let mut out = vec![false; mask.len()];
    for k in 0..n {
        for r in 0..rows {
            for c in 0..cols {
                let i = at(k, r, c);
                if !mask[i] {
                    continue;
                }
                out[i] = k == 0
                    || r == 0
                    || c == 0
                    || k + 1 == n
                    || r + 1 == rows
                    || c + 1 == cols
                    || !mask[at(k - 1, r, c)]
                    || !mask[at(k + 1, r, c)]
                    || !mask[at(k, r - 1, c)]
                    || !mask[at(k, r + 1, c)]
                    || !mask[at(k, r, c - 1)]
                    || !mask[at(k, r, c + 1)];
            }
        }
    }
    out
}

/// Distance (mm) from every set voxel of `from` to the nearest set voxel of `to` (non-empty).
fn distances_to(from: &[bool], to: &[bool], dims: [usize; 3], spacing: [f64; 3]) -> Vec<f64> {
    let d2 = squared_distance_transform(to, dims, spacing);
    from.iter()
        .zip(&d2)
        .filter(|(&f, _)| f)
        .map(|(_, &d)| d.sqrt())
        .collect()
}

/// Exact squared Euclidean distance (mm²) from every voxel to the nearest set voxel of `sites`
/// (Felzenszwalb and Huttenlocher's lower envelope of parabolas, one axis at a time).
pub fn squared_distance_transform(sites: &[bool], dims: [usize; 3], spacing: [f64; 3]) -> Vec<f64> {
    let mut f: Vec<f64> = sites
        .iter()
        .map(|&s| if s { 0.0 } else { f64::INFINITY })
        .collect();
    let strides = [dims[1] * dims[2], dims[2], 1];
    let mut line = Vec::new();
    let mut out = Vec::new();
    for axis in 0..3 {
        let len = dims[axis];
        let w2 = spacing[axis] * spacing[axis];
        // Every line along `axis`: its first voxel ranges over the other two axes.
        let others: Vec<usize> = (0..3).filter(|&a| a != axis).collect();
        for u in 0..dims[others[0]] {
            for v in 0..dims[others[1]] {
                let start = u * strides[others[0]] + v * strides[others[1]];
                line.clear();
                line.extend((0..len).map(|i| f[start + i * strides[axis]]));
                envelope(&line, w2, &mut out);
                for (i, d) in out.iter().enumerate() {
                    f[start + i * strides[axis]] = *d;
                }
            }
        }
    }
    f
}

/// One-dimensional squared distance transform of `f` with squared voxel size `w2`:
/// `out[q] = min_p f[p] + w2 (q − p)²`.
fn envelope(f: &[f64], w2: f64, out: &mut Vec<f64>) {
    let n = f.len();
    out.clear();
    out.resize(n, f64::INFINITY);
    let sites: Vec<usize> = (0..n).filter(|&p| f[p].is_finite()).collect();
    if sites.is_empty() {
        return;
    }
    // Intersection of the parabolas rooted at p and q (p < q), in voxel units.
    let meet = |p: usize, q: usize| {
        ((f[q] / w2 + (q * q) as f64) - (f[p] / w2 + (p * p) as f64)) / (2.0 * (q as f64 - p as f64))
    };
    let mut v: Vec<usize> = Vec::with_capacity(sites.len());
    let mut z: Vec<f64> = Vec::with_capacity(sites.len() + 1);
    for &q in &sites {
        while let Some(&p) = v.last() {
            if meet(p, q) <= *z.last().expect("a boundary per parabola") {
                v.pop();
                z.pop();
            } else {
                break;
            }
        }
        z.push(if v.is_empty() {
            f64::NEG_INFINITY
        } else {
            meet(*v.last().expect("a parabola"), q)
        });
        v.push(q);
    }
    let mut j = 0;
    for (q, o) in out.iter_mut().enumerate() {
        while j + 1 < v.len() && z[j + 1] < q as f64 {
            j += 1;
        }
        let p = v[j];
        *o = f[p] + w2 * (q as f64 - p as f64).powi(2);
    }
}

/// numpy's default percentile (linear interpolation between order statistics); NaN when empty.
pub fn percentile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let pos = (v.len() - 1) as f64 * q / 100.0;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

/// The mean of a metric over the cases where it is defined, with a percentile-bootstrap interval
/// over those cases; `None` when no case defines it.
pub fn mean_with_ci(values: &[Option<f64>], resamples: u32, level: f64, seed: u64) -> Option<Interval> {
    let defined: Vec<f64> = values.iter().flatten().copied().collect();
    let mean = |idx: &[usize]| Some(idx.iter().map(|&i| defined[i]).sum::<f64>() / idx.len() as f64);
    if defined.is_empty() {
        return None;
    }
    bootstrap(defined.len(), None, resamples, level, seed, mean)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_transform_matches_brute_force_on_an_anisotropic_grid() {
        let dims = [4, 5, 6];
        let spacing = [2.5, 0.7, 0.9];
        let mut sites = vec![false; 120];
        for i in [3, 40, 77, 119] {
            sites[i] = true;
        }
        let d2 = squared_distance_transform(&sites, dims, spacing);
        let coord = |i: usize| [(i / 30) as f64, (i % 30 / 6) as f64, (i % 6) as f64];
        for (i, got) in d2.iter().enumerate() {
            let want = (0..120)
                .filter(|&s| sites[s])
                .map(|s| {
                    let (a, b) = (coord(i), coord(s));
                    (0..3).map(|d| ((a[d] - b[d]) * spacing[d]).powi(2)).sum::<f64>()
                })
                .fold(f64::INFINITY, f64::min);
            assert!((got - want).abs() < 1e-9, "voxel {i}: {got} vs {want}");
        }
    }

    #[test]
    fn empty_cases_are_undefined_and_identical_masks_are_perfect() {
        let dims = [1, 3, 3];
        let mut m = vec![false; 9];
        m[4] = true;
        let same = case_metrics(&m, &m, dims, [1.0; 3]);
        assert_eq!(
            same,
            CaseMetrics {
                dice: Some(1.0),
                iou: Some(1.0),
                hd95: Some(0.0),
                msd: Some(0.0)
            }
        );
        let none = vec![false; 9];
        assert_eq!(case_metrics(&m, &none, dims, [1.0; 3]), CaseMetrics::default());
        let missed = case_metrics(&none, &m, dims, [1.0; 3]);
        assert_eq!((missed.dice, missed.hd95), (Some(0.0), None));
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 95.0), 3.85);
    }

    #[test]
    fn the_mean_and_its_interval_leave_undefined_cases_out() {
        let values = [Some(0.2), None, Some(0.6), Some(0.7), None, Some(0.9)];
        let ci = mean_with_ci(&values, 500, 0.9, 1).unwrap();
        assert!((ci.estimate - 0.6).abs() < 1e-12, "{ci:?}");
        assert!(
            ci.low < 0.6 && ci.high > 0.6 && ci.low >= 0.2 && ci.high <= 0.9,
            "{ci:?}"
        );
        assert_eq!(mean_with_ci(&[None, None], 500, 0.9, 1), None);
    }
}
