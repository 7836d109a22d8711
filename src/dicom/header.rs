//! The header fields `pack` needs from one DICOM file, read without its pixel data. Only these
//! fields ever leave this module: identifiers are pseudonymised by the caller before they are
//! stored, and free text, names and private tags are never read at all.

use dicom_core::Tag;
use dicom_dictionary_std::{tags, uids};
use dicom_object::DefaultDicomObject;

/// Modalities and SOP classes that carry no image to train on: skipped and counted, not quarantined.
const NON_IMAGE_MODALITIES: &[&str] = &[
    "SR", "RTSTRUCT", "RTPLAN", "RTRECORD", "RTDOSE", "PR", "KO", "DOC", "ECG", "HD", "SEG", "REG", "AU",
];
/// Media Storage Directory (DICOMDIR) SOP class.
const DICOMDIR_SOP_CLASS: &str = uids::MEDIA_STORAGE_DIRECTORY_STORAGE;

/// What one file is, as far as packing is concerned.
#[derive(Clone, Debug)]
pub enum FileKind {
    Image(Box<ImageHeader>),
    /// A valid DICOM object without an image to pack (structured report, RT object, DICOMDIR, ...).
    NonImage {
        what: String,
    },
}

/// Header of one image object (one file; multi-frame objects count their frames).
#[derive(Clone, Debug, Default)]
pub struct ImageHeader {
    pub patient_id: String,
    pub study_uid: String,
    pub series_uid: String,
    pub sop_instance_uid: String,
    pub modality: String,
    pub study_date: String,
    pub instance_number: Option<i32>,
    pub rows: u32,
    pub cols: u32,
    pub frames: u32,
    pub samples_per_pixel: u16,
    pub bits_allocated: u16,
    pub pixel_representation: u16,
    pub photometric: String,
    pub image_position: Option<[f64; 3]>,
    pub image_orientation: Option<[f64; 6]>,
    pub pixel_spacing: Option<[f64; 2]>,
    pub slice_thickness: Option<f64>,
    pub window: Option<(f64, f64)>,
    /// PixelPaddingValue and PixelPaddingRangeLimit, as stored values.
    pub padding: Option<(i64, Option<i64>)>,
    pub body_part: String,
    pub convolution_kernel: String,
    /// VOILUTFunction (LINEAR when absent).
    pub voi_function: String,
    /// PatientOrientation (row and column directions of a projection image, e.g. "P\\F").
    pub patient_orientation: String,
    /// BurnedInAnnotation: Some(true) for YES, Some(false) for NO, None when absent.
    pub burned_in_annotation: Option<bool>,
    /// FrameOfReferenceUID (pseudonymised before it is stored).
    pub frame_of_reference_uid: String,
    /// The image region of an ultrasound object (Sequence of Ultrasound Regions), if it has one.
    pub us_region: Option<UsRegion>,
}

/// The tissue region of an ultrasound image: the largest 2D region of the Sequence of Ultrasound
/// Regions (RegionSpatialFormat 1), intersected with the image. Everything outside it (the border, where
/// scanners burn in text, scales and logos) is left out of the pack.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct UsRegion {
    /// RegionLocationMinX0, MinY0, MaxX1, MaxY1: columns and rows, inclusive.
    pub bounds: [u32; 4],
    /// Pixel spacing in mm (between rows, between columns) from PhysicalDeltaY/X when both axes are
    /// in cm (PhysicalUnits 3).
    pub spacing_mm: Option<[f64; 2]>,
}

/// RegionSpatialFormat of a 2D (B-mode) region.
const REGION_2D: i64 = 1;
/// PhysicalUnitsX/YDirection of centimetres.
const UNITS_CM: i64 = 3;

/// The largest 2D region of the Sequence of Ultrasound Regions, within a `rows` × `cols` image.
fn us_region(obj: &DefaultDicomObject, rows: u32, cols: u32) -> Option<UsRegion> {
    let Some(items) = obj
        .element_opt(tags::SEQUENCE_OF_ULTRASOUND_REGIONS)
        .ok()
        .flatten()
        .and_then(|e| e.items())
    else {
        return None;
    };
    let mut best: Option<(u64, UsRegion)> = None;
    for item in items {
        let int = |tag| item.element_opt(tag).ok().flatten()?.to_int::<i64>().ok();
        let float = |tag| item.element_opt(tag).ok().flatten()?.to_float64().ok();
        if int(tags::REGION_SPATIAL_FORMAT) != Some(REGION_2D) {
            continue;
        }
        let corners = [
            int(tags::REGION_LOCATION_MIN_X0),
            int(tags::REGION_LOCATION_MIN_Y0),
            int(tags::REGION_LOCATION_MAX_X1),
            int(tags::REGION_LOCATION_MAX_Y1),
        ];
        // A region without its four corners locates nothing.
        let [Some(x0), Some(y0), Some(x1), Some(y1)] = corners else {
            continue;
        };
        // Scanners write regions that overrun the image (pydicom's examples_palette.dcm: rows 60–518
        // of a 350-row image): the region is its intersection with the image, and one that misses
        // the image is no region.
        let (x0, y0) = (x0.max(0), y0.max(0));
        let (x1, y1) = (x1.min(i64::from(cols) - 1), y1.min(i64::from(rows) - 1));
        if x0 > x1 || y0 > y1 {
            continue;
        }
        let cm = int(tags::PHYSICAL_UNITS_X_DIRECTION) == Some(UNITS_CM)
            && int(tags::PHYSICAL_UNITS_Y_DIRECTION) == Some(UNITS_CM);
        let spacing_mm = match (float(tags::PHYSICAL_DELTA_Y), float(tags::PHYSICAL_DELTA_X)) {
            (Some(dy), Some(dx)) if cm && dy > 0.0 && dx > 0.0 && dy.is_finite() && dx.is_finite() => {
                Some([dy.abs() * 10.0, dx.abs() * 10.0])
            }
            _ => None,
        };
        let area = (x1 - x0 + 1) as u64 * (y1 - y0 + 1) as u64;
        let region = UsRegion {
            bounds: [x0 as u32, y0 as u32, x1 as u32, y1 as u32],
            spacing_mm,
        };
        if best.as_ref().is_none_or(|(a, _)| area > *a) {
            best = Some((area, region));
        }
    }
    best.map(|(_, r)| r)
}

#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    #[error("not a readable DICOM file: {0}")]
    Unreadable(String),
    #[error("missing required attribute {0}")]
    Missing(&'static str),
    #[error("invalid {name}: {reason}")]
    Invalid { name: &'static str, reason: String },
}

fn text(obj: &DefaultDicomObject, tag: Tag) -> Option<String> {
    let value = obj.element_opt(tag).ok().flatten()?.to_str().ok()?;
    let value = value.trim_matches(|c: char| c.is_whitespace() || c == '\0');
    (!value.is_empty()).then(|| value.to_string())
}

fn floats(obj: &DefaultDicomObject, tag: Tag) -> Option<Vec<f64>> {
    obj.element_opt(tag).ok().flatten()?.to_multi_float64().ok()
}

fn fixed<const N: usize>(
    obj: &DefaultDicomObject,
    tag: Tag,
    name: &'static str,
) -> Result<Option<[f64; N]>, HeaderError> {
    match floats(obj, tag) {
        None => Ok(None),
        Some(v) if v.len() >= N && v[..N].iter().all(|x| x.is_finite()) => {
            Ok(Some(std::array::from_fn(|i| v[i])))
        }
        Some(v) => Err(HeaderError::Invalid {
            name,
            reason: format!("expected {N} numbers, found {v:?}"),
        }),
    }
}

fn int(obj: &DefaultDicomObject, tag: Tag) -> Option<i64> {
    obj.element_opt(tag).ok().flatten()?.to_int::<i64>().ok()
}

fn required_int(obj: &DefaultDicomObject, tag: Tag, name: &'static str) -> Result<i64, HeaderError> {
    int(obj, tag).ok_or(HeaderError::Missing(name))
}

/// Classifies and reads one object's header.
pub fn read_header(obj: &DefaultDicomObject) -> Result<FileKind, HeaderError> {
    let sop_class = obj
        .meta()
        .media_storage_sop_class_uid
        .trim_end_matches('\0')
        .to_string();
    if sop_class == DICOMDIR_SOP_CLASS {
        return Ok(FileKind::NonImage {
            what: "DICOMDIR".into(),
        });
    }
    let modality = text(obj, tags::MODALITY).unwrap_or_default();
    if NON_IMAGE_MODALITIES.contains(&modality.as_str()) {
        return Ok(FileKind::NonImage { what: modality });
    }
    if obj.element_opt(tags::ROWS).ok().flatten().is_none() {
        let what = if modality.is_empty() {
            "object without image".to_string()
        } else {
            modality
        };
        return Ok(FileKind::NonImage { what });
    }
    let dim = |tag, name| -> Result<u32, HeaderError> {
        let v = required_int(obj, tag, name)?;
        u32::try_from(v)
            .ok()
            .filter(|v| *v > 0)
            .ok_or(HeaderError::Invalid {
                name,
                reason: format!("{v}"),
            })
    };
    let frames = match int(obj, tags::NUMBER_OF_FRAMES) {
        None => 1,
        Some(n) if n >= 1 => n as u32,
        Some(n) => {
            return Err(HeaderError::Invalid {
                name: "NumberOfFrames",
                reason: n.to_string(),
            })
        }
    };
    let window = match (floats(obj, tags::WINDOW_CENTER), floats(obj, tags::WINDOW_WIDTH)) {
        (Some(c), Some(w)) if !c.is_empty() && !w.is_empty() => Some((c[0], w[0])),
        _ => None,
    };
    let padding = int(obj, tags::PIXEL_PADDING_VALUE).map(|v| (v, int(obj, tags::PIXEL_PADDING_RANGE_LIMIT)));
    let pixel_spacing = match fixed::<2>(obj, tags::PIXEL_SPACING, "PixelSpacing")? {
        Some(s) => Some(s),
        None => fixed::<2>(obj, tags::IMAGER_PIXEL_SPACING, "ImagerPixelSpacing")?,
    };
    let sop_instance_uid = text(obj, tags::SOP_INSTANCE_UID).ok_or(HeaderError::Missing("SOPInstanceUID"))?;
    let (rows, cols) = (dim(tags::ROWS, "Rows")?, dim(tags::COLUMNS, "Columns")?);
    let us_region = if modality == "US" {
        us_region(obj, rows, cols)
    } else {
        None
    };
    Ok(FileKind::Image(Box::new(ImageHeader {
        patient_id: text(obj, tags::PATIENT_ID).unwrap_or_default(),
        // Without a SeriesInstanceUID an object is a series of its own; without a
        // StudyInstanceUID it belongs to an unnamed study.
        study_uid: text(obj, tags::STUDY_INSTANCE_UID).unwrap_or_default(),
        series_uid: text(obj, tags::SERIES_INSTANCE_UID).unwrap_or_else(|| sop_instance_uid.clone()),
        sop_instance_uid,
        modality: if modality.is_empty() {
            "OT".into()
        } else {
            modality
        },
        study_date: text(obj, tags::STUDY_DATE)
            .or_else(|| text(obj, tags::SERIES_DATE))
            .unwrap_or_default(),
        instance_number: int(obj, tags::INSTANCE_NUMBER).and_then(|v| i32::try_from(v).ok()),
        rows,
        cols,
        frames,
        samples_per_pixel: int(obj, tags::SAMPLES_PER_PIXEL).unwrap_or(1) as u16,
        bits_allocated: required_int(obj, tags::BITS_ALLOCATED, "BitsAllocated")? as u16,
        pixel_representation: int(obj, tags::PIXEL_REPRESENTATION).unwrap_or(0) as u16,
        photometric: text(obj, tags::PHOTOMETRIC_INTERPRETATION).unwrap_or_else(|| "MONOCHROME2".into()),
        image_position: fixed::<3>(obj, tags::IMAGE_POSITION_PATIENT, "ImagePositionPatient")?,
        image_orientation: fixed::<6>(obj, tags::IMAGE_ORIENTATION_PATIENT, "ImageOrientationPatient")?,
        pixel_spacing,
        slice_thickness: floats(obj, tags::SLICE_THICKNESS).and_then(|v| v.first().copied()),
        window,
        padding,
        body_part: text(obj, tags::BODY_PART_EXAMINED).unwrap_or_default(),
        convolution_kernel: text(obj, tags::CONVOLUTION_KERNEL).unwrap_or_default(),
        voi_function: text(obj, tags::VOILUT_FUNCTION)
            .map(|f| f.to_ascii_uppercase())
            .unwrap_or_else(|| "LINEAR".into()),
        patient_orientation: text(obj, tags::PATIENT_ORIENTATION).unwrap_or_default(),
        burned_in_annotation: text(obj, tags::BURNED_IN_ANNOTATION).map(|v| v.eq_ignore_ascii_case("YES")),
        frame_of_reference_uid: text(obj, tags::FRAME_OF_REFERENCE_UID).unwrap_or_default(),
        us_region,
    })))
}
