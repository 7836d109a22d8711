//! Elementwise activations: ReLU is leaky ReLU with slope 0.

use rayon::prelude::*;

use crate::backend::{check_len, Result};

/// Elements per parallel task for elementwise work.
pub const ELEMENTWISE_CHUNK: usize = 1 << 14;

pub fn leaky_relu_forward(slope: f32, x: &[f32], y: &mut [f32]) -> Result<()> {
    check_len("leaky_relu", "y", x.len(), y.len())?;
    y.par_chunks_mut(ELEMENTWISE_CHUNK)
        .zip(x.par_chunks(ELEMENTWISE_CHUNK))
        .for_each(|(y, x)| {
            y.iter_mut()
                .zip(x)
                .for_each(|(y, &x)| *y = if x > 0.0 { x } else { slope * x });
        });
    Ok(())
}

/// The derivative at 0 is taken as `slope` (PyTorch's convention).
pub fn leaky_relu_backward(slope: f32, x: &[f32], dy: &[f32], dx: &mut [f32]) -> Result<()> {
    check_len("leaky_relu backward", "dy", x.len(), dy.len())?;
    check_len("leaky_relu backward", "dx", x.len(), dx.len())?;
    dx.par_chunks_mut(ELEMENTWISE_CHUNK)
        .zip(
            x.par_chunks(ELEMENTWISE_CHUNK)
                .zip(dy.par_chunks(ELEMENTWISE_CHUNK)),
        )
        .for_each(|(dx, (x, dy))| {
            for (dx, (&x, &dy)) in dx.iter_mut().zip(x.iter().zip(dy)) {
                *dx = if x > 0.0 { dy } else { slope * dy };
            }
        });
    Ok(())
}
