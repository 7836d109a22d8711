//! DICOM input: headers, series assembly and geometry, pixel decoding and modality transforms; and
//! the data-set builder and Part 10 writer (`build`) of what medtrain writes.

pub mod build;
pub mod color;
pub mod decode;
pub mod frames;
pub mod guard;
pub mod header;
pub mod jpeg;
pub mod jpeg12;
pub mod modality;
pub mod open;
pub mod read;
pub mod rle;
pub mod series;
