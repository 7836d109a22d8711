//! The lesion masks of the CT series as NIfTI label maps, with the mapping CSV that names each
//! file's SeriesInstanceUID (NIfTI carries no UIDs): a voxel is labelled 1 when its centre lies in a
//! nodule's ball (distance to the centre at most the radius). The grid is the one the DICOM files
//! state (their rounded PixelSpacing and ImagePositionPatient), i along columns, j along rows, k up
//! the slices, in NIfTI's RAS+ frame.

use super::cohort::PatientPlan;
use super::ct::CtSlice;
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

pub(crate) const LIDC_DIR: &str = "lidc";

/// Writes `<truth>/lidc/<PatientID>.xml`: the CT series' nodules as LIDC-IDRI reading sessions of
/// two to four simulated readers. Each reader outlines every nodule slice by slice with a polygon of
/// 24 integer pixel vertices drawn just outside the disk the plane cuts (radius + half a pixel, as
/// LIDC's readers draw), with their own error: the centre moved by up to a third of a pixel and the
/// radius scaled by 0.9–1.1. The last reader misses each nodule under 5 mm in radius with
/// probability one half. Malignancy follows the size (1–5), subtlety is the reader's call (2–5).
pub(crate) fn write_lidc_xml(
    seed: u64,
    plan: &PatientPlan,
    slices: &[CtSlice],
    truth_dir: &Path,
) -> std::io::Result<()> {
    use rand::Rng;
    let mut rng = super::seed::stream_rng(seed, "lidc readers", plan.index);
    let g = &plan.geometry;
    let spacing = as_written(g.pixel_spacing, 4);
    let (x0, y0) = (as_written(g.origin[0], 2), as_written(g.origin[1], 2));
    let mut sop = vec![""; g.slices];
    for s in slices {
        sop[s.position] = &s.sop_instance_uid;
    }
    let readers = rng.gen_range(2..=4);
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<LidcReadMessage xmlns=\"http://www.nih.gov\" uid=\"phantom\">\n");
    xml += &format!(
        "<ResponseHeader><StudyInstanceUID>{}</StudyInstanceUID><SeriesInstanceUid>{}</SeriesInstanceUid></ResponseHeader>\n",
        plan.uids.ct_study, plan.uids.ct_series
    );
    for r in 0..readers {
        xml += &format!(
            "<readingSession><servicingRadiologistID>reader{}</servicingRadiologistID>\n",
            r + 1
        );
        for (k, n) in plan.anatomy.nodules.iter().enumerate() {
            let (jx, jy) = (rng.gen_range(-1.0..1.0) / 3.0, rng.gen_range(-1.0..1.0) / 3.0);
            let scale = rng.gen_range(0.9..1.1);
            let subtlety = rng.gen_range(2..=5);
            let missed = r + 1 == readers && n.radius < 5.0 && rng.gen_bool(0.5);
            if missed {
                continue;
            }
            let malignancy = (1.0 + n.radius / 2.5).round().clamp(1.0, 5.0);
            xml += &format!(
                "<unblindedReadNodule><noduleID>Nodule {:03}</noduleID><characteristics><subtlety>{subtlety}</subtlety>\
                 <malignancy>{malignancy}</malignancy></characteristics>\n",
                k + 1
            );
            let (cx, cy) = (
                (n.centre[0] - x0) / spacing + jx,
                (n.centre[1] - y0) / spacing + jy,
            );
            for (z, uid) in sop.iter().enumerate() {
                let dz = as_written(g.z(z), 3) - n.centre[2];
                let disk = n.radius * n.radius - dz * dz;
                if disk < (spacing / 2.0).powi(2) {
                    continue;
                }
                let radius = disk.sqrt() * scale / spacing + 0.5;
                xml += &format!(
                    "<roi><imageZposition>{}</imageZposition><imageSOP_UID>{uid}</imageSOP_UID><inclusion>TRUE</inclusion>",
                    ds(g.z(z), 3)
                );
                for v in 0..24 {
                    let a = std::f64::consts::TAU * v as f64 / 24.0;
                    let (x, y) = ((cx + radius * a.cos()).round(), (cy + radius * a.sin()).round());
                    xml += &format!("<edgeMap><xCoord>{x}</xCoord><yCoord>{y}</yCoord></edgeMap>");
                }
                xml += "</roi>\n";
            }
            xml += "</unblindedReadNodule>\n";
        }
        xml += "</readingSession>\n";
    }
    xml += "</LidcReadMessage>\n";
    let path = truth_dir
        .join(LIDC_DIR)
        .join(format!("{}.xml", plan.identity.patient_id));
    crate::fsx::write_atomic(&path, xml.as_bytes())
}
