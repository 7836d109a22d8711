//! DICOM file bytes → decoded pixels and modality LUT, as `pack` decodes an item: the structural
//! guard and parser (`open_bytes`, what `open_checked` runs on the file's bytes), pixel decode for
//! every transfer syntax, and the LUT.
#![no_main]
use libfuzzer_sys::fuzz_target;
use medtrain::dicom::{decode::decode_pixels, guard, modality::modality_lut, open::open_bytes};
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let _ = guard::check(data);
    if let Ok(obj) = open_bytes(Path::new("fuzz.dcm"), data) {
        if let Ok(decoded) = decode_pixels(&obj) {
            let _ = decoded.pixels.len();
        }
        let _ = modality_lut(&obj);
    }
});
