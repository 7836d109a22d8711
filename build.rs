//! Compiles the CUDA kernel sources (kernels/*.cu) as host C++ through the dialect in kernels/mt.cuh,
//! into a static library the crate links: the kernels' index arithmetic is tested against the CPU
//! backend without a GPU (src/backend/kernels/). The GPU build of the same sources happens at run
//! time through NVRTC.

use std::fs;
use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=kernels");
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let kernels = manifest.join("kernels");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));

    let mut sources: Vec<PathBuf> = fs::read_dir(&kernels)
        .unwrap_or_else(|e| panic!("read {}: {e}", kernels.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|ext| ext == "cu"))
        .collect();
    sources.sort();
    let includes: String = sources
        .iter()
        .map(|p| format!("#include \"{}\"\n", include_path(p)))
        .collect();
    fs::write(out.join("mt_kernels.inc"), includes).expect("write mt_kernels.inc to OUT_DIR");

    cc::Build::new()
        .cpp(true)
        .file(kernels.join("host/emulate.cpp"))
        .include(&kernels)
        .include(&out)
        .flag("-std=c++14")
        // IEEE arithmetic operation for operation, like Rust and like NVRTC with --fmad=false.
        .flag("-ffp-contract=off")
        .flag_if_supported("-fno-fast-math")
        .cpp_link_stdlib(None)
        .compile("mt_kernels_host");
}

fn include_path(p: &Path) -> String {
    p.display().to_string().replace('\\', "\\\\").replace('"', "\\\"")
}
