//! `medtrain phantom`: the synthetic screening cohort from the `[phantom]` settings and flags.

use super::PhantomConfig;
use crate::config::Config;
use crate::exit::{usage, Failure, EXIT_OK};
use std::path::PathBuf;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cohort {
    Lung,
    Achilles,
}

#[derive(clap::Args, Debug)]
pub struct PhantomArgs {
    /// Output directory (dicom/ and truth/ are written below it).
    #[arg(long)]
    pub out: PathBuf,
    /// Settings file; its [phantom] table holds seed, patients, size, slices, slice_thickness_mm, radiographs.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Random seed (the cohort is a pure function of its settings).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Number of patients.
    #[arg(long)]
    pub patients: Option<u32>,
    /// Rows and columns of each CT slice.
    #[arg(long)]
    pub size: Option<u32>,
    /// Slices per CT series.
    #[arg(long)]
    pub slices: Option<u32>,
    /// Leave out the chest radiographs.
    #[arg(long)]
    pub no_radiographs: bool,
    /// Which cohort: `lung` (low-dose chest CT and radiographs, nodules, death) or `achilles`
    /// (tendon ultrasound and sagittal MR, healing grade 1–7, hand-crafted features; only the seed
    /// and the number of patients apply).
    #[arg(long, value_enum, default_value_t = Cohort::Lung)]
    pub cohort: Cohort,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: PhantomArgs) -> Result<i32, Failure> {
    let config = Config::load(args.config.as_deref()).map_err(usage)?;
    let mut cfg: PhantomConfig = match config.phantom {
        Some(table) => table
            .try_into()
            .map_err(|e| usage(format!("config [phantom]: {e}")))?,
        None => PhantomConfig::default(),
    };
    cfg.seed = args.seed.unwrap_or(cfg.seed);
    cfg.patients = args.patients.unwrap_or(cfg.patients);
    cfg.size = args.size.unwrap_or(cfg.size);
    cfg.slices = args.slices.unwrap_or(cfg.slices);
    cfg.radiographs &= !args.no_radiographs;
    let summary = match args.cohort {
        Cohort::Lung => crate::phantom::generate(&cfg, &args.out)?,
        Cohort::Achilles => crate::phantom::achilles::generate(&cfg, &args.out)?,
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&summary).expect("serialisable")
        );
    } else {
        println!(
            "phantom: {} patients, {} series, {} files ({:.1} MB) in {}; ground truth in {}",
            summary.patients,
            summary.series,
            summary.files,
            summary.bytes as f64 / 1e6,
            summary.dicom_dir.display(),
            summary.truth_dir.display()
        );
    }
    Ok(EXIT_OK)
}
