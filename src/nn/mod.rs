//! Layers, models and initialisation on top of a `Backend`: a model is a graph of backend ops over one
//! flat parameter buffer and one flat gradient buffer with named (torchvision) views.

pub mod graph;
pub mod init;
pub mod net;
pub mod resnet;
pub mod table;
pub mod unet;

pub use net::Net;
pub use resnet::{build, build_model, ModelConfig, ModelSpec, ResNetConfig};
pub use table::{NamedTable, TableEntry};
pub use unet::{build_unet, UNetConfig};
