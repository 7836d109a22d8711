//! The DICOM SEG of a predicted mask (`predict`'s `seg/<series key>.dcm`).
//!
//! Packs keep keyed pseudonyms, never the archive's identifiers, and no patient module. So:
//!
//! - **With `--source DIR --key FILE`** the source DICOM files are read again (headers only), their
//!   SeriesInstanceUID and SOPInstanceUID pseudonymised with the site key exactly as `pack` did,
//!   and matched to the pack's `series_key` and each slice's `sop_key` (and frame). The SEG then
//!   copies the source's patient, study and frame-of-reference elements, references the source
//!   instances by their real UIDs, and can go to the archive beside its series.
//! - **Without** it, every identifier is a `2.25` UID made from the pseudonym (series, study, frame
//!   of reference, each instance), the patient ID is the patient pseudonym, and the content
//!   description says the object is for local use.
//!
//! The SEG's own series and instance UIDs are `2.25` UIDs of a BLAKE3 digest of the series key and
//! the mask, so predicting the same mask again names the same object.

use crate::catalog::columns::Level;
use crate::catalog::view::Catalog;
use crate::deid::{IdKind, SiteKey};
use crate::dicomseg::{uid_of_hex, Plane, Segmentation, SourceImage};
use dicom_core::dictionary::DataDictionary;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{DefaultDicomObject, InMemDicomObject};
use std::collections::HashMap;
use std::path::Path;

/// Elements copied from the source: patient, general study, frame of reference (type 2 elements
/// the source lacks are written empty).
const COPIED: [dicom_core::Tag; 14] = [
    tags::SPECIFIC_CHARACTER_SET,
    tags::PATIENT_NAME,
    tags::PATIENT_ID,
    tags::PATIENT_BIRTH_DATE,
    tags::PATIENT_SEX,
    tags::STUDY_INSTANCE_UID,
    tags::STUDY_DATE,
    tags::STUDY_TIME,
    tags::REFERRING_PHYSICIAN_NAME,
    tags::STUDY_ID,
    tags::ACCESSION_NUMBER,
    tags::STUDY_DESCRIPTION,
    tags::FRAME_OF_REFERENCE_UID,
    tags::POSITION_REFERENCE_INDICATOR,
];

/// One source instance.
#[derive(Clone, Debug)]
struct SourceInstance {
    sop_class_uid: String,
    sop_instance_uid: String,
    frames: u32,
}

/// A source series found under `--source`.
#[derive(Clone, Debug)]
pub struct SourceSeries {
    pub series_instance_uid: String,
    identity: InMemDicomObject,
    /// By instance pseudonym.
    instances: HashMap<String, SourceInstance>,
}

/// The source series under a directory, by series pseudonym.
pub type Sources = HashMap<String, SourceSeries>;

fn text(obj: &DefaultDicomObject, tag: dicom_core::Tag) -> Option<String> {
    obj.element(tag).ok().and_then(|e| e.to_str().ok()).map(|s| {
        s.trim_matches(|c: char| c.is_whitespace() || c == '\0')
            .to_string()
    })
}

/// Reads the headers of every DICOM file under `dir` (files that are not DICOM are skipped) and
/// groups their instances by series pseudonym.
pub fn scan_sources(dir: &Path, key: &SiteKey) -> Result<Sources, String> {
    let mut out = Sources::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| format!("{}: {e}", d.display()))?;
        for entry in entries {
            let path = entry.map_err(|e| format!("{}: {e}", d.display()))?.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let Ok(opened) = crate::dicom::read::open_header_checked(&path) else {
                continue;
            };
            let obj = opened.object;
            let (Some(series), Some(sop), Some(class)) = (
                text(&obj, tags::SERIES_INSTANCE_UID),
                text(&obj, tags::SOP_INSTANCE_UID),
                text(&obj, tags::SOP_CLASS_UID),
            ) else {
                continue;
            };
            let entry = out
                .entry(key.pseudonym(IdKind::Series, &series))
                .or_insert_with(|| SourceSeries {
                    series_instance_uid: series.clone(),
                    identity: identity_of(&obj),
                    instances: HashMap::new(),
                });
            let frames = text(&obj, tags::NUMBER_OF_FRAMES)
                .and_then(|v| v.parse().ok())
                .unwrap_or(1);
            entry.instances.insert(
                key.pseudonym(IdKind::Instance, &sop),
                SourceInstance {
                    sop_class_uid: class,
                    sop_instance_uid: sop,
                    frames,
                },
            );
        }
    }
    Ok(out)
}

fn identity_of(obj: &DefaultDicomObject) -> InMemDicomObject {
    let mut d = InMemDicomObject::new_empty();
    for tag in COPIED {
        match obj.element(tag) {
            Ok(e) => d.put(e.clone()),
            Err(_) if tag == tags::SPECIFIC_CHARACTER_SET => None,
            Err(_) => {
                let vr = dicom_dictionary_std::StandardDataDictionary
                    .by_tag(tag)
                    .map_or(VR::LO, |e| e.vr.relaxed());
                d.put(DataElement::new(tag, vr, PrimitiveValue::from("")))
            }
        };
    }
    d
}

/// A catalog key or code cell as text.
fn key_text(k: &[u8]) -> String {
    crate::catalog::columns::cell_text(k).to_string()
}

fn pseudonymous_identity(cat: &Catalog, r: usize) -> Result<InMemDicomObject, String> {
    let err = |e: crate::catalog::CatalogError| format!("catalog series row {r}: {e}");
    let key = |name: &str| -> Result<String, String> {
        Ok(key_text(&cat.col_keys(Level::Series, name).map_err(err)?[r]))
    };
    let (patient, study, series) = (key("patient_key")?, key("study_key")?, key("series_key")?);
    let frame = key("frame_of_reference_key").unwrap_or_default();
    let frame = if frame.is_empty() {
        format!("{series}f")
    } else {
        frame
    };
    let mut d = crate::dicom::build::DicomBuilder::new();
    d.str(tags::PATIENT_NAME, VR::PN, "")
        .str(tags::PATIENT_ID, VR::LO, patient)
        .str(tags::PATIENT_BIRTH_DATE, VR::DA, "")
        .str(tags::PATIENT_SEX, VR::CS, "")
        .str(tags::STUDY_INSTANCE_UID, VR::UI, uid_of_hex(&study))
        .str(tags::STUDY_DATE, VR::DA, "")
        .str(tags::STUDY_TIME, VR::TM, "")
        .str(tags::REFERRING_PHYSICIAN_NAME, VR::PN, "")
        .str(tags::STUDY_ID, VR::SH, "")
        .str(tags::ACCESSION_NUMBER, VR::SH, "")
        .str(tags::FRAME_OF_REFERENCE_UID, VR::UI, uid_of_hex(&frame))
        .str(tags::POSITION_REFERENCE_INDICATOR, VR::LO, "");
    Ok(d.into_inner())
}

fn storage_class(modality: &str) -> &'static str {
    match modality {
        "CT" => uids::CT_IMAGE_STORAGE,
        "MR" => uids::MR_IMAGE_STORAGE,
        _ => uids::SECONDARY_CAPTURE_IMAGE_STORAGE,
    }
}

/// The SEG of catalog series `r` with `mask` on its pack grid (slices, rows, cols), from `source`
/// when given (the series must be found there).
pub fn segmentation_of(
    cat: &Catalog,
    r: usize,
    mask: &[u8],
    source: Option<&Sources>,
) -> Result<Segmentation, String> {
    let err = |e: crate::catalog::CatalogError| format!("catalog series row {r}: {e}");
    let series_key = key_text(&cat.col_keys(Level::Series, "series_key").map_err(err)?[r]);
    let n = cat.col_u32(Level::Series, "n_slices").map_err(err)?[r] as usize;
    let rows = cat.col_u32(Level::Series, "rows").map_err(err)?[r];
    let cols = cat.col_u32(Level::Series, "cols").map_err(err)?[r];
    let start = cat.col_u64(Level::Series, "slice_start").map_err(err)?[r] as usize;
    let sp = cat.col_f64(Level::Series, "pixel_spacing").map_err(err)?;
    let or = cat.col_f64(Level::Series, "orientation").map_err(err)?;
    let thickness = cat.col_f64(Level::Series, "slice_thickness").map_err(err)?[r];
    let spacing = cat.col_f64(Level::Series, "slice_spacing").map_err(err)?[r];
    let modality = key_text(&cat.col_codes(Level::Series, "modality").map_err(err)?[r]);
    let ipp = cat.col_f64(Level::Slice, "image_position").map_err(err)?;
    let sop_keys = cat.col_keys(Level::Slice, "sop_key").map_err(err)?;
    let frame_col = cat.col_u32(Level::Slice, "frame").map_err(err)?;
    let plane = rows as usize * cols as usize;
    if mask.len() != n * plane {
        return Err(format!(
            "series {series_key}: mask of {} voxels, series of {}",
            mask.len(),
            n * plane
        ));
    }
    let found = match source {
        Some(src) => Some(src.get(&series_key).ok_or_else(|| {
            format!("series {series_key}: no series under --source has this pseudonym (is it the directory the pack was made from, with the same site key?)")
        })?),
        None => None,
    };
    let mut planes = Vec::with_capacity(n);
    for k in 0..n {
        let s = start + k;
        let sop_key = key_text(&sop_keys[s]);
        let frame = frame_col[s];
        let source = match found {
            Some(series) => {
                let inst = series.instances.get(&sop_key).ok_or_else(|| {
                    format!("series {series_key}: slice {k}'s instance is not under --source")
                })?;
                SourceImage {
                    sop_class_uid: inst.sop_class_uid.clone(),
                    sop_instance_uid: inst.sop_instance_uid.clone(),
                    frame: (inst.frames > 1).then_some(frame + 1),
                }
            }
            None => SourceImage {
                sop_class_uid: storage_class(&modality).to_string(),
                sop_instance_uid: uid_of_hex(&sop_key),
                frame: (frame > 0).then_some(frame + 1),
            },
        };
        planes.push(Plane {
            position: [ipp[3 * s], ipp[3 * s + 1], ipp[3 * s + 2]],
            source,
            mask: mask[k * plane..(k + 1) * plane].iter().map(|&v| v != 0).collect(),
        });
    }
    let digest = blake3::Hasher::new()
        .update(series_key.as_bytes())
        .update(mask)
        .finalize()
        .to_hex()
        .to_string();
    let instance = blake3::hash(format!("{digest} instance").as_bytes())
        .to_hex()
        .to_string();
    let (identity, source_series_uid, description) = match found {
        Some(series) => (
            series.identity.clone(),
            series.series_instance_uid.clone(),
            "Predicted nodule mask".to_string(),
        ),
        None => (
            pseudonymous_identity(cat, r)?,
            uid_of_hex(&series_key),
            "Local use: UIDs are made from pseudonyms".to_string(),
        ),
    };
    Ok(Segmentation {
        identity,
        source_series_uid,
        series_instance_uid: uid_of_hex(&digest),
        sop_instance_uid: uid_of_hex(&instance),
        series_description: "medtrain segmentation".into(),
        content_description: description,
        rows,
        cols,
        orientation: std::array::from_fn(|i| or[6 * r + i]),
        pixel_spacing: [sp[2 * r], sp[2 * r + 1]],
        slice_thickness: thickness,
        spacing_between_slices: spacing,
        planes,
        segment_label: "Nodule".into(),
        algorithm_name: "medtrain U-Net".into(),
        software_version: env!("CARGO_PKG_VERSION").into(),
    })
}
