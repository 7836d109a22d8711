//! The parity harness of the backends: every `Backend` op at representative shapes, run on a device
//! and on the CPU reference with the same seeded inputs, compared with a tolerance stated per op
//! (|dev − cpu| ≤ atol + rtol·|cpu|). `bench parity` runs every case; the GPU start-up self-test
//! (`cuda::selftest`) runs a few.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::backend::cpu::CpuBackend;
use crate::backend::params::{BatchNormParams, ConvParams, LinearParams, PoolParams};
use crate::backend::{
    AdamWHyper, Backend, BceParams, CrossEntropyParams, DropoutParams, RegressionLoss, Result, SgdHyper,
};

/// One op at one shape.
#[derive(Clone, Debug)]
pub enum Op {
    ConvFwd(ConvParams),
    ConvBwd(ConvParams),
    BnTrain(BatchNormParams),
    BnInfer(BatchNormParams),
    BnBwd(BatchNormParams),
    Relu(f32, usize),
    ReluBwd(f32, usize),
    MaxPool(PoolParams),
    MaxPoolBwd(PoolParams),
    AvgPool(PoolParams),
    AvgPoolBwd(PoolParams),
    Gap {
        planes: usize,
        spatial: usize,
    },
    GapBwd {
        planes: usize,
        spatial: usize,
    },
    Linear(LinearParams),
    LinearBwd(LinearParams),
    Dropout(DropoutParams, usize),
    DropoutBwd(DropoutParams, usize),
    Add(usize),
    Accumulate(usize),
    Scale(usize),
    Fill(usize),
    Copy(usize),
    Concat {
        n: usize,
        s: usize,
        ca: usize,
        cb: usize,
    },
    ConcatBwd {
        n: usize,
        s: usize,
        ca: usize,
        cb: usize,
    },
    CrossEntropy(CrossEntropyParams, bool),
    Bce(BceParams),
    Regression(RegressionLoss, usize),
    Cox(usize),
    Sgd(SgdHyper, usize),
    AdamW(AdamWHyper, usize),
    SumSquares(usize),
}

impl Op {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Op::ConvFwd(_) => "conv_forward",
            Op::ConvBwd(_) => "conv_backward",
            Op::BnTrain(_) => "batchnorm_forward_train",
            Op::BnInfer(_) => "batchnorm_forward_infer",
            Op::BnBwd(_) => "batchnorm_backward",
            Op::Relu(..) => "leaky_relu_forward",
            Op::ReluBwd(..) => "leaky_relu_backward",
            Op::MaxPool(_) => "max_pool_forward",
            Op::MaxPoolBwd(_) => "max_pool_backward",
            Op::AvgPool(_) => "avg_pool_forward",
            Op::AvgPoolBwd(_) => "avg_pool_backward",
            Op::Gap { .. } => "global_avg_pool_forward",
            Op::GapBwd { .. } => "global_avg_pool_backward",
            Op::Linear(_) => "linear_forward",
            Op::LinearBwd(_) => "linear_backward",
            Op::Dropout(..) => "dropout_forward",
            Op::DropoutBwd(..) => "dropout_backward",
            Op::Add(_) => "add",
            Op::Accumulate(_) => "accumulate",
            Op::Scale(_) => "scale",
            Op::Fill(_) => "fill",
            Op::Copy(_) => "copy",
            Op::Concat { .. } => "concat_channels_forward",
            Op::ConcatBwd { .. } => "concat_channels_backward",
            Op::CrossEntropy(..) => "cross_entropy",
            Op::Bce(_) => "bce_with_logits",
            Op::Regression(..) => "regression_loss",
            Op::Cox(_) => "cox_loss",
            Op::Sgd(..) => "sgd_step",
            Op::AdamW(..) => "adamw_step",
            Op::SumSquares(_) => "sum_squares",
        }
    }

    /// (atol, rtol). Reductions over many terms (convolution, linear, batch statistics) differ from
    /// the CPU's f64-accumulated or blocked sums by rounding only; elementwise ops match to an ulp.
    pub(crate) fn tolerance(&self) -> (f64, f64) {
        match self {
            Op::ConvFwd(_) | Op::ConvBwd(_) | Op::Linear(_) | Op::LinearBwd(_) => (1e-4, 1e-3),
            Op::BnTrain(_) | Op::BnInfer(_) | Op::BnBwd(_) => (1e-4, 1e-3),
            Op::Gap { .. } | Op::CrossEntropy(..) | Op::Bce(_) | Op::Regression(..) | Op::Cox(_) => {
                (1e-5, 1e-4)
            }
            Op::AdamW(..) | Op::SumSquares(_) => (1e-6, 1e-5),
            _ => (1e-6, 1e-6),
        }
    }
}

/// The ops and shapes checked: the ResNet layers at 2D and 3D shapes, plus every other op.
pub fn cases() -> Vec<Op> {
    let bn = |n, c, s| BatchNormParams::new(n, c, s);
    let mut v = vec![
        Op::ConvFwd(ConvParams::conv2d(2, 3, 8, [17, 19], 7, 2, 3)),
        Op::ConvBwd(ConvParams::conv2d(2, 3, 8, [17, 19], 7, 2, 3)),
        Op::ConvFwd(ConvParams::conv2d(2, 16, 16, [14, 14], 3, 1, 1)),
        Op::ConvBwd(ConvParams::conv2d(2, 16, 16, [14, 14], 3, 1, 1)),
        Op::ConvBwd(ConvParams::conv2d(2, 16, 32, [14, 14], 1, 2, 0)),
        Op::ConvFwd(ConvParams::conv3d(2, 4, 8, [9, 10, 11], 3, 2, 1)),
        Op::ConvBwd(ConvParams::conv3d(2, 4, 8, [9, 10, 11], 3, 2, 1)),
        Op::ConvBwd(ConvParams {
            groups: 2,
            ..ConvParams::conv2d(2, 8, 8, [9, 9], 3, 1, 1)
        }),
        Op::BnTrain(bn(4, 8, 49)),
        Op::BnTrain(bn(8, 16, 1)),
        Op::BnInfer(bn(4, 8, 49)),
        Op::BnBwd(bn(4, 8, 49)),
        Op::BnBwd(bn(2, 4, 9 * 10 * 11)),
        Op::Relu(0.0, 1000),
        Op::Relu(0.1, 1000),
        Op::ReluBwd(0.0, 1000),
        Op::ReluBwd(0.1, 1000),
        Op::MaxPool(PoolParams::pool2d(2, 3, [13, 12], 3, 2, 1)),
        Op::MaxPoolBwd(PoolParams::pool2d(2, 3, [13, 12], 3, 2, 1)),
        Op::MaxPoolBwd(PoolParams::pool3d(2, 2, [7, 8, 9], 3, 2, 1)),
        Op::AvgPool(PoolParams::pool2d(2, 3, [13, 12], 3, 2, 1)),
        Op::AvgPoolBwd(PoolParams::pool2d(2, 3, [13, 12], 3, 2, 1)),
        Op::AvgPoolBwd(PoolParams::pool3d(2, 2, [7, 8, 9], 2, 2, 0)),
        Op::Gap {
            planes: 12,
            spatial: 49,
        },
        Op::GapBwd {
            planes: 12,
            spatial: 49,
        },
        Op::Linear(LinearParams {
            n: 5,
            in_features: 37,
            out_features: 3,
        }),
        Op::LinearBwd(LinearParams {
            n: 5,
            in_features: 37,
            out_features: 3,
        }),
        Op::Dropout(DropoutParams { prob: 0.3, seed: 11 }, 1000),
        Op::DropoutBwd(DropoutParams { prob: 0.3, seed: 11 }, 1000),
        Op::Add(1000),
        Op::Accumulate(1000),
        Op::Scale(1000),
        Op::Fill(1000),
        Op::Copy(1000),
        Op::Concat {
            n: 2,
            s: 9,
            ca: 3,
            cb: 5,
        },
        Op::ConcatBwd {
            n: 2,
            s: 9,
            ca: 3,
            cb: 5,
        },
        Op::CrossEntropy(
            CrossEntropyParams {
                n: 7,
                classes: 3,
                label_smoothing: 0.0,
            },
            false,
        ),
        Op::CrossEntropy(
            CrossEntropyParams {
                n: 7,
                classes: 3,
                label_smoothing: 0.1,
            },
            true,
        ),
        Op::Bce(BceParams { n: 6, labels: 4 }),
        Op::Regression(RegressionLoss::Mse, 20),
        Op::Regression(RegressionLoss::Huber { delta: 0.5 }, 20),
        Op::Cox(16),
        Op::Sgd(
            SgdHyper {
                lr: 0.1,
                momentum: 0.9,
                weight_decay: 1e-4,
                nesterov: true,
            },
            1000,
        ),
        Op::AdamW(
            AdamWHyper {
                lr: 1e-3,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 0.01,
                step: 3,
            },
            1000,
        ),
        Op::SumSquares(100_003),
    ];
    v.shrink_to_fit();
    v
}

/// Random inputs of an op (every buffer it reads or writes, in `run`'s order).
fn inputs(op: &Op, rng: &mut ChaCha8Rng) -> Vec<Vec<f32>> {
    let mut r = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect() };
    // Coarse values with many ties and zeros, as after a ReLU (the max-pool tie rule is exercised).
    let coarse =
        |v: Vec<f32>| -> Vec<f32> { v.into_iter().map(|x| (x * 4.0).round().max(0.0) / 4.0).collect() };
    let pos = |v: Vec<f32>| -> Vec<f32> { v.into_iter().map(|x| 0.5 + x.abs()).collect() };
    match op {
        Op::ConvFwd(p) => vec![
            r(p.input_len()),
            r(p.weight_len()),
            r(p.c_out as usize),
            r(p.output_len()),
        ],
        Op::ConvBwd(p) => vec![
            r(p.input_len()),
            r(p.weight_len()),
            r(p.output_len()),
            r(p.input_len()),
            r(p.weight_len()),
            r(p.c_out as usize),
        ],
        Op::BnTrain(p) => {
            let c = p.c as usize;
            vec![r(p.len()), r(c), r(c), r(p.len()), r(c), r(c), r(c), pos(r(c))]
        }
        Op::BnInfer(p) => {
            let c = p.c as usize;
            vec![r(p.len()), r(c), r(c), r(c), pos(r(c)), r(p.len())]
        }
        Op::BnBwd(p) => {
            let c = p.c as usize;
            vec![
                r(p.len()),
                r(c),
                r(c),
                pos(r(c)),
                r(p.len()),
                r(p.len()),
                r(c),
                r(c),
            ]
        }
        Op::Relu(_, n) => vec![r(*n), r(*n)],
        Op::ReluBwd(_, n) => vec![r(*n), r(*n), r(*n)],
        Op::MaxPool(p) => vec![coarse(r(p.input_len())), r(p.output_len())],
        Op::MaxPoolBwd(p) => vec![coarse(r(p.input_len())), r(p.output_len()), r(p.input_len())],
        Op::AvgPool(p) => vec![r(p.input_len()), r(p.output_len())],
        Op::AvgPoolBwd(p) => vec![r(p.output_len()), r(p.input_len())],
        Op::Gap { planes, spatial } => vec![r(planes * spatial), r(*planes)],
        Op::GapBwd { planes, spatial } => vec![r(*planes), r(planes * spatial)],
        Op::Linear(p) => {
            let (n, i, o) = (p.n as usize, p.in_features as usize, p.out_features as usize);
            vec![r(n * i), r(o * i), r(o), r(n * o)]
        }
        Op::LinearBwd(p) => {
            let (n, i, o) = (p.n as usize, p.in_features as usize, p.out_features as usize);
            vec![r(n * i), r(o * i), r(n * o), r(n * i), r(o * i), r(o)]
        }
        Op::Dropout(_, n) | Op::DropoutBwd(_, n) | Op::Copy(n) => vec![r(*n), r(*n)],
        Op::Add(n) => vec![r(*n), r(*n), r(*n)],
        Op::Accumulate(n) => vec![r(*n), r(*n)],
        Op::Scale(n) | Op::Fill(n) => vec![r(*n)],
        Op::Concat { n, s, ca, cb } => vec![r(n * ca * s), r(n * cb * s), r(n * (ca + cb) * s)],
        Op::ConcatBwd { n, s, ca, cb } => vec![r(n * (ca + cb) * s), r(n * ca * s), r(n * cb * s)],
        Op::CrossEntropy(p, _) => {
            let (n, c) = (p.n as usize, p.classes as usize);
            let logits = r(n * c).into_iter().map(|x| 4.0 * x).collect();
            let targets = (0..n).map(|i| ((i * 5 + 1) % c) as f32).collect();
            vec![logits, targets, pos(r(c)), r(n * c)]
        }
        Op::Bce(p) => {
            let len = (p.n * p.labels) as usize;
            let targets = r(len).into_iter().map(|x| (x > 0.0) as u8 as f32).collect();
            let mask = (0..len).map(|i| (i % 5 != 0) as u8 as f32).collect();
            vec![
                r(len).into_iter().map(|x| 4.0 * x).collect(),
                targets,
                mask,
                pos(r(p.labels as usize)),
                r(len),
            ]
        }
        Op::Regression(_, n) => {
            let mask = (0..*n).map(|i| (i % 5 != 0) as u8 as f32).collect();
            vec![r(*n), r(*n), mask, r(*n)]
        }
        Op::Cox(n) => {
            let time = (0..*n).map(|i| (i % 5) as f32).collect();
            let event = (0..*n).map(|i| (i % 3 != 0) as u8 as f32).collect();
            vec![r(*n), time, event, r(*n)]
        }
        Op::Sgd(_, n) => vec![r(*n), r(*n), r(*n)],
        Op::AdamW(_, n) => {
            let v = r(*n).into_iter().map(|x| x * x * 0.01).collect();
            vec![r(*n), r(*n), r(*n).into_iter().map(|x| x * 0.1).collect(), v]
        }
        Op::SumSquares(n) => vec![r(*n)],
    }
}

/// Runs one op on `b`; returns the buffers it writes (in order) and its host scalar, if any.
fn run<B: Backend>(b: &B, op: &Op, host: &[Vec<f32>]) -> Result<(Vec<Vec<f32>>, Option<f64>)> {
    let mut bufs: Vec<B::Buf> = host.iter().map(|h| b.upload(h)).collect::<Result<_>>()?;
    let lens: Vec<usize> = host.iter().map(Vec::len).collect();
    let mut scalar = None;
    let outs: Vec<usize> = {
        // A whole-buffer view of element i of a slice of buffers.
        macro_rules! v {
            ($s:expr, $i:expr) => {
                b.view(&$s[$i], 0..lens[$i])
            };
        }
        macro_rules! m {
            ($i:expr) => {
                b.view_mut(&mut bufs[$i], 0..lens[$i])
            };
        }
        match op {
            Op::ConvFwd(p) => {
                let (ins, outs) = bufs.split_at_mut(3);
                b.conv_forward(
                    p,
                    v!(ins, 0),
                    v!(ins, 1),
                    Some(v!(ins, 2)),
                    b.view_mut(&mut outs[0], 0..lens[3]),
                )?;
                vec![3]
            }
            Op::ConvBwd(p) => {
                let (ins, outs) = bufs.split_at_mut(3);
                let [dx, dw, db] = outs else {
                    unreachable!("three outputs")
                };
                b.conv_backward(
                    p,
                    v!(ins, 0),
                    v!(ins, 1),
                    v!(ins, 2),
                    Some(b.view_mut(dx, 0..lens[3])),
                    b.view_mut(dw, 0..lens[4]),
                    Some(b.view_mut(db, 0..lens[5])),
                )?;
                vec![3, 4, 5]
            }
            Op::BnTrain(p) => {
                let (ins, outs) = bufs.split_at_mut(3);
                let [y, sm, si, rm, rv] = outs else {
                    unreachable!("five outputs")
                };
                b.batchnorm_forward_train(
                    p,
                    v!(ins, 0),
                    v!(ins, 1),
                    v!(ins, 2),
                    b.view_mut(y, 0..lens[3]),
                    b.view_mut(sm, 0..lens[4]),
                    b.view_mut(si, 0..lens[5]),
                    b.view_mut(rm, 0..lens[6]),
                    b.view_mut(rv, 0..lens[7]),
                )?;
                vec![3, 4, 5, 6, 7]
            }
            Op::BnInfer(p) => {
                let (ins, outs) = bufs.split_at_mut(5);
                b.batchnorm_forward_infer(
                    p,
                    v!(ins, 0),
                    v!(ins, 1),
                    v!(ins, 2),
                    v!(ins, 3),
                    v!(ins, 4),
                    b.view_mut(&mut outs[0], 0..lens[5]),
                )?;
                vec![5]
            }
            Op::BnBwd(p) => {
                let (ins, outs) = bufs.split_at_mut(5);
                let [dx, dg, db] = outs else {
                    unreachable!("three outputs")
                };
                b.batchnorm_backward(
                    p,
                    v!(ins, 0),
                    v!(ins, 1),
                    v!(ins, 2),
                    v!(ins, 3),
                    v!(ins, 4),
                    b.view_mut(dx, 0..lens[5]),
                    b.view_mut(dg, 0..lens[6]),
                    b.view_mut(db, 0..lens[7]),
                )?;
                vec![5, 6, 7]
            }
            Op::Relu(slope, _) => {
                let (ins, outs) = bufs.split_at_mut(1);
                b.leaky_relu_forward(*slope, v!(ins, 0), b.view_mut(&mut outs[0], 0..lens[1]))?;
                vec![1]
            }
            Op::ReluBwd(slope, _) => {
                let (ins, outs) = bufs.split_at_mut(2);
                b.leaky_relu_backward(
                    *slope,
                    v!(ins, 0),
                    v!(ins, 1),
                    b.view_mut(&mut outs[0], 0..lens[2]),
                )?;
                vec![2]
            }
            Op::MaxPool(p) => {
                let (ins, outs) = bufs.split_at_mut(1);
                b.max_pool_forward(p, v!(ins, 0), b.view_mut(&mut outs[0], 0..lens[1]))?;
                vec![1]
            }
            Op::MaxPoolBwd(p) => {
                let (ins, outs) = bufs.split_at_mut(2);
                b.max_pool_backward(p, v!(ins, 0), v!(ins, 1), b.view_mut(&mut outs[0], 0..lens[2]))?;
                vec![2]
            }
            Op::AvgPool(p) => {
                let (ins, outs) = bufs.split_at_mut(1);
                b.avg_pool_forward(p, v!(ins, 0), b.view_mut(&mut outs[0], 0..lens[1]))?;
                vec![1]
            }
            Op::AvgPoolBwd(p) => {
                let (ins, outs) = bufs.split_at_mut(1);
                b.avg_pool_backward(p, v!(ins, 0), b.view_mut(&mut outs[0], 0..lens[1]))?;
                vec![1]
            }
            Op::Gap { spatial, .. } => {
                let (ins, outs) = bufs.split_at_mut(1);
                b.global_avg_pool_forward(*spatial, v!(ins, 0), b.view_mut(&mut outs[0], 0..lens[1]))?;
                vec![1]
            }
            Op::GapBwd { spatial, .. } => {
                let (ins, outs) = bufs.split_at_mut(1);
                b.global_avg_pool_backward(*spatial, v!(ins, 0), b.view_mut(&mut outs[0], 0..lens[1]))?;
                vec![1]
            }
            Op::Linear(p) => {
                let (ins, outs) = bufs.split_at_mut(3);
                b.linear_forward(
                    p,
                    v!(ins, 0),
                    v!(ins, 1),
                    Some(v!(ins, 2)),
                    b.view_mut(&mut outs[0], 0..lens[3]),
                )?;
                vec![3]
            }
            Op::LinearBwd(p) => {
                let (ins, outs) = bufs.split_at_mut(3);
                let [dx, dw, db] = outs else {
                    unreachable!("three outputs")
                };
                b.linear_backward(
                    p,
                    v!(ins, 0),
                    v!(ins, 1),
                    v!(ins, 2),
                    Some(b.view_mut(dx, 0..lens[3])),
                    b.view_mut(dw, 0..lens[4]),
                    Some(b.view_mut(db, 0..lens[5])),
                )?;
                vec![3, 4, 5]
            }
            Op::Dropout(p, _) => {
                let (ins, outs) = bufs.split_at_mut(1);
                b.dropout_forward(p, v!(ins, 0), b.view_mut(&mut outs[0], 0..lens[1]))?;
                vec![1]
            }
            Op::DropoutBwd(p, _) => {
                let (ins, outs) = bufs.split_at_mut(1);
                b.dropout_backward(p, v!(ins, 0), b.view_mut(&mut outs[0], 0..lens[1]))?;
                vec![1]
            }
            Op::Add(_) => {
                let (ins, outs) = bufs.split_at_mut(2);
                b.add(v!(ins, 0), v!(ins, 1), b.view_mut(&mut outs[0], 0..lens[2]))?;
                vec![2]
            }
            Op::Accumulate(_) => {
                let (ins, outs) = bufs.split_at_mut(1);
                b.accumulate(v!(ins, 0), b.view_mut(&mut outs[0], 0..lens[1]))?;
                vec![1]
            }
            Op::Scale(_) => {
                b.scale(0.37, m!(0))?;
                vec![0]
            }
            Op::Fill(_) => {
                b.fill(m!(0), -2.5)?;
                vec![0]
            }
            Op::Copy(_) => {
                let (ins, outs) = bufs.split_at_mut(1);
                b.copy(v!(ins, 0), b.view_mut(&mut outs[0], 0..lens[1]))?;
                vec![1]
            }
            Op::Concat { n, s, ca, cb } => {
                let (ins, outs) = bufs.split_at_mut(2);
                b.concat_channels_forward(
                    *n,
                    *s,
                    v!(ins, 0),
                    *ca,
                    v!(ins, 1),
                    *cb,
                    b.view_mut(&mut outs[0], 0..lens[2]),
                )?;
                vec![2]
            }
            Op::ConcatBwd { n, s, ca, cb } => {
                let (ins, outs) = bufs.split_at_mut(1);
                let [da, db] = outs else {
                    unreachable!("two outputs")
                };
                b.concat_channels_backward(
                    *n,
                    *s,
                    v!(ins, 0),
                    *ca,
                    *cb,
                    b.view_mut(da, 0..lens[1]),
                    b.view_mut(db, 0..lens[2]),
                )?;
                vec![1, 2]
            }
            Op::CrossEntropy(p, weighted) => {
                let (ins, outs) = bufs.split_at_mut(3);
                let w = weighted.then(|| v!(ins, 2));
                let l =
                    b.cross_entropy(p, v!(ins, 0), v!(ins, 1), w, b.view_mut(&mut outs[0], 0..lens[3]))?;
                scalar = Some(l as f64);
                vec![3]
            }
            Op::Bce(p) => {
                let (ins, outs) = bufs.split_at_mut(4);
                let l = b.bce_with_logits(
                    p,
                    v!(ins, 0),
                    v!(ins, 1),
                    Some(v!(ins, 2)),
                    Some(v!(ins, 3)),
                    b.view_mut(&mut outs[0], 0..lens[4]),
                )?;
                scalar = Some(l as f64);
                vec![4]
            }
            Op::Regression(kind, _) => {
                let (ins, outs) = bufs.split_at_mut(3);
                let l = b.regression_loss(
                    *kind,
                    v!(ins, 0),
                    v!(ins, 1),
                    Some(v!(ins, 2)),
                    b.view_mut(&mut outs[0], 0..lens[3]),
                )?;
                scalar = Some(l as f64);
                vec![3]
            }
            Op::Cox(_) => {
                let (ins, outs) = bufs.split_at_mut(3);
                let l = b.cox_loss(
                    v!(ins, 0),
                    v!(ins, 1),
                    v!(ins, 2),
                    b.view_mut(&mut outs[0], 0..lens[3]),
                )?;
                scalar = Some(l as f64);
                vec![3]
            }
            Op::Sgd(h, _) => {
                let [param, grad, mom] = &mut bufs[..] else {
                    unreachable!("three buffers")
                };
                b.sgd_step(
                    h,
                    b.view_mut(param, 0..lens[0]),
                    b.view(grad, 0..lens[1]),
                    b.view_mut(mom, 0..lens[2]),
                )?;
                vec![0, 2]
            }
            Op::AdamW(h, _) => {
                let [param, grad, m1, m2] = &mut bufs[..] else {
                    unreachable!("four buffers")
                };
                b.adamw_step(
                    h,
                    b.view_mut(param, 0..lens[0]),
                    b.view(grad, 0..lens[1]),
                    b.view_mut(m1, 0..lens[2]),
                    b.view_mut(m2, 0..lens[3]),
                )?;
                vec![0, 2, 3]
            }
            Op::SumSquares(_) => {
                scalar = Some(b.sum_squares(v!(bufs, 0))?);
                vec![]
            }
        }
    };
    let outputs = outs
        .iter()
        .map(|&i| b.download(b.view(&bufs[i], 0..lens[i])))
        .collect::<Result<_>>()?;
    Ok((outputs, scalar))
}

#[derive(Serialize, Debug)]
pub struct OpParity {
    pub op: &'static str,
    pub shape: String,
    pub atol: f64,
    pub rtol: f64,
    pub max_abs_err: f64,
    pub max_rel_err: f64,
    pub pass: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Largest absolute and relative error and whether every value is within atol + rtol·|ref|.
pub fn compare(got: &[f64], want: &[f64], atol: f64, rtol: f64) -> (f64, f64, bool) {
    let mut pass = got.len() == want.len();
    let (mut abs, mut rel) = (0.0f64, 0.0f64);
    for (&g, &w) in got.iter().zip(want) {
        let e = (g - w).abs();
        if !e.is_finite() {
            pass &= g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan());
            abs = f64::INFINITY;
            continue;
        }
        abs = abs.max(e);
        rel = rel.max(e / w.abs().max(f64::MIN_POSITIVE));
        pass &= e <= atol + rtol * w.abs();
    }
    (abs, rel, pass)
}

pub fn parity_of<B: Backend>(dev: &B, op: &Op, seed: u64) -> OpParity {
    parity_of_tampered(dev, op, seed, &|_, _| {})
}

/// The outputs of one op on a device, before they are compared: (outputs, returned scalar).
pub type Outputs = (Vec<Vec<f32>>, Option<f64>);

/// `parity_of` with the device's outputs passed through `tamper` (op name, outputs) before the
/// comparison: tests use it to show that a wrong result is caught and named.
pub fn parity_of_tampered<B: Backend>(
    dev: &B,
    op: &Op,
    seed: u64,
    tamper: &dyn Fn(&'static str, &mut Outputs),
) -> OpParity {
    let (atol, rtol) = op.tolerance();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let host = inputs(op, &mut rng);
    let mut report = OpParity {
        op: op.name(),
        shape: format!("{op:?}"),
        atol,
        rtol,
        max_abs_err: 0.0,
        max_rel_err: 0.0,
        pass: false,
        error: None,
    };
    let want = match run(&CpuBackend, op, &host) {
        Ok(w) => w,
        Err(e) => {
            report.error = Some(format!("cpu: {e}"));
            return report;
        }
    };
    let got = match run(dev, op, &host) {
        Ok(mut g) => {
            tamper(op.name(), &mut g);
            g
        }
        Err(e) => {
            report.error = Some(format!("{}: {e}", dev.name()));
            return report;
        }
    };
    let flat =
        |(outs, s): &Outputs| -> Vec<f64> { outs.iter().flatten().map(|&x| x as f64).chain(*s).collect() };
    let (abs, rel, pass) = compare(&flat(&got), &flat(&want), atol, rtol);
    report.max_abs_err = abs;
    report.max_rel_err = rel;
    report.pass = pass;
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_applies_atol_plus_rtol() {
        assert!(compare(&[1.0, 100.5], &[1.0, 100.0], 0.0, 0.01).2);
        assert!(!compare(&[1.0, 102.0], &[1.0, 100.0], 0.0, 0.01).2);
        assert!(!compare(&[f64::NAN], &[1.0], 1.0, 1.0).2);
        assert!(!compare(&[1.0], &[1.0, 2.0], 1.0, 1.0).2);
        let (abs, rel, _) = compare(&[1.5], &[1.0], 0.0, 0.0);
        assert_eq!((abs, rel), (0.5, 0.5));
    }
}
