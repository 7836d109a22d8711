//! Label CSV text → the CSV parser and header normalisation of `catalog labels import`.
#![no_main]
use libfuzzer_sys::fuzz_target;
use medtrain::catalog::labels::{csv, label_name, normalise};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(table) = csv::parse(text) {
        for h in &table.header {
            let _ = label_name(h);
            let _ = normalise(h);
        }
    }
});
