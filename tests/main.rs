//! The integration test crate: one binary, one module per area.

mod common;
mod pack;
mod phantom;
