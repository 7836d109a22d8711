//! Training on the CPU backend: a tiny model overfits a tiny batch; runs are bitwise identical with 1
//! and 2 threads; gradient accumulation over micro-batches equals the large batch.

use medtrain::backend::cpu::CpuBackend;
use medtrain::backend::{Backend, CrossEntropyParams, LinearParams, RegressionLoss};
use medtrain::nn::{build, Net, ResNetConfig};
use medtrain::optim::{
    clip_grad_norm, GradAccumulator, LrSchedule, Optimizer, OptimizerConfig, ScheduleKind,
};

const B: CpuBackend = CpuBackend;

fn tiny_config() -> ResNetConfig {
    let mut cfg = ResNetConfig::resnet18(1, 2, 4);
    cfg.widths = vec![4, 8];
    cfg.blocks = vec![1, 1];
    cfg
}

/// Images whose class is not linearly obvious: seeded noise.
fn batch(n: usize, len: usize) -> (Vec<f32>, Vec<f32>) {
    let x = (0..n * len)
        .map(|i| (((i * 7919) % 1013) as f32 / 506.5) - 1.0)
        .collect();
    let y = (0..n).map(|i| (i % 2) as f32).collect();
    (x, y)
}

/// Trains `steps` SGD steps with clipping and a warmup-cosine schedule; returns losses and parameters.
fn train(steps: u32, n: u32) -> (Vec<f32>, Vec<f32>) {
    let mut net = Net::new(&B, build(&tiny_config(), n, [1, 16, 16]), 42).unwrap();
    let mut opt = Optimizer::new(
        &B,
        OptimizerConfig::Sgd {
            momentum: 0.9,
            nesterov: true,
            weight_decay: 1e-4,
        },
        net.spec.params.len(),
    )
    .unwrap();
    let schedule = LrSchedule {
        base_lr: 0.05,
        warmup_steps: 5,
        kind: ScheduleKind::Cosine {
            total_steps: steps,
            min_lr: 0.005,
        },
    };
    let (x, y) = batch(n as usize, net.input_len() / n as usize);
    let p = CrossEntropyParams {
        n,
        classes: 2,
        label_smoothing: 0.0,
    };
    let mut losses = Vec::new();
    let mut dlogits = vec![0.0; 2 * n as usize];
    for step in 0..steps {
        GradAccumulator::zero(&B, &mut net.grad).unwrap();
        net.forward(&B, &x, true).unwrap();
        losses.push(B.cross_entropy(&p, net.output(), &y, None, &mut dlogits).unwrap());
        net.backward(&B, &dlogits).unwrap();
        clip_grad_norm(&B, &mut net.grad, 5.0).unwrap();
        opt.update(&B, schedule.lr(step), &mut net.param, &net.grad)
            .unwrap();
    }
    (losses, net.param.clone())
}

#[test]
fn tiny_resnet_overfits_a_tiny_batch() {
    let (losses, _) = train(60, 4);
    let last = *losses.last().unwrap();
    assert!(losses[0] > 0.3, "initial loss {}", losses[0]);
    assert!(last < 0.02, "loss after 60 steps: {last} (history {losses:?})");
}

#[test]
fn training_is_bitwise_identical_for_1_and_2_threads() {
    let run = |threads| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| train(4, 16))
    };
    let (loss1, param1) = run(1);
    let (loss2, param2) = run(2);
    assert_eq!(
        loss1.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        loss2.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
    let differing = param1
        .iter()
        .zip(&param2)
        .filter(|(a, b)| a.to_bits() != b.to_bits())
        .count();
    assert_eq!(
        differing,
        0,
        "{differing} of {} parameters differ between 1 and 2 threads",
        param1.len()
    );
}

#[test]
fn accumulated_micro_batches_equal_one_large_batch() {
    // A linear regressor: its gradient of the mean loss is exactly the mean of micro-batch gradients.
    let (fi, fo) = (6usize, 3usize);
    let w: Vec<f32> = (0..fi * fo).map(|i| (i as f32 * 0.37).sin()).collect();
    let x: Vec<f32> = (0..4 * fi).map(|i| (i as f32 * 0.11).cos()).collect();
    let t: Vec<f32> = (0..4 * fo).map(|i| (i as f32 * 0.23).sin()).collect();
    let grad_of = |x: &[f32], t: &[f32], n: usize, dw: &mut Vec<f32>| {
        let p = LinearParams {
            n: n as u32,
            in_features: fi as u32,
            out_features: fo as u32,
        };
        let mut y = vec![0.0; n * fo];
        B.linear_forward(&p, x, &w, None, &mut y).unwrap();
        let mut dy = vec![0.0; n * fo];
        B.regression_loss(RegressionLoss::Mse, &y, t, None, &mut dy)
            .unwrap();
        B.linear_backward(&p, x, &w, &dy, None, dw, None).unwrap();
    };
    let mut whole = vec![0.0; fi * fo];
    grad_of(&x, &t, 4, &mut whole);
    let mut acc = GradAccumulator::new(2);
    let mut accumulated = vec![0.0; fi * fo];
    grad_of(&x[..2 * fi], &t[..2 * fo], 2, &mut accumulated);
    assert!(!acc.finish_micro_batch(&B, &mut accumulated).unwrap());
    grad_of(&x[2 * fi..], &t[2 * fo..], 2, &mut accumulated);
    assert!(acc.finish_micro_batch(&B, &mut accumulated).unwrap());
    for (a, b) in accumulated.iter().zip(&whole) {
        assert!(
            (a - b).abs() <= 1e-6 + 1e-5 * b.abs(),
            "accumulated {a} vs whole batch {b}"
        );
    }
}
