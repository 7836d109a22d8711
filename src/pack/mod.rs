//! `pack`: DICOM series → de-identified, memory-mappable HDF5 shards.

pub mod tables;
