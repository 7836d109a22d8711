//! medtrain: HPC-native, data-parallel CNN training for medical imaging.

pub mod cli;
pub mod deid;
pub mod dicom;
pub mod pack;
