//! `pack`: DICOM series → de-identified, memory-mappable HDF5 shards.
//!
//! A pack directory holds `shard-<rank>-<seq>.h5` files (each with a `.blake3` checksum beside it),
//! `index.json` (the committed shards; readers trust nothing else), `quarantine.json` and
//! `pack-report.json`. While several MPI ranks pack, each records its committed shards in its own
//! `journal-<rank>.json`, folded into `index.json` by rank 0 (see `journal.rs`, `ranks.rs`).
//! See `tables.rs` for the columns, `format.rs` for the format's constants and attributes and `shard.rs`
//! for the layout.

pub mod cli;
pub mod format;
pub mod index;
pub mod inspect;
pub mod journal;
pub mod masks;
pub mod quarantine;
pub mod ranks;
pub mod reader;
pub mod run;
pub mod shard;
pub mod tables;
mod ultrasound;
pub mod voxels;
