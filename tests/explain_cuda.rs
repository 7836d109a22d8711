//! `medtrain explain` on the CUDA backend: the `GradCamOps` kernels (kernels/gradcam.cu) and a whole
//! Grad-CAM pass on the GPU against the CPU reference, and `--device` resolution of the command.
//! GPU-only checks print "skipped: <reason>" without a GPU (MEDTRAIN_REQUIRE_GPU=1 makes a skip fail).

use crate::common::{run, tempdir};
use crate::explain::cam_req;
use crate::explain::{hand_built, values};
use medtrain::backend::cpu::CpuBackend;
use medtrain::backend::cuda::{probe, CudaBackend};
use medtrain::backend::params::AxisMap;
use medtrain::backend::{Backend, Dims3};
use medtrain::explain::cam::{interpolate_axes, CamShape, GradCamOps, Method};
use medtrain::explain::layers::{cam_layers, grad_cam};
use medtrain::nn::Net;

fn gpu_or_skip(test: &str) -> Option<CudaBackend> {
    let skip = |why: String| {
        if std::env::var("MEDTRAIN_REQUIRE_GPU").as_deref() == Ok("1") {
            panic!("{test}: MEDTRAIN_REQUIRE_GPU=1 but {why}");
        }
        println!("skipped: {test}: {why}");
        None
    };
    match probe() {
        Ok(_) => match CudaBackend::new(0) {
            Ok(b) => Some(b),
            Err(e) => skip(e.to_string()),
        },
        Err(e) => skip(e.to_string()),
    }
}

/// The CPU reference sums in f64 in a fixed order and the kernels do the same with IEEE arithmetic
/// and no contraction, so they agree to rounding of the final f32 (in practice bit for bit).
fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-6 + 1e-6 * w.abs(),
            "{what}: element {i}: gpu {g:e}, cpu {w:e}"
        );
    }
}

fn ops_on<B: GradCamOps>(
    b: &B,
    s: &CamShape,
    to: Dims3,
    axes: &[AxisMap; 3],
    acts: &[f32],
    grads: &[f32],
) -> Vec<Vec<f32>> {
    let (nc, sp) = (s.n * s.c, s.spatial());
    let ts: usize = to.iter().map(|&d| d as usize).product();
    let a = b.upload(acts).unwrap();
    let g = b.upload(grads).unwrap();
    let mut w = b.zeros(nc).unwrap();
    let mut wpp = b.zeros(nc).unwrap();
    b.cam_pool_weights(s, b.view(&g, 0..s.len()), b.view_mut(&mut w, 0..nc))
        .unwrap();
    b.cam_pp_weights(
        s,
        b.view(&a, 0..s.len()),
        b.view(&g, 0..s.len()),
        b.view_mut(&mut wpp, 0..nc),
    )
    .unwrap();
    let mut cam = b.zeros(s.n * sp).unwrap();
    b.cam_weighted_sum(
        s,
        b.view(&a, 0..s.len()),
        b.view(&w, 0..nc),
        b.view_mut(&mut cam, 0..s.n * sp),
    )
    .unwrap();
    let mut layer = b.zeros(s.n * sp).unwrap();
    b.cam_layer_sum(
        s,
        b.view(&a, 0..s.len()),
        b.view(&g, 0..s.len()),
        b.view_mut(&mut layer, 0..s.n * sp),
    )
    .unwrap();
    let mut up = b.zeros(s.n * ts).unwrap();
    b.cam_upsample(
        s.n,
        s.dims,
        to,
        axes,
        b.view(&cam, 0..s.n * sp),
        b.view_mut(&mut up, 0..s.n * ts),
    )
    .unwrap();
    let raw_up = b.download(b.view(&up, 0..s.n * ts)).unwrap();
    b.cam_normalise(s.n, ts, b.view_mut(&mut up, 0..s.n * ts))
        .unwrap();
    vec![
        b.download(b.view(&w, 0..nc)).unwrap(),
        b.download(b.view(&wpp, 0..nc)).unwrap(),
        b.download(b.view(&cam, 0..s.n * sp)).unwrap(),
        raw_up,
        b.download(b.view(&up, 0..s.n * ts)).unwrap(),
        b.download(b.view(&layer, 0..s.n * sp)).unwrap(),
    ]
}

#[test]
fn explain_gpu_gradcam_ops_match_the_cpu_reference() {
    let Some(gpu) = gpu_or_skip("explain_gpu_gradcam_ops_match_the_cpu_reference") else {
        return;
    };
    let cases: [(CamShape, Dims3); 4] = [
        (
            CamShape {
                n: 2,
                c: 5,
                dims: [1, 7, 9],
            },
            [1, 28, 36],
        ),
        (
            CamShape {
                n: 3,
                c: 4,
                dims: [1, 1, 1],
            },
            [1, 5, 5],
        ),
        (
            CamShape {
                n: 1,
                c: 70,
                dims: [1, 13, 11],
            },
            [1, 64, 60],
        ),
        (
            CamShape {
                n: 2,
                c: 3,
                dims: [3, 4, 5],
            },
            [9, 16, 17],
        ),
    ];
    for (k, (s, to)) in cases.iter().enumerate() {
        let acts: Vec<f32> = values(s.len(), 100 + k as u64).iter().map(|v| v.abs()).collect();
        let grads = values(s.len(), 200 + k as u64);
        // PyTorch's grid, and a receptive-field-centred one whose sources run off both ends.
        let centred = [
            AxisMap::centred(if s.dims[0] == 1 { 0.0 } else { 1.0 }, 3.0),
            AxisMap::centred(1.5, 4.0),
            AxisMap::centred(-2.0, 4.0),
        ];
        for axes in [interpolate_axes(s.dims, *to), centred] {
            let want = ops_on(&CpuBackend, s, *to, &axes, &acts, &grads);
            let got = ops_on(&gpu, s, *to, &axes, &acts, &grads);
            for (step, (g, w)) in [
                "pool weights",
                "Grad-CAM++ weights",
                "weighted sum",
                "upsample",
                "normalise",
                "LayerCAM sum",
            ]
            .iter()
            .zip(got.iter().zip(&want))
            {
                assert_close(g, w, &format!("case {k} {axes:?} {step}"));
            }
            assert!(want[4].contains(&1.0), "case {k}: a non-trivial map");
        }
    }
    // A flat map normalises to zeros on both sides.
    let s = CamShape {
        n: 1,
        c: 1,
        dims: [1, 2, 2],
    };
    let to = [1, 4, 4];
    let flat = ops_on(&gpu, &s, to, &interpolate_axes(s.dims, to), &[1.0; 4], &[0.5; 4]);
    assert!(flat[4].iter().all(|&v| v == 0.0), "{:?}", flat[4]);
}

#[test]
fn explain_gpu_grad_cam_of_a_network_matches_the_cpu() {
    let Some(gpu) = gpu_or_skip("explain_gpu_grad_cam_of_a_network_matches_the_cpu") else {
        return;
    };
    let cpu = CpuBackend;
    let mut cnet = Net::new(&cpu, hand_built(true), 1).unwrap();
    let mut gnet = Net::new(&gpu, hand_built(true), 1).unwrap();
    let nparams = cnet.spec.params.len();
    let params = values(nparams, 31);
    cnet.param = cpu.upload(&params).unwrap();
    gnet.param = gpu.upload(&params).unwrap();
    let input = values(cnet.spec.graph.tensor_len[0], 32);
    for layer in cam_layers(&cnet.spec) {
        for method in [Method::GradCam, Method::GradCamPlusPlus, Method::LayerCam] {
            let want = grad_cam(&cpu, &mut cnet, &input, &layer, &cam_req(0, method, true)).unwrap();
            let got = grad_cam(&gpu, &mut gnet, &input, &layer, &cam_req(0, method, true)).unwrap();
            let what = format!("{} {}", layer.name, method.name());
            // The network itself runs on cuDNN/cuBLAS, which round differently from the CPU.
            for (g, w, part) in [
                (&got.outputs, &want.outputs, "outputs"),
                (&got.raw, &want.raw, "raw"),
            ] {
                let scale = w.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
                for (i, (a, b)) in g.iter().zip(w.iter()).enumerate() {
                    assert!(
                        (a - b).abs() <= 1e-4 * scale,
                        "{what} {part} {i}: gpu {a}, cpu {b}"
                    );
                }
            }
            for (i, (a, b)) in got.maps.iter().zip(&want.maps).enumerate() {
                assert!((a - b).abs() <= 1e-3, "{what} maps {i}: gpu {a}, cpu {b}");
            }
        }
    }
}

#[test]
fn explain_device_is_resolved_like_eval() {
    let dir = tempdir();
    let out = dir.path().join("out");
    let out = out.to_str().unwrap();
    let (code, _, err) = run(&["explain", "/nonexistent/run", "--out", out, "--device", "tpu"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--device \"tpu\""), "{err}");
    match probe() {
        Err(reason) => {
            let (code, _, err) = run(&["explain", "/nonexistent/run", "--out", out, "--device", "cuda"]);
            assert_eq!(code, 2, "{err}");
            assert!(
                err.contains("--device cuda") && err.contains(&reason.reason),
                "{err}"
            );
        }
        Ok(_) => println!("skipped: the missing-CUDA error (this machine has CUDA)"),
    }
    // cpu and auto get past device resolution to the checkpoint.
    for device in ["cpu", "auto"] {
        let (code, _, err) = run(&["explain", "/nonexistent/run", "--out", out, "--device", device]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("/nonexistent/run"), "{device}: {err}");
    }
}
