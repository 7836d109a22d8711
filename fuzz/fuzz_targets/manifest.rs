//! Manifest bytes and its checksum file → `Manifest::load`, as `train` and `stage` read the experiment
//! plan. The input is `[n][n bytes of checksum file][manifest bytes]`: the checksum gate runs on
//! whatever arrives, and the HDF5 library only sees bytes whose BLAKE3 the checksum file names.
#![no_main]
use libfuzzer_sys::fuzz_target;
use medtrain::catalog::split::Manifest;

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("medtrain-fuzz-manifest-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("manifest.h5");
    let n = data.first().copied().unwrap_or(0) as usize;
    let (sidecar, bytes) = data.get(1..).unwrap_or_default().split_at(n.min(data.len().saturating_sub(1)));
    if std::fs::write(&path, bytes).is_ok() && std::fs::write(dir.join("manifest.h5.blake3"), sidecar).is_ok() {
        if let Ok(m) = Manifest::load(&path) {
            for split in &m.splits {
                let _ = split.rows().count();
            }
        }
    }
});
