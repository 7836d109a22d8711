//! `medtrain inspect`: a summary of a pack directory, and with `--verify` a check of every shard
//! against the BLAKE3 checksum recorded when it was written (what staging relies on later).

use super::index::{IndexError, PackIndex};
use super::reader::{ReadError, ShardReader};
use super::shard::hash_file;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Default, Serialize)]
pub struct ModalitySummary {
    pub items: u64,
    pub slices: u64,
    pub pixel_bytes: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct PackSummary {
    pub pack: PathBuf,
    pub key_fingerprint: String,
    pub shards: u64,
    pub bytes: u64,
    pub patients: u64,
    pub by_modality: BTreeMap<String, ModalitySummary>,
    /// Shards whose content does not match their recorded checksum (only with verification).
    pub corrupt_shards: Vec<String>,
    pub verified: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("{0} holds no pack (no index.json)")]
    NoPack(PathBuf),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("cannot hash {path}: {source}")]
    Hash { path: PathBuf, source: std::io::Error },
}

pub fn inspect(dir: &Path, verify: bool) -> Result<PackSummary, InspectError> {
    let index = PackIndex::load(dir)?.ok_or_else(|| InspectError::NoPack(dir.to_path_buf()))?;
    let mut summary = PackSummary {
        pack: dir.to_path_buf(),
        key_fingerprint: index.key_fingerprint.clone(),
        shards: index.shards.len() as u64,
        bytes: index.shards.iter().map(|s| s.bytes).sum(),
        patients: 0,
        by_modality: BTreeMap::new(),
        corrupt_shards: Vec::new(),
        verified: verify,
    };
    let mut patients = std::collections::BTreeSet::new();
    for entry in &index.shards {
        let path = dir.join(&entry.file);
        if verify {
            let (hash, _) = hash_file(&path).map_err(|source| InspectError::Hash {
                path: path.clone(),
                source,
            })?;
            if hash != entry.blake3 {
                summary.corrupt_shards.push(entry.file.clone());
                continue;
            }
        }
        let shard = ShardReader::open(&path)?;
        for s in &shard.series {
            let m = summary.by_modality.entry(s.modality.clone()).or_default();
            m.items += 1;
            m.slices += u64::from(s.n_slices);
            m.pixel_bytes += s.data_length;
            patients.insert(s.patient_key.clone());
        }
    }
    summary.patients = patients.len() as u64;
    Ok(summary)
}
