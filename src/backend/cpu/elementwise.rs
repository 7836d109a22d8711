//! Dropout, residual add, gradient accumulation and channel concatenation.

use rayon::prelude::*;

use super::activation::ELEMENTWISE_CHUNK;
use crate::backend::kernels::mix64;
use crate::backend::{check_len, DropoutParams, Result};

/// The multiplier dropout applies to element `i`: 0 or 1/(1−p).
pub fn dropout_factor(p: &DropoutParams, i: usize) -> f32 {
    let threshold = (p.prob as f64 * 4_294_967_296.0) as u64;
    let draw = mix64(p.seed ^ (i as u64).wrapping_mul(0xD1B5_4A32_D192_ED03)) >> 32;
    if draw < threshold {
        0.0
    } else {
        1.0 / (1.0 - p.prob)
    }
}

fn apply_dropout(p: &DropoutParams, x: &[f32], y: &mut [f32]) -> Result<()> {
    check_len("dropout", "output", x.len(), y.len())?;
    if p.prob <= 0.0 {
        y.copy_from_slice(x);
        return Ok(());
    }
    y.par_chunks_mut(ELEMENTWISE_CHUNK)
        .enumerate()
        .for_each(|(c, y_c)| {
            let base = c * ELEMENTWISE_CHUNK;
            for (j, y) in y_c.iter_mut().enumerate() {
                *y = x[base + j] * dropout_factor(p, base + j);
            }
        });
    Ok(())
}

pub fn dropout_forward(p: &DropoutParams, x: &[f32], y: &mut [f32]) -> Result<()> {
    apply_dropout(p, x, y)
}

/// The mask is the forward mask, regenerated from the seed.
pub fn dropout_backward(p: &DropoutParams, dy: &[f32], dx: &mut [f32]) -> Result<()> {
    apply_dropout(p, dy, dx)
}

pub fn add(a: &[f32], b: &[f32], y: &mut [f32]) -> Result<()> {
    check_len("add", "b", a.len(), b.len())?;
    check_len("add", "y", a.len(), y.len())?;
    y.par_chunks_mut(ELEMENTWISE_CHUNK)
        .zip(
            a.par_chunks(ELEMENTWISE_CHUNK)
                .zip(b.par_chunks(ELEMENTWISE_CHUNK)),
        )
        .for_each(|(y, (a, b))| {
            for i in 0..y.len() {
                y[i] = a[i] + b[i];
            }
        });
    Ok(())
}

pub fn accumulate(x: &[f32], y: &mut [f32]) -> Result<()> {
    check_len("accumulate", "y", x.len(), y.len())?;
    y.par_chunks_mut(ELEMENTWISE_CHUNK)
        .zip(x.par_chunks(ELEMENTWISE_CHUNK))
        .for_each(|(y, x)| y.iter_mut().zip(x).for_each(|(y, x)| *y += x));
    Ok(())
}

pub fn scale(alpha: f32, y: &mut [f32]) {
    y.par_chunks_mut(ELEMENTWISE_CHUNK)
        .for_each(|y| y.iter_mut().for_each(|v| *v *= alpha));
}

pub fn concat_forward(
    n: usize,
    s: usize,
    a: &[f32],
    ca: usize,
    b: &[f32],
    cb: usize,
    y: &mut [f32],
) -> Result<()> {
    check_len("concat", "a", n * ca * s, a.len())?;
    check_len("concat", "b", n * cb * s, b.len())?;
    check_len("concat", "y", n * (ca + cb) * s, y.len())?;
    for (i, y_n) in y.chunks_mut((ca + cb) * s).enumerate() {
        y_n[..ca * s].copy_from_slice(&a[i * ca * s..][..ca * s]);
        y_n[ca * s..].copy_from_slice(&b[i * cb * s..][..cb * s]);
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub fn concat_backward(
    n: usize,
    s: usize,
    dy: &[f32],
    ca: usize,
    cb: usize,
    da: &mut [f32],
    db: &mut [f32],
) -> Result<()> {
    check_len("concat backward", "dy", n * (ca + cb) * s, dy.len())?;
    check_len("concat backward", "da", n * ca * s, da.len())?;
    check_len("concat backward", "db", n * cb * s, db.len())?;
    for (i, dy_n) in dy.chunks((ca + cb) * s).enumerate() {
        da[i * ca * s..][..ca * s].copy_from_slice(&dy_n[..ca * s]);
        db[i * cb * s..][..cb * s].copy_from_slice(&dy_n[ca * s..]);
    }
    Ok(())
}
