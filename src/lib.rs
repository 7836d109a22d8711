//! medtrain: HPC-native, data-parallel CNN training for medical imaging.
//!
//! # Module stack
//!
//! The modules form one stack, listed here from the bottom up. A module imports only from modules on
//! lower levels, never from its own level or above, so there is no import cycle between them;
//! `scripts/arch-check.sh` reads this list and enforces it in CI (a new module must be added here).
//!
//! 1. `exit`, `fsx`, `h5text`, `font`, `logging`, `remedy`, `config`: exit codes and `Failure`,
//!    durable writes, HDF5 text attributes, the bitmap font (burned into phantom images), logging,
//!    remedies, the config file; they import nothing from the crate.
//! 2. `deid`, `dicom`, `nifti`, `lidc`, `rtstruct`, `dist`, `chart`: pseudonyms, DICOM reading (and
//!    the writer of what we write), NIfTI label maps, LIDC-IDRI annotation XML, RT Structure Set
//!    contours, the MPI world (`pack` runs on it), report charts (PNG, SVG and their data).
//! 3. `pack`, `dicomseg`: DICOM series to shards; DICOM Segmentation objects (built on `dicom`'s
//!    writer).
//! 4. `catalog`: shard tables, labels, queries and splits.
//! 5. `data`: datasets, samplers and transforms over a catalog.
//! 6. `backend`: the CPU and CUDA backends, their kernels and parity harness.
//! 7. `nn`, `optim`, `runtime`: the network, optimizers, and where a job runs (device, backend
//!    agreed across ranks, MPI start and end).
//! 8. `checkpoint`, `settings`: checkpoints of a network and optimizer; the typed experiment
//!    settings (over data, nn and optim), which `stage` and `plan` read as well as `train`.
//! 9. `stage`: the staging plan and copier (train stages in the background, so stage is below it).
//! 10. `train`: training, evaluation, prediction, metrics, plots and reports.
//! 11. `explain`: Grad-CAM of a trained model (loads it through `train`).
//! 12. `bench`, `doctor`, `pacs`, `phantom`, `plan`: verbs over the layers below.
//! 13. `cli`, `config_reference`: the command line; it only parses and dispatches (and runs `pack`,
//!     which may pull from `pacs`). The config-file reference generated from every verb's settings
//!     (its test compares it with docs/src/config.md).
//!
//! Why this order: `dist` is low because packing runs across MPI ranks; `backend` needs nothing from
//! the data side, and the data side nothing from it, so either could be lower; `settings` sits above
//! `data`, `nn` and `optim` because it is made of their configs, and below `stage` and `plan`, which
//! must build the very sampler `train` builds.

pub mod backend;
pub mod bench;
pub mod catalog;
pub mod chart;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod config_reference;
pub mod data;
pub mod deid;
pub mod dicom;
pub mod dicomseg;
pub mod dist;
pub mod doctor;
pub mod exit;
pub mod explain;
pub mod font;
pub mod fsx;
pub mod h5text;
pub mod lidc;
pub mod logging;
pub mod nifti;
pub mod nn;
pub mod optim;
pub mod pack;
pub mod pacs;
pub mod phantom;
pub mod plan;
pub mod remedy;
pub mod rtstruct;
pub mod runtime;
pub mod settings;
pub mod stage;
pub mod train;
