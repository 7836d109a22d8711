//! Max and average pooling as our own NVRTC kernels (`pool.cu`; why not cuDNN is said there).

use std::sync::Arc;

use cudarc::driver::{
    CudaContext, CudaFunction, CudaStream, CudaView, CudaViewMut, DeviceRepr, LaunchConfig, PushKernelArg,
};
use cudarc::nvrtc::CompileOptions;

use crate::backend::params::PoolParams;
use crate::backend::{check_len, BackendError, Result};

const SOURCE: &str = include_str!("pool.cu");

// SAFETY: PoolParams is #[repr(C)] of 14 u32 fields, mirrored field for field by `struct PoolParams`
// in pool.cu, so passing it by value as a kernel argument is a plain byte copy.
unsafe impl DeviceRepr for PoolParams {}

pub struct PoolKernels {
    max_fwd: CudaFunction,
    max_bwd: CudaFunction,
    avg_fwd: CudaFunction,
    avg_bwd: CudaFunction,
}

fn driver_err(op: &'static str) -> impl Fn(cudarc::driver::DriverError) -> BackendError {
    move |e| BackendError::Device {
        op,
        backend: "CUDA driver",
        reason: format!("{e:?}"),
    }
}

/// Options shared by our kernels: no FMA contraction, so sums round as the CPU's do.
pub fn compile_options() -> CompileOptions {
    CompileOptions {
        fmad: Some(false),
        prec_div: Some(true),
        prec_sqrt: Some(true),
        ftz: Some(false),
        name: Some("medtrain_pool.cu".into()),
        ..Default::default()
    }
}

impl PoolKernels {
    pub fn new(ctx: &Arc<CudaContext>) -> Result<PoolKernels> {
        let ptx = cudarc::nvrtc::compile_ptx_with_opts(SOURCE, compile_options()).map_err(|e| {
            BackendError::Device {
                op: "compile pool.cu",
                backend: "NVRTC",
                reason: format!("{e:?}"),
            }
        })?;
        let module = ctx.load_module(ptx).map_err(driver_err("load pool.cu"))?;
        let f = |name: &str| module.load_function(name).map_err(driver_err("load pool kernel"));
        Ok(PoolKernels {
            max_fwd: f("max_pool_forward")?,
            max_bwd: f("max_pool_backward")?,
            avg_fwd: f("avg_pool_forward")?,
            avg_bwd: f("avg_pool_backward")?,
        })
    }
}

/// A grid-stride launch over `n` elements.
fn config(n: usize) -> LaunchConfig {
    const THREADS: u32 = 256;
    let blocks = n.div_ceil(THREADS as usize).clamp(1, 65_535 * 16) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

fn check(p: &PoolParams, x: usize, y: usize) -> Result<()> {
    if p.kernel.contains(&0)
        || p.stride.contains(&0)
        || (0..3).any(|a| p.in_dims[a] + 2 * p.pad[a] < p.kernel[a])
    {
        return Err(BackendError::Params {
            op: "pool",
            reason: format!(
                "window {:?} stride {:?} does not fit input {:?}",
                p.kernel, p.stride, p.in_dims
            ),
        });
    }
    check_len("pool", "input", p.input_len(), x)?;
    check_len("pool", "output", p.output_len(), y)
}

pub fn max_forward(
    k: &PoolKernels,
    s: &Arc<CudaStream>,
    p: &PoolParams,
    x: CudaView<'_, f32>,
    mut y: CudaViewMut<'_, f32>,
) -> Result<()> {
    check(p, x.len(), y.len())?;
    // SAFETY: the kernel reads input_len floats of x and writes output_len floats of y (checked above).
    unsafe {
        s.launch_builder(&k.max_fwd)
            .arg(p)
            .arg(&x)
            .arg(&mut y)
            .launch(config(p.output_len()))
    }
    .map(|_| ())
    .map_err(driver_err("max_pool_forward"))
}

pub fn max_backward(
    k: &PoolKernels,
    s: &Arc<CudaStream>,
    p: &PoolParams,
    x: CudaView<'_, f32>,
    dy: CudaView<'_, f32>,
    mut dx: CudaViewMut<'_, f32>,
) -> Result<()> {
    check(p, x.len(), dy.len())?;
    check_len("max pool backward", "dx", p.input_len(), dx.len())?;
    // SAFETY: reads input_len floats of x, output_len of dy, writes input_len of dx (checked above).
    unsafe {
        s.launch_builder(&k.max_bwd)
            .arg(p)
            .arg(&x)
            .arg(&dy)
            .arg(&mut dx)
            .launch(config(p.input_len()))
    }
    .map(|_| ())
    .map_err(driver_err("max_pool_backward"))
}

pub fn avg_forward(
    k: &PoolKernels,
    s: &Arc<CudaStream>,
    p: &PoolParams,
    x: CudaView<'_, f32>,
    mut y: CudaViewMut<'_, f32>,
) -> Result<()> {
    check(p, x.len(), y.len())?;
    // SAFETY: as max_forward.
    unsafe {
        s.launch_builder(&k.avg_fwd)
            .arg(p)
            .arg(&x)
            .arg(&mut y)
            .launch(config(p.output_len()))
    }
    .map(|_| ())
    .map_err(driver_err("avg_pool_forward"))
}

pub fn avg_backward(
    k: &PoolKernels,
    s: &Arc<CudaStream>,
    p: &PoolParams,
    dy: CudaView<'_, f32>,
    mut dx: CudaViewMut<'_, f32>,
) -> Result<()> {
    check(p, dx.len(), dy.len())?;
    // SAFETY: reads output_len floats of dy, writes input_len of dx (checked above).
    unsafe {
        s.launch_builder(&k.avg_bwd)
            .arg(p)
            .arg(&dy)
            .arg(&mut dx)
            .launch(config(p.input_len()))
    }
    .map(|_| ())
    .map_err(driver_err("avg_pool_backward"))
}
