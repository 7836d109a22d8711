//! `medtrain stage CATALOG MANIFEST --config FILE`: every rank computes the same plan; local rank 0 of
//! each node prepares the job directory and checks capacity; shard i of a node's list is copied by
//! its local rank i % local_size; every rank's outcome is gathered and rank 0 reports.
//!
//! Where the copies go: `<local>/medtrain-<job>/` (mode 0700, files 0600). `<local>` is `--local`,
//! else `[stage] local_dir`, else `$SLURM_TMPDIR`, else `$TMPDIR`. `<job>` is `--job-id`, else
//! `$SLURM_JOB_ID`, else `manual`. Stage and train must run with the same ranks per node, config
//! and manifest (the plan is a function of them). `MEDTRAIN_NODE_NAME` overrides the node identity
//! (see [`crate::dist::NODE_NAME_ENV`]) to test multi-node plans on one machine.

use super::copy::{self, RateLimit, ShardOutcome};
use super::plan::{self, StagePlan};
use super::StageError;
use crate::catalog::split::Manifest;
use crate::catalog::state::CatalogState;
use crate::config::{parse_size, Config};
use crate::data::Dataset;
use crate::dist::World;
use crate::exit::{usage, Failure, EXIT_FAILURES, EXIT_OK};
use crate::settings::Settings;
use clap::Args;
use serde::{Deserialize, Serialize};
use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode of the per-job staging directory.
pub const DIR_MODE: u32 = 0o700;
/// Prefix of the per-job staging directory under the local root.
pub const DIR_PREFIX: &str = "medtrain-";
/// Job id used outside a scheduler when none is given.
pub const MANUAL_JOB: &str = "manual";

#[derive(Args, Debug)]
pub struct StageArgs {
    /// Catalog directory and manifest file (not needed with --clean).
    pub inputs: Vec<PathBuf>,
    /// Experiment settings (the same file train gets: [data], [sampler], [train]; and [stage]).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Node-local root directory (else [stage] local_dir, $SLURM_TMPDIR, $TMPDIR).
    #[arg(long)]
    pub local: Option<PathBuf>,
    /// Job id naming the staging directory (else $SLURM_JOB_ID, else "manual").
    #[arg(long)]
    pub job_id: Option<String>,
    /// Print the plan (per node: shards, bytes, free space) without copying.
    #[arg(long)]
    pub dry_run: bool,
    /// Remove this job's staging directory on every node.
    #[arg(long)]
    pub clean: bool,
    /// Copy bandwidth limit per node in MB/s (10^6 bytes), shared by the node's ranks.
    #[arg(long)]
    pub bandwidth_mbps: Option<f64>,
    /// Bytes to leave free on the local disk, e.g. 10GiB (else [stage] reserve_bytes).
    #[arg(long)]
    pub reserve: Option<String>,
    /// Print the summary as JSON on stdout (rank 0).
    #[arg(long)]
    pub json: bool,
}

/// A size given as bytes or as text with a unit ("10GiB").
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(untagged)]
pub enum SizeSetting {
    Bytes(u64),
    Text(String),
}

/// The `[stage]` table of a config file.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StageConfig {
    pub local_dir: Option<PathBuf>,
    /// MB/s per node.
    pub bandwidth_mbps: Option<f64>,
    /// Bytes to leave free on the local disk.
    pub reserve_bytes: Option<SizeSetting>,
}

/// The node-local root: the flag, the config, then the scheduler's and the system's scratch variables.
pub fn local_root(
    flag: Option<&Path>,
    config: Option<&Path>,
    env: impl Fn(&str) -> Option<String>,
) -> Option<PathBuf> {
    flag.map(Path::to_path_buf)
        .or_else(|| config.map(Path::to_path_buf))
        .or_else(|| env("SLURM_TMPDIR").filter(|v| !v.is_empty()).map(PathBuf::from))
        .or_else(|| env("TMPDIR").filter(|v| !v.is_empty()).map(PathBuf::from))
}

/// The job id: the flag, then `$SLURM_JOB_ID`, then "manual"; only letters, digits, `.`, `_`, `-`.
pub fn job_id(flag: Option<&str>, env: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let id = flag
        .map(str::to_string)
        .or_else(|| env("SLURM_JOB_ID").filter(|v| !v.is_empty()))
        .unwrap_or_else(|| MANUAL_JOB.to_string());
    let ok = !id.is_empty()
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(id)
    } else {
        Err(format!(
            "job id {id:?}: use letters, digits, '.', '_' and '-' only"
        ))
    }
}

/// One shard that failed every attempt.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FailedShard {
    pub path: PathBuf,
    pub reason: String,
}

/// What one rank did; gathered on every rank.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct RankReport {
    node: usize,
    node_name: String,
    local_rank: usize,
    dir: PathBuf,
    /// Local rank 0 only: free bytes for the job directory, bytes already in place, any error.
    free_bytes: Option<u64>,
    present_bytes: u64,
    error: Option<String>,
    shards_copied: u64,
    shards_skipped: u64,
    shards_replaced: u64,
    partials_removed: u64,
    bytes_copied: u64,
    bytes_skipped: u64,
    failed: Vec<FailedShard>,
    removed: bool,
}

/// One node in the summary.
#[derive(Clone, Debug, Serialize)]
pub struct NodeSummary {
    pub node: usize,
    pub name: String,
    pub dir: PathBuf,
    pub ranks: Vec<usize>,
    pub shards: Vec<String>,
    pub bytes_planned: u64,
    pub bytes_copied: u64,
    pub bytes_skipped: u64,
    pub shards_copied: u64,
    pub shards_skipped: u64,
    pub shards_replaced: u64,
    pub partials_removed: u64,
    pub free_bytes: Option<u64>,
    pub failed: Vec<FailedShard>,
    pub removed: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct StageSummary {
    /// "staged", "dry-run", "refused", "failed" or "cleaned".
    pub status: String,
    /// The directory to give train (`--shard-dir` or `[data] shard_dir`) when every node uses the
    /// same path; see each node's `dir` otherwise.
    pub shard_dir: Option<PathBuf>,
    pub errors: Vec<String>,
    pub nodes: Vec<NodeSummary>,
}

pub fn run(args: StageArgs) -> Result<i32, Failure> {
    let config = Config::load(args.config.as_deref()).map_err(usage)?;
    let stage_cfg: StageConfig = match &config.stage {
        Some(v) => v
            .clone()
            .try_into()
            .map_err(|e| usage(format!("config [stage]: {e}")))?,
        None => StageConfig::default(),
    };
    let env = |k: &str| std::env::var(k).ok();
    let root = local_root(args.local.as_deref(), stage_cfg.local_dir.as_deref(), env).ok_or_else(|| {
        usage("no node-local directory: give --local DIR, [stage] local_dir, or set SLURM_TMPDIR or TMPDIR")
    })?;
    let job = job_id(args.job_id.as_deref(), env).map_err(usage)?;
    let dir = root.join(format!("{DIR_PREFIX}{job}"));
    let reserve = match (&args.reserve, &stage_cfg.reserve_bytes) {
        (Some(text), _) | (None, Some(SizeSetting::Text(text))) => {
            parse_size("reserve", text).map_err(usage)?
        }
        (None, Some(SizeSetting::Bytes(n))) => *n,
        (None, None) => 0,
    };
    let bandwidth = args.bandwidth_mbps.or(stage_cfg.bandwidth_mbps);
    if let Some(b) = bandwidth {
        if !(b > 0.0 && b.is_finite()) {
            return Err(usage(format!(
                "--bandwidth-mbps {b}: must be a positive number of MB/s"
            )));
        }
    }

    if args.clean {
        let world = World::init().map_err(crate::dist::dist_failure)?;
        return finish(&world, clean(&world, &dir), args.json);
    }
    let settings = Settings::from_config(&config).map_err(usage)?;
    let (catalog, manifest) = match args.inputs.as_slice() {
        [c, m] => (c.clone(), m.clone()),
        [] => match (&settings.train.catalog, &settings.train.manifest) {
            (Some(c), Some(m)) => (c.clone(), m.clone()),
            _ => return Err(usage("stage needs a catalog directory and a manifest file")),
        },
        _ => return Err(usage("stage takes two inputs: CATALOG_DIR MANIFEST_FILE")),
    };
    let world = World::init().map_err(crate::dist::dist_failure)?;
    let _span = tracing::info_span!("rank", r = world.rank()).entered();
    // Every rank computes the plan from the same inputs, so an error here is the same on every rank.
    let node_of_rank = gather_nodes(&world);
    let plan = make_plan(&settings, &catalog, &manifest, &node_of_rank).map_err(|e| match e {
        StageError::Usage(m) => Failure::Usage(m),
        other => Failure::Job(other.to_string()),
    })?;
    let node_plan = &plan.nodes[world.node_index()];
    let mut report = RankReport {
        node: world.node_index(),
        node_name: world.node_name().to_string(),
        local_rank: world.local_rank(),
        dir: dir.clone(),
        ..RankReport::default()
    };
    if world.local_rank() == 0 {
        if let Err(e) = prepare(&dir, args.dry_run, node_plan, &mut report) {
            report.error = Some(e);
        }
        if let Some(free) = report.free_bytes.filter(|_| report.error.is_none()) {
            let needed = node_plan.bytes.saturating_sub(report.present_bytes);
            if needed.saturating_add(reserve) > free && !args.dry_run {
                report.error = Some(format!(
                    "node {} ({}): not enough space in {}: the plan needs {needed} more bytes ({} planned, {} \
                     already staged) plus a reserve of {reserve}, but {free} bytes are free",
                    report.node,
                    report.node_name,
                    dir.display(),
                    node_plan.bytes,
                    report.present_bytes
                ));
            }
        }
    }
    let prepared = gather_reports(&world, &report);
    let errors: Vec<String> = prepared.iter().filter_map(|r| r.error.clone()).collect();
    if args.dry_run || !errors.is_empty() {
        let status = if !errors.is_empty() { "refused" } else { "dry-run" };
        let summary = summarise(&plan, &prepared, status, errors);
        return finish(&world, Ok(summary), args.json);
    }

    // Copy this rank's share of the node's list, in order of first use.
    let per_rank = bandwidth.map(|mbps| mbps * 1e6 / world.local_size() as f64);
    let mut limit = RateLimit::new(per_rank);
    let mut shown = if world.rank() == 0 {
        let mine = node_plan
            .shards
            .iter()
            .skip(world.local_rank())
            .step_by(world.local_size().max(1));
        crate::logging::Progress::new("stage: shards (rank 0's share)", mine.count() as u64)
    } else {
        crate::logging::Progress::hidden()
    };
    for (i, shard) in node_plan.shards.iter().enumerate() {
        if i % world.local_size() != world.local_rank() {
            continue;
        }
        shown.inc(1);
        match copy::stage_shard(shard, &dir, &mut limit) {
            ShardOutcome::Skipped => {
                report.shards_skipped += 1;
                report.bytes_skipped += shard.bytes;
            }
            ShardOutcome::Copied { replaced, partial } => {
                report.shards_copied += 1;
                report.bytes_copied += shard.bytes;
                report.shards_replaced += replaced as u64;
                report.partials_removed += partial as u64;
            }
            ShardOutcome::Failed { reason } => report.failed.push(FailedShard {
                path: shard.source.clone(),
                reason,
            }),
        }
    }
    shown.finish();
    let done = gather_reports(&world, &report);
    let failed = done.iter().any(|r| !r.failed.is_empty());
    let summary = summarise(&plan, &done, if failed { "failed" } else { "staged" }, Vec::new());
    finish(&world, Ok(summary), args.json)
}

/// Every rank's node index, in rank order (a collective: every rank calls it).
pub fn gather_nodes(world: &World) -> Vec<usize> {
    world
        .allgather_bytes(&(world.node_index() as u64).to_le_bytes())
        .iter()
        .map(|b| b.as_slice().try_into().map_or(0, u64::from_le_bytes) as usize)
        .collect()
}

pub fn make_plan(
    settings: &Settings,
    catalog: &Path,
    manifest: &Path,
    node_of_rank: &[usize],
) -> Result<StagePlan, StageError> {
    let sources = PlanSources::open(settings, catalog, manifest, Dataset::open_lazy)?;
    sources.plan(settings, node_of_rank)
}

/// What a staging plan is made from: the catalog's shard list and the training and validation
/// splits, opened once and planned for any number of layouts.
pub struct PlanSources {
    pub state: CatalogState,
    pub train: Dataset,
    pub val: Option<Dataset>,
}

/// How the splits are opened: `Dataset::open_lazy`, or `Dataset::open_described` for a catalog
/// whose shards hold tables only.
pub type OpenSplit =
    fn(&Path, &Manifest, &str, &crate::data::DataConfig) -> Result<Dataset, crate::data::DataError>;

impl PlanSources {
    pub fn open(
        settings: &Settings,
        catalog: &Path,
        manifest: &Path,
        open: OpenSplit,
    ) -> Result<PlanSources, StageError> {
        let u = |e: &dyn std::fmt::Display| StageError::Usage(e.to_string());
        let m = Manifest::load(manifest).map_err(|e| u(&e))?;
        let state = CatalogState::load(catalog).map_err(|e| u(&e))?.ok_or_else(|| {
            StageError::Usage(format!("{}: not a catalog (no catalog.json)", catalog.display()))
        })?;
        let t = &settings.train;
        let train = open(catalog, &m, &t.train_split, &settings.data).map_err(|e| u(&e))?;
        let val = if m.splits.iter().any(|p| p.name == t.val_split) {
            Some(open(catalog, &m, &t.val_split, &settings.data).map_err(|e| u(&e))?)
        } else {
            None
        };
        Ok(PlanSources { state, train, val })
    }

    pub fn plan(&self, settings: &Settings, node_of_rank: &[usize]) -> Result<StagePlan, StageError> {
        plan::plan(
            settings,
            &self.state,
            &self.train,
            self.val.as_ref(),
            node_of_rank,
        )
    }
}

/// Creates the per-job staging directory (and its parents) with mode 0700; an existing one is kept
/// and its mode set. Safe for several ranks of a node at once.
pub fn make_job_dir(dir: &Path) -> Result<(), String> {
    if let Some(root) = dir.parent() {
        fs::create_dir_all(root).map_err(|e| format!("cannot create {}: {e}", root.display()))?;
    }
    match fs::DirBuilder::new().mode(DIR_MODE).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => {}
        Err(e) => return Err(format!("cannot create {}: {e}", dir.display())),
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE))
        .map_err(|e| format!("cannot set the mode of {}: {e}", dir.display()))
}

/// Local rank 0: creates the job directory (mode 0700) unless this is a dry run, and measures free
/// space and the bytes of planned files already in place (with their planned size).
fn prepare(dir: &Path, dry_run: bool, node: &plan::NodePlan, report: &mut RankReport) -> Result<(), String> {
    if !dry_run {
        make_job_dir(dir)?;
    }
    // A dry run measures the nearest existing directory on the way to the job directory.
    let probe = dir.ancestors().find(|p| p.is_dir()).unwrap_or(Path::new("/"));
    report.free_bytes =
        Some(copy::free_bytes(probe).map_err(|e| format!("statvfs {}: {e}", probe.display()))?);
    report.present_bytes = node
        .shards
        .iter()
        .filter(|s| fs::metadata(dir.join(&s.file)).is_ok_and(|m| m.len() == s.bytes))
        .map(|s| s.bytes)
        .sum();
    Ok(())
}

/// Local rank 0 of each node removes the job directory.
fn clean(world: &World, dir: &Path) -> Result<StageSummary, Failure> {
    let mut report = RankReport {
        node: world.node_index(),
        node_name: world.node_name().to_string(),
        local_rank: world.local_rank(),
        dir: dir.to_path_buf(),
        ..RankReport::default()
    };
    if world.local_rank() == 0 && dir.exists() {
        match fs::remove_dir_all(dir) {
            Ok(()) => report.removed = true,
            Err(e) => report.error = Some(format!("cannot remove {}: {e}", dir.display())),
        }
    }
    let all = gather_reports(world, &report);
    let errors: Vec<String> = all.iter().filter_map(|r| r.error.clone()).collect();
    let empty = StagePlan {
        nodes: (0..world.nodes())
            .map(|n| plan::NodePlan {
                node: n,
                ranks: Vec::new(),
                shards: Vec::new(),
                bytes: 0,
            })
            .collect(),
    };
    let status = if errors.is_empty() { "cleaned" } else { "failed" };
    Ok(summarise(&empty, &all, status, errors))
}

fn gather_reports(world: &World, report: &RankReport) -> Vec<RankReport> {
    let bytes = serde_json::to_vec(report).expect("report serialises");
    world
        .allgather_bytes(&bytes)
        .iter()
        .enumerate()
        .map(|(rank, b)| {
            serde_json::from_slice(b).unwrap_or_else(|e| RankReport {
                error: Some(format!("rank {rank} sent an unreadable report: {e}")),
                ..RankReport::default()
            })
        })
        .collect()
}

fn summarise(plan: &StagePlan, reports: &[RankReport], status: &str, errors: Vec<String>) -> StageSummary {
    let nodes: Vec<NodeSummary> = plan
        .nodes
        .iter()
        .map(|n| {
            let mine: Vec<&RankReport> = reports.iter().filter(|r| r.node == n.node).collect();
            let lead = mine.iter().find(|r| r.local_rank == 0).copied();
            let sum = |f: &dyn Fn(&RankReport) -> u64| mine.iter().map(|r| f(r)).sum::<u64>();
            NodeSummary {
                node: n.node,
                name: lead.map(|r| r.node_name.clone()).unwrap_or_default(),
                dir: lead.map(|r| r.dir.clone()).unwrap_or_default(),
                ranks: n.ranks.clone(),
                shards: n.shards.iter().map(|s| s.file.clone()).collect(),
                bytes_planned: n.bytes,
                bytes_copied: sum(&|r| r.bytes_copied),
                bytes_skipped: sum(&|r| r.bytes_skipped),
                shards_copied: sum(&|r| r.shards_copied),
                shards_skipped: sum(&|r| r.shards_skipped),
                shards_replaced: sum(&|r| r.shards_replaced),
                partials_removed: sum(&|r| r.partials_removed),
                free_bytes: lead.and_then(|r| r.free_bytes),
                failed: mine.iter().flat_map(|r| r.failed.clone()).collect(),
                removed: mine.iter().any(|r| r.removed),
            }
        })
        .collect();
    let first = nodes.first().map(|n| n.dir.clone());
    let shard_dir = first.filter(|d| nodes.iter().all(|n| &n.dir == d));
    StageSummary {
        status: status.into(),
        shard_dir,
        errors,
        nodes,
    }
}

/// Rank 0 prints; the exit code is the same on every rank (the summary was gathered everywhere).
fn finish(world: &World, summary: Result<StageSummary, Failure>, json: bool) -> Result<i32, Failure> {
    let summary = summary?;
    if world.rank() == 0 {
        if json {
            println!(
                "{}",
                serde_json::to_string_pretty(&summary).expect("summary serialises")
            );
        } else {
            print_human(&summary);
        }
    }
    for e in &summary.errors {
        if world.rank() == 0 {
            eprintln!("error: {e}");
        }
    }
    let failed = !summary.errors.is_empty() || summary.nodes.iter().any(|n| !n.failed.is_empty());
    Ok(if failed { EXIT_FAILURES } else { EXIT_OK })
}

fn print_human(s: &StageSummary) {
    for n in &s.nodes {
        match s.status.as_str() {
            "cleaned" => println!(
                "stage: node {} ({}): {} {}",
                n.node,
                n.name,
                if n.removed {
                    "removed"
                } else {
                    "nothing to remove at"
                },
                n.dir.display()
            ),
            "dry-run" | "refused" => {
                let free = n.free_bytes.map_or("?".to_string(), |f| f.to_string());
                println!(
                    "stage plan: node {} ({}), ranks {:?}: {} shards, {} bytes -> {} ({free} bytes free)",
                    n.node,
                    n.name,
                    n.ranks,
                    n.shards.len(),
                    n.bytes_planned,
                    n.dir.display()
                );
                for f in &n.shards {
                    println!("  {f}");
                }
            }
            _ => println!(
                "stage: node {} ({}): {} shards, {} bytes planned; copied {} ({} bytes, {} damaged copies \
                 replaced, {} partial copies redone), skipped {} verified ({} bytes) -> {}",
                n.node,
                n.name,
                n.shards.len(),
                n.bytes_planned,
                n.shards_copied,
                n.bytes_copied,
                n.shards_replaced,
                n.partials_removed,
                n.shards_skipped,
                n.bytes_skipped,
                n.dir.display()
            ),
        }
        for f in &n.failed {
            println!("  FAILED {}: {}", f.path.display(), f.reason);
        }
    }
    if matches!(s.status.as_str(), "staged" | "dry-run") {
        match &s.shard_dir {
            Some(d) => println!(
                "shard_dir = {}   (train --shard-dir {})",
                d.display(),
                d.display()
            ),
            None => println!("shard_dir differs between nodes: give each node its dir above"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_root_order() {
        let env = |k: &str| match k {
            "SLURM_TMPDIR" => Some("/slurm".to_string()),
            "TMPDIR" => Some("/tmp".to_string()),
            _ => None,
        };
        let none = |_: &str| None;
        let tmp_only = |k: &str| (k == "TMPDIR").then(|| "/tmp".to_string());
        assert_eq!(
            local_root(Some(Path::new("/flag")), Some(Path::new("/cfg")), env),
            Some("/flag".into())
        );
        assert_eq!(
            local_root(None, Some(Path::new("/cfg")), env),
            Some("/cfg".into())
        );
        assert_eq!(local_root(None, None, env), Some("/slurm".into()));
        assert_eq!(local_root(None, None, tmp_only), Some("/tmp".into()));
        assert_eq!(local_root(None, None, none), None);
    }

    #[test]
    fn job_id_order_and_charset() {
        let slurm = |k: &str| (k == "SLURM_JOB_ID").then(|| "4242".to_string());
        let none = |_: &str| None;
        assert_eq!(job_id(Some("a1"), slurm).unwrap(), "a1");
        assert_eq!(job_id(None, slurm).unwrap(), "4242");
        assert_eq!(job_id(None, none).unwrap(), "manual");
        assert!(job_id(Some("../etc"), none).is_err());
        assert!(job_id(Some(".."), none).is_err());
        assert!(job_id(Some("a/b"), none).is_err());
    }
}
