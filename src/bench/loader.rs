//! `medtrain bench loader`: input-pipeline throughput alone, without a model: every rank reads its
//! contiguous share of a split through the training loader (memory-mapped shards, intensity pipeline,
//! geometry, batches) for some epochs, and the job reports images per second summed over ranks, per
//! epoch. What a training step waits for when the device is faster than the data.

use crate::catalog::split::Manifest;
use crate::config::Config;
use crate::data::{Dataset, Loader};
use crate::exit::{usage, Failure, EXIT_OK};
use crate::runtime::{init_world, set_threads};
use crate::settings::Settings;
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct LoaderBenchArgs {
    /// CATALOG MANIFEST
    #[arg(num_args = 2, required = true)]
    pub inputs: Vec<PathBuf>,
    /// Settings file: its [data] table (mode, size, fit, windows, intensity) and `[train]
    /// batch_size` and `threads` apply.
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[arg(long, default_value = "train")]
    pub split: String,
    /// Timed epochs (the first is also reported: it pays for page-cache misses).
    #[arg(long, default_value_t = 3)]
    pub epochs: usize,
    /// Apply the training augmentation ([data.augment]), as a training epoch does.
    #[arg(long)]
    pub augment: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize, Debug)]
pub struct LoaderBenchReport {
    pub ranks: usize,
    pub threads_per_rank: usize,
    pub samples: usize,
    pub sample_shape: Vec<u32>,
    pub batch_size: u32,
    /// Images per second over all ranks, per epoch: samples / the slowest rank's time.
    pub images_per_second: Vec<f64>,
    /// Checksum of every value loaded in the last epoch (sum over ranks), to compare runs.
    pub checksum: f64,
}

pub fn run(args: LoaderBenchArgs) -> Result<i32, Failure> {
    let [catalog, manifest_path] = args.inputs.as_slice() else {
        return Err(usage("bench loader takes two inputs: CATALOG MANIFEST"));
    };
    let config = Config::load(args.config.as_deref()).map_err(usage)?;
    let settings = Settings::from_config(&config).map_err(usage)?;
    let manifest = Manifest::load(manifest_path).map_err(usage)?;
    let world = init_world()?;
    set_threads(&world, settings.train.threads);
    let ds = Dataset::open(catalog, &manifest, &args.split, &settings.data)
        .map_err(|e| Failure::Job(e.to_string()))?;
    let ds = Arc::new(ds);
    let (r, size, len) = (world.rank(), world.size(), ds.len());
    let mine: Vec<usize> = (r * len / size..(r + 1) * len / size).collect();
    let batch = settings.train.batch_size as usize;
    let mut rates = Vec::new();
    let mut checksum = 0.0;
    for epoch in 0..args.epochs.max(1) {
        world.barrier();
        let start = Instant::now();
        let augment = args.augment.then_some((settings.train.seed, epoch as u64));
        let mut loader = Loader::new(ds.clone(), mine.clone(), batch, 0, augment, 2);
        let mut sum = 0.0f64;
        while let Some(next) = loader.next() {
            let b = next.map_err(|e| Failure::Job(e.to_string()))?;
            let per = b.input.len() / b.samples.len().max(1);
            sum += b.input[..b.valid * per].iter().map(|&v| v as f64).sum::<f64>();
            loader.recycle(b);
        }
        let seconds = start.elapsed().as_secs_f64();
        let mut total = [sum];
        world.allreduce_sum_f64(&mut total);
        // The slowest rank sets the pace.
        let slowest = world
            .allgather_f32(&[seconds as f32])
            .into_iter()
            .fold(0.0f32, f32::max) as f64;
        rates.push(len as f64 / slowest);
        checksum = total[0];
    }
    let report = LoaderBenchReport {
        ranks: size,
        threads_per_rank: rayon::current_num_threads(),
        samples: len,
        sample_shape: std::iter::once(ds.channels()).chain(ds.extent()).collect(),
        batch_size: settings.train.batch_size,
        images_per_second: rates,
        checksum,
    };
    if r == 0 {
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report).expect("serialise"));
        } else {
            let rates: Vec<String> = report
                .images_per_second
                .iter()
                .map(|v| format!("{v:.1}"))
                .collect();
            println!(
                "bench loader: {} samples of {:?} on {} rank(s) × {} thread(s): {} images/s per epoch",
                report.samples,
                report.sample_shape,
                report.ranks,
                report.threads_per_rank,
                rates.join(", ")
            );
        }
    }
    Ok(EXIT_OK)
}
