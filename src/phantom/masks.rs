//! The lesion masks of the CT series as NIfTI label maps, with the mapping CSV that names each
//! file's SeriesInstanceUID (NIfTI carries no UIDs): a voxel is labelled 1 when its centre lies in a
//! nodule's ball (distance to the centre at most the radius). The grid is the one the DICOM files
//! state (their rounded PixelSpacing and ImagePositionPatient), i along columns, j along rows, k up
//! the slices, in NIfTI's RAS+ frame.

use super::cohort::PatientPlan;
use super::write::ds;
use std::path::Path;

pub(crate) const MASKS_DIR: &str = "masks";
pub(crate) const MASKS_CSV: &str = "masks.csv";
pub(crate) const MASKS_HEADER: &str = "PatientID,SeriesInstanceUID,File";

/// A decimal string as the DICOM file holds it, read back.
fn as_written(value: f64, decimals: usize) -> f64 {
    ds(value, decimals).parse().expect("a number")
}

/// Writes `<truth>/masks/<PatientID>.nii.gz`; returns the mapping CSV row.
pub(crate) fn write_lesion_mask(plan: &PatientPlan, truth_dir: &Path) -> std::io::Result<String> {
    let g = &plan.geometry;
    let spacing = as_written(g.pixel_spacing, 4);
    let (x0, y0) = (as_written(g.origin[0], 2), as_written(g.origin[1], 2));
    let z = |k: usize| as_written(g.z(k), 3);
    let step = if g.slices > 1 {
        (z(g.slices - 1) - z(0)) / (g.slices - 1) as f64
    } else {
        g.slice_spacing
    };
    let (cols, rows, slices) = (g.cols, g.rows, g.slices);
    let mut mask = vec![0u8; cols * rows * slices]; // (k, j, i): i fastest
    for n in &plan.anatomy.nodules {
        let [cx, cy, cz] = n.centre;
        let r = n.radius;
        let range = |c: f64, o: f64, d: f64, len: usize| {
            let lo = ((c - r - o) / d).floor().max(0.0) as usize;
            let hi = (((c + r - o) / d).ceil().max(0.0) as usize + 1).min(len);
            lo..hi
        };
        for k in range(cz, z(0), step, slices) {
            let dz = z(0) + k as f64 * step - cz;
            for j in range(cy, y0, spacing, rows) {
                let dy = y0 + j as f64 * spacing - cy;
                for i in range(cx, x0, spacing, cols) {
                    let dx = x0 + i as f64 * spacing - cx;
                    if dx * dx + dy * dy + dz * dz <= r * r {
                        mask[(k * rows + j) * cols + i] = 1;
                    }
                }
            }
        }
    }
    // LPS (x0 + i·Δ, y0 + j·Δ, z0 + k·step) is RAS (−x0 − i·Δ, −y0 − j·Δ, z0 + k·step).
    let affine = [
        [-spacing, 0.0, 0.0, -x0],
        [0.0, -spacing, 0.0, -y0],
        [0.0, 0.0, step, z(0)],
    ];
    let file = format!("{MASKS_DIR}/{}.nii.gz", plan.identity.patient_id);
    crate::nifti::write_u8(&truth_dir.join(&file), [cols, rows, slices], affine, &mask)?;
    Ok(format!(
        "{},{},{file}",
        plan.identity.patient_id, plan.uids.ct_series
    ))
}
