//! `data`: the training input path. A manifest split becomes indexed samples; each sample's HU are
//! read in place from memory-mapped shards, resampled through one affine (spacing, crop, seeded
//! augmentation), windowed to f32 and batched by a background loader with a bounded prefetch queue.

pub mod config;
pub mod dataset;
pub mod intensity;
pub mod loader;
pub mod mapback;
pub mod masks;
pub mod patches;
pub mod sampler;
pub mod targets;
pub mod transform;

pub use config::{AugmentConfig, DataConfig, SampleMode};
pub use dataset::{Dataset, SampleMeta, SampleTransform, SeriesVolume};
pub use intensity::IntensityConfig;
pub use loader::{Batch, Loader};
pub use targets::TabularStats;

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("data config `{key}`: {reason}")]
    Config { key: &'static str, reason: String },
    #[error(transparent)]
    Catalog(#[from] crate::catalog::CatalogError),
    #[error("manifest has no split {name:?} (it has {available:?})")]
    Split { name: String, available: Vec<String> },
    #[error("manifest: {0}")]
    Manifest(String),
    #[error("shard {path}: {reason}")]
    Shard { path: PathBuf, reason: String },
    #[error("series {series}: {reason}")]
    Unsupported { series: String, reason: String },
    #[error("label {name}: {reason}")]
    Label { name: String, reason: String },
    #[error("sample {index} of {len}: buffer of {buffer} floats, a sample needs {needed}")]
    Sample {
        index: usize,
        len: usize,
        buffer: usize,
        needed: usize,
    },
}

/// Augmentation seed of one sample in one epoch of a run (SplitMix64 finaliser over the three):
/// independent of rank, batch and order, so a resumed or re-sharded run draws the same transforms.
pub fn sample_seed(run_seed: u64, epoch: u64, sample: usize) -> u64 {
    let mut x = run_seed;
    for v in [epoch, sample as u64] {
        x = splitmix(x ^ splitmix(v.wrapping_add(0x9E37_79B9_7F4A_7C15)));
    }
    x
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The samples rank `rank` of `size` scores when a whole split is evaluated: a contiguous share, so
/// that a rank reads only a run of the split's shards (samples follow the catalog's shard order).
/// Evaluation, its baselines and the staging plan all use this one rule.
pub fn eval_share(rank: usize, size: usize, len: usize) -> std::ops::Range<usize> {
    let size = size.max(1);
    rank * len / size..(rank + 1) * len / size
}

#[cfg(test)]
mod tests {
    use super::sample_seed;
    use std::collections::HashSet;

    #[test]
    fn sample_seeds_are_pure_and_distinct() {
        assert_eq!(sample_seed(1, 2, 3), sample_seed(1, 2, 3));
        let mut seen = HashSet::new();
        for run in 0..4 {
            for epoch in 0..8 {
                for sample in 0..64 {
                    assert!(seen.insert(sample_seed(run, epoch, sample)));
                }
            }
        }
        assert_ne!(sample_seed(0, 1, 2), sample_seed(0, 2, 1));
    }
}
