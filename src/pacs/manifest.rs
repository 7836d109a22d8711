//! `fetch-manifest.json`: what `pack --from` fetched, beside the packs. It names the archive (base
//! URL without credentials or query), the query (UIDs given on the command line only as
//! pseudonyms) and per series: pseudonymised study and series UIDs, instance count, bytes, the
//! source hashes of its packed items and the outcome. A rerun skips series recorded as packed whose
//! items are all in the pack index, and re-fetches the rest.

use crate::fsx::write_atomic;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// File name of the manifest inside a pack directory.
pub const MANIFEST_FILE: &str = "fetch-manifest.json";
/// Identifies a fetch manifest.
pub const MANIFEST_FORMAT: &str = "medtrain-fetch-manifest";
/// A rank's own manifest while several ranks pull: `fetch-manifest-<rank>.json`.
pub const RANK_FILE_PREFIX: &str = "fetch-manifest-";
/// Version of the manifest layout.
pub const MANIFEST_VERSION: u32 = 1;

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FetchStatus {
    /// Fetched and every item packed (or already in the pack).
    Packed,
    /// Fetched, but some object or item was quarantined.
    Partial,
    /// Could not be fetched (see `http_status` and `reason`).
    Failed,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SeriesEntry {
    pub study: String,
    pub series: String,
    pub modality: String,
    pub instances: u64,
    pub bytes: u64,
    pub attempts: u32,
    pub status: FetchStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Source hashes of the series' items (the pack index's `sources`).
    pub sources: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FetchManifest {
    pub format: String,
    pub version: u32,
    pub base_url: String,
    pub key_fingerprint: String,
    /// The last run's query.
    pub query: serde_json::Value,
    /// By series pseudonym.
    pub series: BTreeMap<String, SeriesEntry>,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("fetch manifest {path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("cannot write the fetch manifest {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

impl FetchManifest {
    /// The manifest in `dir`, or a new one. A manifest written with another key or for another
    /// archive is an error: its pseudonyms would not match.
    pub fn load_or_new(
        dir: &Path,
        base_url: &str,
        key_fingerprint: &str,
        query: serde_json::Value,
    ) -> Result<FetchManifest, ManifestError> {
        let path = dir.join(MANIFEST_FILE);
        let invalid = |reason: String| ManifestError::Invalid {
            path: path.clone(),
            reason,
        };
        let mut manifest = match std::fs::read(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => FetchManifest {
                format: MANIFEST_FORMAT.into(),
                version: MANIFEST_VERSION,
                base_url: base_url.into(),
                key_fingerprint: key_fingerprint.into(),
                query: serde_json::Value::Null,
                series: BTreeMap::new(),
            },
            Err(e) => return Err(invalid(e.to_string())),
            Ok(bytes) => {
                let m: FetchManifest = serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))?;
                if m.format != MANIFEST_FORMAT || m.version != MANIFEST_VERSION {
                    return Err(invalid(format!(
                        "format {} version {} is not ours",
                        m.format, m.version
                    )));
                }
                if m.key_fingerprint != key_fingerprint {
                    return Err(invalid("written with another site key".into()));
                }
                if m.base_url != base_url {
                    return Err(invalid(format!(
                        "written for the archive {}, not {base_url}; pack into another directory",
                        m.base_url
                    )));
                }
                m
            }
        };
        manifest.query = query;
        Ok(manifest)
    }

    pub fn save(&self, dir: &Path) -> Result<(), ManifestError> {
        self.save_as(dir, MANIFEST_FILE)
    }

    /// Writes the manifest under another name (a rank's own file while several ranks pull).
    pub fn save_as(&self, dir: &Path, name: &str) -> Result<(), ManifestError> {
        let path = dir.join(name);
        let text = serde_json::to_string_pretty(self).expect("serialisable");
        write_atomic(&path, text.as_bytes()).map_err(|source| ManifestError::Write { path, source })
    }

    /// Folds the ranks' manifests (`fetch-manifest-<rank>.json`, left by a run on several ranks,
    /// finished or killed) into this one, saves it, then removes them.
    pub fn fold_rank_files(&mut self, dir: &Path) -> Result<(), ManifestError> {
        let invalid = |path: &Path, reason: String| ManifestError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        let mut found = Vec::new();
        let entries = std::fs::read_dir(dir).map_err(|e| invalid(dir, e.to_string()))?;
        for entry in entries {
            let path = entry.map_err(|e| invalid(dir, e.to_string()))?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if name.starts_with(RANK_FILE_PREFIX) && name.ends_with(".json") {
                found.push(path);
            }
        }
        found.sort();
        for path in &found {
            let bytes = std::fs::read(path).map_err(|e| invalid(path, e.to_string()))?;
            let m: FetchManifest =
                serde_json::from_slice(&bytes).map_err(|e| invalid(path, e.to_string()))?;
            if m.key_fingerprint != self.key_fingerprint || m.base_url != self.base_url {
                return Err(invalid(
                    path,
                    "written with another key or for another archive".into(),
                ));
            }
            self.series.extend(m.series);
        }
        if !found.is_empty() {
            self.save(dir)?;
            for path in &found {
                let _ = std::fs::remove_file(path);
            }
        }
        Ok(())
    }

    /// Whether the series was packed by an earlier run and its items are all still committed.
    pub fn is_packed(&self, series_key: &str, committed: impl Fn(&str) -> bool) -> bool {
        self.series.get(series_key).is_some_and(|e| {
            e.status == FetchStatus::Packed && !e.sources.is_empty() && e.sources.iter().all(|s| committed(s))
        })
    }
}

/// File name of rank `rank`'s manifest.
pub fn rank_file(rank: usize) -> String {
    format!("{RANK_FILE_PREFIX}{rank:04}.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(series: &str, status: FetchStatus, sources: &[&str]) -> SeriesEntry {
        SeriesEntry {
            study: "st".into(),
            series: series.into(),
            modality: "CT".into(),
            instances: 3,
            bytes: 10,
            attempts: 1,
            status,
            http_status: None,
            reason: None,
            sources: sources.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn rank_files_fold_into_one_and_only_committed_packed_series_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let url = "http://archive/dicom-web";
        let mut main = FetchManifest::load_or_new(dir.path(), url, "fp", serde_json::Value::Null).unwrap();
        main.series
            .insert("a".into(), entry("a", FetchStatus::Packed, &["h1"]));
        main.save(dir.path()).unwrap();
        let mut rank1 = main.clone();
        rank1.series.clear();
        rank1
            .series
            .insert("b".into(), entry("b", FetchStatus::Packed, &["h2", "h3"]));
        rank1
            .series
            .insert("c".into(), entry("c", FetchStatus::Failed, &[]));
        rank1.save_as(dir.path(), &rank_file(1)).unwrap();

        let mut m = FetchManifest::load_or_new(dir.path(), url, "fp", serde_json::Value::Null).unwrap();
        m.fold_rank_files(dir.path()).unwrap();
        assert!(!dir.path().join(rank_file(1)).exists());
        let reread = FetchManifest::load_or_new(dir.path(), url, "fp", serde_json::Value::Null).unwrap();
        assert_eq!(reread.series.keys().collect::<Vec<_>>(), ["a", "b", "c"]);

        let committed = |h: &str| h == "h1" || h == "h2";
        assert!(reread.is_packed("a", committed));
        assert!(
            !reread.is_packed("b", committed),
            "h3 was never committed: fetch again"
        );
        assert!(!reread.is_packed("c", committed));
        assert!(!reread.is_packed("unknown", committed));

        // Another key or archive: the pseudonyms would not match.
        assert!(FetchManifest::load_or_new(dir.path(), url, "other", serde_json::Value::Null).is_err());
        assert!(FetchManifest::load_or_new(dir.path(), "http://x", "fp", serde_json::Value::Null).is_err());
    }
}
