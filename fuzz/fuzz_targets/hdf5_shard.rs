//! HDF5 shard bytes → `ShardReader::open` (attributes, series and slice tables, pixel bounds) and a
//! read of every volume, from a real file as `train` and `catalog build` open shards.
#![no_main]
use libfuzzer_sys::fuzz_target;
use medtrain::pack::reader::ShardReader;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile_dir();
    let path = dir.join("shard-000000.h5");
    if std::fs::write(&path, data).is_err() {
        return;
    }
    if let Ok(reader) = ShardReader::open(&path) {
        for i in 0..reader.series.len() {
            let _ = reader.pixel_bytes(i);
            let _ = reader.slices_of(i).len();
        }
    }
});

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("medtrain-fuzz-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    dir
}
