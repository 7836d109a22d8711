//! `pack`: DICOM series → de-identified, memory-mappable HDF5 shards.
//!
//! A pack directory holds `shard-<rank>-<seq>.h5` files (each with a `.blake3` checksum beside it),
//! `index.json` (the committed shards; readers trust nothing else), `quarantine.json` and
//! `pack-report.json`. See `tables.rs` for the columns and `shard.rs` for the layout.

pub mod index;
pub mod inspect;
pub mod quarantine;
pub mod reader;
pub mod run;
pub mod shard;
pub mod tables;
pub mod voxels;
