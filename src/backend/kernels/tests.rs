//! The kernels, built for the host (build.rs) and launched by the emulator with grids smaller than the
//! tensors, against the CPU backend on random inputs of awkward sizes. Tolerances are stated per op as
//! `|got − want| ≤ atol + rtol·|want|`; outputs start as NaN so an element no thread writes fails.
//! The last tests show that these tolerances reject an off-by-one in indexing or bounds.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::emulate::{Emulator, HostGrid};
use super::{standalone_source, HEADER, REDUCE_THREADS, SOURCES};
use crate::backend::cpu::CpuBackend;
use crate::backend::params::PoolParams;
use crate::backend::{
    AdamWHyper, Backend, BackendError, BceParams, CrossEntropyParams, DropoutParams, RegressionLoss, SgdHyper,
};

/// Sizes around and above the default emulated grid (2 × 256 threads), none a multiple of it.
const SIZES: [usize; 5] = [1, 7, 257, 513, 2_049];

#[derive(Clone, Copy, Debug)]
struct Tol {
    atol: f64,
    rtol: f64,
}

/// Same IEEE operations in the same order on both sides: bitwise equal.
const EXACT: Tol = Tol { atol: 0.0, rtol: 0.0 };
/// Losses: f64 transcendental functions (host libm vs the device's, ≤ 2 ulp) rounded to f32.
const LOSS: Tol = Tol {
    atol: 1e-7,
    rtol: 1e-6,
};

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

fn uniform(r: &mut ChaCha8Rng, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n).map(|_| r.gen_range(lo..hi)).collect()
}

fn nan(n: usize) -> Vec<f32> {
    vec![f32::NAN; n]
}

/// The first element outside the tolerance, described; None when all agree.
fn mismatch(got: &[f32], want: &[f32], tol: Tol) -> Option<String> {
    if got.len() != want.len() {
        return Some(format!("lengths differ: {} vs {}", got.len(), want.len()));
    }
    got.iter().zip(want).enumerate().find_map(|(i, (&g, &w))| {
        let (g64, w64) = (g as f64, w as f64);
        let ok = (g64 - w64).abs() <= tol.atol + tol.rtol * w64.abs() || g.to_bits() == w.to_bits();
        (!ok).then(|| format!("element {i}: kernel {g:e}, cpu {w:e}"))
    })
}

fn assert_close(op: &str, got: &[f32], want: &[f32], tol: Tol) {
    if let Some(m) = mismatch(got, want, tol) {
        panic!("{op}: {m} (atol {}, rtol {})", tol.atol, tol.rtol);
    }
}

fn assert_scalar(op: &str, got: f64, want: f64, tol: Tol) {
    assert!(
        (got - want).abs() <= tol.atol + tol.rtol * want.abs() && got.is_finite(),
        "{op}: kernel {got:e}, cpu {want:e}"
    );
}

fn emu() -> Emulator {
    Emulator::new(HostGrid::default())
}

#[test]
fn fill_scale_add_accumulate_match_cpu() {
    let (cpu, k) = (CpuBackend, emu());
    for (t, &n) in SIZES.iter().enumerate() {
        let mut r = rng(10 + t as u64);
        let (a, b) = (uniform(&mut r, n, -3.0, 3.0), uniform(&mut r, n, -3.0, 3.0));
        let mut got = nan(n);
        k.fill(&mut got, 0.37).unwrap();
        assert_close("fill", &got, &vec![0.37; n], EXACT);

        let (mut got, mut want) = (a.clone(), a.clone());
        k.scale(-1.7, &mut got).unwrap();
        cpu.scale(-1.7, &mut want).unwrap();
        assert_close("scale", &got, &want, EXACT);

        let (mut got, mut want) = (nan(n), nan(n));
        k.add(&a, &b, &mut got).unwrap();
        cpu.add(&a, &b, &mut want).unwrap();
        assert_close("add", &got, &want, EXACT);

        let (mut got, mut want) = (b.clone(), b.clone());
        k.accumulate(&a, &mut got).unwrap();
        cpu.accumulate(&a, &mut want).unwrap();
        assert_close("accumulate", &got, &want, EXACT);
    }
}

#[test]
fn leaky_relu_matches_cpu_including_zero() {
    let (cpu, k) = (CpuBackend, emu());
    for (t, &n) in SIZES.iter().enumerate() {
        let mut r = rng(20 + t as u64);
        let mut x = uniform(&mut r, n, -2.0, 2.0);
        x[0] = 0.0; // the derivative at 0 is the slope
        let dy = uniform(&mut r, n, -1.0, 1.0);
        for slope in [0.0, 0.01, 0.2] {
            let (mut got, mut want) = (nan(n), nan(n));
            k.leaky_relu_forward(slope, &x, &mut got).unwrap();
            cpu.leaky_relu_forward(slope, &x, &mut want).unwrap();
            assert_close("leaky_relu forward", &got, &want, EXACT);
            let (mut got, mut want) = (nan(n), nan(n));
            k.leaky_relu_backward(slope, &x, &dy, &mut got).unwrap();
            cpu.leaky_relu_backward(slope, &x, &dy, &mut want).unwrap();
            assert_close("leaky_relu backward", &got, &want, EXACT);
        }
    }
}

#[test]
fn dropout_mask_matches_cpu_hash() {
    let (cpu, k) = (CpuBackend, emu());
    for (t, &n) in SIZES.iter().enumerate() {
        let x = uniform(&mut rng(30 + t as u64), n, -2.0, 2.0);
        for prob in [-0.1, 0.0, 0.3, 0.9] {
            let p = DropoutParams {
                prob,
                seed: 0xDEAD_BEEF ^ t as u64,
            };
            let (mut got, mut want) = (nan(n), nan(n));
            k.dropout_forward(&p, &x, &mut got).unwrap();
            cpu.dropout_forward(&p, &x, &mut want).unwrap();
            assert_close("dropout forward", &got, &want, EXACT);
            let (mut got, mut want) = (nan(n), nan(n));
            k.dropout_backward(&p, &x, &mut got).unwrap();
            cpu.dropout_backward(&p, &x, &mut want).unwrap();
            assert_close("dropout backward", &got, &want, EXACT);
        }
    }
}

#[test]
fn concat_channels_matches_cpu() {
    let (cpu, k) = (CpuBackend, emu());
    for (n, s, ca, cb) in [(1, 1, 1, 1), (3, 7, 2, 5), (2, 49, 64, 3), (5, 13, 1, 8)] {
        let mut r = rng((n * 1000 + s) as u64);
        let a = uniform(&mut r, n * ca * s, -1.0, 1.0);
        let b = uniform(&mut r, n * cb * s, -1.0, 1.0);
        let (mut got, mut want) = (nan(n * (ca + cb) * s), nan(n * (ca + cb) * s));
        k.concat_channels_forward(n, s, &a, ca, &b, cb, &mut got).unwrap();
        cpu.concat_channels_forward(n, s, &a, ca, &b, cb, &mut want)
            .unwrap();
        assert_close("concat forward", &got, &want, EXACT);
        let dy = want;
        let (mut ga, mut gb) = (nan(a.len()), nan(b.len()));
        let (mut wa, mut wb) = (nan(a.len()), nan(b.len()));
        k.concat_channels_backward(n, s, &dy, ca, cb, &mut ga, &mut gb)
            .unwrap();
        cpu.concat_channels_backward(n, s, &dy, ca, cb, &mut wa, &mut wb)
            .unwrap();
        assert_close("concat backward da", &ga, &wa, EXACT);
        assert_close("concat backward db", &gb, &wb, EXACT);
    }
}

#[test]
fn global_avg_pool_matches_cpu() {
    let (cpu, k) = (CpuBackend, emu());
    for (planes, s) in [(1, 1), (37, 49), (600, 7), (3, 1000)] {
        let mut r = rng((planes * 7 + s) as u64);
        let x = uniform(&mut r, planes * s, -4.0, 4.0);
        let (mut got, mut want) = (nan(planes), nan(planes));
        k.global_avg_pool_forward(s, &x, &mut got).unwrap();
        cpu.global_avg_pool_forward(s, &x, &mut want).unwrap();
        assert_close("global avg pool forward", &got, &want, EXACT);
        let dy = uniform(&mut r, planes, -1.0, 1.0);
        let (mut got, mut want) = (nan(planes * s), nan(planes * s));
        k.global_avg_pool_backward(s, &dy, &mut got).unwrap();
        cpu.global_avg_pool_backward(s, &dy, &mut want).unwrap();
        assert_close("global avg pool backward", &got, &want, EXACT);
    }
}

/// Pooling geometries: 2D (depth 1) and 3D, stride below, at and above the window, padding up to
/// kernel − 1, extents that the windows do not tile, and more output elements than emulated threads.
fn pool_cases() -> Vec<PoolParams> {
    let g = |n, c, in_dims, kernel, stride, pad| PoolParams {
        n,
        c,
        in_dims,
        kernel,
        stride,
        pad,
    };
    vec![
        PoolParams::pool2d(2, 3, [7, 9], 3, 2, 1),
        PoolParams::pool2d(1, 2, [1, 1], 1, 1, 0),
        PoolParams::pool2d(3, 5, [13, 11], 2, 2, 0),
        PoolParams::pool2d(2, 4, [17, 23], 3, 1, 1),
        PoolParams::pool2d(1, 3, [10, 10], 4, 3, 2),
        PoolParams::pool2d(2, 2, [5, 6], 5, 1, 2),
        PoolParams::pool2d(1, 1, [33, 35], 2, 3, 1),
        g(2, 3, [1, 8, 11], [1, 3, 2], [1, 2, 3], [0, 1, 1]),
        PoolParams::pool3d(2, 2, [5, 6, 7], 3, 2, 1),
        PoolParams::pool3d(1, 3, [4, 4, 4], 2, 2, 0),
        PoolParams::pool3d(1, 2, [7, 5, 9], 3, 1, 1),
        g(2, 2, [6, 9, 5], [2, 3, 4], [2, 1, 3], [1, 1, 2]),
        g(1, 1, [3, 17, 19], [3, 1, 2], [1, 4, 1], [1, 0, 1]),
    ]
}

/// Inputs from a few levels, so most windows hold tied maxima (the first one wins on both sides).
fn levels(r: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| [-1.5f32, 0.0, 0.5, 2.0][r.gen_range(0..4)])
        .collect()
}

#[test]
fn max_and_avg_pool_match_cpu_in_2d_and_3d() {
    let (cpu, k) = (CpuBackend, emu());
    for (t, p) in pool_cases().into_iter().enumerate() {
        let (ni, no) = (p.input_len(), p.output_len());
        let mut r = rng(300 + t as u64);
        for x in [uniform(&mut r, ni, -3.0, 3.0), levels(&mut r, ni)] {
            let dy = uniform(&mut r, no, -1.0, 1.0);
            let case = format!("case {t} {p:?}");

            let (mut got, mut want) = (nan(no), nan(no));
            k.max_pool_forward(&p, &x, &mut got).unwrap();
            cpu.max_pool_forward(&p, &x, &mut want).unwrap();
            assert_close(&format!("max pool forward {case}"), &got, &want, EXACT);

            let (mut got, mut want) = (nan(ni), nan(ni));
            k.max_pool_backward(&p, &x, &dy, &mut got).unwrap();
            cpu.max_pool_backward(&p, &x, &dy, &mut want).unwrap();
            assert_close(&format!("max pool backward {case}"), &got, &want, EXACT);

            let (mut got, mut want) = (nan(no), nan(no));
            k.avg_pool_forward(&p, &x, &mut got).unwrap();
            cpu.avg_pool_forward(&p, &x, &mut want).unwrap();
            assert_close(&format!("avg pool forward {case}"), &got, &want, EXACT);

            let (mut got, mut want) = (nan(ni), nan(ni));
            k.avg_pool_backward(&p, &dy, &mut got).unwrap();
            cpu.avg_pool_backward(&p, &dy, &mut want).unwrap();
            assert_close(&format!("avg pool backward {case}"), &got, &want, EXACT);
        }
    }
}

#[test]
fn pooling_does_not_depend_on_the_grid() {
    let p = PoolParams::pool3d(2, 3, [5, 6, 7], 3, 2, 1);
    let mut r = rng(330);
    let x = levels(&mut r, p.input_len());
    let dy = uniform(&mut r, p.output_len(), -1.0, 1.0);
    let cpu = CpuBackend;
    let mut want = nan(p.input_len());
    cpu.max_pool_backward(&p, &x, &dy, &mut want).unwrap();
    for (blocks, block_threads) in [(1, 1), (1, 7), (3, 100), (64, 256)] {
        let k = Emulator::new(HostGrid {
            blocks,
            block_threads,
        });
        let mut got = nan(p.input_len());
        k.max_pool_backward(&p, &x, &dy, &mut got).unwrap();
        assert_close(&format!("grid {blocks}x{block_threads}"), &got, &want, EXACT);
    }
}

#[test]
fn avg_pool_of_negative_zeros_keeps_the_sign_like_cpu() {
    let (cpu, k) = (CpuBackend, emu());
    let p = PoolParams::pool2d(1, 1, [4, 4], 2, 2, 0);
    let x = vec![-0.0f32; 16];
    let (mut got, mut want) = (nan(4), nan(4));
    k.avg_pool_forward(&p, &x, &mut got).unwrap();
    cpu.avg_pool_forward(&p, &x, &mut want).unwrap();
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&got), bits(&want));
}

#[test]
fn pooling_rejects_windows_that_do_not_fit() {
    let k = emu();
    let bad = [
        PoolParams::pool2d(1, 1, [4, 4], 2, 2, 2), // padding as wide as the window: empty windows
        PoolParams::pool2d(1, 1, [2, 2], 5, 1, 1), // window larger than the padded input
        PoolParams::pool2d(1, 1, [4, 4], 2, 0, 0), // zero stride
        PoolParams::pool2d(1, 1, [4, 4], 0, 1, 0), // zero window
    ];
    for p in bad {
        let mut y = nan(16);
        let err = k.max_pool_forward(&p, &[0.0; 16], &mut y).unwrap_err();
        assert!(matches!(err, BackendError::Params { .. }), "{p:?}: {err}");
    }
    // Lengths are checked too.
    let p = PoolParams::pool2d(1, 1, [4, 4], 2, 2, 0);
    let mut dx = nan(15);
    assert!(k.avg_pool_backward(&p, &[0.0; 4], &mut dx).is_err());
}

#[test]
fn a_pooling_window_shifted_by_one_is_caught() {
    // A kernel whose windows start one element late sees the input shifted by one.
    let (cpu, k) = (CpuBackend, emu());
    let p = PoolParams::pool2d(1, 2, [9, 9], 3, 2, 1);
    let x = uniform(&mut rng(340), p.input_len() + 1, -1.0, 1.0);
    let (mut got, mut want) = (nan(p.output_len()), nan(p.output_len()));
    cpu.max_pool_forward(&p, &x[..p.input_len()], &mut want).unwrap();
    k.max_pool_forward(&p, &x[1..], &mut got).unwrap();
    assert!(mismatch(&got, &want, EXACT).is_some());
}

/// Σx² sums in a different (but fixed) order from the CPU's chunks: f64 rounding only.
const SUM_SQUARES: Tol = Tol {
    atol: 0.0,
    rtol: 1e-12,
};

#[test]
fn sum_squares_matches_cpu() {
    let (cpu, k) = (CpuBackend, emu());
    for n in [0, 1, 5, REDUCE_THREADS - 1, REDUCE_THREADS + 1, 100_003] {
        let x = uniform(&mut rng(n as u64), n, -3.0, 3.0);
        let got = k.sum_squares(&x).unwrap();
        let want = cpu.sum_squares(&x).unwrap();
        if n == 0 {
            assert_eq!(got, 0.0);
        } else {
            assert_scalar("sum_squares", got, want, SUM_SQUARES);
        }
    }
}

#[test]
fn sgd_matches_cpu_over_steps() {
    let (cpu, k) = (CpuBackend, emu());
    for (t, &n) in SIZES.iter().enumerate() {
        for (momentum, nesterov, weight_decay) in [(0.0, false, 0.0), (0.9, false, 1e-4), (0.9, true, 5e-4)] {
            let h = SgdHyper {
                lr: 0.05,
                momentum,
                weight_decay,
                nesterov,
            };
            let mut r = rng(40 + t as u64);
            let p0 = uniform(&mut r, n, -1.0, 1.0);
            let (mut gp, mut wp, mut gm, mut wm) = (p0.clone(), p0, vec![0.0; n], vec![0.0; n]);
            for _ in 0..3 {
                let g = uniform(&mut r, n, -1.0, 1.0);
                k.sgd_step(&h, &mut gp, &g, &mut gm).unwrap();
                cpu.sgd_step(&h, &mut wp, &g, &mut wm).unwrap();
            }
            assert_close("sgd param", &gp, &wp, EXACT);
            assert_close("sgd momentum", &gm, &wm, EXACT);
        }
    }
}

#[test]
fn adamw_matches_cpu_over_steps() {
    let (cpu, k) = (CpuBackend, emu());
    for (t, &n) in SIZES.iter().enumerate() {
        let mut r = rng(50 + t as u64);
        let p0 = uniform(&mut r, n, -1.0, 1.0);
        let (mut gp, mut wp) = (p0.clone(), p0);
        let (mut gm, mut gv, mut wm, mut wv) = (vec![0.0; n], vec![0.0; n], vec![0.0; n], vec![0.0; n]);
        for step in 1..=4 {
            let h = AdamWHyper {
                lr: 1e-3,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 0.01,
                step,
            };
            let g = uniform(&mut r, n, -1.0, 1.0);
            k.adamw_step(&h, &mut gp, &g, &mut gm, &mut gv).unwrap();
            cpu.adamw_step(&h, &mut wp, &g, &mut wm, &mut wv).unwrap();
        }
        assert_close("adamw param", &gp, &wp, EXACT);
        assert_close("adamw m", &gm, &wm, EXACT);
        assert_close("adamw v", &gv, &wv, EXACT);
    }
}

fn class_targets(r: &mut ChaCha8Rng, n: usize, classes: usize) -> Vec<f32> {
    (0..n).map(|_| r.gen_range(0..classes) as f32).collect()
}

#[test]
fn cross_entropy_matches_cpu_with_smoothing_and_weights() {
    let (cpu, k) = (CpuBackend, emu());
    for (n, classes) in [(1, 2), (7, 3), (600, 5), (33, 1)] {
        let mut r = rng((n * 10 + classes) as u64);
        let logits = uniform(&mut r, n * classes, -6.0, 6.0);
        let targets = class_targets(&mut r, n, classes);
        let weights = uniform(&mut r, classes, 0.2, 3.0);
        for smoothing in [0.0, 0.1] {
            for w in [None, Some(weights.as_slice())] {
                let p = CrossEntropyParams {
                    n: n as u32,
                    classes: classes as u32,
                    label_smoothing: smoothing,
                };
                let (mut got, mut want) = (nan(n * classes), nan(n * classes));
                let gl = k.cross_entropy(&p, &logits, &targets, w, &mut got).unwrap();
                let wl = cpu.cross_entropy(&p, &logits, &targets, w, &mut want).unwrap();
                assert_scalar("cross_entropy loss", gl as f64, wl as f64, LOSS);
                assert_close("cross_entropy dlogits", &got, &want, LOSS);
            }
        }
    }
}

#[test]
fn cross_entropy_rejects_the_first_invalid_target_like_cpu() {
    let (cpu, k) = (CpuBackend, emu());
    let p = CrossEntropyParams {
        n: 4,
        classes: 3,
        label_smoothing: 0.0,
    };
    let logits = uniform(&mut rng(60), 12, -1.0, 1.0);
    for bad in [
        vec![0.0, 2.5, 3.0, 1.0],
        vec![0.0, 1.0, 3.0, -1.0],
        vec![f32::NAN, 0.0, 0.0, 0.0],
    ] {
        let got = k
            .cross_entropy(&p, &logits, &bad, None, &mut nan(12))
            .unwrap_err();
        let want = cpu
            .cross_entropy(&p, &logits, &bad, None, &mut nan(12))
            .unwrap_err();
        match (got, want) {
            (
                BackendError::Target {
                    value: g,
                    classes: gc,
                    ..
                },
                BackendError::Target {
                    value: w,
                    classes: wc,
                    ..
                },
            ) => {
                assert!(
                    g.to_bits() == w.to_bits() && gc == wc,
                    "kernel {g}/{gc}, cpu {w}/{wc}"
                );
            }
            other => panic!("expected two Target errors, got {other:?}"),
        }
    }
}

#[test]
fn bce_matches_cpu_with_mask_and_pos_weight() {
    let (cpu, k) = (CpuBackend, emu());
    for (n, labels) in [(1, 1), (9, 4), (300, 7)] {
        let total = n * labels;
        let mut r = rng(total as u64);
        let logits = uniform(&mut r, total, -8.0, 8.0);
        let mut targets: Vec<f32> = (0..total).map(|_| r.gen_range(0..2) as f32).collect();
        targets[0] = 0.3; // soft label
        let mask: Vec<f32> = (0..total).map(|i| if i % 3 == 1 { 0.0 } else { 1.0 }).collect();
        let pos_weight = uniform(&mut r, labels, 0.5, 4.0);
        for m in [None, Some(mask.as_slice())] {
            for pw in [None, Some(pos_weight.as_slice())] {
                let p = BceParams {
                    n: n as u32,
                    labels: labels as u32,
                };
                let (mut got, mut want) = (nan(total), nan(total));
                let gl = k.bce_with_logits(&p, &logits, &targets, m, pw, &mut got).unwrap();
                let wl = cpu
                    .bce_with_logits(&p, &logits, &targets, m, pw, &mut want)
                    .unwrap();
                assert_scalar("bce loss", gl as f64, wl as f64, LOSS);
                assert_close("bce dlogits", &got, &want, LOSS);
            }
        }
    }
    // Everything masked: loss 0 and zero gradient on both.
    let p = BceParams { n: 2, labels: 2 };
    let (mut got, mut want) = (nan(4), nan(4));
    let x = [1.0, -1.0, 0.5, 2.0];
    let gl = k
        .bce_with_logits(&p, &x, &[1.0; 4], Some(&[0.0; 4]), None, &mut got)
        .unwrap();
    let wl = cpu
        .bce_with_logits(&p, &x, &[1.0; 4], Some(&[0.0; 4]), None, &mut want)
        .unwrap();
    assert_eq!((gl, wl), (0.0, 0.0));
    assert_close("bce fully masked", &got, &want, EXACT);
}

#[test]
fn regression_losses_match_cpu() {
    let (cpu, k) = (CpuBackend, emu());
    for (t, &n) in SIZES.iter().enumerate() {
        let mut r = rng(70 + t as u64);
        let pred = uniform(&mut r, n, -3.0, 3.0);
        let mut target = uniform(&mut r, n, -3.0, 3.0);
        target[0] = pred[0] + 0.7; // exactly on the Huber threshold
                                   // Unknown targets hold NaN, which neither side may read.
        let mask: Vec<f32> = (0..n).map(|i| if i % 3 == 2 { 0.0 } else { 1.0 }).collect();
        let holed: Vec<f32> = (0..n)
            .map(|i| if mask[i] != 0.0 { target[i] } else { f32::NAN })
            .collect();
        for kind in [RegressionLoss::Mse, RegressionLoss::Huber { delta: 0.7 }] {
            for (m, t) in [(None, &target), (Some(mask.as_slice()), &holed)] {
                let (mut got, mut want) = (nan(n), nan(n));
                let gl = k.regression_loss(kind, &pred, t, m, &mut got).unwrap();
                let wl = cpu.regression_loss(kind, &pred, t, m, &mut want).unwrap();
                assert_scalar("regression loss", gl as f64, wl as f64, LOSS);
                assert_close("regression dpred", &got, &want, LOSS);
            }
        }
        // Everything unknown: loss 0 and a zero gradient on both.
        let (mut got, mut want) = (nan(n), nan(n));
        let none = vec![0.0; n];
        let kind = RegressionLoss::Mse;
        let gl = k
            .regression_loss(kind, &pred, &holed, Some(&none), &mut got)
            .unwrap();
        let wl = cpu
            .regression_loss(kind, &pred, &holed, Some(&none), &mut want)
            .unwrap();
        assert_eq!((gl, wl), (0.0, 0.0));
        assert_close("regression fully masked", &got, &want, EXACT);
    }
}

#[test]
fn cox_loss_matches_cpu_with_ties_and_censoring() {
    let (cpu, k) = (CpuBackend, emu());
    for (t, &n) in [1usize, 2, 9, 64, 513].iter().enumerate() {
        let mut r = rng(80 + t as u64);
        let risk = uniform(&mut r, n, -2.0, 2.0);
        // Few distinct times, so most samples share their time with others (Breslow ties).
        let time: Vec<f32> = (0..n).map(|_| r.gen_range(0..6) as f32 * 1.5).collect();
        let event: Vec<f32> = (0..n).map(|_| r.gen_range(0..2) as f32).collect();
        for ev in [event.clone(), vec![0.0; n], vec![1.0; n]] {
            let (mut got, mut want) = (nan(n), nan(n));
            let gl = k.cox_loss(&risk, &time, &ev, &mut got).unwrap();
            let wl = cpu.cox_loss(&risk, &time, &ev, &mut want).unwrap();
            assert_scalar("cox loss", gl as f64, wl as f64, LOSS);
            assert_close("cox drisk", &got, &want, LOSS);
        }
    }
}

#[test]
fn results_do_not_depend_on_the_grid() {
    let x = uniform(&mut rng(90), 1_000, -2.0, 2.0);
    let grids = [(1, 1), (1, 32), (3, 100), (4, 256), (8, 256)];
    let runs: Vec<Vec<f32>> = grids
        .iter()
        .map(|&(blocks, block_threads)| {
            let k = Emulator::new(HostGrid {
                blocks,
                block_threads,
            });
            let mut y = nan(x.len());
            k.leaky_relu_forward(0.1, &x, &mut y).unwrap();
            let mut d = nan(1_500);
            k.concat_channels_forward(10, 50, &x[..500], 1, &x, 2, &mut d)
                .unwrap();
            y.extend(d);
            y
        })
        .collect();
    for (g, run) in grids.iter().zip(&runs) {
        assert_close(&format!("grid {g:?}"), run, &runs[0], EXACT);
    }
}

// ---- the comparison can fail: off-by-ones in a kernel's bounds or indexing are caught ----

#[test]
fn a_bound_one_short_is_caught() {
    let (cpu, k) = (CpuBackend, emu());
    let n = 513;
    let (a, b) = (
        uniform(&mut rng(100), n, -1.0, 1.0),
        uniform(&mut rng(101), n, -1.0, 1.0),
    );
    let mut want = nan(n);
    cpu.add(&a, &b, &mut want).unwrap();
    // A kernel looping `i < n − 1` leaves the last element as it was (NaN).
    let mut got = nan(n);
    k.add(&a[..n - 1], &b[..n - 1], &mut got[..n - 1]).unwrap();
    assert!(mismatch(&got, &want, EXACT).is_some());
}

#[test]
fn an_index_shifted_by_one_is_caught() {
    let (cpu, k) = (CpuBackend, emu());
    let (n, classes) = (64, 4);
    let mut r = rng(110);
    let logits = uniform(&mut r, n * classes + 1, -3.0, 3.0);
    let targets = class_targets(&mut r, n, classes);
    let p = CrossEntropyParams {
        n: n as u32,
        classes: classes as u32,
        label_smoothing: 0.1,
    };
    let mut want = nan(n * classes);
    let wl = cpu
        .cross_entropy(&p, &logits[..n * classes], &targets, None, &mut want)
        .unwrap();
    // A kernel reading logits[i + 1] sees the input shifted by one element.
    let mut got = nan(n * classes);
    let gl = k
        .cross_entropy(&p, &logits[1..], &targets, None, &mut got)
        .unwrap();
    assert!(mismatch(&got, &want, LOSS).is_some());
    assert!((gl as f64 - wl as f64).abs() > LOSS.atol + LOSS.rtol * (wl as f64).abs());

    // The same for an optimizer: momentum of element i updated from grad[i + 1].
    let h = SgdHyper {
        lr: 0.1,
        momentum: 0.9,
        weight_decay: 0.0,
        nesterov: false,
    };
    let g = uniform(&mut r, 101, -1.0, 1.0);
    let (mut wp, mut wm) = (vec![0.5; 100], vec![0.0; 100]);
    cpu.sgd_step(&h, &mut wp, &g[..100], &mut wm).unwrap();
    let (mut gp, mut gm) = (vec![0.5; 100], vec![0.0; 100]);
    k.sgd_step(&h, &mut gp, &g[1..], &mut gm).unwrap();
    assert!(mismatch(&gp, &wp, EXACT).is_some());
}

#[test]
fn a_one_ulp_change_is_caught_by_exact_ops() {
    let want = uniform(&mut rng(120), 300, 0.5, 1.0);
    let mut got = want.clone();
    got[299] = f32::from_bits(got[299].to_bits() + 1);
    assert!(mismatch(&got, &want, EXACT).is_some());
    // And the loss tolerance is far below a relative error of 1e-5.
    got[299] = want[299] * (1.0 + 1e-5);
    assert!(mismatch(&got, &want, LOSS).is_some());
}

// ---- the sources NVRTC compiles ----

#[test]
fn every_listed_kernel_is_defined_and_every_defined_kernel_listed() {
    for src in SOURCES {
        let defined: Vec<&str> = src
            .source
            .split("MT_KERNEL ")
            .skip(1)
            .filter_map(|rest| rest.split('(').next())
            .collect();
        let mut listed = src.functions.to_vec();
        let mut found = defined.clone();
        listed.sort_unstable();
        found.sort_unstable();
        assert_eq!(listed, found, "{}: entry points vs SOURCES", src.file);
        assert!(
            found.iter().all(|f| f.starts_with("mt_")),
            "{}: kernels are named mt_<op>",
            src.file
        );
        let text = standalone_source(src);
        assert!(
            !text.contains("#include \"mt.cuh\""),
            "{}: include left for NVRTC",
            src.file
        );
        assert!(text.starts_with(HEADER));
    }
}

#[test]
fn reduce_threads_agrees_with_the_header() {
    let line = HEADER
        .lines()
        .find(|l| l.starts_with("#define MT_REDUCE_THREADS"))
        .expect("mt.cuh defines MT_REDUCE_THREADS");
    let value: usize = line
        .split_whitespace()
        .nth(2)
        .and_then(|v| v.trim_end_matches("ULL").parse().ok())
        .expect("MT_REDUCE_THREADS is an integer literal");
    assert_eq!(value, REDUCE_THREADS);
}
