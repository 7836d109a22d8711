//! Manifest file bytes (HDF5) → `Manifest::load`, as `train` and `stage` read the experiment plan.
#![no_main]
use libfuzzer_sys::fuzz_target;
use medtrain::catalog::split::Manifest;

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("medtrain-fuzz-manifest-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("manifest.h5");
    if std::fs::write(&path, data).is_ok() {
        if let Ok(m) = Manifest::load(&path) {
            for split in &m.splits {
                let _ = split.rows().count();
            }
        }
    }
});
