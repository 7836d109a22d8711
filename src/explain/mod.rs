//! `medtrain explain`: where the model looked. Grad-CAM (and Grad-CAM++) at any convolution,
//! batch-norm or ReLU node, mapped back into pack geometry, drawn as overlays a reader can check,
//! and scored against ground-truth lesions (pointing game, energy inside, deletion/insertion AUC,
//! randomisation sanity check).

pub mod bench;
pub mod cam;
pub mod cli;
pub mod colormap;
pub mod cuda;
pub mod emulate;
pub mod layers;
pub mod overlay;
pub mod quality;
pub mod truth;

pub use crate::data::mapback::{self, map_to_pack, SeriesGeometry};
pub use cam::{CamShape, GradCamOps, Method, Upsample};
pub use layers::{cam_layers, grad_cam, grad_cam_layers, select_layers, CamBatch, CamLayer, CamRequest};
