//! `train`, `eval` and `predict`: the data-parallel training loop over MPI ranks, metrics reduced
//! across ranks, the brightest-lung-voxel baseline, curves and reports.

pub mod baseline;
pub mod cli;
pub mod detect;
pub mod evaluate;
pub mod faults;
pub mod figures;
mod hashes;
pub mod metrics;
pub mod regression;
pub mod run;
pub mod segdicom;
pub mod segeval;
pub mod segloss;
pub mod segmetrics;
pub mod segpredict;
pub mod signals;
pub mod sliding;
mod staging;
mod survival;
pub mod tensorboard;
pub mod watchdog;
