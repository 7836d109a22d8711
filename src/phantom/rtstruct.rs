//! The CT series' nodules as a DICOM RT Structure Set (`truth/rtstruct/<PatientID>.dcm`): one ROI
//! per nodule, and on every slice whose plane cuts its ball a CLOSED_PLANAR contour of 32 vertices on
//! the circle the plane cuts (in mm, patient coordinates, as the DICOM files state their grid), each
//! naming its image in a Contour Image Sequence. Kept out of `dicom/`: it annotates the series, it is
//! not one of its images.

use super::cohort::PatientPlan;
use super::ct::CtSlice;
use super::write::{ds, write_file, DicomBuilder};
use super::PhantomError;
use crate::dicom::build::seq;
use dicom_core::VR;
use dicom_dictionary_std::{tags, uids};
use dicom_object::InMemDicomObject;
use std::path::Path;

pub(crate) const RTSTRUCT_DIR: &str = "rtstruct";
/// Vertices of each contour.
const VERTICES: usize = 32;

fn image_ref(sop: &str) -> InMemDicomObject {
    let mut d = DicomBuilder::new();
    d.str(tags::REFERENCED_SOP_CLASS_UID, VR::UI, uids::CT_IMAGE_STORAGE)
        .str(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, sop);
    d.into_inner()
}

/// The contours of nodule `n` on each slice its ball crosses (z as written in the files).
fn contours(plan: &PatientPlan, n: usize, sop: &[&str]) -> Vec<InMemDicomObject> {
    let g = &plan.geometry;
    let nodule = &plan.anatomy.nodules[n];
    let [cx, cy, cz] = nodule.centre;
    let mut out = Vec::new();
    for (k, uid) in sop.iter().enumerate() {
        let z: f64 = ds(g.z(k), 3).parse().expect("a number");
        let disk = nodule.radius * nodule.radius - (z - cz) * (z - cz);
        if disk <= 0.0 {
            continue;
        }
        let r = disk.sqrt();
        let data: Vec<String> = (0..VERTICES)
            .flat_map(|v| {
                let a = std::f64::consts::TAU * v as f64 / VERTICES as f64;
                [ds(cx + r * a.cos(), 3), ds(cy + r * a.sin(), 3), ds(z, 3)]
            })
            .collect();
        let mut c = DicomBuilder::new();
        c.put(seq(tags::CONTOUR_IMAGE_SEQUENCE, vec![image_ref(uid)]))
            .str(tags::CONTOUR_GEOMETRIC_TYPE, VR::CS, "CLOSED_PLANAR")
            .str(tags::NUMBER_OF_CONTOUR_POINTS, VR::IS, VERTICES.to_string())
            .strs(tags::CONTOUR_DATA, VR::DS, &data);
        out.push(c.into_inner());
    }
    out
}

/// Writes the structure set of one patient's CT series.
pub(crate) fn write_rtstruct(
    seed: u64,
    plan: &PatientPlan,
    slices: &[CtSlice],
    truth_dir: &Path,
) -> Result<(), PhantomError> {
    let g = &plan.geometry;
    let mut sop = vec![""; g.slices];
    for s in slices {
        sop[s.position] = &s.sop_instance_uid;
    }
    let id = &plan.identity;
    let mut d = DicomBuilder::new();
    d.str(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 100")
        .str(tags::SOP_CLASS_UID, VR::UI, uids::RT_STRUCTURE_SET_STORAGE)
        .str(
            tags::SOP_INSTANCE_UID,
            VR::UI,
            super::seed::uid(seed, "rtstruct instance", plan.index, 0),
        )
        .str(tags::STUDY_DATE, VR::DA, id.ct_date.dicom())
        .str(tags::STUDY_TIME, VR::TM, "093000")
        .str(tags::ACCESSION_NUMBER, VR::SH, id.ct_accession.as_str())
        .str(tags::MODALITY, VR::CS, "RTSTRUCT")
        .str(tags::MANUFACTURER, VR::LO, "MEDTRAIN")
        .str(tags::REFERRING_PHYSICIAN_NAME, VR::PN, id.referring.dicom())
        .str(tags::PATIENT_NAME, VR::PN, id.name.dicom())
        .str(tags::PATIENT_ID, VR::LO, id.patient_id.as_str())
        .str(tags::PATIENT_BIRTH_DATE, VR::DA, id.birth_date.dicom())
        .str(tags::PATIENT_SEX, VR::CS, id.sex.to_string())
        .str(tags::STUDY_INSTANCE_UID, VR::UI, plan.uids.ct_study.as_str())
        .str(
            tags::SERIES_INSTANCE_UID,
            VR::UI,
            super::seed::uid(seed, "rtstruct series", plan.index, 0),
        )
        .str(tags::STUDY_ID, VR::SH, "1")
        .str(tags::SERIES_NUMBER, VR::IS, "90")
        .str(tags::STRUCTURE_SET_LABEL, VR::SH, "NODULES")
        .str(tags::STRUCTURE_SET_DATE, VR::DA, id.ct_date.dicom())
        .str(tags::STRUCTURE_SET_TIME, VR::TM, "100000");
    let mut series = DicomBuilder::new();
    series
        .str(tags::SERIES_INSTANCE_UID, VR::UI, plan.uids.ct_series.as_str())
        .put(seq(
            tags::CONTOUR_IMAGE_SEQUENCE,
            sop.iter().map(|s| image_ref(s)).collect(),
        ));
    let mut study = DicomBuilder::new();
    study
        .str(
            tags::REFERENCED_SOP_CLASS_UID,
            VR::UI,
            // Detached Study Management: retired, and still what RT planning systems write here.
            "1.2.840.10008.3.1.2.3.1",
        )
        .str(
            tags::REFERENCED_SOP_INSTANCE_UID,
            VR::UI,
            plan.uids.ct_study.as_str(),
        )
        .put(seq(
            tags::RT_REFERENCED_SERIES_SEQUENCE,
            vec![series.into_inner()],
        ));
    let mut frame = DicomBuilder::new();
    frame
        .str(
            tags::FRAME_OF_REFERENCE_UID,
            VR::UI,
            plan.uids.frame_of_reference.as_str(),
        )
        .put(seq(tags::RT_REFERENCED_STUDY_SEQUENCE, vec![study.into_inner()]));
    d.put(seq(
        tags::REFERENCED_FRAME_OF_REFERENCE_SEQUENCE,
        vec![frame.into_inner()],
    ));
    let (mut rois, mut roi_contours, mut observations) = (Vec::new(), Vec::new(), Vec::new());
    for n in 0..plan.anatomy.nodules.len() {
        let number = (n + 1).to_string();
        let mut roi = DicomBuilder::new();
        roi.str(tags::ROI_NUMBER, VR::IS, number.as_str())
            .str(
                tags::REFERENCED_FRAME_OF_REFERENCE_UID,
                VR::UI,
                plan.uids.frame_of_reference.as_str(),
            )
            .str(tags::ROI_NAME, VR::LO, format!("Nodule {:03}", n + 1))
            .str(tags::ROI_GENERATION_ALGORITHM, VR::CS, "MANUAL");
        rois.push(roi.into_inner());
        let mut rc = DicomBuilder::new();
        rc.strs(
            tags::ROI_DISPLAY_COLOR,
            VR::IS,
            &["255", "0", "0"].map(String::from),
        )
        .put(seq(tags::CONTOUR_SEQUENCE, contours(plan, n, &sop)))
        .str(tags::REFERENCED_ROI_NUMBER, VR::IS, number.as_str());
        roi_contours.push(rc.into_inner());
        let mut ob = DicomBuilder::new();
        ob.str(tags::OBSERVATION_NUMBER, VR::IS, number.as_str())
            .str(tags::REFERENCED_ROI_NUMBER, VR::IS, number.as_str())
            .str(tags::RTROI_INTERPRETED_TYPE, VR::CS, "GTV")
            .str(tags::ROI_INTERPRETER, VR::PN, "");
        observations.push(ob.into_inner());
    }
    d.put(seq(tags::STRUCTURE_SET_ROI_SEQUENCE, rois))
        .put(seq(tags::ROI_CONTOUR_SEQUENCE, roi_contours))
        .put(seq(tags::RTROI_OBSERVATIONS_SEQUENCE, observations));
    let path = truth_dir
        .join(RTSTRUCT_DIR)
        .join(format!("{}.dcm", id.patient_id));
    write_file(d.into_inner(), uids::EXPLICIT_VR_LITTLE_ENDIAN, &path)?;
    Ok(())
}
