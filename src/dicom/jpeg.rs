//! JPEG (ISO 10918) frames: header scanning for the facts pydicom's colour handling depends on, and
//! decoding through `jpeg-decoder` without its colour transform (pydicom converts YBR itself), with a
//! fallback to our 12-bit DCT decoder, which `jpeg-decoder` lacks.

use jpeg_decoder::{ColorTransform, Decoder, PixelFormat};

use super::jpeg12;

const MARKER_PREFIX: u8 = 0xFF;
const SOI: u8 = 0xD8;
const EOI: u8 = 0xD9;
const SOS: u8 = 0xDA;
const APP0: u8 = 0xE0;
const APP14: u8 = 0xEE;
/// JPEG-LS frame header (SOF55).
const SOF55: u8 = 0xF7;
/// DCT frame headers: baseline, extended, progressive (Huffman); extended, progressive (arithmetic).
const DCT_SOFS: [u8; 5] = [0xC0, 0xC1, 0xC2, 0xC9, 0xCA];
/// The 12-bit DCT precision that `jpeg-decoder` refuses.
const TWELVE_BIT: u8 = 12;
/// Component identifiers 'R','G','B' / 'r','g','b' mark an untransformed RGB codestream.
const RGB_IDS: [[u8; 3]; 2] = [[82, 71, 66], [114, 103, 98]];
const JPEG_BASELINE: &str = "1.2.840.10008.1.2.4.50";

/// What a codestream's headers say.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JpegInfo {
    /// The SOF marker's second byte (0xC0 baseline, 0xC1 extended, 0xC3 lossless, 0xF7 JPEG-LS, ...).
    pub sof: u8,
    pub precision: u8,
    pub rows: u16,
    pub cols: u16,
    pub component_ids: Vec<u8>,
    pub jfif: bool,
    pub adobe_transform: Option<u8>,
}

impl JpegInfo {
    pub fn is_dct(&self) -> bool {
        DCT_SOFS.contains(&self.sof)
    }
}

/// One decoded frame: interleaved little-endian samples of `width` bytes.
pub struct DecodedJpeg {
    pub bytes: Vec<u8>,
    pub width: usize,
    pub info: JpegInfo,
}

fn be16(data: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*data.get(at)?, *data.get(at + 1)?]))
}

/// Walk the marker segments up to the first scan. `None` when there is no SOI or frame header.
pub fn scan_markers(data: &[u8]) -> Option<JpegInfo> {
    if data.get(..2)? != [MARKER_PREFIX, SOI] {
        return None;
    }
    let mut info = JpegInfo::default();
    let mut seen_sof = false;
    let mut i = 2;
    while i + 1 < data.len() {
        if data[i] != MARKER_PREFIX {
            i += 1;
            continue;
        }
        let marker = data[i + 1];
        if marker == MARKER_PREFIX || (0xD0..=0xD7).contains(&marker) || marker == 0x01 || marker == 0x00 {
            i += 1; // fill byte, restart marker or stuffed zero: no length follows
            continue;
        }
        if marker == EOI || marker == SOS {
            break;
        }
        let length = be16(data, i + 2)? as usize;
        let segment = data.get(i + 4..(i + 2 + length).min(data.len()))?;
        match marker {
            APP0 => info.jfif |= segment.starts_with(b"JFIF\0"),
            APP14 if segment.starts_with(b"Adobe") => info.adobe_transform = segment.get(11).copied(),
            0xC0..=0xCF | SOF55 if !matches!(marker, 0xC4 | 0xC8 | 0xCC) => {
                read_frame_header(&mut info, marker, segment)?;
                seen_sof = true;
            }
            _ => {}
        }
        i += 2 + length;
    }
    seen_sof.then_some(info)
}

fn read_frame_header(info: &mut JpegInfo, marker: u8, segment: &[u8]) -> Option<()> {
    info.sof = marker;
    info.precision = *segment.first()?;
    info.rows = be16(segment, 1)?;
    info.cols = be16(segment, 3)?;
    let components = *segment.get(5)? as usize;
    info.component_ids = (0..components)
        .map(|c| segment.get(6 + 3 * c).copied())
        .collect::<Option<_>>()?;
    Some(())
}

/// Decode one JPEG frame (baseline, extended incl. 12-bit, progressive, lossless) without colour
/// conversion.
pub fn decode_frame(data: &[u8]) -> Result<DecodedJpeg, String> {
    let info = scan_markers(data).ok_or("no JPEG SOI and frame header at the start of the frame")?;
    if info.is_dct() && info.precision == TWELVE_BIT {
        let samples = jpeg12::decode(data)?;
        let bytes = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
        return Ok(DecodedJpeg {
            bytes,
            width: 2,
            info,
        });
    }
    let mut decoder = Decoder::new(data);
    // "RGB" interleaves the components unchanged; `None` mishandles padded component lines.
    decoder.set_color_transform(ColorTransform::RGB);
    let bytes = decoder.decode().map_err(|e| format!("jpeg-decoder: {e}"))?;
    let format = decoder
        .info()
        .ok_or("jpeg-decoder returned no image information")?
        .pixel_format;
    let width = match format {
        PixelFormat::L16 => 2,
        PixelFormat::L8 | PixelFormat::RGB24 => 1,
        PixelFormat::CMYK32 => return Err("4-component (CMYK) JPEG is not a DICOM image".to_string()),
    };
    Ok(DecodedJpeg { bytes, width, info })
}

/// The colour space of the decoded (untransformed) samples, by pydicom's `_conform_jpg_colorspace`:
/// 'RGB' component identifiers mean RGB, a JFIF marker means YBR whatever the data set says.
pub fn effective_photometric(info: &JpegInfo, photometric: &str, samples_per_pixel: u16, ts: &str) -> String {
    if samples_per_pixel != 3 {
        return photometric.to_string();
    }
    if RGB_IDS.iter().any(|ids| info.component_ids == ids) {
        return "RGB".to_string();
    }
    if info.jfif && !photometric.contains("YBR") {
        return if ts == JPEG_BASELINE {
            "YBR_FULL_422"
        } else {
            "YBR_FULL"
        }
        .to_string();
    }
    photometric.to_string()
}

/// JPEG 2000 SIZ: (precision, signed) of the first component, also inside a JP2 wrapper.
pub fn j2k_siz(data: &[u8]) -> Option<(u16, bool)> {
    // After the SIZ marker: Lsiz, Rsiz (2 each), eight 4-byte sizes/offsets, Csiz (2), then Ssiz.
    const SSIZ_OFFSET: usize = 2 + 2 + 8 * 4 + 2;
    const SIGNED_BIT: u8 = 0x80;
    let siz = data.windows(4).position(|w| w == [0xFF, 0x4F, 0xFF, 0x51])? + 4;
    let ssiz = *data.get(siz + SSIZ_OFFSET)?;
    Some(((ssiz & !SIGNED_BIT) as u16 + 1, ssiz & SIGNED_BIT != 0))
}

/// JPEG 2000 SIZ: (width, height, components) of the image area, also inside a JP2 wrapper.
pub fn j2k_geometry(data: &[u8]) -> Option<(u32, u32, u16)> {
    let siz = data.windows(4).position(|w| w == [0xFF, 0x4F, 0xFF, 0x51])? + 4;
    // Lsiz, Rsiz, then Xsiz, Ysiz, XOsiz, YOsiz (big endian), ..., Csiz after eight 4-byte fields.
    let u32_at = |o: usize| -> Option<u32> {
        Some(u32::from_be_bytes(
            data.get(siz + o..siz + o + 4)?.try_into().ok()?,
        ))
    };
    let (x, y, x0, y0) = (u32_at(4)?, u32_at(8)?, u32_at(12)?, u32_at(16)?);
    let csiz = u16::from_be_bytes(data.get(siz + 36..siz + 38)?.try_into().ok()?);
    Some((x.checked_sub(x0)?, y.checked_sub(y0)?, csiz))
}

/// One JPEG 2000 frame (codestream or JP2) decoded with OpenJPEG into `rows × cols × samples`
/// interleaved little-endian samples of `bytes_per_sample` (1 or 2) bytes, the layout dicom-rs'
/// adapter writes; unlike it, a codestream whose size or component count disagrees with the DICOM
/// header is an error (the adapter indexes past its buffer and panics).
pub fn decode_j2k_frame(
    data: &[u8],
    rows: usize,
    cols: usize,
    samples: usize,
    bytes_per_sample: usize,
) -> Result<Vec<u8>, String> {
    if !matches!(bytes_per_sample, 1 | 2) {
        return Err("BitsAllocated other than 8 or 16 is not supported for JPEG 2000".to_string());
    }
    let disagrees = |w: usize, h: usize, c: usize| {
        format!(
            "the codestream is {w}×{h} with {c} components, but the header says {cols}×{rows} with {samples}"
        )
    };
    // Checked before decoding: OpenJPEG allocates what the codestream's SIZ claims.
    if let Some((w, h, c)) = j2k_geometry(data) {
        if (w as usize, h as usize) != (cols, rows) || (c as usize) < samples {
            return Err(disagrees(w as usize, h as usize, c as usize));
        }
    }
    let image = jpeg2k::Image::from_bytes(data).map_err(|e| format!("jpeg2k decoder failure: {e}"))?;
    let components = image.components();
    let pixels = rows * cols;
    if components.len() < samples || components[..samples].iter().any(|c| c.data().len() != pixels) {
        let first = components.first();
        return Err(disagrees(
            first.map_or(0, |c| c.width() as usize),
            first.map_or(0, |c| c.height() as usize),
            components.len(),
        ));
    }
    let mut out = vec![0u8; pixels * samples * bytes_per_sample];
    for (ci, component) in components[..samples].iter().enumerate() {
        for (i, sample) in component.data().iter().enumerate() {
            let at = (i * samples + ci) * bytes_per_sample;
            out[at..at + bytes_per_sample].copy_from_slice(&sample.to_le_bytes()[..bytes_per_sample]);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_frame_header_and_markers() {
        let mut jpeg = vec![0xFF, SOI, 0xFF, APP0, 0, 7];
        jpeg.extend_from_slice(b"JFIF\0");
        // SOF1: length 17, precision 12, 2 rows, 3 cols, 3 components with ids R G B.
        jpeg.extend_from_slice(&[
            0xFF, 0xC1, 0, 17, 12, 0, 2, 0, 3, 3, 82, 0x11, 0, 71, 0x11, 0, 66, 0x11, 0,
        ]);
        jpeg.extend_from_slice(&[0xFF, SOS]);
        let info = scan_markers(&jpeg).unwrap();
        assert_eq!((info.sof, info.precision, info.rows, info.cols), (0xC1, 12, 2, 3));
        assert!(info.jfif && info.is_dct());
        assert_eq!(effective_photometric(&info, "YBR_FULL", 3, JPEG_BASELINE), "RGB");
    }

    #[test]
    fn siz_signedness() {
        let mut j2k = vec![0xFF, 0x4F, 0xFF, 0x51];
        j2k.extend([0u8; 38]);
        j2k.push(0x80 | 12);
        assert_eq!(j2k_siz(&j2k), Some((13, true)));
    }
}
