//! Batch normalisation on cuDNN (CUDNN_BATCHNORM_SPATIAL over (N, C, S) viewed as (N, C, S, 1)).
//! cuDNN's conventions are the CPU reference's: saved mean and inverse standard deviation, running
//! variance updated with the unbiased batch variance, `exponentialAverageFactor` = PyTorch's momentum.

use std::ffi::c_void;

use cudarc::cudnn::sys;

use super::cudnn::{as_c, check, Handle, Tensor};
use crate::backend::params::BatchNormParams;
use crate::backend::Result;

const MODE: sys::cudnnBatchNormMode_t = sys::cudnnBatchNormMode_t::CUDNN_BATCHNORM_SPATIAL;

/// The data descriptor (N, C, S, 1) and the per-channel descriptor (1, C, 1, 1).
pub struct BnDescs {
    pub x: Tensor,
    pub per_channel: Tensor,
}

impl BnDescs {
    pub fn new(p: &BatchNormParams) -> Result<BnDescs> {
        let (n, c, s) = (
            as_c(p.n, "batch")?,
            as_c(p.c, "channels")?,
            as_c(p.spatial, "spatial")?,
        );
        Ok(BnDescs {
            x: Tensor::new(&[n, c, s, 1])?,
            per_channel: Tensor::new(&[1, c, 1, 1])?,
        })
    }
}

pub struct TrainPtrs {
    pub x: *const c_void,
    pub gamma: *const c_void,
    pub beta: *const c_void,
    pub y: *mut c_void,
    pub saved_mean: *mut c_void,
    pub saved_invstd: *mut c_void,
    pub running_mean: *mut c_void,
    pub running_var: *mut c_void,
}

/// # Safety
/// Pointers are live device buffers of the lengths `p` implies, on the handle's stream.
pub unsafe fn forward_train(h: &Handle, p: &BatchNormParams, d: &BnDescs, ptr: &TrainPtrs) -> Result<()> {
    let (one, zero) = (1.0f32, 0.0f32);
    check(
        "cudnnBatchNormalizationForwardTraining",
        sys::cudnnBatchNormalizationForwardTraining(
            h.raw,
            MODE,
            &one as *const f32 as *const c_void,
            &zero as *const f32 as *const c_void,
            d.x.0,
            ptr.x,
            d.x.0,
            ptr.y,
            d.per_channel.0,
            ptr.gamma,
            ptr.beta,
            p.momentum as f64,
            ptr.running_mean,
            ptr.running_var,
            p.eps as f64,
            ptr.saved_mean,
            ptr.saved_invstd,
        ),
    )
}

pub struct InferPtrs {
    pub x: *const c_void,
    pub gamma: *const c_void,
    pub beta: *const c_void,
    pub running_mean: *const c_void,
    pub running_var: *const c_void,
    pub y: *mut c_void,
}

/// # Safety
/// As `forward_train`.
pub unsafe fn forward_infer(h: &Handle, p: &BatchNormParams, d: &BnDescs, ptr: &InferPtrs) -> Result<()> {
    let (one, zero) = (1.0f32, 0.0f32);
    check(
        "cudnnBatchNormalizationForwardInference",
        sys::cudnnBatchNormalizationForwardInference(
            h.raw,
            MODE,
            &one as *const f32 as *const c_void,
            &zero as *const f32 as *const c_void,
            d.x.0,
            ptr.x,
            d.x.0,
            ptr.y,
            d.per_channel.0,
            ptr.gamma,
            ptr.beta,
            ptr.running_mean,
            ptr.running_var,
            p.eps as f64,
        ),
    )
}

pub struct BackwardPtrs {
    pub x: *const c_void,
    pub gamma: *const c_void,
    pub saved_mean: *const c_void,
    pub saved_invstd: *const c_void,
    pub dy: *const c_void,
    pub dx: *mut c_void,
    pub dgamma: *mut c_void,
    pub dbeta: *mut c_void,
}

/// dx written; dγ and dβ accumulated (betaParamDiff = 1).
///
/// # Safety
/// As `forward_train`.
pub unsafe fn backward(h: &Handle, p: &BatchNormParams, d: &BnDescs, ptr: &BackwardPtrs) -> Result<()> {
    let (one, zero) = (1.0f32, 0.0f32);
    let one_p = &one as *const f32 as *const c_void;
    check(
        "cudnnBatchNormalizationBackward",
        sys::cudnnBatchNormalizationBackward(
            h.raw,
            MODE,
            one_p,
            &zero as *const f32 as *const c_void,
            one_p,
            one_p,
            d.x.0,
            ptr.x,
            d.x.0,
            ptr.dy,
            d.x.0,
            ptr.dx,
            d.per_channel.0,
            ptr.gamma,
            ptr.dgamma,
            ptr.dbeta,
            p.eps as f64,
            ptr.saved_mean,
            ptr.saved_invstd,
        ),
    )
}
