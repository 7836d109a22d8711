//! `medtrain bench step | parity | curve`: the checks and figures of the CUDA backend, also runnable
//! with `--device cpu` (step: CPU throughput; parity and curve: the CPU against itself, which checks
//! the harness). Single process: none of them starts MPI.
//!
//! - step: images/s of training steps on synthetic data (warm-up steps excluded) and peak device memory.
//! - parity: every `Backend` op on the device and on the CPU reference with the same random inputs;
//!   each output must satisfy |dev − cpu| ≤ atol + rtol·|cpu| with the tolerance stated per op.
//! - curve: the same seeded training run on both backends; the two loss curves must agree within a
//!   stated tolerance.

use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::backend::cpu::CpuBackend;
use crate::backend::cuda::CudaBackend;
use crate::backend::parity::{cases, compare, parity_of, OpParity};
use crate::backend::{Backend, CrossEntropyParams, Result};
use crate::exit::{usage, Failure, EXIT_FAILURES, EXIT_OK};
use crate::nn::resnet::{build, ResNetConfig};
use crate::nn::Net;
use crate::optim::{Optimizer, OptimizerConfig};

/// The CUDA backend on the first visible device, or a usage error naming what is missing. Without the
/// start-up self-test: these checks are how a failing self-test is diagnosed.
fn cuda_backend() -> std::result::Result<CudaBackend, Failure> {
    CudaBackend::for_local_rank_unchecked(0, 1).map_err(|e| usage(format!("--device cuda: {e}")))
}

fn check_device(device: &str) -> std::result::Result<(), Failure> {
    match device {
        "cpu" | "cuda" => Ok(()),
        other => Err(usage(format!("--device {other:?}: use cpu or cuda"))),
    }
}

// ---------------------------------------------------------------- step

#[derive(clap::Args, Debug)]
pub struct StepArgs {
    /// resnet18 (also spelled resnet18-2d; 1×224×224) or resnet3d (1×96×96×96).
    #[arg(long, default_value = "resnet18")]
    pub model: String,
    /// Images per step (default: 64 for resnet18, 8 for resnet3d).
    #[arg(long)]
    pub batch: Option<u32>,
    /// Input extent per spatial axis (default: 224 for resnet18, 96 for resnet3d).
    #[arg(long)]
    pub size: Option<u32>,
    /// Timed steps.
    #[arg(long, default_value_t = 20)]
    pub steps: u32,
    /// Untimed steps first (algorithm choice, allocation, caches).
    #[arg(long, default_value_t = 3)]
    pub warmup: u32,
    /// cpu | cuda
    #[arg(long, default_value = "cuda")]
    pub device: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize, Debug)]
pub struct StepReport {
    pub device: String,
    pub device_name: String,
    pub model: String,
    pub input: Vec<u32>,
    pub batch: u32,
    pub steps: u32,
    pub warmup: u32,
    pub seconds_per_step: f64,
    pub images_per_second: f64,
    pub peak_device_bytes: Option<u64>,
    /// Device allocations during the timed steps (0: buffers and workspaces were sized before).
    pub allocations_in_timed_steps: Option<u64>,
    pub tf32: bool,
    pub final_loss: f32,
}

/// A model, its optimizer and a synthetic batch, ready to step.
struct Trainer<B: Backend> {
    net: Net<B>,
    opt: Optimizer<B>,
    input: Vec<f32>,
    targets: B::Buf,
    dout: B::Buf,
    n: u32,
    classes: u32,
}

fn model_config(name: &str) -> std::result::Result<(ResNetConfig, u32, u32), Failure> {
    match name {
        "resnet18" | "resnet18-2d" => Ok((ResNetConfig::resnet18(1, 2, 64), 64, 224)),
        "resnet3d" => Ok((ResNetConfig::resnet3d(1, 2, 32), 8, 96)),
        other => Err(usage(format!(
            "--model {other:?}: use resnet18 (or resnet18-2d) or resnet3d"
        ))),
    }
}

fn extent(cfg: &ResNetConfig, size: u32) -> [u32; 3] {
    if cfg.spatial_dims == 3 {
        [size; 3]
    } else {
        [1, size, size]
    }
}

impl<B: Backend> Trainer<B> {
    fn new(b: &B, cfg: &ResNetConfig, n: u32, dims: [u32; 3], seed: u64) -> Result<Self> {
        let spec = build(cfg, n, dims);
        let net = Net::new(b, spec, seed)?;
        let opt = Optimizer::new(
            b,
            OptimizerConfig::Sgd {
                momentum: 0.9,
                nesterov: false,
                weight_decay: 1e-4,
            },
            net.spec.params.len(),
        )?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5EED);
        let input: Vec<f32> = (0..net.input_len()).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let classes = cfg.num_outputs;
        let targets: Vec<f32> = (0..n).map(|i| (i % classes) as f32).collect();
        Ok(Trainer {
            targets: b.upload(&targets)?,
            dout: b.zeros((n * classes) as usize)?,
            net,
            opt,
            input,
            n,
            classes,
        })
    }

    /// Forward, loss, backward, SGD update; returns the loss (which synchronises the device).
    fn step(&mut self, b: &B, lr: f32) -> Result<f32> {
        let len = (self.n * self.classes) as usize;
        let glen = b.len(&self.net.grad);
        b.fill(b.view_mut(&mut self.net.grad, 0..glen), 0.0)?;
        self.net.forward(b, &self.input, true)?;
        let p = CrossEntropyParams {
            n: self.n,
            classes: self.classes,
            label_smoothing: 0.0,
        };
        let loss = b.cross_entropy(
            &p,
            b.view(self.net.output(), 0..len),
            b.view(&self.targets, 0..self.n as usize),
            None,
            b.view_mut(&mut self.dout, 0..len),
        )?;
        self.net.backward(b, &self.dout)?;
        self.opt.update(b, lr, &mut self.net.param, &self.net.grad)?;
        Ok(loss)
    }
}

fn time_steps<B: Backend>(
    b: &B,
    args: &StepArgs,
    device_name: String,
) -> std::result::Result<StepReport, Failure> {
    let (cfg, default_batch, default_size) = model_config(&args.model)?;
    let n = args.batch.unwrap_or(default_batch);
    let size = args.size.unwrap_or(default_size);
    if n == 0 || size < 32 || args.steps == 0 {
        return Err(usage(
            "bench step: --batch and --steps must be positive and --size at least 32",
        ));
    }
    let dims = extent(&cfg, size);
    let job = |e: crate::backend::BackendError| Failure::Job(format!("bench step on {}: {e}", b.name()));
    let mut t = Trainer::new(b, &cfg, n, dims, 7).map_err(job)?;
    for _ in 0..args.warmup {
        t.step(b, 0.01).map_err(job)?;
    }
    let allocations_before = b.device_allocations();
    let start = Instant::now();
    let mut loss = 0.0;
    for _ in 0..args.steps {
        loss = t.step(b, 0.01).map_err(job)?;
    }
    let secs = start.elapsed().as_secs_f64() / args.steps as f64;
    let mut input = vec![cfg.in_channels];
    input.extend(if cfg.spatial_dims == 3 {
        &dims[..]
    } else {
        &dims[1..]
    });
    Ok(StepReport {
        device: b.name().into(),
        device_name,
        model: args.model.clone(),
        input,
        batch: n,
        steps: args.steps,
        warmup: args.warmup,
        seconds_per_step: secs,
        images_per_second: n as f64 / secs,
        peak_device_bytes: b.peak_device_bytes(),
        allocations_in_timed_steps: b.device_allocations().zip(allocations_before).map(|(a, b)| a - b),
        tf32: false,
        final_loss: loss,
    })
}

pub fn step(args: StepArgs) -> std::result::Result<i32, Failure> {
    check_device(&args.device)?;
    let report = if args.device == "cuda" {
        let b = cuda_backend()?;
        let name = b.device_name().to_string();
        time_steps(&b, &args, name)?
    } else {
        time_steps(&CpuBackend, &args, "host CPU".into())?
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).expect("serialisable"));
    } else {
        println!(
            "bench step: {} {:?} batch {} on {} ({}): {:.1} images/s, {:.4} s/step{}",
            report.model,
            report.input,
            report.batch,
            report.device,
            report.device_name,
            report.images_per_second,
            report.seconds_per_step,
            report
                .peak_device_bytes
                .map(|b| format!(", peak device memory {:.1} MiB", b as f64 / (1 << 20) as f64))
                .unwrap_or_default()
        );
    }
    Ok(EXIT_OK)
}

// ---------------------------------------------------------------- parity

#[derive(clap::Args, Debug)]
pub struct ParityArgs {
    /// The device checked against the CPU reference: cuda, or cpu (the CPU against itself).
    #[arg(long, default_value = "cuda")]
    pub device: String,
    /// Seed of the random inputs.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Only ops whose name contains this.
    #[arg(long)]
    pub only: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize, Debug)]
pub struct ParityReport {
    pub device: String,
    pub device_name: String,
    pub pass: bool,
    pub ops: Vec<OpParity>,
}

fn parity_on<B: Backend>(b: &B, args: &ParityArgs, device_name: String) -> ParityReport {
    let ops: Vec<OpParity> = cases()
        .iter()
        .filter(|op| args.only.as_deref().is_none_or(|o| op.name().contains(o)))
        .map(|op| parity_of(b, op, args.seed))
        .collect();
    ParityReport {
        device: b.name().into(),
        device_name,
        pass: ops.iter().all(|o| o.pass),
        ops,
    }
}

pub fn parity(args: ParityArgs) -> std::result::Result<i32, Failure> {
    check_device(&args.device)?;
    let report = if args.device == "cuda" {
        let b = cuda_backend()?;
        let name = b.device_name().to_string();
        parity_on(&b, &args, name)
    } else {
        parity_on(&CpuBackend, &args, "host CPU".into())
    };
    if report.ops.is_empty() {
        return Err(usage(format!(
            "--only {:?} matches no op",
            args.only.unwrap_or_default()
        )));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).expect("serialisable"));
    } else {
        println!(
            "bench parity: {} ({}) against the CPU reference",
            report.device, report.device_name
        );
        for o in &report.ops {
            println!(
                "{} {:<26} max abs {:.3e} max rel {:.3e} (atol {:.0e} rtol {:.0e}) {}{}",
                if o.pass { "ok  " } else { "FAIL" },
                o.op,
                o.max_abs_err,
                o.max_rel_err,
                o.atol,
                o.rtol,
                o.shape,
                o.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default()
            );
        }
    }
    Ok(if report.pass { EXIT_OK } else { EXIT_FAILURES })
}

// ---------------------------------------------------------------- curve

#[derive(clap::Args, Debug)]
pub struct CurveArgs {
    /// Training steps on each backend.
    #[arg(long, default_value_t = 20)]
    pub steps: u32,
    /// The device compared with the CPU: cuda, or cpu (the CPU against itself).
    #[arg(long, default_value = "cuda")]
    pub device: String,
    #[arg(long, default_value_t = 3)]
    pub seed: u64,
    #[arg(long)]
    pub json: bool,
}

/// |device − cpu| ≤ CURVE_ATOL + CURVE_RTOL·|cpu| at every step: rounding differences of the layers
/// (see parity) compound over SGD steps, slowly at this learning rate.
pub const CURVE_ATOL: f64 = 1e-3;
pub const CURVE_RTOL: f64 = 1e-2;

#[derive(Serialize, Debug)]
pub struct CurveReport {
    pub device: String,
    pub model: String,
    pub steps: u32,
    pub cpu: Vec<f32>,
    pub other: Vec<f32>,
    pub atol: f64,
    pub rtol: f64,
    pub max_abs_diff: f64,
    pub pass: bool,
}

/// A small ResNet-18-like model (width 8, 1×32×32, batch 8), seeded, trained with SGD.
fn curve_on<B: Backend>(b: &B, args: &CurveArgs) -> Result<Vec<f32>> {
    let cfg = ResNetConfig::resnet18(1, 2, 8);
    let mut t = Trainer::new(b, &cfg, 8, [1, 32, 32], args.seed)?;
    (0..args.steps).map(|_| t.step(b, 0.05)).collect()
}

pub fn curve(args: CurveArgs) -> std::result::Result<i32, Failure> {
    check_device(&args.device)?;
    if args.steps == 0 {
        return Err(usage("bench curve: --steps must be positive"));
    }
    fn job(who: &'static str) -> impl Fn(crate::backend::BackendError) -> Failure {
        move |e| Failure::Job(format!("bench curve on {who}: {e}"))
    }
    let cpu = curve_on(&CpuBackend, &args).map_err(job("cpu"))?;
    let other = if args.device == "cuda" {
        let b = cuda_backend()?;
        curve_on(&b, &args).map_err(job("cuda"))?
    } else {
        curve_on(&CpuBackend, &args).map_err(job("cpu"))?
    };
    let as64 = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
    let (abs, _, pass) = compare(&as64(&other), &as64(&cpu), CURVE_ATOL, CURVE_RTOL);
    let report = CurveReport {
        device: args.device.clone(),
        model: "resnet18 width 8, 1x32x32, batch 8, SGD lr 0.05 momentum 0.9".into(),
        steps: args.steps,
        cpu,
        other,
        atol: CURVE_ATOL,
        rtol: CURVE_RTOL,
        max_abs_diff: abs,
        pass,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).expect("serialisable"));
    } else {
        println!("step  cpu loss      {} loss", report.device);
        for (i, (c, o)) in report.cpu.iter().zip(&report.other).enumerate() {
            println!("{:>4}  {c:<12.6}  {o:.6}", i + 1);
        }
        println!(
            "{}: max |diff| {:.3e} (tolerance {:.0e} + {:.0e}·|cpu|)",
            if pass { "curves match" } else { "CURVES DIFFER" },
            abs,
            CURVE_ATOL,
            CURVE_RTOL
        );
    }
    Ok(if pass { EXIT_OK } else { EXIT_FAILURES })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_op_runs_on_the_cpu_and_matches_itself() {
        let args = ParityArgs {
            device: "cpu".into(),
            seed: 5,
            only: None,
            json: false,
        };
        let r = parity_on(&CpuBackend, &args, "host".into());
        for o in &r.ops {
            assert!(o.pass && o.error.is_none(), "{o:?}");
        }
        assert!(r.ops.len() >= 40);
    }
}
