//! Batch normalisation over (N, C, S). Statistics are summed per channel in f64, in (n, s) order, one
//! channel per task: deterministic and accurate for large N·S.

use rayon::prelude::*;

use crate::backend::params::BatchNormParams;
use crate::backend::{check_len, Result};

/// Σ f(n, s) over one channel, in f64.
fn channel_sum(p: &BatchNormParams, c: usize, f: impl Fn(usize) -> f64) -> f64 {
    let (channels, s) = (p.c as usize, p.spatial as usize);
    let mut sum = 0.0;
    for n in 0..p.n as usize {
        let base = (n * channels + c) * s;
        for i in base..base + s {
            sum += f(i);
        }
    }
    sum
}

/// Mean and biased variance per channel.
fn batch_stats(p: &BatchNormParams, x: &[f32]) -> Vec<(f64, f64)> {
    let count = (p.n as usize * p.spatial as usize) as f64;
    (0..p.c as usize)
        .into_par_iter()
        .map(|c| {
            let mean = channel_sum(p, c, |i| x[i] as f64) / count;
            let var = channel_sum(p, c, |i| (x[i] as f64 - mean).powi(2)) / count;
            (mean, var)
        })
        .collect()
}

/// y = (x − mean)·invstd·γ + β, one (n, c) plane per task.
fn normalise(p: &BatchNormParams, x: &[f32], scale_shift: &[(f32, f32)], y: &mut [f32]) {
    let s = p.spatial as usize;
    y.par_chunks_mut(s)
        .zip(x.par_chunks(s))
        .enumerate()
        .for_each(|(plane, (y_p, x_p))| {
            let (a, b) = scale_shift[plane % p.c as usize];
            y_p.iter_mut().zip(x_p).for_each(|(y, &x)| *y = x * a + b);
        });
}

fn check(p: &BatchNormParams, x: usize, y: usize, per_channel: &[usize]) -> Result<()> {
    check_len("batchnorm", "x", p.len(), x)?;
    check_len("batchnorm", "y", p.len(), y)?;
    for &len in per_channel {
        check_len("batchnorm", "per-channel vector", p.c as usize, len)?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub fn forward_train(
    p: &BatchNormParams,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    y: &mut [f32],
    saved_mean: &mut [f32],
    saved_invstd: &mut [f32],
    running_mean: &mut [f32],
    running_var: &mut [f32],
) -> Result<()> {
    let lens = [
        gamma.len(),
        beta.len(),
        saved_mean.len(),
        saved_invstd.len(),
        running_mean.len(),
        running_var.len(),
    ];
    check(p, x.len(), y.len(), &lens)?;
    let stats = batch_stats(p, x);
    let count = (p.n as usize * p.spatial as usize) as f64;
    let unbias = if count > 1.0 { count / (count - 1.0) } else { 1.0 };
    let mom = p.momentum as f64;
    let mut scale_shift = Vec::with_capacity(p.c as usize);
    for (c, &(mean, var)) in stats.iter().enumerate() {
        let invstd = 1.0 / (var + p.eps as f64).sqrt();
        saved_mean[c] = mean as f32;
        saved_invstd[c] = invstd as f32;
        running_mean[c] = ((1.0 - mom) * running_mean[c] as f64 + mom * mean) as f32;
        running_var[c] = ((1.0 - mom) * running_var[c] as f64 + mom * var * unbias) as f32;
        let a = gamma[c] as f64 * invstd;
        scale_shift.push((a as f32, (beta[c] as f64 - mean * a) as f32));
    }
    normalise(p, x, &scale_shift, y);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub fn forward_infer(
    p: &BatchNormParams,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    running_mean: &[f32],
    running_var: &[f32],
    y: &mut [f32],
) -> Result<()> {
    check(
        p,
        x.len(),
        y.len(),
        &[gamma.len(), beta.len(), running_mean.len(), running_var.len()],
    )?;
    let scale_shift: Vec<(f32, f32)> = (0..p.c as usize)
        .map(|c| {
            let a = gamma[c] as f64 / (running_var[c] as f64 + p.eps as f64).sqrt();
            (a as f32, (beta[c] as f64 - running_mean[c] as f64 * a) as f32)
        })
        .collect();
    normalise(p, x, &scale_shift, y);
    Ok(())
}

/// dx = γ·invstd·(dy − mean(dy) − x̂·mean(dy·x̂)); dγ += Σ dy·x̂; dβ += Σ dy.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    p: &BatchNormParams,
    x: &[f32],
    gamma: &[f32],
    saved_mean: &[f32],
    saved_invstd: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    dgamma: &mut [f32],
    dbeta: &mut [f32],
) -> Result<()> {
    check(
        p,
        x.len(),
        dx.len(),
        &[
            gamma.len(),
            saved_mean.len(),
            saved_invstd.len(),
            dgamma.len(),
            dbeta.len(),
        ],
    )?;
    check_len("batchnorm", "dy", p.len(), dy.len())?;
    let sums: Vec<(f64, f64)> = (0..p.c as usize)
        .into_par_iter()
        .map(|c| {
            let (mean, invstd) = (saved_mean[c] as f64, saved_invstd[c] as f64);
            let sum_dy = channel_sum(p, c, |i| dy[i] as f64);
            let sum_dy_xhat = channel_sum(p, c, |i| dy[i] as f64 * (x[i] as f64 - mean) * invstd);
            (sum_dy, sum_dy_xhat)
        })
        .collect();
    let count = (p.n as usize * p.spatial as usize) as f64;
    for (c, &(sum_dy, sum_dy_xhat)) in sums.iter().enumerate() {
        dgamma[c] += sum_dy_xhat as f32;
        dbeta[c] += sum_dy as f32;
    }
    let s = p.spatial as usize;
    dx.par_chunks_mut(s).enumerate().for_each(|(plane, dx_p)| {
        let c = plane % p.c as usize;
        let (mean, invstd) = (saved_mean[c], saved_invstd[c]);
        let k = gamma[c] * invstd;
        let mean_dy = (sums[c].0 / count) as f32;
        let mean_dy_xhat = (sums[c].1 / count) as f32;
        let base = plane * s;
        for (i, d) in dx_p.iter_mut().enumerate() {
            let xhat = (x[base + i] - mean) * invstd;
            *d = k * (dy[base + i] - mean_dy - xhat * mean_dy_xhat);
        }
    });
    Ok(())
}
