//! Catalog query text → lexer and parser (the error rendering included), as `catalog query` and
//! `catalog split` read a filter.
#![no_main]
use libfuzzer_sys::fuzz_target;
use medtrain::catalog::query::{lexer, parser};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = lexer::lex(text) {
        let _ = e.render(text);
    }
    if let Err(e) = parser::parse(text) {
        let _ = e.render(text);
    }
});
