//! `medtrain catalog …`: build, labels import/list, query, split. Exit codes follow `cli.rs`:
//! 0 ok, 1 the job failed (e.g. a label import with rejected lines), 2 usage or configuration.

use super::build::build;
use super::columns::Level;
use super::labels::{import, EventWithin, ImportSpec, LabelError, LabelSpec};
use super::query::{run as run_query, QueryFailure, Request};
use super::split::{plan, SplitSpec};
use super::state::LabelKind;
use super::view::Catalog;
use crate::deid::SiteKey;
use crate::exit::{usage, Failure, EXIT_OK};
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct CatalogArgs {
    #[command(subcommand)]
    pub command: CatalogCommand,
}

#[derive(Subcommand, Debug)]
pub enum CatalogCommand {
    /// Build or extend a catalog from pack directories or shard files.
    Build(BuildArgs),
    /// Label sets: import from CSV, list.
    #[command(subcommand)]
    Labels(LabelsCommand),
    /// Count, group or list patients, series or slices matching a filter.
    Query(QueryArgs),
    /// Patient-level, stratified, seeded train/val/test split written as a manifest.
    Split(SplitArgs),
    /// Write a synthetic metadata-only cohort (shards + label CSVs) for benchmarks.
    Synth(SynthArgs),
    /// Time the benchmark's planning queries on a catalog (warm, in process).
    Bench(BenchArgs),
}

#[derive(Args, Debug)]
pub struct SynthArgs {
    /// Pack directory to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Site key file (created if missing).
    #[arg(long)]
    pub key: PathBuf,
    #[arg(long, default_value_t = 90_000)]
    pub series: usize,
    /// Mean slices per series (uniform in 0.75..1.25 of it).
    #[arg(long, default_value_t = 200)]
    pub slices: usize,
    #[arg(long, default_value_t = 30)]
    pub series_per_shard: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    pub catalog: PathBuf,
    /// Slice-level boolean label used by the queries.
    #[arg(long, default_value = "inst.nodule")]
    pub label: String,
    #[arg(long, default_value_t = 30)]
    pub repeat: usize,
}

#[derive(Args, Debug)]
pub struct BuildArgs {
    /// Pack directories (with index.json) or shard files.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Catalog directory (created, or extended with shards it does not hold yet).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum LabelsCommand {
    /// Import one CSV as a new version of a label set.
    Import(ImportArgs),
    /// Import pixel labels (label maps named by a mapping CSV) as a new version of a mask label set.
    Masks(MasksArgs),
    /// List the label sets of a catalog.
    List(ListArgs),
}

#[derive(Args, Debug)]
pub struct MasksArgs {
    /// NIfTI: the mapping CSV (a column naming each mask file, relative to the CSV, and a
    /// SeriesInstanceUID column; a PatientID column, if there, is checked too). LIDC: XML files or
    /// directories of them. RTSTRUCT: RT Structure Set files or directories of them (`*.dcm`).
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Catalog directory to add the mask label set to.
    #[arg(long)]
    pub out: PathBuf,
    /// Label set name (letters, digits, _).
    #[arg(long)]
    pub name: String,
    /// Version (default: newest + 1).
    #[arg(long)]
    pub version: Option<u32>,
    /// Mask file format: NIfTI label maps, LIDC-IDRI XML, DICOM RT Structure Sets or DICOM SEG.
    #[arg(long, default_value = "nifti", value_parser = ["nifti", "lidc", "rtstruct", "seg"])]
    pub format: String,
    /// LIDC: readers who must outline a voxel for the consensus (each reader's own outline is kept).
    #[arg(long, default_value_t = 2)]
    pub agreement: u32,
    /// Header of the column naming the mask files.
    #[arg(long, default_value = "File")]
    pub file_column: String,
    /// Site key file (the one the packs were made with).
    #[arg(long)]
    pub key: Option<PathBuf>,
    #[arg(long)]
    pub patient_column: Option<String>,
    #[arg(long)]
    pub series_column: Option<String>,
    /// TOML with a [pack] key.
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// CSV file with a header row.
    pub csv: PathBuf,
    /// Catalog directory to add the label set to.
    #[arg(long)]
    pub out: PathBuf,
    /// Label set name (letters, digits, _).
    #[arg(long)]
    pub name: String,
    /// Version (default: newest + 1).
    #[arg(long)]
    pub version: Option<u32>,
    /// Site key file (the one the packs were made with).
    #[arg(long)]
    pub key: Option<PathBuf>,
    #[arg(long)]
    pub patient_column: Option<String>,
    #[arg(long)]
    pub series_column: Option<String>,
    #[arg(long)]
    pub sop_column: Option<String>,
    #[arg(long)]
    pub instance_column: Option<String>,
    /// A label column: NAME=COLUMN[:bool|int|float|category] or COLUMN[:type] (repeatable;
    /// default: every non-key column, types inferred).
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// CSV columns that are not labels (repeatable).
    #[arg(long)]
    pub ignore: Vec<String>,
    /// The instance column holds 1-based ordinals in ascending slice position, not InstanceNumber.
    #[arg(long)]
    pub by_position: bool,
    /// Derived label NAME=EVENT,TIME,DAYS: event within DAYS, unknown when censored earlier.
    #[arg(long)]
    pub event_within: Vec<String>,
    /// TOML with a [catalog.labels] table (flags override it) and [pack] key.
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    pub catalog: PathBuf,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct QueryArgs {
    pub catalog: PathBuf,
    /// Filter (see the language in `catalog::query`); empty selects everything.
    #[arg(default_value = "")]
    pub filter: String,
    /// Output level: patients, series or slices.
    #[arg(long, default_value = "slices")]
    pub level: String,
    /// Group by these columns (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub group_by: Vec<String>,
    /// Mean of these numeric columns per group (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub mean: Vec<String>,
    /// Keep the N largest groups.
    #[arg(long)]
    pub top: Option<usize>,
    /// List matching rows (optionally with these comma-separated columns).
    #[arg(long, num_args = 0..=1, default_missing_value = "", value_delimiter = ',')]
    pub list: Option<Vec<String>>,
    #[arg(long)]
    pub limit: Option<usize>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct SplitArgs {
    pub catalog: PathBuf,
    #[arg(default_value = "")]
    pub filter: String,
    /// Manifest file to write (HDF5).
    #[arg(long)]
    pub out: PathBuf,
    /// Samples: slices or series.
    #[arg(long, default_value = "slices")]
    pub level: String,
    /// NAME=RATIO,... e.g. train=0.8,val=0.1,test=0.1.
    #[arg(long, default_value = "train=0.8,val=0.1,test=0.1")]
    pub ratios: String,
    /// Patient-level label (values are strata) or a filter (patients matching it vs the others).
    #[arg(long)]
    pub stratify: Option<String>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: CatalogArgs) -> Result<i32, Failure> {
    match args.command {
        CatalogCommand::Build(a) => run_build(a),
        CatalogCommand::Labels(LabelsCommand::Import(a)) => run_import(a),
        CatalogCommand::Labels(LabelsCommand::Masks(a)) => run_masks(a),
        CatalogCommand::Labels(LabelsCommand::List(a)) => run_list(a),
        CatalogCommand::Query(a) => run_query_cmd(a),
        CatalogCommand::Split(a) => run_split(a),
        CatalogCommand::Synth(a) => run_synth(a),
        CatalogCommand::Bench(a) => run_bench_cmd(a),
    }
}

fn print_json(value: &impl serde::Serialize) {
    println!("{}", serde_json::to_string_pretty(value).expect("serialisable"));
}

fn run_build(a: BuildArgs) -> Result<i32, Failure> {
    for input in &a.inputs {
        if !input.exists() {
            return Err(usage(format!("input {} does not exist", input.display())));
        }
    }
    let report = build(&a.inputs, &a.out)?;
    if a.json {
        print_json(&report);
    } else {
        println!(
            "catalog {} generation {}: {} patients, {} series, {} slices ({} shards added, {} already there) in {:.2} s",
            a.out.display(),
            report.generation,
            report.patients,
            report.series,
            report.slices,
            report.shards_added,
            report.shards_already_catalogued,
            report.seconds
        );
    }
    Ok(EXIT_OK)
}

/// `[catalog.labels]` in a config file.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LabelsConfig {
    patient_column: Option<String>,
    series_column: Option<String>,
    sop_column: Option<String>,
    instance_column: Option<String>,
    by_position: Option<bool>,
    ignore: Vec<String>,
    column: Vec<ColumnConfig>,
    event_within: Vec<EventConfig>,
}

/// `[[catalog.labels.column]]`: one label column.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnConfig {
    name: String,
    column: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

/// `[[catalog.labels.event_within]]`: one derived "event within N days" label.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EventConfig {
    name: String,
    event: String,
    time: String,
    days: f64,
}

fn load_config(path: &Path) -> Result<(LabelsConfig, Option<PathBuf>), Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| usage(format!("cannot read config {}: {e}", path.display())))?;
    let value: toml::Value =
        toml::from_str(&text).map_err(|e| usage(format!("config {}: {e}", path.display())))?;
    let key = value
        .get("pack")
        .and_then(|p| p.get("key"))
        .and_then(|k| k.as_str())
        .map(PathBuf::from);
    let labels = match value.get("catalog").and_then(|c| c.get("labels")) {
        Some(v) => v
            .clone()
            .try_into()
            .map_err(|e| usage(format!("config {}: [catalog.labels]: {e}", path.display())))?,
        None => LabelsConfig::default(),
    };
    Ok((labels, key))
}

fn parse_kind(text: &str) -> Result<LabelKind, Failure> {
    match text {
        "bool" => Ok(LabelKind::Bool),
        "int" => Ok(LabelKind::Int),
        "float" => Ok(LabelKind::Float),
        "category" => Ok(LabelKind::Category),
        other => Err(usage(format!(
            "label type {other:?}: use bool, int, float or category"
        ))),
    }
}

/// `NAME=COLUMN[:type]` or `COLUMN[:type]`.
fn parse_label(text: &str) -> Result<LabelSpec, Failure> {
    let (body, kind) = match text.rsplit_once(':') {
        Some((b, k)) => (b, Some(parse_kind(k)?)),
        None => (text, None),
    };
    let (name, column) = match body.split_once('=') {
        Some((n, c)) => (n.to_string(), c.to_string()),
        None => (super::labels::label_name(body), body.to_string()),
    };
    Ok(LabelSpec { name, column, kind })
}

fn parse_event(text: &str) -> Result<EventWithin, Failure> {
    let bad = || usage(format!("--event-within {text:?}: expected NAME=EVENT,TIME,DAYS"));
    let (name, rest) = text.split_once('=').ok_or_else(bad)?;
    let parts: Vec<&str> = rest.split(',').collect();
    let [event, time, days] = parts.as_slice() else {
        return Err(bad());
    };
    Ok(EventWithin {
        name: name.into(),
        event: event.to_string(),
        time: time.to_string(),
        days: days.parse().map_err(|_| bad())?,
    })
}

fn run_import(a: ImportArgs) -> Result<i32, Failure> {
    let (config, config_key) = match &a.config {
        Some(p) => load_config(p)?,
        None => (LabelsConfig::default(), None),
    };
    let key_path = a
        .key
        .or(config_key)
        .ok_or_else(|| usage("labels import needs the site key the packs were made with: --key FILE"))?;
    let key = SiteKey::load(&key_path).map_err(usage)?;
    let mut spec = ImportSpec {
        csv: a.csv,
        name: a.name,
        version: a.version,
        by_position: a.by_position || config.by_position.unwrap_or(false),
        ignore: [config.ignore, a.ignore].concat(),
        ..ImportSpec::default()
    };
    let k = &mut spec.keys;
    for (flag, conf, slot) in [
        (a.patient_column, config.patient_column, &mut k.patient),
        (a.series_column, config.series_column, &mut k.series),
        (a.sop_column, config.sop_column, &mut k.sop),
        (a.instance_column, config.instance_column, &mut k.instance),
    ] {
        if let Some(v) = flag.or(conf) {
            *slot = v;
        }
    }
    for c in config.column {
        spec.labels.push(LabelSpec {
            column: c.column.unwrap_or_else(|| c.name.clone()),
            name: c.name,
            kind: c.kind.as_deref().map(parse_kind).transpose()?,
        });
    }
    for l in &a.labels {
        spec.labels.push(parse_label(l)?);
    }
    for e in config.event_within {
        spec.event_within.push(EventWithin {
            name: e.name,
            event: e.event,
            time: e.time,
            days: e.days,
        });
    }
    for e in &a.event_within {
        spec.event_within.push(parse_event(e)?);
    }
    let report = import(&a.out, &key, &spec).map_err(label_failure)?;
    if a.json {
        print_json(&report);
    } else {
        println!(
            "label set {} v{} ({:?} level): {} records labelled {} rows; columns {}",
            report.name,
            report.version,
            report.level,
            report.records,
            report.rows_labelled,
            report.columns.join(", ")
        );
    }
    Ok(EXIT_OK)
}

/// A label import's error as an exit: usage (2) for a bad request or the wrong site key, else a
/// failed job (1).
fn label_failure(e: LabelError) -> Failure {
    match e {
        LabelError::Usage(m) => usage(m),
        LabelError::Catalog(super::CatalogError::Key(k)) => usage(k),
        other => Failure::Job(other.to_string()),
    }
}

fn run_masks(a: MasksArgs) -> Result<i32, Failure> {
    use super::labels::masks::{import_masks, MaskFormat, MaskImportSpec};
    let config_key = match &a.config {
        Some(p) => load_config(p)?.1,
        None => None,
    };
    let key_path = a
        .key
        .or(config_key)
        .ok_or_else(|| usage("labels masks needs the site key the packs were made with: --key FILE"))?;
    let key = SiteKey::load(&key_path).map_err(usage)?;
    if a.agreement == 0 {
        return Err(usage(
            "--agreement is at least 1 (a voxel needs one reader at least)",
        ));
    }
    let mut spec = MaskImportSpec {
        inputs: a.inputs,
        name: a.name,
        version: a.version,
        format: match a.format.as_str() {
            "lidc" => MaskFormat::Lidc,
            "rtstruct" => MaskFormat::Rtstruct,
            "seg" => MaskFormat::Seg,
            _ => MaskFormat::Nifti,
        },
        keys: Default::default(),
        file_column: a.file_column,
        agreement: a.agreement,
    };
    if let Some(p) = a.patient_column {
        spec.keys.patient = p;
    }
    if let Some(s) = a.series_column {
        spec.keys.series = s;
    }
    let report = import_masks(&a.out, &key, &spec).map_err(label_failure)?;
    if a.json {
        print_json(&report);
    } else {
        println!(
            "mask label set {} v{}: {} series, {} labelled voxels in {} mask shards; columns {}",
            report.name,
            report.version,
            report.series,
            report.labelled_voxels,
            report.mask_shards,
            report.columns.join(", ")
        );
    }
    Ok(EXIT_OK)
}

fn run_list(a: ListArgs) -> Result<i32, Failure> {
    let cat = Catalog::open(&a.catalog).map_err(usage)?;
    if a.json {
        print_json(&cat.state.label_sets);
    } else {
        for l in &cat.state.label_sets {
            let cols: Vec<String> = l
                .columns
                .iter()
                .map(|c| format!("{}:{:?}", c.name, c.kind).to_lowercase())
                .collect();
            println!(
                "{}@{} ({:?}, {} rows): {}",
                l.name,
                l.version,
                l.level,
                l.rows,
                cols.join(", ")
            );
        }
    }
    Ok(EXIT_OK)
}

fn level(text: &str) -> Result<Level, Failure> {
    Level::parse(text).ok_or_else(|| usage(format!("--level {text:?}: use patients, series or slices")))
}

fn query_failure(e: QueryFailure) -> Failure {
    match e {
        QueryFailure::Query(m) => Failure::Usage(m),
        QueryFailure::Catalog(c) => Failure::Job(c.to_string()),
    }
}

fn run_query_cmd(a: QueryArgs) -> Result<i32, Failure> {
    let cat = Catalog::open(&a.catalog).map_err(usage)?;
    let req = Request {
        filter: a.filter,
        level: level(&a.level)?,
        group_by: a.group_by,
        mean: a.mean,
        top: a.top,
        list: a.list.map(|l| l.into_iter().filter(|c| !c.is_empty()).collect()),
        limit: a.limit,
    };
    let answer = run_query(&cat, &req).map_err(query_failure)?;
    if a.json {
        print_json(&answer);
        return Ok(EXIT_OK);
    }
    println!("{} {}", answer.count, answer.level.group());
    if let Some(groups) = &answer.groups {
        let header: Vec<String> = req
            .group_by
            .iter()
            .cloned()
            .chain(["count".into()])
            .chain(req.mean.iter().map(|m| format!("mean({m})")))
            .collect();
        println!("{}", header.join("\t"));
        for g in groups {
            let cells: Vec<String> = g
                .key
                .iter()
                .map(|v| v.to_string())
                .chain([g.count.to_string()])
                .chain(
                    g.mean
                        .iter()
                        .map(|m| m.map_or("NULL".into(), |x| format!("{x:.6}"))),
                )
                .collect();
            println!("{}", cells.join("\t"));
        }
    }
    if let (Some(columns), Some(rows)) = (&answer.columns, &answer.rows) {
        println!("{}", columns.join("\t"));
        for r in rows {
            println!(
                "{}",
                r.iter().map(|v| v.to_string()).collect::<Vec<_>>().join("\t")
            );
        }
    }
    Ok(EXIT_OK)
}

fn parse_ratios(text: &str) -> Result<Vec<(String, f64)>, Failure> {
    text.split(',')
        .map(|part| {
            let (name, r) = part
                .split_once('=')
                .ok_or_else(|| usage(format!("--ratios {text:?}: expected NAME=RATIO,...")))?;
            let r: f64 = r
                .parse()
                .map_err(|_| usage(format!("--ratios: {r:?} is not a number")))?;
            Ok((name.trim().to_string(), r))
        })
        .collect()
}

fn run_split(a: SplitArgs) -> Result<i32, Failure> {
    let cat = Catalog::open(&a.catalog).map_err(usage)?;
    let spec = SplitSpec {
        filter: a.filter,
        level: level(&a.level)?,
        splits: parse_ratios(&a.ratios)?,
        stratify: a.stratify,
        seed: a.seed,
    };
    let manifest = plan(&cat, &spec).map_err(query_failure)?;
    manifest.write(&a.out)?;
    let summary: Vec<serde_json::Value> = manifest
        .splits
        .iter()
        .map(|s| serde_json::json!({"split": s.name, "patients": s.patients.len(), "samples": s.samples(), "runs": s.runs_start.len()}))
        .collect();
    if a.json {
        print_json(&serde_json::json!({"manifest": a.out, "meta": manifest.meta, "splits": summary}));
    } else {
        for s in &manifest.splits {
            println!(
                "{}: {} patients, {} {}",
                s.name,
                s.patients.len(),
                s.samples(),
                spec.level.group()
            );
        }
        println!(
            "manifest {} (catalog hash {})",
            a.out.display(),
            manifest.meta.catalog_hash
        );
    }
    Ok(EXIT_OK)
}

fn run_synth(a: SynthArgs) -> Result<i32, Failure> {
    let key = SiteKey::load_or_create(&a.key, true).map_err(usage)?;
    if a.series == 0 || a.slices == 0 || a.series_per_shard == 0 {
        return Err(usage(
            "--series, --slices and --series-per-shard must be positive",
        ));
    }
    let spec = super::synth::SynthSpec {
        series: a.series,
        mean_slices: a.slices,
        series_per_shard: a.series_per_shard,
        seed: a.seed,
    };
    let report = super::synth::generate(&a.out, &key, &spec)?;
    print_json(&report);
    Ok(EXIT_OK)
}

fn run_bench_cmd(a: BenchArgs) -> Result<i32, Failure> {
    let start = std::time::Instant::now();
    let cat = Catalog::open(&a.catalog).map_err(usage)?;
    let open_ms = start.elapsed().as_secs_f64() * 1e3;
    let timings = super::bench::run_bench(&cat, &a.label, a.repeat).map_err(query_failure)?;
    print_json(&serde_json::json!({
        "engine": "medtrain",
        "slices": cat.state.slices,
        "open_ms": open_ms,
        "queries": timings,
        "peak_rss_mib": super::bench::peak_rss_mib(),
    }));
    Ok(EXIT_OK)
}
