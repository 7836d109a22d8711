//! Launch layer of the custom kernels (`kernels/*.cu`): compiled by NVRTC for the device's exact SM
//! (`compile`), kept in the user's kernel cache and loaded once per device and process, then one typed
//! launch function per op whose signature mirrors the `Backend` trait method (`&self` → `k: &Kernels,
//! s: &Arc<CudaStream>`; views are cudarc views of f32). The host-side scalars and length checks are
//! shared with the host emulation (`backend::kernels`), which tests the same sources against the CPU
//! backend without a GPU.
//!
//! Scratch (loss partials, reduction partials, device scalars) lives in one f64 buffer owned by
//! `Kernels`, grown when a larger batch needs it and otherwise reused, so steady-state training steps
//! allocate nothing on the device.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, CudaView, CudaViewMut, DriverError, LaunchArgs,
    LaunchConfig, PushKernelArg,
};
use cudarc::nvrtc::Ptx;

use super::compile::{self, Target};

use crate::backend::kernels::{
    adamw_scalars, check_bce, check_cross_entropy, check_pool, check_regression, cross_entropy_status,
    dropout_mask_args, grid_blocks, regression_args, scratch, BLOCK_THREADS, REDUCE_THREADS, SOURCES,
};
use crate::backend::params::PoolParams;
use crate::backend::{
    check_len, AdamWHyper, BackendError, BceParams, CrossEntropyParams, Dims3, DropoutParams, RegressionLoss,
    Result, SgdHyper,
};

const BACKEND: &str = "cuda";

fn device_error(op: &'static str, reason: impl std::fmt::Display) -> BackendError {
    BackendError::Device {
        op,
        backend: BACKEND,
        reason: reason.to_string(),
    }
}

fn driver(op: &'static str) -> impl FnOnce(DriverError) -> BackendError {
    move |e| device_error(op, e)
}

/// The compiled entry points of every kernel source, for one device.
struct KernelSet {
    functions: HashMap<&'static str, CudaFunction>,
}

/// Compiled kernels per device ordinal: NVRTC runs once per device and process.
fn cache() -> &'static Mutex<HashMap<usize, Arc<KernelSet>>> {
    static CACHE: OnceLock<Mutex<HashMap<usize, Arc<KernelSet>>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Compiles (or takes from the kernel cache) every source for the device of `ctx` and loads it: a cubin
/// for the device's exact SM, PTX only for an SM this NVRTC does not know and only when the driver
/// accepts that PTX (`compile::plan`, `compile::check_driver_for_ptx`). Never another architecture.
fn load(ctx: &Arc<CudaContext>) -> Result<KernelSet> {
    let (major, minor) = ctx
        .compute_capability()
        .map_err(driver("kernels: compute capability"))?;
    let sm = (major * 10 + minor) as u32;
    let nvrtc = compile::nvrtc_version()?;
    let supported = compile::supported_archs()?;
    let target =
        compile::plan(sm, nvrtc, &supported).map_err(|e| device_error("kernels: NVRTC target", e))?;
    if let Target::Ptx(_) = target {
        compile::check_driver_for_ptx(compile::driver_version()?, nvrtc)
            .map_err(|e| device_error("kernels: NVRTC target", e))?;
        tracing::warn!(
            sm,
            %nvrtc,
            arch = %target.arch(),
            "NVRTC does not know this GPU; the kernels are PTX for the driver to JIT-compile"
        );
    }
    let cache_dir = compile::cache_dir();
    let mut functions = HashMap::new();
    for src in SOURCES {
        let (image, origin) = compile::cached_image(cache_dir.as_deref(), src, target, nvrtc, || {
            compile::compile(src, target, nvrtc)
        })?;
        tracing::debug!(file = src.file, arch = %target.arch(), %nvrtc, ?origin, "kernels");
        let module = match target {
            Target::Cubin(_) => Ptx::from_binary(image),
            Target::Ptx(_) => Ptx::from_src(String::from_utf8(image).map_err(|e| {
                device_error(
                    "kernels: load module",
                    format!("{}: PTX is not UTF-8: {e}", src.file),
                )
            })?),
        };
        let module = ctx.load_module(module).map_err(|e| {
            device_error(
                "kernels: load module",
                format!("{} ({} from NVRTC {nvrtc}): {e}", src.file, target.arch()),
            )
        })?;
        for &name in src.functions {
            let f = module
                .load_function(name)
                .map_err(|e| device_error("kernels: load function", format!("{}::{name}: {e}", src.file)))?;
            functions.insert(name, f);
        }
    }
    Ok(KernelSet { functions })
}

/// The custom kernels of one device plus their reusable scratch.
pub struct Kernels {
    set: Arc<KernelSet>,
    /// f64 scratch: `scratch::OUT` finish outputs, then per-element work. Grown, never shrunk.
    scratch: Mutex<Option<CudaSlice<f64>>>,
}

impl Kernels {
    /// Compiles (first use on this device in the process) or reuses the kernels of `ctx`'s device.
    /// Call only after checking that the CUDA driver and NVRTC libraries are present.
    pub fn new(ctx: &Arc<CudaContext>) -> Result<Kernels> {
        let ordinal = ctx.ordinal();
        let mut cached = cache().lock().unwrap_or_else(|p| p.into_inner());
        let set = match cached.get(&ordinal) {
            Some(set) => set.clone(),
            None => {
                let set = Arc::new(load(ctx)?);
                cached.insert(ordinal, set.clone());
                set
            }
        };
        Ok(Kernels {
            set,
            scratch: Mutex::new(None),
        })
    }

    fn function(&self, name: &'static str) -> Result<&CudaFunction> {
        self.set
            .functions
            .get(name)
            .ok_or_else(|| device_error("kernels", format!("kernel {name} was not loaded")))
    }

    /// The scratch buffer with room for `scratch::OUT + work` f64, grown on `s` if needed.
    fn scratch(&self, s: &Arc<CudaStream>, work: usize) -> Result<ScratchGuard<'_>> {
        let mut guard = self.scratch.lock().unwrap_or_else(|p| p.into_inner());
        let want = scratch::OUT + work;
        if guard.as_ref().is_none_or(|b| b.len() < want) {
            // Grow geometrically so a slowly growing batch does not reallocate every step.
            let len = want.max(guard.as_ref().map_or(0, |b| 2 * b.len()));
            *guard = Some(
                s.alloc_zeros::<f64>(len)
                    .map_err(driver("kernels: scratch allocation"))?,
            );
        }
        Ok(ScratchGuard { guard })
    }
}

// The CUDA backend holds `Kernels` inside a `Backend`, which must be Send + Sync.
const _: fn() = || {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Kernels>();
};

struct ScratchGuard<'a> {
    guard: MutexGuard<'a, Option<CudaSlice<f64>>>,
}

impl ScratchGuard<'_> {
    /// (finish outputs, per-element work: at least the `work` f64 the guard was made for)
    fn split(&mut self) -> (CudaViewMut<'_, f64>, CudaViewMut<'_, f64>) {
        let buf = self
            .guard
            .as_mut()
            .expect("scratch is allocated before it is split");
        buf.split_at_mut(scratch::OUT)
    }
}

/// Grid-stride launch over `n` elements: blocks of BLOCK_THREADS, grid capped.
fn elementwise(n: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (grid_blocks(n), 1, 1),
        block_dim: (BLOCK_THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Phase 1 of a reduction: exactly REDUCE_THREADS threads.
fn reduction() -> LaunchConfig {
    LaunchConfig {
        grid_dim: ((REDUCE_THREADS as u32).div_ceil(BLOCK_THREADS), 1, 1),
        block_dim: (BLOCK_THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// One thread (finish kernels, the Cox loss).
const SINGLE: LaunchConfig = LaunchConfig {
    grid_dim: (1, 1, 1),
    block_dim: (1, 1, 1),
    shared_mem_bytes: 0,
};

/// The null device pointer an absent optional buffer is passed as.
const NULL: u64 = 0;

fn arg_opt<'a>(b: &mut LaunchArgs<'a>, v: &'a Option<CudaView<'_, f32>>) {
    match v {
        Some(v) => b.arg(v),
        None => b.arg(&NULL),
    };
}

/// Launches `name` with the arguments pushed by `push`.
fn launch<'a>(
    k: &'a Kernels,
    s: &'a Arc<CudaStream>,
    op: &'static str,
    name: &'static str,
    cfg: LaunchConfig,
    push: impl FnOnce(&mut LaunchArgs<'a>),
) -> Result<()> {
    let mut b = s.launch_builder(k.function(name)?);
    push(&mut b);
    // SAFETY: every caller pushes the arguments in the order and with the types of the kernel's
    // signature in kernels/*.cu (u64 counts, f32/i32 scalars, device pointers of f32/f64), after
    // checking each buffer's length against the counts the kernel indexes with; the grid-stride loops
    // bound every access by those counts.
    unsafe { b.launch(cfg) }.map(|_| ()).map_err(driver(op))
}

/// Copies the finish outputs to the host (synchronising the stream).
fn read_out(
    s: &Arc<CudaStream>,
    op: &'static str,
    out: &CudaViewMut<'_, f64>,
) -> Result<[f64; scratch::OUT]> {
    let mut host = [0.0f64; scratch::OUT];
    s.memcpy_dtoh(out, &mut host).map_err(driver(op))?;
    s.synchronize().map_err(driver(op))?;
    Ok(host)
}

fn u(v: usize) -> u64 {
    v as u64
}

// ---- elementwise ----

pub fn fill(k: &Kernels, s: &Arc<CudaStream>, mut y: CudaViewMut<'_, f32>, value: f32) -> Result<()> {
    let n = u(y.len());
    launch(k, s, "fill", "mt_fill", elementwise(y.len()), |b| {
        b.arg(&n).arg(&mut y).arg(&value);
    })
}

pub fn scale(k: &Kernels, s: &Arc<CudaStream>, alpha: f32, mut y: CudaViewMut<'_, f32>) -> Result<()> {
    let n = u(y.len());
    launch(k, s, "scale", "mt_scale", elementwise(y.len()), |b| {
        b.arg(&n).arg(&alpha).arg(&mut y);
    })
}

pub fn add(
    k: &Kernels,
    s: &Arc<CudaStream>,
    a: CudaView<'_, f32>,
    b: CudaView<'_, f32>,
    mut y: CudaViewMut<'_, f32>,
) -> Result<()> {
    check_len("add", "b", a.len(), b.len())?;
    check_len("add", "y", a.len(), y.len())?;
    let n = u(a.len());
    launch(k, s, "add", "mt_add", elementwise(a.len()), |l| {
        l.arg(&n).arg(&a).arg(&b).arg(&mut y);
    })
}

pub fn accumulate(
    k: &Kernels,
    s: &Arc<CudaStream>,
    x: CudaView<'_, f32>,
    mut y: CudaViewMut<'_, f32>,
) -> Result<()> {
    check_len("accumulate", "y", x.len(), y.len())?;
    let n = u(x.len());
    launch(k, s, "accumulate", "mt_accumulate", elementwise(x.len()), |b| {
        b.arg(&n).arg(&x).arg(&mut y);
    })
}

pub fn leaky_relu_forward(
    k: &Kernels,
    s: &Arc<CudaStream>,
    slope: f32,
    x: CudaView<'_, f32>,
    mut y: CudaViewMut<'_, f32>,
) -> Result<()> {
    check_len("leaky_relu", "y", x.len(), y.len())?;
    let n = u(x.len());
    launch(
        k,
        s,
        "leaky_relu",
        "mt_leaky_relu_forward",
        elementwise(x.len()),
        |b| {
            b.arg(&n).arg(&slope).arg(&x).arg(&mut y);
        },
    )
}

pub fn leaky_relu_backward(
    k: &Kernels,
    s: &Arc<CudaStream>,
    slope: f32,
    x: CudaView<'_, f32>,
    dy: CudaView<'_, f32>,
    mut dx: CudaViewMut<'_, f32>,
) -> Result<()> {
    check_len("leaky_relu backward", "dy", x.len(), dy.len())?;
    check_len("leaky_relu backward", "dx", x.len(), dx.len())?;
    let n = u(x.len());
    launch(
        k,
        s,
        "leaky_relu backward",
        "mt_leaky_relu_backward",
        elementwise(x.len()),
        |b| {
            b.arg(&n).arg(&slope).arg(&x).arg(&dy).arg(&mut dx);
        },
    )
}

fn dropout(
    k: &Kernels,
    s: &Arc<CudaStream>,
    op: &'static str,
    p: &DropoutParams,
    x: CudaView<'_, f32>,
    mut y: CudaViewMut<'_, f32>,
) -> Result<()> {
    check_len(op, "output", x.len(), y.len())?;
    let (threshold, keep) = dropout_mask_args(p);
    let n = u(x.len());
    launch(k, s, op, "mt_dropout", elementwise(x.len()), |b| {
        b.arg(&n)
            .arg(&p.seed)
            .arg(&threshold)
            .arg(&keep)
            .arg(&x)
            .arg(&mut y);
    })
}

pub fn dropout_forward(
    k: &Kernels,
    s: &Arc<CudaStream>,
    p: &DropoutParams,
    x: CudaView<'_, f32>,
    y: CudaViewMut<'_, f32>,
) -> Result<()> {
    dropout(k, s, "dropout", p, x, y)
}

pub fn dropout_backward(
    k: &Kernels,
    s: &Arc<CudaStream>,
    p: &DropoutParams,
    dy: CudaView<'_, f32>,
    dx: CudaViewMut<'_, f32>,
) -> Result<()> {
    dropout(k, s, "dropout backward", p, dy, dx)
}

#[allow(clippy::too_many_arguments)]
pub fn concat_channels_forward(
    k: &Kernels,
    s: &Arc<CudaStream>,
    n: usize,
    spatial: usize,
    a: CudaView<'_, f32>,
    ca: usize,
    b: CudaView<'_, f32>,
    cb: usize,
    mut y: CudaViewMut<'_, f32>,
) -> Result<()> {
    check_len("concat", "a", n * ca * spatial, a.len())?;
    check_len("concat", "b", n * cb * spatial, b.len())?;
    check_len("concat", "y", n * (ca + cb) * spatial, y.len())?;
    let [n64, s64, ca, cb] = [n, spatial, ca, cb].map(u);
    launch(
        k,
        s,
        "concat",
        "mt_concat_channels_forward",
        elementwise(y.len()),
        |l| {
            l.arg(&n64)
                .arg(&s64)
                .arg(&a)
                .arg(&ca)
                .arg(&b)
                .arg(&cb)
                .arg(&mut y);
        },
    )
}

#[allow(clippy::too_many_arguments)]
pub fn concat_channels_backward(
    k: &Kernels,
    s: &Arc<CudaStream>,
    n: usize,
    spatial: usize,
    dy: CudaView<'_, f32>,
    ca: usize,
    cb: usize,
    mut da: CudaViewMut<'_, f32>,
    mut db: CudaViewMut<'_, f32>,
) -> Result<()> {
    check_len("concat backward", "dy", n * (ca + cb) * spatial, dy.len())?;
    check_len("concat backward", "da", n * ca * spatial, da.len())?;
    check_len("concat backward", "db", n * cb * spatial, db.len())?;
    let [n64, s64, ca, cb] = [n, spatial, ca, cb].map(u);
    launch(
        k,
        s,
        "concat backward",
        "mt_concat_channels_backward",
        elementwise(dy.len()),
        |l| {
            l.arg(&n64)
                .arg(&s64)
                .arg(&dy)
                .arg(&ca)
                .arg(&cb)
                .arg(&mut da)
                .arg(&mut db);
        },
    )
}

// ---- pooling and reductions ----

pub fn global_avg_pool_forward(
    k: &Kernels,
    s: &Arc<CudaStream>,
    spatial: usize,
    x: CudaView<'_, f32>,
    mut y: CudaViewMut<'_, f32>,
) -> Result<()> {
    check_len("global avg pool", "x", y.len() * spatial, x.len())?;
    let (planes, s64) = (u(y.len()), u(spatial));
    launch(
        k,
        s,
        "global avg pool",
        "mt_global_avg_pool_forward",
        elementwise(y.len()),
        |b| {
            b.arg(&planes).arg(&s64).arg(&x).arg(&mut y);
        },
    )
}

pub fn global_avg_pool_backward(
    k: &Kernels,
    s: &Arc<CudaStream>,
    spatial: usize,
    dy: CudaView<'_, f32>,
    mut dx: CudaViewMut<'_, f32>,
) -> Result<()> {
    check_len("global avg pool backward", "dx", dy.len() * spatial, dx.len())?;
    let (planes, s64) = (u(dy.len()), u(spatial));
    launch(
        k,
        s,
        "global avg pool backward",
        "mt_global_avg_pool_backward",
        elementwise(dx.len()),
        |b| {
            b.arg(&planes).arg(&s64).arg(&dy).arg(&mut dx);
        },
    )
}

/// Pushes the 13 geometry scalars of a `pool.cu` kernel (see `backend::kernels::pool_args`).
fn pool_geometry<'a>(b: &mut LaunchArgs<'a>, args: &'a [u64; 13]) {
    for a in args {
        b.arg(a);
    }
}

/// Max pooling: the first maximum of each clipped window (the CPU's tie rule).
pub fn max_pool_forward(
    k: &Kernels,
    s: &Arc<CudaStream>,
    p: &PoolParams,
    x: CudaView<'_, f32>,
    mut y: CudaViewMut<'_, f32>,
) -> Result<()> {
    let args = check_pool("max pool", p, x.len(), y.len())?;
    launch(
        k,
        s,
        "max pool",
        "mt_max_pool_forward",
        elementwise(y.len()),
        |b| {
            pool_geometry(b, &args);
            b.arg(&x).arg(&mut y);
        },
    )
}

/// Max pooling backward as a gather: one thread per input element (no atomics).
pub fn max_pool_backward(
    k: &Kernels,
    s: &Arc<CudaStream>,
    p: &PoolParams,
    x: CudaView<'_, f32>,
    dy: CudaView<'_, f32>,
    mut dx: CudaViewMut<'_, f32>,
) -> Result<()> {
    let args = check_pool("max pool backward", p, x.len(), dy.len())?;
    check_len("max pool backward", "dx", p.input_len(), dx.len())?;
    launch(
        k,
        s,
        "max pool backward",
        "mt_max_pool_backward",
        elementwise(dx.len()),
        |b| {
            pool_geometry(b, &args);
            b.arg(&x).arg(&dy).arg(&mut dx);
        },
    )
}

/// Average pooling; padding counts in the divisor.
pub fn avg_pool_forward(
    k: &Kernels,
    s: &Arc<CudaStream>,
    p: &PoolParams,
    x: CudaView<'_, f32>,
    mut y: CudaViewMut<'_, f32>,
) -> Result<()> {
    let args = check_pool("avg pool", p, x.len(), y.len())?;
    launch(
        k,
        s,
        "avg pool",
        "mt_avg_pool_forward",
        elementwise(y.len()),
        |b| {
            pool_geometry(b, &args);
            b.arg(&x).arg(&mut y);
        },
    )
}

/// Average pooling backward as a gather: one thread per input element (no atomics).
pub fn avg_pool_backward(
    k: &Kernels,
    s: &Arc<CudaStream>,
    p: &PoolParams,
    dy: CudaView<'_, f32>,
    mut dx: CudaViewMut<'_, f32>,
) -> Result<()> {
    let args = check_pool("avg pool backward", p, dx.len(), dy.len())?;
    launch(
        k,
        s,
        "avg pool backward",
        "mt_avg_pool_backward",
        elementwise(dx.len()),
        |b| {
            pool_geometry(b, &args);
            b.arg(&dy).arg(&mut dx);
        },
    )
}

// ---- Grad-CAM (kernels/gradcam.cu; CPU reference in explain::cam) ----

fn volume(d: Dims3) -> usize {
    d.iter().map(|&e| e as usize).product()
}

/// weights[p] = mean over `spatial` of grads[p, ·], for `weights.len()` planes (N·C).
pub fn gradcam_pool_weights(
    k: &Kernels,
    s: &Arc<CudaStream>,
    spatial: usize,
    grads: CudaView<'_, f32>,
    mut weights: CudaViewMut<'_, f32>,
) -> Result<()> {
    check_len("cam_pool_weights", "grads", weights.len() * spatial, grads.len())?;
    let (planes, sp) = (u(weights.len()), u(spatial));
    launch(
        k,
        s,
        "cam_pool_weights",
        "mt_gradcam_pool_weights",
        elementwise(weights.len()),
        |b| {
            b.arg(&planes).arg(&sp).arg(&grads).arg(&mut weights);
        },
    )
}

/// Grad-CAM++ channel weights of `weights.len()` planes of `spatial` values.
pub fn gradcam_pp_weights(
    k: &Kernels,
    s: &Arc<CudaStream>,
    spatial: usize,
    acts: CudaView<'_, f32>,
    grads: CudaView<'_, f32>,
    mut weights: CudaViewMut<'_, f32>,
) -> Result<()> {
    check_len("cam_pp_weights", "acts", weights.len() * spatial, acts.len())?;
    check_len("cam_pp_weights", "grads", weights.len() * spatial, grads.len())?;
    let (planes, sp) = (u(weights.len()), u(spatial));
    launch(
        k,
        s,
        "cam_pp_weights",
        "mt_gradcam_pp_weights",
        elementwise(weights.len()),
        |b| {
            b.arg(&planes).arg(&sp).arg(&acts).arg(&grads).arg(&mut weights);
        },
    )
}

/// cam (n, spatial) = ReLU(Σ_c weights (n, c) · acts (n, c, spatial)).
#[allow(clippy::too_many_arguments)]
pub fn gradcam_weighted_sum(
    k: &Kernels,
    s: &Arc<CudaStream>,
    n: usize,
    c: usize,
    spatial: usize,
    acts: CudaView<'_, f32>,
    weights: CudaView<'_, f32>,
    mut cam: CudaViewMut<'_, f32>,
) -> Result<()> {
    check_len("cam_weighted_sum", "acts", n * c * spatial, acts.len())?;
    check_len("cam_weighted_sum", "weights", n * c, weights.len())?;
    check_len("cam_weighted_sum", "cam", n * spatial, cam.len())?;
    let (n64, c64, sp) = (u(n), u(c), u(spatial));
    launch(
        k,
        s,
        "cam_weighted_sum",
        "mt_gradcam_weighted_sum",
        elementwise(cam.len()),
        |b| {
            b.arg(&n64)
                .arg(&c64)
                .arg(&sp)
                .arg(&acts)
                .arg(&weights)
                .arg(&mut cam);
        },
    )
}

/// LayerCAM: cam (n, spatial) = ReLU(Σ_c ReLU(grads) · acts (n, c, spatial)).
#[allow(clippy::too_many_arguments)]
pub fn gradcam_layer_sum(
    k: &Kernels,
    s: &Arc<CudaStream>,
    n: usize,
    c: usize,
    spatial: usize,
    acts: CudaView<'_, f32>,
    grads: CudaView<'_, f32>,
    mut cam: CudaViewMut<'_, f32>,
) -> Result<()> {
    check_len("cam_layer_sum", "acts", n * c * spatial, acts.len())?;
    check_len("cam_layer_sum", "grads", n * c * spatial, grads.len())?;
    check_len("cam_layer_sum", "cam", n * spatial, cam.len())?;
    let (n64, c64, sp) = (u(n), u(c), u(spatial));
    launch(
        k,
        s,
        "cam_layer_sum",
        "mt_gradcam_layer_sum",
        elementwise(cam.len()),
        |b| {
            b.arg(&n64)
                .arg(&c64)
                .arg(&sp)
                .arg(&acts)
                .arg(&grads)
                .arg(&mut cam);
        },
    )
}

/// Trilinear up-sampling of `n` maps from `from` to `to`, each axis (z, y, x) read through its
/// `AxisMap` (see `explain::cam::upsample`).
#[allow(clippy::too_many_arguments)]
pub fn gradcam_upsample(
    k: &Kernels,
    s: &Arc<CudaStream>,
    n: usize,
    from: Dims3,
    to: Dims3,
    axes: &[crate::backend::params::AxisMap; 3],
    cam: CudaView<'_, f32>,
    mut out: CudaViewMut<'_, f32>,
) -> Result<()> {
    check_len("cam_upsample", "cam", n * volume(from), cam.len())?;
    check_len("cam_upsample", "out", n * volume(to), out.len())?;
    if from.contains(&0) {
        return Err(BackendError::Params {
            op: "cam_upsample",
            reason: format!("empty source grid {from:?}"),
        });
    }
    let n64 = u(n);
    let [fd, fh, fw] = from.map(u64::from);
    let [td, th, tw] = to.map(u64::from);
    launch(
        k,
        s,
        "cam_upsample",
        "mt_gradcam_upsample",
        elementwise(out.len()),
        |b| {
            b.arg(&n64).arg(&fd).arg(&fh).arg(&fw).arg(&td).arg(&th).arg(&tw);
            for a in axes {
                b.arg(&a.scale).arg(&a.before).arg(&a.after);
            }
            b.arg(&cam).arg(&mut out);
        },
    )
}

/// Min-max normalisation of each of the `n` maps of `spatial` values (a flat map becomes 0): one
/// launch for the per-map (min, max) into a temporary buffer, one for the division.
pub fn gradcam_normalise(
    k: &Kernels,
    s: &Arc<CudaStream>,
    n: usize,
    spatial: usize,
    mut maps: CudaViewMut<'_, f32>,
) -> Result<()> {
    check_len("cam_normalise", "maps", n * spatial, maps.len())?;
    if n == 0 || spatial == 0 {
        return Ok(());
    }
    let mut minmax = s
        .alloc_zeros::<f32>(2 * n)
        .map_err(driver("cam_normalise: alloc"))?;
    let (n64, sp) = (u(n), u(spatial));
    {
        let maps_ro = maps.as_view();
        let mut mm = minmax.as_view_mut();
        launch(k, s, "cam_normalise", "mt_gradcam_minmax", elementwise(n), |b| {
            b.arg(&n64).arg(&sp).arg(&maps_ro).arg(&mut mm);
        })?;
    }
    let mm = minmax.as_view();
    launch(
        k,
        s,
        "cam_normalise",
        "mt_gradcam_normalise",
        elementwise(n * spatial),
        |b| {
            b.arg(&n64).arg(&sp).arg(&mm).arg(&mut maps);
        },
    )
}

/// Σ x² in f64: REDUCE_THREADS strided partials, added in order by one thread (deterministic).
pub fn sum_squares(k: &Kernels, s: &Arc<CudaStream>, x: CudaView<'_, f32>) -> Result<f64> {
    const OP: &str = "sum_squares";
    let mut guard = k.scratch(s, scratch::sum_squares())?;
    let (mut out, mut partials) = guard.split();
    let n = u(x.len());
    let count = u(REDUCE_THREADS);
    launch(k, s, OP, "mt_sum_squares_partial", reduction(), |b| {
        b.arg(&n).arg(&x).arg(&mut partials);
    })?;
    launch(k, s, OP, "mt_sum_partials", SINGLE, |b| {
        b.arg(&count).arg(&mut partials).arg(&mut out);
    })?;
    Ok(read_out(s, OP, &out)?[0])
}

// ---- losses ----

pub fn cross_entropy(
    k: &Kernels,
    s: &Arc<CudaStream>,
    p: &CrossEntropyParams,
    logits: CudaView<'_, f32>,
    targets: CudaView<'_, f32>,
    class_weights: Option<CudaView<'_, f32>>,
    mut dlogits: CudaViewMut<'_, f32>,
) -> Result<f32> {
    const OP: &str = "cross_entropy";
    check_cross_entropy(
        p,
        logits.len(),
        targets.len(),
        class_weights.as_ref().map(|w| w.len()),
        dlogits.len(),
    )?;
    let (n, classes) = (p.n as usize, p.classes as usize);
    let work = scratch::cross_entropy(n);
    let mut guard = k.scratch(s, work)?;
    let (mut out, mut rows) = guard.split();
    let (n64, c64, eps) = (u(n), u(classes), p.label_smoothing);
    launch(k, s, OP, "mt_cross_entropy_rows", elementwise(n), |b| {
        b.arg(&n64).arg(&c64).arg(&eps).arg(&logits).arg(&targets);
        arg_opt(b, &class_weights);
        b.arg(&mut dlogits).arg(&mut rows);
    })?;
    launch(k, s, OP, "mt_cross_entropy_finish", SINGLE, |b| {
        b.arg(&n64).arg(&c64).arg(&eps).arg(&logits).arg(&targets);
        arg_opt(b, &class_weights);
        b.arg(&mut rows).arg(&mut out);
    })?;
    let host = read_out(s, OP, &out)?;
    cross_entropy_status(&host, classes)?;
    let len = u(dlogits.len());
    let inv = out.slice(1..2);
    launch(
        k,
        s,
        OP,
        "mt_scale_by_device_scalar",
        elementwise(dlogits.len()),
        |b| {
            b.arg(&len).arg(&inv).arg(&mut dlogits);
        },
    )?;
    Ok(host[0] as f32)
}

#[allow(clippy::too_many_arguments)]
pub fn bce_with_logits(
    k: &Kernels,
    s: &Arc<CudaStream>,
    p: &BceParams,
    logits: CudaView<'_, f32>,
    targets: CudaView<'_, f32>,
    mask: Option<CudaView<'_, f32>>,
    pos_weight: Option<CudaView<'_, f32>>,
    mut dlogits: CudaViewMut<'_, f32>,
) -> Result<f32> {
    const OP: &str = "bce_with_logits";
    check_bce(
        p,
        [logits.len(), targets.len(), dlogits.len()],
        mask.as_ref().map(|m| m.len()),
        pos_weight.as_ref().map(|w| w.len()),
    )?;
    let total = p.n as usize * p.labels as usize;
    let work = scratch::bce(total);
    let mut guard = k.scratch(s, work)?;
    let (mut out, mut both) = guard.split();
    let (mut terms, mut grads) = both.split_at_mut(total);
    let (t64, labels) = (u(total), u(p.labels as usize));
    launch(k, s, OP, "mt_bce_elements", elementwise(total), |b| {
        b.arg(&t64).arg(&labels).arg(&logits).arg(&targets);
        arg_opt(b, &mask);
        arg_opt(b, &pos_weight);
        b.arg(&mut terms).arg(&mut grads);
    })?;
    launch(k, s, OP, "mt_masked_mean_finish", SINGLE, |b| {
        b.arg(&t64);
        arg_opt(b, &mask);
        b.arg(&mut terms).arg(&mut out);
    })?;
    let inv = out.slice(1..2);
    launch(
        k,
        s,
        OP,
        "mt_scale_f64_by_device_scalar",
        elementwise(total),
        |b| {
            b.arg(&t64).arg(&mut grads).arg(&inv).arg(&mut dlogits);
        },
    )?;
    Ok(read_out(s, OP, &out)?[0] as f32)
}

pub fn regression_loss(
    k: &Kernels,
    s: &Arc<CudaStream>,
    kind: RegressionLoss,
    pred: CudaView<'_, f32>,
    target: CudaView<'_, f32>,
    mask: Option<CudaView<'_, f32>>,
    mut dpred: CudaViewMut<'_, f32>,
) -> Result<f32> {
    const OP: &str = "regression loss";
    check_regression(
        pred.len(),
        target.len(),
        mask.as_ref().map(|m| m.len()),
        dpred.len(),
    )?;
    let n = pred.len();
    let work = scratch::regression(n);
    let mut guard = k.scratch(s, work)?;
    let (mut out, mut both) = guard.split();
    let (mut terms, mut grads) = both.split_at_mut(n);
    let (huber, delta) = regression_args(kind);
    let n64 = u(n);
    launch(k, s, OP, "mt_regression_elements", elementwise(n), |b| {
        b.arg(&n64).arg(&huber).arg(&delta).arg(&pred).arg(&target);
        arg_opt(b, &mask);
        b.arg(&mut terms).arg(&mut grads);
    })?;
    launch(k, s, OP, "mt_masked_mean_finish", SINGLE, |b| {
        b.arg(&n64);
        arg_opt(b, &mask);
        b.arg(&mut terms).arg(&mut out);
    })?;
    let inv = out.slice(1..2);
    launch(k, s, OP, "mt_scale_f64_by_device_scalar", elementwise(n), |b| {
        b.arg(&n64).arg(&mut grads).arg(&inv).arg(&mut dpred);
    })?;
    Ok(read_out(s, OP, &out)?[0] as f32)
}

pub fn cox_loss(
    k: &Kernels,
    s: &Arc<CudaStream>,
    risk: CudaView<'_, f32>,
    time: CudaView<'_, f32>,
    event: CudaView<'_, f32>,
    mut drisk: CudaViewMut<'_, f32>,
) -> Result<f32> {
    const OP: &str = "cox loss";
    let n = risk.len();
    check_len(OP, "time", n, time.len())?;
    check_len(OP, "event", n, event.len())?;
    check_len(OP, "drisk", n, drisk.len())?;
    let work = scratch::cox(n);
    let mut guard = k.scratch(s, work)?;
    let (mut out, mut all) = guard.split();
    let (mut order, mut rest) = all.split_at_mut(n);
    let (mut group_start, mut group_sum) = rest.split_at_mut(n);
    let n64 = u(n);
    launch(k, s, OP, "mt_cox_loss", SINGLE, |b| {
        b.arg(&n64).arg(&risk).arg(&time).arg(&event).arg(&mut drisk);
        b.arg(&mut order)
            .arg(&mut group_start)
            .arg(&mut group_sum)
            .arg(&mut out);
    })?;
    Ok(read_out(s, OP, &out)?[0] as f32)
}

// ---- optimizer updates ----

pub fn sgd_step(
    k: &Kernels,
    s: &Arc<CudaStream>,
    h: &SgdHyper,
    mut param: CudaViewMut<'_, f32>,
    grad: CudaView<'_, f32>,
    mut momentum: CudaViewMut<'_, f32>,
) -> Result<()> {
    check_len("sgd", "grad", param.len(), grad.len())?;
    check_len("sgd", "momentum", param.len(), momentum.len())?;
    let n = u(param.len());
    let nesterov = h.nesterov as i32;
    launch(k, s, "sgd", "mt_sgd_step", elementwise(param.len()), |b| {
        b.arg(&n)
            .arg(&h.lr)
            .arg(&h.momentum)
            .arg(&h.weight_decay)
            .arg(&nesterov);
        b.arg(&mut param).arg(&grad).arg(&mut momentum);
    })
}

pub fn adamw_step(
    k: &Kernels,
    s: &Arc<CudaStream>,
    h: &AdamWHyper,
    mut param: CudaViewMut<'_, f32>,
    grad: CudaView<'_, f32>,
    mut m: CudaViewMut<'_, f32>,
    mut v: CudaViewMut<'_, f32>,
) -> Result<()> {
    check_len("adamw", "grad", param.len(), grad.len())?;
    check_len("adamw", "m", param.len(), m.len())?;
    check_len("adamw", "v", param.len(), v.len())?;
    let c = adamw_scalars(h);
    let n = u(param.len());
    launch(k, s, "adamw", "mt_adamw_step", elementwise(param.len()), |b| {
        b.arg(&n).arg(&h.beta1).arg(&h.beta2).arg(&h.eps);
        b.arg(&c.decay).arg(&c.step_size).arg(&c.bc2_sqrt);
        b.arg(&mut param).arg(&grad).arg(&mut m).arg(&mut v);
    })
}

/// GPU parity of every launch against the CPU backend. Skipped with a printed reason when no GPU (or
/// no CUDA library) is present; `MEDTRAIN_REQUIRE_GPU=1` turns a skip into a failure.
#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::backend::cpu::CpuBackend;
    use crate::backend::Backend;

    fn skip(reason: &str) -> Option<(Arc<CudaStream>, Kernels)> {
        if std::env::var("MEDTRAIN_REQUIRE_GPU").is_ok_and(|v| v == "1") {
            panic!("MEDTRAIN_REQUIRE_GPU=1 but {reason}");
        }
        eprintln!("skipped: {reason}");
        None
    }

    fn gpu() -> Option<(Arc<CudaStream>, Kernels)> {
        // SAFETY: only tries to dlopen the libraries; nothing is called through them here.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return skip("the CUDA driver library (libcuda) is not present");
        }
        // SAFETY: as above.
        if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
            return skip("the NVRTC library (libnvrtc) is not present");
        }
        match CudaContext::device_count() {
            Ok(n) if n > 0 => {}
            Ok(_) => return skip("no CUDA device is visible"),
            Err(e) => return skip(&format!("the CUDA driver did not initialise: {e}")),
        }
        let ctx = CudaContext::new(0).expect("CUDA context on device 0");
        let stream = ctx.default_stream();
        let kernels = Kernels::new(&ctx).expect("NVRTC compiles and loads every kernel");
        Some((stream, kernels))
    }

    fn uniform(r: &mut ChaCha8Rng, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| r.gen_range(lo..hi)).collect()
    }

    /// |got − want| ≤ atol + rtol·|want| elementwise.
    fn assert_close(op: &str, got: &[f32], want: &[f32], atol: f64, rtol: f64) {
        assert_eq!(got.len(), want.len(), "{op}: lengths");
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            let ok = (g as f64 - w as f64).abs() <= atol + rtol * (w as f64).abs();
            assert!(
                ok,
                "{op}: element {i}: gpu {g:e}, cpu {w:e} (atol {atol}, rtol {rtol})"
            );
        }
    }

    fn up(s: &Arc<CudaStream>, x: &[f32]) -> CudaSlice<f32> {
        s.clone_htod(x).expect("upload")
    }

    fn down(s: &Arc<CudaStream>, x: &CudaSlice<f32>) -> Vec<f32> {
        s.clone_dtoh(x).expect("download")
    }

    #[test]
    fn elementwise_and_updates_are_exact_on_the_gpu() {
        let Some((s, k)) = gpu() else { return };
        let cpu = CpuBackend;
        let mut r = ChaCha8Rng::seed_from_u64(1);
        let n = 1_000_003;
        let (a, b) = (uniform(&mut r, n, -2.0, 2.0), uniform(&mut r, n, -2.0, 2.0));
        let (da, db) = (up(&s, &a), up(&s, &b));
        let mut dy = s.alloc_zeros::<f32>(n).unwrap();
        let mut want = vec![0.0; n];

        add(&k, &s, da.slice(..), db.slice(..), dy.slice_mut(..)).unwrap();
        cpu.add(&a, &b, &mut want).unwrap();
        assert_close("add", &down(&s, &dy), &want, 0.0, 0.0);

        leaky_relu_backward(&k, &s, 0.1, da.slice(..), db.slice(..), dy.slice_mut(..)).unwrap();
        cpu.leaky_relu_backward(0.1, &a, &b, &mut want).unwrap();
        assert_close("leaky_relu backward", &down(&s, &dy), &want, 0.0, 0.0);

        let p = DropoutParams { prob: 0.3, seed: 7 };
        dropout_forward(&k, &s, &p, da.slice(..), dy.slice_mut(..)).unwrap();
        cpu.dropout_forward(&p, &a, &mut want).unwrap();
        assert_close("dropout", &down(&s, &dy), &want, 0.0, 0.0);

        let h = AdamWHyper {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
            step: 3,
        };
        let (mut gp, mut gm, mut gv) = (
            up(&s, &a),
            up(&s, &b),
            up(&s, &b.iter().map(|v| v * v).collect::<Vec<_>>()),
        );
        let (mut wp, mut wm, mut wv) = (a.clone(), b.clone(), b.iter().map(|v| v * v).collect::<Vec<_>>());
        adamw_step(
            &k,
            &s,
            &h,
            gp.slice_mut(..),
            db.slice(..),
            gm.slice_mut(..),
            gv.slice_mut(..),
        )
        .unwrap();
        cpu.adamw_step(&h, &mut wp, &b, &mut wm, &mut wv).unwrap();
        assert_close("adamw param", &down(&s, &gp), &wp, 0.0, 0.0);

        let sgd = SgdHyper {
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 1e-4,
            nesterov: true,
        };
        sgd_step(&k, &s, &sgd, gp.slice_mut(..), db.slice(..), gm.slice_mut(..)).unwrap();
        cpu.sgd_step(&sgd, &mut wp, &b, &mut wm).unwrap();
        assert_close("sgd param", &down(&s, &gp), &wp, 0.0, 0.0);

        let got = sum_squares(&k, &s, da.slice(..)).unwrap();
        let want = cpu.sum_squares(&a).unwrap();
        assert!(
            (got - want).abs() <= 1e-12 * want,
            "sum_squares: gpu {got}, cpu {want}"
        );
    }

    #[test]
    fn losses_match_the_cpu_on_the_gpu() {
        let Some((s, k)) = gpu() else { return };
        let cpu = CpuBackend;
        let mut r = ChaCha8Rng::seed_from_u64(2);
        let (atol, rtol) = (1e-7, 1e-6);

        let (n, classes) = (300, 5);
        let logits = uniform(&mut r, n * classes, -5.0, 5.0);
        let targets: Vec<f32> = (0..n).map(|_| r.gen_range(0..classes) as f32).collect();
        let weights = uniform(&mut r, classes, 0.5, 2.0);
        let p = CrossEntropyParams {
            n: n as u32,
            classes: classes as u32,
            label_smoothing: 0.1,
        };
        let (dl, dt, dw) = (up(&s, &logits), up(&s, &targets), up(&s, &weights));
        let mut dd = s.alloc_zeros::<f32>(n * classes).unwrap();
        let mut want = vec![0.0; n * classes];
        let gl = cross_entropy(
            &k,
            &s,
            &p,
            dl.slice(..),
            dt.slice(..),
            Some(dw.slice(..)),
            dd.slice_mut(..),
        )
        .unwrap();
        let wl = cpu
            .cross_entropy(&p, &logits, &targets, Some(&weights), &mut want)
            .unwrap();
        assert_close("cross_entropy loss", &[gl], &[wl], atol, rtol);
        assert_close("cross_entropy dlogits", &down(&s, &dd), &want, atol, rtol);

        let total = n * classes;
        let labels01: Vec<f32> = (0..total).map(|_| r.gen_range(0..2) as f32).collect();
        let mask: Vec<f32> = (0..total).map(|i| (i % 4 != 0) as u8 as f32).collect();
        let bp = BceParams {
            n: n as u32,
            labels: classes as u32,
        };
        let (dy01, dm) = (up(&s, &labels01), up(&s, &mask));
        let gl = bce_with_logits(
            &k,
            &s,
            &bp,
            dl.slice(..),
            dy01.slice(..),
            Some(dm.slice(..)),
            Some(dw.slice(..)),
            dd.slice_mut(..),
        )
        .unwrap();
        let wl = cpu
            .bce_with_logits(&bp, &logits, &labels01, Some(&mask), Some(&weights), &mut want)
            .unwrap();
        assert_close("bce loss", &[gl], &[wl], atol, rtol);
        assert_close("bce dlogits", &down(&s, &dd), &want, atol, rtol);

        let kind = RegressionLoss::Huber { delta: 1.0 };
        let target = uniform(&mut r, total, -5.0, 5.0);
        let dtarget = up(&s, &target);
        let gl = regression_loss(
            &k,
            &s,
            kind,
            dl.slice(..),
            dtarget.slice(..),
            Some(dm.slice(..)),
            dd.slice_mut(..),
        )
        .unwrap();
        let wl = cpu
            .regression_loss(kind, &logits, &target, Some(&mask), &mut want)
            .unwrap();
        assert_close("huber loss", &[gl], &[wl], atol, rtol);
        assert_close("huber dpred", &down(&s, &dd), &want, atol, rtol);

        let time: Vec<f32> = (0..n).map(|_| r.gen_range(0..20) as f32).collect();
        let event: Vec<f32> = (0..n).map(|_| r.gen_range(0..2) as f32).collect();
        let (dtime, devent) = (up(&s, &time), up(&s, &event));
        let mut drisk = s.alloc_zeros::<f32>(n).unwrap();
        let mut want = vec![0.0; n];
        let risk = &logits[..n];
        let gl = cox_loss(
            &k,
            &s,
            dl.slice(..n),
            dtime.slice(..),
            devent.slice(..),
            drisk.slice_mut(..),
        )
        .unwrap();
        let wl = cpu.cox_loss(risk, &time, &event, &mut want).unwrap();
        assert_close("cox loss", &[gl], &[wl], atol, rtol);
        assert_close("cox drisk", &down(&s, &drisk), &want, atol, rtol);
    }
}
