//! `catalog.json`: the one mutable file of a catalog. It names the immutable table and label-set
//! files of the current generation; replacing it (atomically) is what publishes an update.

use super::columns::Level;
use super::{ioerr, CatalogError};
use crate::fsx::write_atomic;
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::Path;

/// File name of the state inside a catalog directory.
pub const STATE_FILE: &str = "catalog.json";
/// Identifies a catalog (`format` field and HDF5 root attribute).
pub const CATALOG_FORMAT: &str = "medtrain-catalog";
/// Version of the catalog layout; bumped on any incompatible change.
pub const CATALOG_FORMAT_VERSION: u32 = 1;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ShardRef {
    /// Absolute path of the shard when it was catalogued.
    pub path: String,
    pub blake3: String,
    pub series: u64,
    pub slices: u64,
}

/// Value type of a label column.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LabelKind {
    Bool,
    Int,
    Float,
    Category,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LabelColumnRef {
    pub name: String,
    pub kind: LabelKind,
    /// Category names; a category value is stored as its index here.
    #[serde(default)]
    pub categories: Vec<String>,
    /// The level of this column's rows when it differs from its set's (a mask set's series-level
    /// aggregates beside its slice-level ones); `None`: the set's level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<Level>,
}

/// The mask shards of a mask label set: a directory of the catalog, one shard per pack shard.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MaskSetRef {
    pub dir: String,
    pub shards: Vec<crate::pack::masks::MaskShardRef>,
    /// Label values are readers' bits (LIDC): a voxel is labelled when at least this many are set.
    /// `None`: a voxel is labelled when its value is not 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readers_agree: Option<u32>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LabelSetRef {
    pub name: String,
    pub version: u32,
    pub level: Level,
    pub file: String,
    /// BLAKE3 of the label-set file.
    pub blake3: String,
    /// Rows of the level when the set was imported; later rows (added shards) are absent.
    pub rows: u64,
    pub columns: Vec<LabelColumnRef>,
    /// How the set was made (CSV files with their BLAKE3, mapping, censoring policy).
    pub provenance: serde_json::Value,
    /// Pixel labels: where their mask shards are (mask label sets only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub masks: Option<MaskSetRef>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CatalogState {
    pub format: String,
    pub format_version: u32,
    /// Increases by one with every published update.
    pub generation: u64,
    pub key_fingerprint: String,
    pub tables: String,
    pub patients: u64,
    pub series: u64,
    pub slices: u64,
    pub shards: Vec<ShardRef>,
    pub label_sets: Vec<LabelSetRef>,
}

impl CatalogState {
    pub fn empty(key_fingerprint: &str) -> CatalogState {
        CatalogState {
            format: CATALOG_FORMAT.into(),
            format_version: CATALOG_FORMAT_VERSION,
            generation: 0,
            key_fingerprint: key_fingerprint.into(),
            tables: String::new(),
            patients: 0,
            series: 0,
            slices: 0,
            shards: Vec::new(),
            label_sets: Vec::new(),
        }
    }

    /// Loads the state of a catalog directory; `Ok(None)` when there is no catalog there yet.
    pub fn load(dir: &Path) -> Result<Option<CatalogState>, CatalogError> {
        let path = dir.join(STATE_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(ioerr(&path)(e)),
        };
        let state: CatalogState = serde_json::from_str(&text)
            .map_err(|e| CatalogError::invalid(&path, format!("not a catalog state: {e}")))?;
        if state.format != CATALOG_FORMAT || state.format_version != CATALOG_FORMAT_VERSION {
            return Err(CatalogError::invalid(
                &path,
                format!(
                    "format {} version {}; this medtrain reads {CATALOG_FORMAT} version \
                     {CATALOG_FORMAT_VERSION}: rebuild the catalog with `medtrain catalog build \
                     <packs> --out <dir>` (and import its labels again)",
                    state.format, state.format_version
                ),
            ));
        }
        Ok(Some(state))
    }

    /// Publishes this state: readers opening the catalog from now on see it.
    pub fn save(&self, dir: &Path) -> Result<(), CatalogError> {
        let path = dir.join(STATE_FILE);
        let text = serde_json::to_string_pretty(self).expect("state serialises");
        write_atomic(&path, text.as_bytes()).map_err(ioerr(&path))
    }

    /// Content hash: the shards (by checksum, in order) and label sets (by checksum). Two catalogs
    /// with the same hash answer every query identically.
    pub fn content_hash(&self) -> String {
        let mut h = blake3::Hasher::new();
        h.update(self.key_fingerprint.as_bytes());
        for s in &self.shards {
            h.update(b"shard:");
            h.update(s.blake3.as_bytes());
        }
        for l in &self.label_sets {
            h.update(format!("labels:{}:{}:{}", l.name, l.version, l.blake3).as_bytes());
        }
        h.finalize().to_hex().to_string()
    }

    pub fn rows(&self, level: Level) -> u64 {
        match level {
            Level::Patient => self.patients,
            Level::Series => self.series,
            Level::Slice => self.slices,
        }
    }
}
