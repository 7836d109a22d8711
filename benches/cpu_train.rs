//! Training-step throughput of medtrain's CPU backend (forward + cross-entropy + backward + SGD) for
//! the benchmark models, with a per-layer-type breakdown in GFLOP/s. benches/cpu_train.sh runs it side
//! by side with PyTorch (benches/cpu_train_torch.py) at the same thread count.
//!
//!     cargo bench --bench cpu_train -- <resnet18_2d|resnet3d> <steps>

use std::collections::BTreeMap;
use std::time::Instant;

use medtrain::backend::cpu::CpuBackend;
use medtrain::backend::{Backend, CrossEntropyParams};
use medtrain::nn::graph::Op;
use medtrain::nn::{build, Net, ResNetConfig};
use medtrain::optim::{Optimizer, OptimizerConfig};

const B: CpuBackend = CpuBackend;
const CLASSES: u32 = 2;

/// (config, batch, input extent) of the benchmark models named in the issue.
fn model(name: &str) -> (ResNetConfig, u32, [u32; 3]) {
    match name {
        "resnet18_2d" => (ResNetConfig::resnet18(1, CLASSES, 64), 32, [1, 128, 128]),
        "resnet3d" => (ResNetConfig::resnet3d(1, CLASSES, 32), 4, [64, 64, 64]),
        other => panic!("unknown model {other}; use resnet18_2d or resnet3d"),
    }
}

fn layer_kind(op: &Op) -> String {
    match op {
        Op::Conv { p, .. } => {
            let k = p.kernel;
            if p.in_dims[0] == 1 && k[0] == 1 {
                format!("conv2d {}x{}", k[1], k[2])
            } else {
                format!("conv3d {}x{}x{}", k[0], k[1], k[2])
            }
        }
        Op::BatchNorm { .. } => "batchnorm".into(),
        Op::Relu => "relu".into(),
        Op::MaxPool(_) => "maxpool".into(),
        Op::GlobalAvgPool { .. } => "global avg pool".into(),
        Op::Linear { .. } => "linear".into(),
        Op::Add => "residual add".into(),
        Op::Dropout { .. } => "dropout".into(),
        Op::Upsample { .. } => "upsample".into(),
        Op::Concat { .. } => "concat".into(),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let name = args.first().map_or("resnet18_2d", String::as_str);
    if name == "gemm" {
        return gemm_rates();
    }
    let steps: usize = args.get(1).map_or(3, |s| s.parse().expect("steps is a number"));
    let (cfg, n, dims) = model(name);
    let spec = build(&cfg, n, dims);
    let flops_per_step = 3.0 * spec.graph.forward_flops(); // backward ≈ 2× forward
    let mut net = Net::new(&B, spec, 1).unwrap();
    let mut opt = Optimizer::new(
        &B,
        OptimizerConfig::Sgd {
            momentum: 0.9,
            nesterov: false,
            weight_decay: 1e-4,
        },
        net.spec.params.len(),
    )
    .unwrap();
    let x: Vec<f32> = (0..net.input_len())
        .map(|i| ((i * 7919 % 1013) as f32 / 506.5) - 1.0)
        .collect();
    let y: Vec<f32> = (0..n).map(|i| (i % CLASSES) as f32).collect();
    let ce = CrossEntropyParams {
        n,
        classes: CLASSES,
        label_smoothing: 0.0,
    };
    let mut dlogits = vec![0.0; (n * CLASSES) as usize];
    let mut step_times = Vec::new();
    // Step 0 warms up (page faults, caches), steps 1..=steps are timed, the last one is profiled.
    for step in 0..steps + 2 {
        if step == steps + 1 {
            net.enable_profile();
        }
        let start = Instant::now();
        net.grad.fill(0.0);
        net.forward(&B, &x, true).unwrap();
        B.cross_entropy(&ce, net.output(), &y, None, &mut dlogits)
            .unwrap();
        net.backward(&B, &dlogits).unwrap();
        opt.update(&B, 0.01, &mut net.param, &net.grad).unwrap();
        if (1..=steps).contains(&step) {
            step_times.push(start.elapsed().as_secs_f64());
        }
    }
    step_times.sort_by(f64::total_cmp);
    let median = step_times[step_times.len() / 2];
    let threads = rayon::current_num_threads();
    println!(
        "medtrain {name}: batch {n}, {threads} threads, median step {median:.3} s over {} timed steps, {:.2} img/s, {:.1} GFLOP/s",
        step_times.len(),
        n as f64 / median,
        flops_per_step / median / 1e9
    );
    print_breakdown(&net);
}

/// Single-threaded GEMM rate on the convolution shapes (M = C_out, N = output positions, K = C_in·k³),
/// for the forward product and for the weight gradient (B transposed).
fn gemm_rates() {
    use medtrain::backend::cpu::gemm::{sgemm, MatRef};
    let shapes = [
        ("2d stem 7x7, 64x64", 64, 4096, 49),
        ("2d layer1 3x3, 32x32", 64, 1024, 576),
        ("2d layer3 3x3, 8x8", 256, 64, 2304),
        ("3d stem 7x7x7, 32^3", 32, 32768, 343),
        ("3d layer1 3x3x3, 16^3", 32, 4096, 864),
    ];
    for (name, m, n, k) in shapes {
        let a = vec![0.5f32; m * k];
        let b = vec![0.25f32; k * n];
        let mut c = vec![0.0f32; m * n];
        let rate = |f: &mut dyn FnMut()| {
            f();
            let start = Instant::now();
            let reps = 5;
            for _ in 0..reps {
                f();
            }
            2.0 * (m * n * k) as f64 * reps as f64 / start.elapsed().as_secs_f64() / 1e9
        };
        let fwd = rate(&mut || sgemm(m, n, k, MatRef::rows(&a, k), MatRef::rows(&b, n), &mut c, false));
        let mut dw = vec![0.0f32; m * k];
        // dW (m, k) += dY (m, n) · colᵀ (n, k), col stored (k, n)
        let wgrad = rate(&mut || {
            sgemm(
                m,
                k,
                n,
                MatRef::rows(&c, n),
                MatRef::transposed(&b, n),
                &mut dw,
                true,
            )
        });
        println!("gemm {name:<24} M={m:<4} N={n:<6} K={k:<5} forward {fwd:6.1} GFLOP/s, weight grad {wgrad:6.1} GFLOP/s");
    }
}

/// Time and GFLOP/s per layer type from the profiled step.
fn print_breakdown(net: &Net<CpuBackend>) {
    let times = net.profile.as_ref().expect("profiled step ran");
    let mut by_kind: BTreeMap<String, (f64, f64, f64)> = BTreeMap::new();
    for (node, &(fwd, bwd)) in net.spec.graph.nodes.iter().zip(times) {
        let flops = match &node.op {
            Op::Conv { p, .. } => p.forward_flops(),
            Op::Linear { p, .. } => 2.0 * (p.n * p.in_features * p.out_features) as f64,
            _ => 0.0,
        };
        let e = by_kind.entry(layer_kind(&node.op)).or_default();
        e.0 += fwd;
        e.1 += bwd;
        e.2 += flops;
    }
    println!(
        "  {:<16} {:>9} {:>9} {:>11} {:>11}",
        "layer type", "fwd ms", "bwd ms", "fwd GF/s", "bwd GF/s"
    );
    for (kind, (fwd, bwd, flops)) in by_kind {
        let rate = |flops: f64, t: f64| {
            if flops > 0.0 {
                format!("{:.1}", flops / t / 1e9)
            } else {
                "-".into()
            }
        };
        println!(
            "  {kind:<16} {:>9.1} {:>9.1} {:>11} {:>11}",
            fwd * 1e3,
            bwd * 1e3,
            rate(flops, fwd),
            rate(2.0 * flops, bwd)
        );
    }
}
