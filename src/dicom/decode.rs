//! Interim pixel decoding through dicom-pixeldata (replaced by the conformance-tested decoder).

use dicom_object::DefaultDicomObject;
use dicom_pixeldata::PixelDecoder;
use std::path::Path;

pub enum PixelBuffer {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    F32(Vec<f32>),
    F64(Vec<f64>),
}

pub struct DecodedPixels {
    pub frames: u32,
    pub rows: u32,
    pub cols: u32,
    pub samples_per_pixel: u16,
    pub photometric: String,
    pub bits_stored: u16,
    pub pixels: PixelBuffer,
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("cannot open: {0}")]
    Open(String),
    #[error("cannot decode pixel data: {0}")]
    Decode(String),
}

pub fn open_dicom(path: &Path) -> Result<DefaultDicomObject, DecodeError> {
    dicom_object::open_file(path).map_err(|e| DecodeError::Open(e.to_string()))
}

pub fn decode_pixels(obj: &DefaultDicomObject) -> Result<DecodedPixels, DecodeError> {
    let d = obj
        .decode_pixel_data()
        .map_err(|e| DecodeError::Decode(e.to_string()))?;
    let bytes = d.data();
    let signed = d.pixel_representation() == dicom_pixeldata::PixelRepresentation::Signed;
    let pixels = match (d.bits_allocated(), signed) {
        (8, false) => PixelBuffer::U8(bytes.to_vec()),
        (8, true) => PixelBuffer::I8(bytes.iter().map(|&b| b as i8).collect()),
        (16, false) => PixelBuffer::U16(
            bytes
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect(),
        ),
        (16, true) => PixelBuffer::I16(
            bytes
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]))
                .collect(),
        ),
        (b, _) => return Err(DecodeError::Decode(format!("BitsAllocated {b} not supported"))),
    };
    Ok(DecodedPixels {
        frames: d.number_of_frames(),
        rows: d.rows(),
        cols: d.columns(),
        samples_per_pixel: d.samples_per_pixel(),
        photometric: d.photometric_interpretation().as_str().to_string(),
        bits_stored: d.bits_stored(),
        pixels,
    })
}

impl PixelBuffer {
    pub fn len(&self) -> usize {
        match self {
            PixelBuffer::U8(v) => v.len(),
            PixelBuffer::I8(v) => v.len(),
            PixelBuffer::U16(v) => v.len(),
            PixelBuffer::I16(v) => v.len(),
            PixelBuffer::U32(v) => v.len(),
            PixelBuffer::I32(v) => v.len(),
            PixelBuffer::F32(v) => v.len(),
            PixelBuffer::F64(v) => v.len(),
        }
    }
}
