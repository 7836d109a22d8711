//! Optimizer updates and norms on flat buffers, elementwise over fixed-size chunks.

use rayon::prelude::*;

use super::activation::ELEMENTWISE_CHUNK;
use crate::backend::{check_len, AdamWHyper, Result, SgdHyper};

pub fn sgd(h: &SgdHyper, param: &mut [f32], grad: &[f32], momentum: &mut [f32]) -> Result<()> {
    check_len("sgd", "grad", param.len(), grad.len())?;
    check_len("sgd", "momentum", param.len(), momentum.len())?;
    param
        .par_chunks_mut(ELEMENTWISE_CHUNK)
        .zip(
            grad.par_chunks(ELEMENTWISE_CHUNK)
                .zip(momentum.par_chunks_mut(ELEMENTWISE_CHUNK)),
        )
        .for_each(|(p, (g, m))| {
            for i in 0..p.len() {
                let mut d = g[i] + h.weight_decay * p[i];
                if h.momentum != 0.0 {
                    // The buffer starts at zero, so the first step sets it to g as PyTorch does.
                    m[i] = h.momentum * m[i] + d;
                    d = if h.nesterov { d + h.momentum * m[i] } else { m[i] };
                }
                p[i] -= h.lr * d;
            }
        });
    Ok(())
}

pub fn adamw(h: &AdamWHyper, param: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32]) -> Result<()> {
    check_len("adamw", "grad", param.len(), grad.len())?;
    check_len("adamw", "m", param.len(), m.len())?;
    check_len("adamw", "v", param.len(), v.len())?;
    let t = h.step.max(1) as i32;
    let bc1 = 1.0 - (h.beta1 as f64).powi(t);
    let bc2_sqrt = (1.0 - (h.beta2 as f64).powi(t)).sqrt();
    let step_size = (h.lr as f64 / bc1) as f32;
    let decay = 1.0 - h.lr * h.weight_decay;
    param
        .par_chunks_mut(ELEMENTWISE_CHUNK)
        .zip(grad.par_chunks(ELEMENTWISE_CHUNK))
        .zip(
            m.par_chunks_mut(ELEMENTWISE_CHUNK)
                .zip(v.par_chunks_mut(ELEMENTWISE_CHUNK)),
        )
        .for_each(|((p, g), (m, v))| {
            for i in 0..p.len() {
                p[i] *= decay;
                m[i] = h.beta1 * m[i] + (1.0 - h.beta1) * g[i];
                v[i] = h.beta2 * v[i] + (1.0 - h.beta2) * g[i] * g[i];
                let denom = v[i].sqrt() / bc2_sqrt as f32 + h.eps;
                p[i] -= step_size * m[i] / denom;
            }
        });
    Ok(())
}

/// Σ x² in f64: per-chunk partial sums, added in chunk order.
pub fn sum_squares(x: &[f32]) -> f64 {
    let partials: Vec<f64> = x
        .par_chunks(ELEMENTWISE_CHUNK)
        .map(|c| c.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>())
        .collect();
    partials.iter().sum()
}
