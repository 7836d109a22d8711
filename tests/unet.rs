//! The U-Net against PyTorch (tests/reference/torch_unet.py: the same layout and parameter names, one
//! training-mode forward, MONAI's DiceCELoss(sigmoid=True), backward), the segmentation losses against
//! MONAI's, sliding-window inference against whole-volume inference where the network's receptive
//! field allows it, and a 3D U-Net trained on phantom patches (foreground oversampled) against a
//! threshold segmenter on held-out patients.

use crate::backend_resnet::{assert_close, load_fixture};
use medtrain::backend::cpu::CpuBackend;
use medtrain::backend::ConvParams;
use medtrain::nn::graph::{Graph, Op};
use medtrain::nn::{build_unet, ModelSpec, NamedTable, Net, UNetConfig};
use medtrain::train::segloss::{seg_loss, SegLoss};
use medtrain::train::sliding::{sliding_window, Window};

const B: CpuBackend = CpuBackend;
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/reference/fixtures");

fn compare_with_pytorch(stem: &str, cfg: &UNetConfig, n: u32, dims: [u32; 3]) {
    let refs = load_fixture(stem);
    let mut net = Net::new(&B, build_unet(cfg, n, dims), 0).unwrap();
    for e in net.spec.params.entries() {
        let values = refs
            .get(&e.name)
            .unwrap_or_else(|| panic!("PyTorch model lacks {}", e.name));
        assert_eq!(values.len(), e.range.len(), "{}", e.name);
        net.param[e.range.clone()].copy_from_slice(values);
    }
    net.forward(&B, &refs["input"], true).unwrap();
    let logits = net.output().clone();
    assert_close(&format!("{stem} logits"), &logits, &refs["logits"], 1e-4, 1e-3);
    let mut dlogits = vec![0.0; logits.len()];
    let spatial = dims.iter().product::<u32>() as usize;
    let loss = seg_loss(SegLoss::DiceCe, &logits, &refs["targets"], spatial, &mut dlogits);
    assert_close(&format!("{stem} loss"), &[loss as f32], &refs["loss"], 1e-5, 1e-4);
    net.backward(&B, &dlogits).unwrap();
    for e in net.spec.params.entries() {
        let want = &refs[&format!("grad.{}", e.name)];
        assert_close(
            &format!("{stem} grad {}", e.name),
            &net.grad[e.range.clone()],
            want,
            2e-5,
            2e-3,
        );
    }
    for e in net.spec.buffers.entries() {
        assert_close(&e.name, &net.state[e.range.clone()], &refs[&e.name], 1e-5, 1e-4);
    }
}

#[test]
fn unet2d_forward_backward_matches_pytorch() {
    compare_with_pytorch(
        "torch_unet2d",
        &UNetConfig::new(2, 1, 1, vec![4, 8, 16]),
        2,
        [1, 16, 16],
    );
}

#[test]
fn unet3d_forward_backward_matches_pytorch() {
    compare_with_pytorch(
        "torch_unet3d",
        &UNetConfig::new(3, 1, 1, vec![3, 6]),
        2,
        [8, 8, 8],
    );
}

#[test]
fn segmentation_losses_match_monai() {
    let text = std::fs::read_to_string(format!("{FIXTURES}/monai_seg_losses.json")).unwrap();
    let r: serde_json::Value = serde_json::from_str(&text).unwrap();
    let f32s = |v: &serde_json::Value| -> Vec<f32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect()
    };
    let (logits, targets) = (f32s(&r["logits"]), f32s(&r["targets"]));
    let spatial = r["spatial"].as_u64().unwrap() as usize;
    for (name, kind) in [
        ("dice", SegLoss::Dice),
        ("dice_ce", SegLoss::DiceCe),
        ("focal", SegLoss::Focal),
    ] {
        let mut grad = vec![0.0; logits.len()];
        let loss = seg_loss(kind, &logits, &targets, spatial, &mut grad);
        let want = r[name]["loss"].as_f64().unwrap();
        assert!(
            (loss - want).abs() < 1e-6 * want.abs().max(1.0),
            "{name}: {loss} vs MONAI {want}"
        );
        assert_close(name, &grad, &f32s(&r[name]["grad"]), 1e-7, 1e-4);
    }
}

/// A network of one 1×1×1 convolution (with bias) over a patch: its output at a voxel depends on that
/// voxel alone, so any tiling and any weighting must give the whole-volume answer.
fn pointwise(n: u32, patch: [u32; 3]) -> Net<CpuBackend> {
    let p = ConvParams::conv3d(n, 2, 3, patch, 1, 1, 0);
    let mut graph = Graph::with_input(p.input_len());
    let mut params = NamedTable::default();
    let weight = params.push("conv.weight", &[3, 2, 1, 1, 1]);
    let bias = params.push("conv.bias", &[3]);
    graph.push(
        Op::Conv {
            p,
            weight,
            bias: Some(bias),
        },
        &[0],
        p.output_len(),
    );
    let spec = ModelSpec {
        config: UNetConfig::new(3, 2, 3, vec![1]).into(),
        graph,
        params,
        buffers: NamedTable::default(),
    };
    let mut net = Net::new(&B, spec, 3).unwrap();
    net.param
        .iter_mut()
        .enumerate()
        .for_each(|(i, v)| *v = (i as f32 * 0.37).sin());
    net
}

#[test]
fn sliding_window_equals_whole_volume_inference_where_the_receptive_field_allows() {
    // A volume no patch divides, shorter than the patch along one axis (padded), with flips.
    let dims = [5usize, 13, 11];
    let patch = [8u32, 6, 4];
    let volume: Vec<f32> = (0..2 * dims.iter().product::<usize>())
        .map(|i| ((i * 31 % 97) as f32) / 50.0 - 1.0)
        .collect();
    let mut whole = pointwise(1, [dims[0] as u32, dims[1] as u32, dims[2] as u32]);
    whole.forward(&B, &volume, false).unwrap();
    let want = whole.output().clone();
    let mut tiled = pointwise(3, patch);
    let p = patch.map(|v| v as usize);
    for window in [
        Window::default(),
        Window {
            overlap: 0.25,
            gaussian: false,
            flips: true,
        },
    ] {
        let got = sliding_window(&B, &mut tiled, &volume, 2, dims, p, &window).unwrap();
        assert_close(&format!("{window:?}"), &got, &want, 1e-5, 1e-5);
    }
    // A U-Net on a volume the size of its patch: one window, whatever the weighting.
    let cfg = UNetConfig::new(3, 1, 1, vec![2, 4]);
    let mut net = Net::new(&B, build_unet(&cfg, 1, [4, 6, 8]), 5).unwrap();
    let vol: Vec<f32> = (0..4 * 6 * 8).map(|i| ((i * 13 % 29) as f32) / 10.0).collect();
    net.forward(&B, &vol, false).unwrap();
    let want = net.output().clone();
    let got = sliding_window(&B, &mut net, &vol, 1, [4, 6, 8], [4, 6, 8], &Window::default()).unwrap();
    assert_close("one window", &got, &want, 1e-6, 1e-6);
}

/// HU → the network's input: the lung window [−1000, 400] HU scaled to [−1, 1].
fn normalise(hu: i16) -> f32 {
    ((hu as f32 + 1000.0) / 1400.0).clamp(0.0, 1.0) * 2.0 - 1.0
}

#[test]
fn a_3d_unet_trained_on_patches_segments_phantom_nodules_better_than_a_threshold() {
    use medtrain::data::patches::{crop, patch_origin, Foreground};
    use medtrain::optim::{Optimizer, OptimizerConfig};
    use medtrain::phantom::{ct_volume, generate, PhantomConfig};
    use medtrain::train::segmetrics::case_metrics;

    let cfg = PhantomConfig {
        seed: 5,
        patients: 12,
        size: 96,
        slices: 24,
        slice_thickness_mm: 2.5,
        radiographs: false,
    };
    let dir = crate::common::tempdir();
    generate(&cfg, dir.path()).unwrap();
    let cases: Vec<(Vec<i16>, Vec<u16>, [usize; 3], [f64; 3])> = (0..cfg.patients)
        .map(|p| {
            let v = ct_volume(&cfg, p);
            let mask =
                medtrain::nifti::read(&dir.path().join(format!("truth/masks/{}.nii.gz", v.patient_id)))
                    .unwrap();
            let labels: Vec<u16> = mask.values.iter().map(|&x| x as u16).collect();
            let spacing = [v.slice_spacing, v.pixel_spacing[0], v.pixel_spacing[1]];
            (v.hu, labels, [v.slices, v.rows, v.cols], spacing)
        })
        .collect();
    let (train, val) = cases.split_at(8);
    assert!(
        val.iter().any(|c| c.1.iter().any(|&v| v != 0)),
        "a held-out nodule"
    );

    let (patch, batch) = ([8usize, 32, 32], 2usize);
    let unet = UNetConfig::new(3, 1, 1, vec![8, 16, 32]);
    let p32 = patch.map(|v| v as u32);
    let mut net = Net::new(&B, build_unet(&unet, batch as u32, p32), 1).unwrap();
    let adam = OptimizerConfig::AdamW {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
    };
    let mut opt = Optimizer::new(&B, adam, net.param.len()).unwrap();
    let plen: usize = patch.iter().product();
    let (mut x, mut y) = (vec![0.0f32; batch * plen], vec![0.0f32; batch * plen]);
    let (mut img, mut lab) = (vec![0i16; plen], vec![0u16; plen]);
    let fg: Vec<Foreground> = train
        .iter()
        .map(|c| Foreground::of(c.1.iter().copied()))
        .collect();
    let steps = 800u64;
    for step in 0..steps {
        for s in 0..batch {
            let sample = step * batch as u64 + s as u64;
            let case = sample as usize % train.len();
            let (hu, labels, dims, _) = &train[case];
            let origin = patch_origin(7, step, sample, *dims, patch, &fg[case], 0.67);
            crop(hu, 1, *dims, origin, patch, &mut img);
            crop(labels, 1, *dims, origin, patch, &mut lab);
            for i in 0..plen {
                x[s * plen + i] = normalise(img[i]);
                y[s * plen + i] = (lab[i] != 0) as u8 as f32;
            }
        }
        net.forward(&B, &x, true).unwrap();
        let mut d = vec![0.0f32; batch * plen];
        seg_loss(SegLoss::DiceCe, net.output(), &y, plen, &mut d);
        net.grad.fill(0.0);
        net.backward(&B, &d).unwrap();
        opt.update(&B, 3e-3, &mut net.param, &net.grad).unwrap();
    }
    let mut infer = Net::new(&B, build_unet(&unet, 1, p32), 0).unwrap();
    infer.param.copy_from_slice(&net.param);
    infer.state.copy_from_slice(&net.state);
    let (mut ours, mut baseline) = (Vec::new(), Vec::new());
    for (hu, labels, dims, spacing) in val {
        let truth: Vec<bool> = labels.iter().map(|&v| v != 0).collect();
        let input: Vec<f32> = hu.iter().map(|&h| normalise(h)).collect();
        let logits = sliding_window(&B, &mut infer, &input, 1, *dims, patch, &Window::default()).unwrap();
        let pred: Vec<bool> = logits.iter().map(|&z| z > 0.0).collect();
        ours.push(case_metrics(&pred, &truth, *dims, *spacing).dice);
        baseline.push(
            case_metrics(
                &medtrain::train::segeval::lung_threshold(hu, *dims),
                &truth,
                *dims,
                *spacing,
            )
            .dice,
        );
    }
    let mean = |v: &[Option<f64>]| {
        let d: Vec<f64> = v.iter().flatten().copied().collect();
        d.iter().sum::<f64>() / d.len() as f64
    };
    let (ours, baseline) = (mean(&ours), mean(&baseline));
    println!("held-out Dice: U-Net {ours:.3}, threshold {baseline:.3}");
    // 800 steps of batch 2 on eight patients (about 20 s on two cores): far from converged (held-out
    // Dice about 0.5 with this seed, 0.35 with another patch seed), yet clearly past the threshold,
    // which the vessels defeat.
    assert!(
        ours > baseline + 0.2,
        "U-Net Dice {ours:.3} vs threshold {baseline:.3}"
    );
}
