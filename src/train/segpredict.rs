//! `predict` with a segmentation model: every series of the packs is predicted whole by
//! sliding-window inference (`[eval] overlap`, `gaussian`, `flip_tta`), its foreground probability
//! taken back onto the series' pack grid, and written out as
//!
//! - `masks/<series key>.nii.gz`: a NIfTI-1 uint8 label map (1 where the probability is above
//!   `[eval] threshold`) on the pack grid, voxel for voxel, whose affine is the series' geometry
//!   (DICOM LPS turned to NIfTI's RAS): i runs along a row (columns), j down the rows, k along the
//!   stored slice order;
//! - `seg/<series key>.dcm`: the same mask as a DICOM Segmentation object (`segdicom`), with the
//!   source's identity when `--source` is given, else for local use;
//! - `masks.csv`: file, SEG file, series key, patient key, foreground voxels, a note;
//! - `candidates.csv`: the connected regions of the map as candidates (`detect`): series key,
//!   centre x, y, z (LPS mm), equivalent diameter, score (the region's highest probability), voxels.
//!
//! A series whose orientation is unknown has no patient geometry: its mask is not written, and
//! `masks.csv` says why. Cases are shared out across ranks; each rank writes its own masks, rank 0
//! the two tables.

use super::detect::{self, Region};
use super::segdicom::Sources;
use super::segeval::on_pack_grid;
use crate::backend::Backend;
use crate::data::mapback::{series_geometry, SeriesGeometry};
use crate::data::{eval_share, Dataset};
use crate::dist::World;
use crate::nn::Net;
use crate::settings::Settings;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// One predicted series.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PredictedSeries {
    pub series_key: String,
    pub patient_key: String,
    /// The mask's file under the output directory; None when it could not be placed.
    pub file: Option<String>,
    /// The DICOM SEG's file; None when it was not written (the note says why).
    pub seg: Option<String>,
    pub voxels: u64,
    pub note: String,
    pub candidates: Vec<Region>,
}

/// The NIfTI (RAS) affine of a pack grid read as (i, j, k) = (column, row, slice).
pub fn nifti_affine(g: &SeriesGeometry) -> [[f64; 4]; 3] {
    let sign = [-1.0, -1.0, 1.0];
    std::array::from_fn(|r| {
        [
            sign[r] * g.col_step[r],
            sign[r] * g.row_step[r],
            sign[r] * g.slice_step[r],
            sign[r] * g.origin[r],
        ]
    })
}

fn one_series<B: Backend>(
    b: &B,
    net: &mut Net<B>,
    ds: &Dataset,
    s: &Settings,
    i: usize,
    out: &Path,
    source: Option<&Sources>,
) -> Result<PredictedSeries, String> {
    let (case, logits) = super::segeval::predict_case(b, net, ds, s, i)?;
    let prob = on_pack_grid(&logits, &case);
    let g = series_geometry(ds.catalog(), case.series_row)?;
    let mask: Vec<u8> = prob
        .iter()
        .map(|&p| (p as f64 > s.eval.threshold) as u8)
        .collect();
    let voxels = mask.iter().map(|&v| v as u64).sum();
    let affine = nifti_affine(&g);
    let placed = affine.iter().flatten().all(|v| v.is_finite()) && detect::voxel_volume(&g) > 0.0;
    let meta = ds.meta(i);
    let mut row = PredictedSeries {
        series_key: case.series_key.clone(),
        patient_key: meta.patient_key,
        file: None,
        seg: None,
        voxels,
        note: String::new(),
        candidates: Vec::new(),
    };
    if !placed {
        row.note = "the series has no patient geometry (unknown orientation): no mask written".into();
        return Ok(row);
    }
    let name = format!("masks/{}.nii.gz", case.series_key);
    let [n, rows, cols] = case.shape;
    crate::nifti::write_u8(&out.join(&name), [cols, rows, n], affine, &mask)
        .map_err(|e| format!("{}: {e}", out.join(&name).display()))?;
    row.file = Some(name);
    row.candidates = detect::candidates(&prob, case.shape, &g, s.eval.threshold);
    match super::segdicom::segmentation_of(ds.catalog(), case.series_row as usize, &mask, source) {
        Ok(seg) => {
            let name = format!("seg/{}.dcm", case.series_key);
            let (date, time) = crate::dicomseg::now();
            crate::dicomseg::write(&seg, &out.join(&name), &date, &time)
                .map_err(|e| format!("{}: {e}", out.join(&name).display()))?;
            row.seg = Some(name);
        }
        Err(e) => row.note = format!("no DICOM SEG: {e}"),
    }
    Ok(row)
}

/// Predicts every series of `ds` (every rank returns the rows of all of them, in split order).
pub fn predict_segmentation<B: Backend>(
    b: &B,
    world: &World,
    net: &mut Net<B>,
    ds: &Dataset,
    s: &Settings,
    out: &Path,
    source: Option<&Sources>,
) -> Result<Vec<PredictedSeries>, String> {
    for dir in ["masks", "seg"] {
        std::fs::create_dir_all(out.join(dir)).map_err(|e| format!("{}: {e}", out.join(dir).display()))?;
    }
    let cases = ds.case_samples();
    let mine = eval_share(world.rank(), world.size(), cases.len());
    let mut rows = Vec::with_capacity(mine.len());
    for &i in &cases[mine] {
        rows.push(one_series(b, net, ds, s, i, out, source)?);
    }
    let local = serde_json::to_vec(&rows).expect("rows serialise");
    let mut all = Vec::with_capacity(cases.len());
    for part in world.allgather_bytes(&local) {
        let got: Vec<PredictedSeries> =
            serde_json::from_slice(&part).map_err(|e| format!("gathered predictions: {e}"))?;
        all.extend(got);
    }
    Ok(all)
}

/// `masks.csv` and `candidates.csv` of the predicted series.
pub fn write_tables(out: &Path, rows: &[PredictedSeries]) -> Result<(), String> {
    let mut masks = String::from("file,seg,series_key,patient_key,voxels,note\n");
    let mut candidates = String::from("series_key,x_mm,y_mm,z_mm,diameter_mm,score,voxels\n");
    for r in rows {
        masks.push_str(&format!(
            "{},{},{},{},{},\"{}\"\n",
            r.file.as_deref().unwrap_or(""),
            r.seg.as_deref().unwrap_or(""),
            r.series_key,
            r.patient_key,
            r.voxels,
            r.note.replace('"', "'")
        ));
        candidates.push_str(&super::segeval::candidate_rows(
            &r.series_key,
            &r.candidates,
            None,
        ));
    }
    for (name, text) in [("masks.csv", masks), ("candidates.csv", candidates)] {
        crate::fsx::write_atomic(&out.join(name), text.as_bytes())
            .map_err(|e| format!("{}: {e}", out.join(name).display()))?;
    }
    Ok(())
}
