//! A PA chest radiograph of the same analytic chest: line integrals of attenuation along y
//! (anterior-posterior), on a detector that frames the thorax. Background tissues are integrated
//! numerically; vessels and nodules add their exact chord lengths.

use super::anatomy::{Anatomy, Tissue, AIR_HU};
use super::cohort::PatientPlan;
use super::seed::unit_noise;

/// Linear attenuation of water at chest-radiograph energies, 1/mm.
const MU_WATER_PER_MM: f64 = 0.02;
/// Integration steps through the body depth.
const DEPTH_STEPS: usize = 64;
/// Line integral (dimensionless μ·L) shown as full white: a thick chest plus spine.
const FULL_SCALE_ATTENUATION: f64 = 7.0;
/// Detector counts: 12 bits stored.
pub(crate) const RADIOGRAPH_BITS: u16 = 12;
pub(crate) const RADIOGRAPH_MAX: u16 = (1 << RADIOGRAPH_BITS) - 1;
/// Quantum noise, in counts.
const NOISE_COUNTS: f32 = 12.0;
/// The detector spans this multiple of the body width (a margin of air on each side).
const DETECTOR_OVER_BODY: f64 = 1.25;
/// The image centre sits this far (mm) above the lungs' mid-plane, so apices and diaphragm show.
const CENTRE_ABOVE_LUNG_MID_MM: f64 = 20.0;

fn mu(hu: f32) -> f64 {
    (f64::from(hu) - f64::from(AIR_HU)) / 1000.0 * MU_WATER_PER_MM
}

/// Detector geometry: row 0 at the top (head), column 0 at the patient's right (−x).
pub(crate) struct Detector {
    pub size: usize,
    pub pixel_spacing: f64, // mm
    pub top_left: [f64; 2], // (x, z) of pixel (0, 0), mm
}

pub(crate) fn detector(anatomy: &Anatomy, size: usize) -> Detector {
    let (centre, half_axes) = anatomy.body_box();
    let width = 2.0 * half_axes[0] * DETECTOR_OVER_BODY;
    let pixel_spacing = (width / size as f64 * 1e4).round() / 1e4;
    let (lo, hi) = anatomy.lung_z_range();
    let centre_z = (lo + hi) / 2.0 + CENTRE_ABOVE_LUNG_MID_MM;
    let half = (size as f64 - 1.0) / 2.0 * pixel_spacing;
    Detector {
        size,
        pixel_spacing,
        top_left: [centre[0] - half, centre_z + half],
    }
}

/// Stored pixel values (rows, cols): MONOCHROME2 (attenuation bright) unless the style inverts.
pub(crate) fn render(plan: &PatientPlan) -> (Detector, Vec<u16>) {
    let anatomy = &plan.anatomy;
    let det = detector(anatomy, plan.radiograph.size);
    let (centre, half_axes) = anatomy.body_box();
    let step = 2.0 * half_axes[1] / DEPTH_STEPS as f64;
    let noise_stream = plan.noise_stream ^ 0x5241_4449_4f47_5241; // "RADIOGRA": apart from the CT's
    let mut pixels = Vec::with_capacity(det.size * det.size); // (rows, cols)
    for row in 0..det.size {
        let z = det.top_left[1] - row as f64 * det.pixel_spacing;
        let scale = anatomy.lung_scale(z);
        // Vessels and nodules are drawn in the lungs only (as in the CT), so a vessel that leaves
        // the tapering lung at apex or base ends there.
        let mut blobs = anatomy.blobs_at(z);
        blobs.retain(|b| anatomy.tissue(b.centre[0], b.centre[1], scale) == Tissue::Lung);
        for col in 0..det.size {
            let x = det.top_left[0] + col as f64 * det.pixel_spacing;
            let background: f64 = (0..DEPTH_STEPS)
                .map(|s| {
                    let y = centre[1] - half_axes[1] + (s as f64 + 0.5) * step;
                    mu(anatomy.tissue_hu(anatomy.tissue(x, y, scale)))
                })
                .sum::<f64>()
                * step;
            let structures: f64 = blobs
                .iter()
                .map(|b| {
                    let r2 = b.radius * b.radius - b.dz * b.dz - (x - b.centre[0]).powi(2);
                    let chord = if r2 > 0.0 { 2.0 * r2.sqrt() } else { 0.0 };
                    chord * (mu(b.hu) - mu(anatomy.lung_hu))
                })
                .sum();
            let counts = (background + structures) / FULL_SCALE_ATTENUATION * f64::from(RADIOGRAPH_MAX);
            let index = (row * det.size + col) as u64;
            let noisy = counts as f32 + NOISE_COUNTS * unit_noise(noise_stream, index);
            let value = noisy.round().clamp(0.0, f32::from(RADIOGRAPH_MAX)) as u16;
            pixels.push(if plan.radiograph.monochrome1 {
                RADIOGRAPH_MAX - value
            } else {
                value
            });
        }
    }
    (det, pixels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phantom::cohort::CohortPlan;
    use crate::phantom::PhantomConfig;

    #[test]
    fn lungs_are_darker_than_mediastinum_and_air_is_darkest() {
        let cfg = PhantomConfig {
            patients: 4,
            ..PhantomConfig::default()
        };
        let cohort = CohortPlan::new(cfg.seed, cfg.patients);
        for p in 0..cfg.patients {
            let plan = PatientPlan::new(&cfg, &cohort, p);
            let (det, stored) = render(&plan);
            let n = det.size;
            let value = |row: usize, col: usize| {
                let v = stored[row * n + col];
                if plan.radiograph.monochrome1 {
                    RADIOGRAPH_MAX - v
                } else {
                    v
                }
            };
            // Row through the lung mid-plane: air at the edge, lungs at ±47 % of the body
            // half-width, mediastinum and spine at the centre.
            let (lo, hi) = plan.anatomy.lung_z_range();
            let row = ((det.top_left[1] - (lo + hi) / 2.0) / det.pixel_spacing).round() as usize;
            let (centre, half) = plan.anatomy.body_box();
            let col_at = |x: f64| ((x - det.top_left[0]) / det.pixel_spacing).round() as usize;
            let air = value(row, 0);
            let lung = value(row, col_at(centre[0] - 0.47 * half[0]));
            let middle = value(row, col_at(centre[0]));
            assert!(
                air < lung && lung < middle,
                "patient {p}: air {air}, lung {lung}, middle {middle}"
            );
        }
    }
}
