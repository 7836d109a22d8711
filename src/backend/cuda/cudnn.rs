//! The cuDNN handle and owned descriptors: thin RAII wrappers over the raw bindings, since the layers
//! here (batch norm, convolution algorithm queries) sit where cudarc's safe API stops.

use std::ffi::c_int;
use std::sync::Arc;

use cudarc::cudnn::sys;
use cudarc::driver::CudaStream;

use crate::backend::{BackendError, Result};

/// Maps a cuDNN status to our error, naming the call.
pub fn check(op: &'static str, status: sys::cudnnStatus_t) -> Result<()> {
    status.result().map_err(|e| BackendError::Device {
        op,
        backend: "cuDNN",
        reason: format!("{e:?}"),
    })
}

/// One cuDNN handle bound to the backend's stream.
pub struct Handle {
    pub raw: sys::cudnnHandle_t,
}

// SAFETY: the handle is used only through `&CudaBackend`, whose calls all enqueue on the one stream the
// handle is bound to; cuDNN handles may be used from any thread as long as calls do not overlap, and
// the backend serialises them (every call holds the workspace lock or touches no shared state).
unsafe impl Send for Handle {}
unsafe impl Sync for Handle {}

impl Handle {
    pub fn new(stream: &Arc<CudaStream>) -> Result<Handle> {
        let raw = cudarc::cudnn::result::create_handle().map_err(|e| BackendError::Device {
            op: "cudnnCreate",
            backend: "cuDNN",
            reason: format!("{e:?}"),
        })?;
        // SAFETY: `raw` was just created; the stream outlives the handle (the backend owns both and
        // drops the handle first).
        unsafe {
            check(
                "cudnnSetStream",
                sys::cudnnSetStream(raw, stream.cu_stream() as _),
            )?
        };
        Ok(Handle { raw })
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: created in `new`, destroyed once.
        unsafe { sys::cudnnDestroy(self.raw) };
    }
}

/// Packed (row-major) strides of `dims`.
pub fn packed_strides(dims: &[c_int]) -> Vec<c_int> {
    let mut strides = vec![1; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * dims[i + 1];
    }
    strides
}

pub fn as_c(v: u32, what: &'static str) -> Result<c_int> {
    c_int::try_from(v).map_err(|_| BackendError::Params {
        op: "cudnn",
        reason: format!("{what} {v} does not fit a C int"),
    })
}

/// A packed f32 tensor descriptor of 4 or 5 dimensions (N, C, [D,] H, W).
pub struct Tensor(pub sys::cudnnTensorDescriptor_t);

impl Tensor {
    pub fn new(dims: &[c_int]) -> Result<Tensor> {
        let mut raw = std::ptr::null_mut();
        // SAFETY: writes one descriptor handle into `raw`.
        unsafe {
            check(
                "cudnnCreateTensorDescriptor",
                sys::cudnnCreateTensorDescriptor(&mut raw),
            )?
        };
        let t = Tensor(raw);
        let strides = packed_strides(dims);
        // SAFETY: `dims` and `strides` hold `dims.len()` ints each and outlive the call.
        unsafe {
            check(
                "cudnnSetTensorNdDescriptor",
                sys::cudnnSetTensorNdDescriptor(
                    t.0,
                    sys::cudnnDataType_t::CUDNN_DATA_FLOAT,
                    dims.len() as c_int,
                    dims.as_ptr(),
                    strides.as_ptr(),
                ),
            )?
        };
        Ok(t)
    }
}

impl Drop for Tensor {
    fn drop(&mut self) {
        // SAFETY: created in `new`, destroyed once.
        unsafe { sys::cudnnDestroyTensorDescriptor(self.0) };
    }
}

/// An f32 filter descriptor (C_out, C_in/groups, [kD,] kH, kW), NCHW layout (PyTorch's).
pub struct Filter(pub sys::cudnnFilterDescriptor_t);

impl Filter {
    pub fn new(dims: &[c_int]) -> Result<Filter> {
        let mut raw = std::ptr::null_mut();
        // SAFETY: writes one descriptor handle into `raw`.
        unsafe {
            check(
                "cudnnCreateFilterDescriptor",
                sys::cudnnCreateFilterDescriptor(&mut raw),
            )?
        };
        let f = Filter(raw);
        // SAFETY: `dims` holds `dims.len()` ints and outlives the call.
        unsafe {
            check(
                "cudnnSetFilterNdDescriptor",
                sys::cudnnSetFilterNdDescriptor(
                    f.0,
                    sys::cudnnDataType_t::CUDNN_DATA_FLOAT,
                    sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW,
                    dims.len() as c_int,
                    dims.as_ptr(),
                ),
            )?
        };
        Ok(f)
    }
}

impl Drop for Filter {
    fn drop(&mut self) {
        // SAFETY: created in `new`, destroyed once.
        unsafe { sys::cudnnDestroyFilterDescriptor(self.0) };
    }
}

/// A cross-correlation (PyTorch's "convolution") descriptor with f32 accumulation and FMA-only math:
/// CUDNN_DEFAULT_MATH lets cuDNN pick TF32 tensor-core kernels for f32 data on Ampere and newer, so the
/// FMA math type is what keeps TF32 off (PyTorch does the same with `allow_tf32 = False`).
pub struct Convolution(pub sys::cudnnConvolutionDescriptor_t);

impl Convolution {
    pub fn new(pad: &[c_int], stride: &[c_int], dilation: &[c_int], groups: c_int) -> Result<Convolution> {
        let mut raw = std::ptr::null_mut();
        // SAFETY: writes one descriptor handle into `raw`.
        unsafe {
            check(
                "cudnnCreateConvolutionDescriptor",
                sys::cudnnCreateConvolutionDescriptor(&mut raw),
            )?
        };
        let c = Convolution(raw);
        // SAFETY: the three arrays hold `pad.len()` ints each and outlive the call.
        unsafe {
            check(
                "cudnnSetConvolutionNdDescriptor",
                sys::cudnnSetConvolutionNdDescriptor(
                    c.0,
                    pad.len() as c_int,
                    pad.as_ptr(),
                    stride.as_ptr(),
                    dilation.as_ptr(),
                    sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
                    sys::cudnnDataType_t::CUDNN_DATA_FLOAT,
                ),
            )?;
            check(
                "cudnnSetConvolutionGroupCount",
                sys::cudnnSetConvolutionGroupCount(c.0, groups),
            )?;
            check(
                "cudnnSetConvolutionMathType",
                sys::cudnnSetConvolutionMathType(c.0, sys::cudnnMathType_t::CUDNN_FMA_MATH),
            )?;
        }
        Ok(c)
    }
}

impl Drop for Convolution {
    fn drop(&mut self) {
        // SAFETY: created in `new`, destroyed once.
        unsafe { sys::cudnnDestroyConvolutionDescriptor(self.0) };
    }
}

// SAFETY: descriptors are plain host-side parameter blocks; they are only read by cuDNN calls, which
// the backend issues one at a time under its plan-cache lock.
unsafe impl Send for Tensor {}
unsafe impl Sync for Tensor {}
unsafe impl Send for Filter {}
unsafe impl Sync for Filter {}
unsafe impl Send for Convolution {}
unsafe impl Sync for Convolution {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strides_are_row_major() {
        assert_eq!(packed_strides(&[2, 3, 4, 5]), vec![60, 20, 5, 1]);
        assert_eq!(
            packed_strides(&[8, 1, 96, 96, 96]),
            vec![884736, 884736, 9216, 96, 1]
        );
    }
}
