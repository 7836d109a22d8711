//! DICOM RT Structure Sets (RTSTRUCT) read as planar contours: the series they annotate (Referenced
//! Frame of Reference → RT Referenced Study → RT Referenced Series), and per ROI of the ROI Contour
//! Sequence its name (from the Structure Set ROI Sequence) and contours: geometric type, the image
//! each one lies on when the file says (Contour Image Sequence), and its points in patient
//! coordinates (mm, LPS). Every missing or malformed element is an error naming it; nothing panics on
//! a file's contents.

use dicom_core::dictionary::DataDictionary;
use dicom_core::Tag;
use dicom_dictionary_std::{tags, uids};
use dicom_object::InMemDicomObject;
use std::path::Path;

/// A structure set as the importer needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct RtStruct {
    pub series_uid: String,
    pub rois: Vec<RoiContours>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RoiContours {
    pub number: i64,
    pub name: String,
    pub contours: Vec<Contour>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContourKind {
    ClosedPlanar,
    Point,
    /// OPEN_PLANAR, OPEN_NONPLANAR: lines that bound no region.
    Open,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Contour {
    pub kind: ContourKind,
    /// The SOP Instance UID of the image the contour lies on, when the file names one.
    pub image: Option<String>,
    /// (x, y, z) in mm, patient coordinates.
    pub points: Vec<[f64; 3]>,
}

/// A tag's keyword (for errors). The element readers below are shared with `dicomseg`.
pub fn name(tag: Tag) -> String {
    dicom_dictionary_std::StandardDataDictionary
        .by_tag(tag)
        .map_or(format!("{tag}"), |e| e.alias.to_string())
}

pub fn items<'a>(obj: &'a InMemDicomObject, tag: Tag, at: &str) -> Result<&'a [InMemDicomObject], String> {
    obj.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.items())
        .ok_or_else(|| format!("{at}{}: missing or not a sequence", name(tag)))
}

pub fn text(obj: &InMemDicomObject, tag: Tag, at: &str) -> Result<String, String> {
    obj.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| format!("{at}{}: missing or empty", name(tag)))
}

pub fn int(obj: &InMemDicomObject, tag: Tag, at: &str) -> Result<i64, String> {
    obj.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.to_int::<i64>().ok())
        .ok_or_else(|| format!("{at}{}: missing or not an integer", name(tag)))
}

/// Reads an RTSTRUCT file.
pub fn read(path: &Path) -> Result<RtStruct, String> {
    let file = dicom_object::OpenFileOptions::new()
        .open_file(path)
        .map_err(|e| format!("not a readable DICOM file: {e}"))?;
    parse(&file)
}

/// The structure set in a data set.
pub fn parse(obj: &InMemDicomObject) -> Result<RtStruct, String> {
    let class = text(obj, tags::SOP_CLASS_UID, "")?;
    if class != uids::RT_STRUCTURE_SET_STORAGE {
        return Err(format!(
            "SOPClassUID {class} is not RT Structure Set Storage ({})",
            uids::RT_STRUCTURE_SET_STORAGE
        ));
    }
    let mut series = Vec::new();
    for (f, frame) in items(obj, tags::REFERENCED_FRAME_OF_REFERENCE_SEQUENCE, "")?
        .iter()
        .enumerate()
    {
        let at = format!("ReferencedFrameOfReferenceSequence[{f}].");
        for (s, study) in items(frame, tags::RT_REFERENCED_STUDY_SEQUENCE, &at)?
            .iter()
            .enumerate()
        {
            let at = format!("{at}RTReferencedStudySequence[{s}].");
            for (k, se) in items(study, tags::RT_REFERENCED_SERIES_SEQUENCE, &at)?
                .iter()
                .enumerate()
            {
                let at = format!("{at}RTReferencedSeriesSequence[{k}].");
                series.push(text(se, tags::SERIES_INSTANCE_UID, &at)?);
            }
        }
    }
    series.dedup();
    let series_uid = match series.as_slice() {
        [one] => one.clone(),
        [] => return Err("ReferencedFrameOfReferenceSequence names no series".into()),
        many => {
            return Err(format!(
                "the structure set references {} series ({}); one series per file is imported",
                many.len(),
                many.join(", ")
            ))
        }
    };
    let mut names = std::collections::HashMap::new();
    for (i, roi) in items(obj, tags::STRUCTURE_SET_ROI_SEQUENCE, "")?
        .iter()
        .enumerate()
    {
        let at = format!("StructureSetROISequence[{i}].");
        let number = int(roi, tags::ROI_NUMBER, &at)?;
        names.insert(
            number,
            text(roi, tags::ROI_NAME, &at).unwrap_or_else(|_| format!("ROI {number}")),
        );
    }
    let mut rois = Vec::new();
    let empty: &[InMemDicomObject] = &[];
    for (i, roi) in items(obj, tags::ROI_CONTOUR_SEQUENCE, "")?.iter().enumerate() {
        let at = format!("ROIContourSequence[{i}].");
        let number = int(roi, tags::REFERENCED_ROI_NUMBER, &at)?;
        let name = names.get(&number).cloned().ok_or_else(|| {
            format!("{at}ReferencedROINumber {number} is not in the StructureSetROISequence")
        })?;
        // A ROI without contours (type 3 sequence absent) labels nothing.
        let seq = roi
            .element_opt(tags::CONTOUR_SEQUENCE)
            .ok()
            .flatten()
            .and_then(|e| e.items())
            .unwrap_or(empty);
        let mut contours = Vec::with_capacity(seq.len());
        for (c, contour) in seq.iter().enumerate() {
            contours.push(read_contour(contour, &format!("{at}ContourSequence[{c}]."))?);
        }
        rois.push(RoiContours {
            number,
            name,
            contours,
        });
    }
    Ok(RtStruct { series_uid, rois })
}

fn read_contour(c: &InMemDicomObject, at: &str) -> Result<Contour, String> {
    let kind = match text(c, tags::CONTOUR_GEOMETRIC_TYPE, at)?.as_str() {
        "CLOSED_PLANAR" => ContourKind::ClosedPlanar,
        "POINT" => ContourKind::Point,
        "OPEN_PLANAR" | "OPEN_NONPLANAR" => ContourKind::Open,
        other => {
            return Err(format!(
                "{at}ContourGeometricType {other:?} is not a defined term"
            ))
        }
    };
    let values: Vec<f64> = c
        .element_opt(tags::CONTOUR_DATA)
        .ok()
        .flatten()
        .and_then(|e| e.to_multi_float64().ok())
        .ok_or_else(|| format!("{at}ContourData: missing or not decimal strings"))?;
    if values.is_empty() || values.len() % 3 != 0 || values.iter().any(|v| !v.is_finite()) {
        return Err(format!(
            "{at}ContourData: {} values, not finite (x, y, z) triplets",
            values.len()
        ));
    }
    if let Ok(n) = int(c, tags::NUMBER_OF_CONTOUR_POINTS, at) {
        if n as usize != values.len() / 3 {
            return Err(format!(
                "{at}NumberOfContourPoints {n} but ContourData holds {} points",
                values.len() / 3
            ));
        }
    }
    let image = c
        .element_opt(tags::CONTOUR_IMAGE_SEQUENCE)
        .ok()
        .flatten()
        .and_then(|e| e.items())
        .and_then(|i| i.first())
        .map(|i| {
            text(
                i,
                tags::REFERENCED_SOP_INSTANCE_UID,
                &format!("{at}ContourImageSequence[0]."),
            )
        })
        .transpose()?;
    Ok(Contour {
        kind,
        image,
        points: values.chunks_exact(3).map(|p| [p[0], p[1], p[2]]).collect(),
    })
}
