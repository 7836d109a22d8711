//! Optimizers, learning-rate schedules, gradient clipping and accumulation on the flat parameter and
//! gradient buffers: one update call per step over the whole model, on any backend.

pub mod accumulate;
pub mod clip;
pub mod schedule;

pub use accumulate::GradAccumulator;
pub use clip::{clip_grad_norm, clip_grad_norm_with};
pub use schedule::{LrSchedule, ScheduleKind};

use serde::{Deserialize, Serialize};

use crate::backend::{AdamWHyper, Backend, Result, SgdHyper};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum OptimizerConfig {
    Sgd {
        momentum: f32,
        nesterov: bool,
        weight_decay: f32,
    },
    AdamW {
        beta1: f32,
        beta2: f32,
        eps: f32,
        weight_decay: f32,
    },
}

/// An optimizer with its state buffers (momentum, or Adam's m and v), laid out like the parameters.
pub struct Optimizer<B: Backend> {
    pub config: OptimizerConfig,
    /// Completed steps.
    pub step: u32,
    state_a: B::Buf,
    state_b: Option<B::Buf>,
}

impl<B: Backend> Optimizer<B> {
    pub fn new(b: &B, config: OptimizerConfig, len: usize) -> Result<Self> {
        let state_b = match config {
            OptimizerConfig::AdamW { .. } => Some(b.zeros(len)?),
            OptimizerConfig::Sgd { .. } => None,
        };
        Ok(Self {
            config,
            step: 0,
            state_a: b.zeros(len)?,
            state_b,
        })
    }

    /// The state buffers with their PyTorch state names: `momentum_buffer` (SGD) or `exp_avg`,
    /// `exp_avg_sq` (AdamW); each laid out like the parameters.
    pub fn state_buffers(&self) -> Vec<(&'static str, &B::Buf)> {
        match &self.state_b {
            None => vec![("momentum_buffer", &self.state_a)],
            Some(v) => vec![("exp_avg", &self.state_a), ("exp_avg_sq", v)],
        }
    }

    /// `state_buffers`, writable (restoring a checkpoint).
    pub fn state_buffers_mut(&mut self) -> Vec<(&'static str, &mut B::Buf)> {
        match &mut self.state_b {
            None => vec![("momentum_buffer", &mut self.state_a)],
            Some(v) => vec![("exp_avg", &mut self.state_a), ("exp_avg_sq", v)],
        }
    }

    /// One update of `param` (whole flat buffer) from `grad` with learning rate `lr`.
    pub fn update(&mut self, b: &B, lr: f32, param: &mut B::Buf, grad: &B::Buf) -> Result<()> {
        self.step += 1;
        let n = b.len(param);
        match self.config {
            OptimizerConfig::Sgd {
                momentum,
                nesterov,
                weight_decay,
            } => {
                let h = SgdHyper {
                    lr,
                    momentum,
                    weight_decay,
                    nesterov,
                };
                b.sgd_step(
                    &h,
                    b.view_mut(param, 0..n),
                    b.view(grad, 0..n),
                    b.view_mut(&mut self.state_a, 0..n),
                )
            }
            OptimizerConfig::AdamW {
                beta1,
                beta2,
                eps,
                weight_decay,
            } => {
                let h = AdamWHyper {
                    lr,
                    beta1,
                    beta2,
                    eps,
                    weight_decay,
                    step: self.step,
                };
                let v = self.state_b.as_mut().expect("AdamW keeps a second moment");
                b.adamw_step(
                    &h,
                    b.view_mut(param, 0..n),
                    b.view(grad, 0..n),
                    b.view_mut(&mut self.state_a, 0..n),
                    b.view_mut(v, 0..n),
                )
            }
        }
    }
}
