//! Evaluation of a segmentation model: every series of the split is a case, predicted whole by
//! sliding-window inference on the model's grid (`[eval] overlap`, `gaussian`, `flip_tta`), a voxel
//! foreground where its logit is positive (probability above 1/2). Dice, IoU, HD95 and mean surface
//! distance per case (`segmetrics`, MONAI's definitions) on that grid, at its spacing; means over
//! the cases that define them, with percentile-bootstrap intervals over cases.
//!
//! Cases are shared out across ranks ([`crate::data::eval_share`]) and their rows gathered, so every
//! rank returns the same report. Beside a CT model stands a trivial segmenter on the pack's own grid:
//! voxels denser than −400 HU whose 7×7 in-plane neighbourhood is mostly lung (below −600 HU), the
//! "HU threshold inside the lungs" that vessels and airway walls defeat.

use super::detect::{self, Froc, Region, Scan};
use super::metrics::Interval;
use super::segmetrics::{case_metrics, mean_with_ci, CaseMetrics};
use super::sliding::sliding_window;
use crate::backend::Backend;
use crate::data::mapback::{map_to_pack, series_geometry};
use crate::data::{eval_share, Dataset};
use crate::dist::World;
use crate::nn::Net;
use crate::settings::Settings;
use serde::{Deserialize, Serialize};

pub type Result<T> = std::result::Result<T, String>;

/// One case's row (`cases.csv` of `eval`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CaseRow {
    pub series_key: String,
    pub series_row: u32,
    pub patient_row: u32,
    pub truth_voxels: u64,
    pub predicted_voxels: u64,
    pub dice: Option<f64>,
    pub iou: Option<f64>,
    pub hd95_mm: Option<f64>,
    pub msd_mm: Option<f64>,
    /// The threshold segmenter's Dice and HD95 on the pack's grid (CT only).
    pub baseline_dice: Option<f64>,
    pub baseline_hd95_mm: Option<f64>,
    /// The truth's regions and the model's candidates, in patient coordinates.
    pub scan: Scan,
    /// The threshold segmenter's blobs as candidates (CT only).
    pub baseline_candidates: Option<Vec<Region>>,
}

/// Metric means over cases with their intervals.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SegMetrics {
    pub dice: Option<Interval>,
    pub iou: Option<Interval>,
    pub hd95_mm: Option<Interval>,
    pub msd_mm: Option<Interval>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SegReport {
    pub cases: usize,
    /// Cases whose truth has a labelled voxel (those that define Dice).
    pub cases_with_foreground: usize,
    /// The model on its grid.
    pub model: SegMetrics,
    /// The threshold segmenter (Dice and HD95 only; None for non-CT series).
    pub baseline: Option<SegMetrics>,
    /// Detection from the predicted regions (FROC and CPM); None without nodules.
    pub detection: Option<Froc>,
    /// The threshold segmenter's blobs as a detector.
    pub baseline_detection: Option<Froc>,
    /// Every case, in split order.
    pub rows: Vec<CaseRow>,
}

impl SegReport {
    pub fn one_line(&self, split: &str) -> String {
        let f = |i: &Option<Interval>| {
            i.as_ref().map_or("n/a".to_string(), |i| {
                format!("{:.3} [{:.3}, {:.3}]", i.estimate, i.low, i.high)
            })
        };
        let base = self.baseline.as_ref().map_or(String::new(), |b| {
            format!(" | threshold Dice {}, HD95 {}", f(&b.dice), f(&b.hd95_mm))
        });
        let cpm = self
            .detection
            .as_ref()
            .map_or(String::new(), |d| format!(", CPM {}", f(&Some(d.cpm.clone()))));
        format!(
            "{split} Dice {}, HD95 {} mm{cpm} ({} cases, {} with foreground){base}",
            f(&self.model.dice),
            f(&self.model.hd95_mm),
            self.cases,
            self.cases_with_foreground
        )
    }

    /// The metrics as a Markdown table: the model, then the threshold segmenter.
    pub fn markdown(&self) -> String {
        let f = |i: &Option<Interval>| {
            i.as_ref().map_or("n/a".to_string(), |i| {
                format!("{:.3} [{:.3}, {:.3}]", i.estimate, i.low, i.high)
            })
        };
        let mut md = format!(
            "{} cases, {} with foreground (Dice and IoU are defined on those; HD95 and MSD where \
             both masks have a voxel). Means over cases with {:.0}% bootstrap intervals over cases.\n\n\
             | segmenter | Dice | IoU | HD95 (mm) | MSD (mm) |\n|---|---|---|---|---|\n",
            self.cases,
            self.cases_with_foreground,
            self.model
                .dice
                .as_ref()
                .or(self.model.hd95_mm.as_ref())
                .map_or(95.0, |i| i.level * 100.0)
        );
        for (name, m) in [
            ("the model", Some(&self.model)),
            ("HU threshold in the lungs", self.baseline.as_ref()),
        ] {
            if let Some(m) = m {
                md.push_str(&format!(
                    "| {name} | {} | {} | {} | {} |\n",
                    f(&m.dice),
                    f(&m.iou),
                    f(&m.hd95_mm),
                    f(&m.msd_mm)
                ));
            }
        }
        md.push_str(&self.froc_markdown());
        md
    }

    /// The FROC points and CPM of the model and the threshold segmenter, when the truth has nodules.
    fn froc_markdown(&self) -> String {
        let Some(d) = &self.detection else {
            return String::new();
        };
        let mut md = format!(
            "\nDetection ({} nodules in {} scans): candidates are the predicted regions, a hit lies \
             within a nodule's radius; sensitivity at false positives per scan, CPM their mean with a \
             {:.0}% bootstrap interval over scans.\n\n\
             | detector | CPM | 1/8 | 1/4 | 1/2 | 1 | 2 | 4 | 8 | candidates | nodules hit |\n\
             |---|---|---|---|---|---|---|---|---|---|---|\n",
            d.nodules,
            d.scans,
            d.cpm.level * 100.0
        );
        for (name, f) in [
            ("the model", Some(d)),
            ("HU threshold in the lungs", self.baseline_detection.as_ref()),
        ] {
            if let Some(f) = f {
                let sens: Vec<String> = f.sensitivity.iter().map(|v| format!("{v:.3}")).collect();
                md.push_str(&format!(
                    "| {name} | {:.3} [{:.3}, {:.3}] | {} | {} | {} / {} |\n",
                    f.cpm.estimate,
                    f.cpm.low,
                    f.cpm.high,
                    sens.join(" | "),
                    f.candidates,
                    f.nodules_hit,
                    f.nodules
                ));
            }
        }
        md
    }

    /// The model's candidates of every case as CSV: series key, centre (LPS mm), equivalent
    /// diameter, score, and whether it hits a nodule of the truth.
    pub fn candidates_csv(&self) -> String {
        let mut out = String::from("series_key,x_mm,y_mm,z_mm,diameter_mm,score,voxels,hit\n");
        for r in &self.rows {
            out.push_str(&candidate_rows(
                &r.series_key,
                &r.scan.candidates,
                Some(&r.scan.nodules),
            ));
        }
        out
    }

    /// The rows as CSV (empty cells where a metric is undefined).
    pub fn csv(&self) -> String {
        let o = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.6}"));
        let mut out = String::from(
            "series_key,truth_voxels,predicted_voxels,dice,iou,hd95_mm,msd_mm,baseline_dice,baseline_hd95_mm\n",
        );
        for r in &self.rows {
            out.push_str(&format!(
                "{},{},{},{},{},{},{},{},{}\n",
                r.series_key,
                r.truth_voxels,
                r.predicted_voxels,
                o(r.dice),
                o(r.iou),
                o(r.hd95_mm),
                o(r.msd_mm),
                o(r.baseline_dice),
                o(r.baseline_hd95_mm)
            ));
        }
        out
    }
}

/// Candidates as CSV rows (with a `hit` column when a truth is given).
pub fn candidate_rows(series_key: &str, candidates: &[Region], truth: Option<&[Region]>) -> String {
    let mut out = String::new();
    for c in candidates {
        let hit = truth.map_or(String::new(), |t| format!(",{}", detect::hits_any(c, t)));
        out.push_str(&format!(
            "{series_key},{:.3},{:.3},{:.3},{:.3},{:.6},{}{hit}\n",
            c.centre_mm[0], c.centre_mm[1], c.centre_mm[2], c.diameter_mm, c.score, c.voxels
        ));
    }
    out
}

/// The trivial segmenter on a (slices, rows, cols) HU volume.
pub fn lung_threshold(hu: &[i16], dims: [usize; 3]) -> Vec<bool> {
    let [n, rows, cols] = dims;
    let mut out = vec![false; hu.len()];
    for k in 0..n {
        for r in 0..rows {
            for c in 0..cols {
                let i = (k * rows + r) * cols + c;
                if hu[i] <= -400 {
                    continue;
                }
                let (mut lung, mut all) = (0, 0);
                for rr in r.saturating_sub(3)..(r + 4).min(rows) {
                    for cc in c.saturating_sub(3)..(c + 4).min(cols) {
                        all += 1;
                        lung += (hu[(k * rows + rr) * cols + cc] < -600) as u32;
                    }
                }
                out[i] = 2 * lung > all;
            }
        }
    }
    out
}

/// The case of sample `i` and the model's logits over it, by sliding windows (`[eval] overlap`,
/// `gaussian`, `flip_tta`).
pub fn predict_case<B: Backend>(
    b: &B,
    net: &mut Net<B>,
    ds: &Dataset,
    s: &Settings,
    i: usize,
) -> Result<(crate::data::masks::Case, Vec<f32>)> {
    let case = ds.case(i).map_err(|e| e.to_string())?;
    let window = super::sliding::Window {
        overlap: s.eval.overlap,
        gaussian: s.eval.gaussian,
        flips: s.eval.flip_tta,
    };
    let patch = ds.extent().map(|e| e as usize);
    let channels = ds.channels() as usize;
    let logits = sliding_window(b, net, &case.input, channels, case.dims, patch, &window)
        .map_err(|e| e.to_string())?;
    Ok((case, logits))
}

/// The case of sample `i`: predicted, measured, and its baseline beside it.
fn case_row<B: Backend>(
    b: &B,
    net: &mut Net<B>,
    ds: &Dataset,
    s: &Settings,
    i: usize,
    baseline: bool,
) -> Result<CaseRow> {
    let data_err = |e: crate::data::DataError| e.to_string();
    let (case, logits) = predict_case(b, net, ds, s, i)?;
    let pred: Vec<bool> = logits.iter().map(|&z| z > 0.0).collect();
    let geometry = series_geometry(ds.catalog(), case.series_row)?;
    let native_truth = ds.native_mask(i).map_err(data_err)?;
    let scan = Scan {
        nodules: detect::nodules(&native_truth, case.shape, &geometry),
        candidates: detect::candidates(
            &on_pack_grid(&logits, &case),
            case.shape,
            &geometry,
            s.eval.threshold,
        ),
    };
    let m: CaseMetrics = case_metrics(&pred, &case.truth, case.dims, case.spacing);
    let mut row = CaseRow {
        series_key: case.series_key,
        series_row: case.series_row,
        patient_row: case.patient_row,
        truth_voxels: case.truth.iter().filter(|&&v| v).count() as u64,
        predicted_voxels: pred.iter().filter(|&&v| v).count() as u64,
        dice: m.dice,
        iou: m.iou,
        hd95_mm: m.hd95,
        msd_mm: m.msd,
        scan,
        ..Default::default()
    };
    if baseline {
        let vol = ds.series_volume(i).map_err(data_err)?;
        if vol.display_window.is_none() {
            let blobs = lung_threshold(&vol.values, vol.shape);
            let base = case_metrics(&blobs, &native_truth, vol.shape, vol.spacing);
            row.baseline_dice = base.dice;
            row.baseline_hd95_mm = base.hd95;
            // A blob's score is its mean density (HU): the denser, the more nodule-like.
            let mean_hu = |m: &[usize]| m.iter().map(|&v| vol.values[v] as f64).sum::<f64>() / m.len() as f64;
            row.baseline_candidates = Some(detect::regions(vol.shape, &geometry, |v| blobs[v], mean_hu));
        }
    }
    Ok(row)
}

/// The foreground probability of a case's logits (model grid) on the series' pack grid: every pack
/// voxel the model grid covers reads it trilinearly; voxels outside stay 0.
pub fn on_pack_grid(logits: &[f32], case: &crate::data::masks::Case) -> Vec<f32> {
    let prob: Vec<f32> = logits.iter().map(|&z| 1.0 / (1.0 + (-z).exp())).collect();
    let mut out = vec![0.0f32; case.shape.iter().product()];
    let [_, h, w] = case.dims;
    match case.transforms.as_slice() {
        [whole] => {
            map_to_pack(&prob, case.dims, whole, case.shape, &mut out);
        }
        slices => {
            for (z, t) in slices.iter().enumerate() {
                map_to_pack(
                    &prob[z * h * w..(z + 1) * h * w],
                    [1, h, w],
                    t,
                    case.shape,
                    &mut out,
                );
            }
        }
    }
    out
}

/// Predicts and measures every case of `ds` (every rank returns the same report).
pub fn evaluate_segmentation<B: Backend>(
    b: &B,
    world: &World,
    net: &mut Net<B>,
    ds: &Dataset,
    s: &Settings,
) -> Result<SegReport> {
    let cases = ds.case_samples();
    let mine = eval_share(world.rank(), world.size(), cases.len());
    let mut rows = Vec::with_capacity(mine.len());
    for &i in &cases[mine] {
        rows.push(case_row(b, net, ds, s, i, s.eval.baseline)?);
    }
    let local = serde_json::to_vec(&rows).expect("rows serialise");
    let mut all = Vec::with_capacity(cases.len());
    for part in world.allgather_bytes(&local) {
        let got: Vec<CaseRow> =
            serde_json::from_slice(&part).map_err(|e| format!("gathered case rows: {e}"))?;
        all.extend(got);
    }
    Ok(report_of(all, s))
}

/// Means and intervals of gathered rows.
pub fn report_of(rows: Vec<CaseRow>, s: &Settings) -> SegReport {
    let (n, level) = (s.eval.bootstrap, s.eval.ci_level);
    let seed = s.train.seed ^ 0x5E6;
    let col = |f: &dyn Fn(&CaseRow) -> Option<f64>| rows.iter().map(f).collect::<Vec<_>>();
    let ci = |f: &dyn Fn(&CaseRow) -> Option<f64>| mean_with_ci(&col(f), n, level, seed);
    let model = SegMetrics {
        dice: ci(&|r| r.dice),
        iou: ci(&|r| r.iou),
        hd95_mm: ci(&|r| r.hd95_mm),
        msd_mm: ci(&|r| r.msd_mm),
    };
    let has_baseline = rows
        .iter()
        .any(|r| r.baseline_dice.is_some() || r.baseline_hd95_mm.is_some());
    let baseline = has_baseline.then(|| SegMetrics {
        dice: ci(&|r| r.baseline_dice),
        iou: None,
        hd95_mm: ci(&|r| r.baseline_hd95_mm),
        msd_mm: None,
    });
    let scans: Vec<Scan> = rows.iter().map(|r| r.scan.clone()).collect();
    let detection = detect::froc(&scans, n, level, seed);
    let baseline_detection = match rows.iter().all(|r| r.baseline_candidates.is_some()) && !rows.is_empty() {
        true => {
            let scans: Vec<Scan> = rows
                .iter()
                .map(|r| Scan {
                    nodules: r.scan.nodules.clone(),
                    candidates: r.baseline_candidates.clone().unwrap_or_default(),
                })
                .collect();
            detect::froc(&scans, n, level, seed)
        }
        false => None,
    };
    SegReport {
        cases: rows.len(),
        detection,
        baseline_detection,
        cases_with_foreground: rows.iter().filter(|r| r.truth_voxels > 0).count(),
        model,
        baseline,
        rows,
    }
}
