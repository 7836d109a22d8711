//! Max, average and global average pooling over (N, C, D, H, W), one (n, c) plane per task.

use rayon::prelude::*;

use crate::backend::params::PoolParams;
use crate::backend::{check_len, Result};

/// Visits each output position with the list of in-bounds input positions of its window.
fn for_each_window(p: &PoolParams, mut visit: impl FnMut(usize, &[usize])) {
    let [d, h, w] = p.in_dims.map(|e| e as usize);
    let [od, oh, ow] = p.out_dims().map(|e| e as usize);
    let k = p.kernel.map(|e| e as usize);
    let s = p.stride.map(|e| e as usize);
    let pad = p.pad.map(|e| e as isize);
    let mut taps = Vec::with_capacity(k[0] * k[1] * k[2]);
    let range = |o: usize, a: usize, len: usize| {
        let start = (o * s[a]) as isize - pad[a];
        (start.max(0) as usize)..((start + k[a] as isize).min(len as isize).max(0) as usize)
    };
    for z in 0..od {
        for y in 0..oh {
            for x in 0..ow {
                taps.clear();
                for iz in range(z, 0, d) {
                    for iy in range(y, 1, h) {
                        for ix in range(x, 2, w) {
                            taps.push((iz * h + iy) * w + ix);
                        }
                    }
                }
                visit((z * oh + y) * ow + x, &taps);
            }
        }
    }
}

fn check(p: &PoolParams, x: usize, y: usize) -> Result<()> {
    check_len("pool", "input", p.input_len(), x)?;
    check_len("pool", "output", p.output_len(), y)
}

pub fn max_forward(p: &PoolParams, x: &[f32], y: &mut [f32]) -> Result<()> {
    check(p, x.len(), y.len())?;
    let (si, so) = (p.in_spatial(), p.out_spatial());
    y.par_chunks_mut(so).zip(x.par_chunks(si)).for_each(|(y_p, x_p)| {
        for_each_window(p, |o, taps| {
            y_p[o] = taps.iter().map(|&i| x_p[i]).fold(f32::NEG_INFINITY, f32::max);
        });
    });
    Ok(())
}

pub fn max_backward(p: &PoolParams, x: &[f32], dy: &[f32], dx: &mut [f32]) -> Result<()> {
    check(p, x.len(), dy.len())?;
    check_len("max pool backward", "dx", p.input_len(), dx.len())?;
    let (si, so) = (p.in_spatial(), p.out_spatial());
    dx.par_chunks_mut(si)
        .zip(x.par_chunks(si).zip(dy.par_chunks(so)))
        .for_each(|(dx_p, (x_p, dy_p))| {
            dx_p.fill(0.0);
            for_each_window(p, |o, taps| {
                let mut best = taps[0];
                for &i in &taps[1..] {
                    if x_p[i] > x_p[best] {
                        best = i;
                    }
                }
                dx_p[best] += dy_p[o];
            });
        });
    Ok(())
}

/// Padding counts towards the divisor (PyTorch's `count_include_pad=True`).
fn avg_divisor(p: &PoolParams) -> f32 {
    p.kernel.iter().map(|&k| k as f32).product()
}

pub fn avg_forward(p: &PoolParams, x: &[f32], y: &mut [f32]) -> Result<()> {
    check(p, x.len(), y.len())?;
    let (si, so) = (p.in_spatial(), p.out_spatial());
    let inv = 1.0 / avg_divisor(p);
    y.par_chunks_mut(so).zip(x.par_chunks(si)).for_each(|(y_p, x_p)| {
        for_each_window(p, |o, taps| {
            y_p[o] = taps.iter().map(|&i| x_p[i]).sum::<f32>() * inv
        });
    });
    Ok(())
}

pub fn avg_backward(p: &PoolParams, dy: &[f32], dx: &mut [f32]) -> Result<()> {
    check(p, dx.len(), dy.len())?;
    let (si, so) = (p.in_spatial(), p.out_spatial());
    let inv = 1.0 / avg_divisor(p);
    dx.par_chunks_mut(si)
        .zip(dy.par_chunks(so))
        .for_each(|(dx_p, dy_p)| {
            dx_p.fill(0.0);
            for_each_window(p, |o, taps| taps.iter().for_each(|&i| dx_p[i] += dy_p[o] * inv));
        });
    Ok(())
}

/// y[plane] = mean of x over the plane's `spatial` elements, summed in f64.
pub fn global_avg_forward(spatial: usize, x: &[f32], y: &mut [f32]) -> Result<()> {
    check_len("global avg pool", "x", y.len() * spatial, x.len())?;
    y.par_iter_mut().zip(x.par_chunks(spatial)).for_each(|(y, x_p)| {
        *y = (x_p.iter().map(|&v| v as f64).sum::<f64>() / spatial as f64) as f32;
    });
    Ok(())
}

pub fn global_avg_backward(spatial: usize, dy: &[f32], dx: &mut [f32]) -> Result<()> {
    check_len("global avg pool backward", "dx", dy.len() * spatial, dx.len())?;
    let inv = 1.0 / spatial as f32;
    dx.par_chunks_mut(spatial)
        .zip(dy.par_iter())
        .for_each(|(dx_p, &g)| dx_p.fill(g * inv));
    Ok(())
}
