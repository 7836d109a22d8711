//! The trivial predictors a regression model is shown beside in `eval`: the training split's mean
//! target, and, when the model fuses tabular inputs, a linear model of those inputs alone (least
//! squares on the training split, the same standardisation and missing indicators the model gets).
//! A fused model that cannot beat the features alone has not learned from the pixels.

use super::metrics;
use crate::data::Dataset;
use serde::{Deserialize, Serialize};

/// One trivial predictor scored on the evaluated split.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RegressionBaseline {
    pub name: String,
    pub mae: Option<f64>,
    pub spearman: Option<f64>,
}

/// The labelled samples of `ds`: (tabular inputs, first target).
fn labelled(ds: &Dataset) -> Result<Vec<(Vec<f64>, f64)>, String> {
    let (nt, nx) = (ds.num_targets(), ds.tabular_len());
    let (mut t, mut m, mut x) = (vec![0.0f32; nt], vec![0.0f32; nt], vec![0.0f32; nx]);
    let mut rows = Vec::with_capacity(ds.len());
    for i in 0..ds.len() {
        ds.target(i, &mut t, &mut m);
        if m.first() != Some(&1.0) {
            continue;
        }
        ds.tabular(i, &mut x).map_err(|e| e.to_string())?;
        rows.push((x.iter().map(|&v| f64::from(v)).collect(), f64::from(t[0])));
    }
    Ok(rows)
}

/// Least squares with an intercept, β = (XᵀX + λI)⁻¹ Xᵀy over rows [1, x...], λ = 1e-6 so that an
/// input constant on the training split (a missing indicator that is never 1) stays solvable.
pub fn least_squares(rows: &[(Vec<f64>, f64)]) -> Option<Vec<f64>> {
    let k = rows.first()?.0.len() + 1;
    let mut a = vec![vec![0.0f64; k + 1]; k];
    for (x, y) in rows {
        let row: Vec<f64> = std::iter::once(1.0).chain(x.iter().copied()).collect();
        for i in 0..k {
            for j in 0..k {
                a[i][j] += row[i] * row[j];
            }
            a[i][k] += row[i] * y;
        }
    }
    for (i, r) in a.iter_mut().enumerate() {
        r[i] += 1e-6;
    }
    // Gaussian elimination with partial pivoting.
    for col in 0..k {
        let pivot = (col..k).max_by(|&p, &q| a[p][col].abs().total_cmp(&a[q][col].abs()))?;
        a.swap(col, pivot);
        if a[col][col].abs() < 1e-12 {
            return None;
        }
        for r in col + 1..k {
            let f = a[r][col] / a[col][col];
            for c in col..=k {
                a[r][c] -= f * a[col][c];
            }
        }
    }
    let mut beta = vec![0.0; k];
    for i in (0..k).rev() {
        let s: f64 = (i + 1..k).map(|j| a[i][j] * beta[j]).sum();
        beta[i] = (a[i][k] - s) / a[i][i];
    }
    Some(beta)
}

fn score(name: &str, pred: &[f64], truth: &[f64]) -> RegressionBaseline {
    RegressionBaseline {
        name: name.into(),
        mae: metrics::mae(pred, truth),
        spearman: metrics::spearman(pred, truth),
    }
}

/// The baselines fitted on `train` and scored on `eval` (both with the model's tabular statistics).
pub fn baselines(train: &Dataset, eval: &Dataset) -> Result<Vec<RegressionBaseline>, String> {
    let (fit, test) = (labelled(train)?, labelled(eval)?);
    if fit.is_empty() || test.is_empty() {
        return Ok(Vec::new());
    }
    let truth: Vec<f64> = test.iter().map(|(_, y)| *y).collect();
    let mean = fit.iter().map(|(_, y)| y).sum::<f64>() / fit.len() as f64;
    let mut out = vec![score(
        "mean of the training split",
        &vec![mean; truth.len()],
        &truth,
    )];
    if train.tabular_len() > 0 {
        if let Some(beta) = least_squares(&fit) {
            let pred: Vec<f64> = test
                .iter()
                .map(|(x, _)| beta[0] + x.iter().zip(&beta[1..]).map(|(a, b)| a * b).sum::<f64>())
                .collect();
            out.push(score("linear model of the tabular inputs alone", &pred, &truth));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_squares_recovers_an_exact_plane() {
        // y = 2 + 3 a − b, no noise: numpy.linalg.lstsq gives [2, 3, −1].
        let rows: Vec<(Vec<f64>, f64)> = [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (2.0, 1.0), (1.0, 3.0)]
            .iter()
            .map(|&(a, b)| (vec![a, b], 2.0 + 3.0 * a - b))
            .collect();
        let beta = least_squares(&rows).unwrap();
        for (got, want) in beta.iter().zip([2.0, 3.0, -1.0]) {
            assert!((got - want).abs() < 1e-5, "{beta:?}");
        }
    }
}
