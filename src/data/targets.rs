//! The label columns a dataset reads: its training targets (`[data] labels`) and the tabular inputs
//! fused late into the model's head (`[data] tabular`), which are standardised with the training
//! split's statistics, and whose missing values get an indicator input rather than a silent zero.

use super::dataset::{Dataset, SeriesInfo};
use super::DataError;
use crate::catalog::columns::Level;
use crate::catalog::view::{Catalog, LABEL_PRESENT};
use serde::{Deserialize, Serialize};

/// Fits the tabular standardisation on the training split and gives it to both datasets; None when
/// the config names no tabular inputs.
pub fn standardise(
    train: &mut Dataset,
    val: Option<&mut Dataset>,
) -> Result<Option<TabularStats>, DataError> {
    if train.tabular_len() == 0 {
        return Ok(None);
    }
    let stats = train.fit_tabular()?;
    train.set_tabular_stats(stats.clone())?;
    if let Some(v) = val {
        v.set_tabular_stats(stats.clone())?;
    }
    Ok(Some(stats))
}

/// A label column as a dataset reads it, or a catalog column given as a tabular input.
pub(super) struct Target {
    pub(super) set: usize, // index into catalog.labels (unused for a catalog column)
    pub(super) column: String,
    pub(super) level: Level,
    /// `catalog.NAME` or `catalog.NAME=VALUE`: the value per catalog series row (NaN: none).
    pub(super) catalog: Option<Vec<f64>>,
}

/// What standardises the tabular inputs: per column, the mean and standard deviation of its values
/// over the training split's samples (a constant column gets 1), and how many samples had one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TabularStats {
    pub columns: Vec<String>,
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
    pub present: Vec<u64>,
}

impl Dataset {
    pub(super) fn label(&self, t: &Target, s: &SeriesInfo, slice_row: Option<u64>) -> Option<f64> {
        if let Some(values) = &t.catalog {
            return values.get(s.row as usize).copied().filter(|v| !v.is_nan());
        }
        let set = &self.catalog.labels[t.set];
        let values = set.values(&t.column).unwrap_or(&[]);
        let states = set.states(&t.column).unwrap_or(&[]);
        let at = |row: u64| match states.get(row as usize) {
            Some(&LABEL_PRESENT) => values.get(row as usize).copied().filter(|v| !v.is_nan()),
            _ => None,
        };
        match (t.level, slice_row) {
            (Level::Slice, Some(row)) => at(row),
            (Level::Slice, None) => {
                let rows = s.slice_start..s.slice_start + s.shape[0] as u64;
                rows.filter_map(at).reduce(f64::max)
            }
            (Level::Series, _) => at(s.row as u64),
            (Level::Patient, _) => at(s.patient_row as u64),
        }
    }

    /// Tabular values per sample given to the model: a standardised value and a missing indicator
    /// per column (0 when there are no tabular inputs).
    pub fn tabular_len(&self) -> usize {
        2 * self.tabular.len()
    }

    /// Mean and standard deviation of each tabular column over this dataset's samples (run on the
    /// training split). A column without a single value is an error: it cannot be standardised.
    pub fn fit_tabular(&self) -> Result<TabularStats, DataError> {
        let k = self.tabular.len();
        let (mut count, mut mean, mut m2) = (vec![0u64; k], vec![0.0f64; k], vec![0.0f64; k]);
        for i in 0..self.len() {
            let (seg, _, slice_row) = self.locate(i);
            let s = &self.series[seg.series as usize];
            for (c, t) in self.tabular.iter().enumerate() {
                if let Some(v) = self.label(t, s, slice_row).filter(|v| v.is_finite()) {
                    count[c] += 1;
                    let d = v - mean[c];
                    mean[c] += d / count[c] as f64;
                    m2[c] += d * (v - mean[c]);
                }
            }
        }
        if let Some(c) = (0..k).find(|&c| count[c] == 0) {
            return Err(DataError::Label {
                name: self.cfg.tabular[c].clone(),
                reason: "no sample of the training split has a value, so this tabular input \
                         cannot be standardised"
                    .into(),
            });
        }
        let std = (0..k)
            .map(|c| {
                let sd = (m2[c] / count[c] as f64).sqrt();
                if sd > 0.0 && sd.is_finite() {
                    sd
                } else {
                    1.0
                }
            })
            .collect();
        Ok(TabularStats {
            columns: self.cfg.tabular.clone(),
            mean,
            std,
            present: count,
        })
    }

    /// Uses `stats` (fitted on the training split) to standardise this dataset's tabular inputs.
    pub fn set_tabular_stats(&mut self, stats: TabularStats) -> Result<(), DataError> {
        let k = self.tabular.len();
        if stats.columns != self.cfg.tabular || stats.mean.len() != k || stats.std.len() != k {
            return Err(DataError::Config {
                key: "data.tabular",
                reason: format!(
                    "the standardisation was fitted on {:?}, the config names {:?}",
                    stats.columns, self.cfg.tabular
                ),
            });
        }
        self.tabular_stats = Some(stats);
        Ok(())
    }

    /// The tabular inputs of sample `i` into `out` (`tabular_len` values): the standardised values
    /// of the columns in config order, then one missing indicator per column (1 where the value is
    /// missing, the value then 0).
    pub fn tabular(&self, i: usize, out: &mut [f32]) -> Result<(), DataError> {
        let k = self.tabular.len();
        if k == 0 {
            return Ok(());
        }
        let stats = self.tabular_stats.as_ref().ok_or_else(|| DataError::Config {
            key: "data.tabular",
            reason: "the tabular inputs have no standardisation (fit it on the training split)".into(),
        })?;
        let (seg, _, slice_row) = self.locate(i);
        let s = &self.series[seg.series as usize];
        let (values, missing) = out.split_at_mut(k);
        for (c, t) in self.tabular.iter().enumerate() {
            match self.label(t, s, slice_row).filter(|v| v.is_finite()) {
                Some(v) => {
                    values[c] = ((v - stats.mean[c]) / stats.std[c]) as f32;
                    missing[c] = 0.0;
                }
                None => {
                    values[c] = 0.0;
                    missing[c] = 1.0;
                }
            }
        }
        Ok(())
    }
}

pub(super) fn resolve_targets(cat: &Catalog, labels: &[String]) -> Result<Vec<Target>, DataError> {
    labels
        .iter()
        .map(|name| {
            let err = |reason: String| DataError::Label {
                name: name.clone(),
                reason,
            };
            let (set_name, column) = name
                .split_once('.')
                .ok_or_else(|| err("expected \"set.column\"".into()))?;
            let set = cat
                .labels
                .iter()
                .enumerate()
                .filter(|(_, l)| l.meta.name == set_name)
                .max_by_key(|(_, l)| l.meta.version)
                .map(|(i, _)| i)
                .ok_or_else(|| {
                    let mut known: Vec<&str> = cat.labels.iter().map(|l| l.meta.name.as_str()).collect();
                    known.dedup();
                    err(format!(
                        "no label set {set_name} in the catalog (it has {known:?})"
                    ))
                })?;
            let ls = &cat.labels[set];
            if ls.column(column).is_none() {
                let cols: Vec<&str> = ls.meta.columns.iter().map(|c| c.name.as_str()).collect();
                return Err(err(format!(
                    "label set {set_name} has no column {column} (it has {cols:?})"
                )));
            }
            let (values, states) = (ls.values(column)?, ls.states(column)?);
            if values.len() != states.len() {
                return Err(err(format!(
                    "{} values but {} states in {}",
                    values.len(),
                    states.len(),
                    ls.file.path.display()
                )));
            }
            Ok(Target {
                set,
                column: column.to_string(),
                level: ls.column(column).and_then(|c| c.level).unwrap_or(ls.meta.level),
                catalog: None,
            })
        })
        .collect()
}

/// Prefix of a tabular input read from the catalog's series columns rather than a label set.
pub const CATALOG_PREFIX: &str = "catalog.";

/// The tabular inputs: label columns (`set.column`) and catalog series columns: `catalog.NAME` for a
/// numeric column (e.g. `catalog.slice_thickness`), `catalog.NAME=VALUE` for a text one, an
/// indicator that is 1 where the series has that value (e.g. `catalog.body_part=ANKLE`). A cell
/// without a value (an empty code, NaN) is missing.
pub(super) fn resolve_tabular(cat: &Catalog, names: &[String]) -> Result<Vec<Target>, DataError> {
    use crate::catalog::columns::{cell_text, level_columns, ColType};
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let Some(spec) = name.strip_prefix(CATALOG_PREFIX) else {
            out.extend(resolve_targets(cat, std::slice::from_ref(name))?);
            continue;
        };
        let err = |reason: String| DataError::Label {
            name: name.clone(),
            reason,
        };
        let (column, value) = match spec.split_once('=') {
            Some((c, v)) => (c.trim(), Some(v.trim())),
            None => (spec.trim(), None),
        };
        let columns = level_columns(Level::Series);
        let usable = || {
            columns
                .iter()
                .filter(|c| c.width == 1 && c.ty != ColType::Key32)
                .map(|c| c.name)
                .collect::<Vec<_>>()
        };
        let col = columns
            .iter()
            .find(|c| c.name == column && c.width == 1 && c.ty != ColType::Key32)
            .ok_or_else(|| {
                err(format!(
                    "no series column {column} to read (usable: {:?})",
                    usable()
                ))
            })?;
        let path = format!("series/{column}");
        let read = |e: crate::catalog::CatalogError| err(e.to_string());
        let values: Vec<f64> = match (col.ty, value) {
            (ColType::Code16, Some(v)) => cat
                .tables
                .codes(&path)
                .map_err(read)?
                .iter()
                .map(|c| match cell_text(c) {
                    "" => f64::NAN,
                    text => f64::from(u8::from(text == v)),
                })
                .collect(),
            (ColType::Code16, None) => {
                return Err(err(format!(
                    "{column} is text: name a value, e.g. {CATALOG_PREFIX}{column}=CHEST (1 where the \
                     series has it, else 0)"
                )))
            }
            (_, Some(_)) => return Err(err(format!("{column} is a number: name it without a value"))),
            (ColType::U8, None) => cat
                .tables
                .u8s(&path)
                .map_err(read)?
                .iter()
                .map(|&v| v.into())
                .collect(),
            (ColType::U32, None) => cat
                .tables
                .u32s(&path)
                .map_err(read)?
                .iter()
                .map(|&v| v.into())
                .collect(),
            (ColType::I32, None) => cat
                .tables
                .i32s(&path)
                .map_err(read)?
                .iter()
                .map(|&v| v.into())
                .collect(),
            (ColType::U64, None) => cat
                .tables
                .u64s(&path)
                .map_err(read)?
                .iter()
                .map(|&v| v as f64)
                .collect(),
            (ColType::F64, None) => cat.tables.f64s(&path).map_err(read)?.to_vec(),
            (ColType::Key32, None) => unreachable!("key columns are not offered"),
        };
        out.push(Target {
            set: 0,
            column: name.clone(),
            level: Level::Series,
            catalog: Some(values),
        });
    }
    Ok(out)
}
