//! `catalog`: one columnar view over many shards (patients, series, slices), typed label sets
//! imported from clinical CSV exports, a small filter language, and patient-level splits written
//! as manifests that `stage` and `train` consume.
//!
//! Layout of a catalog directory (see `store.rs` for the why):
//! - `catalog.json`: the current state (generation, shards, label sets); replaced atomically, so a
//!   reader sees either the old or the new catalog, never a mix.
//! - `tables-<generation>.h5`: `patients/`, `series/`, `slices/`, one contiguous, page-aligned HDF5
//!   dataset per column, memory-mapped by readers at the offset HDF5 reports.
//! - `labels-<name>-v<version>-<generation>.h5`: one label set (value + state per column).
//!
//! Files are immutable once referenced by `catalog.json`; an update writes new files and then
//! replaces `catalog.json`.

pub mod bench;
pub mod build;
pub mod cli;
pub mod columns;
pub mod labels;
pub mod query;
pub mod split;
pub mod state;
pub mod store;
pub mod synth;
pub mod view;

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("HDF5 error in {path}: {source}")]
    Hdf5 { path: PathBuf, source: hdf5::Error },
    #[error("I/O error on {path}: {source} (check the path, free space and permissions)")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error(transparent)]
    Key(#[from] crate::deid::KeyError),
    #[error(transparent)]
    Index(#[from] crate::pack::index::IndexError),
    #[error(transparent)]
    Shard(#[from] crate::pack::reader::ReadError),
}

impl CatalogError {
    pub fn invalid(path: impl Into<PathBuf>, reason: impl Into<String>) -> CatalogError {
        CatalogError::Invalid {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

/// Wraps an HDF5 error with the file it concerns.
pub(crate) fn h5err(path: &std::path::Path) -> impl Fn(hdf5::Error) -> CatalogError + '_ {
    move |source| CatalogError::Hdf5 {
        path: path.to_path_buf(),
        source,
    }
}

/// Wraps an I/O error with the file it concerns.
pub(crate) fn ioerr(path: &std::path::Path) -> impl Fn(std::io::Error) -> CatalogError + '_ {
    move |source| CatalogError::Io {
        path: path.to_path_buf(),
        source,
    }
}
