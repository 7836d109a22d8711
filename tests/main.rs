//! The integration test crate: one binary, one module per area.

mod common;
mod decode_conformance;
mod pack;
mod phantom;
