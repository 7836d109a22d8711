//! Encodes the phantom as DICOM Part 10 files: a CT series (one file per slice) and a radiograph
//! per patient, with the tags a scanner writes and the identifiers a real archive leaks.

use super::cohort::PatientPlan;
use super::ct::{CtSlice, RenderedCt};
use super::identity::{CT_STUDY_TEXT, RADIOGRAPH_STUDY_TEXT};
use super::radiograph::{Detector, RADIOGRAPH_BITS, RADIOGRAPH_MAX};
use super::PhantomError;
use dicom_core::value::C;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::InMemDicomObject;
use std::path::Path;

const IMPLEMENTATION_VERSION_NAME: &str = "MEDTRAIN_PH1";
/// Private block that real scanners use for vendor data; ours carries the patient ID, as some do.
const PRIVATE_GROUP: u16 = 0x0029;
const PRIVATE_CREATOR: &str = "MEDTRAIN PHANTOM";
const PRIVATE_BLOCK: u16 = 0x10;
const PRIVATE_PATIENT_ID_ELEMENT: u16 = 0x10;
const MANUFACTURER: &str = "MEDTRAIN";
const CT_MODEL: &str = "PHANTOM CT 64";
const RADIOGRAPH_MODEL: &str = "PHANTOM DR 1";
const LOW_DOSE_KVP: &str = "120";
const LOW_DOSE_TUBE_CURRENT_MA: &str = "40";
const CONVOLUTION_KERNEL: &str = "LUNG";
const STUDY_TIME: &str = "093000";
/// Lung window, the one screening readers use.
const LUNG_WINDOW: (&str, &str) = ("-600", "1500");
const CT_SERIES_NUMBER: &str = "2";
const RADIOGRAPH_SERIES_NUMBER: &str = "1";
const SOURCE_TO_DETECTOR_MM: &str = "1800";

pub(super) use crate::dicom::build::{ds, DicomBuilder};
type Dataset = DicomBuilder;

/// Patient, study and equipment elements common to every file of a patient; identifiers planted.
fn patient_and_study(plan: &PatientPlan, ct: bool) -> Dataset {
    let id = &plan.identity;
    let (date, accession, study_uid, series_uid, study_text) = if ct {
        (
            id.ct_date,
            &id.ct_accession,
            &plan.uids.ct_study,
            &plan.uids.ct_series,
            CT_STUDY_TEXT,
        )
    } else {
        (
            id.radiograph_date,
            &id.radiograph_accession,
            &plan.uids.radiograph_study,
            &plan.uids.radiograph_series,
            RADIOGRAPH_STUDY_TEXT,
        )
    };
    let mut d = Dataset::new();
    d.str(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 100")
        .str(tags::STUDY_DATE, VR::DA, date.dicom())
        .str(tags::SERIES_DATE, VR::DA, date.dicom())
        .str(tags::CONTENT_DATE, VR::DA, date.dicom())
        .str(tags::STUDY_TIME, VR::TM, STUDY_TIME)
        .str(tags::SERIES_TIME, VR::TM, STUDY_TIME)
        .str(tags::CONTENT_TIME, VR::TM, STUDY_TIME)
        .str(tags::ACCESSION_NUMBER, VR::SH, accession.as_str())
        .str(tags::MANUFACTURER, VR::LO, MANUFACTURER)
        .str(tags::INSTITUTION_NAME, VR::LO, id.institution)
        .str(tags::REFERRING_PHYSICIAN_NAME, VR::PN, id.referring.dicom())
        .str(tags::STUDY_DESCRIPTION, VR::LO, id.study_description(study_text))
        .str(tags::PERFORMING_PHYSICIAN_NAME, VR::PN, id.performing.dicom())
        .str(tags::OPERATORS_NAME, VR::PN, id.operator.dicom())
        .str(tags::PATIENT_NAME, VR::PN, id.name.dicom())
        .str(tags::PATIENT_ID, VR::LO, id.patient_id.as_str())
        .str(tags::PATIENT_BIRTH_DATE, VR::DA, id.birth_date.dicom())
        .str(tags::PATIENT_SEX, VR::CS, id.sex.to_string())
        .str(tags::PATIENT_AGE, VR::AS, id.age_at(date))
        .str(tags::BODY_PART_EXAMINED, VR::CS, "CHEST")
        .str(tags::KVP, VR::DS, LOW_DOSE_KVP)
        .str(tags::STUDY_INSTANCE_UID, VR::UI, study_uid.as_str())
        .str(tags::SERIES_INSTANCE_UID, VR::UI, series_uid.as_str())
        .str(tags::STUDY_ID, VR::SH, "1")
        .str(tags::IMAGE_COMMENTS, VR::LT, id.image_comment())
        .us(tags::SAMPLES_PER_PIXEL, 1)
        .us(tags::BITS_ALLOCATED, 16);
    // Explicit block 0x10 (PS3.5 7.8.1): the creator at (0029,0010) reserves (0029,10xx).
    d.str(Tag(PRIVATE_GROUP, PRIVATE_BLOCK), VR::LO, PRIVATE_CREATOR)
        .str(
            Tag(PRIVATE_GROUP, PRIVATE_BLOCK << 8 | PRIVATE_PATIENT_ID_ELEMENT),
            VR::LO,
            id.patient_id.as_str(),
        );
    d
}

/// Elements shared by every slice of the CT series.
pub(crate) fn ct_series_header(plan: &PatientPlan) -> InMemDicomObject {
    let g = &plan.geometry;
    let style = &plan.ct;
    let mut d = patient_and_study(plan, true);
    d.str(tags::IMAGE_TYPE, VR::CS, "ORIGINAL\\PRIMARY\\AXIAL")
        .str(tags::SOP_CLASS_UID, VR::UI, uids::CT_IMAGE_STORAGE)
        .str(tags::MODALITY, VR::CS, "CT")
        .str(
            tags::SERIES_DESCRIPTION,
            VR::LO,
            format!("LOW DOSE CHEST {}MM", ds(g.slice_spacing, 1)),
        )
        .str(tags::MANUFACTURER_MODEL_NAME, VR::LO, CT_MODEL)
        .str(tags::SLICE_THICKNESS, VR::DS, ds(g.slice_spacing, 3))
        .str(tags::SPACING_BETWEEN_SLICES, VR::DS, ds(g.slice_spacing, 3))
        .str(tags::X_RAY_TUBE_CURRENT, VR::IS, LOW_DOSE_TUBE_CURRENT_MA)
        .str(tags::CONVOLUTION_KERNEL, VR::SH, CONVOLUTION_KERNEL)
        .str(tags::PATIENT_POSITION, VR::CS, "HFS")
        .str(tags::SERIES_NUMBER, VR::IS, CT_SERIES_NUMBER)
        .strs(
            tags::IMAGE_ORIENTATION_PATIENT,
            VR::DS,
            &["1", "0", "0", "0", "1", "0"].map(String::from),
        )
        .str(
            tags::FRAME_OF_REFERENCE_UID,
            VR::UI,
            plan.uids.frame_of_reference.as_str(),
        )
        .str(tags::POSITION_REFERENCE_INDICATOR, VR::LO, "")
        .str(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2")
        .us(tags::ROWS, g.rows as u16)
        .us(tags::COLUMNS, g.cols as u16)
        .strs(
            tags::PIXEL_SPACING,
            VR::DS,
            &[ds(g.pixel_spacing, 4), ds(g.pixel_spacing, 4)],
        )
        .us(tags::BITS_STORED, style.bits_stored)
        .us(tags::HIGH_BIT, style.bits_stored - 1)
        .us(tags::PIXEL_REPRESENTATION, u16::from(!style.unsigned))
        .str(tags::WINDOW_CENTER, VR::DS, LUNG_WINDOW.0)
        .str(tags::WINDOW_WIDTH, VR::DS, LUNG_WINDOW.1)
        .str(
            tags::RESCALE_INTERCEPT,
            VR::DS,
            style.rescale_intercept().to_string(),
        )
        .str(tags::RESCALE_SLOPE, VR::DS, "1")
        .str(tags::RESCALE_TYPE, VR::LO, "HU");
    if let Some(pad) = style.padding_value() {
        let value = if style.unsigned {
            DataElement::new(
                tags::PIXEL_PADDING_VALUE,
                VR::US,
                PrimitiveValue::from(pad as u16),
            )
        } else {
            DataElement::new(
                tags::PIXEL_PADDING_VALUE,
                VR::SS,
                PrimitiveValue::from(pad as i16),
            )
        };
        d.0.put(value);
    }
    d.0
}

/// Writes one CT slice file; returns its size in bytes.
pub(crate) fn write_ct_slice(
    header: &InMemDicomObject,
    plan: &PatientPlan,
    rendered: &RenderedCt,
    slice: &CtSlice,
    path: &Path,
) -> Result<u64, PhantomError> {
    let g = &plan.geometry;
    let z = g.z(slice.position);
    let mut d = Dataset::from(header.clone());
    d.str(tags::SOP_INSTANCE_UID, VR::UI, slice.sop_instance_uid.as_str())
        .str(tags::INSTANCE_NUMBER, VR::IS, slice.instance_number.to_string())
        .strs(
            tags::IMAGE_POSITION_PATIENT,
            VR::DS,
            &[ds(g.origin[0], 2), ds(g.origin[1], 2), ds(z, 3)],
        )
        .str(tags::SLICE_LOCATION, VR::DS, ds(z, 3));
    let words = rendered.stored_plane(&plan.ct, slice.position); // (rows, cols)
    d.0.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OW,
        PrimitiveValue::U16(C::from_vec(words)),
    ));
    let ts = if plan.ct.implicit_vr {
        uids::IMPLICIT_VR_LITTLE_ENDIAN
    } else {
        uids::EXPLICIT_VR_LITTLE_ENDIAN
    };
    write_file(d.0, ts, path)
}

/// Writes the radiograph (CR or DX); returns its size in bytes.
pub(crate) fn write_radiograph(
    plan: &PatientPlan,
    detector: &Detector,
    pixels: Vec<u16>, // (rows, cols)
    sop_instance_uid: &str,
    path: &Path,
) -> Result<u64, PhantomError> {
    let style = &plan.radiograph;
    let (modality, sop_class) = if style.dx {
        ("DX", uids::DIGITAL_X_RAY_IMAGE_STORAGE_FOR_PRESENTATION)
    } else {
        ("CR", uids::COMPUTED_RADIOGRAPHY_IMAGE_STORAGE)
    };
    let photometric = if style.monochrome1 {
        "MONOCHROME1"
    } else {
        "MONOCHROME2"
    };
    let spacing = [ds(detector.pixel_spacing, 4), ds(detector.pixel_spacing, 4)];
    let mut d = patient_and_study(plan, false);
    d.str(tags::IMAGE_TYPE, VR::CS, "ORIGINAL\\PRIMARY")
        .str(tags::SOP_CLASS_UID, VR::UI, sop_class)
        .str(tags::SOP_INSTANCE_UID, VR::UI, sop_instance_uid)
        .str(tags::MODALITY, VR::CS, modality)
        .str(tags::SERIES_DESCRIPTION, VR::LO, "CHEST PA")
        .str(tags::MANUFACTURER_MODEL_NAME, VR::LO, RADIOGRAPH_MODEL)
        .str(tags::DISTANCE_SOURCE_TO_DETECTOR, VR::DS, SOURCE_TO_DETECTOR_MM)
        .strs(tags::IMAGER_PIXEL_SPACING, VR::DS, &spacing)
        .str(tags::VIEW_POSITION, VR::CS, "PA")
        .str(tags::SERIES_NUMBER, VR::IS, RADIOGRAPH_SERIES_NUMBER)
        .str(tags::INSTANCE_NUMBER, VR::IS, "1")
        .strs(
            tags::PATIENT_ORIENTATION,
            VR::CS,
            &["L".to_string(), "F".to_string()],
        )
        .str(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, photometric)
        .us(tags::ROWS, detector.size as u16)
        .us(tags::COLUMNS, detector.size as u16)
        .strs(tags::PIXEL_SPACING, VR::DS, &spacing)
        .us(tags::BITS_STORED, RADIOGRAPH_BITS)
        .us(tags::HIGH_BIT, RADIOGRAPH_BITS - 1)
        .us(tags::PIXEL_REPRESENTATION, 0)
        .str(tags::WINDOW_CENTER, VR::DS, (RADIOGRAPH_MAX / 2 + 1).to_string())
        .str(
            tags::WINDOW_WIDTH,
            VR::DS,
            (u32::from(RADIOGRAPH_MAX) + 1).to_string(),
        )
        .str(tags::RESCALE_INTERCEPT, VR::DS, "0")
        .str(tags::RESCALE_SLOPE, VR::DS, "1");
    if style.dx {
        d.str(tags::PRESENTATION_INTENT_TYPE, VR::CS, "FOR PRESENTATION")
            .str(tags::RESCALE_TYPE, VR::LO, "US")
            .str(tags::PIXEL_INTENSITY_RELATIONSHIP, VR::CS, "LOG")
            .signed(
                tags::PIXEL_INTENSITY_RELATIONSHIP_SIGN,
                intensity_sign(style.monochrome1),
            );
    }
    d.0.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OW,
        PrimitiveValue::U16(C::from_vec(pixels)),
    ));
    write_file(d.0, uids::EXPLICIT_VR_LITTLE_ENDIAN, path)
}

/// PS3.3 C.8.11.3: +1 when lower values mean less beam intensity (more attenuation), which is the
/// inverted (MONOCHROME1) storage; our MONOCHROME2 images store attenuation as high values.
fn intensity_sign(monochrome1: bool) -> i16 {
    if monochrome1 {
        1
    } else {
        -1
    }
}

pub(super) fn write_file(
    object: InMemDicomObject,
    transfer_syntax: &str,
    path: &Path,
) -> Result<u64, PhantomError> {
    crate::dicom::build::write_part10(object, transfer_syntax, IMPLEMENTATION_VERSION_NAME, path).map_err(
        |reason| PhantomError::Dicom {
            path: path.to_path_buf(),
            reason,
        },
    )
}
