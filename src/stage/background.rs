//! Asynchronous staging (`train --stage-async`): training starts at once while a background thread
//! per rank copies that rank's share of its node's plan (shard i of the node's list by local rank
//! i % local_size, as `stage` does), in order of first use, at the configured bandwidth.
//!
//! The training data path asks a [`ShardSource`] for each shard before mapping it. A shard is read
//! from the job directory only under its final name, which [`stage_shard`] gives a file after it was
//! verified; until then the reader waits for it (the rank's own copier signals each shard it has
//! done; a shard copied by another rank of the node is polled for, with backoff), up to a timeout
//! that names the shard, or, with [`Fallback::Archive`], reads the archive copy (the same bytes).
//! Shards outside the plan are read from the archive.

use super::cli::FailedShard;
use super::copy::{stage_shard, RateLimit, ShardOutcome};
use super::plan::{NodePlan, PlannedShard};
use crate::data::dataset::ShardSource;
use crate::data::DataError;
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What a read does when its shard is not staged yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Fallback {
    /// Wait until the shard is staged (up to the timeout).
    Wait,
    /// Read the shard from the archive.
    Archive,
}

impl Fallback {
    pub fn parse(text: &str) -> Result<Fallback, String> {
        match text {
            "wait" => Ok(Fallback::Wait),
            "archive" => Ok(Fallback::Archive),
            other => Err(format!("--stage-fallback {other:?}: use wait or archive")),
        }
    }
}

/// Settings of asynchronous staging.
#[derive(Clone, Debug)]
pub struct AsyncOptions {
    /// The per-job staging directory (`<local>/medtrain-<job>`).
    pub dir: PathBuf,
    /// MB/s (10^6 bytes) per node, shared by its ranks.
    pub bandwidth_mbps: Option<f64>,
    pub fallback: Fallback,
    /// Longest wait for one shard before the read fails.
    pub wait_timeout: Duration,
}

/// What this rank's copier and readers did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CopierReport {
    pub shards_copied: u64,
    pub shards_skipped: u64,
    pub bytes_copied: u64,
    pub failed: Vec<FailedShard>,
    /// Seconds from the origin given to [`BackgroundStage::start`] to the end of this rank's share;
    /// None when it was stopped before its share was done.
    pub finished_seconds: Option<f64>,
    /// Seconds readers on this rank waited for shards.
    pub waited_seconds: f64,
    /// Shards this rank read from the archive because they were not staged yet.
    pub archive_reads: u64,
}

struct Shared {
    /// This rank's shards done so far: Ok, or the reason the copy failed.
    done: Mutex<HashMap<u32, Result<(), String>>>,
    signal: Condvar,
    /// Set when training ends first: the copier stops, even within a shard.
    stop: Arc<AtomicBool>,
    waited_nanos: AtomicU64,
    archive_reads: AtomicU64,
}

/// A running background copier and the shard source that reads its results.
pub struct BackgroundStage {
    shared: Arc<Shared>,
    handle: Option<JoinHandle<CopierReport>>,
    source: ShardSource,
}

/// The planned shard and the local rank that copies it.
struct Assigned {
    shard: PlannedShard,
    copier: usize,
}

impl BackgroundStage {
    /// Starts copying this rank's share of `node` into `opts.dir` (which must exist). `archive[id]`
    /// is the catalogued path of shard `id`; `origin` is the instant staging times are measured from.
    pub fn start(
        node: &NodePlan,
        local_rank: usize,
        local_size: usize,
        archive: Vec<PathBuf>,
        opts: &AsyncOptions,
        origin: Instant,
    ) -> BackgroundStage {
        let local_size = local_size.max(1);
        let shared = Arc::new(Shared {
            done: Mutex::new(HashMap::new()),
            signal: Condvar::new(),
            stop: Arc::new(AtomicBool::new(false)),
            waited_nanos: AtomicU64::new(0),
            archive_reads: AtomicU64::new(0),
        });
        let assigned: HashMap<u32, Assigned> = node
            .shards
            .iter()
            .enumerate()
            .map(|(i, s)| {
                (
                    s.id,
                    Assigned {
                        shard: s.clone(),
                        copier: i % local_size,
                    },
                )
            })
            .collect();
        let mine: Vec<PlannedShard> = node
            .shards
            .iter()
            .enumerate()
            .filter(|(i, _)| i % local_size == local_rank)
            .map(|(_, s)| s.clone())
            .collect();
        let per_rank = opts.bandwidth_mbps.map(|mbps| mbps * 1e6 / local_size as f64);
        let handle = {
            let shared = shared.clone();
            let dir = opts.dir.clone();
            std::thread::Builder::new()
                .name(format!("stage-{local_rank}"))
                .spawn(move || copier(&mine, &dir, per_rank, &shared, origin))
                .ok()
        };
        let source = make_source(
            shared.clone(),
            Arc::new(assigned),
            Arc::new(archive),
            opts.clone(),
            local_rank,
            handle.is_some(),
        );
        BackgroundStage {
            shared,
            handle,
            source,
        }
    }

    /// The shard source for the datasets of this rank.
    pub fn source(&self) -> ShardSource {
        self.source.clone()
    }

    /// Ends staging on this rank: with `complete`, lets the copier finish its share; otherwise it
    /// stops after the shard in progress. Returns what the copier and the readers did.
    pub fn finish(mut self, complete: bool) -> CopierReport {
        if !complete {
            self.shared.stop.store(true, Ordering::SeqCst);
        }
        let mut report = match self.handle.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => CopierReport {
                failed: vec![FailedShard {
                    path: PathBuf::new(),
                    reason: "the staging thread panicked".into(),
                }],
                ..CopierReport::default()
            },
            None => CopierReport::default(),
        };
        report.waited_seconds = self.shared.waited_nanos.load(Ordering::SeqCst) as f64 * 1e-9;
        report.archive_reads = self.shared.archive_reads.load(Ordering::SeqCst);
        report
    }
}

fn copier(
    mine: &[PlannedShard],
    dir: &Path,
    per_rank: Option<f64>,
    shared: &Arc<Shared>,
    origin: Instant,
) -> CopierReport {
    let mut report = CopierReport::default();
    let mut limit = RateLimit::new(per_rank).with_stop(shared.stop.clone());
    for shard in mine {
        if shared.stop.load(Ordering::SeqCst) {
            tracing::info!(
                left = mine.len() - shared.done.lock().map_or(0, |d| d.len()),
                "staging stopped with training"
            );
            return report;
        }
        let result = match stage_shard(shard, dir, &mut limit) {
            ShardOutcome::Skipped => {
                report.shards_skipped += 1;
                Ok(())
            }
            ShardOutcome::Copied { .. } => {
                report.shards_copied += 1;
                report.bytes_copied += shard.bytes;
                Ok(())
            }
            ShardOutcome::Failed { .. } if shared.stop.load(Ordering::SeqCst) => {
                tracing::info!(shard = %shard.source.display(), "staging stopped with training");
                return report;
            }
            ShardOutcome::Failed { reason } => {
                report.failed.push(FailedShard {
                    path: shard.source.clone(),
                    reason: reason.clone(),
                });
                Err(reason)
            }
        };
        if let Ok(mut done) = shared.done.lock() {
            done.insert(shard.id, result);
        }
        shared.signal.notify_all();
    }
    let seconds = origin.elapsed().as_secs_f64();
    report.finished_seconds = Some(seconds);
    tracing::info!(
        seconds = format!("{seconds:.3}"),
        shards = mine.len(),
        "staging of this rank's share finished"
    );
    report
}

fn make_source(
    shared: Arc<Shared>,
    assigned: Arc<HashMap<u32, Assigned>>,
    archive: Arc<Vec<PathBuf>>,
    opts: AsyncOptions,
    local_rank: usize,
    copier_running: bool,
) -> ShardSource {
    Arc::new(move |id: u32| {
        let archived = || {
            archive.get(id as usize).cloned().ok_or_else(|| DataError::Shard {
                path: opts.dir.clone(),
                reason: format!("shard {id} is not in the catalog"),
            })
        };
        let Some(a) = assigned.get(&id) else {
            // Not planned for this node: the archive has it.
            return archived();
        };
        let target = opts.dir.join(&a.shard.file);
        let clock = Instant::now();
        let found = if a.copier == local_rank && copier_running {
            wait_own(&shared, id, opts.fallback, opts.wait_timeout)
        } else {
            wait_file(&target, opts.fallback, opts.wait_timeout)
        };
        let waited = clock.elapsed();
        shared
            .waited_nanos
            .fetch_add(waited.as_nanos().min(u64::MAX as u128) as u64, Ordering::SeqCst);
        match found {
            Found::Staged => Ok(target),
            Found::NotYet if opts.fallback == Fallback::Archive => {
                shared.archive_reads.fetch_add(1, Ordering::SeqCst);
                tracing::debug!(shard = %a.shard.source.display(), "not staged yet: read from the archive");
                Ok(a.shard.source.clone())
            }
            Found::Failed(reason) if opts.fallback == Fallback::Archive => {
                shared.archive_reads.fetch_add(1, Ordering::SeqCst);
                tracing::warn!(shard = %a.shard.source.display(), "staging failed ({reason}): read from the archive");
                Ok(a.shard.source.clone())
            }
            Found::Failed(reason) => Err(DataError::Shard {
                path: target,
                reason: format!("staging failed: {reason}"),
            }),
            Found::NotYet => Err(DataError::Shard {
                path: target,
                reason: format!(
                    "not staged after waiting {:.1} s (copied from {} by local rank {} of this node); \
                     raise --stage-wait-timeout or use --stage-fallback archive",
                    waited.as_secs_f64(),
                    a.shard.source.display(),
                    a.copier
                ),
            }),
        }
    })
}

enum Found {
    Staged,
    NotYet,
    Failed(String),
}

/// A shard this rank's copier stages: wait for its outcome (not at all with the archive fallback).
fn wait_own(shared: &Shared, id: u32, fallback: Fallback, timeout: Duration) -> Found {
    let deadline = Instant::now() + timeout;
    let Ok(mut done) = shared.done.lock() else {
        return Found::Failed("the staging state is poisoned".into());
    };
    loop {
        match done.get(&id) {
            Some(Ok(())) => return Found::Staged,
            Some(Err(reason)) => return Found::Failed(reason.clone()),
            None => {}
        }
        let now = Instant::now();
        if fallback == Fallback::Archive || now >= deadline {
            return Found::NotYet;
        }
        done = match shared.signal.wait_timeout(done, deadline - now) {
            Ok((guard, _)) => guard,
            Err(_) => return Found::Failed("the staging state is poisoned".into()),
        };
    }
}

/// A shard another rank of the node stages: poll for its final name, with backoff.
fn wait_file(target: &Path, fallback: Fallback, timeout: Duration) -> Found {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(2);
    loop {
        if target.exists() {
            return Found::Staged;
        }
        let now = Instant::now();
        if fallback == Fallback::Archive || now >= deadline {
            return Found::NotYet;
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}
