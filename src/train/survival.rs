//! Survival metrics of a risk model, per patient: Harrell's C-index and the AUC of an event within a
//! horizon (death within 5 years in the shipped configs), both with percentile-bootstrap intervals
//! over patients, and the same two for a trivial image baseline that needs no training:
//! - a CT series scores its brightest lung voxel (HU): a dense spot in the lung;
//! - any other image (radiographs, MR, ultrasound) scores its dense fraction: the share of its pixels
//!   above the image's mean after the training intensity pipeline, so a denser chest (a wider heart
//!   and mediastinum, less aerated lung) scores higher.
//!
//! A patient's baseline score is the largest over its series.

use super::baseline::SeriesBaseline;
use super::metrics::{self, Interval};
use crate::settings::{EvalSettings, Settings};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// Name of the baseline on CT series.
pub const CT_BASELINE: &str = "brightest lung voxel (CT)";
/// Name of the baseline on every other series.
pub const IMAGE_BASELINE: &str = "dense fraction of the image";

/// The AUC of an event at or before `horizon` (time units of the labels). Patients censored before
/// the horizon are left out: whether they had the event by then is unknown.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HorizonAuc {
    pub horizon: f64,
    /// Patients known to have had the event by the horizon, or to be event-free at it.
    pub n: usize,
    pub events: usize,
    pub auc: Option<Interval>,
}

/// A trivial risk score scored like the model.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SurvivalBaseline {
    pub name: String,
    pub n: usize,
    pub c_index: Option<Interval>,
    pub horizon_auc: Option<HorizonAuc>,
}

/// Risk, follow-up time and event per patient.
pub struct Outcomes<'a> {
    pub risk: &'a [f64],
    pub time: &'a [f64],
    pub event: &'a [bool],
}

pub fn c_index(o: &Outcomes, eval: &EvalSettings, seed: u64) -> Option<Interval> {
    metrics::bootstrap(o.risk.len(), None, eval.bootstrap, eval.ci_level, seed, |idx| {
        let r: Vec<f64> = idx.iter().map(|&i| o.risk[i]).collect();
        let t: Vec<f64> = idx.iter().map(|&i| o.time[i]).collect();
        let e: Vec<bool> = idx.iter().map(|&i| o.event[i]).collect();
        metrics::c_index(&r, &t, &e)
    })
}

pub fn horizon_auc(o: &Outcomes, e: &EvalSettings, seed: u64) -> Option<HorizonAuc> {
    let horizon = e.horizon;
    let (mut scores, mut labels) = (vec![], vec![]);
    for i in 0..o.risk.len() {
        let died = o.event[i] && o.time[i] <= horizon;
        if died || o.time[i] >= horizon {
            scores.push(o.risk[i]);
            labels.push(died);
        }
    }
    if scores.is_empty() {
        return None;
    }
    Some(HorizonAuc {
        horizon,
        n: scores.len(),
        events: labels.iter().filter(|&&l| l).count(),
        auc: metrics::auc_with_ci(&scores, &labels, None, e.bootstrap, seed),
    })
}

/// The baseline of each patient in `patients` (with its series rows in `patient_series`),
/// scored against the same outcomes as the model, from the series' values in `baselines`.
pub fn baseline(
    baselines: &HashMap<u32, SeriesBaseline>,
    patients: &[u64],
    patient_series: &BTreeMap<u64, Vec<u32>>,
    time: &[f64],
    event: &[bool],
    s: &Settings,
    seed: u64,
) -> Option<SurvivalBaseline> {
    let mut names = std::collections::BTreeSet::new();
    let (mut risk, mut kept_time, mut kept_event) = (vec![], vec![], vec![]);
    for (k, patient) in patients.iter().enumerate() {
        let mut best: Option<f64> = None;
        for series in patient_series.get(patient).map_or(&[][..], |v| v) {
            let Some(b) = baselines.get(series) else { continue };
            let score = if b.hu {
                names.insert(CT_BASELINE);
                b.ct
            } else {
                names.insert(IMAGE_BASELINE);
                b.image
            };
            if let Some(v) = score {
                best = Some(best.map_or(v, |b| b.max(v)));
            }
        }
        if let Some(v) = best {
            risk.push(v);
            kept_time.push(time[k]);
            kept_event.push(event[k]);
        }
    }
    if risk.is_empty() {
        return None;
    }
    let o = Outcomes {
        risk: &risk,
        time: &kept_time,
        event: &kept_event,
    };
    Some(SurvivalBaseline {
        name: names.into_iter().collect::<Vec<_>>().join(" / "),
        n: risk.len(),
        c_index: c_index(&o, &s.eval, seed),
        horizon_auc: horizon_auc(&o, &s.eval, seed),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(horizon: f64) -> EvalSettings {
        EvalSettings {
            horizon,
            bootstrap: 50,
            ..EvalSettings::default()
        }
    }

    #[test]
    fn horizon_auc_leaves_out_the_censored_before_the_horizon() {
        // Patient 2 is censored at day 100 (< 365): unknown at the horizon, left out. Patient 3 dies
        // after the horizon: a non-event at it.
        let risk = [0.9, 0.1, 0.8, 0.2];
        let time = [50.0, 400.0, 100.0, 500.0];
        let event = [true, false, false, true];
        let o = Outcomes {
            risk: &risk,
            time: &time,
            event: &event,
        };
        let h = horizon_auc(&o, &settings(365.0), 1).unwrap();
        assert_eq!((h.n, h.events), (3, 1));
        assert_eq!(h.auc.unwrap().estimate, 1.0);
    }
}
