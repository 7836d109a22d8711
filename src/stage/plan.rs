//! The staging plan: for each node, the shards its ranks will read in this job, in order of first
//! use, each once. A pure function of the settings, the catalog, the manifest's splits (as datasets)
//! and the world layout: the training split's shards come from the very sampler `train` builds
//! ([`Settings::train_sampler`]) over the run's epochs, and the shards of the validation samples
//! the node's ranks score (each rank a contiguous share, [`eval_share`], and the baselines are read
//! the same way), placed where the first evaluation needs them. Staging every validation shard on
//! every node would put the whole archive on each node at cohort scale: a split by patient leaves
//! validation series in nearly every shard.

use super::StageError;
use crate::catalog::state::CatalogState;
use crate::data::eval_share;
use crate::data::sampler::{Layout, Sampler};
use crate::data::Dataset;
use crate::settings::Settings;
use serde::Serialize;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// One shard to stage: catalog id, file name (kept on the node-local copy), source and checksum.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PlannedShard {
    pub id: u32,
    pub file: String,
    pub source: PathBuf,
    /// Whole-shard BLAKE3 recorded at pack time (hex).
    pub blake3: String,
    pub bytes: u64,
}

/// What one node stages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodePlan {
    pub node: usize,
    /// World ranks on this node, ascending.
    pub ranks: Vec<usize>,
    /// In order of first use.
    pub shards: Vec<PlannedShard>,
    pub bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StagePlan {
    pub nodes: Vec<NodePlan>,
}

/// Catalog shard ids node `node` reads, in order of first use: each epoch's training shards (from
/// the sampler's schedule), and the shards of its ranks' validation shares (ascending id) after the
/// epoch that first evaluates. `sampler` is the one `train` builds for this world; `node_of_rank[r]`
/// is rank r's node, and the world is `node_of_rank.len()` ranks.
pub fn node_shard_ids(
    settings: &Settings,
    sampler: &Sampler,
    val: Option<&Dataset>,
    node_of_rank: &[usize],
    node: usize,
) -> Result<Vec<u32>, StageError> {
    // The validation samples this node's ranks score (and read for the baselines).
    let size = node_of_rank.len();
    let mut val_ids: Vec<u32> = match val {
        Some(v) => (0..size)
            .filter(|&r| node_of_rank[r] == node)
            .flat_map(|r| eval_share(r, size, v.len()))
            .map(|i| v.shard_of(i))
            .collect(),
        None => Vec::new(),
    };
    val_ids.sort_unstable();
    val_ids.dedup();
    let t = &settings.train;
    let epochs = t.epochs as u64;
    let mut seen = HashSet::new();
    let mut order = Vec::new();
    let mut val_done = val_ids.is_empty();
    for epoch in 0..epochs {
        for id in sampler.node_shards(epoch, node) {
            if seen.insert(id) {
                order.push(id);
            }
        }
        // Mirrors train's rule: evaluate after the last epoch and every `eval_every` epochs.
        let finished = epoch + 1;
        let evaluates = finished == epochs || (t.eval_every > 0 && finished % t.eval_every as u64 == 0);
        if evaluates && !val_done {
            for &id in &val_ids {
                if seen.insert(id) {
                    order.push(id);
                }
            }
            val_done = true;
        }
    }
    Ok(order)
}

/// The layout the sampler sees on the lowest rank; the shard schedule of a node does not depend on
/// which of its ranks asks.
fn sampler_layout(node_of_rank: &[usize]) -> Result<Layout, StageError> {
    let size = node_of_rank.len();
    let first = *node_of_rank
        .first()
        .ok_or_else(|| StageError::Usage("an empty world has no staging plan".into()))?;
    let nodes = node_of_rank.iter().max().map_or(0, |&n| n + 1);
    Ok(Layout {
        rank: 0,
        size,
        node: first,
        nodes,
        local_rank: 0,
        local_size: node_of_rank.iter().filter(|&&n| n == first).count(),
    })
}

/// The whole plan: every node's shards with their sources, checksums and sizes (from the source files).
pub fn plan(
    settings: &Settings,
    catalog: &CatalogState,
    train: &Dataset,
    val: Option<&Dataset>,
    node_of_rank: &[usize],
) -> Result<StagePlan, StageError> {
    let nodes = node_of_rank.iter().max().map_or(0, |&n| n + 1);
    // One sampler for every node: a node's shard schedule does not depend on which rank asks.
    let sampler = settings
        .train_sampler(train, sampler_layout(node_of_rank)?)
        .map_err(|e| StageError::Usage(e.to_string()))?;
    let mut out = Vec::with_capacity(nodes);
    for node in 0..nodes {
        let ids = node_shard_ids(settings, &sampler, val, node_of_rank, node)?;
        let shards = ids
            .iter()
            .map(|&id| planned_shard(catalog, id))
            .collect::<Result<Vec<_>, _>>()?;
        out.push(NodePlan {
            node,
            ranks: (0..node_of_rank.len())
                .filter(|&r| node_of_rank[r] == node)
                .collect(),
            bytes: shards.iter().map(|s| s.bytes).sum(),
            shards,
        });
    }
    Ok(StagePlan { nodes: out })
}

fn planned_shard(catalog: &CatalogState, id: u32) -> Result<PlannedShard, StageError> {
    let r = catalog.shards.get(id as usize).ok_or_else(|| {
        StageError::Usage(format!(
            "shard {id} is not in the catalog (catalog and manifest do not match?)"
        ))
    })?;
    let source = PathBuf::from(&r.path);
    let file = Path::new(&r.path)
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| StageError::Usage(format!("catalogued shard path {:?} has no file name", r.path)))?
        .to_string();
    let bytes = std::fs::metadata(&source)
        .map_err(|e| StageError::Source {
            path: source.clone(),
            reason: format!("cannot stat: {e}"),
        })?
        .len();
    Ok(PlannedShard {
        id,
        file,
        source,
        blake3: r.blake3.clone(),
        bytes,
    })
}
