//! `medtrain bench explain`: milliseconds per Grad-CAM map on the CPU or the GPU, and on the GPU the
//! maps of every block output checked against the CPU reference, on the models and inputs of the
//! PyTorch hook-based peer (`benches/explain_torch.py`): resnet18 on one 512×512 slice, the 3D ResNet
//! on one 128³ volume. One process; the GPU node needs no Rust and no MPI.

use super::cam::{GradCamOps, Method, Upsample};
use super::layers::{default_layer, grad_cam, grad_cam_layers, select_layers, CamRequest};
use crate::backend::cpu::CpuBackend;
use crate::exit::{Failure, EXIT_FAILURES, EXIT_OK};
use crate::nn::{build, Net, ResNetConfig};
use crate::runtime::{open_gpu, resolve_device, Device};
use serde::Serialize;
use std::time::Instant;

const CLASSES: u32 = 2;
/// The explained output (as the peer's `cls`).
const OUTPUT: usize = 1;
/// Normalised maps in [0, 1]: the GPU's differ from the CPU's by the rounding of cuDNN's
/// convolutions carried through the backward pass, far below this.
const MAP_ATOL: f32 = 1e-3;

#[derive(clap::Args, Debug)]
pub struct ExplainBenchArgs {
    /// slice2d (resnet18, 1×512×512), volume3d (3D ResNet widths 32/64/128, 1×128³) or all.
    #[arg(long, default_value = "all")]
    pub model: String,
    /// auto | cpu | cuda. On cuda the maps are also computed on the CPU and compared.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Timed maps after one warm-up (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
    /// CPU threads (default: RAYON_NUM_THREADS, else all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    #[arg(long)]
    pub json: bool,
}

/// One model on one device.
#[derive(Serialize, Debug)]
pub struct ExplainBenchRow {
    pub model: String,
    pub device: String,
    pub device_name: String,
    /// The timed layer (the last stage's output) and its up-sampling (F.interpolate's, as the peer).
    pub layer: String,
    pub ms_per_map_median: f64,
    pub ms_per_map: Vec<f64>,
    /// GPU only: every block output's map against the CPU reference (centred up-sampling), then the
    /// timed layer's (interpolate).
    pub parity: Vec<MapParity>,
}

#[derive(Serialize, Debug)]
pub struct MapParity {
    pub layer: String,
    pub upsample: String,
    pub max_abs_err: f32,
    /// Whether both maps peak at the same voxel (what the pointing game reads).
    pub same_peak: bool,
    pub pass: bool,
}

/// (config, input extent) of a benchmark model.
pub fn bench_model(name: &str) -> Option<(ResNetConfig, [u32; 3])> {
    match name {
        "slice2d" => Some((ResNetConfig::resnet18(1, CLASSES, 64), [1, 512, 512])),
        "volume3d" => Some((ResNetConfig::resnet3d(1, CLASSES, 32), [128, 128, 128])),
        _ => None,
    }
}

/// The deterministic input the peer builds too: ((i·7919 mod 1013) / 506.5) − 1.
pub fn bench_input(len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 7919 % 1013) as f32 / 506.5) - 1.0)
        .collect()
}

fn job(e: impl std::fmt::Display) -> Failure {
    Failure::Job(e.to_string())
}

/// A model's maps timed on one backend, with the net and input kept for the parity check.
struct Timed<B: GradCamOps> {
    net: Net<B>,
    input: Vec<f32>,
    ms: Vec<f64>,
    layer: String,
}

fn timed<B: GradCamOps>(b: &B, name: &str, reps: usize) -> Result<Timed<B>, Failure> {
    let (cfg, dims) = bench_model(name).expect("checked");
    let mut net = Net::new(b, build(&cfg, 1, dims), 1).map_err(job)?;
    let layer = default_layer(&net.spec).ok_or_else(|| job("the model has no convolution"))?;
    let x = bench_input(net.input_len());
    let req = CamRequest {
        output: OUTPUT,
        method: Method::GradCam,
        upsample: Upsample::Interpolate,
        normalise: true,
    };
    let mut times = Vec::with_capacity(reps);
    for rep in 0..=reps {
        let start = Instant::now();
        // The maps come back to the host, so the device's work is finished when this returns.
        let cam = grad_cam(b, &mut net, &x, &layer, &req).map_err(job)?;
        let elapsed = start.elapsed().as_secs_f64() * 1e3;
        if cam.maps.len() != dims.iter().map(|&d| d as usize).product::<usize>() {
            return Err(job("map size differs from the input grid"));
        }
        if rep > 0 {
            times.push(elapsed);
        }
    }
    Ok(Timed {
        net,
        input: x,
        ms: times,
        layer: layer.name,
    })
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s.get(s.len() / 2).copied().unwrap_or(f64::NAN)
}

/// A device's maps at every block output (centred) and at the timed layer (interpolate) against the
/// CPU's, with the same weights (copied from the device's net) and input.
fn parity<G: GradCamOps>(gpu: &G, gnet: &mut Net<G>, x: &[f32]) -> Result<Vec<MapParity>, Failure> {
    let cpu = CpuBackend;
    let mut cnet = Net::new(&cpu, gnet.spec.clone(), 1).map_err(job)?;
    cnet.param = gpu
        .download(gpu.view(&gnet.param, 0..gnet.spec.params.len()))
        .map_err(job)?;
    cnet.state = gpu
        .download(gpu.view(&gnet.state, 0..gnet.spec.buffers.len()))
        .map_err(job)?;
    let mut out = Vec::new();
    let blocks = select_layers(&gnet.spec, &["blocks".to_string()]).map_err(job)?;
    let last = select_layers(&gnet.spec, &["last".to_string()]).map_err(job)?;
    for (layers, upsample) in [(blocks, Upsample::Centred), (last, Upsample::Interpolate)] {
        let req = CamRequest {
            output: OUTPUT,
            method: Method::GradCam,
            upsample,
            normalise: true,
        };
        let want = grad_cam_layers(&cpu, &mut cnet, x, &layers, &req).map_err(job)?;
        let got = grad_cam_layers(gpu, gnet, x, &layers, &req).map_err(job)?;
        for ((l, w), g) in layers.iter().zip(&want).zip(&got) {
            let max_abs_err = w
                .maps
                .iter()
                .zip(&g.maps)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, |m, d| if d.is_nan() { f32::INFINITY } else { m.max(d) });
            let same_peak = super::quality::argmax(&w.maps) == super::quality::argmax(&g.maps);
            out.push(MapParity {
                layer: l.name.clone(),
                upsample: upsample.name().into(),
                max_abs_err,
                same_peak,
                pass: max_abs_err <= MAP_ATOL,
            });
        }
    }
    Ok(out)
}

pub fn run(args: ExplainBenchArgs) -> Result<i32, Failure> {
    let models: Vec<&str> = match args.model.as_str() {
        "all" => vec!["slice2d", "volume3d"],
        m if bench_model(m).is_some() => vec![m],
        other => {
            return Err(Failure::Usage(format!(
                "--model {other:?}: use slice2d, volume3d or all"
            )))
        }
    };
    if args.reps == 0 {
        return Err(Failure::Usage("--reps must be at least 1".into()));
    }
    if let Some(t) = args.threads {
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(t.max(1))
            .build_global();
    }
    let device = resolve_device(&args.device)?;
    let gpu = match device {
        Device::Cuda { auto } => open_gpu(auto, 0, 0, 1, |ok| ok)?,
        Device::Cpu => None,
    };
    let mut rows = Vec::new();
    for name in models {
        let row = match &gpu {
            None => {
                let t = timed(&CpuBackend, name, args.reps)?;
                ExplainBenchRow {
                    model: name.into(),
                    device: "cpu".into(),
                    device_name: format!("host CPU, {} threads", rayon::current_num_threads()),
                    layer: t.layer,
                    ms_per_map_median: median(&t.ms),
                    ms_per_map: t.ms,
                    parity: Vec::new(),
                }
            }
            Some(g) => {
                let mut t = timed(g, name, args.reps)?;
                ExplainBenchRow {
                    model: name.into(),
                    device: "cuda".into(),
                    device_name: g.device_name().to_string(),
                    layer: t.layer,
                    ms_per_map_median: median(&t.ms),
                    parity: parity(g, &mut t.net, &t.input)?,
                    ms_per_map: t.ms,
                }
            }
        };
        if !args.json {
            println!(
                "bench explain {} on {} ({}): layer {} median {:.1} ms per map over {} maps",
                row.model,
                row.device,
                row.device_name,
                row.layer,
                row.ms_per_map_median,
                row.ms_per_map.len()
            );
            for p in &row.parity {
                println!(
                    "  {} {:<16} {:<11} max abs {:.2e} (atol {MAP_ATOL:.0e}) same peak {}",
                    if p.pass { "ok  " } else { "FAIL" },
                    p.layer,
                    p.upsample,
                    p.max_abs_err,
                    p.same_peak
                );
            }
        }
        rows.push(row);
    }
    let pass = rows.iter().all(|r| r.parity.iter().all(|p| p.pass));
    if args.json {
        let v = serde_json::json!({ "pass": pass, "models": rows });
        println!("{}", serde_json::to_string_pretty(&v).expect("serialisable"));
    }
    Ok(if pass { EXIT_OK } else { EXIT_FAILURES })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parity_of_the_cpu_with_itself_is_exact_at_every_block() {
        // The comparison path of `bench explain --device cuda`, run with the CPU on both sides on a
        // small 2D ResNet: every block output and the timed layer, zero error, same peaks.
        let cfg = ResNetConfig {
            spatial_dims: 2,
            in_channels: 1,
            num_outputs: CLASSES,
            widths: vec![4, 8],
            blocks: vec![1, 1],
            stem_kernel: 3,
            stem_stride: 2,
            stem_pool: true,
            tabular: 0,
        };
        let b = CpuBackend;
        let mut net = Net::new(&b, build(&cfg, 1, [1, 32, 32]), 7).unwrap();
        let x = bench_input(net.input_len());
        let Ok(rows) = parity(&b, &mut net, &x) else {
            panic!("parity failed")
        };
        let names: Vec<&str> = rows.iter().map(|r| r.layer.as_str()).collect();
        assert_eq!(names, ["relu", "layer1.0", "layer2.0", "layer2.0"], "{names:?}");
        assert_eq!(rows[3].upsample, "interpolate");
        for r in &rows {
            assert!(r.pass && r.same_peak && r.max_abs_err == 0.0, "{r:?}");
        }
    }
}
