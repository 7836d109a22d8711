//! An open catalog: the state read once from `catalog.json`, the tables and label sets mapped.
//! Everything a query or split reads comes from here, so one `Catalog` is one consistent snapshot
//! even while an update publishes a new generation.

use super::build::open_tables;
use super::columns::Level;
use super::state::{CatalogState, LabelColumnRef, LabelSetRef, STATE_FILE};
use super::store::MappedFile;
use super::{h5err, CatalogError};
use crate::h5text::read_text_attr;
use std::path::{Path, PathBuf};

/// Label state codes stored per row in `<column>/state`.
pub const LABEL_ABSENT: u8 = 0;
pub const LABEL_PRESENT: u8 = 1;
/// The row is in the label set but its value is not known (empty cell, censored follow-up).
pub const LABEL_UNKNOWN: u8 = 2;

pub struct LabelSet {
    pub meta: LabelSetRef,
    pub file: MappedFile,
}

impl LabelSet {
    pub fn open(dir: &Path, meta: &LabelSetRef) -> Result<LabelSet, CatalogError> {
        let path = dir.join(&meta.file);
        let file = MappedFile::open(&path, |f| {
            let name = read_text_attr(f, "name").map_err(h5err(&path))?;
            if name != meta.name {
                return Err(CatalogError::invalid(
                    &path,
                    format!("holds label set {name}, not {}", meta.name),
                ));
            }
            Ok(())
        })?;
        Ok(LabelSet {
            meta: meta.clone(),
            file,
        })
    }

    pub fn column(&self, name: &str) -> Option<&LabelColumnRef> {
        self.meta.columns.iter().find(|c| c.name == name)
    }

    pub fn values(&self, column: &str) -> Result<&[f64], CatalogError> {
        self.file.f64s(&format!("{column}/value"))
    }

    pub fn states(&self, column: &str) -> Result<&[u8], CatalogError> {
        self.file.u8s(&format!("{column}/state"))
    }

    /// Per-series slice counts of a slice-level column (`series_true`, `series_present`,
    /// `series_unknown`), precomputed at import so that counts need not scan slices.
    pub fn series_counts(&self, column: &str, which: &str) -> Result<&[u32], CatalogError> {
        self.file.u32s(&format!("{column}/{which}"))
    }
}

pub struct Catalog {
    pub dir: PathBuf,
    pub state: CatalogState,
    pub tables: MappedFile,
    pub labels: Vec<LabelSet>,
}

impl Catalog {
    pub fn open(dir: &Path) -> Result<Catalog, CatalogError> {
        let state = CatalogState::load(dir)?.ok_or_else(|| {
            CatalogError::invalid(
                dir,
                format!(
                    "no {STATE_FILE}: run `medtrain catalog build <packs> --out {}`",
                    dir.display()
                ),
            )
        })?;
        let tables = open_tables(dir, &state)?;
        let labels = state
            .label_sets
            .iter()
            .map(|meta| LabelSet::open(dir, meta))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Catalog {
            dir: dir.to_path_buf(),
            state,
            tables,
            labels,
        })
    }

    pub fn rows(&self, level: Level) -> usize {
        self.state.rows(level) as usize
    }

    /// The newest version of label set `name`, or the given version.
    pub fn label_set(&self, name: &str, version: Option<u32>) -> Option<&LabelSet> {
        self.labels
            .iter()
            .filter(|l| l.meta.name == name && version.is_none_or(|v| l.meta.version == v))
            .max_by_key(|l| l.meta.version)
    }

    pub fn col_u32(&self, level: Level, name: &str) -> Result<&[u32], CatalogError> {
        self.tables.u32s(&format!("{}/{name}", level.group()))
    }

    pub fn col_u64(&self, level: Level, name: &str) -> Result<&[u64], CatalogError> {
        self.tables.u64s(&format!("{}/{name}", level.group()))
    }

    pub fn col_f64(&self, level: Level, name: &str) -> Result<&[f64], CatalogError> {
        self.tables.f64s(&format!("{}/{name}", level.group()))
    }

    pub fn col_keys(&self, level: Level, name: &str) -> Result<&[[u8; 32]], CatalogError> {
        self.tables.keys(&format!("{}/{name}", level.group()))
    }

    pub fn col_codes(&self, level: Level, name: &str) -> Result<&[[u8; 16]], CatalogError> {
        self.tables.codes(&format!("{}/{name}", level.group()))
    }
}

impl Catalog {
    /// InstanceNumbers of a range of slice rows.
    pub fn col_i32s_slice(&self, rows: std::ops::Range<usize>) -> Result<&[i32], CatalogError> {
        Ok(&self.tables.i32s("slices/instance_number")?[rows])
    }
}
