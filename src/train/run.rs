//! The training loop: one model replicated on every rank, each rank a disjoint share of every global
//! batch, gradients averaged by bucketed allreduce while backward runs, checkpoints by rank 0.
//!
//! Determinism: initial weights are seeded and broadcast from rank 0, samples and their augmentation
//! are pure functions of (seed, epoch, world layout), and the CPU backend's results do not depend on
//! its thread count. So the same seed and world size give bitwise the same weights, and a run resumed
//! from a checkpoint continues the same trajectory.
//!
//! Batch-norm running statistics: every micro-batch starts from the statistics the step began with,
//! and the statistics after the step are the mean over micro-batches and ranks. Since the running
//! update is linear in the batch statistics, that is the update with batch statistics averaged over
//! the global batch, and every rank holds the same running statistics.

use super::evaluate::{self, EvalReport};
use super::faults::{Fault, FaultKind};
use super::hashes::{replica_hash, trajectory_hash};
use super::signals;
use super::staging::{staging_stats, start_background};
use super::tensorboard::RunBoard;
use super::watchdog::{Phase, Watchdog};
use crate::backend::cpu::CpuBackend;
use crate::backend::{Backend, BceParams, RegressionLoss};
use crate::catalog::split::Manifest;
use crate::checkpoint::{self, PendingEval, TrainState};
use crate::data::sampler::Layout;
use crate::data::{Batch, Dataset, Loader};
use crate::dist::bucket::BucketReducer;
use crate::dist::World;
use crate::nn::Net;
use crate::optim::{clip_grad_norm_with, LrSchedule, Optimizer, ScheduleKind};
use crate::settings::{OnNonfinite, Settings, Task};
use crate::stage::background::{AsyncOptions, Fallback};
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Failed(String),
}

fn failed(e: impl std::fmt::Display) -> TrainError {
    TrainError::Failed(e.to_string())
}

/// Where to resume from.
#[derive(Clone, Debug)]
pub enum Resume {
    No,
    /// The newest valid checkpoint under `<out>/checkpoints`, or a fresh start when there is none.
    Auto,
    Dir(PathBuf),
}

pub struct TrainOptions {
    pub settings: Settings,
    /// Images for TensorBoard from an epoch's checkpoint (Grad-CAM overlays; `[train] explain_every`).
    pub epoch_images: Option<super::tensorboard::EpochImages>,
    pub catalog: PathBuf,
    pub manifest: PathBuf,
    pub out: PathBuf,
    pub resume: Resume,
    pub progress: bool,
    /// Stage the node's shards in the background while training runs, and read them from there.
    pub stage_async: Option<AsyncOptions>,
}

/// Seconds spent per phase on this rank, summed over the run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PhaseTimes {
    pub data_wait: f64,
    pub forward_backward: f64,
    pub allreduce_wait: f64,
    pub optimizer: f64,
    pub total: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct TrainOutcome {
    /// "finished", "interrupted" (a stop signal; resume with --resume auto) or "max-steps".
    pub status: String,
    pub world_size: usize,
    pub epochs: u64,
    pub global_step: u64,
    pub samples_per_second: f64,
    /// Steps skipped for a non-finite loss or gradient (`[train] on_nonfinite = "skip"`) in this run.
    pub skipped_steps: u64,
    pub last_checkpoint: Option<PathBuf>,
    pub final_eval: Option<EvalReport>,
    pub times: PhaseTimes,
    pub comm: CommStats,
    pub out: PathBuf,
    /// The backend the run used ("cpu" or "cuda").
    pub device: String,
    /// Peak device memory of rank 0's GPU in bytes (None on the CPU).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_device_bytes: Option<u64>,
    /// Asynchronous staging (`--stage-async`), over all ranks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub staging: Option<StagingStats>,
}

/// Asynchronous staging over the run, summed or maximised over all ranks. Times are seconds from the
/// start of `train`, so `first_step_seconds < staging_seconds` says training ran before staging ended.
#[derive(Clone, Debug, Serialize)]
pub struct StagingStats {
    /// The per-job staging directory.
    pub dir: PathBuf,
    pub fallback: Fallback,
    /// When the last rank's share of the staging was done; None when training ended first and the
    /// copiers were stopped (the archive fallback, or a run stopped early).
    pub staging_seconds: Option<f64>,
    /// When the first optimizer step of this run was done (the latest rank); None without a step.
    pub first_step_seconds: Option<f64>,
    /// Seconds the ranks' readers waited for shards to be staged, summed over ranks.
    pub waited_for_shards_seconds: f64,
    /// Shards read from the archive because they were not staged yet, summed over ranks.
    pub archive_reads: u64,
    pub shards_copied: u64,
    pub shards_skipped: u64,
    pub bytes_copied: u64,
    pub shards_failed: u64,
}

/// Gradient averaging on this rank over the run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CommStats {
    pub buckets: usize,
    /// Gradient bytes per optimizer step.
    pub bytes_per_step: u64,
    /// Seconds blocked waiting for allreduces after backward (what overlap did not hide).
    pub wait_seconds: f64,
    /// Seconds copying gradients into and out of the bucket buffers.
    pub copy_seconds: f64,
}

/// One line of `metrics.jsonl`.
#[derive(Serialize)]
struct MetricsLine<'a> {
    epoch: u64,
    global_step: u64,
    train_loss: f64,
    lr: f32,
    samples_per_second: f64,
    /// Steps of the epoch skipped for a non-finite loss or gradient.
    skipped_steps: u64,
    eval: Option<&'a EvalReport>,
}

/// File-content hash of the manifest: a run resumes only on the manifest it started with.
pub fn manifest_hash(path: &Path) -> Result<String, TrainError> {
    let bytes = std::fs::read(path).map_err(|e| TrainError::Usage(format!("{}: {e}", path.display())))?;
    Ok(blake3::hash(&bytes).to_hex().to_string())
}

/// The first parameter tensor of `net` whose gradient in `grad` holds a NaN or infinity, by name.
fn first_nonfinite_layer<B: Backend>(net: &Net<B>, grad: &[f32]) -> Option<String> {
    let table = &net.spec.params;
    (0..table.entries().len())
        .find(|&i| grad[table.range(i)].iter().any(|g| !g.is_finite()))
        .map(|i| table.entries()[i].name.clone())
}

/// Device copies of a step's small host inputs to the loss (targets, masks, weights), allocated in
/// the first step and refilled in place after it, so a training step allocates no device memory.
struct LossInputs<B: Backend> {
    slots: Vec<Option<B::Buf>>,
}

impl<B: Backend> LossInputs<B> {
    fn new() -> Self {
        LossInputs { slots: Vec::new() }
    }

    /// Slot `i` holding `len` elements (contents unspecified until written).
    fn ensure(&mut self, b: &B, i: usize, len: usize) -> crate::backend::Result<&mut B::Buf> {
        if self.slots.len() <= i {
            self.slots.resize_with(i + 1, || None);
        }
        let slot = &mut self.slots[i];
        if slot.as_ref().is_none_or(|buf| b.len(buf) != len) {
            *slot = Some(b.zeros(len)?);
        }
        Ok(slot.as_mut().expect("slot filled above"))
    }

    /// Copies `host` into slot `i`.
    fn put(&mut self, b: &B, i: usize, host: &[f32]) -> crate::backend::Result<()> {
        let buf = self.ensure(b, i, host.len())?;
        b.upload_into(host, b.view_mut(buf, 0..host.len()))
    }

    fn get(&self, i: usize) -> &B::Buf {
        self.slots[i].as_ref().expect("slot written before it is read")
    }
}

/// The loss of one micro-batch, returned as (mean loss, weight). Binary and regression: the mean over
/// the micro-batch's known labels, weighted by their number, and `dout` holds the gradient of the SUM
/// over them; the step divides the gradient by the known labels of the whole global batch (the rule
/// on `Backend`'s masked losses). Survival: the Cox loss of the gathered global batch, weighted by the
/// valid samples, and `dout` holds its gradient scaled for the average over ranks.
#[allow(clippy::too_many_arguments)]
fn micro_batch_loss<B: Backend>(
    b: &B,
    world: &World,
    settings: &Settings,
    net: &Net<B>,
    batch: &mut Batch,
    dout: &mut B::Buf,
    outputs: usize,
    inputs: &mut LossInputs<B>,
) -> Result<(f32, f64), TrainError> {
    let n = batch.samples.len();
    let t = settings.data.labels.len();
    // Padding rows (a repeated sample filling the last batch) do not count.
    for row in batch.valid..n {
        batch.mask[row * t..(row + 1) * t].fill(0.0);
    }
    let len = n * outputs;
    let known = match settings.train.task {
        Task::Binary | Task::Regression => batch.mask[..len].iter().filter(|&&m| m != 0.0).count(),
        Task::Survival | Task::Segmentation => 0,
    };
    // The mean over this micro-batch's known labels, turned into their sum.
    let as_sum = |dout: &mut B::Buf, mean: f32| -> Result<(f32, f64), TrainError> {
        if known > 1 {
            b.scale(known as f32, b.view_mut(dout, 0..len)).map_err(failed)?;
        }
        Ok((mean, known as f64))
    };
    match settings.train.task {
        Task::Binary => {
            let p = BceParams {
                n: n as u32,
                labels: outputs as u32,
            };
            inputs.put(b, 0, &batch.targets).map_err(failed)?;
            inputs.put(b, 1, &batch.mask).map_err(failed)?;
            if let Some(w) = settings.train.pos_weight {
                inputs.put(b, 2, &vec![w; outputs]).map_err(failed)?;
            }
            let mean = b
                .bce_with_logits(
                    &p,
                    b.view(net.output(), 0..len),
                    b.view(inputs.get(0), 0..len),
                    Some(b.view(inputs.get(1), 0..len)),
                    settings
                        .train
                        .pos_weight
                        .map(|_| b.view(inputs.get(2), 0..outputs)),
                    b.view_mut(dout, 0..len),
                )
                .map_err(failed)?;
            as_sum(dout, mean)
        }
        Task::Regression => {
            // Unknown targets (mask 0) add no loss or gradient and are not counted.
            inputs.put(b, 0, &batch.targets[..len]).map_err(failed)?;
            inputs.put(b, 1, &batch.mask[..len]).map_err(failed)?;
            let mean = b
                .regression_loss(
                    RegressionLoss::Mse,
                    b.view(net.output(), 0..len),
                    b.view(inputs.get(0), 0..len),
                    Some(b.view(inputs.get(1), 0..len)),
                    b.view_mut(dout, 0..len),
                )
                .map_err(failed)?;
            as_sum(dout, mean)
        }
        Task::Segmentation => {
            super::segloss::micro_batch(b, settings, net.output(), batch, dout).map_err(failed)
        }
        Task::Survival => {
            // Risk sets span the global batch: gather every rank's risks, times and events, take the loss
            // over all of them, and backpropagate this rank's part. The gradient average over ranks then
            // divides by the world size once too often, so this rank's part is scaled back up.
            let risk = b.download(b.view(net.output(), 0..n)).map_err(failed)?;
            let mut time = Vec::with_capacity(n);
            let mut event = Vec::with_capacity(n);
            // Unknown rows get time −∞ and no event: they are in no risk set and add no loss.
            for row in 0..n {
                let known = batch.mask[row * 2] != 0.0 && batch.mask[row * 2 + 1] != 0.0;
                time.push(if known {
                    batch.targets[row * 2]
                } else {
                    f32::NEG_INFINITY
                });
                event.push(if known { batch.targets[row * 2 + 1] } else { 0.0 });
            }
            let all_risk = world.allgather_f32(&risk);
            let all_time = world.allgather_f32(&time);
            let all_event = world.allgather_f32(&event);
            let g = all_risk.len();
            inputs.put(b, 0, &all_risk).map_err(failed)?;
            inputs.put(b, 1, &all_time).map_err(failed)?;
            inputs.put(b, 2, &all_event).map_err(failed)?;
            inputs.ensure(b, 3, g).map_err(failed)?;
            let [r, ti, ev, dr] = &mut inputs.slots[..4] else {
                unreachable!("four slots ensured above")
            };
            let (r, ti, ev) = (r.as_ref(), ti.as_ref(), ev.as_ref());
            let dr = dr.as_mut().expect("slot ensured above");
            let loss = b
                .cox_loss(
                    b.view(r.expect("risk written"), 0..g),
                    b.view(ti.expect("time written"), 0..g),
                    b.view(ev.expect("event written"), 0..g),
                    b.view_mut(dr, 0..g),
                )
                .map_err(failed)?;
            let counts = world.allgather_f32(&[n as f32]);
            let offset: usize = counts[..world.rank()].iter().map(|&c| c as usize).sum();
            let mut mine = b
                .download(b.view(inputs.get(3), offset..offset + n))
                .map_err(failed)?;
            let scale = world.size() as f32;
            mine.iter_mut().for_each(|v| *v *= scale);
            b.upload_into(&mine, b.view_mut(dout, 0..n)).map_err(failed)?;
            Ok((loss, batch.valid as f64))
        }
    }
}

/// Trains as described by `opts` on this rank; every rank calls it.
pub fn train<B: Backend>(b: &B, world: &World, opts: &TrainOptions) -> Result<TrainOutcome, TrainError> {
    let started = Instant::now();
    let s = &opts.settings;
    let t = &s.train;
    let fault = Fault::from_env().map_err(TrainError::Usage)?;
    let manifest = Manifest::load(&opts.manifest).map_err(|e| TrainError::Usage(e.to_string()))?;
    let manifest_hash = manifest_hash(&opts.manifest)?;
    let settings_hash = trajectory_hash(s);
    let (mut train_ds, mut val_ds) = open_splits(opts, &manifest)?;
    let background = match &opts.stage_async {
        Some(a) => {
            let bg = start_background(world, opts, a, &train_ds, val_ds.as_ref(), started)?;
            train_ds.set_shard_source(bg.source());
            if let Some(v) = val_ds.as_mut() {
                v.set_shard_source(bg.source());
            }
            Some(bg)
        }
        None => None,
    };
    let tabular = crate::data::targets::standardise(&mut train_ds, val_ds.as_mut())
        .map_err(|e| TrainError::Usage(e.to_string()))?;
    let train_ds = Arc::new(train_ds);
    let val_ds = val_ds.map(Arc::new);

    let n = t.batch_size as usize;
    let model_cfg = s.model(train_ds.channels());
    let spec = crate::nn::build_model(&model_cfg, n as u32, train_ds.extent());
    let mut net = Net::new(b, spec, t.seed).map_err(failed)?;
    if let Some(init) = &s.model.init {
        let opts = checkpoint::LoadOptions {
            skip_mismatched: s.model.skip_mismatched.clone(),
        };
        let report = checkpoint::load_weights(init, b, &mut net, &opts).map_err(failed)?;
        tracing::info!(file = %init.display(), loaded = report.loaded.len(), skipped = report.skipped.len(), "initial weights");
    }
    let plen = net.spec.params.len();
    let slen = net.spec.buffers.len();
    let mut opt = Optimizer::new(b, t.optimizer.clone(), plen).map_err(failed)?;

    let ckpt_root = opts.out.join("checkpoints");
    let mut state = TrainState {
        epoch: 0,
        step_in_epoch: 0,
        global_step: 0,
        optimizer_step: 0,
        dropout_seed: net.dropout_seed,
        seed: t.seed,
        world_size: world.size(),
        config_hash: settings_hash.clone(),
        manifest_hash: manifest_hash.clone(),
        epoch_loss: [0.0; 2],
        epoch_skipped: 0,
        pending_eval: None,
        model: model_cfg.clone(),
        extra: serde_json::json!({
            "settings": s,
            "catalog": opts.catalog,
            "manifest": opts.manifest,
            "tabular": tabular,
        }),
    };
    let resume_from = match &opts.resume {
        Resume::No => None,
        Resume::Dir(d) if !d.join(checkpoint::STATE_FILE).is_file() => {
            return Err(TrainError::Usage(format!(
                "--resume {}: not a checkpoint (no {}); give a step directory under {}, or \
                 --resume auto for the newest valid checkpoint there",
                d.display(),
                checkpoint::STATE_FILE,
                ckpt_root.display()
            )))
        }
        Resume::Dir(d) => Some(d.clone()),
        Resume::Auto => checkpoint::latest_valid(&ckpt_root)
            .map_err(failed)?
            .map(|c| c.dir),
    };
    if let Some(dir) = &resume_from {
        let restored = checkpoint::restore(dir, b, &mut net, &mut opt).map_err(failed)?;
        for (what, ours, theirs) in [
            ("settings", &settings_hash, &restored.config_hash),
            ("manifest", &manifest_hash, &restored.manifest_hash),
        ] {
            if ours != theirs {
                return Err(TrainError::Usage(format!(
                    "checkpoint {} was made with other {what} than this run's; start a new --out \
                     directory, or resume with the original {what}",
                    dir.display()
                )));
            }
        }
        if restored.world_size != world.size() {
            return Err(TrainError::Usage(format!(
                "checkpoint {} was made by {} ranks, this run has {}; resume with the same number of \
                 ranks (the sample order depends on it)",
                dir.display(),
                restored.world_size,
                world.size()
            )));
        }
        state = TrainState {
            extra: state.extra,
            ..restored
        };
        net.dropout_seed = state.dropout_seed;
        tracing::info!(checkpoint = %dir.display(), epoch = state.epoch, step = state.global_step, "resumed");
    }

    // Every rank starts from rank 0's weights and statistics, and proves it holds the same replica.
    let mut host_param = vec![0.0f32; plen];
    let mut host_state = vec![0.0f32; slen];
    b.download_into(b.view(&net.param, 0..plen), &mut host_param)
        .map_err(failed)?;
    b.download_into(b.view(&net.state, 0..slen), &mut host_state)
        .map_err(failed)?;
    world.broadcast_f32(0, &mut host_param);
    world.broadcast_f32(0, &mut host_state);
    b.upload_into(&host_param, b.view_mut(&mut net.param, 0..plen))
        .map_err(failed)?;
    b.upload_into(&host_state, b.view_mut(&mut net.state, 0..slen))
        .map_err(failed)?;
    let mine = replica_hash(&host_param, &host_state, &settings_hash);
    let all = world.allgather_bytes(&mine);
    if let Some(r) = all.iter().position(|h| h.as_slice() != mine.as_slice()) {
        return Err(failed(format!(
            "rank {} holds another model or settings than rank {} after the broadcast (different \
             config files or binaries?)",
            r,
            world.rank()
        )));
    }
    drop(host_param);

    let layout = Layout {
        rank: world.rank(),
        size: world.size(),
        node: world.node_index(),
        nodes: world.nodes(),
        local_rank: world.local_rank(),
        local_size: world.local_size(),
    };
    let micro = t.micro_batches as usize;
    let sampler = s
        .train_sampler(&train_ds, layout)
        .map_err(|e| TrainError::Usage(e.to_string()))?;
    let steps_per_epoch = sampler.steps_per_epoch() as u64;
    if steps_per_epoch == 0 {
        return Err(TrainError::Usage(format!(
            "{} training samples are too few for {} ranks × batch {} × {} micro-batches",
            train_ds.len(),
            world.size(),
            n,
            micro
        )));
    }
    let total_steps = steps_per_epoch * t.epochs as u64;
    let schedule = LrSchedule {
        base_lr: t.lr,
        warmup_steps: t.warmup_steps,
        kind: match t.schedule.as_str() {
            "constant" => ScheduleKind::Constant,
            _ => ScheduleKind::Cosine {
                total_steps: total_steps.min(u32::MAX as u64) as u32,
                min_lr: t.min_lr,
            },
        },
    };

    let bucket_bytes = (t.bucket_mb * 1e6) as usize;
    let mut reducer = BucketReducer::new(world, plen, &net.param_boundaries(), bucket_bytes);
    let buckets = reducer.buckets().to_vec();
    let mut grad_host = vec![0.0f32; plen];
    let mut state_start = vec![0.0f32; slen];
    let mut state_sum = vec![0.0f32; slen];
    let mut state_now = vec![0.0f32; slen];
    let outputs = s.num_outputs() as usize;
    let mut dout = b.zeros(b.len(net.output())).map_err(failed)?;
    let mut loss_inputs = LossInputs::new();

    let settings_text = serde_json::to_string_pretty(s).expect("settings serialise");
    if world.rank() == 0 {
        let out_err = |e: std::io::Error| {
            let hint = crate::remedy::io_remedy(&e, "run again with --resume auto");
            failed(format!("output directory {}: {e}{hint}", opts.out.display()))
        };
        std::fs::create_dir_all(&opts.out).map_err(out_err)?;
        crate::fsx::write_atomic(&opts.out.join("settings.json"), settings_text.as_bytes())
            .map_err(out_err)?;
    }
    let mut board = RunBoard::open(world.rank() == 0, opts, state.global_step + 1, &settings_text);
    tracing::info!(
        ranks = world.size(),
        samples = train_ds.len(),
        steps_per_epoch,
        epochs = t.epochs,
        params = plen,
        global_batch = n * micro * world.size(),
        buckets = buckets.len(),
        "training"
    );
    signals::install();

    let progress = (opts.progress && world.rank() == 0).then(|| {
        let bar = indicatif::ProgressBar::new(total_steps);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {msg}  ETA {eta}")
                .expect("valid template"),
        );
        bar.set_position(state.global_step);
        bar
    });

    let mut times = PhaseTimes::default();
    let mut last_checkpoint = resume_from.clone();
    let mut final_eval: Option<EvalReport> = None;
    let mut status = "finished";
    let mut samples_done = 0u64;
    let run_clock = Instant::now();
    let mut loss_epoch = (state.epoch_loss[0], state.epoch_loss[1]);
    let mut pending = state.pending_eval.take();
    let mut lr = pending.as_ref().map_or_else(|| schedule.lr(opt.step), |p| p.lr);
    let mut first_step: Option<f64> = None;
    let mut metrics_file = if world.rank() == 0 {
        Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(opts.out.join("metrics.jsonl"))
                .map_err(|e| failed(format!("{}: {e}", opts.out.join("metrics.jsonl").display())))?,
        )
    } else {
        None
    };

    let mut skipped_steps = 0u64;
    let mut skipped_epoch = state.epoch_skipped;
    let watchdog = Watchdog::start(std::time::Duration::from_secs(t.watchdog_s), world.abort_handle());
    'epochs: while state.epoch < t.epochs as u64 || pending.is_some() {
        // A run resumed from the checkpoint that ended an epoch first does that epoch's evaluation.
        let resumed_end = pending.take();
        if resumed_end.is_none() {
            let epoch = state.epoch;
            let indices = sampler.epoch(epoch);
            let mut loader = Loader::new(
                train_ds.clone(),
                indices,
                n,
                (state.step_in_epoch as usize) * micro,
                Some((t.seed, epoch)),
                t.prefetch.max(1),
            );
            while state.step_in_epoch < steps_per_epoch {
                watchdog.enter(Phase::Data, state.global_step);
                if let Some(f) = &fault {
                    let (rank, step) = (world.rank(), state.global_step);
                    if f.hits(FaultKind::Error, rank, step) {
                        return Err(failed(format!(
                            "injected fault ({}={}) on rank {rank} at step {step}",
                            super::faults::FAULT_ENV,
                            f.spec
                        )));
                    }
                    if f.hits(FaultKind::Kill, rank, step) {
                        super::faults::kill_self(&format!("rank {rank} before step {step}"));
                    }
                    if f.hits(FaultKind::Stall, rank, step) {
                        tracing::warn!(rank, step, "injected stall: this rank stops making progress");
                        loop {
                            std::thread::sleep(std::time::Duration::from_secs(1));
                        }
                    }
                }
                b.fill(b.view_mut(&mut net.grad, 0..plen), 0.0).map_err(failed)?;
                if slen > 0 {
                    b.download_into(b.view(&net.state, 0..slen), &mut state_start)
                        .map_err(failed)?;
                    state_sum.fill(0.0);
                }
                let mut loss_sum = 0.0f64;
                let mut weight_sum = 0.0f64;
                for m in 0..micro {
                    watchdog.enter(Phase::Data, state.global_step);
                    let wait = Instant::now();
                    let mut batch = loader
                        .next()
                        .ok_or_else(|| failed("the loader ended before the epoch's last step"))?
                        .map_err(failed)?;
                    times.data_wait += wait.elapsed().as_secs_f64();
                    watchdog.enter(Phase::ForwardBackward, state.global_step);
                    let fb = Instant::now();
                    if m > 0 && slen > 0 {
                        b.upload_into(&state_start, b.view_mut(&mut net.state, 0..slen))
                            .map_err(failed)?;
                    }
                    net.set_tabular(b, &batch.tabular).map_err(failed)?;
                    net.forward(b, &batch.input, true).map_err(failed)?;
                    let (loss, weight) = micro_batch_loss(
                        b,
                        world,
                        s,
                        &net,
                        &mut batch,
                        &mut dout,
                        outputs,
                        &mut loss_inputs,
                    )?;
                    loss_sum += loss as f64 * weight;
                    weight_sum += weight;
                    if slen > 0 {
                        b.download_into(b.view(&net.state, 0..slen), &mut state_now)
                            .map_err(failed)?;
                        state_sum.iter_mut().zip(&state_now).for_each(|(a, v)| *a += v);
                    }
                    if m + 1 < micro {
                        net.backward(b, &dout).map_err(failed)?;
                    } else {
                        // Last micro-batch: buckets go out as soon as backward has finished their layers.
                        let mut next = 0usize;
                        let grad_host = &mut grad_host;
                        let reducer = &mut reducer;
                        net.backward_with(b, &dout, &mut |b, grad, frontier| {
                            while next < buckets.len() && buckets[next].start >= frontier {
                                let r = buckets[next].clone();
                                b.download_into(b.view(grad, r.clone()), &mut grad_host[r.clone()])?;
                                reducer.start(next, &grad_host[r]);
                                next += 1;
                            }
                            reducer.progress();
                            Ok(())
                        })
                        .map_err(failed)?;
                    }
                    samples_done += batch.valid as u64;
                    loader.recycle(batch);
                    times.forward_backward += fb.elapsed().as_secs_f64();
                }
                watchdog.enter(Phase::Allreduce, state.global_step);
                let wait = Instant::now();
                reducer.finish(&mut grad_host);
                times.allreduce_wait += wait.elapsed().as_secs_f64();
                watchdog.enter(Phase::Optimizer, state.global_step);
                let opt_clock = Instant::now();
                // Survival gradients are averaged over micro-batches here; binary and regression ones
                // are sums over known labels, divided by the global count once it is agreed below.
                let per_known = t.task != Task::Survival;
                if micro > 1 && !per_known {
                    let inv = 1.0 / micro as f32;
                    grad_host.iter_mut().for_each(|g| *g *= inv);
                }
                if let Some(f) = &fault {
                    let (rank, step) = (world.rank(), state.global_step);
                    if f.hits(FaultKind::Nan, rank, step) {
                        tracing::warn!(rank, step, "injected NaN in the gradient");
                        grad_host[0] = f32::NAN;
                    }
                    if f.hits(FaultKind::Inf, rank, step) {
                        tracing::warn!(rank, step, "injected infinity in the loss");
                        loss_sum = f64::INFINITY;
                    }
                }
                // The gradient's sum of squares is finite exactly when every element is; the layer is
                // looked for only when it is not. It is the CPU reference's deterministic chunked sum of the
                // values uploaded below (up to their scaling by the global count), so clipping reuses it
                // instead of summing again.
                let mut grad_squares = CpuBackend.sum_squares(&grad_host[..]).map_err(failed)?;
                let bad_layer = (!grad_squares.is_finite())
                    .then(|| first_nonfinite_layer(&net, &grad_host))
                    .flatten();
                if slen > 0 {
                    let inv = 1.0 / micro as f32;
                    state_sum.iter_mut().for_each(|v| *v *= inv);
                    world.allreduce_sum_f32(&mut state_sum);
                    let inv = 1.0 / world.size() as f32;
                    state_sum.iter_mut().for_each(|v| *v *= inv);
                    b.upload_into(&state_sum, b.view_mut(&mut net.state, 0..slen))
                        .map_err(failed)?;
                }
                // One small collective per step: the loss, its weight (for binary and regression the
                // known labels of the global batch), and whether any rank was asked to stop. The
                // non-finite flag is agreed too, so every rank skips or stops at the same step.
                let stop_here = signals::requested().map_or(0.0, |_| 1.0);
                let grad_bad = if bad_layer.is_some() || !grad_squares.is_finite() {
                    1.0
                } else {
                    0.0
                };
                let mut agreed = [loss_sum, weight_sum, stop_here, grad_bad];
                world.allreduce_sum_f64(&mut agreed);
                if per_known {
                    // The reducer averaged the ranks' sums: × world size / known labels of the global
                    // batch (no gradient when none is known).
                    let scale = if agreed[1] > 0.0 {
                        (world.size() as f64 / agreed[1]) as f32
                    } else {
                        0.0
                    };
                    if scale != 1.0 {
                        grad_host.iter_mut().for_each(|g| *g *= scale);
                        grad_squares *= scale as f64 * scale as f64;
                    }
                }
                b.upload_into(&grad_host, b.view_mut(&mut net.grad, 0..plen))
                    .map_err(failed)?;
                let step_loss = agreed[0] / agreed[1].max(1.0);
                let nonfinite = !step_loss.is_finite() || agreed[3] != 0.0;
                if nonfinite {
                    let what = format!(
                        "non-finite training step at epoch {epoch}, step {} (global step {}): loss {step_loss}, \
                         {}",
                        state.step_in_epoch,
                        state.global_step,
                        match &bad_layer {
                            Some(layer) =>
                                format!("first non-finite gradient in {layer} on rank {}", world.rank()),
                            None if agreed[3] != 0.0 => "non-finite gradient on another rank".to_string(),
                            None => "gradient finite".to_string(),
                        }
                    );
                    if t.on_nonfinite == OnNonfinite::Stop {
                        return Err(failed(format!(
                            "{what}; stopped, and no checkpoint is written from these weights. Lower [train] \
                             lr, check the inputs, or set [train] on_nonfinite = \"skip\""
                        )));
                    }
                    tracing::warn!("{what}; step skipped ([train] on_nonfinite = \"skip\")");
                    skipped_steps += 1;
                    skipped_epoch += 1;
                    // The batch statistics of the poisoned step are dropped with its update.
                    if slen > 0 {
                        b.upload_into(&state_start, b.view_mut(&mut net.state, 0..slen))
                            .map_err(failed)?;
                    }
                } else {
                    loss_epoch.0 += agreed[0];
                    loss_epoch.1 += agreed[1];
                    if let Some(max_norm) = t.grad_clip {
                        clip_grad_norm_with(b, &mut net.grad, max_norm, grad_squares).map_err(failed)?;
                    }
                    lr = schedule.lr(opt.step);
                    opt.update(b, lr, &mut net.param, &net.grad).map_err(failed)?;
                }
                times.optimizer += opt_clock.elapsed().as_secs_f64();
                state.step_in_epoch += 1;
                state.global_step += 1;
                state.optimizer_step = opt.step;
                state.dropout_seed = net.dropout_seed;
                if first_step.is_none() {
                    let seconds = started.elapsed().as_secs_f64();
                    first_step = Some(seconds);
                    if background.is_some() {
                        tracing::info!(seconds = format!("{seconds:.3}"), "first training step done");
                    }
                }
                let rate = samples_done as f64 * world.size() as f64 / run_clock.elapsed().as_secs_f64();
                board.step(
                    state.global_step,
                    &super::tensorboard::StepFigures {
                        epoch: epoch as u64 + 1,
                        loss: step_loss as f64,
                        lr: lr as f64,
                        grad_norm: grad_squares.max(0.0).sqrt(),
                        images_per_second: rate,
                        data_wait_s: times.data_wait,
                        allreduce_wait_s: times.allreduce_wait,
                    },
                );
                if let Some(bar) = &progress {
                    bar.set_position(state.global_step);
                    bar.set_message(format!("epoch {} loss {step_loss:.4} {rate:.0} img/s", epoch + 1));
                } else if world.rank() == 0 && state.global_step % 20 == 0 {
                    tracing::info!(
                        epoch = epoch + 1,
                        step = state.global_step,
                        of = total_steps,
                        loss = format!("{step_loss:.4}"),
                        images_per_second = format!("{rate:.1}"),
                        "step"
                    );
                }
                let epoch_done = state.step_in_epoch == steps_per_epoch;
                if epoch_done {
                    state.epoch += 1;
                    state.step_in_epoch = 0;
                }
                let stop = agreed[2] > 0.0;
                let at_max = t.max_steps.is_some_and(|m| state.global_step >= m);
                let periodic = t.checkpoint_every > 0 && state.global_step % t.checkpoint_every as u64 == 0;
                state.epoch_loss = [loss_epoch.0, loss_epoch.1];
                state.epoch_skipped = skipped_epoch;
                state.pending_eval = epoch_done.then_some(PendingEval {
                    epoch: state.epoch,
                    lr,
                });
                if periodic || epoch_done || stop || at_max {
                    watchdog.enter(Phase::Checkpoint, state.global_step);
                    if world.rank() == 0 {
                        let step = state.global_step;
                        let kill_point = || super::faults::checkpoint_kill_point(step);
                        let dir = checkpoint::save_with(
                            &ckpt_root,
                            b,
                            &net,
                            &opt,
                            &state,
                            t.keep_checkpoints,
                            kill_point,
                        )
                        .map_err(failed)?;
                        tracing::info!(checkpoint = %dir.display(), step = state.global_step, "checkpoint");
                        last_checkpoint = Some(dir);
                    }
                }
                if stop {
                    status = "interrupted";
                    tracing::warn!(
                        step = state.global_step,
                        "stop requested by {}: checkpoint written, resume with --resume auto",
                        signals::requested().map_or("another rank", signals::name)
                    );
                    break 'epochs;
                }
                if at_max {
                    status = "max-steps";
                    break 'epochs;
                }
                if epoch_done {
                    break;
                }
            }
        }
        // End of an epoch.
        if let Some(p) = &resumed_end {
            if let Some(logged) = logged_epoch(world, &opts.out, p.epoch, state.global_step) {
                // Done before the interruption; only the checkpoint did not record it.
                if logged.is_some() {
                    final_eval = logged;
                }
                loss_epoch = (0.0, 0.0);
                skipped_epoch = 0;
                continue;
            }
            tracing::info!(
                epoch = p.epoch,
                "resumed at the end of an epoch: evaluating it first"
            );
        }
        let last = state.epoch == t.epochs as u64;
        let due = t.eval_every > 0 && state.epoch % t.eval_every as u64 == 0;
        let mut report = None;
        if let Some(val) = &val_ds {
            if last || due {
                watchdog.enter(Phase::Evaluation, state.global_step);
                if let (Some(f), None) = (&fault, &resumed_end) {
                    if f.hits(FaultKind::KillInEval, world.rank(), state.global_step) {
                        let rank = world.rank();
                        super::faults::kill_self(&format!(
                            "rank {rank} in the evaluation after step {}",
                            state.global_step
                        ));
                    }
                }
                let r = evaluate::evaluate(b, world, &mut net, val, s).map_err(failed)?;
                if world.rank() == 0 {
                    tracing::info!("epoch {}: {}", state.epoch, r.one_line());
                }
                report = Some(r);
            }
        }
        if let Some(file) = metrics_file.as_mut() {
            let line = MetricsLine {
                epoch: state.epoch,
                global_step: state.global_step,
                train_loss: loss_epoch.0 / loss_epoch.1.max(1.0),
                lr,
                samples_per_second: samples_done as f64 * world.size() as f64
                    / run_clock.elapsed().as_secs_f64(),
                skipped_steps: skipped_epoch,
                eval: report.as_ref(),
            };
            let text = serde_json::to_string(&line).expect("metrics serialise");
            writeln!(file, "{text}").map_err(|e| failed(format!("metrics.jsonl: {e}")))?;
            board.epoch(
                state.global_step,
                &line,
                report.as_ref(),
                last_checkpoint.as_deref(),
            );
            file.sync_data().ok();
            evaluate::write_curves(&opts.out).unwrap_or_else(|e| tracing::warn!("curves: {e}"));
        }
        loss_epoch = (0.0, 0.0);
        skipped_epoch = 0;
        if report.is_some() {
            final_eval = report;
        }
    }
    drop(watchdog);
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    times.total = started.elapsed().as_secs_f64();
    let rs = reducer.stats();
    let comm = CommStats {
        buckets: buckets.len(),
        bytes_per_step: (plen * 4) as u64,
        wait_seconds: rs.wait_seconds,
        copy_seconds: rs.copy_seconds,
    };
    let staging = match (background, &opts.stage_async) {
        (Some(bg), Some(a)) => {
            // In wait mode every planned shard was needed, so the copiers are (nearly) done; with the
            // archive fallback or a run stopped early they stop after the shard in progress.
            let report = bg.finish(status == "finished" && a.fallback == Fallback::Wait);
            Some(staging_stats(world, a, &report, first_step))
        }
        _ => None,
    };
    let outcome = TrainOutcome {
        staging,
        comm,
        status: status.into(),
        world_size: world.size(),
        epochs: state.epoch,
        global_step: state.global_step,
        samples_per_second: samples_done as f64 * world.size() as f64 / run_clock.elapsed().as_secs_f64(),
        skipped_steps,
        last_checkpoint,
        final_eval,
        times,
        out: opts.out.clone(),
        device: b.name().into(),
        peak_device_bytes: b.peak_device_bytes(),
    };
    if world.rank() == 0 {
        let text = serde_json::to_string_pretty(&outcome).expect("outcome serialises");
        crate::fsx::write_atomic(&opts.out.join("train-status.json"), text.as_bytes())
            .map_err(|e| failed(format!("{}: {e}", opts.out.display())))?;
        if let Err(e) = evaluate::write_report(&opts.out, &outcome) {
            tracing::warn!("report: {e}");
        }
    }
    Ok(outcome)
}

/// Whether `metrics.jsonl` under `out` already holds the line of `epoch` ending at `global_step`
/// (written after the checkpoint that ended the epoch, before the run was interrupted): Some with the

/// The training split (not empty) and the validation split, when the manifest has one. Staged
/// shards: a node holds only the shards it reads, so each is mapped on first use.
fn open_splits(opts: &TrainOptions, manifest: &Manifest) -> Result<(Dataset, Option<Dataset>), TrainError> {
    let (s, t) = (&opts.settings, &opts.settings.train);
    let lazy = s.data.shard_dir.is_some() || opts.stage_async.is_some();
    let open = |split: &str| {
        let ds = match lazy {
            true => Dataset::open_lazy(&opts.catalog, manifest, split, &s.data),
            false => Dataset::open(&opts.catalog, manifest, split, &s.data),
        };
        ds.map_err(|e| TrainError::Usage(e.to_string()))
    };
    let train_ds = open(&t.train_split)?;
    if train_ds.len() == 0 {
        return Err(TrainError::Usage(format!(
            "split {:?} of {} has no samples",
            t.train_split,
            opts.manifest.display()
        )));
    }
    let val_ds = if manifest.splits.iter().any(|p| p.name == t.val_split) {
        Some(open(&t.val_split)?)
    } else {
        tracing::warn!(split = %t.val_split, "no validation split in the manifest: metrics are skipped");
        None
    };
    Ok((train_ds, val_ds))
}

/// line's evaluation if so. Rank 0 reads the file and tells the others. A collective.
fn logged_epoch(world: &World, out: &Path, epoch: u64, global_step: u64) -> Option<Option<EvalReport>> {
    let mut found = None;
    if world.rank() == 0 {
        let text = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap_or_default();
        found = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["epoch"] == epoch && v["global_step"] == global_step)
            .map(|v| serde_json::from_value::<EvalReport>(v["eval"].clone()).ok());
    }
    let mut flag = [if found.is_some() { 1.0f32 } else { 0.0 }];
    world.broadcast_f32(0, &mut flag);
    (flag[0] != 0.0).then(|| found.flatten())
}
