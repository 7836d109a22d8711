//! medtrain: HPC-native, data-parallel CNN training for medical imaging.

pub mod backend;
pub mod catalog;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod data;
pub mod deid;
pub mod dicom;
pub mod dist;
pub mod doctor;
pub mod exit;
pub mod explain;
pub mod fsx;
pub mod h5text;
pub mod logging;
pub mod nn;
pub mod optim;
pub mod pack;
pub mod pacs;
pub mod phantom;
pub mod plan;
pub mod remedy;
pub mod runtime;
pub mod settings;
pub mod stage;
pub mod train;
