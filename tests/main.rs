//! The integration test crate: one binary, one module per area.

mod backend_gradcheck;
mod common;
mod pack;
