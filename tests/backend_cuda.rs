//! The CUDA backend: `--device` resolution (a clear usage error when CUDA is asked for and missing,
//! fallback to the CPU under auto), and GPU-only checks against the CPU reference that print
//! "skipped: <reason>" without a GPU (MEDTRAIN_REQUIRE_GPU=1 turns a skip into a failure).

use crate::common::{run, s};
use crate::train::{cohort, write_config};
use medtrain::backend::cuda::{probe, CudaBackend};
use medtrain::backend::Backend;

/// Whether a GPU is usable; otherwise prints why the test is skipped (or fails under
/// MEDTRAIN_REQUIRE_GPU=1).
fn gpu_or_skip(test: &str) -> bool {
    match probe() {
        Ok(_) => true,
        Err(e) => {
            if std::env::var("MEDTRAIN_REQUIRE_GPU").as_deref() == Ok("1") {
                panic!("{test}: MEDTRAIN_REQUIRE_GPU=1 but {e}");
            }
            println!("skipped: {test}: {e}");
            false
        }
    }
}

#[test]
fn device_cuda_without_cuda_is_a_usage_error_naming_what_is_missing() {
    let Err(reason) = probe() else {
        println!("skipped: this machine has CUDA");
        return;
    };
    for args in [
        &["bench", "step", "--device", "cuda"][..],
        &["bench", "parity", "--device", "cuda"][..],
        &["bench", "curve", "--device", "cuda", "--steps", "2"][..],
    ] {
        let (code, out, err) = run(args);
        assert_eq!(code, 2, "{args:?}\n{out}\n{err}");
        assert!(
            err.contains("--device cuda") && err.contains(&reason.reason),
            "{args:?}: {err}"
        );
    }
    let (code, _, err) = run(&["bench", "step", "--device", "tpu"]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn device_auto_falls_back_to_the_cpu_and_trains() {
    let gpu = probe();
    let c = cohort(6);
    let cfg = write_config(&c.root, "t.toml", "epochs = 1\neval_every = 0");
    let run_dir = c.root.join("run");
    let train = |device: &str, out: &std::path::Path| {
        run(&[
            "train",
            s(&c.catalog),
            s(&c.manifest),
            "--out",
            s(out),
            "--config",
            s(&cfg),
            "--max-steps",
            "2",
            "--device",
            device,
            "--json",
        ])
    };
    let (code, out, err) = train("auto", &run_dir);
    assert_eq!(code, 0, "{out}\n{err}");
    let outcome: serde_json::Value = serde_json::from_str(&out).expect("--json prints the outcome");
    assert_eq!(outcome["global_step"], 2, "{outcome}");
    let status: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("train-status.json")).unwrap()).unwrap();
    match &gpu {
        Err(reason) => {
            assert_eq!(outcome["device"], "cpu", "{outcome}");
            assert!(status.get("peak_device_bytes").is_none(), "{status}");
            // Asked for explicitly, CUDA's absence is a usage error naming the missing piece, for
            // train, eval and predict alike.
            let (code, out, err) = train("cuda", &c.root.join("run-cuda"));
            assert_eq!(code, 2, "{out}\n{err}");
            assert!(err.contains(&reason.reason), "{err}");
            let (code, _, err) = run(&[
                "eval",
                s(&run_dir),
                "--out",
                s(&c.root.join("eval")),
                "--device",
                "cuda",
            ]);
            assert_eq!(code, 2, "{err}");
            assert!(err.contains("--device cuda"), "{err}");
            let (code, _, err) = run(&[
                "predict",
                s(&run_dir),
                s(&c.root.join("pack")),
                "--out",
                s(&c.root.join("pred")),
                "--device",
                "cuda",
            ]);
            assert_eq!(code, 2, "{err}");
            assert!(err.contains("--device cuda"), "{err}");
        }
        Ok(_) => {
            assert_eq!(outcome["device"], "cuda", "{outcome}");
            assert!(status["peak_device_bytes"].as_u64().unwrap() > 0, "{status}");
        }
    }
    // --device cpu always trains on the CPU.
    let (code, out, err) = train("cpu", &c.root.join("run-cpu"));
    assert_eq!(code, 0, "{out}\n{err}");
    let outcome: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(outcome["device"], "cpu");
}

#[test]
fn parity_harness_runs_every_op_on_the_cpu() {
    // The CPU against itself: every op runs through the harness and matches exactly.
    let (code, out, err) = run(&["bench", "parity", "--device", "cpu", "--json"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["pass"], true);
    let ops = r["ops"].as_array().unwrap();
    for name in [
        "conv_forward",
        "conv_backward",
        "batchnorm_backward",
        "max_pool_backward",
        "linear_backward",
        "cross_entropy",
        "adamw_step",
        "sum_squares",
    ] {
        assert!(ops.iter().any(|o| o["op"] == name), "{name} missing");
    }
    assert!(ops.iter().all(|o| o["max_abs_err"] == 0.0), "{out}");
}

#[test]
fn gpu_every_op_matches_the_cpu_reference() {
    if !gpu_or_skip("gpu_every_op_matches_the_cpu_reference") {
        return;
    }
    let (code, out, err) = run(&["bench", "parity", "--device", "cuda", "--json"]);
    let r: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}\n{out}\n{err}"));
    let failed: Vec<&serde_json::Value> = r["ops"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["pass"] != true)
        .collect();
    assert!(failed.is_empty(), "ops outside tolerance: {failed:#?}");
    assert_eq!(code, 0, "{err}");
}

#[test]
fn gpu_loss_curve_matches_the_cpu() {
    if !gpu_or_skip("gpu_loss_curve_matches_the_cpu") {
        return;
    }
    let (code, out, err) = run(&["bench", "curve", "--device", "cuda", "--steps", "20", "--json"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["pass"], true, "{r}");
}

#[test]
fn gpu_bucket_round_trip_through_pinned_memory() {
    if !gpu_or_skip("gpu_bucket_round_trip_through_pinned_memory") {
        return;
    }
    use medtrain::dist::bucket::BucketReducer;
    use medtrain::dist::World;
    let b = CudaBackend::new(0).expect("CUDA backend");
    // Uneven tensors, several buckets, some above the pinned-copy threshold.
    let boundaries = [0usize, 10, 70_000, 300_001, 300_500];
    let len = 400_017;
    let host: Vec<f32> = (0..len).map(|i| (i as f32 * 0.37).sin()).collect();
    let mut grad = b.upload(&host).unwrap();
    let world = World::single();
    let mut reducer = BucketReducer::new(&world, len, &boundaries, 1 << 20);
    let buckets = reducer.buckets().to_vec();
    assert!(buckets.len() > 2);
    let mut staged = vec![0.0f32; len];
    for (i, r) in buckets.iter().enumerate() {
        b.download_into(b.view(&grad, r.clone()), &mut staged[r.clone()])
            .unwrap();
        reducer.start(i, &staged[r.clone()]);
    }
    let mut averaged = vec![0.0f32; len];
    reducer.finish(&mut averaged);
    b.fill(b.view_mut(&mut grad, 0..len), 0.0).unwrap();
    b.upload_into(&averaged, b.view_mut(&mut grad, 0..len)).unwrap();
    let back = b.download(b.view(&grad, 0..len)).unwrap();
    assert!(
        back.iter().zip(&host).all(|(a, b)| a.to_bits() == b.to_bits()),
        "round trip changed values"
    );
}

#[test]
fn gpu_training_steps_allocate_nothing_after_the_first() {
    if !gpu_or_skip("gpu_training_steps_allocate_nothing_after_the_first") {
        return;
    }
    let (code, out, err) = run(&[
        "bench", "step", "--device", "cuda", "--model", "resnet18", "--batch", "4", "--size", "64",
        "--warmup", "1", "--steps", "3", "--json",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["allocations_in_timed_steps"], 0, "{r}");
    assert!(r["peak_device_bytes"].as_u64().unwrap() > 0, "{r}");
}
