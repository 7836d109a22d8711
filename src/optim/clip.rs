//! Gradient-norm clipping over the whole flat gradient buffer (PyTorch's clip_grad_norm_ rule).

use crate::backend::{Backend, Result};

/// Guards the division when the norm is zero, as PyTorch does.
const CLIP_EPS: f64 = 1e-6;

/// Scales `grad` so its L2 norm is at most `max_norm`; returns the norm before clipping. The norm is a
/// deterministic f64 sum, so clipping decisions agree on every rank and thread count.
pub fn clip_grad_norm<B: Backend>(b: &B, grad: &mut B::Buf, max_norm: f32) -> Result<f32> {
    let n = b.len(grad);
    let sum_squares = b.sum_squares(b.view(grad, 0..n))?;
    clip_grad_norm_with(b, grad, max_norm, sum_squares)
}

/// `clip_grad_norm` when the caller already holds Σ grad² (the training loop computes it on the host
/// copy for its non-finite check).
pub fn clip_grad_norm_with<B: Backend>(
    b: &B,
    grad: &mut B::Buf,
    max_norm: f32,
    sum_squares: f64,
) -> Result<f32> {
    let n = b.len(grad);
    let norm = sum_squares.sqrt();
    let coef = max_norm as f64 / (norm + CLIP_EPS);
    if coef < 1.0 {
        b.scale(coef as f32, b.view_mut(grad, 0..n))?;
    }
    Ok(norm as f32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::CpuBackend;

    #[test]
    fn clips_to_max_norm_and_leaves_small_gradients() {
        let mut g = vec![3.0f32, 4.0];
        assert_eq!(clip_grad_norm(&CpuBackend, &mut g, 1.0).unwrap(), 5.0);
        assert!((g[0] - 0.6).abs() < 1e-6 && (g[1] - 0.8).abs() < 1e-6);
        let mut small = vec![0.3f32, 0.4];
        clip_grad_norm(&CpuBackend, &mut small, 1.0).unwrap();
        assert_eq!(small, vec![0.3, 0.4]);
    }
}
