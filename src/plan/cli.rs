//! The `plan` verb: reads the measured or given parts, asks the sampler and the staging plan for each
//! layout, and prints the projection (table or JSON; `plan.json` under `--out`).

use super::{assumptions, layouts, project, LayoutFacts, LinkPreset, PlanInputs, PlanRow};
use crate::config::{parse_size, Config};
use crate::data::sampler::Layout as SamplerLayout;
use crate::data::Dataset;
use crate::dist::cli::CommReport;
use crate::dist::costmodel::{AlphaBeta, Layout};
use crate::exit::{usage, Failure, EXIT_OK};
use crate::settings::Settings;
use crate::stage::cli::PlanSources;
use clap::Args;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct PlanArgs {
    /// Catalog directory and manifest file (as `stage` and `train` take them).
    pub inputs: Vec<PathBuf>,
    /// Experiment settings (the file `train` gets).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Write plan.json into this directory.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print the plan as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Seconds of one rank's training step at the config's batch, measured on the target device.
    #[arg(long)]
    pub step_seconds: Option<f64>,
    /// `bench step --json` output from the target device (scaled linearly to the config's batch).
    #[arg(long)]
    pub step_json: Option<PathBuf>,
    /// Sustained training throughput of the target device, TFLOP/s, for a device not measured here:
    /// a step costs 3× the forward FLOPs of the model's convolutions and linear layers.
    #[arg(long)]
    pub device_tflops: Option<f64>,
    /// `bench comm --json` output (its bucketed fit is the intra-node link, and the inter-node one
    /// unless --inter names a preset).
    #[arg(long)]
    pub comm_json: Option<PathBuf>,
    /// Intra-node link preset (instead of --comm-json).
    #[arg(long, value_enum)]
    pub intra: Option<LinkPreset>,
    /// Inter-node link preset.
    #[arg(long, value_enum)]
    pub inter: Option<LinkPreset>,
    #[arg(long, default_value_t = 4)]
    pub gpus_per_node: usize,
    /// Largest world in the table (powers of two up to it).
    #[arg(long, default_value_t = 512)]
    pub max_ranks: usize,
    /// Fraction of the allreduce hidden behind backward (0..1); 0 assumes none.
    #[arg(long, default_value_t = 0.0)]
    pub overlap: f64,
    /// Node-local disk space per node for staging, e.g. 1.6TB.
    #[arg(long)]
    pub nvme: Option<String>,
    /// Shared-file-system read bandwidth per node, MB/s (10^6 bytes).
    #[arg(long)]
    pub read_node_mbps: Option<f64>,
    /// Shared-file-system read bandwidth of the whole file system, MB/s.
    #[arg(long)]
    pub read_total_mbps: Option<f64>,
}

/// The `bench step --json` fields the plan reads.
#[derive(Deserialize)]
struct StepFigures {
    batch: u32,
    seconds_per_step: f64,
}

#[derive(Serialize)]
struct PlanReport {
    inputs: PlanInputs,
    assumptions: Vec<String>,
    warnings: Vec<String>,
    rows: Vec<PlanRow>,
}

fn read_json<T: serde::de::DeserializeOwned>(flag: &str, path: &Path) -> Result<T, Failure> {
    let text = std::fs::read_to_string(path).map_err(|e| usage(format!("{flag} {}: {e}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| usage(format!("{flag} {}: {e}", path.display())))
}

fn positive(flag: &str, v: Option<f64>) -> Result<Option<f64>, Failure> {
    match v {
        Some(x) if !(x > 0.0 && x.is_finite()) => {
            Err(usage(format!("{flag} {x}: must be a positive number")))
        }
        other => Ok(other),
    }
}

pub fn run(args: PlanArgs) -> Result<i32, Failure> {
    let config = Config::load(args.config.as_deref()).map_err(usage)?;
    let settings = Settings::from_config(&config).map_err(usage)?;
    let (catalog, manifest_path) = match args.inputs.as_slice() {
        [c, m] => (c.clone(), m.clone()),
        _ => return Err(usage("plan takes two inputs: CATALOG_DIR MANIFEST_FILE")),
    };
    if !(0.0..=1.0).contains(&args.overlap) {
        return Err(usage(format!(
            "--overlap {}: a fraction from 0 to 1",
            args.overlap
        )));
    }
    if args.gpus_per_node == 0 || args.max_ranks == 0 {
        return Err(usage("--gpus-per-node and --max-ranks must be at least 1"));
    }
    let t = &settings.train;
    let measured: Option<AlphaBeta> = match &args.comm_json {
        Some(path) => Some(read_json::<CommReport>("--comm-json", path)?.bucketed),
        None => None,
    };
    let intra = args
        .intra
        .map(LinkPreset::alpha_beta)
        .or(measured)
        .ok_or_else(|| usage("give --comm-json FILE (from `bench comm --json`) or --intra PRESET"))?;
    let inter = args
        .inter
        .map(LinkPreset::alpha_beta)
        .or(measured)
        .unwrap_or(intra);
    let nvme_bytes = match &args.nvme {
        Some(text) => Some(parse_size("--nvme", text).map_err(usage)?),
        None => None,
    };
    // Opened once from the tables alone: a catalog of metadata-only shards (catalog synth) plans
    // as if packed.
    let sources = PlanSources::open(&settings, &catalog, &manifest_path, Dataset::open_described)
        .map_err(|e| usage(e.to_string()))?;
    let train = &sources.train;
    let spec = crate::nn::build_model(&settings.model(train.channels()), t.batch_size, train.extent());
    let step_flops = 3.0 * spec.graph.forward_flops() * f64::from(t.micro_batches);
    let compute_s = compute_seconds(&args, t.batch_size * t.micro_batches, step_flops)?;
    let inputs = PlanInputs {
        compute_s,
        step_flops,
        batch_per_rank: t.batch_size * t.micro_batches,
        gradient_bytes: 4 * spec.params.len() as u64,
        gpus_per_node: args.gpus_per_node,
        intra,
        inter,
        overlap: args.overlap,
        nvme_bytes,
        read_node_bps: positive("--read-node-mbps", args.read_node_mbps)?.map(|m| m * 1e6),
        read_total_bps: positive("--read-total-mbps", args.read_total_mbps)?.map(|m| m * 1e6),
        epochs: t.epochs,
    };
    let mut rows = Vec::new();
    let mut warnings = Vec::new();
    let stand_in = metadata_only_pixel_bytes(&catalog)?;
    if !stand_in.is_empty() {
        warnings.push(format!(
            "{} shards hold tables only (catalog synth): each is counted with the int16 pixel bytes its \
             series table describes ({} bytes in all), as if packed",
            stand_in.len(),
            stand_in.values().sum::<u64>()
        ));
    }
    for layout in layouts(args.max_ranks, args.gpus_per_node) {
        let facts = layout_facts(&settings, &sources, layout, &stand_in)?;
        if facts.steps_per_epoch == 0 {
            warnings.push(format!(
                "{} ranks: the training split is smaller than one global batch ({} ranks × {} per rank): no step in an epoch",
                layout.ranks(),
                layout.ranks(),
                inputs.batch_per_rank
            ));
        }
        let row = project(layout, &facts, &inputs);
        if row.fits_nvme == Some(false) {
            warnings.push(format!(
                "{} ranks on {} nodes: a node stages {} bytes, more than the {} bytes of node-local disk; \
                 stage a window of epochs and evict behind it, or add nodes",
                row.ranks,
                row.nodes,
                row.stage_bytes_per_node,
                nvme_bytes.unwrap_or(0)
            ));
        }
        rows.push(row);
    }
    let report = PlanReport {
        assumptions: assumptions(&inputs),
        inputs,
        warnings,
        rows,
    };
    let text = serde_json::to_string_pretty(&report).expect("serialisable");
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir).map_err(|e| Failure::Job(format!("{}: {e}", dir.display())))?;
        let path = dir.join("plan.json");
        crate::fsx::write_atomic(&path, text.as_bytes())
            .map_err(|e| Failure::Job(format!("{}: {e}", path.display())))?;
    }
    if args.json {
        println!("{text}");
    } else {
        print_table(&report);
    }
    Ok(EXIT_OK)
}

/// One rank's compute time per step, from exactly one of the three ways to give it.
fn compute_seconds(args: &PlanArgs, batch_per_rank: u32, step_flops: f64) -> Result<f64, Failure> {
    match (args.step_seconds, &args.step_json, args.device_tflops) {
        (Some(s), None, None) => Ok(positive("--step-seconds", Some(s))?.unwrap_or(s)),
        (None, Some(path), None) => {
            let f: StepFigures = read_json("--step-json", path)?;
            if f.batch == 0 || !(f.seconds_per_step > 0.0) {
                return Err(usage(format!(
                    "--step-json {}: no positive batch and step time",
                    path.display()
                )));
            }
            Ok(f.seconds_per_step * f64::from(batch_per_rank) / f64::from(f.batch))
        }
        (None, None, Some(tflops)) => {
            let tflops = positive("--device-tflops", Some(tflops))?.unwrap_or(tflops);
            Ok(step_flops / (tflops * 1e12))
        }
        _ => Err(usage(
            "give one of --step-seconds S, --step-json FILE (from `bench step --json`) or --device-tflops T",
        )),
    }
}

/// Steps per epoch from the sampler `train` builds, and bytes per node from the plan `stage` runs.
fn layout_facts(
    settings: &Settings,
    sources: &PlanSources,
    layout: Layout,
    stand_in: &std::collections::HashMap<u32, u64>,
) -> Result<LayoutFacts, Failure> {
    let node_of_rank: Vec<usize> = (0..layout.ranks()).map(|r| r / layout.gpus_per_node).collect();
    let sampler_layout = SamplerLayout {
        rank: 0,
        size: layout.ranks(),
        node: 0,
        nodes: layout.nodes,
        local_rank: 0,
        local_size: layout.gpus_per_node,
    };
    let sampler = settings
        .train_sampler(&sources.train, sampler_layout)
        .map_err(|e| usage(e.to_string()))?;
    let plan = sources
        .plan(settings, &node_of_rank)
        .map_err(|e| usage(e.to_string()))?;
    let bytes = |s: &crate::stage::plan::PlannedShard| s.bytes + stand_in.get(&s.id).copied().unwrap_or(0);
    let node_bytes: Vec<u64> = plan
        .nodes
        .iter()
        .map(|n| n.shards.iter().map(bytes).sum())
        .collect();
    Ok(LayoutFacts {
        steps_per_epoch: sampler.steps_per_epoch(),
        max_node_bytes: node_bytes.iter().copied().max().unwrap_or(0),
        total_bytes: node_bytes.iter().sum(),
        first_shard_bytes: plan
            .nodes
            .iter()
            .filter_map(|n| n.shards.first().map(bytes))
            .max()
            .unwrap_or(0),
    })
}

/// Shards whose series have no pixel data (`catalog synth` writes tables only, for planning and
/// benchmarks at archive scale), with the int16 pixel bytes their series tables describe.
fn metadata_only_pixel_bytes(catalog: &Path) -> Result<std::collections::HashMap<u32, u64>, Failure> {
    use crate::catalog::columns::Level;
    let cat = crate::catalog::view::Catalog::open(catalog).map_err(usage)?;
    let col = |name| cat.col_u32(Level::Series, name).map_err(usage);
    let (shard, rows, cols, slices) = (col("shard")?, col("rows")?, col("cols")?, col("n_slices")?);
    let length = cat.col_u64(Level::Series, "data_length").map_err(usage)?;
    let mut stand_in = std::collections::HashMap::new();
    for i in 0..shard.len() {
        if length[i] == 0 {
            *stand_in.entry(shard[i]).or_insert(0) += 2 * rows[i] as u64 * cols[i] as u64 * slices[i] as u64;
        }
    }
    Ok(stand_in)
}

fn print_table(r: &PlanReport) {
    println!(
        "{:>6} {:>5} {:>9} {:>9} {:>9} {:>6} {:>6} {:>10} {:>12} {:>9} {:>5}",
        "ranks",
        "nodes",
        "step s",
        "exposed",
        "img/s",
        "weak",
        "strong",
        "epoch min",
        "stage B/node",
        "stage h",
        "fits"
    );
    for row in &r.rows {
        let hours = |s: Option<f64>| s.map_or("-".to_string(), |s| format!("{:.2}", s / 3600.0));
        println!(
            "{:>6} {:>5} {:>9.4} {:>9.4} {:>9.1} {:>6.3} {:>6.3} {:>10.1} {:>12} {:>9} {:>5}",
            row.ranks,
            row.nodes,
            row.step.step_s,
            row.step.exposed_s,
            row.images_per_s,
            row.weak_efficiency,
            row.strong_efficiency,
            row.epoch_s / 60.0,
            row.stage_bytes_per_node,
            hours(row.stage_s),
            row.fits_nvme.map_or("-", |f| if f { "yes" } else { "NO" })
        );
    }
    println!("assumptions:");
    for a in &r.assumptions {
        println!("  - {a}");
    }
    for w in &r.warnings {
        println!("warning: {w}");
    }
}
