//! Segmentation losses on per-voxel logits (N, C, S) against binary targets of the same layout, as
//! MONAI defines them with `sigmoid=True`, so a loss curve compares with a MONAI run:
//!
//! - **Dice**: `1 − (2 Σ p·t + 1e-5) / (Σ p + Σ t + 1e-5)` per sample and channel (p = σ(logit)),
//!   averaged over them (MONAI's `DiceLoss(sigmoid=True)`, its default smoothing, `batch=False`);
//! - **Dice + CE**: Dice plus the binary cross-entropy with logits averaged over every voxel (MONAI's
//!   `DiceCELoss(sigmoid=True)`, both weights 1);
//! - **focal**: `−α_t (1 − p_t)^γ log p_t` averaged over every voxel, γ = 2 and α = 0.25 as in
//!   torchvision's `sigmoid_focal_loss` (RetinaNet's).
//!
//! Computed on the host in f64 (per-voxel maps are small next to the network's activations); the
//! gradient with respect to the logits is written beside the loss.

/// Smoothing of numerator and denominator (MONAI's defaults).
pub const SMOOTH: f64 = 1e-5;
pub const FOCAL_GAMMA: f64 = 2.0;
pub const FOCAL_ALPHA: f64 = 0.25;

pub use crate::settings::SegLoss;

fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// log(1 + e^z) without overflow.
fn softplus(z: f64) -> f64 {
    z.max(0.0) + (-z.abs()).exp().ln_1p()
}

/// The loss of `logits` against `targets` (0 or 1; both (groups, spatial) with groups = N·C), and
/// its gradient with respect to every logit, written to `grad`.
pub fn seg_loss(kind: SegLoss, logits: &[f32], targets: &[f32], spatial: usize, grad: &mut [f32]) -> f64 {
    assert!(spatial > 0 && logits.len() % spatial == 0, "whole maps");
    assert_eq!(logits.len(), targets.len(), "a target per logit");
    assert_eq!(logits.len(), grad.len(), "a gradient per logit");
    let m = logits.len() as f64;
    let groups = logits.len() / spatial;
    let mut loss = 0.0;
    let mut g = vec![0.0f64; logits.len()];
    if matches!(kind, SegLoss::Dice | SegLoss::DiceCe) {
        for k in 0..groups {
            let range = k * spatial..(k + 1) * spatial;
            let (mut inter, mut ps, mut ts) = (0.0, 0.0, 0.0);
            for i in range.clone() {
                let p = sigmoid(logits[i] as f64);
                inter += p * targets[i] as f64;
                ps += p;
                ts += targets[i] as f64;
            }
            let (num, den) = (2.0 * inter + SMOOTH, ps + ts + SMOOTH);
            loss += (1.0 - num / den) / groups as f64;
            for i in range {
                let p = sigmoid(logits[i] as f64);
                let d_p = -(2.0 * targets[i] as f64 * den - num) / (den * den);
                g[i] += d_p * p * (1.0 - p) / groups as f64;
            }
        }
    }
    if matches!(kind, SegLoss::DiceCe) {
        for (i, (&z, &t)) in logits.iter().zip(targets).enumerate() {
            let (z, t) = (z as f64, t as f64);
            loss += (softplus(z) - z * t) / m;
            g[i] += (sigmoid(z) - t) / m;
        }
    }
    if matches!(kind, SegLoss::Focal) {
        for (i, (&z, &t)) in logits.iter().zip(targets).enumerate() {
            let (z, t) = (z as f64, t as f64);
            let p = sigmoid(z);
            // ce = BCE with logits; p_t = p·t + (1 − p)(1 − t); loss = α_t (1 − p_t)^γ ce.
            let ce = softplus(z) - z * t;
            let pt = p * t + (1.0 - p) * (1.0 - t);
            let at = FOCAL_ALPHA * t + (1.0 - FOCAL_ALPHA) * (1.0 - t);
            let w = (1.0 - pt).powf(FOCAL_GAMMA);
            loss += at * w * ce / m;
            let d_pt = (2.0 * t - 1.0) * p * (1.0 - p);
            let d_w = -FOCAL_GAMMA * (1.0 - pt).powf(FOCAL_GAMMA - 1.0) * d_pt;
            g[i] += at * (d_w * ce + w * (p - t)) / m;
        }
    }
    for (o, v) in grad.iter_mut().zip(&g) {
        *o = *v as f32;
    }
    loss
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gradients_match_central_differences() {
        let logits: Vec<f32> = (0..24).map(|i| ((i * 37 % 17) as f32 - 8.0) * 0.4).collect();
        let targets: Vec<f32> = (0..24).map(|i| ((i * 7) % 3 == 0) as u8 as f32).collect();
        for kind in [SegLoss::Dice, SegLoss::DiceCe, SegLoss::Focal] {
            let mut grad = vec![0.0; 24];
            seg_loss(kind, &logits, &targets, 6, &mut grad);
            for i in 0..24 {
                let at = |d: f32| {
                    let mut l = logits.clone();
                    l[i] += d;
                    seg_loss(kind, &l, &targets, 6, &mut vec![0.0; 24])
                };
                let fd = (at(1e-3) - at(-1e-3)) / 2e-3;
                assert!(
                    (fd - grad[i] as f64).abs() < 1e-4,
                    "{kind:?} logit {i}: {fd} vs {}",
                    grad[i]
                );
            }
        }
    }

    #[test]
    fn perfect_logits_have_no_dice_loss_and_an_empty_map_is_not_a_division_by_zero() {
        let targets = [1.0, 0.0, 1.0, 0.0];
        let logits = [40.0, -40.0, 40.0, -40.0];
        let mut grad = [0.0; 4];
        assert!(seg_loss(SegLoss::Dice, &logits, &targets, 4, &mut grad) < 1e-6);
        let empty = seg_loss(SegLoss::Dice, &[-40.0; 4], &[0.0; 4], 4, &mut grad);
        assert!(empty.abs() < 1e-6 && empty.is_finite());
    }
}

/// The segmentation loss of one micro-batch on any backend, as (mean over its valid samples, their
/// number): logits come to the host, and `dout` receives the gradient of the SUM over valid samples
/// (the training step divides by the global count); padding rows get no gradient.
pub fn micro_batch<B: crate::backend::Backend>(
    b: &B,
    s: &crate::settings::Settings,
    logits: &B::Buf,
    batch: &crate::data::Batch,
    dout: &mut B::Buf,
) -> crate::backend::Result<(f32, f64)> {
    let (kind, seg, n, valid) = (s.seg_loss(), &batch.seg, batch.samples.len(), batch.valid);
    let voxels = seg.len() / n.max(1);
    let v = valid * voxels;
    let logits = b.download(b.view(logits, 0..n * voxels))?;
    let mut grad = vec![0.0f32; n * voxels];
    let mean = seg_loss(kind, &logits[..v], &seg[..v], voxels, &mut grad[..v]);
    grad[..v].iter_mut().for_each(|g| *g *= valid as f32);
    b.upload_into(&grad, b.view_mut(dout, 0..n * voxels))?;
    Ok((mean as f32, valid as f64))
}
