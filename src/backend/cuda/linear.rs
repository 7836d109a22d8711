//! Fully connected layers on cuBLAS. Our tensors are row-major and cuBLAS is column-major: a row-major
//! (r, c) matrix is the column-major (c, r) matrix, its transpose, so every product below is written
//! for the transposes (shapes in the comments are row-major).

use std::ffi::c_int;

use cudarc::cublas::sys::{self, cublasOperation_t::*};

use crate::backend::{BackendError, LinearParams, Result};

pub fn check(
    op: &'static str,
    r: std::result::Result<(), cudarc::cublas::result::CublasError>,
) -> Result<()> {
    r.map_err(|e| BackendError::Device {
        op,
        backend: "cuBLAS",
        reason: format!("{e:?}"),
    })
}

fn dims(p: &LinearParams) -> Result<(c_int, c_int, c_int)> {
    let c = |v: u32| {
        c_int::try_from(v).map_err(|_| BackendError::Params {
            op: "linear",
            reason: format!("extent {v} does not fit a C int"),
        })
    };
    Ok((c(p.n)?, c(p.in_features)?, c(p.out_features)?))
}

/// y (N, out) = x (N, in) · Wᵀ, W (out, in). Column-major: yᵀ (out×N) = (Wᵀ)ᵀ · xᵀ = op_T(W_cm) · x_cm.
///
/// # Safety
/// Pointers are live device buffers of the lengths `p` implies, on the handle's stream.
pub unsafe fn forward(
    h: sys::cublasHandle_t,
    p: &LinearParams,
    x: *const f32,
    w: *const f32,
    y: *mut f32,
) -> Result<()> {
    let (n, inf, outf) = dims(p)?;
    let (one, zero) = (1.0f32, 0.0f32);
    check(
        "cublasSgemm (linear forward)",
        cudarc::cublas::result::sgemm(
            h,
            CUBLAS_OP_T,
            CUBLAS_OP_N,
            outf,
            n,
            inf,
            &one,
            w,
            inf,
            x,
            inf,
            &zero,
            y,
            outf,
        ),
    )
}

/// dx (N, in) = dy (N, out) · W: column-major dxᵀ (in×N) = W_cm (in×out) · dy_cm (out×N).
///
/// # Safety
/// As `forward`.
pub unsafe fn backward_data(
    h: sys::cublasHandle_t,
    p: &LinearParams,
    w: *const f32,
    dy: *const f32,
    dx: *mut f32,
) -> Result<()> {
    let (n, inf, outf) = dims(p)?;
    let (one, zero) = (1.0f32, 0.0f32);
    check(
        "cublasSgemm (linear backward data)",
        cudarc::cublas::result::sgemm(
            h,
            CUBLAS_OP_N,
            CUBLAS_OP_N,
            inf,
            n,
            outf,
            &one,
            w,
            inf,
            dy,
            outf,
            &zero,
            dx,
            inf,
        ),
    )
}

/// dW (out, in) += dyᵀ · x: column-major dWᵀ (in×out) += x_cm (in×N) · op_T(dy_cm (out×N)).
///
/// # Safety
/// As `forward`.
pub unsafe fn backward_filter(
    h: sys::cublasHandle_t,
    p: &LinearParams,
    x: *const f32,
    dy: *const f32,
    dw: *mut f32,
) -> Result<()> {
    let (n, inf, outf) = dims(p)?;
    let one = 1.0f32;
    check(
        "cublasSgemm (linear backward filter)",
        cudarc::cublas::result::sgemm(
            h,
            CUBLAS_OP_N,
            CUBLAS_OP_T,
            inf,
            outf,
            n,
            &one,
            x,
            inf,
            dy,
            outf,
            &one,
            dw,
            inf,
        ),
    )
}

/// db (out) += Σ_n dy[n, :]: column-major dy_cm (out×N) · ones (N).
///
/// # Safety
/// As `forward`; `ones` holds at least N ones.
pub unsafe fn backward_bias(
    h: sys::cublasHandle_t,
    p: &LinearParams,
    dy: *const f32,
    ones: *const f32,
    db: *mut f32,
) -> Result<()> {
    let (n, _, outf) = dims(p)?;
    let one = 1.0f32;
    check(
        "cublasSgemv (linear bias gradient)",
        cudarc::cublas::result::sgemv(h, CUBLAS_OP_N, outf, n, &one, dy, outf, ones, 1, &one, db, 1),
    )
}

/// y (N, out) += bias broadcast over rows: column-major y_cm (out×N) += bias (out×1) · onesᵀ (1×N).
///
/// # Safety
/// As `forward`; `ones` holds at least N ones.
pub unsafe fn forward_bias(
    h: sys::cublasHandle_t,
    p: &LinearParams,
    bias: *const f32,
    ones: *const f32,
    y: *mut f32,
) -> Result<()> {
    let (n, _, outf) = dims(p)?;
    let one = 1.0f32;
    check(
        "cublasSgemm (linear bias)",
        cudarc::cublas::result::sgemm(
            h,
            CUBLAS_OP_N,
            CUBLAS_OP_N,
            outf,
            n,
            1,
            &one,
            bias,
            outf,
            ones,
            1,
            &one,
            y,
            outf,
        ),
    )
}
