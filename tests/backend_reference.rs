//! The CPU backend against PyTorch: fixtures written by tests/reference/torch_layers.py (PyTorch on
//! CPU, f64), compared with atol + rtol·|ref|.

use std::collections::HashMap;

use medtrain::backend::cpu::CpuBackend;
use medtrain::backend::*;
use serde::Deserialize;

const B: CpuBackend = CpuBackend;
const ATOL: f64 = 2e-5;
const RTOL: f64 = 2e-4;

#[derive(Deserialize)]
struct Fixture {
    cases: HashMap<String, HashMap<String, Vec<f32>>>,
}

fn fixture() -> Fixture {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/reference/fixtures/torch_layers.json"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!("{path}: {e}; regenerate with /usr/bin/python3 tests/reference/torch_layers.py")
    });
    serde_json::from_str(&text).expect("torch_layers.json parses")
}

struct Case<'a>(&'a str, &'a HashMap<String, Vec<f32>>);

impl Case<'_> {
    fn get(&self, k: &str) -> &[f32] {
        self.1
            .get(k)
            .unwrap_or_else(|| panic!("{}: fixture lacks `{k}`", self.0))
    }
    fn zeros(&self, k: &str) -> Vec<f32> {
        vec![0.0; self.get(k).len()]
    }
}

fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let tol = ATOL + RTOL * (w as f64).abs();
        assert!(
            ((g - w) as f64).abs() <= tol,
            "{what}[{i}]: medtrain {g} vs PyTorch {w}"
        );
    }
}

fn case<'a>(f: &'a Fixture, name: &'a str) -> Case<'a> {
    Case(
        name,
        f.cases
            .get(name)
            .unwrap_or_else(|| panic!("fixture lacks case {name}")),
    )
}

fn conv_check(c: Case, p: ConvParams, bias: bool) {
    let mut y = c.zeros("y");
    let b = if bias { Some(c.get("b")) } else { None };
    B.conv_forward(&p, c.get("x"), c.get("w"), b, &mut y).unwrap();
    assert_close(&format!("{} y", c.0), &y, c.get("y"));
    let (mut dx, mut dw) = (c.zeros("x"), c.zeros("w"));
    let mut db = vec![0.0; p.c_out as usize];
    B.conv_backward(
        &p,
        c.get("x"),
        c.get("w"),
        c.get("dy"),
        Some(&mut dx),
        &mut dw,
        bias.then_some(&mut db[..]),
    )
    .unwrap();
    assert_close(&format!("{} dx", c.0), &dx, c.get("d_x"));
    assert_close(&format!("{} dw", c.0), &dw, c.get("d_w"));
    if bias {
        assert_close(&format!("{} db", c.0), &db, c.get("d_b"));
    }
}

#[test]
fn convolutions_match_pytorch() {
    let f = fixture();
    conv_check(
        case(&f, "conv2d_s2_p1_bias"),
        ConvParams::conv2d(2, 3, 4, [7, 6], 3, 2, 1),
        true,
    );
    let mut p = ConvParams::conv2d(2, 4, 6, [6, 6], 3, 1, 2);
    p.dilation = [1, 2, 2];
    p.groups = 2;
    conv_check(case(&f, "conv2d_dil2_groups2"), p, false);
    conv_check(
        case(&f, "conv3d_s1_p1"),
        ConvParams::conv3d(2, 2, 3, [4, 5, 3], 3, 1, 1),
        true,
    );
}

#[test]
fn activations_and_pooling_match_pytorch() {
    let f = fixture();
    for (name, slope) in [("leaky_relu_0.1", 0.1), ("relu", 0.0)] {
        let c = case(&f, name);
        let (mut y, mut dx) = (c.zeros("y"), c.zeros("x"));
        B.leaky_relu_forward(slope, c.get("x"), &mut y).unwrap();
        B.leaky_relu_backward(slope, c.get("x"), c.get("dy"), &mut dx)
            .unwrap();
        assert_close(name, &y, c.get("y"));
        assert_close(name, &dx, c.get("d_x"));
    }
    let pools = [
        ("maxpool2d_3_2_1", PoolParams::pool2d(2, 3, [7, 6], 3, 2, 1), true),
        (
            "avgpool3d_2_2_0",
            PoolParams::pool3d(1, 2, [4, 4, 5], 2, 2, 0),
            false,
        ),
        (
            "avgpool2d_3_2_1",
            PoolParams::pool2d(2, 2, [6, 7], 3, 2, 1),
            false,
        ),
    ];
    for (name, p, max) in pools {
        let c = case(&f, name);
        let (mut y, mut dx) = (c.zeros("y"), c.zeros("x"));
        if max {
            B.max_pool_forward(&p, c.get("x"), &mut y).unwrap();
            B.max_pool_backward(&p, c.get("x"), c.get("dy"), &mut dx).unwrap();
        } else {
            B.avg_pool_forward(&p, c.get("x"), &mut y).unwrap();
            B.avg_pool_backward(&p, c.get("dy"), &mut dx).unwrap();
        }
        assert_close(name, &y, c.get("y"));
        assert_close(name, &dx, c.get("d_x"));
    }
    let c = case(&f, "global_avg_pool");
    let (mut y, mut dx) = (c.zeros("y"), c.zeros("x"));
    B.global_avg_pool_forward(20, c.get("x"), &mut y).unwrap();
    B.global_avg_pool_backward(20, c.get("dy"), &mut dx).unwrap();
    assert_close("global avg pool", &y, c.get("y"));
    assert_close("global avg pool", &dx, c.get("d_x"));
}

#[test]
fn linear_matches_pytorch() {
    let f = fixture();
    let c = case(&f, "linear");
    let p = LinearParams {
        n: 3,
        in_features: 7,
        out_features: 4,
    };
    let mut y = c.zeros("y");
    B.linear_forward(&p, c.get("x"), c.get("w"), Some(c.get("b")), &mut y)
        .unwrap();
    assert_close("linear y", &y, c.get("y"));
    let (mut dx, mut dw, mut db) = (c.zeros("x"), c.zeros("w"), c.zeros("b"));
    B.linear_backward(
        &p,
        c.get("x"),
        c.get("w"),
        c.get("dy"),
        Some(&mut dx),
        &mut dw,
        Some(&mut db),
    )
    .unwrap();
    assert_close("linear dx", &dx, c.get("d_x"));
    assert_close("linear dw", &dw, c.get("d_w"));
    assert_close("linear db", &db, c.get("d_b"));
}

#[test]
fn batchnorm_matches_pytorch() {
    let f = fixture();
    for (name, p) in [
        ("batchnorm2d_train", BatchNormParams::new(3, 4, 10)),
        ("batchnorm3d_train", BatchNormParams::new(2, 3, 24)),
    ] {
        let c = case(&f, name);
        let ch = p.c as usize;
        let mut y = c.zeros("y");
        let (mut mean, mut invstd) = (vec![0.0; ch], vec![0.0; ch]);
        let (mut rm, mut rv) = (
            c.get("running_mean_in").to_vec(),
            c.get("running_var_in").to_vec(),
        );
        B.batchnorm_forward_train(
            &p,
            c.get("x"),
            c.get("gamma"),
            c.get("beta"),
            &mut y,
            &mut mean,
            &mut invstd,
            &mut rm,
            &mut rv,
        )
        .unwrap();
        assert_close(name, &y, c.get("y"));
        assert_close(name, &rm, c.get("running_mean"));
        assert_close(name, &rv, c.get("running_var"));
        let (mut dx, mut dg, mut db) = (c.zeros("x"), vec![0.0; ch], vec![0.0; ch]);
        B.batchnorm_backward(
            &p,
            c.get("x"),
            c.get("gamma"),
            &mean,
            &invstd,
            c.get("dy"),
            &mut dx,
            &mut dg,
            &mut db,
        )
        .unwrap();
        assert_close(name, &dx, c.get("d_x"));
        assert_close(name, &dg, c.get("d_gamma"));
        assert_close(name, &db, c.get("d_beta"));
    }
    let c = case(&f, "batchnorm2d_eval");
    let mut y = c.zeros("y");
    let p = BatchNormParams::new(2, 3, 16);
    B.batchnorm_forward_infer(
        &p,
        c.get("x"),
        c.get("gamma"),
        c.get("beta"),
        c.get("running_mean"),
        c.get("running_var"),
        &mut y,
    )
    .unwrap();
    assert_close("batchnorm eval", &y, c.get("y"));
}

#[test]
fn losses_match_pytorch() {
    let f = fixture();
    let c = case(&f, "cross_entropy_weighted_smoothed");
    let mut d = c.zeros("logits");
    let p = CrossEntropyParams {
        n: 6,
        classes: 5,
        label_smoothing: 0.1,
    };
    let loss = B
        .cross_entropy(
            &p,
            c.get("logits"),
            c.get("targets"),
            Some(c.get("weights")),
            &mut d,
        )
        .unwrap();
    assert_close("cross entropy", &[loss], c.get("loss"));
    assert_close("cross entropy grad", &d, c.get("d_logits"));

    let c = case(&f, "bce_masked_pos_weight");
    let mut d = c.zeros("logits");
    let p = BceParams { n: 4, labels: 3 };
    let loss = B
        .bce_with_logits(
            &p,
            c.get("logits"),
            c.get("targets"),
            Some(c.get("mask")),
            Some(c.get("pos_weight")),
            &mut d,
        )
        .unwrap();
    assert_close("bce", &[loss], c.get("loss"));
    assert_close("bce grad", &d, c.get("d_logits"));

    for (name, kind) in [
        ("mse", RegressionLoss::Mse),
        ("huber_1.0", RegressionLoss::Huber { delta: 1.0 }),
    ] {
        let c = case(&f, name);
        let mut d = c.zeros("pred");
        let loss = B
            .regression_loss(kind, c.get("pred"), c.get("target"), None, &mut d)
            .unwrap();
        assert_close(name, &[loss], c.get("loss"));
        assert_close(name, &d, c.get("d_pred"));
    }

    let c = case(&f, "cox_breslow");
    let mut d = c.zeros("risk");
    let loss = B
        .cox_loss(c.get("risk"), c.get("time"), c.get("event"), &mut d)
        .unwrap();
    assert_close("cox", &[loss], c.get("loss"));
    assert_close("cox grad", &d, c.get("d_risk"));
}

#[test]
fn optimizer_steps_match_pytorch() {
    let f = fixture();
    let sgd = [
        (
            "sgd_momentum_nesterov_wd",
            SgdHyper {
                lr: 0.1,
                momentum: 0.9,
                weight_decay: 1e-2,
                nesterov: true,
            },
        ),
        (
            "sgd_momentum",
            SgdHyper {
                lr: 0.05,
                momentum: 0.8,
                weight_decay: 0.0,
                nesterov: false,
            },
        ),
        (
            "sgd_plain_wd",
            SgdHyper {
                lr: 0.1,
                momentum: 0.0,
                weight_decay: 1e-3,
                nesterov: false,
            },
        ),
    ];
    for (name, h) in sgd {
        let c = case(&f, name);
        let mut p = c.get("param0").to_vec();
        let mut m = vec![0.0; p.len()];
        for g in c.get("grads").chunks(p.len()) {
            B.sgd_step(&h, &mut p, g, &mut m).unwrap();
        }
        assert_close(name, &p, c.get("param3"));
    }
    let c = case(&f, "adamw");
    let mut p = c.get("param0").to_vec();
    let (mut m, mut v) = (vec![0.0; p.len()], vec![0.0; p.len()]);
    for (t, g) in c.get("grads").chunks(p.len()).enumerate() {
        let h = AdamWHyper {
            lr: 1e-2,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.05,
            step: t as u32 + 1,
        };
        B.adamw_step(&h, &mut p, g, &mut m, &mut v).unwrap();
    }
    assert_close("adamw", &p, c.get("param3"));
}
