//! Ground truth beside the images, keyed the way clinical exports are (PatientID, UIDs,
//! InstanceNumbers): patient follow-up, series and slice nodule labels, lesion geometry in patient
//! coordinates, and the list of planted identifiers. Plain CSV with a header row.

use super::cohort::PatientPlan;
use super::ct::CtSlice;
use super::seed::stream_rng;
use rand::Rng;

pub(crate) const PATIENTS_CSV: &str = "patients.csv";
pub(crate) const SERIES_CSV: &str = "series.csv";
pub(crate) const SLICES_BY_SOP_CSV: &str = "slices_by_sop.csv";
pub(crate) const SLICES_BY_INSTANCE_CSV: &str = "slices_by_instance.csv";
pub(crate) const LESIONS_CSV: &str = "lesions.csv";
pub(crate) const PLANTED_TXT: &str = "planted_identifiers.txt";

pub(crate) const PATIENTS_HEADER: &str =
    "PatientID,FollowUpDays,DeathEvent,NoduleCount,MaxNoduleDiameterMm,CardiothoracicRatio,LungDensityHu";
pub(crate) const SERIES_HEADER: &str = "PatientID,StudyInstanceUID,SeriesInstanceUID,Modality,Nodule";
pub(crate) const SLICES_BY_SOP_HEADER: &str = "PatientID,SeriesInstanceUID,SOPInstanceUID,Nodule";
pub(crate) const SLICES_BY_INSTANCE_HEADER: &str = "PatientID,SeriesInstanceUID,InstanceNumber,Nodule";
pub(crate) const LESIONS_HEADER: &str = "PatientID,SeriesInstanceUID,LesionID,CenterXMm,CenterYMm,CenterZMm,\
RadiusMm,BoxMinXMm,BoxMinYMm,BoxMinZMm,BoxMaxXMm,BoxMaxYMm,BoxMaxZMm";

/// Baseline death hazard of a screening population without nodules (about 1 in 15 per year).
const BASE_HAZARD_PER_DAY: f64 = 1.0 / (15.0 * 365.25);
/// Log-hazard per mm of the largest nodule's diameter: a 20 mm nodule multiplies risk by ~11.
const LOG_HAZARD_PER_NODULE_MM: f64 = 0.12;
/// Log-hazard per unit of heart scale (an enlarged heart, visible on the radiograph as a wide
/// cardiac silhouette): the largest hearts carry about 37× the hazard of the smallest. Strong on
/// purpose: nodules of 7–22 mm are faint on a radiograph, and a cohort small enough to train in a
/// test must still hold a death signal a radiograph model can learn.
const LOG_HAZARD_PER_HEART_SCALE: f64 = 8.0;
/// Heart scale of the baseline hazard (cardiomegaly begins about here); smaller hearts lower it.
const REFERENCE_HEART_SCALE: f64 = 1.15;
/// Log-hazard per unit of emphysema severity (0–1; the lungs up to 90 HU less dense on CT): about
/// 55× from none to the most severe, centred on a severity of one half.
const LOG_HAZARD_PER_EMPHYSEMA: f64 = 4.0;
/// Log-hazard per year of age around the screening median.
const LOG_HAZARD_PER_YEAR: f64 = 0.03;
const MEDIAN_AGE_YEARS: f64 = 67.0;
/// Follow-up ends (administrative censoring) between one and ten years after the CT.
const FOLLOW_UP_DAYS: std::ops::Range<f64> = 365.0..3652.0;

/// Survival with a proportional hazard rising with nodule size, heart size and emphysema: days
/// observed and whether the patient died in that time (else censored).
pub(crate) fn follow_up(seed: u64, plan: &PatientPlan) -> (u32, bool) {
    let mut rng = stream_rng(seed, "follow-up", plan.index);
    let age = plan.identity.ct_date.age_years_since(plan.identity.birth_date) as f64;
    let log_hazard = LOG_HAZARD_PER_NODULE_MM * plan.max_nodule_diameter_mm()
        + LOG_HAZARD_PER_HEART_SCALE * (plan.anatomy.heart_scale - REFERENCE_HEART_SCALE)
        + LOG_HAZARD_PER_EMPHYSEMA * (plan.anatomy.emphysema - 0.5)
        + LOG_HAZARD_PER_YEAR * (age - MEDIAN_AGE_YEARS);
    let hazard = BASE_HAZARD_PER_DAY * log_hazard.exp();
    let uniform: f64 = rng.gen_range(f64::EPSILON..1.0);
    let death_day = -uniform.ln() / hazard;
    let censor_day = rng.gen_range(FOLLOW_UP_DAYS);
    let event = death_day < censor_day;
    let days = if event { death_day } else { censor_day };
    (days.ceil().max(1.0) as u32, event)
}

/// All truth rows of one patient (without headers), in a fixed order.
#[derive(Default)]
pub(crate) struct PatientTruth {
    pub patients: Vec<String>,
    pub series: Vec<String>,
    pub slices_by_sop: Vec<String>,
    pub slices_by_instance: Vec<String>,
    pub lesions: Vec<String>,
    /// Rows of the mask mapping CSV (`masks.rs`).
    pub masks: Vec<String>,
}

fn mm(value: f64) -> String {
    format!("{value:.2}")
}

impl PatientTruth {
    pub fn new(seed: u64, plan: &PatientPlan, slices: &[CtSlice], radiograph_modality: Option<&str>) -> Self {
        let id = &plan.identity.patient_id;
        let series_uid = &plan.uids.ct_series;
        let nodules = &plan.anatomy.nodules;
        let has_nodule = u8::from(!nodules.is_empty());
        let (days, event) = follow_up(seed, plan);
        let mut truth = PatientTruth::default();
        truth.patients.push(format!(
            "{id},{days},{},{},{},{:.3},{:.1}",
            u8::from(event),
            nodules.len(),
            mm(plan.max_nodule_diameter_mm()),
            plan.anatomy.cardiothoracic_ratio(),
            plan.anatomy.lung_hu
        ));
        truth.series.push(format!(
            "{id},{},{series_uid},CT,{has_nodule}",
            plan.uids.ct_study
        ));
        if let Some(modality) = radiograph_modality {
            // The radiograph projects the same chest, so it carries the patient's nodule status.
            truth.series.push(format!(
                "{id},{},{},{modality},{has_nodule}",
                plan.uids.radiograph_study, plan.uids.radiograph_series
            ));
        }
        let mut by_position: Vec<&CtSlice> = slices.iter().collect();
        by_position.sort_by_key(|s| s.position);
        for s in &by_position {
            let label = u8::from(slice_has_nodule(plan, s.position));
            truth
                .slices_by_sop
                .push(format!("{id},{series_uid},{},{label}", s.sop_instance_uid));
        }
        let mut by_instance: Vec<(u32, bool)> = slices
            .iter()
            .map(|s| (s.instance_number, slice_has_nodule(plan, s.position)))
            .collect();
        by_instance.sort_by_key(|&(n, _)| n);
        for (range, label) in instance_runs(&by_instance) {
            truth
                .slices_by_instance
                .push(format!("{id},{series_uid},{range},{}", u8::from(label)));
        }
        for (k, n) in nodules.iter().enumerate() {
            let [x, y, z] = n.centre;
            let r = n.radius;
            truth.lesions.push(format!(
                "{id},{series_uid},L{},{},{},{},{},{},{},{},{},{},{}",
                k + 1,
                mm(x),
                mm(y),
                mm(z),
                mm(r),
                mm(x - r),
                mm(y - r),
                mm(z - r),
                mm(x + r),
                mm(y + r),
                mm(z + r)
            ));
        }
        truth
    }
}

/// Slice-level truth: some nodule is visible in the plane of this slice.
pub(crate) fn slice_has_nodule(plan: &PatientPlan, position: usize) -> bool {
    let z = plan.geometry.z(position);
    plan.anatomy
        .nodules
        .iter()
        .any(|n| plan.anatomy.nodule_visible_at(n, z, plan.geometry.pixel_spacing))
}

/// Runs of consecutive InstanceNumbers with the same label, as exports write them: `40-47`, `12`.
/// Input sorted by InstanceNumber.
pub(crate) fn instance_runs(labels: &[(u32, bool)]) -> Vec<(String, bool)> {
    let mut runs: Vec<(u32, u32, bool)> = Vec::new();
    for &(n, label) in labels {
        match runs.last_mut() {
            Some((_, end, l)) if *l == label && *end + 1 == n => *end = n,
            _ => runs.push((n, n, label)),
        }
    }
    runs.into_iter()
        .map(|(start, end, label)| {
            let text = if start == end {
                start.to_string()
            } else {
                format!("{start}-{end}")
            };
            (text, label)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_compress_consecutive_equal_labels() {
        let labels = [
            (1, false),
            (2, false),
            (3, true),
            (4, true),
            (5, true),
            (6, false),
            (8, false),
        ];
        let runs = instance_runs(&labels);
        let text: Vec<String> = runs
            .iter()
            .map(|(r, l)| format!("{r}:{}", u8::from(*l)))
            .collect();
        assert_eq!(text, ["1-2:0", "3-5:1", "6:0", "8:0"]);
    }
}
