//! The integration test crate: one binary, one module per area.

mod backend_gradcheck;
mod backend_reference;
mod backend_resnet;
mod backend_training;
mod common;
mod decode_conformance;
mod pack;
mod phantom;
