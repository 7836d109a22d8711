//! DICOM input: headers, series assembly and geometry, pixel decoding and modality transforms.

pub mod decode;
pub mod guard;
pub mod header;
pub mod modality;
pub mod read;
pub mod series;
