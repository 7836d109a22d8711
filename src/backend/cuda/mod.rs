//! The CUDA backend: the `Backend` trait on one GPU per process (rank), through cudarc with dynamic
//! loading. Convolution and batch norm run on cuDNN, linear layers on cuBLAS, pooling on our own NVRTC
//! kernels (`kernels/pool.cu`), and elementwise ops, losses and optimizer updates on the kernel set in
//! `kernels`. One context and one stream per process; every call is enqueued on that stream, and the
//! calls that return host values (downloads, losses, norms) synchronise it.
//!
//! fp32 throughout with TF32 off: cuDNN convolutions use the FMA math type and cuBLAS its default
//! math mode (tensor-op math is never enabled), so results are comparable with the CPU reference.

pub mod batchnorm;
pub mod compile;
pub mod conv;
pub mod cudnn;
pub mod kernels;
pub mod libs;
pub mod linear;
pub mod probe;
pub mod select;
pub mod selftest;
pub mod support;

use std::collections::HashMap;
use std::ffi::c_void;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use cudarc::cublas::CudaBlas;
use cudarc::driver::{
    CudaContext, CudaSlice, CudaStream, CudaView, CudaViewMut, DevicePtr, DevicePtrMut, PinnedHostSlice,
};

use super::params::{BatchNormParams, ConvParams, LinearParams, PoolParams};
use super::{
    check_len, AdamWHyper, Backend, BackendError, BceParams, CrossEntropyParams, DType, DropoutParams,
    RegressionLoss, Result, SgdHyper,
};
pub use probe::{probe, DeviceInfo, Unavailable};
pub use select::{select_device, SlurmGpus};

/// Copies of at least this many floats go through the pinned staging buffer (gradient buckets,
/// checkpoints); smaller ones (targets, losses) copy straight from pageable memory.
pub const PINNED_MIN_FLOATS: usize = 1 << 16;

fn driver(op: &'static str) -> impl Fn(cudarc::driver::DriverError) -> BackendError {
    move |e| BackendError::Device {
        op,
        backend: "CUDA driver",
        reason: format!("{e:?}"),
    }
}

fn poisoned(op: &'static str) -> BackendError {
    BackendError::Device {
        op,
        backend: "cuda",
        reason: "a previous call panicked while holding the backend's state".into(),
    }
}

/// cuDNN state: the handle, a plan per convolution shape, descriptors per batch-norm shape and the one
/// workspace, grown to the largest plan's need and never freed while the backend lives.
struct Dnn {
    handle: cudnn::Handle,
    plans: conv::PlanCache,
    bn: HashMap<[u32; 3], batchnorm::BnDescs>,
    workspace: Option<CudaSlice<u8>>,
}

/// Device memory in use on this GPU above what it was when the backend started, sampled at every
/// allocation the backend makes (memory only grows there), and its high-water mark.
struct Memory {
    baseline: u64,
    peak: AtomicU64,
    /// Allocations made (buffers, workspace, ones).
    allocations: AtomicU64,
}

pub struct CudaBackend {
    // Field order is drop order: handles and buffers go before the stream and the context.
    dnn: Mutex<Dnn>,
    blas: Mutex<CudaBlas>,
    kernels: kernels::Kernels,
    /// (≥ N) ones for bias broadcasts and bias gradients on cuBLAS; grown, never shrunk.
    ones: Mutex<Option<CudaSlice<f32>>>,
    /// Page-locked host memory for large copies; grown, never shrunk.
    staging: Mutex<Option<PinnedHostSlice<f32>>>,
    memory: Memory,
    stream: Arc<CudaStream>,
    ctx: Arc<CudaContext>,
    ordinal: usize,
    device_name: String,
    /// MEDTRAIN_CUDA_SYNC=1: wait for the stream after every op, so an asynchronous failure is
    /// reported by the op that caused it.
    sync: bool,
}

/// MEDTRAIN_CUDA_SYNC: "1", "true" or "yes" turn synchronous checking on; unset or anything else off.
pub fn sync_from(value: Option<&str>) -> bool {
    matches!(
        value.map(|v| v.trim().to_ascii_lowercase()).as_deref(),
        Some("1" | "true" | "yes")
    )
}

/// What went wrong after `op` returned: an error cudarc recorded (`recorded`: from a drop or a
/// call that could not return it, at or before `op`) or one the stream reported when synchronised
/// after `op` (MEDTRAIN_CUDA_SYNC=1). Names the error by its code only: cudarc's `Debug` asks the
/// driver for a description, which needs libcuda.
pub fn after_op_error(op: &'static str, recorded: bool, e: &cudarc::driver::DriverError) -> BackendError {
    let reason = if recorded {
        format!(
            "{:?}, recorded by the CUDA context during or before this op (a release or an earlier \
             asynchronous failure); rerun with MEDTRAIN_CUDA_SYNC=1 to find the op that caused it",
            e.0
        )
    } else {
        format!(
            "{:?}, reported when the stream was synchronised after this op (MEDTRAIN_CUDA_SYNC=1)",
            e.0
        )
    };
    BackendError::Device {
        op,
        backend: "CUDA driver",
        reason,
    }
}

/// A raw device pointer of a read-only view.
///
/// With event tracking off (see `CudaBackend::new`) the guard `device_ptr` returns records nothing, so
/// dropping it at once is correct; the pointer stays valid while `v`'s buffer lives.
fn rd(v: &CudaView<'_, f32>, s: &CudaStream) -> *const c_void {
    let (p, _guard) = v.device_ptr(s);
    p as *const c_void
}

fn wr(v: &mut CudaViewMut<'_, f32>, s: &CudaStream) -> *mut c_void {
    let (p, _guard) = v.device_ptr_mut(s);
    p as *mut c_void
}

impl CudaBackend {
    /// A backend on device `ordinal` (of those visible). Call `probe()` first: creating a context
    /// without the driver library panics inside cudarc.
    pub fn new(ordinal: usize) -> Result<CudaBackend> {
        let ctx = CudaContext::new(ordinal).map_err(driver("cuCtxCreate"))?;
        // SAFETY: the backend uses exactly one stream, created next, for every allocation, copy and
        // launch, so stream-ordering alone orders every access; no buffer exists yet.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().map_err(driver("cuStreamCreate"))?;
        let blas = CudaBlas::new(stream.clone()).map_err(|e| BackendError::Device {
            op: "cublasCreate",
            backend: "cuBLAS",
            reason: format!("{e:?}"),
        })?;
        // SAFETY: a live handle; CUBLAS_DEFAULT_MATH never uses TF32 tensor cores for sgemm.
        let status = unsafe {
            cudarc::cublas::sys::cublasSetMathMode(
                *blas.handle(),
                cudarc::cublas::sys::cublasMath_t::CUBLAS_DEFAULT_MATH,
            )
        };
        linear::check("cublasSetMathMode", status.result())?;
        let handle = cudnn::Handle::new(&stream)?;
        let kernels = kernels::Kernels::new(&ctx)?;
        let device_name = ctx.name().unwrap_or_else(|_| "unknown CUDA device".into());
        let (free, total) = ctx.mem_get_info().map_err(driver("cuMemGetInfo"))?;
        Ok(CudaBackend {
            dnn: Mutex::new(Dnn {
                handle,
                plans: HashMap::new(),
                bn: HashMap::new(),
                workspace: None,
            }),
            blas: Mutex::new(blas),
            kernels,
            ones: Mutex::new(None),
            staging: Mutex::new(None),
            memory: Memory {
                baseline: (total - free) as u64,
                peak: AtomicU64::new(0),
                allocations: AtomicU64::new(0),
            },
            stream,
            ctx,
            ordinal,
            device_name,
            sync: sync_from(std::env::var("MEDTRAIN_CUDA_SYNC").ok().as_deref()),
        })
    }

    /// Runs one op, then checks what it left behind: any error the context recorded (cudarc records
    /// errors it cannot return, from drops for instance) and, with MEDTRAIN_CUDA_SYNC=1, the stream's
    /// state after waiting for it. Either is reported under `op`.
    fn done<T>(&self, op: &'static str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let out = f()?;
        self.ctx.check_err().map_err(|e| after_op_error(op, true, &e))?;
        if self.sync {
            self.stream
                .synchronize()
                .map_err(|e| after_op_error(op, false, &e))?;
        }
        Ok(out)
    }

    /// Probes, picks this rank's GPU from its node-local rank and the launcher's environment, creates
    /// the backend and runs the start-up self-test (`selftest`) on it. The error says why CUDA cannot
    /// be used (missing library, no device, a rank layout that does not fit the GPUs, a failed op with
    /// its library, version, SM and remedy). Every verb that trains or infers opens its GPU here.
    pub fn for_local_rank(local_rank: usize, local_size: usize) -> std::result::Result<CudaBackend, String> {
        let b = CudaBackend::for_local_rank_unchecked(local_rank, local_size)?;
        let passed = b.self_test().map_err(|e| e.to_string())?;
        if let Some(w) = &passed.warning {
            tracing::warn!("GPU self-test: {w}");
        }
        tracing::info!(
            ms = format!("{:.1}", passed.seconds * 1e3),
            ops = passed.ops.len(),
            "GPU self-test passed"
        );
        Ok(b)
    }

    /// `for_local_rank` without the self-test: for `bench parity | curve | step`, which are the
    /// diagnosis when the self-test fails.
    pub fn for_local_rank_unchecked(
        local_rank: usize,
        local_size: usize,
    ) -> std::result::Result<CudaBackend, String> {
        let info = probe().map_err(|e| e.to_string())?;
        let ordinal = select::select_from_env(local_rank, local_size, info.visible_devices)?;
        CudaBackend::new(ordinal).map_err(|e| e.to_string())
    }

    /// The start-up self-test on this backend against the CPU reference.
    pub fn self_test(&self) -> std::result::Result<selftest::Passed, selftest::Failed> {
        selftest::run(self, &self.facts())
    }

    /// The device, its SM and the versions and files of the libraries in use.
    pub fn facts(&self) -> selftest::DeviceFacts {
        let sm = self
            .ctx
            .compute_capability()
            .ok()
            .map(|(major, minor)| (major * 10 + minor) as u32);
        // SAFETY: cudnnGetVersion has no arguments and no preconditions; the library is loaded (the
        // backend holds a cuDNN handle).
        let cudnn = Some(unsafe { cudarc::cudnn::sys::cudnnGetVersion() } as u32);
        let cublas = {
            use cudarc::cublas::sys::{cublasGetProperty, libraryPropertyType as P};
            let mut v = [0i32; 3];
            let parts = [P::MAJOR_VERSION, P::MINOR_VERSION, P::PATCH_LEVEL];
            // SAFETY: each call writes one int to a live location.
            let ok = parts.iter().zip(v.iter_mut()).all(|(&p, out)| {
                let status = unsafe { cublasGetProperty(p, out) };
                status == cudarc::cublas::sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS
            });
            ok.then(|| format!("{}.{}.{}", v[0], v[1], v[2]))
        };
        let files = libs::preload_build_libraries()
            .unwrap_or_default()
            .into_iter()
            .map(|(lib, path)| (format!("{lib:?}"), path.display().to_string()))
            .collect();
        selftest::DeviceFacts {
            device_name: self.device_name.clone(),
            sm,
            cudnn,
            cublas,
            nvrtc: compile::nvrtc_version().ok().map(|v| v.to_string()),
            driver: compile::driver_version().ok(),
            files,
        }
    }

    pub fn ordinal(&self) -> usize {
        self.ordinal
    }
    pub fn device_name(&self) -> &str {
        &self.device_name
    }
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }
    /// The custom kernels (`kernels/*.cu`) of this backend's device, for launches outside the
    /// `Backend` trait (Grad-CAM).
    pub fn kernels(&self) -> &kernels::Kernels {
        &self.kernels
    }

    /// Waits for every enqueued call.
    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().map_err(driver("cuStreamSynchronize"))
    }

    /// Samples device memory in use; called after every allocation the backend makes.
    fn note_allocation(&self) {
        self.memory.allocations.fetch_add(1, Ordering::Relaxed);
        if let Ok((free, total)) = self.ctx.mem_get_info() {
            let used = ((total - free) as u64).saturating_sub(self.memory.baseline);
            self.memory.peak.fetch_max(used, Ordering::Relaxed);
        }
    }

    /// Page-locked host memory of at least `len` floats, allocated on first use and grown as needed.
    /// The gradient buckets' device→host copies land here, at full PCIe speed.
    pub fn pinned_staging(&self, len: usize) -> Result<MutexGuard<'_, Option<PinnedHostSlice<f32>>>> {
        let mut g = self.staging.lock().map_err(|_| poisoned("pinned staging"))?;
        if g.as_ref().is_none_or(|p| p.len() < len) {
            *g = None;
            // SAFETY: flags 0 is plain page-locked memory (not write-combined: the CPU reads it back);
            // its contents are unset, and every use writes before it reads.
            let p = unsafe { self.ctx.alloc_pinned_with_flags::<f32>(len, 0) }
                .map_err(driver("cuMemHostAlloc"))?;
            *g = Some(p);
        }
        Ok(g)
    }

    /// Makes the backend's context current on the calling thread: raw driver, cuDNN and cuBLAS calls
    /// act on the current context, and the backend may be called from a thread other than the one
    /// that created it.
    fn bind(&self) -> Result<()> {
        self.ctx.bind_to_thread().map_err(driver("cuCtxSetCurrent"))
    }

    fn dnn(&self) -> Result<MutexGuard<'_, Dnn>> {
        self.bind()?;
        self.dnn.lock().map_err(|_| poisoned("cuDNN state"))
    }

    /// The plan of a convolution shape (made on first use) with the workspace grown to fit it.
    fn conv_plan<'g>(&self, dnn: &'g mut Dnn, p: &ConvParams) -> Result<&'g conv::ConvPlan> {
        let key = conv::key(p);
        if !dnn.plans.contains_key(&key) {
            let plan = conv::ConvPlan::new(&dnn.handle, p)?;
            let need = plan.max_workspace();
            if dnn.workspace.as_ref().is_none_or(|w| w.len() < need) {
                dnn.workspace = None;
                // SAFETY: workspace contents are never read before cuDNN writes them.
                let ws = unsafe { self.stream.alloc::<u8>(need.max(1)) }.map_err(driver("cuMemAlloc"))?;
                dnn.workspace = Some(ws);
                self.note_allocation();
            }
            dnn.plans.insert(key, plan);
        }
        Ok(&dnn.plans[&key])
    }

    /// (≥ n) ones on the device.
    fn ones(&self, n: usize) -> Result<MutexGuard<'_, Option<CudaSlice<f32>>>> {
        let mut g = self.ones.lock().map_err(|_| poisoned("ones"))?;
        if g.as_ref().is_none_or(|o| o.len() < n) {
            let o = self
                .stream
                .clone_htod(&vec![1.0f32; n])
                .map_err(driver("cuMemcpyHtoD"))?;
            *g = Some(o);
            self.note_allocation();
        }
        Ok(g)
    }

    fn blas(&self) -> Result<MutexGuard<'_, CudaBlas>> {
        self.bind()?;
        self.blas.lock().map_err(|_| poisoned("cuBLAS handle"))
    }
}

fn check_conv(p: &ConvParams, x: usize, w: usize, y: usize, bias: Option<usize>) -> Result<()> {
    if p.groups == 0 || p.c_in % p.groups != 0 || p.c_out % p.groups != 0 {
        return Err(BackendError::Params {
            op: "conv",
            reason: format!(
                "{} groups do not divide {} → {} channels",
                p.groups, p.c_in, p.c_out
            ),
        });
    }
    check_len("conv", "x", p.input_len(), x)?;
    check_len("conv", "w", p.weight_len(), w)?;
    check_len("conv", "y", p.output_len(), y)?;
    if let Some(b) = bias {
        check_len("conv", "bias", p.c_out as usize, b)?;
    }
    Ok(())
}

impl Backend for CudaBackend {
    type Buf = CudaSlice<f32>;
    type View<'a> = CudaView<'a, f32>;
    type ViewMut<'a> = CudaViewMut<'a, f32>;

    fn name(&self) -> &'static str {
        "cuda"
    }
    fn dtype(&self) -> DType {
        DType::F32
    }
    fn peak_device_bytes(&self) -> Option<u64> {
        Some(self.memory.peak.load(Ordering::Relaxed))
    }
    fn device_allocations(&self) -> Option<u64> {
        Some(self.memory.allocations.load(Ordering::Relaxed))
    }

    // ---- storage ----
    fn zeros(&self, len: usize) -> Result<CudaSlice<f32>> {
        self.done("zeros", || {
            let buf = if len == 0 {
                self.stream.null()
            } else {
                self.stream.alloc_zeros(len)
            }
            .map_err(driver("cuMemAlloc"))?;
            self.note_allocation();
            Ok(buf)
        })
    }
    fn len(&self, buf: &CudaSlice<f32>) -> usize {
        buf.len()
    }
    fn upload(&self, host: &[f32]) -> Result<CudaSlice<f32>> {
        self.done("upload", || {
            let mut buf = self.zeros(host.len())?;
            self.upload_into(host, buf.as_view_mut())?;
            Ok(buf)
        })
    }
    fn download(&self, x: CudaView<'_, f32>) -> Result<Vec<f32>> {
        self.done("download", || {
            let mut out = vec![0.0; x.len()];
            self.download_into(x, &mut out)?;
            Ok(out)
        })
    }
    fn download_into(&self, x: CudaView<'_, f32>, out: &mut [f32]) -> Result<()> {
        self.done("download_into", || {
            check_len("download_into", "out", x.len(), out.len())?;
            if out.is_empty() {
                return Ok(());
            }
            self.bind()?;
            let src = rd(&x, &self.stream) as cudarc::driver::sys::CUdeviceptr;
            if out.len() < PINNED_MIN_FLOATS {
                // SAFETY: `src` holds out.len() floats; the stream is synchronised before `out` is used.
                unsafe { cudarc::driver::result::memcpy_dtoh_async(out, src, self.stream.cu_stream()) }
                    .map_err(driver("cuMemcpyDtoH"))?;
                return self.synchronize();
            }
            let mut staging = self.pinned_staging(out.len())?;
            let pinned = staging.as_mut().expect("staging allocated above");
            let host = pinned.as_mut_slice().map_err(driver("pinned staging"))?;
            // SAFETY: `host` is page-locked memory of at least out.len() floats, owned by the staging lock
            // held until the copy has completed (synchronised below).
            unsafe {
                cudarc::driver::result::memcpy_dtoh_async(
                    &mut host[..out.len()],
                    src,
                    self.stream.cu_stream(),
                )
            }
            .map_err(driver("cuMemcpyDtoH"))?;
            self.synchronize()?;
            out.copy_from_slice(&host[..out.len()]);
            Ok(())
        })
    }
    fn upload_into(&self, host: &[f32], mut y: CudaViewMut<'_, f32>) -> Result<()> {
        self.done("upload_into", || {
            check_len("upload_into", "y", host.len(), y.len())?;
            if host.is_empty() {
                return Ok(());
            }
            self.bind()?;
            let dst = wr(&mut y, &self.stream) as cudarc::driver::sys::CUdeviceptr;
            if host.len() < PINNED_MIN_FLOATS {
                // SAFETY: `dst` holds host.len() floats; the copy is complete before return (synchronised),
                // so the caller may reuse `host` at once.
                unsafe { cudarc::driver::result::memcpy_htod_async(dst, host, self.stream.cu_stream()) }
                    .map_err(driver("cuMemcpyHtoD"))?;
                return self.synchronize();
            }
            let mut staging = self.pinned_staging(host.len())?;
            let pinned = staging.as_mut().expect("staging allocated above");
            let buf = pinned.as_mut_slice().map_err(driver("pinned staging"))?;
            buf[..host.len()].copy_from_slice(host);
            // SAFETY: as above; the staging lock is held until the copy has completed.
            unsafe {
                cudarc::driver::result::memcpy_htod_async(dst, &buf[..host.len()], self.stream.cu_stream())
            }
            .map_err(driver("cuMemcpyHtoD"))?;
            self.synchronize()
        })
    }
    fn view<'a>(&self, buf: &'a CudaSlice<f32>, range: Range<usize>) -> CudaView<'a, f32> {
        buf.slice(range)
    }
    fn view_mut<'a>(&self, buf: &'a mut CudaSlice<f32>, range: Range<usize>) -> CudaViewMut<'a, f32> {
        buf.slice_mut(range)
    }
    fn split_at_mut<'a>(
        &self,
        mut v: CudaViewMut<'a, f32>,
        mid: usize,
    ) -> (CudaViewMut<'a, f32>, CudaViewMut<'a, f32>)
    where
        Self: 'a,
    {
        let (a, b) = v.split_at_mut(mid);
        // SAFETY: cudarc's `split_at_mut` borrows the view instead of consuming it, which would tie
        // the halves to this stack frame. The halves point into the buffer `v` borrows for 'a, do not
        // overlap, and `v` (which has no destructor) is not used again, so 'a is their true lifetime.
        unsafe {
            (
                std::mem::transmute::<CudaViewMut<'_, f32>, CudaViewMut<'a, f32>>(a),
                std::mem::transmute::<CudaViewMut<'_, f32>, CudaViewMut<'a, f32>>(b),
            )
        }
    }
    fn fill(&self, mut y: CudaViewMut<'_, f32>, value: f32) -> Result<()> {
        self.done("fill", || {
            if y.is_empty() {
                return Ok(());
            }
            self.bind()?;
            let dst = wr(&mut y, &self.stream) as cudarc::driver::sys::CUdeviceptr;
            // SAFETY: `dst` holds y.len() 32-bit words; a 32-bit memset writes value's bit pattern to each.
            unsafe {
                cudarc::driver::sys::cuMemsetD32Async(dst, value.to_bits(), y.len(), self.stream.cu_stream())
                    .result()
            }
            .map_err(driver("cuMemsetD32"))
        })
    }
    fn copy(&self, x: CudaView<'_, f32>, mut y: CudaViewMut<'_, f32>) -> Result<()> {
        self.done("copy", || {
            check_len("copy", "y", x.len(), y.len())?;
            self.stream
                .memcpy_dtod(&x, &mut y)
                .map_err(driver("cuMemcpyDtoD"))
        })
    }

    // ---- convolution ----
    fn conv_forward(
        &self,
        p: &ConvParams,
        x: CudaView<'_, f32>,
        w: CudaView<'_, f32>,
        bias: Option<CudaView<'_, f32>>,
        mut y: CudaViewMut<'_, f32>,
    ) -> Result<()> {
        self.done("conv_forward", || {
            check_conv(p, x.len(), w.len(), y.len(), bias.as_ref().map(|b| b.len()))?;
            let s = &self.stream;
            let mut dnn = self.dnn()?;
            self.conv_plan(&mut dnn, p)?;
            let dnn = &mut *dnn;
            let plan = &dnn.plans[&conv::key(p)];
            let ws = dnn.workspace.as_mut().expect("workspace sized with the plan");
            let ws_bytes = ws.len();
            let (ws_ptr, _g) = ws.device_ptr_mut(s);
            let ptrs = conv::ConvPtrs {
                x: rd(&x, s),
                w: rd(&w, s),
                y: wr(&mut y, s),
                bias: bias.as_ref().map(|b| rd(b, s)),
                workspace: ws_ptr as *mut c_void,
                workspace_bytes: ws_bytes,
            };
            // SAFETY: lengths checked against `p`, which the plan's descriptors were built from; the
            // workspace holds at least the plan's need (grown in conv_plan); all on the handle's stream.
            unsafe { conv::forward(&dnn.handle, plan, &ptrs) }
        })
    }
    fn conv_backward(
        &self,
        p: &ConvParams,
        x: CudaView<'_, f32>,
        w: CudaView<'_, f32>,
        dy: CudaView<'_, f32>,
        mut dx: Option<CudaViewMut<'_, f32>>,
        mut dw: CudaViewMut<'_, f32>,
        mut dbias: Option<CudaViewMut<'_, f32>>,
    ) -> Result<()> {
        self.done("conv_backward", || {
            check_conv(p, x.len(), w.len(), dy.len(), dbias.as_ref().map(|b| b.len()))?;
            check_len("conv backward", "dw", p.weight_len(), dw.len())?;
            if let Some(dx) = &dx {
                check_len("conv backward", "dx", p.input_len(), dx.len())?;
            }
            let s = &self.stream;
            let mut dnn = self.dnn()?;
            self.conv_plan(&mut dnn, p)?;
            let dnn = &mut *dnn;
            let plan = &dnn.plans[&conv::key(p)];
            let ws = dnn.workspace.as_mut().expect("workspace sized with the plan");
            let ws_bytes = ws.len();
            let (ws_ptr, _g) = ws.device_ptr_mut(s);
            let ptrs = conv::ConvBackPtrs {
                x: rd(&x, s),
                w: rd(&w, s),
                dy: rd(&dy, s),
                dx: dx.as_mut().map(|v| wr(v, s)),
                dw: wr(&mut dw, s),
                dbias: dbias.as_mut().map(|v| wr(v, s)),
                workspace: ws_ptr as *mut c_void,
                workspace_bytes: ws_bytes,
            };
            // SAFETY: as conv_forward.
            unsafe { conv::backward(&dnn.handle, plan, &ptrs) }
        })
    }

    // ---- batch normalisation ----
    fn batchnorm_forward_train(
        &self,
        p: &BatchNormParams,
        x: CudaView<'_, f32>,
        gamma: CudaView<'_, f32>,
        beta: CudaView<'_, f32>,
        mut y: CudaViewMut<'_, f32>,
        mut saved_mean: CudaViewMut<'_, f32>,
        mut saved_invstd: CudaViewMut<'_, f32>,
        mut running_mean: CudaViewMut<'_, f32>,
        mut running_var: CudaViewMut<'_, f32>,
    ) -> Result<()> {
        self.done("batchnorm_forward_train", || {
            check_bn(
                p,
                x.len(),
                y.len(),
                &[
                    gamma.len(),
                    beta.len(),
                    saved_mean.len(),
                    saved_invstd.len(),
                    running_mean.len(),
                    running_var.len(),
                ],
            )?;
            check_batch_stats(p)?;
            let s = &self.stream;
            let mut dnn = self.dnn()?;
            let dnn = &mut *dnn;
            let d = bn_descs(&mut dnn.bn, p)?;
            let ptrs = batchnorm::TrainPtrs {
                x: rd(&x, s),
                gamma: rd(&gamma, s),
                beta: rd(&beta, s),
                y: wr(&mut y, s),
                saved_mean: wr(&mut saved_mean, s),
                saved_invstd: wr(&mut saved_invstd, s),
                running_mean: wr(&mut running_mean, s),
                running_var: wr(&mut running_var, s),
            };
            // SAFETY: lengths checked against `p`, which the descriptors describe; one stream.
            unsafe { batchnorm::forward_train(&dnn.handle, p, d, &ptrs) }
        })
    }
    fn batchnorm_forward_infer(
        &self,
        p: &BatchNormParams,
        x: CudaView<'_, f32>,
        gamma: CudaView<'_, f32>,
        beta: CudaView<'_, f32>,
        running_mean: CudaView<'_, f32>,
        running_var: CudaView<'_, f32>,
        mut y: CudaViewMut<'_, f32>,
    ) -> Result<()> {
        self.done("batchnorm_forward_infer", || {
            check_bn(
                p,
                x.len(),
                y.len(),
                &[gamma.len(), beta.len(), running_mean.len(), running_var.len()],
            )?;
            let s = &self.stream;
            let mut dnn = self.dnn()?;
            let dnn = &mut *dnn;
            let d = bn_descs(&mut dnn.bn, p)?;
            let ptrs = batchnorm::InferPtrs {
                x: rd(&x, s),
                gamma: rd(&gamma, s),
                beta: rd(&beta, s),
                running_mean: rd(&running_mean, s),
                running_var: rd(&running_var, s),
                y: wr(&mut y, s),
            };
            // SAFETY: as batchnorm_forward_train.
            unsafe { batchnorm::forward_infer(&dnn.handle, p, d, &ptrs) }
        })
    }
    fn batchnorm_backward(
        &self,
        p: &BatchNormParams,
        x: CudaView<'_, f32>,
        gamma: CudaView<'_, f32>,
        saved_mean: CudaView<'_, f32>,
        saved_invstd: CudaView<'_, f32>,
        dy: CudaView<'_, f32>,
        mut dx: CudaViewMut<'_, f32>,
        mut dgamma: CudaViewMut<'_, f32>,
        mut dbeta: CudaViewMut<'_, f32>,
    ) -> Result<()> {
        self.done("batchnorm_backward", || {
            check_bn(
                p,
                x.len(),
                dy.len(),
                &[
                    gamma.len(),
                    saved_mean.len(),
                    saved_invstd.len(),
                    dgamma.len(),
                    dbeta.len(),
                ],
            )?;
            check_len("batchnorm backward", "dx", p.len(), dx.len())?;
            check_batch_stats(p)?;
            let s = &self.stream;
            let mut dnn = self.dnn()?;
            let dnn = &mut *dnn;
            let d = bn_descs(&mut dnn.bn, p)?;
            let ptrs = batchnorm::BackwardPtrs {
                x: rd(&x, s),
                gamma: rd(&gamma, s),
                saved_mean: rd(&saved_mean, s),
                saved_invstd: rd(&saved_invstd, s),
                dy: rd(&dy, s),
                dx: wr(&mut dx, s),
                dgamma: wr(&mut dgamma, s),
                dbeta: wr(&mut dbeta, s),
            };
            // SAFETY: as batchnorm_forward_train.
            unsafe { batchnorm::backward(&dnn.handle, p, d, &ptrs) }
        })
    }

    // ---- activations ----
    fn leaky_relu_forward(&self, slope: f32, x: CudaView<'_, f32>, y: CudaViewMut<'_, f32>) -> Result<()> {
        self.done("leaky_relu_forward", || {
            kernels::leaky_relu_forward(&self.kernels, &self.stream, slope, x, y)
        })
    }
    fn leaky_relu_backward(
        &self,
        slope: f32,
        x: CudaView<'_, f32>,
        dy: CudaView<'_, f32>,
        dx: CudaViewMut<'_, f32>,
    ) -> Result<()> {
        self.done("leaky_relu_backward", || {
            kernels::leaky_relu_backward(&self.kernels, &self.stream, slope, x, dy, dx)
        })
    }

    // ---- pooling: kernels/pool.cu, not cuDNN (its max tie rule is unspecified, and its backward reads
    // x and y, which avg_pool_backward does not receive) ----
    fn max_pool_forward(&self, p: &PoolParams, x: CudaView<'_, f32>, y: CudaViewMut<'_, f32>) -> Result<()> {
        self.done("max_pool_forward", || {
            kernels::max_pool_forward(&self.kernels, &self.stream, p, x, y)
        })
    }
    fn max_pool_backward(
        &self,
        p: &PoolParams,
        x: CudaView<'_, f32>,
        dy: CudaView<'_, f32>,
        dx: CudaViewMut<'_, f32>,
    ) -> Result<()> {
        self.done("max_pool_backward", || {
            kernels::max_pool_backward(&self.kernels, &self.stream, p, x, dy, dx)
        })
    }
    fn avg_pool_forward(&self, p: &PoolParams, x: CudaView<'_, f32>, y: CudaViewMut<'_, f32>) -> Result<()> {
        self.done("avg_pool_forward", || {
            kernels::avg_pool_forward(&self.kernels, &self.stream, p, x, y)
        })
    }
    fn avg_pool_backward(
        &self,
        p: &PoolParams,
        dy: CudaView<'_, f32>,
        dx: CudaViewMut<'_, f32>,
    ) -> Result<()> {
        self.done("avg_pool_backward", || {
            kernels::avg_pool_backward(&self.kernels, &self.stream, p, dy, dx)
        })
    }
    fn global_avg_pool_forward(
        &self,
        spatial: usize,
        x: CudaView<'_, f32>,
        y: CudaViewMut<'_, f32>,
    ) -> Result<()> {
        self.done("global_avg_pool_forward", || {
            kernels::global_avg_pool_forward(&self.kernels, &self.stream, spatial, x, y)
        })
    }
    fn global_avg_pool_backward(
        &self,
        spatial: usize,
        dy: CudaView<'_, f32>,
        dx: CudaViewMut<'_, f32>,
    ) -> Result<()> {
        self.done("global_avg_pool_backward", || {
            kernels::global_avg_pool_backward(&self.kernels, &self.stream, spatial, dy, dx)
        })
    }

    // ---- fully connected ----
    fn linear_forward(
        &self,
        p: &LinearParams,
        x: CudaView<'_, f32>,
        w: CudaView<'_, f32>,
        bias: Option<CudaView<'_, f32>>,
        mut y: CudaViewMut<'_, f32>,
    ) -> Result<()> {
        self.done("linear_forward", || {
            let (n, i, o) = (p.n as usize, p.in_features as usize, p.out_features as usize);
            check_len("linear", "x", n * i, x.len())?;
            check_len("linear", "w", o * i, w.len())?;
            check_len("linear", "y", n * o, y.len())?;
            if let Some(b) = &bias {
                check_len("linear", "bias", o, b.len())?;
            }
            let s = &self.stream;
            let blas = self.blas()?;
            let h = *blas.handle();
            let yp = wr(&mut y, s) as *mut f32;
            // SAFETY: lengths checked above; all on the handle's stream.
            unsafe { linear::forward(h, p, rd(&x, s) as *const f32, rd(&w, s) as *const f32, yp)? };
            if let Some(b) = &bias {
                let ones = self.ones(n)?;
                let ones = ones.as_ref().expect("ones allocated above");
                let (op, _g) = ones.device_ptr(s);
                // SAFETY: `ones` holds ≥ N ones; bias holds `out` floats.
                unsafe { linear::forward_bias(h, p, rd(b, s) as *const f32, op as *const f32, yp)? };
            }
            Ok(())
        })
    }
    fn linear_backward(
        &self,
        p: &LinearParams,
        x: CudaView<'_, f32>,
        w: CudaView<'_, f32>,
        dy: CudaView<'_, f32>,
        mut dx: Option<CudaViewMut<'_, f32>>,
        mut dw: CudaViewMut<'_, f32>,
        mut dbias: Option<CudaViewMut<'_, f32>>,
    ) -> Result<()> {
        self.done("linear_backward", || {
            let (n, i, o) = (p.n as usize, p.in_features as usize, p.out_features as usize);
            check_len("linear backward", "x", n * i, x.len())?;
            check_len("linear backward", "w", o * i, w.len())?;
            check_len("linear backward", "dy", n * o, dy.len())?;
            check_len("linear backward", "dw", o * i, dw.len())?;
            if let Some(d) = &dx {
                check_len("linear backward", "dx", n * i, d.len())?;
            }
            if let Some(d) = &dbias {
                check_len("linear backward", "dbias", o, d.len())?;
            }
            let s = &self.stream;
            let blas = self.blas()?;
            let h = *blas.handle();
            let (xp, wp, dyp) = (
                rd(&x, s) as *const f32,
                rd(&w, s) as *const f32,
                rd(&dy, s) as *const f32,
            );
            // SAFETY: lengths checked above; all on the handle's stream.
            unsafe {
                if let Some(d) = dx.as_mut() {
                    linear::backward_data(h, p, wp, dyp, wr(d, s) as *mut f32)?;
                }
                linear::backward_filter(h, p, xp, dyp, wr(&mut dw, s) as *mut f32)?;
            }
            if let Some(db) = dbias.as_mut() {
                let ones = self.ones(n)?;
                let ones = ones.as_ref().expect("ones allocated above");
                let (op, _g) = ones.device_ptr(s);
                // SAFETY: `ones` holds ≥ N ones; dbias holds `out` floats.
                unsafe { linear::backward_bias(h, p, dyp, op as *const f32, wr(db, s) as *mut f32)? };
            }
            Ok(())
        })
    }

    // ---- dropout, residual add, concat ----
    fn dropout_forward(
        &self,
        p: &DropoutParams,
        x: CudaView<'_, f32>,
        y: CudaViewMut<'_, f32>,
    ) -> Result<()> {
        self.done("dropout_forward", || {
            kernels::dropout_forward(&self.kernels, &self.stream, p, x, y)
        })
    }
    fn dropout_backward(
        &self,
        p: &DropoutParams,
        dy: CudaView<'_, f32>,
        dx: CudaViewMut<'_, f32>,
    ) -> Result<()> {
        self.done("dropout_backward", || {
            kernels::dropout_backward(&self.kernels, &self.stream, p, dy, dx)
        })
    }
    fn add(&self, a: CudaView<'_, f32>, b: CudaView<'_, f32>, y: CudaViewMut<'_, f32>) -> Result<()> {
        self.done("add", || kernels::add(&self.kernels, &self.stream, a, b, y))
    }
    fn accumulate(&self, x: CudaView<'_, f32>, y: CudaViewMut<'_, f32>) -> Result<()> {
        self.done("accumulate", || {
            kernels::accumulate(&self.kernels, &self.stream, x, y)
        })
    }
    fn concat_channels_forward(
        &self,
        n: usize,
        spatial: usize,
        a: CudaView<'_, f32>,
        ca: usize,
        b: CudaView<'_, f32>,
        cb: usize,
        y: CudaViewMut<'_, f32>,
    ) -> Result<()> {
        self.done("concat_channels_forward", || {
            kernels::concat_channels_forward(&self.kernels, &self.stream, n, spatial, a, ca, b, cb, y)
        })
    }
    fn concat_channels_backward(
        &self,
        n: usize,
        spatial: usize,
        dy: CudaView<'_, f32>,
        ca: usize,
        cb: usize,
        da: CudaViewMut<'_, f32>,
        db: CudaViewMut<'_, f32>,
    ) -> Result<()> {
        self.done("concat_channels_backward", || {
            kernels::concat_channels_backward(&self.kernels, &self.stream, n, spatial, dy, ca, cb, da, db)
        })
    }

    // ---- losses ----
    fn cross_entropy(
        &self,
        p: &CrossEntropyParams,
        logits: CudaView<'_, f32>,
        targets: CudaView<'_, f32>,
        class_weights: Option<CudaView<'_, f32>>,
        dlogits: CudaViewMut<'_, f32>,
    ) -> Result<f32> {
        self.done("cross_entropy", || {
            kernels::cross_entropy(
                &self.kernels,
                &self.stream,
                p,
                logits,
                targets,
                class_weights,
                dlogits,
            )
        })
    }
    fn bce_with_logits(
        &self,
        p: &BceParams,
        logits: CudaView<'_, f32>,
        targets: CudaView<'_, f32>,
        mask: Option<CudaView<'_, f32>>,
        pos_weight: Option<CudaView<'_, f32>>,
        dlogits: CudaViewMut<'_, f32>,
    ) -> Result<f32> {
        self.done("bce_with_logits", || {
            kernels::bce_with_logits(
                &self.kernels,
                &self.stream,
                p,
                logits,
                targets,
                mask,
                pos_weight,
                dlogits,
            )
        })
    }
    fn regression_loss(
        &self,
        kind: RegressionLoss,
        pred: CudaView<'_, f32>,
        target: CudaView<'_, f32>,
        mask: Option<CudaView<'_, f32>>,
        dpred: CudaViewMut<'_, f32>,
    ) -> Result<f32> {
        self.done("regression_loss", || {
            kernels::regression_loss(&self.kernels, &self.stream, kind, pred, target, mask, dpred)
        })
    }
    fn cox_loss(
        &self,
        risk: CudaView<'_, f32>,
        time: CudaView<'_, f32>,
        event: CudaView<'_, f32>,
        drisk: CudaViewMut<'_, f32>,
    ) -> Result<f32> {
        self.done("cox_loss", || {
            kernels::cox_loss(&self.kernels, &self.stream, risk, time, event, drisk)
        })
    }

    // ---- optimizer updates ----
    fn sgd_step(
        &self,
        h: &SgdHyper,
        param: CudaViewMut<'_, f32>,
        grad: CudaView<'_, f32>,
        momentum: CudaViewMut<'_, f32>,
    ) -> Result<()> {
        self.done("sgd_step", || {
            kernels::sgd_step(&self.kernels, &self.stream, h, param, grad, momentum)
        })
    }
    fn adamw_step(
        &self,
        h: &AdamWHyper,
        param: CudaViewMut<'_, f32>,
        grad: CudaView<'_, f32>,
        m: CudaViewMut<'_, f32>,
        v: CudaViewMut<'_, f32>,
    ) -> Result<()> {
        self.done("adamw_step", || {
            kernels::adamw_step(&self.kernels, &self.stream, h, param, grad, m, v)
        })
    }
    fn sum_squares(&self, x: CudaView<'_, f32>) -> Result<f64> {
        self.done("sum_squares", || {
            kernels::sum_squares(&self.kernels, &self.stream, x)
        })
    }
    fn scale(&self, alpha: f32, y: CudaViewMut<'_, f32>) -> Result<()> {
        self.done("scale", || kernels::scale(&self.kernels, &self.stream, alpha, y))
    }
}

fn check_bn(p: &BatchNormParams, x: usize, y: usize, per_channel: &[usize]) -> Result<()> {
    check_len("batchnorm", "x", p.len(), x)?;
    check_len("batchnorm", "y", p.len(), y)?;
    for &len in per_channel {
        check_len("batchnorm", "per-channel vector", p.c as usize, len)?;
    }
    Ok(())
}

/// cuDNN refuses batch statistics over a single value (the unbiased variance divides by N·S − 1).
fn check_batch_stats(p: &BatchNormParams) -> Result<()> {
    if (p.n as usize) * (p.spatial as usize) < 2 {
        return Err(BackendError::Params {
            op: "batchnorm",
            reason: "batch statistics need at least two values per channel".into(),
        });
    }
    Ok(())
}

fn bn_descs<'a>(
    cache: &'a mut HashMap<[u32; 3], batchnorm::BnDescs>,
    p: &BatchNormParams,
) -> Result<&'a batchnorm::BnDescs> {
    Ok(match cache.entry([p.n, p.c, p.spatial]) {
        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
        std::collections::hash_map::Entry::Vacant(e) => e.insert(batchnorm::BnDescs::new(p)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_setting_is_parsed() {
        for v in ["1", "true", "Yes", " 1"] {
            assert!(sync_from(Some(v)), "{v}");
        }
        for v in ["0", "", "false", "sync"] {
            assert!(!sync_from(Some(v)), "{v}");
        }
        assert!(!sync_from(None));
    }

    #[test]
    fn errors_after_an_op_name_it_and_say_where_they_came_from() {
        use cudarc::driver::sys::CUresult as E;
        let e = cudarc::driver::DriverError(E::CUDA_ERROR_ILLEGAL_ADDRESS);
        let r = after_op_error("conv_forward", false, &e).to_string();
        assert!(r.starts_with("conv_forward: CUDA driver error"), "{r}");
        assert!(
            r.contains("CUDA_ERROR_ILLEGAL_ADDRESS") && r.contains("synchronised after this op"),
            "{r}"
        );
        let r = after_op_error("sgd_step", true, &e).to_string();
        assert!(
            r.starts_with("sgd_step:") && r.contains("MEDTRAIN_CUDA_SYNC=1"),
            "{r}"
        );
    }
}
