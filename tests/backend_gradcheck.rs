//! Finite-difference gradient checks for every CPU layer and loss: the analytic backward must match
//! central differences of the forward pass, objective L = Σ r·y with a fixed random r.

use medtrain::backend::cpu::CpuBackend;
use medtrain::backend::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const B: CpuBackend = CpuBackend;
/// Checked entries per tensor (spread evenly), to keep the suite fast.
const PROBES: usize = 40;

fn rand_vec(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..len).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
}

/// Values spaced ≥ `gap` apart (a shuffled ramp), so max pooling and ReLU have no kink within ±eps.
fn spaced_vec(len: usize, seed: u64, gap: f32) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut v: Vec<f32> = (0..len)
        .map(|i| (i as f32 - len as f32 / 2.0 + 0.5) * gap)
        .collect();
    for i in (1..len).rev() {
        v.swap(i, rng.gen_range(0..=i));
    }
    v
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}

/// Compares `analytic` with central differences of `objective` at probed entries of `x`.
fn fd_check(name: &str, x: &[f32], analytic: &[f32], eps: f32, tol: f64, objective: impl Fn(&[f32]) -> f64) {
    assert_eq!(x.len(), analytic.len(), "{name}: gradient length");
    let step = (x.len() / PROBES).max(1);
    let mut worst = 0.0f64;
    for i in (0..x.len()).step_by(step) {
        let mut xp = x.to_vec();
        xp[i] = x[i] + eps;
        let lp = objective(&xp);
        xp[i] = x[i] - eps;
        let lm = objective(&xp);
        // The step actually taken in f32.
        let h = ((x[i] + eps) - (x[i] - eps)) as f64;
        let fd = (lp - lm) / h;
        let an = analytic[i] as f64;
        let err = (fd - an).abs() / (tol + tol * an.abs());
        worst = worst.max(err);
        assert!(
            err <= 1.0,
            "{name}[{i}]: finite difference {fd:.6} vs analytic {an:.6}"
        );
    }
    assert!(worst.is_finite(), "{name}: non-finite gradient");
}

fn conv_case(name: &str, p: ConvParams, bias: bool) {
    let x = rand_vec(p.input_len(), 1);
    let w = rand_vec(p.weight_len(), 2);
    let b = rand_vec(p.c_out as usize, 3);
    let r = rand_vec(p.output_len(), 4);
    let bias_of = |b: &[f32]| if bias { Some(b.to_vec()) } else { None };
    let forward = |x: &[f32], w: &[f32], b: &[f32]| {
        let mut y = vec![0.0; p.output_len()];
        B.conv_forward(&p, x, w, bias_of(b).as_deref(), &mut y).unwrap();
        dot(&y, &r)
    };
    let mut dx = vec![0.0; x.len()];
    let mut dw = vec![0.5; w.len()]; // starts non-zero: backward must accumulate into it
    let mut db = vec![0.5; b.len()];
    B.conv_backward(
        &p,
        &x,
        &w,
        &r,
        Some(&mut dx),
        &mut dw,
        if bias { Some(&mut db) } else { None },
    )
    .unwrap();
    dw.iter_mut().for_each(|v| *v -= 0.5);
    db.iter_mut().for_each(|v| *v -= 0.5);
    fd_check(&format!("{name} dx"), &x, &dx, 1e-2, 2e-3, |x| forward(x, &w, &b));
    fd_check(&format!("{name} dw"), &w, &dw, 1e-2, 2e-3, |w| forward(&x, w, &b));
    if bias {
        fd_check(&format!("{name} db"), &b, &db, 1e-2, 2e-3, |b| forward(&x, &w, b));
    }
}

#[test]
fn conv2d_gradients() {
    conv_case(
        "conv2d 3x3 s1 p1",
        ConvParams::conv2d(2, 3, 4, [6, 5], 3, 1, 1),
        true,
    );
    conv_case(
        "conv2d 7x7 s2 p3",
        ConvParams::conv2d(2, 2, 3, [9, 9], 7, 2, 3),
        false,
    );
    conv_case(
        "conv2d 1x1 s1",
        ConvParams::conv2d(3, 4, 5, [3, 4], 1, 1, 0),
        true,
    );
    conv_case(
        "conv2d 1x1 s2",
        ConvParams::conv2d(2, 4, 5, [5, 4], 1, 2, 0),
        false,
    );
    let mut dilated = ConvParams::conv2d(2, 4, 6, [7, 7], 3, 1, 2);
    dilated.dilation = [1, 2, 2];
    dilated.groups = 2;
    conv_case("conv2d dilated grouped", dilated, true);
}

#[test]
fn conv3d_gradients() {
    conv_case(
        "conv3d 3x3x3 s1 p1",
        ConvParams::conv3d(2, 2, 3, [4, 5, 3], 3, 1, 1),
        true,
    );
    conv_case(
        "conv3d 3x3x3 s2 p1",
        ConvParams::conv3d(2, 2, 3, [5, 5, 5], 3, 2, 1),
        false,
    );
}

fn bn_case(p: BatchNormParams) {
    let x = rand_vec(p.len(), 11)
        .iter()
        .map(|v| v * 2.0 + 0.3)
        .collect::<Vec<_>>();
    let gamma = rand_vec(p.c as usize, 12);
    let beta = rand_vec(p.c as usize, 13);
    let r = rand_vec(p.len(), 14);
    let c = p.c as usize;
    let forward = |x: &[f32], g: &[f32], b: &[f32]| {
        let mut y = vec![0.0; p.len()];
        let (mut m, mut s, mut rm, mut rv) = (vec![0.0; c], vec![0.0; c], vec![0.0; c], vec![1.0; c]);
        B.batchnorm_forward_train(&p, x, g, b, &mut y, &mut m, &mut s, &mut rm, &mut rv)
            .unwrap();
        dot(&y, &r)
    };
    let mut y = vec![0.0; p.len()];
    let (mut m, mut s, mut rm, mut rv) = (vec![0.0; c], vec![0.0; c], vec![0.0; c], vec![1.0; c]);
    B.batchnorm_forward_train(&p, &x, &gamma, &beta, &mut y, &mut m, &mut s, &mut rm, &mut rv)
        .unwrap();
    let (mut dx, mut dg, mut db) = (vec![0.0; p.len()], vec![0.0; c], vec![0.0; c]);
    B.batchnorm_backward(&p, &x, &gamma, &m, &s, &r, &mut dx, &mut dg, &mut db)
        .unwrap();
    fd_check("batchnorm dx", &x, &dx, 1e-2, 3e-3, |x| forward(x, &gamma, &beta));
    fd_check("batchnorm dgamma", &gamma, &dg, 1e-2, 3e-3, |g| {
        forward(&x, g, &beta)
    });
    fd_check("batchnorm dbeta", &beta, &db, 1e-2, 3e-3, |b| {
        forward(&x, &gamma, b)
    });
}

#[test]
fn batchnorm_gradients() {
    bn_case(BatchNormParams::new(3, 4, 10)); // 2D: spatial = H·W
    bn_case(BatchNormParams::new(2, 3, 24)); // 3D: spatial = D·H·W
}

#[test]
fn activation_gradients() {
    let x = spaced_vec(60, 21, 0.05);
    let r = rand_vec(60, 22);
    for slope in [0.0f32, 0.1] {
        let mut dx = vec![0.0; 60];
        B.leaky_relu_backward(slope, &x, &r, &mut dx).unwrap();
        fd_check("leaky_relu", &x, &dx, 1e-3, 1e-3, |x| {
            let mut y = vec![0.0; 60];
            B.leaky_relu_forward(slope, x, &mut y).unwrap();
            dot(&y, &r)
        });
    }
}

fn pool_case(name: &str, p: PoolParams, max: bool) {
    let x = spaced_vec(p.input_len(), 31, 0.01);
    let r = rand_vec(p.output_len(), 32);
    let mut dx = vec![0.0; x.len()];
    if max {
        B.max_pool_backward(&p, &x, &r, &mut dx).unwrap();
    } else {
        B.avg_pool_backward(&p, &r, &mut dx).unwrap();
    }
    fd_check(name, &x, &dx, 2e-3, 1e-3, |x| {
        let mut y = vec![0.0; p.output_len()];
        if max {
            B.max_pool_forward(&p, x, &mut y).unwrap();
        } else {
            B.avg_pool_forward(&p, x, &mut y).unwrap();
        }
        dot(&y, &r)
    });
}

#[test]
fn pooling_gradients() {
    pool_case("maxpool2d 3/2/1", PoolParams::pool2d(2, 3, [7, 6], 3, 2, 1), true);
    pool_case(
        "maxpool3d 2/2/0",
        PoolParams::pool3d(1, 2, [4, 4, 5], 2, 2, 0),
        true,
    );
    pool_case(
        "avgpool2d 3/2/1",
        PoolParams::pool2d(2, 3, [7, 6], 3, 2, 1),
        false,
    );
    pool_case(
        "avgpool3d 3/1/1",
        PoolParams::pool3d(1, 2, [3, 4, 4], 3, 1, 1),
        false,
    );
    let x = rand_vec(6 * 9, 33);
    let r = rand_vec(6, 34);
    let mut dx = vec![0.0; x.len()];
    B.global_avg_pool_backward(9, &r, &mut dx).unwrap();
    fd_check("global avg pool", &x, &dx, 1e-2, 1e-3, |x| {
        let mut y = vec![0.0; 6];
        B.global_avg_pool_forward(9, x, &mut y).unwrap();
        dot(&y, &r)
    });
}

#[test]
fn linear_gradients() {
    let p = LinearParams {
        n: 3,
        in_features: 7,
        out_features: 4,
    };
    let (x, w, b, r) = (
        rand_vec(21, 41),
        rand_vec(28, 42),
        rand_vec(4, 43),
        rand_vec(12, 44),
    );
    let forward = |x: &[f32], w: &[f32], b: &[f32]| {
        let mut y = vec![0.0; 12];
        B.linear_forward(&p, x, w, Some(b), &mut y).unwrap();
        dot(&y, &r)
    };
    let (mut dx, mut dw, mut db) = (vec![0.0; 21], vec![0.0; 28], vec![0.0; 4]);
    B.linear_backward(&p, &x, &w, &r, Some(&mut dx), &mut dw, Some(&mut db))
        .unwrap();
    fd_check("linear dx", &x, &dx, 1e-2, 1e-3, |x| forward(x, &w, &b));
    fd_check("linear dw", &w, &dw, 1e-2, 1e-3, |w| forward(&x, w, &b));
    fd_check("linear db", &b, &db, 1e-2, 1e-3, |b| forward(&x, &w, b));
}

#[test]
fn dropout_add_concat_gradients() {
    let p = DropoutParams { prob: 0.3, seed: 7 };
    let (x, r) = (rand_vec(5000, 51), rand_vec(5000, 52));
    let mut y = vec![0.0; 5000];
    B.dropout_forward(&p, &x, &mut y).unwrap();
    let dropped = y.iter().filter(|&&v| v == 0.0).count() as f64 / 5000.0;
    assert!((dropped - 0.3).abs() < 0.03, "dropout rate {dropped}");
    let mut dx = vec![0.0; 5000];
    B.dropout_backward(&p, &r, &mut dx).unwrap();
    fd_check("dropout", &x, &dx, 1e-2, 1e-3, |x| {
        let mut y = vec![0.0; 5000];
        B.dropout_forward(&p, x, &mut y).unwrap();
        dot(&y, &r)
    });
    let (a, b) = (rand_vec(2 * 3 * 4, 53), rand_vec(2 * 2 * 4, 54));
    let mut y = vec![0.0; 2 * 5 * 4];
    B.concat_channels_forward(2, 4, &a, 3, &b, 2, &mut y).unwrap();
    assert_eq!(&y[..12], &a[..12]);
    assert_eq!(&y[12..20], &b[..8]);
    assert_eq!(&y[20..32], &a[12..]);
    let (mut da, mut db) = (vec![0.0; a.len()], vec![0.0; b.len()]);
    B.concat_channels_backward(2, 4, &y, 3, 2, &mut da, &mut db)
        .unwrap();
    assert_eq!((da, db), (a.clone(), b.clone()));
    let mut sum = vec![0.0; a.len()];
    B.add(&a, &a, &mut sum).unwrap();
    B.accumulate(&a, &mut sum).unwrap();
    assert!(sum.iter().zip(&a).all(|(s, a)| (s - 3.0 * a).abs() < 1e-6));
}

#[test]
fn cross_entropy_gradients() {
    let p = CrossEntropyParams {
        n: 5,
        classes: 4,
        label_smoothing: 0.1,
    };
    let logits = rand_vec(20, 61).iter().map(|v| v * 3.0).collect::<Vec<_>>();
    let targets = vec![0.0, 3.0, 2.0, 2.0, 1.0];
    let weights = vec![0.5, 1.0, 2.0, 1.5];
    for w in [None, Some(weights.as_slice())] {
        let mut d = vec![0.0; 20];
        B.cross_entropy(&p, &logits, &targets, w, &mut d).unwrap();
        fd_check("cross entropy", &logits, &d, 1e-2, 1e-3, |z| {
            let mut scratch = vec![0.0; 20];
            B.cross_entropy(&p, z, &targets, w, &mut scratch).unwrap() as f64
        });
    }
    let bad = vec![0.0, 4.0, 2.0, 2.0, 1.0];
    assert!(B.cross_entropy(&p, &logits, &bad, None, &mut [0.0; 20]).is_err());
}

#[test]
fn bce_gradients() {
    let p = BceParams { n: 4, labels: 3 };
    let logits = rand_vec(12, 71).iter().map(|v| v * 4.0).collect::<Vec<_>>();
    let targets: Vec<f32> = (0..12).map(|i| (i % 2) as f32).collect();
    let mask: Vec<f32> = (0..12).map(|i| if i % 5 == 3 { 0.0 } else { 1.0 }).collect();
    let pos_weight = vec![2.0, 0.5, 1.0];
    let mut d = vec![0.0; 12];
    B.bce_with_logits(&p, &logits, &targets, Some(&mask), Some(&pos_weight), &mut d)
        .unwrap();
    assert_eq!(d[3], 0.0, "masked label has no gradient");
    fd_check("bce", &logits, &d, 1e-2, 1e-3, |z| {
        let mut s = vec![0.0; 12];
        B.bce_with_logits(&p, z, &targets, Some(&mask), Some(&pos_weight), &mut s)
            .unwrap() as f64
    });
}

#[test]
fn regression_gradients() {
    let pred = rand_vec(10, 81).iter().map(|v| v * 3.0).collect::<Vec<_>>();
    let target = rand_vec(10, 82);
    for kind in [RegressionLoss::Mse, RegressionLoss::Huber { delta: 1.0 }] {
        let mut d = vec![0.0; 10];
        B.regression_loss(kind, &pred, &target, None, &mut d).unwrap();
        fd_check("regression", &pred, &d, 1e-3, 1e-3, |x| {
            let mut s = vec![0.0; 10];
            B.regression_loss(kind, x, &target, None, &mut s).unwrap() as f64
        });
        // With unknown targets (NaN there, as the loader leaves them): the mean over the known ones.
        let mask: Vec<f32> = (0..10).map(|i| (i % 3 != 0) as u8 as f32).collect();
        let holed: Vec<f32> = (0..10)
            .map(|i| if mask[i] != 0.0 { target[i] } else { f32::NAN })
            .collect();
        B.regression_loss(kind, &pred, &holed, Some(&mask), &mut d)
            .unwrap();
        fd_check("masked regression", &pred, &d, 1e-3, 1e-3, |x| {
            let mut s = vec![0.0; 10];
            B.regression_loss(kind, x, &holed, Some(&mask), &mut s).unwrap() as f64
        });
    }
}

/// The Cox loss by its definition, O(N²), in f64: an independent check of the sorted implementation.
fn cox_direct(risk: &[f32], time: &[f32], event: &[f32]) -> f64 {
    let mut total = 0.0;
    let mut events = 0.0;
    for i in 0..risk.len() {
        if event[i] == 0.0 {
            continue;
        }
        let s: f64 = (0..risk.len())
            .filter(|&j| time[j] >= time[i])
            .map(|j| (risk[j] as f64).exp())
            .sum();
        total -= risk[i] as f64 - s.ln();
        events += 1.0;
    }
    total / events
}

#[test]
fn cox_gradients_with_ties_and_censoring() {
    let risk = rand_vec(9, 91);
    let time = vec![5.0, 3.0, 3.0, 8.0, 1.0, 3.0, 8.0, 2.0, 6.0];
    let event = vec![1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0];
    let mut d = vec![0.0; 9];
    let loss = B.cox_loss(&risk, &time, &event, &mut d).unwrap() as f64;
    assert!((loss - cox_direct(&risk, &time, &event)).abs() < 1e-5, "{loss}");
    fd_check("cox", &risk, &d, 1e-3, 1e-3, |s| cox_direct(s, &time, &event));
    let mut none = vec![1.0; 9];
    assert_eq!(B.cox_loss(&risk, &time, &[0.0; 9], &mut none).unwrap(), 0.0);
    assert!(none.iter().all(|&v| v == 0.0));
}
