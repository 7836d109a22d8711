//! The custom kernels (`kernels/*.cu`) as both of their users see them: the CUDA launch layer
//! (`backend::cuda::kernels`, which compiles the sources with NVRTC) and the host emulation
//! (`emulate`, the same sources built as C++ by build.rs and checked against the CPU backend).
//! Everything a launch computes on the host — the dropout threshold, AdamW's bias corrections, the
//! launch geometry, scratch sizes — is written once here, so both paths pass the kernels the same bits.

pub mod emulate;
#[cfg(test)]
mod tests;

use super::params::PoolParams;
use super::{
    check_len, AdamWHyper, BackendError, BceParams, CrossEntropyParams, DropoutParams, RegressionLoss, Result,
};

/// The dialect header every kernel source includes (`#include "mt.cuh"`).
pub const HEADER: &str = include_str!("../../kernels/mt.cuh");

/// One kernel source file and the entry points it defines.
#[derive(Clone, Copy, Debug)]
pub struct KernelSource {
    /// File name under `kernels/`.
    pub file: &'static str,
    pub source: &'static str,
    pub functions: &'static [&'static str],
}

pub const SOURCES: &[KernelSource] = &[
    KernelSource {
        file: "elementwise.cu",
        source: include_str!("../../kernels/elementwise.cu"),
        functions: &[
            "mt_fill",
            "mt_scale",
            "mt_add",
            "mt_accumulate",
            "mt_leaky_relu_forward",
            "mt_leaky_relu_backward",
            "mt_dropout",
            "mt_concat_channels_forward",
            "mt_concat_channels_backward",
        ],
    },
    KernelSource {
        file: "reduce.cu",
        source: include_str!("../../kernels/reduce.cu"),
        functions: &[
            "mt_global_avg_pool_forward",
            "mt_global_avg_pool_backward",
            "mt_sum_squares_partial",
            "mt_sum_partials",
        ],
    },
    KernelSource {
        file: "loss.cu",
        source: include_str!("../../kernels/loss.cu"),
        functions: &[
            "mt_cross_entropy_rows",
            "mt_cross_entropy_finish",
            "mt_scale_by_device_scalar",
            "mt_bce_elements",
            "mt_masked_mean_finish",
            "mt_scale_f64_by_device_scalar",
            "mt_regression_elements",
            "mt_cox_loss",
        ],
    },
    KernelSource {
        file: "optim.cu",
        source: include_str!("../../kernels/optim.cu"),
        functions: &["mt_sgd_step", "mt_adamw_step"],
    },
    KernelSource {
        file: "gradcam.cu",
        source: include_str!("../../kernels/gradcam.cu"),
        functions: &[
            "mt_gradcam_pool_weights",
            "mt_gradcam_pp_weights",
            "mt_gradcam_weighted_sum",
            "mt_gradcam_layer_sum",
            "mt_gradcam_upsample",
            "mt_gradcam_minmax",
            "mt_gradcam_normalise",
        ],
    },
    KernelSource {
        file: "pool.cu",
        source: include_str!("../../kernels/pool.cu"),
        functions: &[
            "mt_max_pool_forward",
            "mt_max_pool_backward",
            "mt_avg_pool_forward",
            "mt_avg_pool_backward",
        ],
    },
];

/// A kernel source with its `#include "mt.cuh"` replaced by the header text, as NVRTC compiles it
/// (NVRTC has no file system view of `kernels/`).
pub fn standalone_source(src: &KernelSource) -> String {
    let body = src
        .source
        .replace("#include \"mt.cuh\"", "// mt.cuh: prepended above");
    format!("{HEADER}\n// ---- {} ----\n{body}", src.file)
}

/// The geometry arguments shared by the kernels of `pool.cu`, in their order: planes (N·C), input
/// extents (d, h, w), window, stride, padding. Rejects windows the kernels (and the CPU reference)
/// cannot pool: a zero window or stride, a window larger than the padded input, or padding as wide as
/// the window (an output whose window holds no input element).
pub fn pool_args(op: &'static str, p: &PoolParams) -> Result<[u64; 13]> {
    let fits = (0..3).all(|a| {
        p.kernel[a] > 0
            && p.stride[a] > 0
            && p.pad[a] < p.kernel[a]
            && p.in_dims[a] as u64 + 2 * p.pad[a] as u64 >= p.kernel[a] as u64
    });
    if !fits {
        return Err(BackendError::Params {
            op,
            reason: format!(
                "window {:?} stride {:?} padding {:?} does not fit input {:?}",
                p.kernel, p.stride, p.pad, p.in_dims
            ),
        });
    }
    let [d, h, w] = p.in_dims.map(u64::from);
    let [kd, kh, kw] = p.kernel.map(u64::from);
    let [sd, sh, sw] = p.stride.map(u64::from);
    let [pd, ph, pw] = p.pad.map(u64::from);
    Ok([
        p.n as u64 * p.c as u64,
        d,
        h,
        w,
        kd,
        kh,
        kw,
        sd,
        sh,
        sw,
        pd,
        ph,
        pw,
    ])
}

/// Length checks of pooling: `x_len` input-sized, `y_len` output-sized.
pub fn check_pool(op: &'static str, p: &PoolParams, x_len: usize, y_len: usize) -> Result<[u64; 13]> {
    let args = pool_args(op, p)?;
    check_len(op, "input", p.input_len(), x_len)?;
    check_len(op, "output", p.output_len(), y_len)?;
    Ok(args)
}

/// Threads per block of every elementwise launch.
pub const BLOCK_THREADS: u32 = 256;
/// Grid cap: grid-stride loops cover larger tensors, and the launch stays cheap.
pub const MAX_BLOCKS: u32 = 8192;
/// Threads of phase 1 of a deterministic reduction; equals `MT_REDUCE_THREADS` in mt.cuh.
pub const REDUCE_THREADS: usize = 1024;

/// Blocks of `BLOCK_THREADS` for `n` elements of grid-stride work (at least one).
pub fn grid_blocks(n: usize) -> u32 {
    n.div_ceil(BLOCK_THREADS as usize).clamp(1, MAX_BLOCKS as usize) as u32
}

/// splitmix64 finaliser: a counter-based hash, so dropout mask element i needs only (seed, i); also
/// how `nn::Net` advances its dropout seed.
pub fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// (threshold, keep_scale) of `mt_dropout`: element i is dropped iff its 32-bit draw < threshold and
/// otherwise scaled by keep_scale. A probability ≤ 0 is the identity (threshold 0, scale 1), as on
/// the CPU, which copies.
pub fn dropout_mask_args(p: &DropoutParams) -> (u64, f32) {
    if p.prob <= 0.0 {
        return (0, 1.0);
    }
    let threshold = (p.prob as f64 * 4_294_967_296.0) as u64;
    (threshold, 1.0 / (1.0 - p.prob))
}

/// AdamW's per-step scalars, computed in f64 exactly as the CPU backend computes them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWScalars {
    /// 1 − lr·wd (f32)
    pub decay: f32,
    /// lr / (1 − β1^t)
    pub step_size: f32,
    /// √(1 − β2^t)
    pub bc2_sqrt: f32,
}

pub fn adamw_scalars(h: &AdamWHyper) -> AdamWScalars {
    let t = h.step.max(1) as i32;
    let bc1 = 1.0 - (h.beta1 as f64).powi(t);
    let bc2_sqrt = (1.0 - (h.beta2 as f64).powi(t)).sqrt();
    AdamWScalars {
        decay: 1.0 - h.lr * h.weight_decay,
        step_size: (h.lr as f64 / bc1) as f32,
        bc2_sqrt: bc2_sqrt as f32,
    }
}

/// f64 scratch a loss needs on the device: (per-element scratch, finish outputs).
pub mod scratch {
    /// Finish kernels write at most this many f64 outputs.
    pub const OUT: usize = 4;
    /// Cross-entropy rows: log Z (n) and the invalid-target flags (n).
    pub fn cross_entropy(n: usize) -> usize {
        2 * n
    }
    /// BCE: terms (total) and unnormalised gradients (total).
    pub fn bce(total: usize) -> usize {
        2 * total
    }
    /// Regression: terms (n) and unnormalised gradients (n).
    pub fn regression(n: usize) -> usize {
        2 * n
    }
    /// Cox: order, group start, group risk sum (n each).
    pub fn cox(n: usize) -> usize {
        3 * n
    }
    /// Σx²: one partial per reduction thread.
    pub fn sum_squares() -> usize {
        super::REDUCE_THREADS
    }
}

/// Length checks of cross-entropy, shared with the CUDA launch layer.
pub fn check_cross_entropy(
    p: &CrossEntropyParams,
    logits: usize,
    targets: usize,
    class_weights: Option<usize>,
    dlogits: usize,
) -> Result<()> {
    let (n, classes) = (p.n as usize, p.classes as usize);
    check_len("cross_entropy", "logits", n * classes, logits)?;
    check_len("cross_entropy", "targets", n, targets)?;
    check_len("cross_entropy", "dlogits", n * classes, dlogits)?;
    if let Some(w) = class_weights {
        check_len("cross_entropy", "class weights", classes, w)?;
    }
    Ok(())
}

/// The invalid-target report of `mt_cross_entropy_finish` (out[2] = first bad row or −1, out[3] = its
/// target) as the CPU backend's error.
pub fn cross_entropy_status(out: &[f64], classes: usize) -> Result<()> {
    if out[2] >= 0.0 {
        return Err(BackendError::Target {
            op: "cross_entropy",
            value: out[3] as f32,
            classes,
        });
    }
    Ok(())
}

/// Length checks of BCE, shared with the CUDA launch layer: [logits, targets, dlogits] lengths.
pub fn check_bce(
    p: &BceParams,
    lens: [usize; 3],
    mask: Option<usize>,
    pos_weight: Option<usize>,
) -> Result<()> {
    let (n, labels) = (p.n as usize, p.labels as usize);
    for (what, len) in ["logits", "targets", "dlogits"].into_iter().zip(lens) {
        check_len("bce_with_logits", what, n * labels, len)?;
    }
    if let Some(m) = mask {
        check_len("bce_with_logits", "mask", n * labels, m)?;
    }
    if let Some(pw) = pos_weight {
        check_len("bce_with_logits", "pos_weight", labels, pw)?;
    }
    Ok(())
}

/// Length checks of the regression losses, shared with the CUDA launch layer.
pub fn check_regression(pred: usize, target: usize, mask: Option<usize>, dpred: usize) -> Result<()> {
    check_len("regression loss", "target", pred, target)?;
    check_len("regression loss", "dpred", pred, dpred)?;
    if let Some(m) = mask {
        check_len("regression loss", "mask", pred, m)?;
    }
    Ok(())
}

/// (huber flag, delta) of `mt_regression_elements`.
pub fn regression_args(kind: RegressionLoss) -> (i32, f32) {
    match kind {
        RegressionLoss::Mse => (0, 0.0),
        RegressionLoss::Huber { delta } => (1, delta),
    }
}
