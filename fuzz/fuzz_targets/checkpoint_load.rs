//! safetensors bytes → `checkpoint::load_weights` into a small ResNet on the CPU backend, as
//! `[model] init` loads ours or torchvision's weights.
#![no_main]
use libfuzzer_sys::fuzz_target;
use medtrain::backend::cpu::CpuBackend;
use medtrain::checkpoint::{load_weights, LoadOptions};
use medtrain::nn::{build, Net, ResNetConfig};

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("medtrain-fuzz-ckpt-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("model.safetensors");
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let b = CpuBackend;
    let mut cfg = ResNetConfig::resnet18(1, 2, 2);
    cfg.blocks = vec![1, 1, 1, 1];
    let Ok(mut net) = Net::new(&b, build(&cfg, 1, [1, 16, 16]), 3) else {
        return;
    };
    let opts = LoadOptions {
        skip_mismatched: vec!["fc.".into()],
    };
    let _ = load_weights(&path, &b, &mut net, &opts);
});
