//! Learning-rate schedules: linear warmup, then constant, cosine decay or step decay.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ScheduleKind {
    Constant,
    /// Cosine from the base rate to `min_lr` over the steps after warmup, up to `total_steps`.
    Cosine {
        total_steps: u32,
        min_lr: f32,
    },
    /// Multiply by `gamma` every `step_size` steps after warmup (PyTorch's StepLR).
    Step {
        step_size: u32,
        gamma: f32,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LrSchedule {
    pub base_lr: f32,
    /// Steps of linear warmup: step s < warmup uses base·(s+1)/warmup.
    pub warmup_steps: u32,
    pub kind: ScheduleKind,
}

impl LrSchedule {
    /// The learning rate of optimizer step `step` (counting from 0).
    pub fn lr(&self, step: u32) -> f32 {
        if step < self.warmup_steps {
            return self.base_lr * (step + 1) as f32 / self.warmup_steps as f32;
        }
        let t = step - self.warmup_steps;
        match self.kind {
            ScheduleKind::Constant => self.base_lr,
            ScheduleKind::Cosine { total_steps, min_lr } => {
                let span = total_steps.saturating_sub(self.warmup_steps).max(1);
                let progress = (t.min(span) as f64) / span as f64;
                let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
                (min_lr as f64 + (self.base_lr - min_lr) as f64 * cosine) as f32
            }
            ScheduleKind::Step { step_size, gamma } => {
                self.base_lr * gamma.powi((t / step_size.max(1)) as i32)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine_reaches_the_floor() {
        let s = LrSchedule {
            base_lr: 0.1,
            warmup_steps: 4,
            kind: ScheduleKind::Cosine {
                total_steps: 104,
                min_lr: 0.001,
            },
        };
        assert!((s.lr(0) - 0.025).abs() < 1e-7);
        assert!((s.lr(3) - 0.1).abs() < 1e-7);
        assert!((s.lr(4) - 0.1).abs() < 1e-7);
        assert!((s.lr(54) - 0.0505).abs() < 1e-6, "{}", s.lr(54)); // halfway: (0.1 + 0.001) / 2
        assert!((s.lr(104) - 0.001).abs() < 1e-7);
        assert!((s.lr(500) - 0.001).abs() < 1e-7);
    }

    #[test]
    fn step_decay_matches_steplr() {
        let s = LrSchedule {
            base_lr: 1.0,
            warmup_steps: 0,
            kind: ScheduleKind::Step {
                step_size: 10,
                gamma: 0.5,
            },
        };
        assert_eq!([s.lr(0), s.lr(9), s.lr(10), s.lr(25)], [1.0, 1.0, 0.5, 0.25]);
    }
}
