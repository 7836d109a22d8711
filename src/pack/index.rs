//! The pack index (`index.json`): the list of committed shards with their whole-shard BLAKE3
//! checksums and the source hashes of the series they hold. A shard not listed here does not
//! exist for readers; the index is replaced atomically after each shard is committed.

use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Path, PathBuf};

/// File name of the index inside a pack directory.
pub const INDEX_FILE: &str = "index.json";
/// Identifies a pack index.
pub const PACK_FORMAT: &str = "medtrain-pack";
/// Version of the pack layout (index + shard tables); bumped on any incompatible change.
pub const PACK_FORMAT_VERSION: u32 = 1;
/// Extension of the checksum file written beside each shard (`b3sum` format).
pub const CHECKSUM_SUFFIX: &str = crate::fsx::CHECKSUM_SUFFIX;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ShardEntry {
    pub file: String,
    pub bytes: u64,
    pub blake3: String,
    pub series: u64,
    pub slices: u64,
    pub pixel_bytes: u64,
    /// Source hashes of the items in this shard (what makes re-packing idempotent).
    pub sources: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PackIndex {
    pub format: String,
    pub format_version: u32,
    pub key_fingerprint: String,
    pub shards: Vec<ShardEntry>,
}

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("cannot read pack index {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("pack index {path} is not valid: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("pack index {path} has format version {found}; this medtrain reads version {expected}: re-pack with this version")]
    Version {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

impl PackIndex {
    pub fn new(key_fingerprint: &str) -> PackIndex {
        PackIndex {
            format: PACK_FORMAT.into(),
            format_version: PACK_FORMAT_VERSION,
            key_fingerprint: key_fingerprint.into(),
            shards: Vec::new(),
        }
    }

    /// Loads the index of a pack directory; `Ok(None)` when the directory holds no pack yet.
    pub fn load(dir: &Path) -> Result<Option<PackIndex>, IndexError> {
        let path = dir.join(INDEX_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(IndexError::Read { path, source }),
        };
        let index: PackIndex = serde_json::from_str(&text).map_err(|e| IndexError::Invalid {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if index.format != PACK_FORMAT {
            return Err(IndexError::Invalid {
                path,
                reason: format!("format is {:?}", index.format),
            });
        }
        if index.format_version != PACK_FORMAT_VERSION {
            return Err(IndexError::Version {
                path,
                found: index.format_version,
                expected: PACK_FORMAT_VERSION,
            });
        }
        Ok(Some(index))
    }

    /// Writes the index atomically (temporary file, fsync, rename, fsync of the directory).
    pub fn save(&self, dir: &Path) -> Result<(), IndexError> {
        let text = serde_json::to_string_pretty(self).expect("index serialises");
        crate::fsx::write_atomic(&dir.join(INDEX_FILE), text.as_bytes()).map_err(|source| IndexError::Write {
            path: dir.join(INDEX_FILE),
            source,
        })
    }

    pub fn contains_source(&self, source_hash: &str) -> bool {
        self.shards
            .iter()
            .any(|s| s.sources.iter().any(|h| h == source_hash))
    }
}
