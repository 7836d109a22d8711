//! Models against PyTorch: a small torchvision-layout ResNet forward/backward
//! and a small 3D ResNet (tests/reference/torch_resnet.py), and torchvision's resnet18 names and shapes.

use std::collections::HashMap;

use medtrain::backend::cpu::CpuBackend;
use medtrain::backend::{Backend, CrossEntropyParams};
use medtrain::nn::{build, Net, ResNetConfig};
use serde::Deserialize;

const B: CpuBackend = CpuBackend;
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/reference/fixtures");

#[derive(Deserialize)]
struct Entry {
    name: String,
    offset: usize,
    len: usize,
}

#[derive(Deserialize)]
struct Index {
    tensors: Vec<Entry>,
}

pub fn load_fixture(stem: &str) -> HashMap<String, Vec<f32>> {
    let read = |name: String| {
        let path = format!("{FIXTURES}/{name}");
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}; run tests/reference/torch_resnet.py"))
    };
    let index: Index = serde_json::from_slice(&read(format!("{stem}.json"))).unwrap();
    let bytes = read(format!("{stem}.bin"));
    let floats: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    index
        .tensors
        .iter()
        .map(|e| (e.name.clone(), floats[e.offset..e.offset + e.len].to_vec()))
        .collect()
}

pub fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= atol + rtol * w.abs(),
            "{what}[{i}]: medtrain {g} vs PyTorch {w}"
        );
    }
}

/// Loads PyTorch's weights by name, runs one training forward + cross-entropy backward, and compares
/// logits, loss, every parameter gradient and the updated running statistics.
fn compare_with_pytorch(stem: &str, cfg: &ResNetConfig, n: u32, dims: [u32; 3]) {
    let refs = load_fixture(stem);
    let mut net = Net::new(&B, build(cfg, n, dims), 0).unwrap();
    for e in net.spec.params.entries() {
        let values = refs
            .get(&e.name)
            .unwrap_or_else(|| panic!("PyTorch model lacks {}", e.name));
        net.param[e.range.clone()].copy_from_slice(values);
    }
    net.forward(&B, &refs["input"], true).unwrap();
    let logits = net.output().clone();
    assert_close("logits", &logits, &refs["logits"], 1e-4, 1e-3);
    let mut dlogits = vec![0.0; logits.len()];
    let p = CrossEntropyParams {
        n,
        classes: cfg.num_outputs,
        label_smoothing: 0.0,
    };
    let loss = B
        .cross_entropy(&p, &logits, &refs["targets"], None, &mut dlogits)
        .unwrap();
    assert_close("loss", &[loss], &refs["loss"], 1e-5, 1e-4);
    net.backward(&B, &dlogits).unwrap();
    for e in net.spec.params.entries() {
        let want = &refs[&format!("grad.{}", e.name)];
        assert_close(
            &format!("{stem} grad {}", e.name),
            &net.grad[e.range.clone()],
            want,
            2e-4,
            2e-3,
        );
    }
    for e in net.spec.buffers.entries() {
        assert_close(&e.name, &net.state[e.range.clone()], &refs[&e.name], 1e-5, 1e-4);
    }
}

#[test]
fn small_resnet2d_forward_backward_matches_pytorch() {
    let mut cfg = ResNetConfig::resnet18(1, 3, 4);
    cfg.blocks = vec![1, 1, 1, 1];
    compare_with_pytorch("torch_resnet_small", &cfg, 2, [1, 32, 32]);
}

#[test]
fn small_resnet3d_forward_backward_matches_pytorch() {
    let mut cfg = ResNetConfig::resnet3d(1, 2, 2);
    cfg.blocks = vec![1, 1, 1];
    compare_with_pytorch("torch_resnet3d_small", &cfg, 3, [16, 16, 16]);
}

#[derive(Deserialize)]
struct NamedShape {
    name: String,
    shape: Vec<usize>,
}

#[derive(Deserialize)]
struct TorchvisionNames {
    state_dict: Vec<NamedShape>,
}

#[test]
fn resnet18_names_and_shapes_match_torchvision() {
    let text = std::fs::read_to_string(format!("{FIXTURES}/torchvision_resnet18_names.json")).unwrap();
    let tv: TorchvisionNames = serde_json::from_str(&text).unwrap();
    let spec = build(&ResNetConfig::resnet18(3, 1000, 64), 1, [1, 224, 224]);
    let ours: Vec<(String, Vec<usize>)> = spec
        .params
        .entries()
        .iter()
        .chain(spec.buffers.entries())
        .map(|e| (e.name.clone(), e.shape.clone()))
        .collect();
    let theirs: Vec<(String, Vec<usize>)> = tv
        .state_dict
        .iter()
        .map(|e| (e.name.clone(), e.shape.clone()))
        .collect();
    let mut sorted_ours = ours.clone();
    let mut sorted_theirs = theirs.clone();
    sorted_ours.sort();
    sorted_theirs.sort();
    assert_eq!(sorted_ours, sorted_theirs);
    // Parameters sit in the flat buffer in state-dict order.
    let their_params: Vec<&String> = theirs
        .iter()
        .map(|(n, _)| n)
        .filter(|n| !n.contains("running"))
        .collect();
    let our_params: Vec<&String> = spec.params.entries().iter().map(|e| &e.name).collect();
    assert_eq!(our_params, their_params);
}
