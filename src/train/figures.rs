//! The evaluation's figures, each a [`Chart`] written as PNG, SVG and its data as JSON:
//! - binary tasks: the series-level ROC curve with a pointwise bootstrap band (resampling patients),
//!   and a reliability diagram (calibration);
//! - risk tasks: Kaplan–Meier curves of the predicted risk's tertiles with the log-rank test;
//! - regression: predicted against true values.

use super::metrics::bootstrap;
use crate::chart::{Band, Chart, Series, Style};
use crate::settings::EvalSettings;
use std::path::Path;

/// What the figures are drawn from, kept by the evaluation (not written to `eval.json`).
#[derive(Clone, Debug, Default)]
pub struct Plotted {
    /// Binary: per series, the score, the label and the patient (the bootstrap's unit).
    pub binary: Option<(Vec<f64>, Vec<bool>, Vec<u32>)>,
    /// Risk: per patient, the predicted risk, the time and whether the event happened.
    pub survival: Option<(Vec<f64>, Vec<f64>, Vec<bool>)>,
    /// Regression: per sample, the prediction and the target.
    pub regression: Option<(Vec<f64>, Vec<f64>)>,
}

/// False-positive rates at which the ROC band is computed.
const ROC_GRID: usize = 101;
/// Bins of the reliability diagram (equal width in predicted probability).
const CALIBRATION_BINS: usize = 10;

/// The ROC curve's corners (FPR, TPR), ties in score taken together; `None` without both classes.
pub fn roc(scores: &[f64], labels: &[bool]) -> Option<Vec<(f64, f64)>> {
    let pos = labels.iter().filter(|&&l| l).count();
    let neg = labels.len() - pos;
    if pos == 0 || neg == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut points = vec![(0.0, 0.0)];
    let mut i = 0;
    while i < order.len() {
        let s = scores[order[i]];
        while i < order.len() && scores[order[i]] == s {
            if labels[order[i]] {
                tp += 1;
            } else {
                fp += 1;
            }
            i += 1;
        }
        points.push((fp as f64 / neg as f64, tp as f64 / pos as f64));
    }
    Some(points)
}

/// The ROC curve's TPR at false-positive rate `f` (linear between corners, the upper value on a
/// vertical segment).
fn tpr_at(curve: &[(f64, f64)], f: f64) -> f64 {
    let mut best: f64 = 0.0;
    for w in curve.windows(2) {
        let ((x0, y0), (x1, y1)) = (w[0], w[1]);
        if f >= x0 && f <= x1 {
            let y = if x1 > x0 {
                y0 + (y1 - y0) * (f - x0) / (x1 - x0)
            } else {
                y1
            };
            best = best.max(y);
        }
    }
    best
}

/// The ROC chart; with `cfg`, a pointwise percentile-bootstrap band (each resample's curve read at
/// every false-positive rate of a fixed grid).
pub fn roc_chart(
    scores: &[f64],
    labels: &[bool],
    units: &[u32],
    band: Option<(&EvalSettings, u64)>,
) -> Option<Chart> {
    let curve = roc(scores, labels)?;
    let grid: Vec<f64> = (0..ROC_GRID).map(|i| i as f64 / (ROC_GRID - 1) as f64).collect();
    let mut bands = vec![];
    if let Some((cfg, seed)) = band {
        // One pass of resamples; the closure keeps each resample's TPR on the grid (the first call
        // is the full sample, the estimate).
        let drawn = std::cell::RefCell::new(Vec::<Vec<f64>>::new());
        bootstrap(
            scores.len(),
            Some(units),
            cfg.bootstrap,
            cfg.ci_level,
            seed,
            |idx| {
                let s: Vec<f64> = idx.iter().map(|&i| scores[i]).collect();
                let l: Vec<bool> = idx.iter().map(|&i| labels[i]).collect();
                let c = roc(&s, &l)?;
                drawn
                    .borrow_mut()
                    .push(grid.iter().map(|&f| tpr_at(&c, f)).collect());
                Some(0.0)
            },
        );
        let drawn = drawn.into_inner();
        if drawn.len() > 1 {
            let tail = (1.0 - cfg.ci_level) / 2.0;
            let at = |g: usize, q: f64| {
                let mut v: Vec<f64> = drawn[1..].iter().map(|d| d[g]).collect();
                v.sort_by(f64::total_cmp);
                v[((q * (v.len() - 1) as f64).round() as usize).min(v.len() - 1)]
            };
            bands.push(Band {
                name: format!("{:.0}% bootstrap band (patients)", cfg.ci_level * 100.0),
                lower: grid.iter().enumerate().map(|(g, &f)| (f, at(g, tail))).collect(),
                upper: grid
                    .iter()
                    .enumerate()
                    .map(|(g, &f)| (f, at(g, 1.0 - tail)))
                    .collect(),
                colour: 0,
            });
        }
    }
    let positives = labels.iter().filter(|&&l| l).count();
    Some(Chart {
        title: format!("ROC, series ({positives} positive of {})", labels.len()),
        x_label: "false-positive rate".into(),
        y_label: "true-positive rate".into(),
        x_range: Some([0.0, 1.0]),
        y_range: Some([0.0, 1.0]),
        bands,
        series: vec![
            Series {
                name: "model".into(),
                points: curve,
                style: Style::Solid,
                colour: 0,
            },
            Series {
                name: "chance".into(),
                points: vec![(0.0, 0.0), (1.0, 1.0)],
                style: Style::Dotted,
                colour: 7,
            },
        ],
        note: None,
    })
}

/// The charts shown per epoch in TensorBoard (no bootstrap band, to keep the epoch end short).
pub fn epoch_charts(plotted: &Plotted) -> Vec<(&'static str, Chart)> {
    let mut charts = vec![];
    if let Some((scores, labels, units)) = &plotted.binary {
        if let Some(c) = roc_chart(scores, labels, units, None) {
            charts.push(("validation/roc", c));
        }
    }
    if let Some((risk, time, event)) = &plotted.survival {
        if risk.len() >= 3 {
            charts.push(("validation/kaplan_meier", km_chart(risk, time, event)));
        }
    }
    charts
}

/// Reliability diagram: per non-empty bin of predicted probability, (mean prediction, observed
/// fraction of positives, count).
pub fn calibration(scores: &[f64], labels: &[bool]) -> Vec<(f64, f64, usize)> {
    let mut bins = vec![(0.0, 0usize, 0usize); CALIBRATION_BINS];
    for (&s, &l) in scores.iter().zip(labels) {
        let b = ((s.clamp(0.0, 1.0) * CALIBRATION_BINS as f64) as usize).min(CALIBRATION_BINS - 1);
        bins[b].0 += s;
        bins[b].1 += l as usize;
        bins[b].2 += 1;
    }
    bins.into_iter()
        .filter(|b| b.2 > 0)
        .map(|(sum, pos, n)| (sum / n as f64, pos as f64 / n as f64, n))
        .collect()
}

fn calibration_chart(scores: &[f64], labels: &[bool]) -> Chart {
    let bins = calibration(scores, labels);
    Chart {
        title: "calibration, series".into(),
        x_label: "mean predicted probability".into(),
        y_label: "observed fraction positive".into(),
        x_range: Some([0.0, 1.0]),
        y_range: Some([0.0, 1.0]),
        bands: vec![],
        series: vec![
            Series {
                name: format!("model ({CALIBRATION_BINS} bins)"),
                points: bins.iter().map(|b| (b.0, b.1)).collect(),
                style: Style::LinePoints,
                colour: 0,
            },
            Series {
                name: "perfect".into(),
                points: vec![(0.0, 0.0), (1.0, 1.0)],
                style: Style::Dotted,
                colour: 7,
            },
        ],
        note: Some(format!(
            "series per bin: {}",
            bins.iter().map(|b| b.2.to_string()).collect::<Vec<_>>().join(" ")
        )),
    }
}

/// Kaplan–Meier estimate: (time, survival just after it) at each distinct event time.
pub fn kaplan_meier(time: &[f64], event: &[bool]) -> Vec<(f64, f64)> {
    let mut order: Vec<usize> = (0..time.len()).collect();
    order.sort_by(|&a, &b| time[a].total_cmp(&time[b]));
    let (mut at_risk, mut s, mut out) = (time.len(), 1.0, vec![]);
    let mut i = 0;
    while i < order.len() {
        let t = time[order[i]];
        let (mut deaths, mut leaving) = (0usize, 0usize);
        while i < order.len() && time[order[i]] == t {
            deaths += event[order[i]] as usize;
            leaving += 1;
            i += 1;
        }
        if deaths > 0 {
            s *= 1.0 - deaths as f64 / at_risk as f64;
            out.push((t, s));
        }
        at_risk -= leaving;
    }
    out
}

/// The log-rank test of equal survival across groups: (χ², degrees of freedom, p). `None` with
/// fewer than two groups or no events.
pub fn log_rank(time: &[f64], event: &[bool], group: &[usize]) -> Option<(f64, usize, f64)> {
    let k = group.iter().copied().max()? + 1;
    let mut times: Vec<f64> = time.iter().zip(event).filter(|p| *p.1).map(|p| *p.0).collect();
    times.sort_by(f64::total_cmp);
    times.dedup();
    let (mut o_minus_e, mut v) = (vec![0.0; k], vec![vec![0.0; k]; k]);
    for &t in &times {
        let mut n = vec![0.0; k];
        let mut d = vec![0.0; k];
        for i in 0..time.len() {
            if time[i] >= t {
                n[group[i]] += 1.0;
                if time[i] == t && event[i] {
                    d[group[i]] += 1.0;
                }
            }
        }
        let (nt, dt): (f64, f64) = (n.iter().sum(), d.iter().sum());
        for g in 0..k {
            o_minus_e[g] += d[g] - n[g] * dt / nt;
            if nt > 1.0 {
                for h in 0..k {
                    let delta = if g == h { 1.0 } else { 0.0 };
                    v[g][h] += dt * (nt - dt) / (nt - 1.0) * n[g] / nt * (delta - n[h] / nt);
                }
            }
        }
    }
    // Groups that ever had someone at risk; the statistic uses all of them but the last.
    let used: Vec<usize> = (0..k).filter(|&g| group.contains(&g)).collect();
    if used.len() < 2 || times.is_empty() {
        return None;
    }
    let m = used.len() - 1;
    let a: Vec<Vec<f64>> = used[..m]
        .iter()
        .map(|&g| used[..m].iter().map(|&h| v[g][h]).collect())
        .collect();
    let b: Vec<f64> = used[..m].iter().map(|&g| o_minus_e[g]).collect();
    let x = solve(a, b.clone())?;
    let chi2: f64 = b.iter().zip(&x).map(|(p, q)| p * q).sum();
    Some((chi2, m, chi2_sf(chi2, m)))
}

/// Solves `a x = b` by Gaussian elimination with partial pivoting; `None` if singular.
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Option<Vec<f64>> {
    let n = b.len();
    for c in 0..n {
        let p = (c..n).max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs()))?;
        if a[p][c].abs() < 1e-12 {
            return None;
        }
        a.swap(c, p);
        b.swap(c, p);
        for r in c + 1..n {
            let f = a[r][c] / a[c][c];
            for j in c..n {
                a[r][j] -= f * a[c][j];
            }
            b[r] -= f * b[c];
        }
    }
    let mut x = vec![0.0; n];
    for r in (0..n).rev() {
        let s: f64 = (r + 1..n).map(|j| a[r][j] * x[j]).sum();
        x[r] = (b[r] - s) / a[r][r];
    }
    Some(x)
}

/// Survival function of the χ² distribution with `df` degrees of freedom: the regularised upper
/// incomplete gamma function Q(df/2, x/2) (series below a + 1, continued fraction above).
pub fn chi2_sf(x: f64, df: usize) -> f64 {
    let (a, x) = (df as f64 / 2.0, x / 2.0);
    if x <= 0.0 {
        return 1.0;
    }
    let log_prefix = a * x.ln() - x - ln_gamma(a);
    if x < a + 1.0 {
        let (mut term, mut sum, mut n) = (1.0 / a, 1.0 / a, a);
        while term.abs() > sum.abs() * 1e-16 {
            n += 1.0;
            term *= x / n;
            sum += term;
        }
        return (1.0 - sum * log_prefix.exp()).clamp(0.0, 1.0);
    }
    // Lentz's continued fraction for Q.
    let tiny = 1e-300;
    let mut b = x + 1.0 - a;
    let mut c = 1.0 / tiny;
    let mut d = 1.0 / b;
    let mut h = d;
    for i in 1..500 {
        let an = -(i as f64) * (i as f64 - a);
        b += 2.0;
        d = an * d + b;
        d = if d.abs() < tiny { tiny } else { d };
        c = b + an / c;
        c = if c.abs() < tiny { tiny } else { c };
        d = 1.0 / d;
        let delta = d * c;
        h *= delta;
        if (delta - 1.0).abs() < 1e-16 {
            break;
        }
    }
    (log_prefix.exp() * h).clamp(0.0, 1.0)
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7, 9 terms; relative error below 1e-15).
fn ln_gamma(x: f64) -> f64 {
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let t = x + 7.5;
    let mut a = C[0];
    for (i, c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// Tertile of each risk (0 lowest … 2 highest), by rank so ties split evenly.
pub fn tertiles(risk: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..risk.len()).collect();
    order.sort_by(|&a, &b| risk[a].total_cmp(&risk[b]));
    let mut group = vec![0; risk.len()];
    for (rank, &i) in order.iter().enumerate() {
        group[i] = (3 * rank / risk.len().max(1)).min(2);
    }
    group
}

fn km_chart(risk: &[f64], time: &[f64], event: &[bool]) -> Chart {
    let group = tertiles(risk);
    let names = ["lowest third of risk", "middle third", "highest third"];
    let styles = [Style::Solid, Style::Dashed, Style::Dotted];
    let mut series = vec![];
    for g in 0..3 {
        let idx: Vec<usize> = (0..risk.len()).filter(|&i| group[i] == g).collect();
        let (t, e): (Vec<f64>, Vec<bool>) = idx.iter().map(|&i| (time[i], event[i])).unzip();
        // Steps: flat until each event time, then down; flat to the last follow-up.
        let mut points = vec![(0.0, 1.0)];
        let mut s = 1.0;
        for (tt, ss) in kaplan_meier(&t, &e) {
            points.push((tt, s));
            points.push((tt, ss));
            s = ss;
        }
        if let Some(end) = t.iter().copied().reduce(f64::max) {
            points.push((end, s));
        }
        series.push(Series {
            name: format!("{} (n = {})", names[g], idx.len()),
            points,
            style: styles[g],
            colour: g,
        });
    }
    let note = log_rank(time, event, &group)
        .map(|(chi2, df, p)| format!("log-rank χ² = {chi2:.2}, df {df}, p = {p:.3e}"));
    Chart {
        title: "Kaplan–Meier by predicted risk".into(),
        x_label: "days".into(),
        y_label: "survival".into(),
        x_range: None,
        y_range: Some([0.0, 1.02]),
        bands: vec![],
        series,
        note,
    }
}

fn regression_chart(pred: &[f64], truth: &[f64]) -> Chart {
    let lo = pred.iter().chain(truth).copied().fold(f64::INFINITY, f64::min);
    let hi = pred
        .iter()
        .chain(truth)
        .copied()
        .fold(f64::NEG_INFINITY, f64::max);
    Chart {
        title: "predicted against true".into(),
        x_label: "true".into(),
        y_label: "predicted".into(),
        x_range: None,
        y_range: None,
        bands: vec![],
        series: vec![
            Series {
                name: "samples".into(),
                points: truth.iter().copied().zip(pred.iter().copied()).collect(),
                style: Style::Points,
                colour: 0,
            },
            Series {
                name: "identity".into(),
                points: if lo.is_finite() {
                    vec![(lo, lo), (hi, hi)]
                } else {
                    vec![]
                },
                style: Style::Dotted,
                colour: 7,
            },
        ],
        note: None,
    }
}

/// Writes the figures `plotted` allows into `out`; returns the names of the charts written.
pub fn write_figures(
    plotted: &Plotted,
    cfg: &EvalSettings,
    seed: u64,
    out: &Path,
) -> std::io::Result<Vec<String>> {
    let mut written = vec![];
    let mut put = |chart: Chart, stem: &str| -> std::io::Result<()> {
        chart.write(out, stem)?;
        written.push(stem.to_string());
        Ok(())
    };
    if let Some((scores, labels, units)) = &plotted.binary {
        if let Some(c) = roc_chart(scores, labels, units, Some((cfg, seed))) {
            put(c, "roc")?;
        }
        if !scores.is_empty() {
            put(calibration_chart(scores, labels), "calibration")?;
        }
    }
    if let Some((risk, time, event)) = &plotted.survival {
        if risk.len() >= 3 {
            put(km_chart(risk, time, event), "km")?;
        }
    }
    if let Some((pred, truth)) = &plotted.regression {
        if !pred.is_empty() {
            put(regression_chart(pred, truth), "regression")?;
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chi2_survival_matches_closed_forms() {
        // df 2: exp(−x/2); df 1 at x = 3.841458820694124: 0.05; df 4: exp(−x/2)(1 + x/2).
        for x in [0.1, 1.0, 5.0, 20.0, 80.0] {
            assert!((chi2_sf(x, 2) - (-x / 2.0f64).exp()).abs() < 1e-13, "{x}");
            let want4 = (-x / 2.0f64).exp() * (1.0 + x / 2.0);
            assert!((chi2_sf(x, 4) - want4).abs() < 1e-13, "{x}");
        }
        assert!((chi2_sf(3.841458820694124, 1) - 0.05).abs() < 1e-12);
        assert_eq!(chi2_sf(0.0, 3), 1.0);
    }

    #[test]
    fn roc_corners_and_interpolation() {
        let c = roc(&[0.9, 0.8, 0.8, 0.1], &[true, true, false, false]).unwrap();
        assert_eq!(c, vec![(0.0, 0.0), (0.0, 0.5), (0.5, 1.0), (1.0, 1.0)]);
        assert_eq!(tpr_at(&c, 0.0), 0.5);
        assert_eq!(tpr_at(&c, 0.25), 0.75);
        assert!(roc(&[0.1], &[true]).is_none());
    }

    #[test]
    fn calibration_bins_and_tertiles() {
        let b = calibration(&[0.05, 0.15, 0.95, 0.91], &[false, true, true, true]);
        assert_eq!(b.len(), 3);
        assert!((b[2].0 - 0.93).abs() < 1e-12 && b[2].1 == 1.0 && b[2].2 == 2);
        assert_eq!(tertiles(&[5.0, 1.0, 3.0, 2.0, 6.0, 4.0]), vec![2, 0, 1, 0, 2, 1]);
    }
}
