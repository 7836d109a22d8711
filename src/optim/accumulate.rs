//! Gradient accumulation over micro-batches: backward adds into the flat gradient buffer; after the
//! last micro-batch the sum is divided by their count, so k micro-batches of a mean loss equal one batch
//! k times larger.

use crate::backend::{Backend, Result};

#[derive(Clone, Debug)]
pub struct GradAccumulator {
    pub micro_batches: u32,
    seen: u32,
}

impl GradAccumulator {
    pub fn new(micro_batches: u32) -> Self {
        Self {
            micro_batches: micro_batches.max(1),
            seen: 0,
        }
    }

    /// Call after each backward. Returns true when the optimizer should step: the gradient then holds
    /// the mean over the micro-batches.
    pub fn finish_micro_batch<B: Backend>(&mut self, b: &B, grad: &mut B::Buf) -> Result<bool> {
        self.seen += 1;
        if self.seen < self.micro_batches {
            return Ok(false);
        }
        self.seen = 0;
        if self.micro_batches > 1 {
            let n = b.len(grad);
            b.scale(1.0 / self.micro_batches as f32, b.view_mut(grad, 0..n))?;
        }
        Ok(true)
    }

    /// Zeroes the gradient buffer for the next accumulation window.
    pub fn zero<B: Backend>(b: &B, grad: &mut B::Buf) -> Result<()> {
        let n = b.len(grad);
        b.fill(b.view_mut(grad, 0..n), 0.0)
    }
}
