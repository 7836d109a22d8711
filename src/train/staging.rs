//! Asynchronous staging inside `train`: each node plans and starts copying its shards to local disk
//! as `stage` would, while training reads the archive until a shard is there.

use super::run::{StagingStats, TrainError, TrainOptions};
use crate::data::Dataset;
use crate::dist::World;
use crate::stage::background::{AsyncOptions, BackgroundStage, CopierReport};
use std::path::PathBuf;
use std::time::Instant;

fn failed(e: impl std::fmt::Display) -> TrainError {
    TrainError::Failed(e.to_string())
}

/// Plans this node's staging exactly as `stage` does, prepares the job directory (refusing early when
/// the local disk cannot hold the plan), and starts this rank's copier. A collective.
pub(super) fn start_background(
    world: &World,
    opts: &TrainOptions,
    a: &AsyncOptions,
    train: &Dataset,
    val: Option<&Dataset>,
    origin: Instant,
) -> Result<BackgroundStage, TrainError> {
    use crate::stage::{cli, copy, plan};
    if opts.settings.data.shard_dir.is_some() {
        return Err(TrainError::Usage(
            "--stage-async reads shards from its staging directory: do not also give --shard-dir or \
             [data] shard_dir"
                .into(),
        ));
    }
    let state = crate::catalog::state::CatalogState::load(&opts.catalog)
        .map_err(|e| TrainError::Usage(format!("{}: {e}", opts.catalog.display())))?
        .ok_or_else(|| {
            TrainError::Usage(format!(
                "{}: not a catalog (no catalog.json)",
                opts.catalog.display()
            ))
        })?;
    let node_of_rank = cli::gather_nodes(world);
    let plan = plan::plan(&opts.settings, &state, train, val, &node_of_rank)
        .map_err(|e| TrainError::Usage(e.to_string()))?;
    let node = plan
        .nodes
        .get(world.node_index())
        .ok_or_else(|| failed(format!("node {} has no staging plan", world.node_index())))?;
    cli::make_job_dir(&a.dir).map_err(TrainError::Failed)?;
    if world.local_rank() == 0 {
        let free =
            copy::free_bytes(&a.dir).map_err(|e| failed(format!("statvfs {}: {e}", a.dir.display())))?;
        let present: u64 = node
            .shards
            .iter()
            .filter(|s| std::fs::metadata(a.dir.join(&s.file)).is_ok_and(|m| m.len() == s.bytes))
            .map(|s| s.bytes)
            .sum();
        let needed = node.bytes.saturating_sub(present);
        if needed > free {
            return Err(TrainError::Usage(format!(
                "node {} ({}): not enough space in {}: the plan needs {needed} more bytes ({} planned, \
                 {present} already staged), but {free} bytes are free",
                world.node_index(),
                world.node_name(),
                a.dir.display(),
                node.bytes
            )));
        }
        tracing::info!(
            dir = %a.dir.display(),
            shards = node.shards.len(),
            bytes = node.bytes,
            bandwidth_mbps = a.bandwidth_mbps.unwrap_or(0.0),
            "staging in the background"
        );
    }
    let archive = state.shards.iter().map(|r| PathBuf::from(&r.path)).collect();
    Ok(BackgroundStage::start(
        node,
        world.local_rank(),
        world.local_size(),
        archive,
        a,
        origin,
    ))
}

/// Sums and maxima of every rank's staging report. A collective.
pub(super) fn staging_stats(
    world: &World,
    a: &AsyncOptions,
    r: &CopierReport,
    first_step: Option<f64>,
) -> StagingStats {
    let mut sums = [
        r.waited_seconds,
        r.archive_reads as f64,
        r.shards_copied as f64,
        r.shards_skipped as f64,
        r.bytes_copied as f64,
        r.failed.len() as f64,
    ];
    world.allreduce_sum_f64(&mut sums);
    // Nanoseconds; u64::MAX stands for "not done" and wins the maximum.
    let nanos = |s: Option<f64>| s.map_or(u64::MAX, |v| (v * 1e9) as u64);
    let mut latest = [nanos(r.finished_seconds), nanos(first_step)];
    world.allreduce_max_u64(&mut latest);
    let seconds = |n: u64| (n != u64::MAX).then(|| n as f64 * 1e-9);
    for f in &r.failed {
        tracing::warn!(shard = %f.path.display(), "staging failed: {}", f.reason);
    }
    let stats = StagingStats {
        dir: a.dir.clone(),
        fallback: a.fallback,
        staging_seconds: seconds(latest[0]),
        first_step_seconds: seconds(latest[1]),
        waited_for_shards_seconds: sums[0],
        archive_reads: sums[1] as u64,
        shards_copied: sums[2] as u64,
        shards_skipped: sums[3] as u64,
        bytes_copied: sums[4] as u64,
        shards_failed: sums[5] as u64,
    };
    if world.rank() == 0 {
        tracing::info!(
            first_step_seconds = ?stats.first_step_seconds,
            staging_seconds = ?stats.staging_seconds,
            waited_for_shards_seconds = format!("{:.3}", stats.waited_for_shards_seconds),
            archive_reads = stats.archive_reads,
            "asynchronous staging"
        );
    }
    stats
}
