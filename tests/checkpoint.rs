//! Checkpoints: PyTorch state dicts load into our models (tests/reference/torch_checkpoint.py wrote the
//! fixtures), our model.safetensors loads into PyTorch with strict=True and reads back with numpy alone,
//! save → restore is bitwise, keep-last-K, and broken or foreign checkpoints are refused with the reason.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use medtrain::backend::cpu::CpuBackend;
use medtrain::backend::{Backend, CrossEntropyParams};
use medtrain::checkpoint::{
    self, hash_json, inspect, latest_valid, load_weights, restore, save, CheckpointError, LoadOptions,
    TrainState,
};
use medtrain::nn::{build, Net, ResNetConfig};
use medtrain::optim::{Optimizer, OptimizerConfig};
use safetensors::tensor::Dtype;
use serde::Deserialize;

use crate::common::{self, read_f32_tensors};

const B: CpuBackend = CpuBackend;
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/reference/fixtures");
const N: u32 = 2;
const DIMS: [u32; 3] = [1, 32, 32];

fn fixture(name: &str) -> PathBuf {
    Path::new(FIXTURES).join(name)
}

fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= atol + rtol * w.abs(),
            "{what}[{i}]: medtrain {g} vs PyTorch {w}"
        );
    }
}

fn eval_logits(net: &mut Net<CpuBackend>, input: &[f32]) -> Vec<f32> {
    net.forward(&B, input, false).unwrap();
    net.output().clone()
}

fn bn_count(net: &Net<CpuBackend>) -> usize {
    net.spec
        .buffers
        .entries()
        .iter()
        .filter(|e| e.name.ends_with("running_mean"))
        .count()
}

#[test]
fn checkpoint_pytorch_state_dict_gives_pytorch_logits() {
    let cfg = ResNetConfig::resnet18(1, 2, 4);
    let mut net = Net::new(&B, build(&cfg, N, DIMS), 3).unwrap();
    let path = fixture("torch_ckpt_resnet18w4.safetensors");
    let report = load_weights(&path, &B, &mut net, &LoadOptions::default()).unwrap();
    let tables = net.spec.params.entries().len() + net.spec.buffers.entries().len();
    assert_eq!(report.loaded.len(), tables);
    assert_eq!(
        report.ignored.len(),
        bn_count(&net),
        "num_batches_tracked per batch norm"
    );
    assert!(report.skipped.is_empty() && report.averaged.is_empty());
    // The running statistics came from the file (PyTorch's are far from our 0/1 init).
    let torch = read_f32_tensors(&path);
    let e = net.spec.buffers.find("layer3.1.bn2.running_var").unwrap();
    assert_eq!(
        net.state[e.range.clone()],
        torch["layer3.1.bn2.running_var"].1[..]
    );

    let io = read_f32_tensors(&fixture("torch_ckpt_resnet18w4_io.safetensors"));
    let logits = eval_logits(&mut net, &io["input"].1);
    assert_close("logits", &logits, &io["logits"].1, 1e-4, 1e-3);
}

fn stem3_config(in_channels: u32) -> ResNetConfig {
    let mut cfg = ResNetConfig::resnet18(in_channels, 2, 2);
    cfg.blocks = vec![1, 1, 1, 1];
    cfg
}

#[test]
fn checkpoint_three_channel_stem_is_averaged_into_one_channel() {
    let mut net = Net::new(&B, build(&stem3_config(1), N, DIMS), 3).unwrap();
    let path = fixture("torch_ckpt_stem3.safetensors");
    let report = load_weights(&path, &B, &mut net, &LoadOptions::default()).unwrap();
    assert_eq!(report.averaged, vec!["conv1.weight".to_string()]);

    // Closed form: w1[o, 0, k] = (w[o, 0, k] + w[o, 1, k] + w[o, 2, k]) / 3.
    let (shape, w3) = &read_f32_tensors(&path)["conv1.weight"];
    assert_eq!(shape, &vec![2, 3, 7, 7]);
    let e = net.spec.params.find("conv1.weight").unwrap();
    assert_eq!(e.shape, vec![2, 1, 7, 7]);
    let got = &net.param[e.range.clone()];
    for o in 0..2 {
        for k in 0..49 {
            let want = (0..3).map(|c| w3[(o * 3 + c) * 49 + k]).sum::<f32>() / 3.0;
            assert!(
                (got[o * 49 + k] - want).abs() <= 1e-7,
                "conv1.weight[{o}, 0, {k}]"
            );
        }
    }
    // PyTorch's 3-channel model on x/3 repeated over channels computes the same function.
    let io = read_f32_tensors(&fixture("torch_ckpt_stem3_io.safetensors"));
    let logits = eval_logits(&mut net, &io["input"].1);
    assert_close("logits", &logits, &io["logits"].1, 1e-4, 1e-3);

    // A model with 2 input channels cannot take a 3-channel stem.
    let mut two = Net::new(&B, build(&stem3_config(2), N, DIMS), 3).unwrap();
    let err = load_weights(&path, &B, &mut two, &LoadOptions::default()).unwrap_err();
    assert!(err.to_string().contains("conv1.weight"), "{err}");
}

#[test]
fn checkpoint_head_of_another_shape_loads_only_when_its_prefix_is_skipped() {
    let cfg = ResNetConfig::resnet18(1, 3, 4);
    let mut net = Net::new(&B, build(&cfg, N, DIMS), 3).unwrap();
    let before = net.param.clone();
    let path = fixture("torch_ckpt_resnet18w4.safetensors");
    let err = load_weights(&path, &B, &mut net, &LoadOptions::default()).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, CheckpointError::Weights { .. }), "{text}");
    assert!(
        text.contains("fc.weight") && text.contains("torch_ckpt_resnet18w4"),
        "{text}"
    );
    assert_eq!(net.param, before, "a refused load changes nothing");

    let opts = LoadOptions {
        skip_mismatched: vec!["fc.".into()],
    };
    let report = load_weights(&path, &B, &mut net, &opts).unwrap();
    assert_eq!(
        report.skipped,
        vec!["fc.weight".to_string(), "fc.bias".to_string()]
    );
    let torch = read_f32_tensors(&path);
    for e in net.spec.params.entries() {
        let got = &net.param[e.range.clone()];
        if e.name.starts_with("fc.") {
            assert_eq!(got, &before[e.range.clone()], "{} keeps its init", e.name);
        } else {
            assert_eq!(got, &torch[&e.name].1[..], "{}", e.name);
        }
    }
}

/// A net and AdamW optimizer after `steps` training steps on a fixed batch.
fn trained(cfg: &ResNetConfig, seed: u64, steps: u32) -> (Net<CpuBackend>, Optimizer<CpuBackend>, Vec<f32>) {
    let mut net = Net::new(&B, build(cfg, N, DIMS), seed).unwrap();
    let adamw = OptimizerConfig::AdamW {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.01,
    };
    let mut opt = Optimizer::new(&B, adamw, net.spec.params.len()).unwrap();
    let input: Vec<f32> = (0..net.input_len())
        .map(|i| ((i * 7919 % 1013) as f32 / 506.5) - 1.0)
        .collect();
    for _ in 0..steps {
        train_step(&mut net, &mut opt, &input);
    }
    (net, opt, input)
}

fn train_step(net: &mut Net<CpuBackend>, opt: &mut Optimizer<CpuBackend>, input: &[f32]) {
    let classes = net.spec.config.num_outputs();
    let targets: Vec<f32> = (0..N).map(|i| (i % classes) as f32).collect();
    let p = CrossEntropyParams {
        n: N,
        classes,
        label_smoothing: 0.0,
    };
    net.grad.fill(0.0);
    net.forward(&B, input, true).unwrap();
    let mut dlogits = vec![0.0; (N * classes) as usize];
    B.cross_entropy(&p, net.output(), &targets, None, &mut dlogits)
        .unwrap();
    net.backward(&B, &dlogits).unwrap();
    opt.update(&B, 1e-3, &mut net.param, &net.grad).unwrap();
}

fn train_state(cfg: &ResNetConfig, global_step: u64) -> TrainState {
    TrainState {
        epoch: 1,
        step_in_epoch: 3,
        global_step,
        optimizer_step: 0,
        dropout_seed: 0,
        seed: 42,
        world_size: 2,
        config_hash: hash_json(&serde_json::json!({"lr": 0.001})),
        manifest_hash: hash_json(&serde_json::json!(["a", "b"])),
        model: cfg.clone().into(),
        extra: serde_json::json!({"best_auc": 0.75, "history": [1, 2, 3]}),
        epoch_loss: [1.5, 4.0],
        epoch_skipped: 0,
        pending_eval: Some(checkpoint::PendingEval { epoch: 1, lr: 0.01 }),
    }
}

fn small_config() -> ResNetConfig {
    let mut cfg = ResNetConfig::resnet18(1, 2, 4);
    cfg.blocks = vec![1, 1, 1, 1];
    cfg
}

#[test]
fn checkpoint_save_restore_round_trip_is_bitwise_and_continues_the_trajectory() {
    let root = common::tempdir();
    let cfg = small_config();
    let (mut net, mut opt, input) = trained(&cfg, 5, 3);
    let dir = save(root.path(), &B, &net, &opt, &train_state(&cfg, 30), 2).unwrap();
    assert_eq!(dir, root.path().join("step-0000000030"));

    let (mut other, mut other_opt, _) = trained(&cfg, 9, 1);
    let state = restore(&dir, &B, &mut other, &mut other_opt).unwrap();
    let mut want = train_state(&cfg, 30);
    want.optimizer_step = 3;
    want.dropout_seed = net.dropout_seed;
    assert_eq!(state, want);
    assert_eq!(other.param, net.param);
    assert_eq!(other.state, net.state);
    assert_eq!(other_opt.step, 3);
    assert_eq!(other.dropout_seed, net.dropout_seed);
    let (a, b) = (opt.state_buffers(), other_opt.state_buffers());
    assert_eq!(a.len(), 2);
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        assert_eq!(x, y, "{name}");
    }
    // The next step is the same on both.
    train_step(&mut net, &mut opt, &input);
    train_step(&mut other, &mut other_opt, &input);
    assert_eq!(other.param, net.param);
    assert_eq!(inspect(&dir).unwrap().state, want);
}

/// Inference restores the weights alone: a checkpoint without its optimizer file still loads, while a
/// damaged model file is refused by its BLAKE3.
#[test]
fn checkpoint_weights_restore_without_the_optimizer_file() {
    let root = common::tempdir();
    let cfg = small_config();
    let (net, opt, _) = trained(&cfg, 5, 2);
    let dir = save(root.path(), &B, &net, &opt, &train_state(&cfg, 20), 2).unwrap();
    std::fs::remove_file(dir.join(checkpoint::OPTIMIZER_FILE)).unwrap();
    assert!(inspect(&dir).is_err(), "resuming needs the optimizer file");
    assert!(latest_valid(root.path()).unwrap().is_none());
    let info = checkpoint::inspect_weights(&dir).unwrap();
    assert_eq!(info.state.global_step, 20);
    assert_eq!(
        checkpoint::latest_valid_weights(root.path())
            .unwrap()
            .unwrap()
            .dir,
        dir
    );

    let (mut other, _, _) = trained(&cfg, 9, 0);
    assert_ne!(other.param, net.param);
    let state = checkpoint::restore_weights(&dir, &B, &mut other).unwrap();
    assert_eq!(state.global_step, 20);
    assert_eq!(other.param, net.param);
    assert_eq!(other.state, net.state);
    assert_eq!(other.dropout_seed, net.dropout_seed);

    // One flipped byte in the weights, same length: refused, and the net keeps its values.
    let model = dir.join(checkpoint::MODEL_FILE);
    let mut bytes = std::fs::read(&model).unwrap();
    let last = bytes.len() - 5;
    bytes[last] ^= 0x10;
    std::fs::write(&model, &bytes).unwrap();
    let (mut fresh, _, _) = trained(&cfg, 9, 0);
    let before = fresh.param.clone();
    let err = checkpoint::restore_weights(&dir, &B, &mut fresh).unwrap_err();
    assert!(
        err.to_string().contains("BLAKE3") && err.to_string().contains("model.safetensors"),
        "{err}"
    );
    assert_eq!(fresh.param, before);
}

#[test]
fn checkpoint_keeps_last_k_and_falls_back_past_broken_ones() {
    let root = common::tempdir();
    let cfg = small_config();
    let (net, opt, _) = trained(&cfg, 5, 1);
    assert!(latest_valid(&root.path().join("missing")).unwrap().is_none());
    assert!(latest_valid(root.path()).unwrap().is_none());
    for step in [10, 20, 30, 40] {
        save(root.path(), &B, &net, &opt, &train_state(&cfg, step), 3).unwrap();
    }
    let mut names: Vec<String> = std::fs::read_dir(root.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["step-0000000020", "step-0000000030", "step-0000000040"]);

    // A crashed save of a later step leaves a .partial directory: never picked.
    let partial = root.path().join("step-0000000050.partial");
    std::fs::create_dir(&partial).unwrap();
    std::fs::copy(
        root.path().join("step-0000000040/model.safetensors"),
        partial.join("model.safetensors"),
    )
    .unwrap();
    assert_eq!(latest_valid(root.path()).unwrap().unwrap().state.global_step, 40);

    // Truncated model file.
    let newest = root.path().join("step-0000000040");
    let model = newest.join(checkpoint::MODEL_FILE);
    let bytes = std::fs::read(&model).unwrap();
    std::fs::write(&model, &bytes[..bytes.len() / 2]).unwrap();
    let err = inspect(&newest).unwrap_err();
    assert!(matches!(err, CheckpointError::Corrupt { .. }), "{err}");
    assert!(
        err.to_string().contains("model.safetensors") && err.to_string().contains("truncated"),
        "{err}"
    );
    assert_eq!(latest_valid(root.path()).unwrap().unwrap().state.global_step, 30);

    // One flipped byte in the optimizer state, same length.
    let optimizer = root
        .path()
        .join("step-0000000030")
        .join(checkpoint::OPTIMIZER_FILE);
    let mut bytes = std::fs::read(&optimizer).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0x40;
    std::fs::write(&optimizer, &bytes).unwrap();
    let err = inspect(&root.path().join("step-0000000030")).unwrap_err();
    assert!(
        err.to_string().contains("BLAKE3") && err.to_string().contains("optimizer.safetensors"),
        "{err}"
    );
    let info = latest_valid(root.path()).unwrap().unwrap();
    assert_eq!(info.dir, root.path().join("step-0000000020"));

    // Unparsable state.json.
    std::fs::write(root.path().join("step-0000000020/state.json"), b"{\"format\":").unwrap();
    assert!(latest_valid(root.path()).unwrap().is_none());

    // The next save replaces the leftovers: keep 1 leaves only itself.
    save(root.path(), &B, &net, &opt, &train_state(&cfg, 60), 1).unwrap();
    let names: Vec<String> = std::fs::read_dir(root.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["step-0000000060"]);

    // A run resumed from an earlier step writes step 50: step 60 is moved aside, not picked, not deleted.
    save(root.path(), &B, &net, &opt, &train_state(&cfg, 50), 2).unwrap();
    let mut names: Vec<String> = std::fs::read_dir(root.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["step-0000000050", "step-0000000060.abandoned"]);
    assert_eq!(latest_valid(root.path()).unwrap().unwrap().state.global_step, 50);
}

#[test]
fn checkpoint_of_another_model_or_optimizer_is_refused_with_the_reason() {
    let root = common::tempdir();
    let cfg = small_config();
    let (net, opt, _) = trained(&cfg, 5, 1);
    let dir = save(root.path(), &B, &net, &opt, &train_state(&cfg, 7), 0).unwrap();

    let mut wider = cfg.clone();
    wider.num_outputs = 3;
    let (mut other, mut other_opt, _) = trained(&wider, 5, 0);
    let before = other.param.clone();
    let err = restore(&dir, &B, &mut other, &mut other_opt).unwrap_err();
    assert!(matches!(err, CheckpointError::Mismatch { .. }), "{err}");
    assert!(
        err.to_string().contains("num_outputs") && err.to_string().contains("step-0000000007"),
        "{err}"
    );
    assert_eq!(other.param, before);

    let (mut same, _, _) = trained(&cfg, 5, 0);
    let sgd = OptimizerConfig::Sgd {
        momentum: 0.9,
        nesterov: false,
        weight_decay: 0.0,
    };
    let mut sgd_opt = Optimizer::new(&B, sgd, same.spec.params.len()).unwrap();
    let err = restore(&dir, &B, &mut same, &mut sgd_opt).unwrap_err();
    assert!(
        err.to_string().contains("optimizer") && err.to_string().contains("adamw"),
        "{err}"
    );
}

#[derive(Deserialize)]
struct NumpyTensor {
    dtype: String,
    shape: Vec<usize>,
    values: Vec<f64>,
}

#[derive(Deserialize)]
struct NumpyFile {
    metadata: HashMap<String, String>,
    tensors: HashMap<String, NumpyTensor>,
}

#[test]
fn checkpoint_model_file_reads_back_with_numpy() {
    let root = common::tempdir();
    let cfg = small_config();
    let (net, opt, _) = trained(&cfg, 5, 2);
    let dir = save(root.path(), &B, &net, &opt, &train_state(&cfg, 12), 0).unwrap();
    let model = dir.join(checkpoint::MODEL_FILE);
    let out = common::reference_script("read_safetensors.py", &[common::s(&model)]);
    let file: NumpyFile = serde_json::from_str(&out).unwrap();
    let config: ResNetConfig = serde_json::from_str(&file.metadata["model_config"]).unwrap();
    assert_eq!(config, cfg);
    let mut seen = 0;
    for (table, host) in [(&net.spec.params, &net.param), (&net.spec.buffers, &net.state)] {
        for e in table.entries() {
            let t = &file.tensors[&e.name];
            assert_eq!((t.dtype.as_str(), &t.shape), ("F32", &e.shape), "{}", e.name);
            let values: Vec<f32> = t.values.iter().map(|&v| v as f32).collect();
            assert_eq!(values, host[e.range.clone()], "{}", e.name);
            seen += 1;
        }
    }
    let counters: Vec<&NumpyTensor> = file
        .tensors
        .iter()
        .filter(|(k, _)| k.ends_with(".num_batches_tracked"))
        .map(|(_, t)| t)
        .collect();
    assert_eq!(counters.len(), bn_count(&net));
    assert!(counters.iter().all(|t| t.dtype == "I64" && t.shape.is_empty()));
    assert_eq!(file.tensors.len(), seen + counters.len());

    // Our own file loads back by name, counters ignored.
    let (mut other, _, _) = trained(&cfg, 8, 0);
    let report = load_weights(&model, &B, &mut other, &LoadOptions::default()).unwrap();
    assert_eq!(report.ignored.len(), bn_count(&net));
    assert_eq!(other.param, net.param);
    assert_eq!(other.state, net.state);
}

/// The Python with torch; None (and the reason printed) when there is none.
fn torch_python() -> Option<&'static str> {
    let python = "/usr/bin/python3";
    match Command::new(python).args(["-c", "import torch"]).output() {
        Ok(out) if out.status.success() => Some(python),
        Ok(out) => {
            eprintln!(
                "skipping: {python} has no torch: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            None
        }
        Err(e) => {
            eprintln!("skipping: cannot run {python}: {e}");
            None
        }
    }
}

#[test]
fn checkpoint_model_file_loads_strictly_in_pytorch_with_the_same_logits() {
    let Some(python) = torch_python() else {
        return;
    };
    let root = common::tempdir();
    let cfg = small_config();
    let (mut net, opt, input) = trained(&cfg, 5, 3);
    let dir = save(root.path(), &B, &net, &opt, &train_state(&cfg, 3), 0).unwrap();
    let logits = eval_logits(&mut net, &input);
    let shape_in = [N as usize, 1, 32, 32];
    let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let (input_bytes, logit_bytes) = (bytes(&input), bytes(&logits));
    let tensors = [
        (
            "input",
            safetensors::tensor::TensorView::new(Dtype::F32, shape_in.to_vec(), &input_bytes).unwrap(),
        ),
        (
            "logits",
            safetensors::tensor::TensorView::new(Dtype::F32, vec![N as usize, 2], &logit_bytes).unwrap(),
        ),
    ];
    let io = root.path().join("io.safetensors");
    safetensors::tensor::serialize_to_file(tensors, &None, &io).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/torch_checkpoint.py");
    let out = Command::new(python)
        .arg(&script)
        .args(["--check", common::s(&dir), "--io", common::s(&io)])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "PyTorch disagrees:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"ok\": true"));
}

/// The state file's floats (the epoch's loss sums, the learning rate) must come back bit for bit, or
/// a run resumed at an epoch's end logs a train loss that differs in the last digit from the
/// undisturbed run's (seen in `faults::fault_killed_in_evaluation_resumes_the_evaluation`).
/// serde_json's default float parser is not correctly rounded; its `float_roundtrip` feature is.
#[test]
fn state_json_round_trips_every_f64_bit_for_bit() {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut wrong = Vec::new();
    for _ in 0..200_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // Sums of losses: positive, a wide range of magnitudes.
        let v = f64::from_bits(x >> 2);
        if !v.is_finite() {
            continue;
        }
        // As the state file is written and read (`TrainState::epoch_loss` is an `[f64; 2]`).
        let text = serde_json::to_vec_pretty(&[v, v * 3.0]).unwrap();
        let back: [f64; 2] = serde_json::from_slice(&text).unwrap();
        if back[0].to_bits() != v.to_bits() {
            wrong.push(v);
        }
    }
    assert!(
        wrong.is_empty(),
        "{} values changed, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(3)]
    );
}
