//! `index.json` bytes → `PackIndex::load`, from a real pack directory.
#![no_main]
use libfuzzer_sys::fuzz_target;
use medtrain::pack::index::PackIndex;

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("medtrain-fuzz-index-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    if std::fs::write(dir.join("index.json"), data).is_ok() {
        if let Ok(Some(index)) = PackIndex::load(&dir) {
            let _ = index.contains_source("0");
        }
    }
});
