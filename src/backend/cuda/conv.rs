//! Convolution 2D/3D on cuDNN: forward, backward-data, backward-filter. Descriptors and algorithms are
//! chosen once per shape (`ConvParams`) and kept; the algorithm is the fastest deterministic FMA one
//! (by cuDNN's heuristic ranking) whose workspace fits, and the workspace is shared and only grows.

use std::collections::HashMap;
use std::ffi::{c_int, c_void};

use cudarc::cudnn::sys;

use super::cudnn::{as_c, check, Convolution, Filter, Handle, Tensor};
use crate::backend::params::ConvParams;
use crate::backend::{DType, Result};

/// Largest workspace an algorithm may ask for; faster algorithms that need more are skipped.
pub const WORKSPACE_LIMIT_BYTES: usize = 1 << 30;

/// `ConvParams` as a hashable key (every field, in order).
pub type ConvKey = [u32; 19];

pub fn key(p: &ConvParams) -> ConvKey {
    let mut k = [0u32; 19];
    k[..4].copy_from_slice(&[p.n, p.c_in, p.c_out, p.groups]);
    for (i, d) in [p.in_dims, p.kernel, p.stride, p.pad, p.dilation]
        .iter()
        .enumerate()
    {
        k[4 + 3 * i..7 + 3 * i].copy_from_slice(d);
    }
    k
}

/// 2D layers (depth 1 with a depth-1 kernel) use 4-d descriptors, where cuDNN's 2D kernels apply.
pub fn is_2d(p: &ConvParams) -> bool {
    p.in_dims[0] == 1 && p.kernel[0] == 1 && p.stride[0] == 1 && p.pad[0] == 0 && p.dilation[0] == 1
}

/// Spatial axes used by the descriptors: (H, W) for 2D, (D, H, W) for 3D.
fn axes(p: &ConvParams) -> std::ops::Range<usize> {
    if is_2d(p) {
        1..3
    } else {
        0..3
    }
}

fn dims(n: u32, c: u32, spatial: &[u32]) -> Result<Vec<c_int>> {
    let mut d = vec![as_c(n, "batch")?, as_c(c, "channels")?];
    for &s in spatial {
        d.push(as_c(s, "extent")?);
    }
    Ok(d)
}

/// Everything cuDNN needs for one convolution shape.
pub struct ConvPlan {
    pub x: Tensor,
    pub y: Tensor,
    pub w: Filter,
    /// (1, C_out, 1, 1[, 1]) for the bias.
    pub bias: Tensor,
    pub conv: Convolution,
    pub fwd: sys::cudnnConvolutionFwdAlgo_t,
    pub bwd_data: sys::cudnnConvolutionBwdDataAlgo_t,
    pub bwd_filter: sys::cudnnConvolutionBwdFilterAlgo_t,
    pub fwd_bytes: usize,
    pub bwd_data_bytes: usize,
    pub bwd_filter_bytes: usize,
}

/// Whether a ranked algorithm may be used for data of `dtype`: it ran the query successfully, is
/// deterministic, fits the workspace limit, and its math type is allowed for that precision
/// ([`math_allowed`]).
pub fn usable(
    dtype: DType,
    status: sys::cudnnStatus_t,
    det: sys::cudnnDeterminism_t,
    math: sys::cudnnMathType_t,
    bytes: usize,
) -> bool {
    status == sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS
        && det == sys::cudnnDeterminism_t::CUDNN_DETERMINISTIC
        && math_allowed(dtype, math)
        && bytes <= WORKSPACE_LIMIT_BYTES
}

/// The math types a convolution result may come from. fp32: FMA only (cuDNN reports FMA for
/// results computed without tensor cores; DEFAULT_MATH on fp32 data may be TF32 on Ampere and newer,
/// so it is refused: TF32 off is the rule). f16/bf16: FMA or tensor-op math. Never
/// TENSOR_OP_MATH_ALLOW_CONVERSION, which converts fp32 data to a narrower type.
pub fn math_allowed(dtype: DType, math: sys::cudnnMathType_t) -> bool {
    use sys::cudnnMathType_t as M;
    match dtype {
        DType::F32 => math == M::CUDNN_FMA_MATH,
        DType::F16 | DType::BF16 => matches!(math, M::CUDNN_FMA_MATH | M::CUDNN_TENSOR_OP_MATH),
    }
}

fn no_algorithm(op: &'static str, p: &ConvParams) -> crate::backend::BackendError {
    crate::backend::BackendError::Device {
        op,
        backend: "cuDNN",
        reason: format!(
            "no deterministic FMA algorithm within {WORKSPACE_LIMIT_BYTES} bytes of workspace for {p:?}"
        ),
    }
}

/// Up to this many ranked candidates are asked for per direction.
const CANDIDATES: usize = 16;

impl ConvPlan {
    pub fn new(h: &Handle, p: &ConvParams) -> Result<ConvPlan> {
        let ax = axes(p);
        let in_sp: Vec<u32> = p.in_dims[ax.clone()].to_vec();
        let out_sp: Vec<u32> = p.out_dims()[ax.clone()].to_vec();
        let k_sp: Vec<u32> = p.kernel[ax.clone()].to_vec();
        let c = |v: &[u32]| {
            v.iter()
                .map(|&e| as_c(e, "window"))
                .collect::<Result<Vec<c_int>>>()
        };
        let x = Tensor::new(&dims(p.n, p.c_in, &in_sp)?)?;
        let y = Tensor::new(&dims(p.n, p.c_out, &out_sp)?)?;
        let w = Filter::new(&dims(p.c_out, p.c_in / p.groups.max(1), &k_sp)?)?;
        let ones = vec![1u32; ax.len()];
        let bias = Tensor::new(&dims(1, p.c_out, &ones)?)?;
        let conv = Convolution::new(
            &c(&p.pad[ax.clone()])?,
            &c(&p.stride[ax.clone()])?,
            &c(&p.dilation[ax.clone()])?,
            as_c(p.groups, "groups")?,
        )?;

        let mut count: c_int = 0;
        // SAFETY: the descriptors are live; `perf` has room for CANDIDATES results and cuDNN writes
        // `count` ≤ CANDIDATES of them. The perf structs are plain C data, valid when zeroed.
        let (fwd, _) = unsafe {
            let mut perf: [sys::cudnnConvolutionFwdAlgoPerf_t; CANDIDATES] = std::mem::zeroed();
            check(
                "cudnnGetConvolutionForwardAlgorithm_v7",
                sys::cudnnGetConvolutionForwardAlgorithm_v7(
                    h.raw,
                    x.0,
                    w.0,
                    conv.0,
                    y.0,
                    CANDIDATES as c_int,
                    &mut count,
                    perf.as_mut_ptr(),
                ),
            )?;
            perf[..count.clamp(0, CANDIDATES as c_int) as usize]
                .iter()
                .find(|r| usable(DType::F32, r.status, r.determinism, r.mathType, r.memory))
                .map(|r| (r.algo, r.memory))
                .ok_or_else(|| no_algorithm("convolution forward", p))?
        };
        // SAFETY: as above.
        let (bwd_data, _) = unsafe {
            let mut perf: [sys::cudnnConvolutionBwdDataAlgoPerf_t; CANDIDATES] = std::mem::zeroed();
            check(
                "cudnnGetConvolutionBackwardDataAlgorithm_v7",
                sys::cudnnGetConvolutionBackwardDataAlgorithm_v7(
                    h.raw,
                    w.0,
                    y.0,
                    conv.0,
                    x.0,
                    CANDIDATES as c_int,
                    &mut count,
                    perf.as_mut_ptr(),
                ),
            )?;
            perf[..count.clamp(0, CANDIDATES as c_int) as usize]
                .iter()
                .find(|r| usable(DType::F32, r.status, r.determinism, r.mathType, r.memory))
                .map(|r| (r.algo, r.memory))
                .ok_or_else(|| no_algorithm("convolution backward data", p))?
        };
        // SAFETY: as above.
        let (bwd_filter, _) = unsafe {
            let mut perf: [sys::cudnnConvolutionBwdFilterAlgoPerf_t; CANDIDATES] = std::mem::zeroed();
            check(
                "cudnnGetConvolutionBackwardFilterAlgorithm_v7",
                sys::cudnnGetConvolutionBackwardFilterAlgorithm_v7(
                    h.raw,
                    x.0,
                    y.0,
                    conv.0,
                    w.0,
                    CANDIDATES as c_int,
                    &mut count,
                    perf.as_mut_ptr(),
                ),
            )?;
            perf[..count.clamp(0, CANDIDATES as c_int) as usize]
                .iter()
                .find(|r| usable(DType::F32, r.status, r.determinism, r.mathType, r.memory))
                .map(|r| (r.algo, r.memory))
                .ok_or_else(|| no_algorithm("convolution backward filter", p))?
        };
        // The heuristic's `memory` is an estimate; ask for the exact sizes of the chosen algorithms.
        let mut sizes = [0usize; 3];
        // SAFETY: live descriptors; each call writes one size_t.
        unsafe {
            check(
                "cudnnGetConvolutionForwardWorkspaceSize",
                sys::cudnnGetConvolutionForwardWorkspaceSize(
                    h.raw,
                    x.0,
                    w.0,
                    conv.0,
                    y.0,
                    fwd,
                    &mut sizes[0],
                ),
            )?;
            check(
                "cudnnGetConvolutionBackwardDataWorkspaceSize",
                sys::cudnnGetConvolutionBackwardDataWorkspaceSize(
                    h.raw,
                    w.0,
                    y.0,
                    conv.0,
                    x.0,
                    bwd_data,
                    &mut sizes[1],
                ),
            )?;
            check(
                "cudnnGetConvolutionBackwardFilterWorkspaceSize",
                sys::cudnnGetConvolutionBackwardFilterWorkspaceSize(
                    h.raw,
                    x.0,
                    y.0,
                    conv.0,
                    w.0,
                    bwd_filter,
                    &mut sizes[2],
                ),
            )?;
        }
        Ok(ConvPlan {
            x,
            y,
            w,
            bias,
            conv,
            fwd,
            bwd_data,
            bwd_filter,
            fwd_bytes: sizes[0],
            bwd_data_bytes: sizes[1],
            bwd_filter_bytes: sizes[2],
        })
    }

    pub fn max_workspace(&self) -> usize {
        self.fwd_bytes.max(self.bwd_data_bytes).max(self.bwd_filter_bytes)
    }
}

pub type PlanCache = HashMap<ConvKey, ConvPlan>;

/// Raw device pointers of one call, in cuDNN's order.
pub struct ConvPtrs {
    pub x: *const c_void,
    pub w: *const c_void,
    pub y: *mut c_void,
    pub bias: Option<*const c_void>,
    pub workspace: *mut c_void,
    pub workspace_bytes: usize,
}

/// y = conv(x, w) (+ bias). Accumulation order is cuDNN's; the CPU reference is matched to a tolerance.
///
/// # Safety
/// Every pointer is a live device allocation of the length the plan's descriptors describe, on the
/// stream the handle is bound to; `workspace` holds at least `plan.fwd_bytes`.
pub unsafe fn forward(h: &Handle, plan: &ConvPlan, ptr: &ConvPtrs) -> Result<()> {
    let (one, zero) = (1.0f32, 0.0f32);
    check(
        "cudnnConvolutionForward",
        sys::cudnnConvolutionForward(
            h.raw,
            &one as *const f32 as *const c_void,
            plan.x.0,
            ptr.x,
            plan.w.0,
            ptr.w,
            plan.conv.0,
            plan.fwd,
            ptr.workspace,
            ptr.workspace_bytes,
            &zero as *const f32 as *const c_void,
            plan.y.0,
            ptr.y,
        ),
    )?;
    if let Some(bias) = ptr.bias {
        check(
            "cudnnAddTensor",
            sys::cudnnAddTensor(
                h.raw,
                &one as *const f32 as *const c_void,
                plan.bias.0,
                bias,
                &one as *const f32 as *const c_void,
                plan.y.0,
                ptr.y,
            ),
        )?;
    }
    Ok(())
}

/// Raw pointers of a backward call.
pub struct ConvBackPtrs {
    pub x: *const c_void,
    pub w: *const c_void,
    pub dy: *const c_void,
    pub dx: Option<*mut c_void>,
    pub dw: *mut c_void,
    pub dbias: Option<*mut c_void>,
    pub workspace: *mut c_void,
    pub workspace_bytes: usize,
}

/// dx = (written), dw += , dbias += (the backend convention: parameter gradients accumulate).
///
/// # Safety
/// As `forward`; `workspace` holds at least `plan.max_workspace()` bytes.
pub unsafe fn backward(h: &Handle, plan: &ConvPlan, ptr: &ConvBackPtrs) -> Result<()> {
    let (one, zero) = (1.0f32, 0.0f32);
    let one_p = &one as *const f32 as *const c_void;
    if let Some(dx) = ptr.dx {
        check(
            "cudnnConvolutionBackwardData",
            sys::cudnnConvolutionBackwardData(
                h.raw,
                one_p,
                plan.w.0,
                ptr.w,
                plan.y.0,
                ptr.dy,
                plan.conv.0,
                plan.bwd_data,
                ptr.workspace,
                ptr.workspace_bytes,
                &zero as *const f32 as *const c_void,
                plan.x.0,
                dx,
            ),
        )?;
    }
    check(
        "cudnnConvolutionBackwardFilter",
        sys::cudnnConvolutionBackwardFilter(
            h.raw,
            one_p,
            plan.x.0,
            ptr.x,
            plan.y.0,
            ptr.dy,
            plan.conv.0,
            plan.bwd_filter,
            ptr.workspace,
            ptr.workspace_bytes,
            one_p,
            plan.w.0,
            ptr.dw,
        ),
    )?;
    if let Some(db) = ptr.dbias {
        check(
            "cudnnConvolutionBackwardBias",
            sys::cudnnConvolutionBackwardBias(h.raw, one_p, plan.y.0, ptr.dy, one_p, plan.bias.0, db),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_takes_fma_only_for_f32_and_never_conversion() {
        use sys::cudnnDeterminism_t::{CUDNN_DETERMINISTIC as DET, CUDNN_NON_DETERMINISTIC as NONDET};
        use sys::cudnnMathType_t as M;
        use sys::cudnnStatus_t::{CUDNN_STATUS_NOT_SUPPORTED as UNSUPPORTED, CUDNN_STATUS_SUCCESS as OK};
        let all = [
            M::CUDNN_DEFAULT_MATH,
            M::CUDNN_TENSOR_OP_MATH,
            M::CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION,
            M::CUDNN_FMA_MATH,
        ];
        for m in all {
            assert_eq!(usable(DType::F32, OK, DET, m, 0), m == M::CUDNN_FMA_MATH, "{m:?}");
            for half in [DType::F16, DType::BF16] {
                let want = matches!(m, M::CUDNN_FMA_MATH | M::CUDNN_TENSOR_OP_MATH);
                assert_eq!(usable(half, OK, DET, m, 0), want, "{half:?} {m:?}");
            }
        }
        let fma = M::CUDNN_FMA_MATH;
        assert!(!usable(DType::F32, UNSUPPORTED, DET, fma, 0));
        assert!(!usable(DType::F32, OK, NONDET, fma, 0));
        assert!(!usable(DType::F32, OK, DET, fma, WORKSPACE_LIMIT_BYTES + 1));
        assert!(usable(DType::F32, OK, DET, fma, WORKSPACE_LIMIT_BYTES));
    }

    #[test]
    fn keys_differ_for_every_field() {
        let a = ConvParams::conv2d(2, 3, 8, [16, 16], 3, 1, 1);
        let mut seen = std::collections::HashSet::new();
        seen.insert(key(&a));
        for i in 0..19 {
            let mut k = key(&a);
            k[i] += 1;
            assert!(seen.insert(k));
        }
        let b = ConvParams { pad: [0, 2, 1], ..a };
        assert_ne!(key(&a), key(&b));
        assert!(is_2d(&a));
        assert!(!is_2d(&ConvParams::conv3d(1, 1, 4, [8, 8, 8], 3, 1, 1)));
    }
}
