//! `medtrain train`, `medtrain eval` and `medtrain predict`: one process per rank (or a single process
//! without a launcher). Rank 0 writes the outputs; an error on any rank ends the whole job.

use super::evaluate::{self, Prediction};
use super::run::{train, Resume, TrainError, TrainOptions};
use crate::backend::Backend;
use crate::catalog::columns::Level;
use crate::catalog::split::{Manifest, SplitSpec};
use crate::catalog::view::Catalog;
use crate::checkpoint::{self, CheckpointInfo, TrainState};
use crate::config::Config;
use crate::data::{Dataset, SampleMode};
use crate::dist::World;
use crate::exit::{usage, Failure, EXIT_OK};
use crate::nn::Net;
use crate::runtime::{finish, init_world, resolve_device, run_on, set_threads, OnBackend};
use crate::settings::Settings;
use crate::stage::background::{AsyncOptions, Fallback};
use crate::stage::cli::{job_id, StageConfig, DIR_PREFIX};
use clap::Args;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Catalog directory and manifest file (or [train] catalog/manifest in the config).
    pub inputs: Vec<PathBuf>,
    /// Run directory: checkpoints, metrics.jsonl, curves, report.md.
    #[arg(long)]
    pub out: PathBuf,
    /// Experiment settings (TOML: [model], [data], [sampler], [train], [eval]).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// "auto" (newest valid checkpoint in --out, else a fresh start), "no", or a checkpoint directory.
    #[arg(long, default_value = "no")]
    pub resume: String,
    #[arg(long)]
    pub epochs: Option<u32>,
    #[arg(long)]
    pub batch_size: Option<u32>,
    #[arg(long)]
    pub lr: Option<f32>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Stop after this many optimizer steps (a checkpoint is written there).
    #[arg(long)]
    pub max_steps: Option<u64>,
    /// TensorBoard log directory shared by runs: events go to DIR/<run directory name>/ (default:
    /// <run>/tb/).
    #[arg(long, value_name = "DIR")]
    pub tensorboard: Option<PathBuf>,
    /// Compute threads per rank.
    #[arg(long)]
    pub threads: Option<usize>,
    /// auto | cpu | cuda
    #[arg(long)]
    pub device: Option<String>,
    /// Read shards from this directory (same file names) instead of the catalogued paths: the
    /// directory `medtrain stage` printed. Sets [data] shard_dir.
    #[arg(long)]
    pub shard_dir: Option<PathBuf>,
    /// Stage this node's shards into DIR/medtrain-<job>/ (as `medtrain stage --local DIR` would) in
    /// the background while training runs; shards are read from there once staged.
    #[arg(long, value_name = "DIR")]
    pub stage_async: Option<PathBuf>,
    /// With --stage-async, a shard not staged yet is waited for ("wait") or read from the archive
    /// ("archive").
    #[arg(long, default_value = "wait")]
    pub stage_fallback: String,
    /// With --stage-async and --stage-fallback wait: seconds to wait for one shard before failing.
    #[arg(long, default_value_t = 600.0)]
    pub stage_wait_timeout: f64,
    /// With --stage-async: copy bandwidth per node in MB/s (else [stage] bandwidth_mbps).
    #[arg(long)]
    pub bandwidth_mbps: Option<f64>,
    /// With --stage-async: job id naming the staging directory (else $SLURM_JOB_ID, else "manual").
    #[arg(long)]
    pub job_id: Option<String>,
    /// Print the outcome as JSON on stdout (rank 0).
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// A run directory (its newest valid checkpoint) or a checkpoint directory.
    pub inputs: Vec<PathBuf>,
    /// Where eval.json and eval.md go.
    #[arg(long)]
    pub out: PathBuf,
    /// Split of the manifest to evaluate.
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Override the catalog and manifest recorded in the checkpoint.
    #[arg(long)]
    pub catalog: Option<PathBuf>,
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    /// Settings for [eval] (aggregation, bootstrap); the model and data settings come from the checkpoint.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// auto | cpu | cuda
    #[arg(long, default_value = "auto")]
    pub device: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct PredictArgs {
    /// A run or checkpoint directory, then one or more pack directories (no labels needed).
    #[arg(required = true, num_args = 2..)]
    pub inputs: Vec<PathBuf>,
    /// Where the catalog of the packs and predictions.csv / predictions.json go.
    #[arg(long)]
    pub out: PathBuf,
    /// Which series to score (catalog query language).
    #[arg(long, default_value = "modality = 'CT'")]
    pub filter: String,
    /// Segmentation: the DICOM directory the packs were made from; its series are matched by their
    /// keyed pseudonyms (with --key), and the DICOM SEGs copy their patient, study and frame of
    /// reference and reference their instances (else the SEGs are for local use).
    #[arg(long)]
    pub source: Option<PathBuf>,
    /// The site key the packs were made with (for --source).
    #[arg(long)]
    pub key: Option<PathBuf>,
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// auto | cpu | cuda
    #[arg(long, default_value = "auto")]
    pub device: String,
    #[arg(long)]
    pub json: bool,
}

/// `epoch_images` makes TensorBoard images of an epoch's checkpoint (`[train] explain_every`); the
/// command line passes `explain`'s Grad-CAM overlays.
pub fn run_train(
    args: TrainArgs,
    epoch_images: Option<super::tensorboard::EpochImages>,
) -> Result<i32, Failure> {
    let config = Config::load(args.config.as_deref()).map_err(usage)?;
    let mut settings = Settings::from_config(&config).map_err(usage)?;
    let t = &mut settings.train;
    t.epochs = args.epochs.unwrap_or(t.epochs);
    t.batch_size = args.batch_size.unwrap_or(t.batch_size);
    t.lr = args.lr.unwrap_or(t.lr);
    t.seed = args.seed.unwrap_or(t.seed);
    t.max_steps = args.max_steps.or(t.max_steps);
    t.threads = args.threads.or(t.threads);
    t.tensorboard = args.tensorboard.clone().or(t.tensorboard.take());
    if let Some(d) = &args.device {
        t.device = d.clone();
    }
    if let Some(dir) = &args.shard_dir {
        settings.data.shard_dir = Some(dir.clone());
    }
    settings.validate().map_err(usage)?;
    let device = resolve_device(&settings.train.device)?;
    let (catalog, manifest) = match args.inputs.as_slice() {
        [c, m] => (c.clone(), m.clone()),
        [] => match (&settings.train.catalog, &settings.train.manifest) {
            (Some(c), Some(m)) => (c.clone(), m.clone()),
            _ => return Err(usage("train needs a catalog directory and a manifest file")),
        },
        _ => return Err(usage("train takes two inputs: CATALOG_DIR MANIFEST_FILE")),
    };
    let resume = match args.resume.as_str() {
        "no" => Resume::No,
        "auto" => Resume::Auto,
        dir => Resume::Dir(PathBuf::from(dir)),
    };
    let stage_async = stage_async_options(&args, &config)?;
    let world = init_world()?;
    let _span = tracing::info_span!("rank", r = world.rank()).entered();
    set_threads(&world, settings.train.threads);
    let opts = TrainOptions {
        stage_async,
        settings,
        catalog,
        manifest,
        out: args.out.clone(),
        resume,
        progress: crate::logging::show_progress(),
        epoch_images,
    };
    let result = run_on(
        device,
        &world,
        TrainJob {
            world: &world,
            opts: &opts,
            json: args.json,
        },
    );
    finish(&world, result)
}

struct TrainJob<'a> {
    world: &'a World,
    opts: &'a TrainOptions,
    json: bool,
}

impl OnBackend for TrainJob<'_> {
    fn run<B: Backend>(self, b: &B) -> Result<i32, Failure> {
        match train(b, self.world, self.opts) {
            Ok(outcome) => {
                if self.world.rank() == 0 {
                    if self.json {
                        println!(
                            "{}",
                            serde_json::to_string_pretty(&outcome).expect("serialisable")
                        );
                    } else {
                        println!(
                            "train: {} after {} epochs, {} steps on {} rank(s), {:.1} images/s; run in {}",
                            outcome.status,
                            outcome.epochs,
                            outcome.global_step,
                            outcome.world_size,
                            outcome.samples_per_second,
                            outcome.out.display()
                        );
                        if let Some(r) = &outcome.final_eval {
                            println!("  {}", r.one_line());
                        }
                    }
                }
                Ok(EXIT_OK)
            }
            Err(TrainError::Usage(m)) => Err(Failure::Usage(m)),
            Err(TrainError::Failed(m)) => Err(Failure::Job(m)),
        }
    }
}

/// The settings of `--stage-async`, checked before any rank starts.
fn stage_async_options(args: &TrainArgs, config: &Config) -> Result<Option<AsyncOptions>, Failure> {
    let Some(root) = &args.stage_async else {
        return Ok(None);
    };
    if args.shard_dir.is_some() {
        return Err(usage(
            "--stage-async reads shards from its staging directory: do not also give --shard-dir",
        ));
    }
    let stage_cfg: StageConfig = match &config.stage {
        Some(v) => v
            .clone()
            .try_into()
            .map_err(|e| usage(format!("config [stage]: {e}")))?,
        None => StageConfig::default(),
    };
    let bandwidth_mbps = args.bandwidth_mbps.or(stage_cfg.bandwidth_mbps);
    if let Some(b) = bandwidth_mbps {
        if !(b > 0.0 && b.is_finite()) {
            return Err(usage(format!(
                "--bandwidth-mbps {b}: must be a positive number of MB/s"
            )));
        }
    }
    let timeout = args.stage_wait_timeout;
    if !(timeout > 0.0 && timeout.is_finite() && timeout < 1e9) {
        return Err(usage(format!(
            "--stage-wait-timeout {timeout}: must be a positive number of seconds"
        )));
    }
    let job = job_id(args.job_id.as_deref(), |k| std::env::var(k).ok()).map_err(usage)?;
    Ok(Some(AsyncOptions {
        dir: root.join(format!("{DIR_PREFIX}{job}")),
        bandwidth_mbps,
        fallback: Fallback::parse(&args.stage_fallback).map_err(usage)?,
        wait_timeout: std::time::Duration::from_secs_f64(timeout),
    }))
}

/// The checkpoint of a run directory (newest valid) or the checkpoint directory itself.
pub(crate) fn find_checkpoint(path: &Path) -> Result<CheckpointInfo, Failure> {
    if path.join("checkpoints").is_dir() {
        return checkpoint::latest_valid_weights(&path.join("checkpoints"))
            .map_err(|e| Failure::Job(e.to_string()))?
            .ok_or_else(|| usage(format!("{}: no valid checkpoint in checkpoints/", path.display())));
    }
    checkpoint::inspect_weights(path).map_err(|e| usage(e.to_string()))
}

pub(crate) fn settings_of(state: &TrainState) -> Result<Settings, Failure> {
    serde_json::from_value(state.extra["settings"].clone())
        .map_err(|e| usage(format!("checkpoint settings: {e}")))
}

/// Gives `ds` the tabular standardisation the checkpoint's run fitted on its training split.
pub(crate) fn with_tabular(mut ds: Dataset, state: &TrainState) -> Result<Dataset, Failure> {
    if ds.tabular_len() > 0 {
        let stats = serde_json::from_value(state.extra["tabular"].clone())
            .map_err(|e| usage(format!("checkpoint: no tabular standardisation ({e})")))?;
        ds.set_tabular_stats(stats).map_err(usage)?;
    }
    Ok(ds)
}

pub(crate) fn recorded_path(state: &TrainState, key: &str) -> Option<PathBuf> {
    state.extra[key].as_str().map(PathBuf::from)
}

/// A network holding the checkpoint's weights, for a batch of `batch` samples of `ds`'s shape.
pub(crate) fn load_net<B: Backend>(
    b: &B,
    ck: &CheckpointInfo,
    settings: &Settings,
    ds: &Dataset,
) -> Result<Net<B>, Failure> {
    let cfg = settings.model(ds.channels());
    if cfg != ck.state.model {
        return Err(usage(format!(
            "{}: the checkpoint's model does not match its data settings",
            ck.dir.display()
        )));
    }
    let spec = crate::nn::build_model(&cfg, settings.train.batch_size, ds.extent());
    let mut net = Net::new(b, spec, settings.train.seed).map_err(|e| Failure::Job(e.to_string()))?;
    checkpoint::restore_weights(&ck.dir, b, &mut net).map_err(|e| Failure::Job(e.to_string()))?;
    Ok(net)
}

/// Verbs that score samples refuse a segmentation model, naming what gives its results instead.
pub(crate) fn sample_scores_only(s: &Settings, verb: &str) -> Result<(), Failure> {
    if s.train.task != crate::settings::Task::Segmentation {
        return Ok(());
    }
    Err(usage(format!(
        "{verb} works on sample scores, and a segmentation model's output is per voxel: its \
         per-case results come from `medtrain eval` (eval.json, cases.csv, candidates.csv) and its \
         predicted masks from `medtrain predict` (NIfTI masks, candidates.csv)"
    )))
}

/// The settings a checkpoint was trained with, `[eval]` taken from `config` when given.
pub(crate) fn checkpoint_settings(ck: &CheckpointInfo, config: Option<&Path>) -> Result<Settings, Failure> {
    let mut settings = settings_of(&ck.state)?;
    eval_overrides(config, &mut settings)?;
    Ok(settings)
}

pub(crate) fn eval_overrides(config: Option<&Path>, settings: &mut Settings) -> Result<(), Failure> {
    if let Some(path) = config {
        let config = Config::load(Some(path)).map_err(usage)?;
        if let Some(e) = &config.eval {
            settings.eval = e
                .clone()
                .try_into()
                .map_err(|e| usage(format!("config [eval]: {e}")))?;
        }
    }
    Ok(())
}

pub fn run_eval(args: EvalArgs) -> Result<i32, Failure> {
    let [run] = args.inputs.as_slice() else {
        return Err(usage("eval takes one input: a run or checkpoint directory"));
    };
    let ck = find_checkpoint(run)?;
    let settings = checkpoint_settings(&ck, args.config.as_deref())?;
    let catalog = args
        .catalog
        .clone()
        .or_else(|| recorded_path(&ck.state, "catalog"))
        .ok_or_else(|| usage("eval: give --catalog"))?;
    let manifest_path = args
        .manifest
        .clone()
        .or_else(|| recorded_path(&ck.state, "manifest"))
        .ok_or_else(|| usage("eval: give --manifest"))?;
    let manifest = Manifest::load(&manifest_path).map_err(usage)?;
    if !manifest.splits.iter().any(|p| p.name == args.split) {
        let names: Vec<&str> = manifest.splits.iter().map(|p| p.name.as_str()).collect();
        return Err(usage(format!(
            "{} has no split {:?} (it has {})",
            manifest_path.display(),
            args.split,
            names.join(", ")
        )));
    }
    let device = resolve_device(&args.device)?;
    let world = init_world()?;
    let _span = tracing::info_span!("rank", r = world.rank()).entered();
    set_threads(&world, settings.train.threads);
    let result = run_on(
        device,
        &world,
        EvalJob {
            world: &world,
            args: &args,
            ck: &ck,
            settings: &settings,
            catalog: &catalog,
            manifest: &manifest,
        },
    );
    finish(&world, result)
}

pub fn run_predict(args: PredictArgs) -> Result<i32, Failure> {
    let ck = find_checkpoint(&args.inputs[0])?;
    let settings = checkpoint_settings(&ck, args.config.as_deref())?;
    let packs = args.inputs[1..].to_vec();
    let segmentation = settings.train.task == crate::settings::Task::Segmentation;
    match (&args.source, &args.key) {
        (Some(_), _) if !segmentation => {
            return Err(usage(
                "predict --source writes DICOM SEGs, which only a segmentation model makes",
            ))
        }
        (Some(_), None) => {
            return Err(usage(
                "predict --source needs --key: the site key the packs were made with",
            ))
        }
        _ => {}
    }
    if !settings.data.tabular.is_empty() {
        return Err(usage(format!(
            "predict on new packs has no label sets for the model's tabular inputs ({}): import them \
             into a catalog, split it and use eval",
            settings.data.tabular.join(", ")
        )));
    }
    let device = resolve_device(&args.device)?;
    let world = init_world()?;
    let _span = tracing::info_span!("rank", r = world.rank()).entered();
    set_threads(&world, settings.train.threads);
    let result = run_on(
        device,
        &world,
        PredictJob {
            world: &world,
            args: &args,
            ck: &ck,
            settings: &settings,
            packs: &packs,
        },
    );
    finish(&world, result)
}

struct EvalJob<'a> {
    world: &'a World,
    args: &'a EvalArgs,
    ck: &'a CheckpointInfo,
    settings: &'a Settings,
    catalog: &'a Path,
    manifest: &'a Manifest,
}

impl OnBackend for EvalJob<'_> {
    fn run<B: Backend>(self, b: &B) -> Result<i32, Failure> {
        let EvalJob {
            world,
            args,
            ck,
            settings,
            catalog,
            manifest,
        } = self;
        let ds = Dataset::open(catalog, manifest, &args.split, &settings.data).map_err(usage)?;
        let ds = Arc::new(with_tabular(ds, &ck.state)?);
        let mut net = load_net(b, ck, settings, &ds)?;
        let segmentation = settings.train.task == crate::settings::Task::Segmentation;
        let report = if segmentation {
            let seg = super::segeval::evaluate_segmentation(b, world, &mut net, &ds, settings)
                .map_err(Failure::Job)?;
            evaluate::segmentation_report(seg, &ds, settings, &args.split)
        } else {
            eval_samples(b, world, &mut net, &ds, settings, args, ck, catalog, manifest)?
        };
        if world.rank() == 0 {
            std::fs::create_dir_all(&args.out)
                .map_err(|e| Failure::Job(format!("{}: {e}", args.out.display())))?;
            let json = serde_json::to_string_pretty(&report).expect("serialisable");
            let write = |name: &str, bytes: &[u8]| {
                crate::fsx::write_atomic(&args.out.join(name), bytes)
                    .map_err(|e| Failure::Job(format!("{}: {e}", args.out.join(name).display())))
            };
            write("eval.json", json.as_bytes())?;
            let how = match &report.segmentation {
                Some(seg) => {
                    write("cases.csv", seg.csv().as_bytes())?;
            write("candidates.csv", seg.candidates_csv().as_bytes())?;
                    format!(
                        "Sliding-window inference over whole series (overlap {}, {} weighting{}); \
                         per-case metrics in cases.csv; {} bootstrap resamples over cases.",
                        settings.eval.overlap,
                        if settings.eval.gaussian { "Gaussian" } else { "uniform" },
                        if settings.eval.flip_tta { ", flip test-time augmentation" } else { "" },
                        settings.eval.bootstrap
                    )
                }
                None => format!(
                    "Scores aggregated by {}; intervals: {:.0}% percentile bootstrap over patients ({} resamples).",
                    report.aggregate,
                    settings.eval.ci_level * 100.0,
                    settings.eval.bootstrap
                ),
            };
            let md = format!(
                "# Evaluation of {} on split {}\n\n{how}\n\n{}",
                ck.dir.display(),
                args.split,
                evaluate::report_markdown(&report)
            );
            let figures = super::figures::write_figures(
                &report.plotted,
                &settings.eval,
                settings.train.seed ^ 0xF16,
                &args.out,
            )
            .map_err(|e| Failure::Job(format!("{}: {e}", args.out.display())))?;
            let md = figures.iter().fold(md, |md, f| {
                format!("{md}\n![{f}]({f}.png) ([SVG]({f}.svg), [data]({f}.json))\n")
            });
            write("eval.md", md.as_bytes())?;
            if args.json {
                println!("{json}");
            } else {
                println!("eval: {}", report.one_line());
                print!("{}", evaluate::report_markdown(&report));
            }
        }
        Ok(EXIT_OK)
    }
}

/// The sample-scored evaluation (every task but segmentation), with the regression baselines.
#[allow(clippy::too_many_arguments)]
fn eval_samples<B: Backend>(
    b: &B,
    world: &World,
    net: &mut Net<B>,
    ds: &Arc<Dataset>,
    settings: &Settings,
    args: &EvalArgs,
    ck: &CheckpointInfo,
    catalog: &Path,
    manifest: &Manifest,
) -> Result<evaluate::EvalReport, Failure> {
    let preds = evaluate::predict_dataset(
        b,
        world,
        net,
        ds,
        settings.train.batch_size as usize,
        settings.num_outputs() as usize,
        Some("samples scored (rank 0's share)"),
    )
    .map_err(Failure::Job)?;
    let baselines = evaluate::baselines_of(world, ds, settings).map_err(Failure::Job)?;
    let mut report =
        evaluate::metrics_of(&preds, ds, settings, &args.split, &baselines).map_err(Failure::Job)?;
    let t = &settings.train.train_split;
    let has_train = manifest.splits.iter().any(|p| &p.name == t);
    if settings.train.task == crate::settings::Task::Regression && !has_train {
        tracing::warn!(split = %t, "no training split in the manifest: no regression baselines");
    }
    if settings.train.task == crate::settings::Task::Regression && has_train {
        let train = Dataset::open_lazy(catalog, manifest, t, &settings.data).map_err(usage)?;
        let train = with_tabular(train, &ck.state)?;
        report.baselines = super::regression::baselines(&train, ds).map_err(Failure::Job)?;
    }
    Ok(report)
}

struct PredictJob<'a> {
    world: &'a World,
    args: &'a PredictArgs,
    ck: &'a CheckpointInfo,
    settings: &'a Settings,
    packs: &'a [PathBuf],
}

impl OnBackend for PredictJob<'_> {
    fn run<B: Backend>(self, b: &B) -> Result<i32, Failure> {
        let PredictJob {
            world,
            args,
            ck,
            settings,
            packs,
        } = self;
        // A catalog of the given packs (rank 0 builds it, the others wait) and one split of everything.
        let catalog_dir = args.out.join("catalog");
        let manifest_path = args.out.join("predict-manifest.h5");
        let level = match settings.data.mode {
            SampleMode::Slice | SampleMode::Slice25d => Level::Slice,
            SampleMode::Crop3d | SampleMode::Volume3d => Level::Series,
        };
        let mut status = vec![0u8];
        if world.rank() == 0 {
            let made = (|| -> Result<(), String> {
                std::fs::create_dir_all(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
                crate::catalog::build::build(packs, &catalog_dir).map_err(|e| e.to_string())?;
                let cat = Catalog::open(&catalog_dir).map_err(|e| e.to_string())?;
                let spec = SplitSpec {
                    filter: args.filter.clone(),
                    level,
                    splits: vec![("all".into(), 1.0)],
                    stratify: None,
                    seed: 0,
                };
                let manifest = crate::catalog::split::plan(&cat, &spec).map_err(|e| e.to_string())?;
                manifest.write(&manifest_path).map_err(|e| e.to_string())
            })();
            if let Err(e) = made {
                status[0] = 1;
                tracing::error!("{e}");
            }
        }
        world.broadcast_bytes(0, &mut status);
        if status[0] != 0 {
            return Err(Failure::Job("could not catalogue the packs to predict on".into()));
        }
        let manifest = Manifest::load(&manifest_path).map_err(|e| Failure::Job(e.to_string()))?;
        let mut data = settings.data.clone();
        data.labels.clear();
        data.augment = Default::default();
        data.masks = None;
        let ds = Arc::new(Dataset::open(&catalog_dir, &manifest, "all", &data).map_err(usage)?);
        let mut net = load_net(b, ck, settings, &ds)?;
        if settings.train.task == crate::settings::Task::Segmentation {
            return predict_masks(b, world, &mut net, &ds, settings, args);
        }
        let preds = evaluate::predict_dataset(
            b,
            world,
            &mut net,
            &ds,
            settings.train.batch_size as usize,
            settings.num_outputs() as usize,
            Some("samples scored (rank 0's share)"),
        )
        .map_err(Failure::Job)?;
        if world.rank() == 0 {
            write_predictions(&args.out, &ds, &preds, settings).map_err(Failure::Job)?;
            if args.json {
                let summary = serde_json::json!({
                    "samples": preds.len(),
                    "csv": args.out.join("predictions.csv"),
                    "series_csv": args.out.join("series-predictions.csv"),
                });
                println!("{summary}");
            } else {
                println!(
                    "predict: {} samples scored; {} and {}",
                    preds.len(),
                    args.out.join("predictions.csv").display(),
                    args.out.join("series-predictions.csv").display()
                );
            }
        }
        Ok(EXIT_OK)
    }
}

/// `predict` with a segmentation model: masks and candidates of every series.
fn predict_masks<B: Backend>(
    b: &B,
    world: &World,
    net: &mut Net<B>,
    ds: &Dataset,
    settings: &Settings,
    args: &PredictArgs,
) -> Result<i32, Failure> {
    let sources = match (&args.source, &args.key) {
        (Some(dir), Some(key)) => {
            let key =
                crate::deid::SiteKey::load(key).map_err(|e| usage(format!("{}: {e}", key.display())))?;
            Some(super::segdicom::scan_sources(dir, &key).map_err(Failure::Job)?)
        }
        _ => None,
    };
    let rows =
        super::segpredict::predict_segmentation(b, world, net, ds, settings, &args.out, sources.as_ref())
            .map_err(Failure::Job)?;
    if world.rank() == 0 {
        super::segpredict::write_tables(&args.out, &rows).map_err(Failure::Job)?;
        let written = rows.iter().filter(|r| r.file.is_some()).count();
        let segs = rows.iter().filter(|r| r.seg.is_some()).count();
        let candidates: usize = rows.iter().map(|r| r.candidates.len()).sum();
        if args.json {
            let summary = serde_json::json!({
                "series": rows.len(),
                "masks": written,
                "segs": segs,
                "candidates": candidates,
                "masks_csv": args.out.join("masks.csv"),
                "candidates_csv": args.out.join("candidates.csv"),
            });
            println!("{summary}");
        } else {
            println!(
                "predict: {} series, {written} masks under {}, {segs} DICOM SEGs under {}, {candidates} \
                 candidates in {}",
                rows.len(),
                args.out.join("masks").display(),
                args.out.join("seg").display(),
                args.out.join("candidates.csv").display()
            );
        }
        for r in rows.iter().filter(|r| r.seg.is_none()) {
            eprintln!("predict: series {}: {}", r.series_key, r.note);
        }
        if segs < rows.len() {
            return Ok(crate::exit::EXIT_FAILURES);
        }
    }
    Ok(EXIT_OK)
}

/// Per-sample and per-series scores as CSV (probabilities for binary tasks, raw outputs otherwise).
fn write_predictions(out: &Path, ds: &Dataset, preds: &[Prediction], s: &Settings) -> Result<(), String> {
    let binary = s.train.task == crate::settings::Task::Binary;
    let score = |v: f32| {
        if binary {
            1.0 / (1.0 + (-(v as f64)).exp())
        } else {
            v as f64
        }
    };
    let mut csv = String::from("series_key,patient_key,slice_index,score\n");
    let mut keys = Vec::with_capacity(preds.len());
    let mut scores = Vec::with_capacity(preds.len());
    let mut names = std::collections::BTreeMap::new();
    for p in preds {
        let m = ds.meta(p.sample);
        let v = score(p.outputs[0]);
        csv.push_str(&format!(
            "{},{},{},{v:.6}\n",
            m.series_key, m.patient_key, m.slice_index
        ));
        keys.push(m.series_row as u64);
        scores.push(v);
        names.insert(m.series_row as u64, (m.series_key.clone(), m.patient_key.clone()));
    }
    let groups = super::metrics::aggregate(&keys, &scores, None, s.eval.aggregate);
    let mut series_csv = String::from("series_key,patient_key,samples,score\n");
    for g in &groups {
        let (sk, pk) = &names[&g.key];
        series_csv.push_str(&format!("{sk},{pk},{},{:.6}\n", g.count, g.score));
    }
    let write = |name: &str, text: &str| {
        let path = out.join(name);
        let mut f = std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        f.write_all(text.as_bytes())
            .map_err(|e| format!("{}: {e}", path.display()))
    };
    write("predictions.csv", &csv)?;
    write("series-predictions.csv", &series_csv)
}
