//! DICOM input: opening files and decoding their pixel data into the stored values pydicom reports.

pub mod color;
pub mod decode;
pub mod frames;
pub mod jpeg;
pub mod jpeg12;
pub mod modality;
pub mod open;
pub mod rle;
