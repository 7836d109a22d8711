//! Launch layer of the elementwise, reduction, loss and optimizer kernels (kernels/*.cu, compiled by
//! NVRTC at start-up). Each function mirrors its `Backend` method with `&self` replaced by the kernel
//! set and the stream.
//!
//! Placeholder until the kernel sources land: every launch reports the op as unsupported, so the CUDA
//! backend runs the layers it owns (convolution, batch norm, pooling, linear) and fails cleanly, with
//! the op named, on the rest.

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaStream, CudaView, CudaViewMut};

use crate::backend::{
    AdamWHyper, BackendError, BceParams, CrossEntropyParams, DropoutParams, RegressionLoss, Result, SgdHyper,
};

pub struct Kernels {
    _ctx: Arc<CudaContext>,
}

impl Kernels {
    pub fn new(ctx: &Arc<CudaContext>) -> Result<Kernels> {
        Ok(Kernels { _ctx: ctx.clone() })
    }
}

fn missing<T>(op: &str) -> Result<T> {
    Err(BackendError::Unsupported {
        backend: "cuda",
        what: format!("{op} (its kernel is not in this build)"),
    })
}

pub fn fill(_k: &Kernels, _s: &Arc<CudaStream>, _y: CudaViewMut<'_, f32>, _value: f32) -> Result<()> {
    missing("fill")
}
pub fn scale(_k: &Kernels, _s: &Arc<CudaStream>, _alpha: f32, _y: CudaViewMut<'_, f32>) -> Result<()> {
    missing("scale")
}
pub fn add(
    _k: &Kernels,
    _s: &Arc<CudaStream>,
    _a: CudaView<'_, f32>,
    _b: CudaView<'_, f32>,
    _y: CudaViewMut<'_, f32>,
) -> Result<()> {
    missing("add")
}
pub fn accumulate(
    _k: &Kernels,
    _s: &Arc<CudaStream>,
    _x: CudaView<'_, f32>,
    _y: CudaViewMut<'_, f32>,
) -> Result<()> {
    missing("accumulate")
}
pub fn leaky_relu_forward(
    _k: &Kernels,
    _s: &Arc<CudaStream>,
    _slope: f32,
    _x: CudaView<'_, f32>,
    _y: CudaViewMut<'_, f32>,
) -> Result<()> {
    missing("leaky_relu_forward")
}
pub fn leaky_relu_backward(
    _k: &Kernels,
    _s: &Arc<CudaStream>,
    _slope: f32,
    _x: CudaView<'_, f32>,
    _dy: CudaView<'_, f32>,
    _dx: CudaViewMut<'_, f32>,
) -> Result<()> {
    missing("leaky_relu_backward")
}
pub fn dropout_forward(
    _k: &Kernels,
    _s: &Arc<CudaStream>,
    _p: &DropoutParams,
    _x: CudaView<'_, f32>,
    _y: CudaViewMut<'_, f32>,
) -> Result<()> {
    missing("dropout_forward")
}
pub fn dropout_backward(
    _k: &Kernels,
    _s: &Arc<CudaStream>,
    _p: &DropoutParams,
    _dy: CudaView<'_, f32>,
    _dx: CudaViewMut<'_, f32>,
) -> Result<()> {
    missing("dropout_backward")
}
#[allow(clippy::too_many_arguments)]
pub fn concat_channels_forward(
    _k: &Kernels,
    _s: &Arc<CudaStream>,
    _n: usize,
    _spatial: usize,
    _a: CudaView<'_, f32>,
    _ca: usize,
    _b: CudaView<'_, f32>,
    _cb: usize,
    _y: CudaViewMut<'_, f32>,
) -> Result<()> {
    missing("concat_channels_forward")
}
#[allow(clippy::too_many_arguments)]
pub fn concat_channels_backward(
    _k: &Kernels,
    _s: &Arc<CudaStream>,
    _n: usize,
    _spatial: usize,
    _dy: CudaView<'_, f32>,
    _ca: usize,
    _cb: usize,
    _da: CudaViewMut<'_, f32>,
    _db: CudaViewMut<'_, f32>,
) -> Result<()> {
    missing("concat_channels_backward")
}
pub fn global_avg_pool_forward(
    _k: &Kernels,
    _s: &Arc<CudaStream>,
    _spatial: usize,
    _x: CudaView<'_, f32>,
    _y: CudaViewMut<'_, f32>,
) -> Result<()> {
    missing("global_avg_pool_forward")
}
pub fn global_avg_pool_backward(
    _k: &Kernels,
    _s: &Arc<CudaStream>,
    _spatial: usize,
    _dy: CudaView<'_, f32>,
    _dx: CudaViewMut<'_, f32>,
) -> Result<()> {
    missing("global_avg_pool_backward")
}
pub fn cross_entropy(
    _k: &Kernels,
    _s: &Arc<CudaStream>,
    _p: &CrossEntropyParams,
    _logits: CudaView<'_, f32>,
    _targets: CudaView<'_, f32>,
    _class_weights: Option<CudaView<'_, f32>>,
    _dlogits: CudaViewMut<'_, f32>,
) -> Result<f32> {
    missing("cross_entropy")
}
#[allow(clippy::too_many_arguments)]
pub fn bce_with_logits(
    _k: &Kernels,
    _s: &Arc<CudaStream>,
    _p: &BceParams,
    _logits: CudaView<'_, f32>,
    _targets: CudaView<'_, f32>,
    _mask: Option<CudaView<'_, f32>>,
    _pos_weight: Option<CudaView<'_, f32>>,
    _dlogits: CudaViewMut<'_, f32>,
) -> Result<f32> {
    missing("bce_with_logits")
}
pub fn regression_loss(
    _k: &Kernels,
    _s: &Arc<CudaStream>,
    _kind: RegressionLoss,
    _pred: CudaView<'_, f32>,
    _target: CudaView<'_, f32>,
    _dpred: CudaViewMut<'_, f32>,
) -> Result<f32> {
    missing("regression_loss")
}
pub fn cox_loss(
    _k: &Kernels,
    _s: &Arc<CudaStream>,
    _risk: CudaView<'_, f32>,
    _time: CudaView<'_, f32>,
    _event: CudaView<'_, f32>,
    _drisk: CudaViewMut<'_, f32>,
) -> Result<f32> {
    missing("cox_loss")
}
pub fn sgd_step(
    _k: &Kernels,
    _s: &Arc<CudaStream>,
    _h: &SgdHyper,
    _param: CudaViewMut<'_, f32>,
    _grad: CudaView<'_, f32>,
    _momentum: CudaViewMut<'_, f32>,
) -> Result<()> {
    missing("sgd_step")
}
pub fn adamw_step(
    _k: &Kernels,
    _s: &Arc<CudaStream>,
    _h: &AdamWHyper,
    _param: CudaViewMut<'_, f32>,
    _grad: CudaView<'_, f32>,
    _m: CudaViewMut<'_, f32>,
    _v: CudaViewMut<'_, f32>,
) -> Result<()> {
    missing("adamw_step")
}
pub fn sum_squares(_k: &Kernels, _s: &Arc<CudaStream>, _x: CudaView<'_, f32>) -> Result<f64> {
    missing("sum_squares")
}
