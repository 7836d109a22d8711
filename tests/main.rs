//! The integration test crate: one binary, one module per area.

mod backend_cuda;
mod backend_gradcheck;
mod backend_reference;
mod backend_resnet;
mod backend_training;
mod catalog_common;
mod catalog_engine;
mod catalog_labels;
mod catalog_split;
mod catalog_update;
mod checkpoint;
mod common;
mod data;
mod decode_conformance;
mod demo;
mod dist;
mod explain;
mod explain_cuda;
mod faults;
mod intensity;
mod pack;
mod pacs;
mod phantom;
mod slurm;
mod stage;
mod train;
