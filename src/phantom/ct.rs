//! From the analytic chest to the numbers a CT series stores: noise, int16 rounding and clipping,
//! the circular field of view, the storage convention (signed or unsigned with intercept), and the
//! InstanceNumber / file order that real archives scramble.

use super::cohort::{CtStyle, PatientPlan};
use super::seed::{hex_name, stream_rng, uid, unit_noise};
use rand::seq::SliceRandom;

/// Scanners clip reconstructed values at −1024 HU (air with noise would go lower).
pub(crate) const HU_MIN: i16 = -1024;
/// Upper clip, chosen so every storage variant (12-bit signed or unsigned) holds every value.
pub(crate) const HU_MAX: i16 = 2047;
/// Unsigned series store HU − this intercept (the common scanner convention: intercept −1024).
pub(crate) const UNSIGNED_INTERCEPT: i32 = -1024;
/// PixelPaddingValue outside the circular FOV: −2000 in signed series, 0 in unsigned ones.
pub(crate) const PADDING_SIGNED: i32 = -2000;
pub(crate) const PADDING_UNSIGNED: i32 = 0;

impl CtStyle {
    pub fn rescale_intercept(&self) -> i32 {
        if self.unsigned {
            UNSIGNED_INTERCEPT
        } else {
            0
        }
    }

    /// The stored value outside the FOV, when the series has one.
    pub fn padding_value(&self) -> Option<i32> {
        match (self.circular_fov, self.unsigned) {
            (false, _) => None,
            (true, false) => Some(PADDING_SIGNED),
            (true, true) => Some(PADDING_UNSIGNED),
        }
    }

    /// Stored value of a HU value (the inverse of rescale), as the 16-bit word written.
    pub fn stored(&self, hu: i16) -> i32 {
        i32::from(hu) - self.rescale_intercept()
    }
}

/// A CT series as computed, before encoding.
pub(crate) struct RenderedCt {
    /// Written HU, voxels outside a circular FOV already at −1024.
    pub hu: Vec<i16>, // (slices, rows, cols), ascending z
    /// True outside the reconstruction circle (only in series that have one).
    pub outside_fov: Vec<bool>, // (rows, cols)
    /// Voxels whose stored word equals PixelPaddingValue.
    pub padding_voxels: u64,
}

impl RenderedCt {
    /// The 16-bit words stored for slice `k` (two's complement for signed series).
    pub fn stored_plane(&self, style: &CtStyle, k: usize) -> Vec<u16> {
        let plane_len = self.outside_fov.len();
        let padding = style.padding_value();
        self.hu[k * plane_len..(k + 1) * plane_len]
            .iter()
            .zip(&self.outside_fov)
            .map(|(&hu, &outside)| match (outside, padding) {
                (true, Some(pad)) => pad as u16,
                _ => style.stored(hu) as u16,
            })
            .collect()
    }
}

/// Renders the written HU of every voxel and the FOV mask.
pub(crate) fn render_volume(plan: &PatientPlan) -> RenderedCt {
    let g = &plan.geometry;
    let plane_len = g.rows * g.cols;
    let outside_fov = fov_mask(plan);
    let mut hu = Vec::with_capacity(g.slices * plane_len); // (slices, rows, cols)
    for k in 0..g.slices {
        let plane = plan.anatomy.render_plane(g, g.z(k));
        for (p, &clean) in plane.iter().enumerate() {
            let index = (k * plane_len + p) as u64;
            let noisy = clean + plan.ct.noise_sigma_hu * unit_noise(plan.noise_stream, index);
            let value = if outside_fov[p] {
                HU_MIN
            } else {
                (noisy.round() as i32).clamp(HU_MIN.into(), HU_MAX.into()) as i16
            };
            hu.push(value);
        }
    }
    let padding = match plan.ct.padding_value() {
        None => 0,
        Some(pad) => {
            // Inside the FOV an unsigned −1024 is stored as 0 too: a reader cannot tell it from
            // padding, so it counts (and maps to −1024 either way).
            let stored_pad =
                |k: usize, p: usize| outside_fov[p] || plan.ct.stored(hu[k * plane_len + p]) == pad;
            (0..g.slices)
                .map(|k| (0..plane_len).filter(|&p| stored_pad(k, p)).count() as u64)
                .sum()
        }
    };
    RenderedCt {
        hu,
        outside_fov,
        padding_voxels: padding,
    }
}

/// True outside the reconstruction circle (only in series that have one), (rows, cols).
fn fov_mask(plan: &PatientPlan) -> Vec<bool> {
    let g = &plan.geometry;
    let [cx, cy] = g.fov_centre();
    let radius = g.fov_mm() / 2.0;
    let mut mask = vec![false; g.rows * g.cols];
    if plan.ct.circular_fov {
        for i in 0..g.rows {
            for j in 0..g.cols {
                let (dx, dy) = (g.x(j) - cx, g.y(i) - cy);
                mask[i * g.cols + j] = dx * dx + dy * dy > radius * radius;
            }
        }
    }
    mask
}

/// One CT image file: which slice (ascending position index) and how the archive labels it.
#[derive(Clone, Debug)]
pub(crate) struct CtSlice {
    pub position: usize, // index in ascending z
    pub instance_number: u32,
    pub sop_instance_uid: String,
    pub file_name: String,
}

/// Slices in the order their files are written (shuffled), each with its InstanceNumber.
pub(crate) fn slice_files(seed: u64, plan: &PatientPlan) -> Vec<CtSlice> {
    let n = plan.geometry.slices;
    let mut rng = stream_rng(seed, "ct slice order", plan.index);
    let mut instance_numbers: Vec<u32> = (1..=n as u32).collect();
    if plan.ct.scrambled_instances {
        instance_numbers.shuffle(&mut rng);
    } else if plan.ct.descending {
        instance_numbers.reverse();
    }
    let mut slices: Vec<CtSlice> = (0..n)
        .map(|k| CtSlice {
            position: k,
            instance_number: instance_numbers[k],
            sop_instance_uid: uid(seed, "ct instance", plan.index, k as u32),
            file_name: format!("{}.dcm", hex_name(seed, "ct file", plan.index, k as u32)),
        })
        .collect();
    slices.shuffle(&mut rng);
    slices
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phantom::cohort::{CohortPlan, Feature};
    use crate::phantom::PhantomConfig;

    fn small() -> PhantomConfig {
        PhantomConfig {
            seed: 3,
            patients: 6,
            size: 32,
            slices: 10,
            ..PhantomConfig::default()
        }
    }

    #[test]
    fn stored_values_fit_the_declared_bits() {
        let cfg = small();
        let cohort = CohortPlan::new(cfg.seed, cfg.patients);
        for p in 0..cfg.patients {
            let plan = PatientPlan::new(&cfg, &cohort, p);
            let hu = render_volume(&plan).hu;
            let bits = u32::from(plan.ct.bits_stored);
            let (lo, hi) = if plan.ct.unsigned {
                (0, (1 << bits) - 1)
            } else {
                (-(1 << (bits - 1)), (1 << (bits - 1)) - 1)
            };
            for &v in &hu {
                let s = plan.ct.stored(v);
                assert!(
                    (lo..=hi).contains(&s),
                    "patient {p}: stored {s} outside {bits}-bit range"
                );
            }
            if let Some(pad) = plan.ct.padding_value() {
                assert!((lo..=hi).contains(&pad));
            }
        }
    }

    #[test]
    fn circular_fov_pads_the_corners_only_where_declared() {
        let cfg = small();
        let cohort = CohortPlan::new(cfg.seed, cfg.patients);
        for p in 0..cfg.patients {
            let plan = PatientPlan::new(&cfg, &cohort, p);
            let padding = render_volume(&plan).padding_voxels;
            if cohort.has(Feature::CircularFov, p) {
                // At least the four corner regions of every slice lie outside the inscribed circle.
                assert!(padding >= 4 * cfg.slices as u64, "patient {p}: {padding}");
            } else {
                assert_eq!(padding, 0);
            }
        }
    }

    #[test]
    fn instance_numbers_follow_the_style() {
        let cfg = small();
        let cohort = CohortPlan::new(cfg.seed, cfg.patients);
        for p in 0..cfg.patients {
            let plan = PatientPlan::new(&cfg, &cohort, p);
            let mut slices = slice_files(cfg.seed, &plan);
            slices.sort_by_key(|s| s.position);
            let numbers: Vec<u32> = slices.iter().map(|s| s.instance_number).collect();
            let mut sorted = numbers.clone();
            sorted.sort();
            assert_eq!(
                sorted,
                (1..=cfg.slices).collect::<Vec<_>>(),
                "a permutation of 1..=n"
            );
            let ascending = numbers.windows(2).all(|w| w[0] < w[1]);
            let descending = numbers.windows(2).all(|w| w[0] > w[1]);
            if plan.ct.scrambled_instances {
                assert!(!ascending && !descending, "patient {p}: {numbers:?}");
            } else {
                assert_eq!(descending, plan.ct.descending, "patient {p}: {numbers:?}");
            }
        }
    }
}
