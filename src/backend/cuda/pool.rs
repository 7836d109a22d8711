//! Max and average pooling on the GPU: the `kernels/pool.cu` kernels of the shared launch layer
//! (`super::kernels`), which the host emulation checks against the CPU reference without a GPU.
//! cuDNN's pooling is not used: its tie rule for max is unspecified, and its backward reads x and y,
//! which the backend's avg_pool_backward does not receive.

use std::sync::Arc;

use cudarc::driver::{CudaStream, CudaView, CudaViewMut};

use super::kernels::{self, Kernels};
use crate::backend::params::PoolParams;
use crate::backend::Result;

pub fn max_forward(
    k: &Kernels,
    s: &Arc<CudaStream>,
    p: &PoolParams,
    x: CudaView<'_, f32>,
    y: CudaViewMut<'_, f32>,
) -> Result<()> {
    kernels::max_pool_forward(k, s, p, x, y)
}

pub fn max_backward(
    k: &Kernels,
    s: &Arc<CudaStream>,
    p: &PoolParams,
    x: CudaView<'_, f32>,
    dy: CudaView<'_, f32>,
    dx: CudaViewMut<'_, f32>,
) -> Result<()> {
    kernels::max_pool_backward(k, s, p, x, dy, dx)
}

pub fn avg_forward(
    k: &Kernels,
    s: &Arc<CudaStream>,
    p: &PoolParams,
    x: CudaView<'_, f32>,
    y: CudaViewMut<'_, f32>,
) -> Result<()> {
    kernels::avg_pool_forward(k, s, p, x, y)
}

pub fn avg_backward(
    k: &Kernels,
    s: &Arc<CudaStream>,
    p: &PoolParams,
    dy: CudaView<'_, f32>,
    dx: CudaViewMut<'_, f32>,
) -> Result<()> {
    kernels::avg_pool_backward(k, s, p, dy, dx)
}
