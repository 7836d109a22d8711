//! Fully connected layer with PyTorch's weight layout (out, in).

use super::gemm::{sgemm, MatRef};
use crate::backend::params::LinearParams;
use crate::backend::{check_len, Result};

fn dims(p: &LinearParams) -> (usize, usize, usize) {
    (p.n as usize, p.in_features as usize, p.out_features as usize)
}

pub fn forward(p: &LinearParams, x: &[f32], w: &[f32], bias: Option<&[f32]>, y: &mut [f32]) -> Result<()> {
    let (n, fi, fo) = dims(p);
    check_len("linear", "x", n * fi, x.len())?;
    check_len("linear", "w", fo * fi, w.len())?;
    check_len("linear", "y", n * fo, y.len())?;
    // y (n, fo) = x (n, fi) · wᵀ (fi, fo)
    sgemm(
        n,
        fo,
        fi,
        MatRef::rows(x, fi),
        MatRef::transposed(w, fi),
        y,
        false,
    );
    if let Some(b) = bias {
        check_len("linear", "bias", fo, b.len())?;
        y.chunks_mut(fo)
            .for_each(|row| row.iter_mut().zip(b).for_each(|(y, b)| *y += b));
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub fn backward(
    p: &LinearParams,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    dx: Option<&mut [f32]>,
    dw: &mut [f32],
    dbias: Option<&mut [f32]>,
) -> Result<()> {
    let (n, fi, fo) = dims(p);
    check_len("linear backward", "dy", n * fo, dy.len())?;
    check_len("linear backward", "dw", fo * fi, dw.len())?;
    if let Some(dx) = dx {
        check_len("linear backward", "dx", n * fi, dx.len())?;
        // dx (n, fi) = dy (n, fo) · w (fo, fi)
        sgemm(n, fi, fo, MatRef::rows(dy, fo), MatRef::rows(w, fi), dx, false);
    }
    // dw (fo, fi) += dyᵀ (fo, n) · x (n, fi)
    sgemm(
        fo,
        fi,
        n,
        MatRef::transposed(dy, fo),
        MatRef::rows(x, fi),
        dw,
        true,
    );
    if let Some(db) = dbias {
        check_len("linear backward", "dbias", fo, db.len())?;
        for (o, d) in db.iter_mut().enumerate() {
            *d += (0..n).map(|i| dy[i * fo + o] as f64).sum::<f64>() as f32;
        }
    }
    Ok(())
}
