//! Validation and test metrics over a whole split across ranks: each rank scores a disjoint share of
//! the samples, every score is gathered, and the metrics are computed once over all of them (never
//! averaged per rank). Sample scores are aggregated to series and patients; intervals come from a
//! bootstrap over patients. Also the curves (PNG) and the run report.

use super::baseline::{series_baselines, SeriesBaseline};
use super::metrics::{self, Interval};
use super::survival;
use crate::backend::cpu::loss as cpu_loss;
use crate::backend::{Backend, RegressionLoss};
use crate::chart::{self, Chart, Style};
use crate::data::{Dataset, Loader};
use crate::dist::World;
use crate::nn::Net;
use crate::settings::Aggregate;
use crate::settings::{Settings, Task};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

pub type Result<T> = std::result::Result<T, String>;

/// The model's outputs for one sample.
#[derive(Clone, Debug)]
pub struct Prediction {
    pub sample: usize,
    pub outputs: Vec<f32>,
}

/// Scores every sample of `ds` (each rank a contiguous share) and gathers all of them on every rank,
/// in sample order.
pub fn predict_dataset<B: Backend>(
    b: &B,
    world: &World,
    net: &mut Net<B>,
    ds: &Arc<Dataset>,
    batch: usize,
    outputs: usize,
    progress: Option<&str>,
) -> Result<Vec<Prediction>> {
    let len = ds.len();
    let (r, size) = (world.rank(), world.size());
    let mine: Vec<usize> = crate::data::eval_share(r, size, len).collect();
    // Rank 0 shows its own share (every rank has about as many samples).
    let mut shown = match progress {
        Some(what) if r == 0 => crate::logging::Progress::new(what, mine.len() as u64),
        _ => crate::logging::Progress::hidden(),
    };
    let mut bytes = Vec::with_capacity(mine.len() * (8 + 4 * outputs));
    if !mine.is_empty() {
        let mut loader = Loader::new(ds.clone(), mine, batch, 0, None, 2);
        while let Some(next) = loader.next() {
            let batch_data = next.map_err(|e| e.to_string())?;
            net.set_tabular(b, &batch_data.tabular)
                .map_err(|e| e.to_string())?;
            net.forward(b, &batch_data.input, false)
                .map_err(|e| e.to_string())?;
            let out = b
                .download(b.view(net.output(), 0..batch_data.samples.len() * outputs))
                .map_err(|e| e.to_string())?;
            shown.inc(batch_data.valid as u64);
            for row in 0..batch_data.valid {
                bytes.extend_from_slice(&(batch_data.samples[row] as u64).to_le_bytes());
                for v in &out[row * outputs..(row + 1) * outputs] {
                    bytes.extend_from_slice(&v.to_le_bytes());
                }
            }
            loader.recycle(batch_data);
        }
    }
    shown.finish();
    let parts = world.allgather_bytes(&bytes);
    let record = 8 + 4 * outputs;
    let mut all = Vec::with_capacity(len);
    for part in parts {
        for rec in part.chunks_exact(record) {
            let sample = u64::from_le_bytes(rec[..8].try_into().expect("8 bytes")) as usize;
            let outputs = rec[8..]
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect();
            all.push(Prediction { sample, outputs });
        }
    }
    all.sort_by_key(|p| p.sample);
    Ok(all)
}

/// Binary metrics at one level (slices, series or patients).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BinaryMetrics {
    pub n: usize,
    pub positives: usize,
    pub auc: Option<Interval>,
    pub accuracy: Option<f64>,
    pub sensitivity: Option<f64>,
    pub specificity: Option<f64>,
}

/// Regression metrics at one level (series or patients).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RegressionMetrics {
    pub n: usize,
    pub mae: Option<f64>,
    pub spearman: Option<f64>,
}

/// MAE and Spearman of the predictions aggregated per `keys` group against each group's mean target.
fn regression_by(keys: &[u64], pred: &[f64], truth: &[f64], how: Aggregate) -> Option<RegressionMetrics> {
    if pred.is_empty() {
        return None;
    }
    let p = metrics::aggregate(keys, pred, None, how);
    let t = metrics::aggregate(keys, truth, None, Aggregate::Mean);
    let (p, t): (Vec<f64>, Vec<f64>) = p.iter().zip(&t).map(|(a, b)| (a.score, b.score)).unzip();
    Some(RegressionMetrics {
        n: p.len(),
        mae: metrics::mae(&p, &t),
        spearman: metrics::spearman(&p, &t),
    })
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvalReport {
    pub split: String,
    pub samples: usize,
    /// The training loss over the split's samples (binary and regression tasks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<f64>,
    /// "max", "mean" or "topk(k)": how sample scores became series and patient scores.
    pub aggregate: String,
    pub slices: Option<BinaryMetrics>,
    pub series: Option<BinaryMetrics>,
    pub patients: Option<BinaryMetrics>,
    /// Each series scored by its brightest lung voxel (binary CT tasks).
    pub baseline_series: Option<BinaryMetrics>,
    pub c_index: Option<Interval>,
    /// Survival: patients with a risk, a time and an event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub risk_patients: Option<usize>,
    /// Survival: the AUC of an event within `[eval] horizon` per patient.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub horizon_auc: Option<super::survival::HorizonAuc>,
    /// Survival: a trivial image score (no training) in place of the model's risk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_survival: Option<super::survival::SurvivalBaseline>,
    pub mae: Option<f64>,
    /// Regression: Spearman's rank correlation of predictions and targets.
    #[serde(default)]
    pub spearman: Option<f64>,
    /// Regression: predictions aggregated per series and per patient (`[eval] aggregate`) against the
    /// mean target of each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regression_series: Option<RegressionMetrics>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regression_patients: Option<RegressionMetrics>,
    /// Regression: trivial predictors fitted on the training split, scored on this split (`eval`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub baselines: Vec<super::regression::RegressionBaseline>,
    /// Segmentation: per-case overlap and surface distances, with the threshold segmenter beside.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segmentation: Option<super::segeval::SegReport>,
    /// What the figures are drawn from (`eval` writes them); not part of `eval.json`.
    #[serde(skip)]
    pub plotted: super::figures::Plotted,
}

impl EvalReport {
    pub fn one_line(&self) -> String {
        let auc = |m: &Option<BinaryMetrics>| {
            m.as_ref()
                .and_then(|m| m.auc.as_ref())
                .map_or("n/a".to_string(), |i| {
                    format!("{:.3} [{:.3}, {:.3}]", i.estimate, i.low, i.high)
                })
        };
        if let Some(seg) = &self.segmentation {
            return seg.one_line(&self.split);
        }
        match (&self.series, &self.c_index, self.mae) {
            (Some(_), _, _) => format!(
                "{} AUC series {} patients {} | baseline {} ({} series)",
                self.split,
                auc(&self.series),
                auc(&self.patients),
                auc(&self.baseline_series),
                self.series.as_ref().map_or(0, |m| m.n)
            ),
            (None, Some(c), _) => {
                let baseline = self.baseline_survival.as_ref().map_or(String::new(), |b| {
                    b.c_index.as_ref().map_or(String::new(), |i| {
                        format!(" | baseline {:.3} [{:.3}, {:.3}]", i.estimate, i.low, i.high)
                    })
                });
                format!(
                    "{} C-index {:.3} [{:.3}, {:.3}]{baseline}",
                    self.split, c.estimate, c.low, c.high
                )
            }
            (None, None, Some(mae)) => {
                let rho = self.spearman.map_or("n/a".into(), |r| format!("{r:.3}"));
                format!("{} MAE {mae:.4}, Spearman {rho}", self.split)
            }
            _ => format!("{}: no metrics (no labelled samples)", self.split),
        }
    }
}

fn sigmoid(x: f32) -> f64 {
    1.0 / (1.0 + (-(x as f64)).exp())
}

fn binary(
    scores: &[f64],
    labels: &[bool],
    units: Option<&[u32]>,
    s: &Settings,
    seed: u64,
) -> Option<BinaryMetrics> {
    if scores.is_empty() {
        return None;
    }
    let c = metrics::confusion(scores, labels, s.eval.threshold);
    Some(BinaryMetrics {
        n: scores.len(),
        positives: labels.iter().filter(|&&l| l).count(),
        auc: metrics::auc_with_ci(scores, labels, units, s.eval.bootstrap, seed),
        accuracy: metrics::accuracy(scores, labels, s.eval.threshold),
        sensitivity: c.sensitivity(),
        specificity: c.specificity(),
    })
}

fn aggregate_name(a: Aggregate) -> String {
    match a {
        Aggregate::Max => "max".into(),
        Aggregate::Mean => "mean".into(),
        Aggregate::TopK(k) => format!("topk({k})"),
    }
}

/// What the baselines of a split read, shared out across ranks (empty when the settings ask for no
/// baseline or the task has none).
pub fn baselines_of(world: &World, ds: &Dataset, s: &Settings) -> Result<HashMap<u32, SeriesBaseline>> {
    match s.train.task {
        Task::Binary if s.eval.baseline => series_baselines(world, ds, false),
        Task::Survival if s.eval.baseline => series_baselines(world, ds, true),
        _ => Ok(HashMap::new()),
    }
}

/// Metrics of `preds` (all samples of `ds`); `baselines` from [`baselines_of`].
pub fn metrics_of(
    preds: &[Prediction],
    ds: &Dataset,
    s: &Settings,
    split: &str,
    baselines: &HashMap<u32, SeriesBaseline>,
) -> Result<EvalReport> {
    let t = ds.num_targets();
    let mut target = vec![0.0f32; t];
    let mut mask = vec![0.0f32; t];
    let mut report = EvalReport {
        split: split.to_string(),
        samples: preds.len(),
        loss: sample_loss(preds, ds, s),
        aggregate: aggregate_name(s.eval.aggregate),
        slices: None,
        series: None,
        patients: None,
        baseline_series: None,
        c_index: None,
        risk_patients: None,
        horizon_auc: None,
        baseline_survival: None,
        mae: None,
        spearman: None,
        regression_series: None,
        regression_patients: None,
        baselines: Vec::new(),
        segmentation: None,
        plotted: Default::default(),
    };
    let seed = s.train.seed ^ 0xE7A1;
    match s.train.task {
        Task::Binary => {
            // The first label: sample level, then series and patients.
            let (mut scores, mut labels, mut series, mut patients) = (vec![], vec![], vec![], vec![]);
            let mut patient_of_series: BTreeMap<u64, u32> = BTreeMap::new();
            for p in preds {
                ds.target(p.sample, &mut target, &mut mask);
                if mask[0] == 0.0 {
                    continue;
                }
                let meta = ds.meta(p.sample);
                scores.push(sigmoid(p.outputs[0]));
                labels.push(target[0] >= 0.5);
                series.push(meta.series_row as u64);
                patients.push(meta.patient_row as u64);
                patient_of_series.insert(meta.series_row as u64, meta.patient_row);
            }
            if ds.level() == crate::catalog::columns::Level::Slice {
                let units: Vec<u32> = patients.iter().map(|&p| p as u32).collect();
                report.slices = binary(&scores, &labels, Some(&units), s, seed);
            }
            let groups = metrics::aggregate(&series, &scores, Some(&labels), s.eval.aggregate);
            let g_scores: Vec<f64> = groups.iter().map(|g| g.score).collect();
            let g_labels: Vec<bool> = groups.iter().map(|g| g.label.unwrap_or(false)).collect();
            let g_units: Vec<u32> = groups.iter().map(|g| patient_of_series[&g.key]).collect();
            report.series = binary(&g_scores, &g_labels, Some(&g_units), s, seed);
            report.plotted.binary = Some((g_scores.clone(), g_labels.clone(), g_units.clone()));
            let pg = metrics::aggregate(&patients, &scores, Some(&labels), s.eval.aggregate);
            let p_scores: Vec<f64> = pg.iter().map(|g| g.score).collect();
            let p_labels: Vec<bool> = pg.iter().map(|g| g.label.unwrap_or(false)).collect();
            report.patients = binary(&p_scores, &p_labels, None, s, seed);
            if s.eval.baseline && !groups.is_empty() {
                report.baseline_series = baseline(baselines, &groups, &g_units, s, seed);
            }
        }
        Task::Regression => {
            let (mut pred, mut truth, mut series, mut patients) = (vec![], vec![], vec![], vec![]);
            for p in preds {
                ds.target(p.sample, &mut target, &mut mask);
                if mask[0] != 0.0 {
                    let meta = ds.meta(p.sample);
                    pred.push(p.outputs[0] as f64);
                    truth.push(target[0] as f64);
                    series.push(meta.series_row as u64);
                    patients.push(meta.patient_row as u64);
                }
            }
            report.mae = metrics::mae(&pred, &truth);
            report.plotted.regression = Some((pred.clone(), truth.clone()));
            report.spearman = metrics::spearman(&pred, &truth);
            report.regression_series = regression_by(&series, &pred, &truth, s.eval.aggregate);
            report.regression_patients = regression_by(&patients, &pred, &truth, s.eval.aggregate);
        }
        Task::Survival => {
            // Risk per patient: the aggregate of its samples' risks; time and event per patient.
            let (mut keys, mut risks) = (vec![], vec![]);
            let mut outcome: BTreeMap<u64, (f64, bool)> = BTreeMap::new();
            // Each patient's series, for the baseline.
            let mut patient_series: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
            for p in preds {
                ds.target(p.sample, &mut target, &mut mask);
                if mask[0] == 0.0 || mask[1] == 0.0 {
                    continue;
                }
                let meta = ds.meta(p.sample);
                let patient = meta.patient_row as u64;
                keys.push(patient);
                risks.push(p.outputs[0] as f64);
                outcome.insert(patient, (target[0] as f64, target[1] >= 0.5));
                let list = patient_series.entry(patient).or_default();
                if !list.contains(&meta.series_row) {
                    list.push(meta.series_row);
                }
            }
            let groups = metrics::aggregate(&keys, &risks, None, Aggregate::Mean);
            let patients: Vec<u64> = groups.iter().map(|g| g.key).collect();
            let risk: Vec<f64> = groups.iter().map(|g| g.score).collect();
            let time: Vec<f64> = patients.iter().map(|k| outcome[k].0).collect();
            let event: Vec<bool> = patients.iter().map(|k| outcome[k].1).collect();
            let o = survival::Outcomes {
                risk: &risk,
                time: &time,
                event: &event,
            };
            report.risk_patients = Some(patients.len());
            report.plotted.survival = Some((risk.clone(), time.clone(), event.clone()));
            report.c_index = survival::c_index(&o, &s.eval, seed);
            report.horizon_auc = survival::horizon_auc(&o, &s.eval, seed);
            if s.eval.baseline && !patients.is_empty() {
                report.baseline_survival =
                    survival::baseline(baselines, &patients, &patient_series, &time, &event, s, seed);
            }
        }
        // Whole cases, not samples: see `segmentation_report`.
        Task::Segmentation => {}
    }
    Ok(report)
}

/// The brightest-lung-voxel score of each series group (series whose stored volume is not i16 have
/// none and are left out).
fn baseline(
    baselines: &HashMap<u32, SeriesBaseline>,
    groups: &[metrics::Group],
    units: &[u32],
    s: &Settings,
    seed: u64,
) -> Option<BinaryMetrics> {
    let (mut scores, mut labels, mut kept_units) = (vec![], vec![], vec![]);
    for (g, &unit) in groups.iter().zip(units) {
        if let Some(v) = baselines.get(&(g.key as u32)).and_then(|b| b.ct) {
            scores.push(v);
            labels.push(g.label.unwrap_or(false));
            kept_units.push(unit);
        }
    }
    // Thresholds on HU make no sense for accuracy: report the ranking only.
    let mut m = binary(&scores, &labels, Some(&kept_units), s, seed);
    if let Some(m) = m.as_mut() {
        m.accuracy = None;
        m.sensitivity = None;
        m.specificity = None;
    }
    m
}

/// Scores a split and computes its metrics (every rank returns the same report).
pub fn evaluate<B: Backend>(
    b: &B,
    world: &World,
    net: &mut Net<B>,
    ds: &Arc<Dataset>,
    s: &Settings,
) -> Result<EvalReport> {
    if s.train.task == Task::Segmentation {
        let mut seg = super::segeval::evaluate_segmentation(b, world, net, ds, s)?;
        // Training logs the means (metrics.jsonl, TensorBoard): one scalar per case and epoch would
        // swamp both at cohort scale. `eval` lists the cases (cases.csv).
        seg.rows.clear();
        return Ok(segmentation_report(seg, ds, s, &s.train.val_split));
    }
    let preds = predict_dataset(
        b,
        world,
        net,
        ds,
        s.train.batch_size as usize,
        s.num_outputs() as usize,
        None,
    )?;
    let baselines = baselines_of(world, ds, s)?;
    metrics_of(&preds, ds, s, &s.train.val_split, &baselines)
}

/// The report of a segmentation evaluation (its loss is the training loss, which patches define, so
/// none is given for whole cases).
pub fn segmentation_report(
    seg: super::segeval::SegReport,
    ds: &Dataset,
    s: &Settings,
    split: &str,
) -> EvalReport {
    let mut r = metrics_of(&[], ds, s, split, &HashMap::new()).expect("no predictions, no metrics to fail");
    r.samples = seg.cases;
    r.segmentation = Some(seg);
    r
}

/// The training loss over every sample of a split, averaged over the known labels as a training
/// step averages them: binary tasks BCE with logits (and `pos_weight`), regression MSE. `None` for
/// risk tasks, whose Cox loss depends on each batch's risk sets.
fn sample_loss(preds: &[Prediction], ds: &Dataset, s: &Settings) -> Option<f64> {
    let t = ds.num_targets();
    let (mut out, mut targets, mut masks) = (
        vec![],
        vec![0.0f32; preds.len() * t],
        vec![0.0f32; preds.len() * t],
    );
    for (k, p) in preds.iter().enumerate() {
        out.extend(p.outputs.iter().take(t));
        ds.target(
            p.sample,
            &mut targets[k * t..(k + 1) * t],
            &mut masks[k * t..(k + 1) * t],
        );
    }
    if out.len() != targets.len() || !masks.iter().any(|&m| m != 0.0) {
        return None;
    }
    let mut grad = vec![0.0f32; out.len()];
    let loss = match s.train.task {
        Task::Binary => {
            let p = crate::backend::BceParams {
                n: preds.len() as u32,
                labels: t as u32,
            };
            let pw = s.train.pos_weight.map(|w| vec![w; t]);
            cpu_loss::bce_with_logits(&p, &out, &targets, Some(&masks), pw.as_deref(), &mut grad)
        }
        Task::Regression => {
            cpu_loss::regression(RegressionLoss::Mse, &out, &targets, Some(&masks), &mut grad)
        }
        Task::Survival | Task::Segmentation => return None,
    };
    loss.ok().map(f64::from)
}

#[derive(Deserialize)]
struct Line {
    epoch: u64,
    #[serde(default)]
    global_step: u64,
    train_loss: f64,
    eval: Option<EvalReport>,
}

#[derive(Deserialize)]
struct StepLine {
    step: u64,
    loss: f64,
}

/// Weight of the previous value in the loss curve's exponential moving average.
const LOSS_EMA: f64 = 0.9;

/// Exponential moving average with TensorBoard's debiasing (the first values are not pulled
/// toward 0); non-finite values are skipped.
pub fn ema(points: &[(f64, f64)], weight: f64) -> Vec<(f64, f64)> {
    let (mut acc, mut norm) = (0.0, 0.0);
    points
        .iter()
        .filter(|p| p.1.is_finite())
        .map(|&(x, y)| {
            acc = weight * acc + (1.0 - weight) * y;
            norm = weight * norm + (1.0 - weight);
            (x, acc / norm)
        })
        .collect()
}

fn read_lines<T: serde::de::DeserializeOwned>(path: &Path) -> std::io::Result<Vec<T>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e),
    };
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

/// `loss.{png,svg,json}` from `steps.jsonl` and `metrics.jsonl`, and `validation.{png,svg,json}`
/// (the validation metrics per epoch with their intervals).
pub fn write_curves(out: &Path) -> std::io::Result<()> {
    let lines: Vec<Line> = read_lines(&out.join("metrics.jsonl"))?;
    let steps: Vec<StepLine> = read_lines(&out.join("steps.jsonl"))?;
    let raw: Vec<(f64, f64)> = steps.iter().map(|l| (l.step as f64, l.loss)).collect();
    let series = |name: &str, points, style, colour| chart::Series {
        name: name.into(),
        points,
        style,
        colour,
    };
    let loss = Chart {
        title: "training loss".into(),
        x_label: "step".into(),
        y_label: "loss".into(),
        series: vec![
            series("per step", raw.clone(), Style::Faint, 0),
            series(
                &format!("per step, EMA {LOSS_EMA}"),
                ema(&raw, LOSS_EMA),
                Style::Solid,
                0,
            ),
            series(
                "epoch mean",
                lines
                    .iter()
                    .map(|l| (l.global_step as f64, l.train_loss))
                    .collect(),
                Style::LinePoints,
                1,
            ),
            series(
                "validation",
                lines
                    .iter()
                    .filter_map(|l| Some((l.global_step as f64, l.eval.as_ref()?.loss?)))
                    .collect(),
                Style::LinePoints,
                3,
            ),
        ],
        ..Chart::default()
    };
    loss.write(out, "loss")?;
    let pick = |f: &dyn Fn(&EvalReport) -> Option<Interval>| -> Vec<(f64, Interval)> {
        lines
            .iter()
            .filter_map(|l| l.eval.as_ref().and_then(f).map(|v| (l.epoch as f64, v)))
            .collect()
    };
    let auc = |m: &Option<BinaryMetrics>| m.as_ref().and_then(|m| m.auc.clone());
    let point = |v: f64| Interval {
        estimate: v,
        low: f64::NAN,
        high: f64::NAN,
        level: 0.0,
        draws: 0,
        skipped: 0,
    };
    let mut chart = Chart {
        title: "validation".into(),
        x_label: "epoch".into(),
        y_label: "metric (95% interval)".into(),
        ..Chart::default()
    };
    let styles = [
        Style::Solid,
        Style::Dashed,
        Style::Dotted,
        Style::LinePoints,
        Style::Solid,
    ];
    for (i, (name, values)) in [
        ("series AUC", pick(&|e| auc(&e.series))),
        ("patient AUC", pick(&|e| auc(&e.patients))),
        ("baseline series AUC", pick(&|e| auc(&e.baseline_series))),
        ("C-index", pick(&|e| e.c_index.clone())),
        ("MAE", pick(&|e| e.mae.map(point))),
    ]
    .into_iter()
    .enumerate()
    {
        if values.is_empty() {
            continue;
        }
        if values.iter().any(|(_, v)| v.low.is_finite()) {
            chart.bands.push(chart::Band {
                name: String::new(),
                lower: values.iter().map(|(x, v)| (*x, v.low)).collect(),
                upper: values.iter().map(|(x, v)| (*x, v.high)).collect(),
                colour: i,
            });
        }
        let points = values.iter().map(|(x, v)| (*x, v.estimate)).collect();
        chart.series.push(series(name, points, styles[i], i));
    }
    if !chart.series.is_empty() {
        chart.write(out, "validation")?;
    }
    Ok(())
}

fn fmt_interval(i: &Option<Interval>) -> String {
    i.as_ref().map_or("n/a".into(), |i| {
        format!("{:.3} [{:.3}, {:.3}]", i.estimate, i.low, i.high)
    })
}

/// The survival table: the model and its trivial baseline, C-index and AUC within the horizon.
fn survival_markdown(r: &EvalReport, c: &Interval) -> String {
    let horizon = r
        .horizon_auc
        .as_ref()
        .map_or(String::new(), |h| format!(" (horizon {})", h.horizon));
    let mut md = format!(
        "\nA patient's risk: the mean of its images' risks.\n\n| risk score | patients | C-index (95% CI) | AUC of an event within the horizon{horizon} | patients known at the horizon (events) |\n|---|---:|---|---|---|\n"
    );
    let auc = |h: &Option<survival::HorizonAuc>| {
        h.as_ref().map_or(("n/a".to_string(), String::new()), |h| {
            (fmt_interval(&h.auc), format!("{} ({})", h.n, h.events))
        })
    };
    let n = r.risk_patients.map_or(String::new(), |n| n.to_string());
    let (a, known) = auc(&r.horizon_auc);
    md.push_str(&format!(
        "| the model | {n} | {} | {a} | {known} |\n",
        fmt_interval(&Some(*c))
    ));
    if let Some(b) = &r.baseline_survival {
        let (a, known) = auc(&b.horizon_auc);
        md.push_str(&format!(
            "| baseline: {} | {} | {} | {a} | {known} |\n",
            b.name,
            b.n,
            fmt_interval(&b.c_index)
        ));
    }
    md
}

/// Markdown rows of a report.
pub fn report_markdown(r: &EvalReport) -> String {
    let mut md = String::new();
    if let Some(seg) = &r.segmentation {
        return seg.markdown();
    }
    let binary = [&r.slices, &r.series, &r.patients, &r.baseline_series]
        .iter()
        .any(|m| m.is_some());
    if binary {
        md.push_str("| level | n | positives | AUC (95% CI) | accuracy | sensitivity | specificity |\n");
        md.push_str("|---|---:|---:|---|---:|---:|---:|\n");
    }
    let pct = |v: Option<f64>| v.map_or("".to_string(), |v| format!("{:.3}", v));
    for (name, m) in [
        ("slices", &r.slices),
        ("series", &r.series),
        ("patients", &r.patients),
        ("baseline: brightest lung voxel (series)", &r.baseline_series),
    ] {
        if let Some(m) = m {
            md.push_str(&format!(
                "| {name} | {} | {} | {} | {} | {} | {} |\n",
                m.n,
                m.positives,
                fmt_interval(&m.auc),
                pct(m.accuracy),
                pct(m.sensitivity),
                pct(m.specificity)
            ));
        }
    }
    if let Some(c) = &r.c_index {
        md.push_str(&survival_markdown(r, c));
    }
    if let Some(mae) = r.mae {
        let f = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.3}"));
        md.push_str(&format!("\nMAE: {mae:.4} per image\n"));
        let levels = [
            ("series", "series", &r.regression_series),
            ("patient", "patients", &r.regression_patients),
        ];
        for (one, many, m) in levels {
            if let Some(m) = m {
                md.push_str(&format!(
                    "MAE per {one} ({} {many}, scores aggregated by {}): {}, Spearman {}\n",
                    m.n,
                    r.aggregate,
                    f(m.mae),
                    f(m.spearman)
                ));
            }
        }
        if !r.baselines.is_empty() {
            md.push_str("\nPer image:\n\n| predictor | MAE | Spearman |\n|---|---|---|\n");
            md.push_str(&format!("| the model | {mae:.3} | {} |\n", f(r.spearman)));
            for b in &r.baselines {
                md.push_str(&format!("| {} | {} | {} |\n", b.name, f(b.mae), f(b.spearman)));
            }
        }
    }
    md
}

/// `report.md` of a training run.
pub fn write_report(out: &Path, outcome: &super::run::TrainOutcome) -> std::io::Result<()> {
    let mut md = format!(
        "# Training run\n\nStatus: {} after {} epochs ({} steps) on {} rank(s), {:.1} images/s.\n\n",
        outcome.status, outcome.epochs, outcome.global_step, outcome.world_size, outcome.samples_per_second
    );
    if let Some(r) = &outcome.final_eval {
        md.push_str(&format!(
            "## Validation ({}, scores aggregated by {})\n\n",
            r.split, r.aggregate
        ));
        md.push_str(&report_markdown(r));
    }
    md.push_str("\n![loss](loss.png)\n\n![validation](validation.png)\n");
    if let Some(c) = &outcome.last_checkpoint {
        md.push_str(&format!("\nLast checkpoint: `{}`\n", c.display()));
    }
    crate::fsx::write_atomic(&out.join("report.md"), md.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regression_is_aggregated_per_group_against_each_groups_mean_target() {
        // Groups 1 and 2: mean predictions 2 and 5 against targets 2 and 4 → MAE 0.5; max of the
        // predictions 3 and 5 → MAE 1.
        let (keys, pred, truth) = ([1, 1, 2], [1.0, 3.0, 5.0], [2.0, 2.0, 4.0]);
        let m = regression_by(&keys, &pred, &truth, Aggregate::Mean).unwrap();
        assert_eq!((m.n, m.mae), (2, Some(0.5)));
        assert_eq!(m.spearman, Some(1.0));
        let m = regression_by(&keys, &pred, &truth, Aggregate::Max).unwrap();
        assert_eq!(m.mae, Some(1.0));
        assert!(regression_by(&[], &[], &[], Aggregate::Mean).is_none());
    }
}
