//! Pixel decoding: turns the Pixel Data of an opened object into the stored values that pydicom 3's
//! default `ds.pixel_array` returns (same dtype, unused high bits corrected, planar → interleaved,
//! YBR_FULL(_422) → RGB), for every common transfer syntax. `pack` converts these values to HU; whatever
//! cannot be decoded is an error that names the transfer syntax and the reason, never a panic.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use dicom_core::header::HasLength;
use dicom_core::value::{PrimitiveValue, Value};
use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::DefaultDicomObject;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

use super::color;
use super::frames::frame_fragments;
use super::jpeg;
use super::rle;

pub use super::open::open_dicom;

/// Stored sample values, typed as pydicom types them.
#[derive(Debug, Clone, PartialEq)]
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

/// All frames of one object's pixel data, as pydicom 3 returns them by default.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedPixels {
    pub frames: u32,
    pub rows: u32,
    pub cols: u32,
    pub samples_per_pixel: u16,
    /// After decoding: YBR_* that pydicom converts to RGB is reported as "RGB".
    pub photometric: String,
    pub bits_stored: u16,
    /// (frames, rows, cols, samples) interleaved.
    pub pixels: PixelBuffer,
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("cannot read DICOM file {path}: {reason}; check that it is a DICOM file and not truncated")]
    Open { path: PathBuf, reason: String },
    #[error("{path}: {source}")]
    InFile {
        path: PathBuf,
        #[source]
        source: Box<DecodeError>,
    },
    #[error("no Pixel Data (7FE0,0010) in this object (transfer syntax {ts}): it is not an image; skip it")]
    NoPixelData { ts: String },
    #[error("attribute {attribute} is missing or invalid (transfer syntax {ts}): {reason}; the image cannot be interpreted without it")]
    Attribute {
        ts: String,
        attribute: &'static str,
        reason: String,
    },
    #[error("transfer syntax {ts} is not supported: {reason}; transcode the file (e.g. with dcmdjpeg or gdcmconv --raw) first")]
    UnsupportedTransferSyntax { ts: String, reason: String },
    #[error("cannot decode pixel data (transfer syntax {ts}, frame {frame}): {reason}")]
    Codec { ts: String, frame: u32, reason: String },
    #[error("pixel data holds {actual} bytes but the image attributes need {expected} (transfer syntax {ts}): the file is truncated or its Rows/Columns/Bits Allocated/Number of Frames are wrong")]
    Truncated {
        ts: String,
        expected: usize,
        actual: usize,
    },
    #[error("the pixel decoder panicked (transfer syntax {ts}): {reason}; the file is malformed in a way the decoder does not check, report it with the file")]
    Panic { ts: String, reason: String },
    #[error("invalid Modality LUT (transfer syntax {ts}): {reason}")]
    ModalityLut { ts: String, reason: String },
}

impl DecodeError {
    /// The message without the file's path, for reports that must not carry paths (folder names
    /// hold patient IDs); the report names the file by pseudonym instead.
    pub fn reason(&self) -> String {
        match self {
            DecodeError::Open { reason, .. } => {
                format!("cannot read DICOM file: {reason}; check that it is a DICOM file and not truncated")
            }
            DecodeError::InFile { source, .. } => source.reason(),
            other => other.to_string(),
        }
    }
}

// Transfer syntaxes whose pixel data is native (not encapsulated).
use super::guard::{DEFLATED_EXPLICIT_VR_LE, EXPLICIT_VR_BE, EXPLICIT_VR_LE, IMPLICIT_VR_LE};
/// Encapsulated syntaxes handled here.
const ENCAPSULATED_UNCOMPRESSED: &str = "1.2.840.10008.1.2.1.98";
const RLE_LOSSLESS: &str = "1.2.840.10008.1.2.5";
const JPEG_FAMILY: [&str; 4] = [
    "1.2.840.10008.1.2.4.50", // baseline, 8-bit
    "1.2.840.10008.1.2.4.51", // extended, 12-bit
    "1.2.840.10008.1.2.4.57", // lossless
    "1.2.840.10008.1.2.4.70", // lossless, first-order prediction
];
const JPEG_LS: [&str; 2] = ["1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"];
const JPEG_2000: [&str; 7] = [
    "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.4.92",
    "1.2.840.10008.1.2.4.93",
    "1.2.840.10008.1.2.4.201", // HTJ2K lossless
    "1.2.840.10008.1.2.4.202", // HTJ2K lossless RPCL
    "1.2.840.10008.1.2.4.203", // HTJ2K
];

/// Image Pixel module attributes (PS3.3 C.7.6.3) that decide how samples are laid out.
#[derive(Debug, Clone)]
pub struct ImageAttributes {
    pub rows: u32,
    pub cols: u32,
    pub frames: u32,
    pub samples_per_pixel: u16,
    pub bits_allocated: u16,
    pub bits_stored: u16,
    /// 0 unsigned, 1 two's complement.
    pub pixel_representation: u16,
    /// 0 interleaved (R1 G1 B1 R2 ...), 1 planar (R1 R2 ... G1 G2 ...).
    pub planar_configuration: u16,
    pub photometric: String,
}

/// How pydicom corrects bits above Bits Stored after decoding; which one depends on the syntax.
#[derive(Debug, Clone, Copy, PartialEq)]
enum BitCorrection {
    /// Native, RLE, JPEG: shift out the unused high bits, sign-extending for signed data.
    UnusedBits { bits_stored: u16 },
    /// JPEG 2000: re-sign when the codestream's signedness disagrees with Pixel Representation.
    J2kSign { precision: u16, signed: bool },
    /// JPEG-LS stores signed data as unsigned: sign-extend from the codestream precision.
    JlsSign { precision: u16 },
}

/// Samples straight out of a decoder, before bit correction and colour conversion.
struct RawSamples {
    /// (frames, rows, cols, samples) interleaved, little-endian, `width` bytes each.
    bytes: Vec<u8>,
    /// Bytes per sample: 1, 2, 4 or 8.
    width: usize,
    /// Colour space of `bytes`.
    photometric: String,
    correction: BitCorrection,
    /// Float Pixel Data (7FE0,0008) or Double Float Pixel Data (7FE0,0009).
    float: bool,
}

/// Decode all frames of an opened object. Never panics: third-party decoders run inside
/// `catch_unwind` and a panic becomes [`DecodeError::Panic`].
pub fn decode_pixels(obj: &DefaultDicomObject) -> Result<DecodedPixels, DecodeError> {
    let ts = transfer_syntax_uid(obj);
    catch_unwind(AssertUnwindSafe(|| decode_unguarded(obj, &ts))).unwrap_or_else(|panic| {
        Err(DecodeError::Panic {
            ts: ts_label(&ts),
            reason: panic_message(panic),
        })
    })
}

/// Open `path` and decode it; errors carry the file name.
pub fn decode_file(path: &Path) -> Result<DecodedPixels, DecodeError> {
    let in_file = |e| DecodeError::InFile {
        path: path.to_path_buf(),
        source: Box::new(e),
    };
    let obj = open_dicom(path)?;
    decode_pixels(&obj).map_err(in_file)
}

/// The Transfer Syntax UID without the NUL padding some writers leave in.
pub fn transfer_syntax_uid(obj: &DefaultDicomObject) -> String {
    obj.meta()
        .transfer_syntax()
        .trim_end_matches(['\0', ' '])
        .to_string()
}

/// "UID (name)" for messages.
pub fn ts_label(uid: &str) -> String {
    match TransferSyntaxRegistry.get(uid) {
        Some(ts) => format!("{uid} ({})", ts.name()),
        None => format!("{uid} (unknown)"),
    }
}

fn panic_message(panic: Box<dyn Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-text payload".to_string()
    }
}

fn decode_unguarded(obj: &DefaultDicomObject, ts: &str) -> Result<DecodedPixels, DecodeError> {
    let attrs = ImageAttributes::read(obj, ts)?;
    let raw = decode_raw(obj, ts, &attrs)?;
    finish(raw, &attrs)
}

impl ImageAttributes {
    /// Read the attributes, with the defaults pydicom assumes for optional ones.
    pub fn read(obj: &DefaultDicomObject, ts: &str) -> Result<Self, DecodeError> {
        if pixel_element(obj).is_none() {
            return Err(DecodeError::NoPixelData { ts: ts_label(ts) });
        }
        let bits_allocated = required_uint(obj, ts, tags::BITS_ALLOCATED, "BitsAllocated (0028,0100)")?;
        let attrs = ImageAttributes {
            rows: required_uint(obj, ts, tags::ROWS, "Rows (0028,0010)")?,
            cols: required_uint(obj, ts, tags::COLUMNS, "Columns (0028,0011)")?,
            frames: optional_uint(obj, ts, tags::NUMBER_OF_FRAMES, "NumberOfFrames (0028,0008)")?
                .unwrap_or(1),
            samples_per_pixel: optional_uint(obj, ts, tags::SAMPLES_PER_PIXEL, "SamplesPerPixel (0028,0002)")?
                .unwrap_or(1) as u16,
            bits_allocated: bits_allocated as u16,
            bits_stored: optional_uint(obj, ts, tags::BITS_STORED, "BitsStored (0028,0101)")?
                .unwrap_or(bits_allocated) as u16,
            pixel_representation: optional_uint(
                obj,
                ts,
                tags::PIXEL_REPRESENTATION,
                "PixelRepresentation (0028,0103)",
            )?
            .unwrap_or(0) as u16,
            planar_configuration: optional_uint(
                obj,
                ts,
                tags::PLANAR_CONFIGURATION,
                "PlanarConfiguration (0028,0006)",
            )?
            .unwrap_or(0) as u16,
            photometric: obj
                .get(tags::PHOTOMETRIC_INTERPRETATION)
                .and_then(|e| e.to_str().ok())
                .map(|s| s.trim_matches(['\0', ' ']).to_string())
                .unwrap_or_else(|| "MONOCHROME2".to_string()),
        };
        attrs.validate(ts)?;
        Ok(attrs)
    }

    fn validate(&self, ts: &str) -> Result<(), DecodeError> {
        let bad = |attribute, reason: String| {
            Err(DecodeError::Attribute {
                ts: ts_label(ts),
                attribute,
                reason,
            })
        };
        if self.rows == 0 || self.cols == 0 || self.frames == 0 {
            return bad(
                "Rows/Columns/NumberOfFrames",
                format!("{}x{}x{} is empty", self.frames, self.rows, self.cols),
            );
        }
        if !matches!(self.samples_per_pixel, 1 | 3 | 4) {
            return bad(
                "SamplesPerPixel (0028,0002)",
                format!("{} is not 1, 3 or 4", self.samples_per_pixel),
            );
        }
        if !matches!(self.bits_allocated, 1 | 8 | 16 | 32 | 64) {
            return bad(
                "BitsAllocated (0028,0100)",
                format!("{} is not 1, 8, 16, 32 or 64", self.bits_allocated),
            );
        }
        if self.bits_stored == 0 || self.bits_stored > self.bits_allocated {
            return bad(
                "BitsStored (0028,0101)",
                format!(
                    "{} is not within 1..={} (BitsAllocated)",
                    self.bits_stored, self.bits_allocated
                ),
            );
        }
        Ok(())
    }

    /// Samples in one frame at full resolution.
    pub fn frame_samples(&self) -> usize {
        self.rows as usize * self.cols as usize * self.samples_per_pixel as usize
    }

    fn is_signed(&self) -> bool {
        self.pixel_representation == 1
    }
}

fn attribute_error(ts: &str, attribute: &'static str, reason: String) -> DecodeError {
    DecodeError::Attribute {
        ts: ts_label(ts),
        attribute,
        reason,
    }
}

fn optional_uint(
    obj: &DefaultDicomObject,
    ts: &str,
    tag: Tag,
    name: &'static str,
) -> Result<Option<u32>, DecodeError> {
    let Some(element) = obj.get(tag) else {
        return Ok(None);
    };
    if element.value().primitive().is_some_and(|p| p.is_empty()) {
        return Ok(None);
    }
    element
        .value()
        .to_int::<u32>()
        .map(Some)
        .map_err(|e| attribute_error(ts, name, e.to_string()))
}

fn required_uint(
    obj: &DefaultDicomObject,
    ts: &str,
    tag: Tag,
    name: &'static str,
) -> Result<u32, DecodeError> {
    optional_uint(obj, ts, tag, name)?.ok_or_else(|| attribute_error(ts, name, "absent".to_string()))
}

/// The element holding the pixels: integer, float or double-float Pixel Data.
fn pixel_element(obj: &DefaultDicomObject) -> Option<(&dicom_object::mem::InMemElement, bool)> {
    if let Some(e) = obj.get(tags::PIXEL_DATA) {
        return Some((e, false));
    }
    [tags::FLOAT_PIXEL_DATA, tags::DOUBLE_FLOAT_PIXEL_DATA]
        .into_iter()
        .find_map(|t| obj.get(t).map(|e| (e, true)))
}

fn decode_raw(
    obj: &DefaultDicomObject,
    ts: &str,
    attrs: &ImageAttributes,
) -> Result<RawSamples, DecodeError> {
    match ts {
        IMPLICIT_VR_LE | EXPLICIT_VR_LE | DEFLATED_EXPLICIT_VR_LE => decode_native(obj, ts, attrs, false),
        EXPLICIT_VR_BE => decode_native(obj, ts, attrs, true),
        ENCAPSULATED_UNCOMPRESSED => decode_encapsulated_uncompressed(obj, ts, attrs),
        RLE_LOSSLESS => decode_rle(obj, ts, attrs),
        t if JPEG_FAMILY.contains(&t) => decode_jpeg(obj, ts, attrs),
        t if JPEG_LS.contains(&t) => decode_with_registry(obj, ts, attrs, Family::JpegLs),
        t if JPEG_2000.contains(&t) => decode_with_registry(obj, ts, attrs, Family::Jpeg2000),
        _ => Err(DecodeError::UnsupportedTransferSyntax {
            ts: ts_label(ts),
            reason:
                "no pixel decoder for this syntax (video, JPEG XL and deflated image frames are not handled)"
                    .to_string(),
        }),
    }
}

/// Bytes per stored sample; 1-bit data is unpacked to one byte per sample.
fn sample_width(bits_allocated: u16) -> usize {
    (bits_allocated as usize).div_ceil(8)
}

fn decode_native(
    obj: &DefaultDicomObject,
    ts: &str,
    attrs: &ImageAttributes,
    big_endian: bool,
) -> Result<RawSamples, DecodeError> {
    let (element, float) = pixel_element(obj).ok_or_else(|| DecodeError::NoPixelData { ts: ts_label(ts) })?;
    let primitive = match element.value() {
        Value::Primitive(p) => p,
        _ => {
            return Err(DecodeError::Codec {
                ts: ts_label(ts),
                frame: 0,
                reason: "Pixel Data is encapsulated although the transfer syntax is native".to_string(),
            })
        }
    };
    let width = sample_width(attrs.bits_allocated);
    let mut bytes = native_le_bytes(primitive, big_endian, width);
    let frame_samples = attrs.frame_samples();
    let total_samples = frame_samples * attrs.frames as usize;
    let subsampled_422 = attrs.photometric == "YBR_FULL_422" && attrs.samples_per_pixel == 3;
    let expected = if attrs.bits_allocated == 1 {
        total_samples.div_ceil(8)
    } else if subsampled_422 {
        // Two samples of luminance share one Cb and one Cr: 2 samples per pixel are stored.
        total_samples / 3 * 2 * width
    } else {
        total_samples * width
    };
    if bytes.len() < expected {
        return Err(DecodeError::Truncated {
            ts: ts_label(ts),
            expected,
            actual: bytes.len(),
        });
    }
    bytes.truncate(expected);
    if attrs.bits_allocated == 1 {
        bytes = color::unpack_bits(&bytes, total_samples);
    }
    let mut photometric = attrs.photometric.clone();
    if subsampled_422 {
        bytes = color::expand_ybr422(&bytes, width);
        photometric = "YBR_FULL".to_string();
    }
    if attrs.samples_per_pixel > 1 && attrs.planar_configuration == 1 {
        bytes = color::interleave_planes(&bytes, attrs.samples_per_pixel as usize, frame_samples, width);
    }
    Ok(RawSamples {
        bytes,
        width,
        photometric,
        correction: BitCorrection::UnusedBits {
            bits_stored: attrs.bits_stored,
        },
        float,
    })
}

/// Little-endian sample bytes of a native Pixel Data value. The parser has already turned OW/OL words
/// into native integers; only 32-bit samples stored as OW words in big endian need their words swapped.
fn native_le_bytes(value: &PrimitiveValue, big_endian: bool, width: usize) -> Vec<u8> {
    let bytes = value.to_bytes().into_owned();
    match value {
        PrimitiveValue::U16(_) | PrimitiveValue::I16(_) if big_endian && width == 4 => bytes
            .chunks_exact(4)
            .flat_map(|w| [w[2], w[3], w[0], w[1]])
            .collect(),
        _ => bytes,
    }
}

fn decode_encapsulated_uncompressed(
    obj: &DefaultDicomObject,
    ts: &str,
    attrs: &ImageAttributes,
) -> Result<RawSamples, DecodeError> {
    let width = sample_width(attrs.bits_allocated);
    let frames = encapsulated_frames(obj, ts, attrs)?;
    let frame_bytes = attrs.frame_samples() * width;
    let mut bytes = Vec::with_capacity(frame_bytes * frames.len());
    for frame in &frames {
        if frame.len() < frame_bytes {
            return Err(DecodeError::Truncated {
                ts: ts_label(ts),
                expected: frame_bytes,
                actual: frame.len(),
            });
        }
        bytes.extend_from_slice(&frame[..frame_bytes]);
    }
    Ok(RawSamples {
        bytes,
        width,
        photometric: attrs.photometric.clone(),
        correction: BitCorrection::UnusedBits {
            bits_stored: attrs.bits_stored,
        },
        float: false,
    })
}

fn encapsulated_frames(
    obj: &DefaultDicomObject,
    ts: &str,
    attrs: &ImageAttributes,
) -> Result<Vec<Vec<u8>>, DecodeError> {
    frame_fragments(obj, attrs.frames).map_err(|reason| DecodeError::Codec {
        ts: ts_label(ts),
        frame: 0,
        reason,
    })
}

fn decode_rle(
    obj: &DefaultDicomObject,
    ts: &str,
    attrs: &ImageAttributes,
) -> Result<RawSamples, DecodeError> {
    let width = sample_width(attrs.bits_allocated);
    let mut bytes = Vec::with_capacity(attrs.frame_samples() * width * attrs.frames as usize);
    for (index, frame) in encapsulated_frames(obj, ts, attrs)?.iter().enumerate() {
        let decoded = rle::decode_frame(
            frame,
            attrs.rows as usize * attrs.cols as usize,
            attrs.samples_per_pixel as usize,
            width,
        )
        .map_err(|reason| DecodeError::Codec {
            ts: ts_label(ts),
            frame: index as u32,
            reason,
        })?;
        bytes.extend_from_slice(&decoded);
    }
    Ok(RawSamples {
        bytes,
        width,
        photometric: attrs.photometric.clone(),
        correction: BitCorrection::UnusedBits {
            bits_stored: attrs.bits_stored,
        },
        float: false,
    })
}

fn decode_jpeg(
    obj: &DefaultDicomObject,
    ts: &str,
    attrs: &ImageAttributes,
) -> Result<RawSamples, DecodeError> {
    let width = sample_width(attrs.bits_allocated);
    let mut bytes = Vec::with_capacity(attrs.frame_samples() * width * attrs.frames as usize);
    let mut photometric = attrs.photometric.clone();
    for (index, frame) in encapsulated_frames(obj, ts, attrs)?.iter().enumerate() {
        let codec_error = |reason| DecodeError::Codec {
            ts: ts_label(ts),
            frame: index as u32,
            reason,
        };
        let decoded = jpeg::decode_frame(frame).map_err(codec_error)?;
        photometric =
            jpeg::effective_photometric(&decoded.info, &attrs.photometric, attrs.samples_per_pixel, ts);
        let samples = resize_samples(decoded.bytes, decoded.width, width);
        if samples.len() != attrs.frame_samples() * width {
            return Err(codec_error(format!(
                "decoded {} bytes but {} rows x {} columns x {} samples x {} bytes are expected",
                samples.len(),
                attrs.rows,
                attrs.cols,
                attrs.samples_per_pixel,
                width
            )));
        }
        bytes.extend_from_slice(&samples);
    }
    Ok(RawSamples {
        bytes,
        width,
        photometric,
        correction: BitCorrection::UnusedBits {
            bits_stored: attrs.bits_stored,
        },
        float: false,
    })
}

/// Widen or narrow little-endian samples when a decoder's container differs from Bits Allocated.
fn resize_samples(bytes: Vec<u8>, from: usize, to: usize) -> Vec<u8> {
    if from == to {
        return bytes;
    }
    bytes
        .chunks_exact(from)
        .flat_map(|s| (0..to).map(move |i| if i < from { s[i] } else { 0 }))
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Family {
    JpegLs,
    Jpeg2000,
}

/// JPEG-LS (CharLS) and JPEG 2000 (OpenJPEG) through dicom-rs' registered decoders, frame by frame.
/// Like pydicom's pylibjpeg plugins, the sample container follows the codestream's precision.
fn decode_with_registry(
    obj: &DefaultDicomObject,
    ts: &str,
    attrs: &ImageAttributes,
    family: Family,
) -> Result<RawSamples, DecodeError> {
    let reader = TransferSyntaxRegistry
        .get(ts)
        .and_then(|t| t.pixel_data_reader())
        .ok_or_else(|| DecodeError::UnsupportedTransferSyntax {
            ts: ts_label(ts),
            reason: "no decoder registered".to_string(),
        })?;
    let frames = encapsulated_frames(obj, ts, attrs)?;
    let first = frames.first().map(Vec::as_slice).unwrap_or_default();
    let header = match family {
        Family::JpegLs => jpeg::scan_markers(first).map(|i| (i.precision as u16, false)),
        Family::Jpeg2000 => jpeg::j2k_siz(first),
    };
    let (precision, signed) = header.unwrap_or((attrs.bits_stored, attrs.is_signed()));
    let dicom_width = sample_width(attrs.bits_allocated);
    let width = sample_width(precision.max(1)).next_power_of_two();
    let mut bytes = Vec::with_capacity(attrs.frame_samples() * width * attrs.frames as usize);
    for index in 0..attrs.frames {
        let codec_error = |reason| DecodeError::Codec {
            ts: ts_label(ts),
            frame: index,
            reason,
        };
        let mut frame = Vec::new();
        match family {
            Family::JpegLs => reader
                .decode_frame(obj, index, &mut frame)
                .map_err(|e| codec_error(e.to_string()))?,
            Family::Jpeg2000 => {
                let data = frames.get(index as usize).map(Vec::as_slice).unwrap_or_default();
                frame = jpeg::decode_j2k_frame(
                    data,
                    attrs.rows as usize,
                    attrs.cols as usize,
                    attrs.samples_per_pixel as usize,
                    dicom_width,
                )
                .map_err(codec_error)?;
            }
        }
        let expected = attrs.frame_samples() * dicom_width;
        if frame.len() < expected {
            return Err(codec_error(format!(
                "decoded {} bytes but {expected} are expected",
                frame.len()
            )));
        }
        frame.truncate(expected);
        bytes.extend(resize_samples(frame, dicom_width, width));
    }
    let (photometric, correction) = match family {
        Family::JpegLs => (attrs.photometric.clone(), BitCorrection::JlsSign { precision }),
        // OpenJPEG applies the inverse colour transform, so YBR_RCT/YBR_ICT come out as RGB.
        Family::Jpeg2000 => {
            let pi = if matches!(attrs.photometric.as_str(), "YBR_RCT" | "YBR_ICT") {
                "RGB"
            } else {
                &attrs.photometric
            };
            (pi.to_string(), BitCorrection::J2kSign { precision, signed })
        }
    };
    Ok(RawSamples {
        bytes,
        width,
        photometric,
        correction,
        float: false,
    })
}

/// Type the samples, apply pydicom's bit correction and colour conversion.
fn finish(raw: RawSamples, attrs: &ImageAttributes) -> Result<DecodedPixels, DecodeError> {
    let signed = attrs.is_signed();
    let mut pixels = typed_buffer(&raw.bytes, raw.width, signed, raw.float);
    if let Some(shift) = correction_shift(raw.correction, raw.width, signed) {
        shift_out_high_bits(&mut pixels, shift);
    }
    let mut photometric = raw.photometric;
    if matches!(photometric.as_str(), "YBR_FULL" | "YBR_FULL_422") && attrs.samples_per_pixel == 3 {
        if let PixelBuffer::U8(values) = &mut pixels {
            color::ybr_full_to_rgb(values);
            photometric = "RGB".to_string();
        }
    }
    Ok(DecodedPixels {
        frames: attrs.frames,
        rows: attrs.rows,
        cols: attrs.cols,
        samples_per_pixel: attrs.samples_per_pixel,
        photometric,
        bits_stored: attrs.bits_stored,
        pixels,
    })
}

/// Bits to shift left and back right (arithmetically for signed types), as pydicom does.
fn correction_shift(correction: BitCorrection, width: usize, signed: bool) -> Option<u32> {
    let container = 8 * width as u32;
    let shift = match correction {
        BitCorrection::UnusedBits { bits_stored } => container.saturating_sub(bits_stored as u32),
        BitCorrection::J2kSign {
            precision,
            signed: j2k_signed,
        } if j2k_signed != signed => container.saturating_sub(precision as u32),
        BitCorrection::J2kSign { .. } => 0,
        BitCorrection::JlsSign { precision } if signed => container.saturating_sub(precision as u32),
        BitCorrection::JlsSign { .. } => 0,
    };
    (shift > 0 && shift < container).then_some(shift)
}

fn typed_buffer(bytes: &[u8], width: usize, signed: bool, float: bool) -> PixelBuffer {
    match (width, signed, float) {
        (4, _, true) => PixelBuffer::F32(
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        (8, _, true) | (8, _, false) => PixelBuffer::F64(
            bytes
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("chunk of 8")))
                .collect(),
        ),
        (1, false, _) => PixelBuffer::U8(bytes.to_vec()),
        (1, true, _) => PixelBuffer::I8(bytes.iter().map(|&b| b as i8).collect()),
        (2, false, _) => PixelBuffer::U16(
            bytes
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect(),
        ),
        (2, true, _) => PixelBuffer::I16(
            bytes
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]))
                .collect(),
        ),
        (_, false, _) => PixelBuffer::U32(
            bytes
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        (_, true, _) => PixelBuffer::I32(
            bytes
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
    }
}

fn shift_out_high_bits(pixels: &mut PixelBuffer, shift: u32) {
    match pixels {
        PixelBuffer::U8(v) => v.iter_mut().for_each(|x| *x = (*x << shift) >> shift),
        PixelBuffer::I8(v) => v.iter_mut().for_each(|x| *x = (*x << shift) >> shift),
        PixelBuffer::U16(v) => v.iter_mut().for_each(|x| *x = (*x << shift) >> shift),
        PixelBuffer::I16(v) => v.iter_mut().for_each(|x| *x = (*x << shift) >> shift),
        PixelBuffer::U32(v) => v.iter_mut().for_each(|x| *x = (*x << shift) >> shift),
        PixelBuffer::I32(v) => v.iter_mut().for_each(|x| *x = (*x << shift) >> shift),
        PixelBuffer::F32(_) | PixelBuffer::F64(_) => {}
    }
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

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The numpy dtype name of the same values ("uint8", "int16", ...).
    pub fn dtype_name(&self) -> &'static str {
        match self {
            PixelBuffer::U8(_) => "uint8",
            PixelBuffer::I8(_) => "int8",
            PixelBuffer::U16(_) => "uint16",
            PixelBuffer::I16(_) => "int16",
            PixelBuffer::U32(_) => "uint32",
            PixelBuffer::I32(_) => "int32",
            PixelBuffer::F32(_) => "float32",
            PixelBuffer::F64(_) => "float64",
        }
    }

    /// Sample `index` as f64 (exact for every integer type here).
    pub fn get_f64(&self, index: usize) -> f64 {
        match self {
            PixelBuffer::U8(v) => v[index] as f64,
            PixelBuffer::I8(v) => v[index] as f64,
            PixelBuffer::U16(v) => v[index] as f64,
            PixelBuffer::I16(v) => v[index] as f64,
            PixelBuffer::U32(v) => v[index] as f64,
            PixelBuffer::I32(v) => v[index] as f64,
            PixelBuffer::F32(v) => v[index] as f64,
            PixelBuffer::F64(v) => v[index],
        }
    }

    /// The values as little-endian bytes (numpy's `tobytes()` of a C-contiguous `<` array).
    pub fn to_le_bytes(&self) -> Vec<u8> {
        match self {
            PixelBuffer::U8(v) => v.clone(),
            PixelBuffer::I8(v) => v.iter().map(|&x| x as u8).collect(),
            PixelBuffer::U16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            PixelBuffer::I16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            PixelBuffer::U32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            PixelBuffer::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            PixelBuffer::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            PixelBuffer::F64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unused_high_bits_are_sign_extended_or_masked() {
        let twelve = BitCorrection::UnusedBits { bits_stored: 12 };
        let shift = correction_shift(twelve, 2, true).unwrap();
        let mut signed = PixelBuffer::I16(vec![0x0FFF, 0x0800, 0x07FF, 0x7001]);
        shift_out_high_bits(&mut signed, shift);
        assert_eq!(signed, PixelBuffer::I16(vec![-1, -2048, 2047, 1]));
        let mut unsigned = PixelBuffer::U16(vec![0xF123, 0x0FFF]);
        shift_out_high_bits(&mut unsigned, correction_shift(twelve, 2, false).unwrap());
        assert_eq!(unsigned, PixelBuffer::U16(vec![0x0123, 0x0FFF]));
        assert_eq!(
            correction_shift(BitCorrection::UnusedBits { bits_stored: 16 }, 2, true),
            None
        );
    }

    #[test]
    fn j2k_and_jls_corrections_follow_pydicom() {
        // J2K signedness agrees with Pixel Representation: nothing to do.
        assert_eq!(
            correction_shift(
                BitCorrection::J2kSign {
                    precision: 13,
                    signed: true
                },
                2,
                true
            ),
            None
        );
        // Unsigned 13-bit codestream for signed pixels: re-sign from bit 12.
        assert_eq!(
            correction_shift(
                BitCorrection::J2kSign {
                    precision: 13,
                    signed: false
                },
                2,
                true
            ),
            Some(3)
        );
        // JPEG-LS only for signed pixels.
        assert_eq!(
            correction_shift(BitCorrection::JlsSign { precision: 12 }, 2, false),
            None
        );
        assert_eq!(
            correction_shift(BitCorrection::JlsSign { precision: 12 }, 2, true),
            Some(4)
        );
    }

    #[test]
    fn big_endian_32_bit_words_are_reordered() {
        // The parser turned big endian OW bytes 00 01 02 03 into words 0x0001, 0x0203: the sample is
        // 0x00010203, little endian 03 02 01 00.
        let words = PrimitiveValue::U16([0x0001, 0x0203].into_iter().collect());
        assert_eq!(native_le_bytes(&words, true, 4), [0x03, 0x02, 0x01, 0x00]);
        assert_eq!(native_le_bytes(&words, false, 4), [0x01, 0x00, 0x03, 0x02]);
    }

    #[test]
    fn typed_buffers_follow_numpy_dtypes() {
        assert_eq!(
            typed_buffer(&[0xFF, 0x7F], 2, true, false),
            PixelBuffer::I16(vec![0x7FFF])
        );
        assert_eq!(typed_buffer(&[0xFF], 1, true, false), PixelBuffer::I8(vec![-1]));
        assert_eq!(
            typed_buffer(&0.5f32.to_le_bytes(), 4, false, true),
            PixelBuffer::F32(vec![0.5])
        );
        assert_eq!(resize_samples(vec![1, 2], 1, 2), vec![1, 0, 2, 0]);
    }
}
