//! Ground-truth lesions for explanation quality. The phantom's `lesions.csv` names each lesion by
//! PatientID and SeriesInstanceUID with a centre and radius in patient coordinates (mm). Packs keep
//! only keyed pseudonyms, so the UID is pseudonymised with the site key exactly as `catalog labels
//! import` does and matched to the catalog's `series_key`; the ball is then rasterised in the
//! series' pack voxel grid through its origin, orientation and slice positions.

use crate::catalog::columns::{padded, Level};
use crate::catalog::labels::csv;
use crate::catalog::view::Catalog;
pub use crate::data::mapback::series_geometry;
use crate::data::mapback::SeriesGeometry;
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
