//! Losses, fused with their gradient. All sums run sequentially in f64: the batch is small next to the
//! layers, and a fixed order keeps the bits reproducible.

use crate::backend::{check_len, BackendError, BceParams, CrossEntropyParams, RegressionLoss, Result};

/// Softmax cross-entropy, PyTorch semantics: per-sample coefficients a_c = (1−ε)·w_y·[c=y] + ε/C·w_c,
/// loss = Σ_i Σ_c a_ic·(−log p_ic) / Σ_i w_{y_i}.
pub fn cross_entropy(
    p: &CrossEntropyParams,
    logits: &[f32],
    targets: &[f32],
    class_weights: Option<&[f32]>,
    dlogits: &mut [f32],
) -> Result<f32> {
    let (n, classes) = (p.n as usize, p.classes as usize);
    check_len("cross_entropy", "logits", n * classes, logits.len())?;
    check_len("cross_entropy", "targets", n, targets.len())?;
    check_len("cross_entropy", "dlogits", n * classes, dlogits.len())?;
    if let Some(w) = class_weights {
        check_len("cross_entropy", "class weights", classes, w.len())?;
    }
    let weight = |c: usize| class_weights.map_or(1.0, |w| w[c] as f64);
    let eps = p.label_smoothing as f64;
    let mut total = 0.0f64;
    let mut norm = 0.0f64;
    let mut probs = vec![0.0f64; classes];
    let mut coef = vec![0.0f64; classes];
    for i in 0..n {
        let y = class_index(targets[i], classes)?;
        let row = &logits[i * classes..][..classes];
        let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
        let log_z = row.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln() + max;
        for c in 0..classes {
            probs[c] = (row[c] as f64 - log_z).exp();
            coef[c] = eps / classes as f64 * weight(c) + if c == y { (1.0 - eps) * weight(y) } else { 0.0 };
            total += coef[c] * (log_z - row[c] as f64);
        }
        norm += weight(y);
        let coef_sum: f64 = coef.iter().sum();
        for c in 0..classes {
            // d/dz_c Σ_k a_k·(−log p_k) = A·p_c − a_c
            dlogits[i * classes + c] = (coef_sum * probs[c] - coef[c]) as f32;
        }
    }
    let inv = if norm > 0.0 { 1.0 / norm } else { 0.0 };
    dlogits.iter_mut().for_each(|d| *d = (*d as f64 * inv) as f32);
    Ok((total * inv) as f32)
}

fn class_index(t: f32, classes: usize) -> Result<usize> {
    if t >= 0.0 && t.fract() == 0.0 && (t as usize) < classes {
        Ok(t as usize)
    } else {
        Err(BackendError::Target {
            op: "cross_entropy",
            value: t,
            classes,
        })
    }
}

fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// loss_ij = pw_j·y·softplus(−x) + (1−y)·softplus(x), averaged over the known (mask ≠ 0) entries.
pub fn bce_with_logits(
    p: &BceParams,
    logits: &[f32],
    targets: &[f32],
    mask: Option<&[f32]>,
    pos_weight: Option<&[f32]>,
    dlogits: &mut [f32],
) -> Result<f32> {
    let (n, labels) = (p.n as usize, p.labels as usize);
    for (what, len) in [
        ("logits", logits.len()),
        ("targets", targets.len()),
        ("dlogits", dlogits.len()),
    ] {
        check_len("bce_with_logits", what, n * labels, len)?;
    }
    if let Some(m) = mask {
        check_len("bce_with_logits", "mask", n * labels, m.len())?;
    }
    if let Some(pw) = pos_weight {
        check_len("bce_with_logits", "pos_weight", labels, pw.len())?;
    }
    let known = |i: usize| mask.map_or(true, |m| m[i] != 0.0);
    let count = (0..n * labels).filter(|&i| known(i)).count();
    let inv = if count > 0 { 1.0 / count as f64 } else { 0.0 };
    let mut total = 0.0f64;
    for i in 0..n * labels {
        if !known(i) {
            dlogits[i] = 0.0;
            continue;
        }
        let (x, y) = (logits[i] as f64, targets[i] as f64);
        let pw = pos_weight.map_or(1.0, |w| w[i % labels] as f64);
        total += pw * y * softplus(-x) + (1.0 - y) * softplus(x);
        let s = sigmoid(x);
        dlogits[i] = ((pw * y * (s - 1.0) + (1.0 - y) * s) * inv) as f32;
    }
    Ok((total * inv) as f32)
}

/// MSE or Huber averaged over the known (mask ≠ 0) entries; unknown entries get a zero gradient and
/// their targets are not read.
pub fn regression(
    kind: RegressionLoss,
    pred: &[f32],
    target: &[f32],
    mask: Option<&[f32]>,
    dpred: &mut [f32],
) -> Result<f32> {
    check_len("regression loss", "target", pred.len(), target.len())?;
    check_len("regression loss", "dpred", pred.len(), dpred.len())?;
    if let Some(m) = mask {
        check_len("regression loss", "mask", pred.len(), m.len())?;
    }
    let known = |i: usize| mask.map_or(true, |m| m[i] != 0.0);
    let count = (0..pred.len()).filter(|&i| known(i)).count();
    let inv = if count > 0 { 1.0 / count as f64 } else { 0.0 };
    let mut total = 0.0f64;
    for i in 0..pred.len() {
        if !known(i) {
            dpred[i] = 0.0;
            continue;
        }
        let d = pred[i] as f64 - target[i] as f64;
        let (loss, grad) = match kind {
            RegressionLoss::Mse => (d * d, 2.0 * d),
            RegressionLoss::Huber { delta } => {
                let delta = delta as f64;
                if d.abs() <= delta {
                    (0.5 * d * d, d)
                } else {
                    (delta * (d.abs() - 0.5 * delta), delta * d.signum())
                }
            }
        };
        total += loss;
        dpred[i] = (grad * inv) as f32;
    }
    Ok((total * inv) as f32)
}

/// −(1/E)·Σ_{i: event} [s_i − log Σ_{j: t_j ≥ t_i} exp(s_j)], Breslow ties (a tied group shares one risk
/// set that includes all of it). ∂/∂s_k = −(1/E)·[δ_k − exp(s_k)·Σ_{i: event, t_i ≤ t_k} 1/S_i].
pub fn cox(risk: &[f32], time: &[f32], event: &[f32], drisk: &mut [f32]) -> Result<f32> {
    let n = risk.len();
    check_len("cox loss", "time", n, time.len())?;
    check_len("cox loss", "event", n, event.len())?;
    check_len("cox loss", "drisk", n, drisk.len())?;
    let events = event.iter().filter(|&&e| e != 0.0).count();
    if events == 0 {
        drisk.fill(0.0);
        return Ok(0.0);
    }
    let shift = risk.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    let exp: Vec<f64> = risk.iter().map(|&s| (s as f64 - shift).exp()).collect();
    // Longest follow-up first: the risk set of a time is everyone seen so far plus its tied group.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| time[b].total_cmp(&time[a]).then(a.cmp(&b)));
    let groups = tie_groups(&order, time);
    let mut risk_sum = vec![0.0f64; groups.len()]; // S per tied group, descending time
    let mut running = 0.0;
    for (g, members) in groups.iter().enumerate() {
        running += members.iter().map(|&i| exp[i]).sum::<f64>();
        risk_sum[g] = running;
    }
    let mut loss = 0.0;
    for (g, members) in groups.iter().enumerate() {
        for &i in members.iter().filter(|&&i| event[i] != 0.0) {
            loss -= (risk[i] as f64 - shift) - risk_sum[g].ln();
        }
    }
    // Σ_{events with t_i ≤ t_k} 1/S_i, accumulated from the shortest follow-up upwards.
    let mut hazard = 0.0;
    let inv_e = 1.0 / events as f64;
    for (g, members) in groups.iter().enumerate().rev() {
        let deaths = members.iter().filter(|&&i| event[i] != 0.0).count();
        hazard += deaths as f64 / risk_sum[g];
        for &k in members {
            let delta = if event[k] != 0.0 { 1.0 } else { 0.0 };
            drisk[k] = (-(delta - exp[k] * hazard) * inv_e) as f32;
        }
    }
    Ok((loss * inv_e) as f32)
}

/// Splits indices sorted by descending time into runs of equal time.
fn tie_groups(order: &[usize], time: &[f32]) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for &i in order {
        match groups.last_mut() {
            Some(g) if time[g[0]] == time[i] => g.push(i),
            _ => groups.push(vec![i]),
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Half the targets unknown: the loss and gradient are those of the known half alone, by the
    /// closed forms MSE = Σ d²/K, ∂/∂p_i = 2·d_i/K and BCE = Σ softplus terms/K, over the K known
    /// entries (not over all of them).
    #[test]
    fn half_unknown_labels_count_as_the_known_half_alone() {
        let pred = [0.5f32, -1.0, 2.0, 0.25, 3.0, -2.0];
        let target = [1.5f32, f32::NAN, 0.0, f32::NAN, 2.5, f32::NAN];
        let mask = [1.0f32, 0.0, 1.0, 0.0, 1.0, 0.0];
        let known = [0usize, 2, 4];
        let mut d = [f32::NAN; 6];
        let loss = regression(RegressionLoss::Mse, &pred, &target, Some(&mask), &mut d).unwrap();
        let diffs: Vec<f64> = known.iter().map(|&i| pred[i] as f64 - target[i] as f64).collect();
        let want = diffs.iter().map(|d| d * d).sum::<f64>() / 3.0;
        assert!((loss as f64 - want).abs() < 1e-6, "{loss} vs {want}");
        for (j, &i) in known.iter().enumerate() {
            let g = 2.0 * diffs[j] / 3.0;
            assert!((d[i] as f64 - g).abs() < 1e-6, "d[{i}] = {} vs {g}", d[i]);
        }
        for i in [1, 3, 5] {
            assert_eq!(d[i], 0.0);
        }
        // The known half alone, without a mask: the same numbers.
        let (kp, kt): (Vec<f32>, Vec<f32>) = known.iter().map(|&i| (pred[i], target[i])).unzip();
        let mut dk = [0.0f32; 3];
        let alone = regression(RegressionLoss::Mse, &kp, &kt, None, &mut dk).unwrap();
        assert_eq!(alone, loss);
        assert_eq!(dk.to_vec(), known.iter().map(|&i| d[i]).collect::<Vec<_>>());
        // Huber below and above its threshold: ½d² and δ(|d| − ½δ), gradients d and δ·sign(d).
        let huber = RegressionLoss::Huber { delta: 1.0 };
        let loss = regression(huber, &pred, &target, Some(&mask), &mut d).unwrap();
        let want = (0.5 * 1.0 + 1.0 * (2.0 - 0.5) + 0.5 * 0.25) / 3.0;
        assert!((loss as f64 - want).abs() < 1e-6, "{loss} vs {want}");
        let grads = [-1.0 / 3.0, 1.0 / 3.0, 0.5 / 3.0];
        for (j, &i) in known.iter().enumerate() {
            assert!((d[i] as f64 - grads[j]).abs() < 1e-6, "huber d[{i}] = {}", d[i]);
        }

        // BCE, 2 samples × 2 labels with one label of each sample unknown.
        let p = BceParams { n: 2, labels: 2 };
        let logits = [1.0f32, -0.5, 0.25, 2.0];
        let labels = [1.0f32, f32::NAN, f32::NAN, 0.0];
        let mask = [1.0f32, 0.0, 0.0, 1.0];
        let mut d = [f32::NAN; 4];
        let loss = bce_with_logits(&p, &logits, &labels, Some(&mask), None, &mut d).unwrap();
        let sp = |x: f64| (1.0 + x.exp()).ln();
        let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
        let want = (sp(-1.0) + sp(2.0)) / 2.0;
        assert!((loss as f64 - want).abs() < 1e-6, "{loss} vs {want}");
        assert!((d[0] as f64 - (sig(1.0) - 1.0) / 2.0).abs() < 1e-6);
        assert!((d[3] as f64 - sig(2.0) / 2.0).abs() < 1e-6);
        assert_eq!((d[1], d[2]), (0.0, 0.0));
    }
}
