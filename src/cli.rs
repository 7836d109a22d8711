//! The command line: `medtrain <verb> <inputs…> --out <dir>`, `--config FILE`, `--json`.
//! Exit codes: see [`crate::exit`].

use crate::config::{parse_size, Config};
use crate::deid::SiteKey;
use crate::dist::{dist_failure, World};
use crate::exit::{usage, Failure, EXIT_FAILURES, EXIT_OK, EXIT_USAGE};
use crate::logging::{self, LogFormat};
use crate::pack::ranks::{is_usage, run_pack_ranks};
use crate::pack::run::{PackOptions, DEFAULT_SHARD_BYTES};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "medtrain",
    version,
    about = "Data-parallel CNN training for medical imaging on GPU clusters"
)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value = "human")]
    pub log_format: LogFormat,
    /// More log output (debug level).
    #[arg(short, long, global = true)]
    pub verbose: bool,
    /// Only warnings and errors on stderr.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Write the synthetic screening cohort (real DICOM plus ground truth) used by the demo and tests.
    Phantom(crate::phantom::cli::PhantomArgs),
    /// Pack DICOM series into de-identified, memory-mappable HDF5 shards.
    Pack(PackArgs),
    /// Summarise a pack directory; --verify checks every shard's checksum.
    Inspect(crate::pack::cli::InspectArgs),
    /// Catalog of shards: build, label import, queries, patient-level splits.
    Catalog(crate::catalog::cli::CatalogArgs),
    /// Copy the shards each node will read to node-local disk (ranks of a node share the copying).
    Stage(crate::stage::cli::StageArgs),
    /// Train a model on a manifest's split, on every MPI rank (or as a single process).
    Train(crate::train::cli::TrainArgs),
    /// Metrics with confidence intervals of a trained model on a split of its manifest.
    Eval(crate::train::cli::EvalArgs),
    /// Scores of a trained model for unlabelled packs, per slice and per series (a segmentation
    /// model: NIfTI masks, DICOM SEGs and candidates).
    Predict(crate::train::cli::PredictArgs),
    /// Store DICOM objects (predicted SEGs) in an archive with STOW-RS; reruns send only what is
    /// missing.
    Push(crate::pacs::cli::PushArgs),
    /// Grad-CAM maps of a trained model: overlays, montages, maps.h5, report.md; --evaluate scores
    /// them against ground-truth lesions per layer.
    Explain(crate::explain::cli::ExplainArgs),
    /// Benchmarks; `bench allreduce` times and checks the MPI gradient averaging.
    Bench(crate::bench::BenchArgs),
    /// Project a job to a cluster: step time, scaling efficiency, epoch time and staging per node for
    /// 1…512 ranks, from `bench step` and `bench comm` figures (measured, or given as presets).
    Plan(crate::plan::cli::PlanArgs),
    /// Check that a job can run here: MPI, HDF5, CUDA libraries and GPU, node-local disk, Slurm,
    /// threads; each ok / warning / error with the remedy (exit 1 on any error).
    Doctor(crate::doctor::DoctorArgs),
}

#[derive(clap::Args, Debug)]
pub struct PackArgs {
    /// DICOM root directories (walked recursively).
    #[arg(required_unless_present = "from", conflicts_with = "from")]
    pub inputs: Vec<PathBuf>,
    #[command(flatten)]
    pub archive: crate::pacs::cli::ArchiveArgs,
    /// Pack directory (created if needed; re-packing into it skips what it already holds).
    #[arg(long)]
    pub out: PathBuf,
    /// Site key file for pseudonyms (hex, mode 0600).
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// Create the site key file if it does not exist.
    #[arg(long)]
    pub create_key: bool,
    /// Target pixel bytes per shard, e.g. 512MiB or 2GiB.
    #[arg(long)]
    pub shard_size: Option<String>,
    /// Experiment settings (TOML); flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Parses the command line, runs the verb and returns the process exit code.
pub fn run() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
        }
    };
    logging::init(cli.log_format, cli.verbose, cli.quiet);
    crate::pack::reader::disable_hdf5_file_locking();
    let result = match cli.command {
        Command::Phantom(args) => crate::phantom::cli::run(args),
        Command::Pack(args) => pack(args),
        Command::Inspect(args) => crate::pack::cli::inspect(args),
        Command::Catalog(args) => crate::catalog::cli::run(args),
        Command::Stage(args) => crate::stage::cli::run(args),
        Command::Train(args) => crate::train::cli::run_train(args, Some(crate::explain::cli::epoch_images())),
        Command::Eval(args) => crate::train::cli::run_eval(args),
        Command::Predict(args) => crate::train::cli::run_predict(args),
        Command::Push(args) => crate::pacs::cli::push(args),
        Command::Explain(args) => crate::explain::cli::run_explain(args),
        Command::Bench(args) => crate::bench::run(args),
        Command::Plan(args) => crate::plan::cli::run(args),
        Command::Doctor(args) => crate::doctor::run(args),
    };
    match result {
        Ok(code) => code,
        Err(Failure::Usage(msg)) => {
            eprintln!("error: {msg}");
            EXIT_USAGE
        }
        Err(Failure::Job(msg)) => {
            eprintln!("error: {msg}");
            EXIT_FAILURES
        }
    }
}

/// Under an MPI launcher every rank packs its share (see `pack::ranks`); rank 0 prints the report.
fn pack(mut args: PackArgs) -> Result<i32, Failure> {
    let world = World::init().map_err(dist_failure)?;
    let config = Config::load(args.config.as_deref()).map_err(usage)?;
    let key_path = args
        .key
        .or(config.pack.key.clone())
        .ok_or_else(|| usage("pack needs a site key: --key FILE (add --create-key the first time)"))?;
    // Rank 0 creates a missing key; the others read it once it exists.
    let key = if world.rank() == 0 {
        let key = SiteKey::load_or_create(&key_path, args.create_key);
        world.barrier();
        key
    } else {
        world.barrier();
        SiteKey::load_or_create(&key_path, false)
    }
    .map_err(usage)?;
    let shard_bytes = match args.shard_size.or(config.pack.shard_size.clone()) {
        Some(s) => parse_size("shard_size", &s).map_err(usage)?,
        None => DEFAULT_SHARD_BYTES,
    };
    let opts = PackOptions {
        roots: args.inputs,
        out: args.out,
        key,
        shard_bytes,
        rank: world.rank(),
        workers: world.size(),
        progress: logging::show_progress() && world.rank() == 0,
    };
    if args.archive.from.is_some() {
        let archive = std::mem::take(&mut args.archive);
        return crate::pacs::cli::pull(&world, archive, opts, &config.pack, args.json);
    }
    let (report, _quarantine) = run_pack_ranks(&world, &opts).map_err(|e| match e {
        crate::pack::run::PackError::Key(k) => usage(k),
        e if is_usage(&e) => usage(e),
        other => Failure::Job(other.to_string()),
    })?;
    if world.rank() == 0 {
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report).expect("serialisable"));
        } else {
            crate::pack::cli::print_pack_summary(&report, &opts.out);
        }
    }
    Ok(if report.quarantined_entries > 0 {
        EXIT_FAILURES
    } else {
        EXIT_OK
    })
}
