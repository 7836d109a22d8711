//! Milliseconds per Grad-CAM map on the CPU backend: inference forward, backward from the output down
//! to the last stage's output only, then pooling, weighted sum, up-sampling and normalisation.
//! benches/explain.sh runs it beside the PyTorch hook-based peer (benches/explain_torch.py) on the
//! same models and inputs.
//!
//!     cargo bench --bench explain -- <slice2d|volume3d> <reps>

use std::time::Instant;

use medtrain::backend::cpu::CpuBackend;
use medtrain::explain::layers::{default_layer, grad_cam, CamRequest};
use medtrain::explain::{Method, Upsample};
use medtrain::nn::{build, Net, ResNetConfig};

const CLASSES: u32 = 2;

/// (config, input extent): resnet18 on one 512×512 slice; the 3D ResNet on one 128³ volume.
fn model(name: &str) -> (ResNetConfig, [u32; 3]) {
    match name {
        "slice2d" => (ResNetConfig::resnet18(1, CLASSES, 64), [1, 512, 512]),
        "volume3d" => (ResNetConfig::resnet3d(1, CLASSES, 32), [128, 128, 128]),
        other => {
            eprintln!("unknown model {other}; use slice2d or volume3d");
            std::process::exit(2)
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let name = args.first().map_or("slice2d", String::as_str);
    let reps: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(3);
    let (cfg, dims) = model(name);
    let b = CpuBackend;
    let mut net = Net::new(&b, build(&cfg, 1, dims), 1).expect("allocate the model");
    let layer = default_layer(&net.spec).expect("a convolutional layer");
    let x: Vec<f32> = (0..net.input_len())
        .map(|i| ((i * 7919 % 1013) as f32 / 506.5) - 1.0)
        .collect();
    let req = CamRequest {
        output: 1,
        method: Method::GradCam,
        // The peer up-samples with F.interpolate: the same computation on both sides.
        upsample: Upsample::Interpolate,
        normalise: true,
    };
    let mut times = Vec::with_capacity(reps);
    for rep in 0..=reps {
        let start = Instant::now();
        let cam = grad_cam(&b, &mut net, &x, &layer, &req).expect("Grad-CAM");
        let elapsed = start.elapsed().as_secs_f64();
        assert_eq!(
            cam.maps.len(),
            dims.iter().map(|&d| d as usize).product::<usize>()
        );
        if rep > 0 {
            times.push(elapsed);
        }
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!(
        "medtrain cpu {name}: layer {} {:?}→{:?}, {} threads, median {:.1} ms per map over {} timed maps",
        layer.name,
        layer.dims,
        dims,
        rayon::current_num_threads(),
        median * 1e3,
        times.len()
    );
}
