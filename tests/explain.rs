//! Grad-CAM against closed forms and PyTorch: a hand-built conv → (batch norm →) global average
//! pool → linear network, whose map is the classifier-weighted feature maps; up-sampling and channel
//! weights against F.interpolate and pytorch-grad-cam's formulas (tests/reference/
//! gradcam_interpolate.py); the pointing game on constructed maps; the randomisation check failing
//! for a map that ignores the weights; overlay orientation on an asymmetric phantom.

use crate::common::run;
use medtrain::backend::cpu::CpuBackend;
use medtrain::backend::params::AxisMap;
use medtrain::backend::{Backend, BatchNormParams, ConvParams, LinearParams};
use medtrain::explain::cam::{self, interpolate_axes, CamShape, GradCamOps, Method, Upsample};
use medtrain::explain::layers::{cam_layers, grad_cam, grad_cam_layers, CamRequest};
use medtrain::explain::mapback::SeriesGeometry;
use medtrain::explain::overlay::{radiological_flips, render_slice, SliceView};
use medtrain::explain::quality;
use medtrain::nn::graph::{Graph, Op};
use medtrain::nn::{ModelSpec, NamedTable, Net, ResNetConfig};
use std::path::Path;

const N: usize = 2;
const H: usize = 6;
const W: usize = 5;
const C: usize = 3;
const CLASSES: usize = 2;

/// Seeded values in [-1, 1) without a generator crate (a fixed LCG).
pub(crate) fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// A Grad-CAM request with receptive-field-centred up-sampling (the default of `medtrain explain`).
pub(crate) fn cam_req(output: usize, method: Method, normalise: bool) -> CamRequest {
    CamRequest {
        output,
        method,
        upsample: Upsample::Centred,
        normalise,
    }
}

/// conv 3×3 (1 → C, pad 1, no bias) [→ batch norm → ReLU] → global average pool → linear (C → 2).
pub(crate) fn hand_built(with_bn: bool) -> ModelSpec {
    let conv = ConvParams::conv2d(N as u32, 1, C as u32, [H as u32, W as u32], 3, 1, 1);
    let mut params = NamedTable::default();
    let mut buffers = NamedTable::default();
    let mut g = Graph::with_input(N * H * W);
    let weight = params.push("conv.weight", &[C, 1, 3, 3]);
    let mut x = g.push(
        Op::Conv {
            p: conv,
            weight,
            bias: None,
        },
        &[0],
        N * C * H * W,
    );
    if with_bn {
        let p = BatchNormParams::new(N as u32, C as u32, (H * W) as u32);
        let gamma = params.push("bn.weight", &[C]);
        params.push("bn.bias", &[C]);
        let stats = buffers.push("bn.running_mean", &[C]);
        buffers.push("bn.running_var", &[C]);
        x = g.push(Op::BatchNorm { p, gamma, stats }, &[x], N * C * H * W);
        x = g.push(Op::Relu, &[x], N * C * H * W);
    }
    x = g.push(Op::GlobalAvgPool { spatial: H * W }, &[x], N * C);
    let lp = LinearParams {
        n: N as u32,
        in_features: C as u32,
        out_features: CLASSES as u32,
    };
    let w = params.push("fc.weight", &[CLASSES, C]);
    let bias = params.push("fc.bias", &[CLASSES]);
    g.push(
        Op::Linear {
            p: lp,
            weight: w,
            bias: Some(bias),
        },
        &[x],
        N * CLASSES,
    );
    ModelSpec {
        config: ResNetConfig {
            spatial_dims: 2,
            in_channels: 1,
            num_outputs: CLASSES as u32,
            widths: vec![C as u32],
            blocks: vec![0],
            stem_kernel: 3,
            stem_stride: 1,
            stem_pool: false,
            tabular: 0,
        }
        .into(),
        graph: g,
        params,
        buffers,
    }
}

/// Direct 3×3 zero-padded convolution, written out independently of the backend.
fn conv_reference(input: &[f32], weight: &[f32]) -> Vec<f32> {
    let mut out = vec![0.0f32; N * C * H * W];
    for n in 0..N {
        for c in 0..C {
            for y in 0..H {
                for x in 0..W {
                    let mut acc = 0.0f32;
                    for ky in 0..3 {
                        for kx in 0..3 {
                            let (iy, ix) = (y as i64 + ky as i64 - 1, x as i64 + kx as i64 - 1);
                            if iy >= 0 && ix >= 0 && (iy as usize) < H && (ix as usize) < W {
                                acc += weight[c * 9 + ky * 3 + kx]
                                    * input[(n * H + iy as usize) * W + ix as usize];
                            }
                        }
                    }
                    out[((n * C + c) * H + y) * W + x] = acc;
                }
            }
        }
    }
    out
}

fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol * (1.0 + w.abs()), "{what}[{i}]: {g} vs {w}");
    }
}

fn min_max(v: &[f32]) -> Vec<f32> {
    let lo = v.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    v.iter()
        .map(|x| if hi > lo { (x - lo) / (hi - lo) } else { 0.0 })
        .collect()
}

#[test]
fn explain_gradcam_of_conv_pool_linear_is_the_classifier_weighted_feature_map() {
    let b = CpuBackend;
    let spec = hand_built(false);
    let mut net = Net::new(&b, spec, 1).unwrap();
    let conv_w = values(C * 9, 11);
    let fc_w = values(CLASSES * C, 12);
    let fc_b = values(CLASSES, 13);
    let mut params = conv_w.clone();
    params.extend(&fc_w);
    params.extend(&fc_b);
    net.param = b.upload(&params).unwrap();
    let input = values(N * H * W, 14);
    let layer = cam_layers(&net.spec)
        .into_iter()
        .find(|l| l.name == "conv")
        .expect("conv layer");
    let a = conv_reference(&input, &conv_w);
    let s = (H * W) as f32;
    for class in 0..CLASSES {
        // ∂y_k/∂A_cs = W_kc / S, so the Grad-CAM weight of channel c is W_kc / S.
        let mut want = vec![0.0f32; N * H * W];
        for n in 0..N {
            for p in 0..H * W {
                let v: f32 = (0..C)
                    .map(|c| fc_w[class * C + c] / s * a[(n * C + c) * H * W + p])
                    .sum();
                want[n * H * W + p] = v.max(0.0);
            }
        }
        let got = grad_cam(
            &b,
            &mut net,
            &input,
            &layer,
            &cam_req(class, Method::GradCam, false),
        )
        .unwrap();
        assert_close(&got.raw, &want, 1e-5, "raw map");
        // Same grid, so up-sampling is the identity; normalised maps are min-max per sample.
        assert_close(&got.maps, &want, 1e-5, "maps on the input grid");
        let norm = grad_cam(
            &b,
            &mut net,
            &input,
            &layer,
            &cam_req(class, Method::GradCam, true),
        )
        .unwrap();
        for n in 0..N {
            let r = n * H * W..(n + 1) * H * W;
            assert_close(&norm.maps[r.clone()], &min_max(&want[r]), 1e-5, "normalised");
        }
        // Grad-CAM++: constant gradient g = W_kc/S per channel gives α = g² / (2g² + ΣA·g³).
        let pp = grad_cam(
            &b,
            &mut net,
            &input,
            &layer,
            &cam_req(class, Method::GradCamPlusPlus, false),
        )
        .unwrap();
        let mut want_pp = vec![0.0f32; N * H * W];
        for n in 0..N {
            let w: Vec<f64> = (0..C)
                .map(|c| {
                    let g = (fc_w[class * C + c] / s) as f64;
                    let sum_a: f64 = a[(n * C + c) * H * W..(n * C + c + 1) * H * W]
                        .iter()
                        .map(|&v| v as f64)
                        .sum();
                    let denom = 2.0 * g * g + sum_a * g * g * g;
                    let alpha = if denom != 0.0 { g * g / denom } else { 0.0 };
                    alpha * g.max(0.0) * (H * W) as f64
                })
                .collect();
            for p in 0..H * W {
                let v: f64 = (0..C).map(|c| w[c] * a[(n * C + c) * H * W + p] as f64).sum();
                want_pp[n * H * W + p] = v.max(0.0) as f32;
            }
        }
        assert_close(&pp.raw, &want_pp, 1e-4, "Grad-CAM++ map");
        // LayerCAM: the same constant gradient at every position, so ReLU(Σ_c ReLU(W_kc/S) · A_cs).
        let lc = grad_cam(
            &b,
            &mut net,
            &input,
            &layer,
            &cam_req(class, Method::LayerCam, false),
        )
        .unwrap();
        let mut want_lc = vec![0.0f32; N * H * W];
        for n in 0..N {
            for p in 0..H * W {
                let v: f64 = (0..C)
                    .map(|c| (fc_w[class * C + c] / s).max(0.0) as f64 * a[(n * C + c) * H * W + p] as f64)
                    .sum();
                want_lc[n * H * W + p] = v.max(0.0) as f32;
            }
        }
        assert_close(&lc.raw, &want_lc, 1e-5, "LayerCAM map");
    }
}

#[test]
fn explain_backward_to_a_conv_under_inference_batch_norm_matches_the_closed_form() {
    let b = CpuBackend;
    let spec = hand_built(true);
    let mut net = Net::new(&b, spec, 2).unwrap();
    let conv_w = values(C * 9, 21);
    let gamma: Vec<f32> = values(C, 22).iter().map(|v| 1.0 + 0.5 * v).collect();
    let beta = values(C, 23);
    let fc_w = values(CLASSES * C, 24);
    let fc_b = values(CLASSES, 25);
    let mut params = conv_w.clone();
    for part in [&gamma, &beta, &fc_w, &fc_b] {
        params.extend(part.iter());
    }
    net.param = b.upload(&params).unwrap();
    let mean = values(C, 26).iter().map(|v| 0.2 * v).collect::<Vec<_>>();
    let var: Vec<f32> = values(C, 27).iter().map(|v| 0.5 + 0.4 * v.abs()).collect();
    let mut state = mean.clone();
    state.extend(&var);
    net.state = b.upload(&state).unwrap();
    let input = values(N * H * W, 28);
    let conv = cam_layers(&net.spec)
        .into_iter()
        .find(|l| l.name == "conv")
        .unwrap();
    let a = conv_reference(&input, &conv_w);
    let s = (H * W) as f32;
    let class = 1;
    // y = fc(mean_s relu(γ (A − μ)/√(σ² + ε) + β)): ∂y/∂A_cs = W_kc/S · [pre-ReLU > 0] · γ_c/√(σ²_c + ε).
    let mut want_grad = vec![0.0f32; N * C * H * W];
    for n in 0..N {
        for c in 0..C {
            let k = gamma[c] / (var[c] + 1e-5).sqrt();
            for p in 0..H * W {
                let i = (n * C + c) * H * W + p;
                let pre = k * (a[i] - mean[c]) + beta[c];
                want_grad[i] = if pre > 0.0 {
                    fc_w[class * C + c] / s * k
                } else {
                    0.0
                };
            }
        }
    }
    let got = grad_cam(
        &b,
        &mut net,
        &input,
        &conv,
        &cam_req(class, Method::GradCam, false),
    )
    .unwrap();
    let grad = b
        .download(b.view(net.node_output_grad(conv.node), 0..N * C * H * W))
        .unwrap();
    assert_close(&grad, &want_grad, 1e-5, "gradient at the conv output");
    let act = b
        .download(b.view(net.node_output(conv.node), 0..N * C * H * W))
        .unwrap();
    assert_close(&act, &a, 1e-5, "conv activation");
    let mut want = vec![0.0f32; N * H * W];
    for n in 0..N {
        for p in 0..H * W {
            let v: f32 = (0..C)
                .map(|c| {
                    let w: f32 = want_grad[(n * C + c) * H * W..(n * C + c + 1) * H * W]
                        .iter()
                        .sum::<f32>()
                        / s;
                    w * a[(n * C + c) * H * W + p]
                })
                .sum();
            want[n * H * W + p] = v.max(0.0);
        }
    }
    assert_close(&got.raw, &want, 1e-4, "map under batch norm");
}

fn fixture() -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/gradcam_interpolate.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn dims(v: &serde_json::Value) -> [u32; 3] {
    let d: Vec<u32> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect();
    [d[0], d[1], d[2]]
}

#[test]
fn explain_upsampling_and_channel_weights_match_pytorch() {
    let f = fixture();
    let b = CpuBackend;
    for case in ["bilinear", "trilinear", "downsample"] {
        let c = &f[case];
        let (from, to) = (dims(&c["from"]), dims(&c["to"]));
        let n = c["n"].as_u64().unwrap() as usize;
        let input = floats(&c["input"]);
        let want = floats(&c["output"]);
        let mut got = vec![0.0f32; want.len()];
        b.cam_upsample(n, from, to, &interpolate_axes(from, to), &input, &mut got)
            .unwrap();
        assert_close(&got, &want, 1e-5, case);
    }
    let w = &f["weights"];
    let shape = CamShape {
        n: w["n"].as_u64().unwrap() as usize,
        c: w["c"].as_u64().unwrap() as usize,
        dims: [1, 1, w["s"].as_u64().unwrap() as u32],
    };
    let (acts, grads) = (floats(&w["acts"]), floats(&w["grads"]));
    let mut weights = vec![0.0f32; shape.n * shape.c];
    b.cam_pool_weights(&shape, &grads, &mut weights).unwrap();
    assert_close(&weights, &floats(&w["gradcam"]), 1e-5, "Grad-CAM weights");
    let mut map = vec![0.0f32; shape.n * shape.spatial()];
    b.cam_weighted_sum(&shape, &acts, &weights, &mut map).unwrap();
    assert_close(&map, &floats(&w["cam"]), 1e-5, "weighted sum");
    let mut layer = vec![0.0f32; shape.n * shape.spatial()];
    b.cam_layer_sum(&shape, &acts, &grads, &mut layer).unwrap();
    assert_close(&layer, &floats(&w["layercam"]), 1e-5, "LayerCAM");
    b.cam_pp_weights(&shape, &acts, &grads, &mut weights).unwrap();
    assert_close(&weights, &floats(&w["gradcampp"]), 1e-4, "Grad-CAM++ weights");
    // A wrong buffer is an error naming it, not a panic.
    let err = b.cam_pool_weights(&shape, &grads[1..], &mut weights).unwrap_err();
    assert!(err.to_string().contains("grads"), "{err}");
}

#[test]
fn explain_pointing_game_on_constructed_maps() {
    let dims = [3u32, 10, 10];
    let spacing = [2.0, 1.0, 1.0];
    let lesion = quality::Lesion {
        centre_mm: [2.0, 5.0, 5.0],
        radius_mm: 1.5,
    };
    let mask = quality::lesion_mask(dims, spacing, &[lesion]);
    let at = |k: usize, r: usize, c: usize| (k * 10 + r) * 10 + c;
    assert!(mask[at(1, 5, 5)] && mask[at(1, 6, 5)] && !mask[at(1, 7, 5)] && !mask[at(0, 5, 5)]);
    let mut map = vec![0.0f32; 300];
    map[at(1, 5, 6)] = 1.0; // inside
    assert_eq!(quality::pointing_hit(&map, &mask, dims, spacing, 0.0), Some(true));
    map[at(1, 5, 6)] = 0.0;
    map[at(1, 5, 9)] = 1.0; // 3 mm right of the nearest lesion voxel (1, 5, 6)
    assert_eq!(
        quality::pointing_hit(&map, &mask, dims, spacing, 2.0),
        Some(false)
    );
    assert_eq!(quality::pointing_hit(&map, &mask, dims, spacing, 3.0), Some(true));
    // Wilson intervals: textbook values (Newcombe 1998 table, and 5 of 10).
    let w = quality::wilson_interval(5, 10).unwrap();
    assert!(
        (w[0] - 0.2366).abs() < 1e-4 && (w[1] - 0.7634).abs() < 1e-4,
        "{w:?}"
    );
    let w = quality::wilson_interval(0, 10).unwrap();
    assert!(w[0] == 0.0 && (w[1] - 0.2775).abs() < 1e-4, "{w:?}");
    let w = quality::wilson_interval(15, 148).unwrap();
    assert!(
        (w[0] - 0.0624).abs() < 1e-4 && (w[1] - 0.1605).abs() < 1e-4,
        "{w:?}"
    );
    assert_eq!(quality::wilson_interval(0, 0), None);
    let peak = quality::peak(&map, &mask, dims, spacing).unwrap();
    assert_eq!(peak.voxel, [1, 5, 9]);
    assert_eq!(peak.distance_mm, Some(3.0));
    map[at(1, 5, 9)] = 0.0;
    map[at(2, 5, 5)] = 1.0; // one slice (2 mm) off the lesion's edge voxel
    assert_eq!(
        quality::pointing_hit(&map, &mask, dims, spacing, 1.0),
        Some(false)
    );
    assert_eq!(quality::pointing_hit(&map, &mask, dims, spacing, 2.0), Some(true));
    assert_eq!(
        quality::pointing_hit(&map, &vec![false; 300], dims, spacing, 2.0),
        None
    );
    // Energy: half the map's mass on the lesion.
    let mut e = vec![0.0f32; 300];
    e[at(1, 5, 5)] = 2.0;
    e[at(0, 0, 0)] = 2.0;
    assert!((quality::energy_inside(&e, &mask).unwrap() - 0.5).abs() < 1e-12);
}

#[test]
fn explain_sanity_check_fails_for_a_map_that_ignores_the_weights() {
    let b = CpuBackend;
    let spec = hand_built(false);
    let mut net = Net::new(&b, spec, 3).unwrap();
    let conv_w = values(C * 9, 31);
    let fc_w = values(CLASSES * C, 32);
    let mut trained = conv_w.clone();
    trained.extend(&fc_w);
    trained.extend(values(CLASSES, 33));
    let random = values(trained.len(), 99);
    let conv_len = C * 9;
    let stages = [
        trained.clone(),
        // fc randomised first, then the convolution too.
        [&trained[..conv_len], &random[conv_len..]].concat(),
        random.clone(),
    ];
    let input = values(N * H * W, 34);
    let layer = cam_layers(&net.spec)
        .into_iter()
        .find(|l| l.name == "conv")
        .unwrap();
    let (mut cams, mut edges) = (vec![], vec![]);
    for p in &stages {
        net.param = b.upload(p).unwrap();
        let got = grad_cam(&b, &mut net, &input, &layer, &cam_req(0, Method::GradCam, true)).unwrap();
        cams.push(got.maps.chunks(H * W).map(|m| m.to_vec()).collect::<Vec<_>>());
        // An "explanation" computed from the input alone (its magnitude): blind to every weight.
        edges.push(
            input
                .chunks(H * W)
                .map(|m| m.iter().map(|v| v.abs()).collect())
                .collect::<Vec<_>>(),
        );
    }
    let blind = quality::sanity_check(&edges);
    assert_eq!(blind.correlations, vec![1.0, 1.0, 1.0]);
    assert!(
        !blind.passed,
        "a map that ignores the weights must fail: {blind:?}"
    );
    let real = quality::sanity_check(&cams);
    eprintln!("Grad-CAM under randomisation: {:?}", real.correlations);
    assert!(real.correlations[2] < 0.9, "{real:?}");
}

#[test]
fn explain_overlay_shows_patient_left_on_image_right() {
    // An asymmetric phantom: a bright marker 30 mm to the patient's left (+x in DICOM LPS) of the
    // centre of a 20×20 slice, placed through the series geometry, for either column direction.
    for row_dir_x in [1.0, -1.0] {
        let (rows, cols) = (20usize, 20usize);
        let spacing = [2.0, 4.0]; // (row, col) mm: non-square pixels
        let origin = [-row_dir_x * 10.0 * spacing[1], -10.0 * spacing[0], 0.0];
        let g = SeriesGeometry::new(
            origin,
            [row_dir_x, 0.0, 0.0, 0.0, 1.0, 0.0],
            spacing,
            [0.0, 0.0, 2.5],
        );
        let marker = g.to_voxel([30.0, 0.0, 0.0]).unwrap();
        let (mr, mc) = (marker[1].round() as usize, marker[2].round() as usize);
        let mut hu = vec![-1000i16; rows * cols];
        hu[mr * cols + mc] = 1000;
        let map = vec![0.0f32; rows * cols];
        let (flip_cols, flip_rows) = radiological_flips(g.col_step, g.row_step);
        let img = render_slice(
            &SliceView {
                hu: &hu,
                map: &map,
                rows,
                cols,
                spacing,
                flip_cols,
                flip_rows,
                outline: None,
                marker: None,
            },
            [0.0, 2000.0],
            64,
        );
        // 40 mm tall, 80 mm wide: the aspect ratio follows the spacing.
        assert_eq!(img.width, 2 * img.height, "{}x{}", img.width, img.height);
        let bright: Vec<usize> = (0..img.height)
            .flat_map(|y| (0..img.width).map(move |x| (x, y)))
            .filter(|&(x, y)| img.pixel(x, y)[0] > 200)
            .map(|(x, _)| x)
            .collect();
        assert!(!bright.is_empty());
        let mean_x = bright.iter().sum::<usize>() as f64 / bright.len() as f64;
        assert!(
            mean_x > img.width as f64 * 0.6,
            "row direction x {row_dir_x}: marker on patient left drawn at x = {mean_x} of {}",
            img.width
        );
    }
}

#[test]
fn explain_cli_usage_errors_exit_2() {
    let dir = crate::common::tempdir();
    let out = dir.path().join("out");
    let (code, _, err) = run(&["explain", "/nonexistent/run", "--out", out.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("/nonexistent/run"), "{err}");
    let (code, _, _) = run(&["explain", "--out", out.to_str().unwrap()]);
    assert_eq!(code, 2);
}

#[test]
fn explain_normalisation_and_upsampling_ramps() {
    // A linear ramp is reproduced exactly by align_corners=false up-sampling away from the edges.
    let from = [1u32, 1, 4];
    let to = [1u32, 1, 8];
    let ramp: Vec<f32> = (0..4).map(|i| i as f32).collect();
    let mut out = vec![0.0; 8];
    cam::upsample(1, from, to, &interpolate_axes(from, to), &ramp, &mut out);
    // Output x samples source (x + 0.5)/2 − 0.5, clamped to [0, 3].
    let want = [0.0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3.0];
    assert_close(&out, &want, 1e-6, "ramp");
    // Centred: cell i sits on input 1 + 2i (offset 1, stride 2), so input x reads cell (x − 1)/2.
    let centred = [
        AxisMap::centred(0.0, 1.0),
        AxisMap::centred(0.0, 1.0),
        AxisMap::centred(1.0, 2.0),
    ];
    cam::upsample(1, from, to, &centred, &ramp, &mut out);
    let want = [0.0, 0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0];
    assert_close(&out, &want, 1e-6, "centred ramp");
    let mut maps = vec![2.0, 4.0, 6.0, 5.0, 5.0, 5.0];
    cam::normalise(2, 3, &mut maps);
    assert_eq!(maps, vec![0.0, 0.5, 1.0, 0.0, 0.0, 0.0]);
}

/// A 2D ResNet (stem stride 2, two stages) whose every convolution averages its window over all
/// input channels (weights 1/fan-in) and whose batch norms are the identity: each activation is then
/// the mean of the input over the layer's receptive field, weighted symmetrically about its centre.
fn averaging_resnet(b: &CpuBackend, hw: u32) -> Net<CpuBackend> {
    let cfg = ResNetConfig {
        spatial_dims: 2,
        in_channels: 1,
        num_outputs: 1,
        widths: vec![2, 3],
        blocks: vec![1, 1],
        stem_kernel: 5,
        stem_stride: 2,
        stem_pool: false,
        tabular: 0,
    };
    let spec = medtrain::nn::build(&cfg, 1, [1, hw, hw]);
    let mut params = vec![0.0f32; spec.params.len()];
    for e in spec.params.entries() {
        let fill = match e.shape.len() {
            // Convolution weights (out, in, kh, kw): the mean over the window and the channels.
            4 | 5 => 1.0 / e.shape[1..].iter().product::<usize>() as f32,
            // Batch-norm scale 1, shifts and biases 0.
            1 if e.name.ends_with(".weight") => 1.0,
            _ => 0.0,
        };
        params[e.range.clone()].fill(fill);
    }
    let mut state = vec![0.0f32; spec.buffers.len()];
    for e in spec.buffers.entries() {
        if e.name.ends_with("running_var") {
            // 1/√(var + ε) = 1 with the backend's ε = 1e-5.
            state[e.range.clone()].fill(1.0 - 1e-5);
        }
    }
    let mut net = Net::new(b, spec, 1).unwrap();
    net.param = b.upload(&params).unwrap();
    net.state = b.upload(&state).unwrap();
    net
}

#[test]
fn explain_layer_centres_are_where_each_cell_reads_the_input() {
    // Independent of the stride/padding arithmetic in CamLayer: feed a ramp (input = its own column,
    // or row, coordinate) and a constant 1. With symmetric averaging weights, an interior cell's
    // response to the ramp divided by its response to the constant is the input coordinate its
    // receptive field is centred on. Then check F.interpolate's placement is off by (s − 1)/2.
    let b = CpuBackend;
    let hw = 96usize;
    let mut net = averaging_resnet(&b, hw as u32);
    let layers = cam_layers(&net.spec);
    let run = |net: &mut Net<CpuBackend>, input: &[f32]| -> Vec<Vec<f32>> {
        net.forward(&b, input, false).unwrap();
        layers
            .iter()
            .map(|l| {
                let len = l.channels * l.dims.iter().map(|&d| d as usize).product::<usize>();
                b.download(b.view(net.node_output(l.node), 0..len)).unwrap()
            })
            .collect()
    };
    let ones = run(&mut net, &vec![1.0f32; hw * hw]);
    for (axis, name) in [(1usize, "row"), (2, "col")] {
        let ramp: Vec<f32> = (0..hw * hw)
            .map(|i| {
                if axis == 1 {
                    (i / hw) as f32
                } else {
                    (i % hw) as f32
                }
            })
            .collect();
        let got = run(&mut net, &ramp);
        let mut checked = 0;
        for (k, l) in layers.iter().enumerate() {
            let [offset, stride] = l.centres[axis];
            let (h, w) = (l.dims[1] as usize, l.dims[2] as usize);
            // Interior cells only: receptive fields clear of the zero padding.
            for i in h / 3..2 * h / 3 {
                for j in w / 3..2 * w / 3 {
                    let cell = i * w + j;
                    let centre = got[k][cell] as f64 / ones[k][cell] as f64;
                    let index = if axis == 1 { i } else { j };
                    let want = offset + stride * index as f64;
                    assert!(
                        (centre - want).abs() < 1e-3,
                        "{} ({name}): cell {index} reads input {centre}, CamLayer says {want}",
                        l.name
                    );
                    checked += 1;
                }
            }
            if stride == 4.0 {
                // F.interpolate(align_corners=False) puts cell i at 4i + 1.5: the shift the
                // centred up-sampling removes.
                let m = AxisMap::interpolate(l.dims[axis] as usize, hw);
                let c = AxisMap::centred(offset, stride);
                let src = |m: AxisMap, x: f32| m.scale * (x + m.before) + m.after;
                let x = (offset + stride * 10.0) as f32;
                assert!((src(c, x) - 10.0).abs() < 1e-6);
                assert!((src(m, x) - (10.0 - 1.5 / 4.0)).abs() < 1e-6, "{}", src(m, x));
            }
        }
        assert!(checked > 1000, "{checked}");
    }
    let names: Vec<&str> = layers.iter().map(|l| l.name.as_str()).collect();
    for want in [
        "conv1",
        "relu",
        "layer1.0.relu",
        "layer1.0",
        "layer2.0.downsample.0",
        "layer2.0",
    ] {
        assert!(names.contains(&want), "{want} not in {names:?}");
    }
    let stage2 = layers.iter().find(|l| l.name == "layer2.0").unwrap();
    assert_eq!(
        stage2.centres[2],
        [0.0, 4.0],
        "stem 5×5/2 pad 2, then 3×3/2 pad 1"
    );
}

#[test]
fn explain_several_layers_from_one_pass_equal_one_layer_at_a_time() {
    let b = CpuBackend;
    let mut net = averaging_resnet(&b, 32);
    let params: Vec<f32> = values(net.spec.params.len(), 41);
    net.param = b.upload(&params).unwrap();
    let input = values(32 * 32, 42);
    let layers = cam_layers(&net.spec);
    for upsample in [Upsample::Centred, Upsample::Interpolate] {
        let req = CamRequest {
            output: 0,
            method: Method::GradCam,
            upsample,
            normalise: true,
        };
        let all = grad_cam_layers(&b, &mut net, &input, &layers, &req).unwrap();
        assert_eq!(all.len(), layers.len());
        for (l, got) in layers.iter().zip(&all) {
            let one = grad_cam(&b, &mut net, &input, l, &req).unwrap();
            assert_eq!(got.maps, one.maps, "{} {upsample:?}", l.name);
            assert_eq!(got.raw, one.raw, "{}", l.name);
            assert_eq!(got.outputs, one.outputs, "{}", l.name);
        }
    }
}

/// The heat-map colour maps are matplotlib's: every one of the 256 entries of viridis, inferno and
/// jet, and the colour matplotlib gives values between entries and at the ends.
#[test]
fn colormaps_are_matplotlibs() {
    use medtrain::explain::colormap::Colormap;
    let out = crate::common::reference_script("colormaps.py", &[]);
    let j: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    for (name, map) in [
        ("viridis", Colormap::Viridis),
        ("inferno", Colormap::Inferno),
        ("jet", Colormap::Jet),
    ] {
        let want: Vec<[u8; 3]> = serde_json::from_value(j["tables"][name].clone()).unwrap();
        assert_eq!(want.len(), 256);
        for (i, w) in want.iter().enumerate() {
            assert_eq!(map.table()[i], *w, "{name}[{i}]");
        }
        for sample in j["samples"][name].as_array().unwrap() {
            let v = sample[0].as_f64().unwrap() as f32;
            let rgb: Vec<u8> = (1..4).map(|k| sample[k].as_u64().unwrap() as u8).collect();
            assert_eq!(map.color(v).to_vec(), rgb, "{name}({v})");
        }
    }
}
