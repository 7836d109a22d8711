//! Whether maps point at the lesion: pointing game, energy inside the lesion, deletion/insertion
//! AUC, and the model-parameter randomisation sanity check (Adebayo et al.). Maps and masks share one
//! grid (D, H, W) with a voxel spacing in mm.

use crate::backend::Dims3;
use serde::Serialize;

/// A ball in the grid's millimetre frame (z, y, x measured from voxel (0, 0, 0)).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Lesion {
    pub centre_mm: [f64; 3],
    pub radius_mm: f64,
}

fn index_to_zyx(i: usize, dims: Dims3) -> [usize; 3] {
    let (h, w) = (dims[1] as usize, dims[2] as usize);
    [i / (h * w), (i / w) % h, i % w]
}

/// Voxels whose centre lies inside any lesion.
pub fn lesion_mask(dims: Dims3, spacing_mm: [f64; 3], lesions: &[Lesion]) -> Vec<bool> {
    let len: usize = dims.iter().map(|&d| d as usize).product();
    (0..len)
        .map(|i| {
            let v = index_to_zyx(i, dims);
            lesions.iter().any(|l| {
                let d2: f64 = (0..3)
                    .map(|a| (v[a] as f64 * spacing_mm[a] - l.centre_mm[a]).powi(2))
                    .sum();
                d2 <= l.radius_mm * l.radius_mm
            })
        })
        .collect()
}

/// Index of the map's maximum (the first one on ties).
pub fn argmax(map: &[f32]) -> Option<usize> {
    map.iter()
        .enumerate()
        .fold(None, |best: Option<(usize, f32)>, (i, &v)| match best {
            Some((_, bv)) if bv >= v => best,
            _ if v.is_nan() => best,
            _ => Some((i, v)),
        })
        .map(|(i, _)| i)
}

/// Distance in mm from voxel `p` to the nearest mask voxel (centre to centre; 0 inside the mask).
/// None when the mask is empty.
pub fn distance_to_mask_mm(p: usize, mask: &[bool], dims: Dims3, spacing_mm: [f64; 3]) -> Option<f64> {
    if mask.get(p) == Some(&true) {
        return Some(0.0);
    }
    let p = index_to_zyx(p, dims);
    mask.iter()
        .enumerate()
        .filter(|(_, &m)| m)
        .map(|(i, _)| {
            let v = index_to_zyx(i, dims);
            (0..3)
                .map(|a| ((v[a] as f64 - p[a] as f64) * spacing_mm[a]).powi(2))
                .sum::<f64>()
                .sqrt()
        })
        .min_by(f64::total_cmp)
}

/// Where a map points: its maximum as (slice, row, col) and its distance in mm to the lesion mask.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Peak {
    pub voxel: [usize; 3],
    /// None when the mask is empty.
    pub distance_mm: Option<f64>,
}

/// The map's maximum and how far it lies from the mask; None for an empty or all-NaN map.
pub fn peak(map: &[f32], mask: &[bool], dims: Dims3, spacing_mm: [f64; 3]) -> Option<Peak> {
    let i = argmax(map)?;
    Some(Peak {
        voxel: index_to_zyx(i, dims),
        distance_mm: distance_to_mask_mm(i, mask, dims, spacing_mm),
    })
}

/// Pointing game: a hit when the map's maximum lies in the mask or within `margin_mm` of a mask
/// voxel (centre to centre). None when the mask is empty (nothing to point at).
pub fn pointing_hit(
    map: &[f32],
    mask: &[bool],
    dims: Dims3,
    spacing_mm: [f64; 3],
    margin_mm: f64,
) -> Option<bool> {
    let d = peak(map, mask, dims, spacing_mm)?.distance_mm?;
    Some(d <= margin_mm)
}

/// Wilson score interval (95%, z = 1.96) of a proportion of `k` in `n`: how far a hit rate on a
/// few dozen series can be trusted. None for n = 0.
pub fn wilson_interval(k: usize, n: usize) -> Option<[f64; 2]> {
    if n == 0 {
        return None;
    }
    let (z, n, p) = (1.959_963_984_540_054_f64, n as f64, k as f64 / n as f64);
    let centre = (p + z * z / (2.0 * n)) / (1.0 + z * z / n);
    let half = z / (1.0 + z * z / n) * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt();
    Some([(centre - half).max(0.0), (centre + half).min(1.0)])
}

/// Fraction of the map's (non-negative) energy inside the mask; None for an empty mask or a zero map.
pub fn energy_inside(map: &[f32], mask: &[bool]) -> Option<f64> {
    if !mask.iter().any(|&m| m) {
        return None;
    }
    let total: f64 = map.iter().map(|&v| v.max(0.0) as f64).sum();
    let inside: f64 = map
        .iter()
        .zip(mask)
        .filter(|(_, &m)| m)
        .map(|(&v, _)| v.max(0.0) as f64)
        .sum();
    (total > 0.0).then(|| inside / total)
}

/// Voxel order by decreasing map value (ties by index, so the order is deterministic).
fn ranked(map: &[f32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..map.len()).collect();
    order.sort_by(|&a, &b| map[b].total_cmp(&map[a]).then(a.cmp(&b)));
    order
}

/// Inputs of the deletion and insertion curves (Petsiuk et al.), `steps + 1` each. Deletion: the
/// most salient voxels of every channel are set to `baseline` first, so the score should drop fast
/// (low AUC is good). Insertion: from an all-`baseline` input the most salient voxels are restored
/// first, so the score should rise fast (high AUC is good). `input` is (C, S), `map` (S).
pub fn perturbation_inputs(input: &[f32], map: &[f32], baseline: f32, steps: usize) -> [Vec<Vec<f32>>; 2] {
    let sp = map.len();
    let channels = input.len().checked_div(sp).unwrap_or(0);
    let order = ranked(map);
    let steps = steps.max(1);
    let mut deleted = input.to_vec();
    let mut inserted = vec![baseline; input.len()];
    let (mut del, mut ins) = (vec![deleted.clone()], vec![inserted.clone()]);
    for k in 1..=steps {
        let (from, to) = ((k - 1) * sp / steps, k * sp / steps);
        for &v in &order[from..to] {
            for c in 0..channels {
                deleted[c * sp + v] = baseline;
                inserted[c * sp + v] = input[c * sp + v];
            }
        }
        del.push(deleted.clone());
        ins.push(inserted.clone());
    }
    [del, ins]
}

/// Deletion and insertion AUC: the trapezoid means of `score` over [`perturbation_inputs`].
pub fn deletion_insertion<E>(
    input: &[f32],
    map: &[f32],
    baseline: f32,
    steps: usize,
    mut score: impl FnMut(&[f32]) -> Result<f64, E>,
) -> Result<(f64, f64), E> {
    let [del, ins] = perturbation_inputs(input, map, baseline, steps);
    let d: Vec<f64> = del.iter().map(|x| score(x)).collect::<Result<_, E>>()?;
    let i: Vec<f64> = ins.iter().map(|x| score(x)).collect::<Result<_, E>>()?;
    Ok((trapezoid_mean(&d), trapezoid_mean(&i)))
}

/// Area under a curve sampled at equal steps on [0, 1].
pub fn trapezoid_mean(ys: &[f64]) -> f64 {
    if ys.len() < 2 {
        return ys.first().copied().unwrap_or(0.0);
    }
    let n = (ys.len() - 1) as f64;
    ys.windows(2).map(|w| (w[0] + w[1]) / 2.0).sum::<f64>() / n
}

/// Ranks 1..n with ties given their average rank.
fn average_ranks(x: &[f32]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..x.len()).collect();
    order.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let mut ranks = vec![0.0; x.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && x[order[j + 1]] == x[order[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for &o in &order[i..=j] {
            ranks[o] = rank;
        }
        i = j + 1;
    }
    ranks
}

/// Spearman rank correlation (Pearson correlation of average ranks); None when either side is
/// constant or the lengths differ.
pub fn spearman(a: &[f32], b: &[f32]) -> Option<f64> {
    if a.len() != b.len() || a.len() < 2 {
        return None;
    }
    let (ra, rb) = (average_ranks(a), average_ranks(b));
    let n = ra.len() as f64;
    let (ma, mb) = (ra.iter().sum::<f64>() / n, rb.iter().sum::<f64>() / n);
    let (mut cov, mut va, mut vb) = (0.0, 0.0, 0.0);
    for (x, y) in ra.iter().zip(&rb) {
        cov += (x - ma) * (y - mb);
        va += (x - ma) * (x - ma);
        vb += (y - mb) * (y - mb);
    }
    (va > 0.0 && vb > 0.0).then(|| cov / (va * vb).sqrt())
}

/// The randomisation sanity check over cascading stages (stage k: the top k layers re-initialised).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SanityCheck {
    /// Mean Spearman correlation with the trained model's maps, per stage (stage 0 = trained = 1).
    pub correlations: Vec<f64>,
    /// The correlation at the last stage is below `MAX_FINAL_CORRELATION` and below the first
    /// randomised stage's or equal to it within 0.05 (it must fall, not hold).
    pub passed: bool,
}

/// A map that still matches the trained one this well after every layer is randomised does not
/// depend on what the model learned.
pub const MAX_FINAL_CORRELATION: f64 = 0.5;

/// Judges per-stage maps: `stages[k][m]` is map m at stage k (stage 0 the trained model).
pub fn sanity_check(stages: &[Vec<Vec<f32>>]) -> SanityCheck {
    let mut correlations = Vec::with_capacity(stages.len());
    for stage in stages {
        let cs: Vec<f64> = stage
            .iter()
            .zip(&stages[0])
            .map(|(m, t)| spearman(m, t).unwrap_or(0.0))
            .collect();
        correlations.push(if cs.is_empty() {
            0.0
        } else {
            cs.iter().sum::<f64>() / cs.len() as f64
        });
    }
    let last = correlations.last().copied().unwrap_or(1.0);
    let first_random = correlations.get(1).copied().unwrap_or(1.0);
    let passed = correlations.len() > 1 && last < MAX_FINAL_CORRELATION && last <= first_random + 0.05;
    SanityCheck { correlations, passed }
}

/// Quality of one series' map against its lesions.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct SeriesQuality {
    pub(crate) series_key: String,
    pub(crate) score: f64,
    pub(crate) hit: Option<bool>,
    /// The map's maximum (slice, row, col) in the pack volume and its distance to the lesion (mm).
    pub(crate) peak: Option<Peak>,
    pub(crate) energy_inside: Option<f64>,
    pub(crate) deletion_auc: f64,
    pub(crate) insertion_auc: f64,
}

/// Quality of one layer over a split.
#[derive(Clone, Debug, Serialize)]
pub struct LayerQuality {
    pub method: String,
    pub layer: String,
    pub node: usize,
    /// In-plane input pixels between neighbouring cells of the layer: a bilinearly up-sampled map
    /// peaks on a cell centre, so its maximum can sit up to half this (per axis) from a lesion
    /// centre however well the model localises.
    pub cell_px: f64,
    pub series: usize,
    pub hits: usize,
    pub hit_rate: Option<f64>,
    /// Wilson 95% interval of the hit rate.
    pub hit_rate_ci: Option<[f64; 2]>,
    /// Median distance (mm) from each series' map maximum to its nearest lesion voxel.
    pub median_distance_mm: Option<f64>,
    pub energy_inside: Option<f64>,
    pub deletion_auc: Option<f64>,
    pub insertion_auc: Option<f64>,
}

pub(crate) fn mean(v: impl Iterator<Item = f64>) -> Option<f64> {
    let (s, n) = v.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    (n > 0).then(|| s / n as f64)
}

pub(crate) fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}
