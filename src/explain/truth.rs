//! Ground-truth lesions for explanation quality. The phantom's `lesions.csv` names each lesion by
//! PatientID and SeriesInstanceUID with a centre and radius in patient coordinates (mm). Packs keep
//! only keyed pseudonyms, so the UID is pseudonymised with the site key exactly as `catalog labels
//! import` does and matched to the catalog's `series_key`; the ball is then rasterised in the
//! series' pack voxel grid through its origin, orientation and slice positions.

use super::mapback::SeriesGeometry;
use crate::catalog::columns::{padded, Level};
use crate::catalog::labels::csv;
use crate::catalog::view::Catalog;
use crate::deid::{IdKind, SiteKey};
use std::collections::HashMap;
use std::path::Path;

/// A lesion ball in patient coordinates (mm).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PatientLesion {
    pub centre: [f64; 3],
    pub radius_mm: f64,
}

/// Lesions by pseudonymised series key.
#[derive(Clone, Debug, Default)]
pub struct LesionTruth {
    by_series: HashMap<[u8; 32], Vec<PatientLesion>>,
}

const COLUMNS: [&str; 5] = [
    "SeriesInstanceUID",
    "CenterXMm",
    "CenterYMm",
    "CenterZMm",
    "RadiusMm",
];

impl LesionTruth {
    /// Reads `lesions.csv` (columns SeriesInstanceUID, CenterXMm, CenterYMm, CenterZMm, RadiusMm).
    pub fn load(path: &Path, key: &SiteKey) -> Result<LesionTruth, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let table = csv::parse(&text).map_err(|(line, e)| format!("{}:{line}: {e}", path.display()))?;
        let at: Vec<usize> = COLUMNS
            .iter()
            .map(|c| {
                table
                    .header
                    .iter()
                    .position(|h| h == c)
                    .ok_or_else(|| format!("{}: no column {c:?}", path.display()))
            })
            .collect::<Result<_, _>>()?;
        let mut by_series: HashMap<[u8; 32], Vec<PatientLesion>> = HashMap::new();
        for r in &table.records {
            let num = |k: usize| {
                r.fields[at[k]]
                    .trim()
                    .parse::<f64>()
                    .map_err(|_| format!("{}:{}: {} is not a number", path.display(), r.line, COLUMNS[k]))
            };
            let uid = r.fields[at[0]].trim();
            let lesion = PatientLesion {
                centre: [num(1)?, num(2)?, num(3)?],
                radius_mm: num(4)?,
            };
            by_series
                .entry(padded::<32>(&key.pseudonym(IdKind::Series, uid)))
                .or_default()
                .push(lesion);
        }
        Ok(LesionTruth { by_series })
    }

    /// The lesions of a catalog series (empty when it has none).
    pub fn of_series(&self, cat: &Catalog, series_row: u32) -> Vec<PatientLesion> {
        cat.col_keys(Level::Series, "series_key")
            .ok()
            .and_then(|k| k.get(series_row as usize))
            .and_then(|k| self.by_series.get(k))
            .cloned()
            .unwrap_or_default()
    }

    pub fn series_count(&self) -> usize {
        self.by_series.len()
    }
}

/// The patient geometry of a catalog series: origin and orientation from the series table, the
/// slice step from the first two slices' positions (the stored order), else the orientation's
/// normal times the slice spacing.
pub fn series_geometry(cat: &Catalog, series_row: u32) -> Result<SeriesGeometry, String> {
    let r = series_row as usize;
    let err = |e: crate::catalog::CatalogError| format!("catalog series row {r}: {e}");
    let origin = cat.col_f64(Level::Series, "origin").map_err(err)?;
    let orient = cat.col_f64(Level::Series, "orientation").map_err(err)?;
    let spacing = cat.col_f64(Level::Series, "pixel_spacing").map_err(err)?;
    let slice_spacing = cat.col_f64(Level::Series, "slice_spacing").map_err(err)?[r];
    let n = cat.col_u32(Level::Series, "n_slices").map_err(err)?[r] as usize;
    let start = cat.col_u64(Level::Series, "slice_start").map_err(err)?[r] as usize;
    let o: [f64; 3] = std::array::from_fn(|i| origin[3 * r + i]);
    let ori: [f64; 6] = std::array::from_fn(|i| orient[6 * r + i]);
    let ps = [spacing[2 * r], spacing[2 * r + 1]];
    let normal = [
        ori[1] * ori[5] - ori[2] * ori[4],
        ori[2] * ori[3] - ori[0] * ori[5],
        ori[0] * ori[4] - ori[1] * ori[3],
    ];
    let mut step = normal.map(|e| e * if slice_spacing > 0.0 { slice_spacing } else { 1.0 });
    if n > 1 {
        if let Ok(pos) = cat.col_f64(Level::Slice, "image_position") {
            if pos.len() >= 3 * (start + 2) {
                let d: [f64; 3] = std::array::from_fn(|i| pos[3 * (start + 1) + i] - pos[3 * start + i]);
                if d.iter().any(|v| v.abs() > 1e-9) {
                    step = d;
                }
            }
        }
    }
    let mut g = SeriesGeometry::new(o, ori, ps, step);
    if let Ok(pos) = cat.col_f64(Level::Slice, "image_position") {
        if pos.len() >= 3 * (start + 1) {
            g.origin = std::array::from_fn(|i| pos[3 * start + i]);
        }
    }
    Ok(g)
}

/// Voxels of the pack grid (slices, rows, cols) whose centre lies inside any of the lesions.
pub fn lesion_mask(shape: [usize; 3], g: &SeriesGeometry, lesions: &[PatientLesion]) -> Vec<bool> {
    let mut mask = vec![false; shape.iter().product()];
    for l in lesions {
        let Some(c) = g.to_voxel(l.centre) else {
            continue;
        };
        // A box of voxels around the centre that surely holds the ball.
        let steps =
            [g.slice_step, g.row_step, g.col_step].map(|s| s.iter().map(|v| v * v).sum::<f64>().sqrt());
        let lo: [i64; 3] =
            std::array::from_fn(|a| (c[a] - l.radius_mm / steps[a].max(1e-6) - 1.0).floor() as i64);
        let hi: [i64; 3] =
            std::array::from_fn(|a| (c[a] + l.radius_mm / steps[a].max(1e-6) + 1.0).ceil() as i64);
        for k in lo[0].max(0)..=hi[0].min(shape[0] as i64 - 1) {
            for r in lo[1].max(0)..=hi[1].min(shape[1] as i64 - 1) {
                for col in lo[2].max(0)..=hi[2].min(shape[2] as i64 - 1) {
                    let p = g.to_patient([k as f64, r as f64, col as f64]);
                    let d2: f64 = (0..3).map(|i| (p[i] - l.centre[i]).powi(2)).sum();
                    if d2 <= l.radius_mm * l.radius_mm {
                        mask[(k as usize * shape[1] + r as usize) * shape[2] + col as usize] = true;
                    }
                }
            }
        }
    }
    mask
}
