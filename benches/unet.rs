//! U-Net throughput of medtrain's CPU backend: a training step on patches (forward, MONAI's DiceCE
//! loss, backward, AdamW) and sliding-window inference over a volume (overlap 0.5, Gaussian
//! weighting). benches/unet.sh runs it side by side with the same network in PyTorch, with MONAI's
//! DiceCELoss and sliding_window_inference (benches/unet_torch.py).
//!
//!     cargo bench --bench unet -- <train|infer> <repeats>

use std::time::Instant;

use medtrain::backend::cpu::CpuBackend;
use medtrain::nn::graph::Op;
use medtrain::nn::{build_unet, Net, UNetConfig};
use medtrain::optim::{Optimizer, OptimizerConfig};
use medtrain::train::segloss::{seg_loss, SegLoss};
use medtrain::train::sliding::{sliding_window, Window};

const B: CpuBackend = CpuBackend;
/// Widths, patch (D, H, W), batch and inference volume shared with benches/unet_torch.py.
const WIDTHS: [u32; 3] = [16, 32, 64];
const PATCH: [u32; 3] = [32, 64, 64];
const BATCH: u32 = 2;
const VOLUME: [usize; 3] = [48, 128, 128];

fn input(len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 7919 % 1013) as f32 / 506.5) - 1.0)
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Milliseconds of the profiled step by kind of node (the convolutions by their input channels).
fn breakdown(net: &Net<CpuBackend>) {
    let times = net.profile.as_ref().expect("profiled step ran");
    let mut by_kind: std::collections::BTreeMap<String, (f64, f64)> = Default::default();
    for (node, &(fwd, bwd)) in net.spec.graph.nodes.iter().zip(times) {
        let kind = match &node.op {
            Op::Conv { p, .. } => format!("conv {}->{} at {:?}", p.c_in, p.c_out, p.in_dims),
            Op::BatchNorm { .. } => "batchnorm".into(),
            Op::Relu => "relu".into(),
            Op::MaxPool(_) => "maxpool".into(),
            Op::Upsample { .. } => "upsample".into(),
            Op::Concat { .. } => "concat".into(),
            other => format!("{other:?}"),
        };
        let e = by_kind.entry(kind).or_default();
        e.0 += fwd;
        e.1 += bwd;
    }
    for (kind, (fwd, bwd)) in by_kind {
        println!(
            "  {kind:<34} fwd {:>8.1} ms  bwd {:>8.1} ms",
            fwd * 1e3,
            bwd * 1e3
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let mode = args.first().map_or("train", String::as_str);
    let repeats: usize = args.get(1).map_or(3, |s| s.parse().expect("repeats is a number"));
    let cfg = UNetConfig::new(3, 1, 1, WIDTHS.to_vec());
    let threads = rayon::current_num_threads();
    match mode {
        "train" => {
            let spec = build_unet(&cfg, BATCH, PATCH);
            let flops = 3.0 * spec.graph.forward_flops();
            let mut net = Net::new(&B, spec, 1).unwrap();
            let adam = OptimizerConfig::AdamW {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 1e-5,
            };
            let mut opt = Optimizer::new(&B, adam, net.param.len()).unwrap();
            let x = input(net.input_len());
            let y: Vec<f32> = (0..x.len()).map(|i| (i % 17 == 0) as u8 as f32).collect();
            let spatial = PATCH.iter().product::<u32>() as usize;
            let mut d = vec![0.0f32; x.len()];
            let mut times = Vec::new();
            for step in 0..=repeats {
                let start = Instant::now();
                net.grad.fill(0.0);
                net.forward(&B, &x, true).unwrap();
                seg_loss(SegLoss::DiceCe, net.output(), &y, spatial, &mut d);
                net.backward(&B, &d).unwrap();
                opt.update(&B, 1e-3, &mut net.param, &net.grad).unwrap();
                if step > 0 {
                    times.push(start.elapsed().as_secs_f64());
                }
            }
            net.enable_profile();
            net.forward(&B, &x, true).unwrap();
            net.backward(&B, &d).unwrap();
            let m = median(times);
            println!(
                "medtrain unet3d train: batch {BATCH} x {PATCH:?}, widths {WIDTHS:?}, {threads} threads, median step {m:.3} s \
                 over {repeats} steps, {:.2} patches/s, {:.1} GFLOP/s",
                BATCH as f64 / m,
                flops / m / 1e9
            );
            breakdown(&net);
        }
        "infer" => {
            let mut net = Net::new(&B, build_unet(&cfg, BATCH, PATCH), 1).unwrap();
            let vol = input(VOLUME.iter().product());
            let patch = PATCH.map(|v| v as usize);
            let mut times = Vec::new();
            for rep in 0..=repeats {
                let start = Instant::now();
                sliding_window(&B, &mut net, &vol, 1, VOLUME, patch, &Window::default()).unwrap();
                if rep > 0 {
                    times.push(start.elapsed().as_secs_f64());
                }
            }
            println!(
                "medtrain unet3d infer: volume {VOLUME:?}, patch {PATCH:?}, overlap 0.5, gaussian, {BATCH} windows per batch, \
                 {threads} threads, median {:.3} s per volume over {repeats}",
                median(times)
            );
        }
        other => panic!("unknown mode {other}; use train or infer"),
    }
}
