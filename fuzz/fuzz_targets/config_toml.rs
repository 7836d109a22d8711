//! Config file text → `Config::from_toml` (what `Config::load` runs) → the typed, validated
//! `train` settings.
#![no_main]
use libfuzzer_sys::fuzz_target;
use medtrain::config::Config;
use medtrain::settings::Settings;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = Config::from_toml(text, Path::new("fuzz.toml")) {
        if let Ok(s) = Settings::from_config(&config) {
            let _ = s.num_outputs();
        }
    }
});
