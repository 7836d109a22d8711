//! DICOM Segmentation objects (PS3.3 A.51, Segmentation IOD) of one binary segment over a series:
//! what `predict` writes for the archive.
//!
//! - **Frames**: one per slice of the source series that has a labelled pixel (as highdicom writes
//!   them by default), or the first slice when none has, since an object needs a frame. Each frame's
//!   per-frame groups hold its Plane Position (the source slice's ImagePositionPatient), its Source
//!   Image in a Derivation Image Sequence (purpose: source image for image processing; derivation:
//!   segmentation) and its segment; the shared groups hold the orientation and pixel measures.
//! - **Dimensions**: the segment number, then ImagePositionPatient, each with its functional group
//!   pointer, as highdicom's default.
//! - **Pixels**: BINARY, 1 bit per pixel, frames concatenated, the first pixel in a byte's lowest
//!   bit, padded to an even length. Explicit VR Little Endian.
//! - **Segment**: category "Morphologically Altered Structure" (SCT 49755003), type "Nodule" (SCT
//!   27925004), algorithm type AUTOMATIC with the name given.
//! - **Identity**: the patient, study and frame-of-reference elements come from the caller (copied
//!   from the source series, or made from pseudonyms for local use), with a Referenced Series
//!   Sequence listing every source instance.

use crate::dicom::build::{ds, DicomBuilder};
use dicom_core::value::C;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::InMemDicomObject;

/// Segmentation Storage.
pub const SEGMENTATION_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.66.4";

/// A source image of the series.
#[derive(Clone, Debug, PartialEq)]
pub struct SourceImage {
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    /// The frame of a multi-frame source (1-based); None for a single-frame image.
    pub frame: Option<u32>,
}

/// One slice of the series: where it is, what it was derived from, and its mask (rows × cols).
#[derive(Clone, Debug)]
pub struct Plane {
    pub position: [f64; 3],
    pub source: SourceImage,
    pub mask: Vec<bool>,
}

/// Everything a segmentation object of one series holds.
#[derive(Clone, Debug)]
pub struct Segmentation {
    /// Patient, study and frame-of-reference elements, copied into the object as they are.
    pub identity: InMemDicomObject,
    pub source_series_uid: String,
    pub series_instance_uid: String,
    pub sop_instance_uid: String,
    pub series_description: String,
    pub content_description: String,
    pub rows: u32,
    pub cols: u32,
    /// ImageOrientationPatient of the source.
    pub orientation: [f64; 6],
    /// PixelSpacing (between rows, between columns), mm.
    pub pixel_spacing: [f64; 2],
    pub slice_thickness: f64,
    pub spacing_between_slices: f64,
    pub planes: Vec<Plane>,
    pub segment_label: String,
    pub algorithm_name: String,
    pub software_version: String,
}

fn code(value: &str, scheme: &str, meaning: &str) -> InMemDicomObject {
    let mut d = DicomBuilder::new();
    d.str(tags::CODE_VALUE, VR::SH, value)
        .str(tags::CODING_SCHEME_DESIGNATOR, VR::SH, scheme)
        .str(tags::CODE_MEANING, VR::LO, meaning);
    d.into_inner()
}

fn item(build: impl FnOnce(&mut DicomBuilder)) -> InMemDicomObject {
    let mut d = DicomBuilder::new();
    build(&mut d);
    d.into_inner()
}

fn dsv(values: &[f64]) -> Vec<String> {
    values.iter().map(|v| ds(*v, 6)).collect()
}

fn tags_value(tag: Tag, values: Vec<Tag>) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::AT, PrimitiveValue::Tags(C::from_vec(values)))
}

/// The frames written: slices with a labelled pixel, else the first.
pub fn frames_of(planes: &[Plane]) -> Vec<usize> {
    let with: Vec<usize> = (0..planes.len())
        .filter(|&k| planes[k].mask.iter().any(|&v| v))
        .collect();
    match (with.is_empty(), planes.is_empty()) {
        (true, false) => vec![0],
        _ => with,
    }
}

/// Packs frames of booleans into bits, the first pixel in the lowest bit, to an even length.
pub fn pack_bits<'a>(frames: impl Iterator<Item = &'a [bool]>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut n = 0usize;
    for f in frames {
        for &v in f {
            if n % 8 == 0 {
                out.push(0u8);
            }
            if v {
                *out.last_mut().expect("pushed") |= 1 << (n % 8);
            }
            n += 1;
        }
    }
    if out.len() % 2 == 1 {
        out.push(0);
    }
    out
}

/// The segmentation object (a data set without its file meta group).
pub fn encode(s: &Segmentation, content_date: &str, content_time: &str) -> InMemDicomObject {
    let mut d = DicomBuilder::from(s.identity.clone());
    let frames = frames_of(&s.planes);
    let dim_org = format!("{}.1", s.series_instance_uid);
    if s.identity.element(tags::SPECIFIC_CHARACTER_SET).is_err() {
        d.str(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192");
    }
    d.str(tags::SOP_CLASS_UID, VR::UI, SEGMENTATION_STORAGE)
        .str(tags::SOP_INSTANCE_UID, VR::UI, s.sop_instance_uid.as_str())
        .str(tags::MODALITY, VR::CS, "SEG")
        .str(tags::SERIES_INSTANCE_UID, VR::UI, s.series_instance_uid.as_str())
        .str(tags::SERIES_NUMBER, VR::IS, "900")
        .str(tags::SERIES_DESCRIPTION, VR::LO, s.series_description.as_str())
        .str(tags::INSTANCE_NUMBER, VR::IS, "1")
        .str(tags::CONTENT_DATE, VR::DA, content_date)
        .str(tags::CONTENT_TIME, VR::TM, content_time)
        .str(tags::CONTENT_LABEL, VR::CS, "SEGMENTATION")
        .str(tags::CONTENT_DESCRIPTION, VR::LO, s.content_description.as_str())
        .str(tags::CONTENT_CREATOR_NAME, VR::PN, "")
        .str(tags::MANUFACTURER, VR::LO, "medtrain")
        .str(tags::MANUFACTURER_MODEL_NAME, VR::LO, "medtrain")
        .str(tags::DEVICE_SERIAL_NUMBER, VR::LO, "1")
        .str(tags::SOFTWARE_VERSIONS, VR::LO, s.software_version.as_str())
        .strs(tags::IMAGE_TYPE, VR::CS, &["DERIVED".into(), "PRIMARY".into()])
        .us(tags::SAMPLES_PER_PIXEL, 1)
        .str(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2")
        .us(tags::ROWS, s.rows as u16)
        .us(tags::COLUMNS, s.cols as u16)
        .us(tags::BITS_ALLOCATED, 1)
        .us(tags::BITS_STORED, 1)
        .us(tags::HIGH_BIT, 0)
        .us(tags::PIXEL_REPRESENTATION, 0)
        .str(tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00")
        .str(tags::SEGMENTATION_TYPE, VR::CS, "BINARY")
        .str(tags::SEGMENTS_OVERLAP, VR::CS, "NO")
        .str(tags::NUMBER_OF_FRAMES, VR::IS, frames.len().to_string());
    d.seq(
        tags::SEGMENT_SEQUENCE,
        vec![item(|i| {
            i.us(tags::SEGMENT_NUMBER, 1)
                .str(tags::SEGMENT_LABEL, VR::LO, s.segment_label.as_str())
                .str(tags::SEGMENT_ALGORITHM_TYPE, VR::CS, "AUTOMATIC")
                .str(tags::SEGMENT_ALGORITHM_NAME, VR::LO, s.algorithm_name.as_str())
                .seq(
                    tags::SEGMENTED_PROPERTY_CATEGORY_CODE_SEQUENCE,
                    vec![code("49755003", "SCT", "Morphologically Altered Structure")],
                )
                .seq(
                    tags::SEGMENTED_PROPERTY_TYPE_CODE_SEQUENCE,
                    vec![code("27925004", "SCT", "Nodule")],
                );
        })],
    );
    d.seq(
        tags::DIMENSION_ORGANIZATION_SEQUENCE,
        vec![item(|i| {
            i.str(tags::DIMENSION_ORGANIZATION_UID, VR::UI, dim_org.as_str());
        })],
    )
    .str(tags::DIMENSION_ORGANIZATION_TYPE, VR::CS, "3D");
    let dimension = |pointer: Tag, group: Tag, description: &str| {
        item(|i| {
            i.str(tags::DIMENSION_ORGANIZATION_UID, VR::UI, dim_org.as_str())
                .put(tags_value(tags::DIMENSION_INDEX_POINTER, vec![pointer]))
                .put(tags_value(tags::FUNCTIONAL_GROUP_POINTER, vec![group]))
                .str(tags::DIMENSION_DESCRIPTION_LABEL, VR::LO, description);
        })
    };
    d.seq(
        tags::DIMENSION_INDEX_SEQUENCE,
        vec![
            dimension(
                tags::REFERENCED_SEGMENT_NUMBER,
                tags::SEGMENT_IDENTIFICATION_SEQUENCE,
                "ReferencedSegmentNumber",
            ),
            dimension(
                tags::IMAGE_POSITION_PATIENT,
                tags::PLANE_POSITION_SEQUENCE,
                "ImagePositionPatient",
            ),
        ],
    );
    d.seq(
        tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE,
        vec![item(|i| {
            i.seq(
                tags::PLANE_ORIENTATION_SEQUENCE,
                vec![item(|o| {
                    o.strs(tags::IMAGE_ORIENTATION_PATIENT, VR::DS, &dsv(&s.orientation));
                })],
            )
            .seq(
                tags::PIXEL_MEASURES_SEQUENCE,
                vec![item(|m| {
                    m.strs(tags::PIXEL_SPACING, VR::DS, &dsv(&s.pixel_spacing))
                        .str(tags::SLICE_THICKNESS, VR::DS, ds(s.slice_thickness, 6))
                        .str(
                            tags::SPACING_BETWEEN_SLICES,
                            VR::DS,
                            ds(s.spacing_between_slices, 6),
                        );
                })],
            );
        })],
    );
    d.seq(
        tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE,
        frame_groups(s, &frames),
    );
    let mut instances: Vec<&SourceImage> = Vec::new();
    for p in &s.planes {
        if !instances
            .iter()
            .any(|i| i.sop_instance_uid == p.source.sop_instance_uid)
        {
            instances.push(&p.source);
        }
    }
    d.seq(
        tags::REFERENCED_SERIES_SEQUENCE,
        vec![item(|r| {
            r.str(tags::SERIES_INSTANCE_UID, VR::UI, s.source_series_uid.as_str())
                .seq(
                    tags::REFERENCED_INSTANCE_SEQUENCE,
                    instances.iter().map(|i| source_ref(i, false)).collect(),
                );
        })],
    );
    let pixels = pack_bits(frames.iter().map(|&k| s.planes[k].mask.as_slice()));
    d.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        PrimitiveValue::U8(C::from_vec(pixels)),
    ));
    d.into_inner()
}

/// The per-frame functional groups: frames are numbered along the slices' order, and a frame's
/// dimension index is its rank in it.
fn frame_groups(s: &Segmentation, frames: &[usize]) -> Vec<InMemDicomObject> {
    frames
        .iter()
        .enumerate()
        .map(|(rank, &k)| {
            let p = &s.planes[k];
            item(|f| {
                f.seq(
                    tags::DERIVATION_IMAGE_SEQUENCE,
                    vec![item(|di| {
                        di.seq(tags::SOURCE_IMAGE_SEQUENCE, vec![source_ref(&p.source, true)])
                            .seq(
                                tags::DERIVATION_CODE_SEQUENCE,
                                vec![code("113076", "DCM", "Segmentation")],
                            );
                    })],
                )
                .seq(
                    tags::FRAME_CONTENT_SEQUENCE,
                    vec![item(|c| {
                        c.put(DataElement::new(
                            tags::DIMENSION_INDEX_VALUES,
                            VR::UL,
                            PrimitiveValue::U32(C::from_vec(vec![1, rank as u32 + 1])),
                        ));
                    })],
                )
                .seq(
                    tags::PLANE_POSITION_SEQUENCE,
                    vec![item(|pp| {
                        pp.strs(tags::IMAGE_POSITION_PATIENT, VR::DS, &dsv(&p.position));
                    })],
                )
                .seq(
                    tags::SEGMENT_IDENTIFICATION_SEQUENCE,
                    vec![item(|si| {
                        si.us(tags::REFERENCED_SEGMENT_NUMBER, 1);
                    })],
                );
            })
        })
        .collect()
}

/// A reference to a source image (with its purpose inside a derivation).
fn source_ref(src: &SourceImage, purpose: bool) -> InMemDicomObject {
    item(|r| {
        r.str(tags::REFERENCED_SOP_CLASS_UID, VR::UI, src.sop_class_uid.as_str())
            .str(
                tags::REFERENCED_SOP_INSTANCE_UID,
                VR::UI,
                src.sop_instance_uid.as_str(),
            );
        if let (Some(f), true) = (src.frame, purpose) {
            r.str(tags::REFERENCED_FRAME_NUMBER, VR::IS, f.to_string());
        }
        if purpose {
            r.seq(
                tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE,
                vec![code(
                    "121322",
                    "DCM",
                    "Source image for image processing operation",
                )],
            );
        }
    })
}

/// Writes `s` as a Part 10 file (Explicit VR Little Endian).
pub fn write(s: &Segmentation, path: &std::path::Path, date: &str, time: &str) -> Result<u64, String> {
    crate::dicom::build::write_part10(
        encode(s, date, time),
        uids::EXPLICIT_VR_LITTLE_ENDIAN,
        "MEDTRAIN_SEG1",
        path,
    )
}

/// How a read segmentation's pixels are stored.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SegType {
    Binary,
    /// FRACTIONAL with its MaximumFractionalValue; a pixel is in the segment at half of it or more.
    Fractional(u8),
}

/// One frame of a read segmentation.
#[derive(Clone, Debug)]
pub struct ReadFrame {
    pub segment: u16,
    /// The source image's SOPInstanceUID, when the frame names one.
    pub source_sop: Option<String>,
    pub position: Option<[f64; 3]>,
    /// rows × cols, in the segment or not.
    pub pixels: Vec<bool>,
}

/// A segmentation object as read for import.
#[derive(Clone, Debug)]
pub struct ReadSeg {
    pub series_uid: Option<String>,
    pub frame_of_reference_uid: Option<String>,
    pub rows: usize,
    pub cols: usize,
    pub orientation: Option<[f64; 6]>,
    pub pixel_spacing: Option<[f64; 2]>,
    pub kind: SegType,
    /// Segment numbers and labels, in the Segment Sequence's order.
    pub segments: Vec<(u16, String)>,
    pub frames: Vec<ReadFrame>,
}

fn opt_items(obj: &InMemDicomObject, tag: Tag) -> &[InMemDicomObject] {
    obj.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.items())
        .unwrap_or(&[])
}

fn floats<const N: usize>(obj: &InMemDicomObject, tag: Tag) -> Option<[f64; N]> {
    let v = obj.element_opt(tag).ok().flatten()?.to_multi_float64().ok()?;
    (v.len() == N).then(|| std::array::from_fn(|i| v[i]))
}

/// A functional group's item: the frame's own, else the shared one.
fn group<'a>(
    frame: Option<&'a InMemDicomObject>,
    shared: Option<&'a InMemDicomObject>,
    tag: Tag,
) -> Option<&'a InMemDicomObject> {
    frame
        .and_then(|f| opt_items(f, tag).first())
        .or_else(|| shared.and_then(|s| opt_items(s, tag).first()))
}

/// Reads a DICOM SEG file (native, uncompressed pixel data).
pub fn read(path: &std::path::Path) -> Result<ReadSeg, String> {
    use crate::rtstruct::{int, items, text};
    let file = dicom_object::OpenFileOptions::new()
        .open_file(path)
        .map_err(|e| format!("not a readable DICOM file: {e}"))?;
    let ts = file.meta().transfer_syntax().trim_end_matches('\0').to_string();
    let obj: &InMemDicomObject = &file;
    let class = text(obj, tags::SOP_CLASS_UID, "")?;
    if class != SEGMENTATION_STORAGE {
        return Err(format!(
            "SOPClassUID {class} is not Segmentation Storage ({SEGMENTATION_STORAGE})"
        ));
    }
    let kind = match text(obj, tags::SEGMENTATION_TYPE, "")?.as_str() {
        "BINARY" => SegType::Binary,
        "FRACTIONAL" => {
            SegType::Fractional(int(obj, tags::MAXIMUM_FRACTIONAL_VALUE, "")?.clamp(1, 255) as u8)
        }
        other => {
            return Err(format!(
                "SegmentationType {other:?} is neither BINARY nor FRACTIONAL"
            ))
        }
    };
    let (rows, cols) = (
        int(obj, tags::ROWS, "")? as usize,
        int(obj, tags::COLUMNS, "")? as usize,
    );
    let n = int(obj, tags::NUMBER_OF_FRAMES, "")? as usize;
    let segments = items(obj, tags::SEGMENT_SEQUENCE, "")?
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let at = format!("SegmentSequence[{i}].");
            Ok((
                int(s, tags::SEGMENT_NUMBER, &at)? as u16,
                text(s, tags::SEGMENT_LABEL, &at).unwrap_or_default(),
            ))
        })
        .collect::<Result<Vec<_>, String>>()?;
    let per_frame = items(obj, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE, "")?;
    if per_frame.len() != n {
        return Err(format!(
            "PerFrameFunctionalGroupsSequence has {} items for NumberOfFrames {n}",
            per_frame.len()
        ));
    }
    let shared = opt_items(obj, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE).first();
    let bytes = match obj.element_opt(tags::PIXEL_DATA).ok().flatten() {
        Some(e) if e.fragments().is_none() => e.to_bytes().map_err(|e| format!("PixelData: {e}"))?.to_vec(),
        Some(_) => {
            return Err(format!(
                "PixelData is encapsulated (transfer syntax {ts}): compressed SEGs are not read; \
                 decompress it first (for example `dcmconv +te` or `gdcmconv --raw`)"
            ))
        }
        None => return Err("PixelData: missing".into()),
    };
    let plane = rows * cols;
    let need = match kind {
        SegType::Binary => (n * plane).div_ceil(8),
        SegType::Fractional(_) => n * plane,
    };
    if bytes.len() < need {
        return Err(format!(
            "PixelData has {} bytes; {n} frames of {rows}×{cols} need {need}",
            bytes.len()
        ));
    }
    let mut frames = Vec::with_capacity(n);
    for (f, item) in per_frame.iter().enumerate() {
        let at = format!("PerFrameFunctionalGroupsSequence[{f}].");
        let segment = group(Some(item), shared, tags::SEGMENT_IDENTIFICATION_SEQUENCE)
            .ok_or_else(|| format!("{at}SegmentIdentificationSequence: missing"))
            .and_then(|g| int(g, tags::REFERENCED_SEGMENT_NUMBER, &at))? as u16;
        let source_sop = opt_items(item, tags::DERIVATION_IMAGE_SEQUENCE)
            .first()
            .and_then(|d| opt_items(d, tags::SOURCE_IMAGE_SEQUENCE).first())
            .and_then(|s| text(s, tags::REFERENCED_SOP_INSTANCE_UID, "").ok());
        let position = group(Some(item), shared, tags::PLANE_POSITION_SEQUENCE)
            .and_then(|g| floats::<3>(g, tags::IMAGE_POSITION_PATIENT));
        let pixels = (0..plane)
            .map(|p| {
                let i = f * plane + p;
                match kind {
                    SegType::Binary => bytes[i / 8] >> (i % 8) & 1 == 1,
                    SegType::Fractional(max) => 2 * bytes[i] as u32 >= max as u32,
                }
            })
            .collect();
        frames.push(ReadFrame {
            segment,
            source_sop,
            position,
            pixels,
        });
    }
    let orientation = group(per_frame.first(), shared, tags::PLANE_ORIENTATION_SEQUENCE)
        .and_then(|g| floats::<6>(g, tags::IMAGE_ORIENTATION_PATIENT));
    let pixel_spacing = group(per_frame.first(), shared, tags::PIXEL_MEASURES_SEQUENCE)
        .and_then(|g| floats::<2>(g, tags::PIXEL_SPACING));
    let series_uid = opt_items(obj, tags::REFERENCED_SERIES_SEQUENCE)
        .first()
        .and_then(|s| text(s, tags::SERIES_INSTANCE_UID, "").ok());
    Ok(ReadSeg {
        series_uid,
        frame_of_reference_uid: text(obj, tags::FRAME_OF_REFERENCE_UID, "").ok(),
        rows,
        cols,
        orientation,
        pixel_spacing,
        kind,
        segments,
        frames,
    })
}

/// A `2.25` UID (PS3.5 B.2) from the first 128 bits of a hex digest or pseudonym.
pub fn uid_of_hex(hex: &str) -> String {
    let h: String = hex.chars().filter(|c| c.is_ascii_hexdigit()).take(32).collect();
    let v = u128::from_str_radix(&h, 16).unwrap_or(0);
    format!("2.25.{v}")
}

/// The current UTC date and time as DICOM DA and TM.
pub fn now() -> (String, String) {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date of a day count (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    (
        format!("{y:04}{m:02}{d:02}"),
        format!("{:02}{:02}{:02}", rest / 3600, rest / 60 % 60, rest % 60),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_run_from_the_lowest_and_pad_to_even() {
        let f = [true, false, false, false, false, false, false, false, false, true];
        assert_eq!(pack_bits([&f[..]].into_iter()), vec![0b0000_0001, 0b0000_0010]);
        assert_eq!(pack_bits([&f[..3]].into_iter()).len(), 2);
    }

    #[test]
    fn uids_from_pseudonyms_are_decimal_2_25() {
        assert_eq!(uid_of_hex("ff"), "2.25.255");
        let u = uid_of_hex(&"f".repeat(32));
        assert_eq!(u, format!("2.25.{}", u128::MAX));
        assert!(u.len() <= 64);
    }
}
