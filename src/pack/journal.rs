//! Per-worker journals of committed shards. When several workers (MPI ranks) pack into one
//! directory, none of them writes `index.json` while packing: each replaces its own
//! `journal-<rank>.json` atomically after every shard it commits, and one process folds the
//! journals into the index at the end of the run, or at the start of the next one if the run was
//! killed. So `index.json` has one writer at a time and no committed shard of any worker is lost.

use super::index::{IndexError, PackIndex, ShardEntry};
use crate::fsx::write_atomic;
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Path, PathBuf};

/// Identifies a journal file.
pub const JOURNAL_FORMAT: &str = "medtrain-pack-journal";
/// Journal file names: `journal-<rank>.json`.
pub const JOURNAL_PREFIX: &str = "journal-";
const JOURNAL_SUFFIX: &str = ".json";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Journal {
    pub format: String,
    pub rank: usize,
    pub key_fingerprint: String,
    /// Shards this worker committed in this run, in order.
    pub shards: Vec<ShardEntry>,
}

impl Journal {
    pub fn new(rank: usize, key_fingerprint: &str) -> Journal {
        Journal {
            format: JOURNAL_FORMAT.into(),
            rank,
            key_fingerprint: key_fingerprint.into(),
            shards: Vec::new(),
        }
    }

    pub fn path(dir: &Path, rank: usize) -> PathBuf {
        dir.join(format!("{JOURNAL_PREFIX}{rank:04}{JOURNAL_SUFFIX}"))
    }

    /// Replaces this worker's journal atomically (called after each committed shard).
    pub fn save(&self, dir: &Path) -> Result<(), IndexError> {
        let path = Journal::path(dir, self.rank);
        let text = serde_json::to_string_pretty(self).expect("journal serialises");
        write_atomic(&path, text.as_bytes()).map_err(|source| IndexError::Write { path, source })
    }

    fn load(path: &Path) -> Result<Journal, IndexError> {
        let text = fs::read_to_string(path).map_err(|source| IndexError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let journal: Journal = serde_json::from_str(&text).map_err(|e| IndexError::Invalid {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        if journal.format != JOURNAL_FORMAT {
            return Err(IndexError::Invalid {
                path: path.to_path_buf(),
                reason: format!("format is {:?}", journal.format),
            });
        }
        Ok(journal)
    }
}

/// The journals in `dir`, in file-name (rank) order.
fn journal_paths(dir: &Path) -> Result<Vec<PathBuf>, IndexError> {
    let read = |source| IndexError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let mut paths = Vec::new();
    for entry in fs::read_dir(dir).map_err(read)? {
        let path = entry.map_err(read)?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.starts_with(JOURNAL_PREFIX) && name.ends_with(JOURNAL_SUFFIX) {
            paths.push(path);
        }
    }
    paths.sort();
    Ok(paths)
}

/// Adds the shards recorded in the journals of `dir` to `index` (once each, in rank order), saves the
/// index if anything was added, then removes the journals. Journals of another key are refused.
/// Safe to repeat after a kill at any point: entries already in the index are skipped.
pub fn commit_journals(dir: &Path, mut index: PackIndex) -> Result<PackIndex, IndexError> {
    let paths = journal_paths(dir)?;
    if paths.is_empty() {
        return Ok(index);
    }
    let mut added = 0usize;
    for path in &paths {
        let journal = Journal::load(path)?;
        if journal.key_fingerprint != index.key_fingerprint {
            return Err(IndexError::Invalid {
                path: path.clone(),
                reason: format!(
                    "written with key {} but the pack uses key {}",
                    journal.key_fingerprint, index.key_fingerprint
                ),
            });
        }
        for entry in journal.shards {
            if index.shards.iter().any(|s| s.file == entry.file) {
                continue;
            }
            if !dir.join(&entry.file).is_file() {
                tracing::warn!(journal = %path.display(), shard = %entry.file, "journal names a shard that is gone; not indexed");
                continue;
            }
            index.shards.push(entry);
            added += 1;
        }
    }
    if added > 0 {
        index.save(dir)?;
    }
    for path in &paths {
        fs::remove_file(path).map_err(|source| IndexError::Write {
            path: path.clone(),
            source,
        })?;
    }
    tracing::debug!(
        journals = paths.len(),
        shards = added,
        "journals committed to the index"
    );
    Ok(index)
}
