//! `medtrain stage`: copies the shards each node will read from the archive (parallel file system)
//! to node-local disk before training, once per node, the node's ranks sharing the copying. The plan
//! comes from the sampler schedule `train` uses ([`plan`]); each copy is verified against the
//! whole-shard BLAKE3 recorded at pack time ([`copy`]); [`cli`] coordinates the ranks;
//! [`background`] stages while `train` already runs (`train --stage-async`).

pub mod background;
pub mod cli;
pub mod copy;
pub mod plan;

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("{0}")]
    Usage(String),
    #[error("shard {path}: {reason}")]
    Source { path: PathBuf, reason: String },
}
