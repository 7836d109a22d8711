//! The seam between the model and the device: every layer, loss and optimizer update that a backend
//! (cpu | cuda) must provide, as forward/backward pairs over the backend's own storage.
//!
//! Conventions shared by every backend, stated once:
//! - Layouts are NCDHW (2D is depth 1) and weights use PyTorch's layouts.
//! - Forward writes (`=`) its outputs. Backward writes (`=`) input gradients and ACCUMULATES (`+=`) into
//!   parameter gradients, so micro-batches accumulate into one flat gradient buffer.
//! - Every reduction is deterministic: the same inputs give the same bits for any thread count.

pub mod cpu;
pub mod cuda;
pub mod kernels;
pub mod params;
pub mod parity;

use std::ops::Range;

pub use params::{BatchNormParams, ConvParams, Dims3, LinearParams, PoolParams};

/// Element type of a backend's storage. Only f32 exists today; f16/bf16 arrive with the CUDA backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    F32,
    F16,
    BF16,
}

impl DType {
    pub fn size_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("{op}: buffer `{what}` holds {got} elements but the layer parameters need {want}; check the layer's shape")]
    Length {
        op: &'static str,
        what: &'static str,
        want: usize,
        got: usize,
    },
    #[error("{op}: invalid parameters: {reason}")]
    Params { op: &'static str, reason: String },
    #[error("{op}: target {value} is not a class index below {classes}; check the label table")]
    Target {
        op: &'static str,
        value: f32,
        classes: usize,
    },
    /// A call into the device runtime (driver, cuDNN, cuBLAS, NVRTC) failed.
    #[error("{op}: {backend} error: {reason}")]
    Device {
        op: &'static str,
        backend: &'static str,
        reason: String,
    },
    #[error("backend {backend} does not support {what}; use the cpu backend or f32")]
    Unsupported { backend: &'static str, what: String },
}

pub type Result<T> = std::result::Result<T, BackendError>;

/// Check a buffer length against what the layer parameters imply.
pub fn check_len(op: &'static str, what: &'static str, want: usize, got: usize) -> Result<()> {
    if want == got {
        Ok(())
    } else {
        Err(BackendError::Length { op, what, want, got })
    }
}

/// Dropout: element i of a tensor is kept iff hash(seed, i) ≥ prob·2³²; kept values are scaled by 1/(1−p).
/// A counter-based mask needs no stored state, so backward and other devices regenerate it exactly.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DropoutParams {
    pub prob: f32,
    pub seed: u64,
}

/// Softmax cross-entropy over logits (N, classes); targets are class indices stored as f32.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CrossEntropyParams {
    pub n: u32,
    pub classes: u32,
    pub label_smoothing: f32,
}

/// Binary cross-entropy with logits over (N, labels); `mask` 0 marks an unknown label (see the
/// masked-loss rule on `Backend::bce_with_logits`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BceParams {
    pub n: u32,
    pub labels: u32,
}

/// Regression loss on healing scores: mean squared error, or Huber with threshold `delta` (PyTorch's),
/// over the known targets.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RegressionLoss {
    Mse,
    Huber { delta: f32 },
}

/// SGD as PyTorch defines it (dampening 0): g += wd·p; buf = μ·buf + g; p −= lr·(g + μ·buf | buf).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdHyper {
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
    pub nesterov: bool,
}

/// AdamW as PyTorch defines it (decoupled weight decay); `step` counts from 1.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWHyper {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    pub step: u32,
}

/// The operations a device provides. Views borrow ranges of owned buffers, so layers read and write
/// named views of the one flat parameter buffer and the one flat gradient buffer.
pub trait Backend: Send + Sync {
    /// Owned storage of `dtype()` elements (CPU: `Vec<f32>`; CUDA: `CudaSlice<f32>`).
    type Buf: Send + Sync;
    /// A read-only range of a buffer. Not required to be `Copy` (cudarc's `CudaView` is not); make a
    /// fresh view for each use.
    type View<'a>
    where
        Self: 'a;
    type ViewMut<'a>
    where
        Self: 'a;

    fn name(&self) -> &'static str;
    fn dtype(&self) -> DType;
    /// High-water mark of device memory this backend has used, in bytes; None for host backends.
    fn peak_device_bytes(&self) -> Option<u64> {
        None
    }
    /// Device allocations made through this backend so far (None for host backends): a training
    /// step that allocates nothing leaves it unchanged.
    fn device_allocations(&self) -> Option<u64> {
        None
    }

    // ---- storage ----
    fn zeros(&self, len: usize) -> Result<Self::Buf>;
    /// Elements held by a buffer.
    fn len(&self, buf: &Self::Buf) -> usize;
    fn upload(&self, host: &[f32]) -> Result<Self::Buf>;
    fn download(&self, x: Self::View<'_>) -> Result<Vec<f32>>;
    /// Copies a view into caller-owned host memory of the same length (no allocation; used by the
    /// gradient buckets and checkpoints).
    fn download_into(&self, x: Self::View<'_>, out: &mut [f32]) -> Result<()>;
    /// Copies host memory into a view of the same length.
    fn upload_into(&self, host: &[f32], y: Self::ViewMut<'_>) -> Result<()>;
    fn view<'a>(&self, buf: &'a Self::Buf, range: Range<usize>) -> Self::View<'a>;
    fn view_mut<'a>(&self, buf: &'a mut Self::Buf, range: Range<usize>) -> Self::ViewMut<'a>;
    /// Splits a mutable view at `mid` (adjacent parameters such as a weight and its bias).
    fn split_at_mut<'a>(&self, v: Self::ViewMut<'a>, mid: usize) -> (Self::ViewMut<'a>, Self::ViewMut<'a>)
    where
        Self: 'a;
    fn fill(&self, y: Self::ViewMut<'_>, value: f32) -> Result<()>;
    /// y = x
    fn copy(&self, x: Self::View<'_>, y: Self::ViewMut<'_>) -> Result<()>;

    // ---- convolution, 2D and 3D ----
    fn conv_forward(
        &self,
        p: &ConvParams,
        x: Self::View<'_>,
        w: Self::View<'_>,
        bias: Option<Self::View<'_>>,
        y: Self::ViewMut<'_>,
    ) -> Result<()>;
    #[allow(clippy::too_many_arguments)]
    fn conv_backward(
        &self,
        p: &ConvParams,
        x: Self::View<'_>,
        w: Self::View<'_>,
        dy: Self::View<'_>,
        dx: Option<Self::ViewMut<'_>>,
        dw: Self::ViewMut<'_>,
        dbias: Option<Self::ViewMut<'_>>,
    ) -> Result<()>;

    // ---- batch normalisation, 2D and 3D ----
    /// Normalises with batch statistics, saves mean and 1/σ per channel for backward, and updates the
    /// running statistics (unbiased variance, as PyTorch does).
    #[allow(clippy::too_many_arguments)]
    fn batchnorm_forward_train(
        &self,
        p: &BatchNormParams,
        x: Self::View<'_>,
        gamma: Self::View<'_>,
        beta: Self::View<'_>,
        y: Self::ViewMut<'_>,
        saved_mean: Self::ViewMut<'_>,
        saved_invstd: Self::ViewMut<'_>,
        running_mean: Self::ViewMut<'_>,
        running_var: Self::ViewMut<'_>,
    ) -> Result<()>;
    #[allow(clippy::too_many_arguments)]
    fn batchnorm_forward_infer(
        &self,
        p: &BatchNormParams,
        x: Self::View<'_>,
        gamma: Self::View<'_>,
        beta: Self::View<'_>,
        running_mean: Self::View<'_>,
        running_var: Self::View<'_>,
        y: Self::ViewMut<'_>,
    ) -> Result<()>;
    #[allow(clippy::too_many_arguments)]
    fn batchnorm_backward(
        &self,
        p: &BatchNormParams,
        x: Self::View<'_>,
        gamma: Self::View<'_>,
        saved_mean: Self::View<'_>,
        saved_invstd: Self::View<'_>,
        dy: Self::View<'_>,
        dx: Self::ViewMut<'_>,
        dgamma: Self::ViewMut<'_>,
        dbeta: Self::ViewMut<'_>,
    ) -> Result<()>;

    // ---- activations (ReLU is slope 0) ----
    fn leaky_relu_forward(&self, slope: f32, x: Self::View<'_>, y: Self::ViewMut<'_>) -> Result<()>;
    fn leaky_relu_backward(
        &self,
        slope: f32,
        x: Self::View<'_>,
        dy: Self::View<'_>,
        dx: Self::ViewMut<'_>,
    ) -> Result<()>;

    // ---- pooling ----
    fn max_pool_forward(&self, p: &PoolParams, x: Self::View<'_>, y: Self::ViewMut<'_>) -> Result<()>;
    /// Routes each output gradient to the first maximum of its window (PyTorch's tie rule).
    fn max_pool_backward(
        &self,
        p: &PoolParams,
        x: Self::View<'_>,
        dy: Self::View<'_>,
        dx: Self::ViewMut<'_>,
    ) -> Result<()>;
    fn avg_pool_forward(&self, p: &PoolParams, x: Self::View<'_>, y: Self::ViewMut<'_>) -> Result<()>;
    fn avg_pool_backward(&self, p: &PoolParams, dy: Self::View<'_>, dx: Self::ViewMut<'_>) -> Result<()>;
    /// (N·C, spatial) → (N·C)
    fn global_avg_pool_forward(&self, spatial: usize, x: Self::View<'_>, y: Self::ViewMut<'_>) -> Result<()>;
    fn global_avg_pool_backward(
        &self,
        spatial: usize,
        dy: Self::View<'_>,
        dx: Self::ViewMut<'_>,
    ) -> Result<()>;

    // ---- fully connected ----
    fn linear_forward(
        &self,
        p: &LinearParams,
        x: Self::View<'_>,
        w: Self::View<'_>,
        bias: Option<Self::View<'_>>,
        y: Self::ViewMut<'_>,
    ) -> Result<()>;
    #[allow(clippy::too_many_arguments)]
    fn linear_backward(
        &self,
        p: &LinearParams,
        x: Self::View<'_>,
        w: Self::View<'_>,
        dy: Self::View<'_>,
        dx: Option<Self::ViewMut<'_>>,
        dw: Self::ViewMut<'_>,
        dbias: Option<Self::ViewMut<'_>>,
    ) -> Result<()>;

    // ---- dropout, residual add, channel concat ----
    fn dropout_forward(&self, p: &DropoutParams, x: Self::View<'_>, y: Self::ViewMut<'_>) -> Result<()>;
    fn dropout_backward(&self, p: &DropoutParams, dy: Self::View<'_>, dx: Self::ViewMut<'_>) -> Result<()>;
    /// y = a + b (the residual join; its backward passes dy to both branches unchanged).
    fn add(&self, a: Self::View<'_>, b: Self::View<'_>, y: Self::ViewMut<'_>) -> Result<()>;
    /// y += x (joins gradients of a tensor used twice).
    fn accumulate(&self, x: Self::View<'_>, y: Self::ViewMut<'_>) -> Result<()>;
    /// (N, Ca, S) ⧺ (N, Cb, S) → (N, Ca+Cb, S)
    #[allow(clippy::too_many_arguments)]
    fn concat_channels_forward(
        &self,
        n: usize,
        spatial: usize,
        a: Self::View<'_>,
        ca: usize,
        b: Self::View<'_>,
        cb: usize,
        y: Self::ViewMut<'_>,
    ) -> Result<()>;
    #[allow(clippy::too_many_arguments)]
    fn concat_channels_backward(
        &self,
        n: usize,
        spatial: usize,
        dy: Self::View<'_>,
        ca: usize,
        cb: usize,
        da: Self::ViewMut<'_>,
        db: Self::ViewMut<'_>,
    ) -> Result<()>;

    // ---- losses: mean loss returned to the host, gradient written (=) to `dlogits` ----
    //
    // Masked losses (`bce_with_logits`, `regression_loss`), the rule stated once: an entry whose
    // `mask` is 0 is unknown (a missing label, or a padding row) and adds neither loss nor gradient,
    // and the mean is over the KNOWN entries only, never over all of them, so missing labels do not
    // shrink the loss or the effective learning rate. The returned loss and the written gradient are
    // that mean over the known entries of this call (0 and a zero gradient when none is known). A
    // global batch split over micro-batches and ranks has ONE denominator, its known entries summed
    // over every micro-batch and rank: the caller turns each call's mean into a sum (× its known
    // count) and divides the summed gradient by the global count (`train::run` does, with the count
    // in the step's small allreduce). `mask` None means every entry is known.
    fn cross_entropy(
        &self,
        p: &CrossEntropyParams,
        logits: Self::View<'_>,
        targets: Self::View<'_>,
        class_weights: Option<Self::View<'_>>,
        dlogits: Self::ViewMut<'_>,
    ) -> Result<f32>;
    #[allow(clippy::too_many_arguments)]
    fn bce_with_logits(
        &self,
        p: &BceParams,
        logits: Self::View<'_>,
        targets: Self::View<'_>,
        mask: Option<Self::View<'_>>,
        pos_weight: Option<Self::View<'_>>,
        dlogits: Self::ViewMut<'_>,
    ) -> Result<f32>;
    /// Over (N, targets); `mask` as for `bce_with_logits` (unknown targets may hold any value, NaN
    /// included).
    fn regression_loss(
        &self,
        kind: RegressionLoss,
        pred: Self::View<'_>,
        target: Self::View<'_>,
        mask: Option<Self::View<'_>>,
        dpred: Self::ViewMut<'_>,
    ) -> Result<f32>;
    /// Negative Cox partial log-likelihood with Breslow ties, averaged over events. The inputs are the
    /// whole global batch (gathered across ranks), so every risk set is complete; `event` is 1 for a
    /// death, 0 for censored follow-up.
    fn cox_loss(
        &self,
        risk: Self::View<'_>,
        time: Self::View<'_>,
        event: Self::View<'_>,
        drisk: Self::ViewMut<'_>,
    ) -> Result<f32>;

    // ---- optimizer updates on flat buffers ----
    fn sgd_step(
        &self,
        h: &SgdHyper,
        param: Self::ViewMut<'_>,
        grad: Self::View<'_>,
        momentum: Self::ViewMut<'_>,
    ) -> Result<()>;
    fn adamw_step(
        &self,
        h: &AdamWHyper,
        param: Self::ViewMut<'_>,
        grad: Self::View<'_>,
        m: Self::ViewMut<'_>,
        v: Self::ViewMut<'_>,
    ) -> Result<()>;
    /// Σ x² in f64, summed over fixed-size chunks in a fixed order.
    fn sum_squares(&self, x: Self::View<'_>) -> Result<f64>;
    /// y *= alpha
    fn scale(&self, alpha: f32, y: Self::ViewMut<'_>) -> Result<()>;
}
