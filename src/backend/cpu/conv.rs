//! Convolution (2D = 3D with depth 1) by im2col + GEMM, one image per task.
//!
//! Forward and the data gradient parallelise over images; the weight gradient sums per-chunk partials
//! over a fixed number of image chunks (set by the batch size alone) in a fixed order, so the bits do
//! not depend on the thread count.

use rayon::prelude::*;

use super::gemm::{sgemm, MatRef};
use super::window::valid_range;
use crate::backend::params::ConvParams;
use crate::backend::{check_len, Result};

/// The weight gradient is summed over at most this many image chunks (memory: that many weight copies).
const WEIGHT_GRAD_CHUNKS: usize = 8;

/// Geometry of one convolution, in usize, precomputed once per call.
struct Geometry {
    in_dims: [usize; 3],
    out_dims: [usize; 3],
    kernel: [usize; 3],
    stride: [usize; 3],
    pad: [usize; 3],
    dilation: [usize; 3],
    c_in_g: usize,
    c_out_g: usize,
    groups: usize,
    in_spatial: usize,
    out_spatial: usize,
    /// Rows of the column matrix per group: c_in_g · kernel volume.
    col_rows: usize,
}

impl Geometry {
    fn new(p: &ConvParams) -> Self {
        let u = |d: [u32; 3]| d.map(|e| e as usize);
        Self {
            in_dims: u(p.in_dims),
            out_dims: u(p.out_dims()),
            kernel: u(p.kernel),
            stride: u(p.stride),
            pad: u(p.pad),
            dilation: u(p.dilation),
            c_in_g: p.c_in_per_group(),
            c_out_g: p.c_out_per_group(),
            groups: p.groups as usize,
            in_spatial: p.in_spatial(),
            out_spatial: p.out_spatial(),
            col_rows: p.c_in_per_group() * p.kernel_volume(),
        }
    }

    /// A 1×1×1 kernel with unit stride and no padding reads the input as its own column matrix.
    fn is_pointwise(&self) -> bool {
        self.kernel == [1; 3] && self.stride == [1; 3] && self.pad == [0; 3]
    }

    /// Offset along axis `a` of kernel tap `t`: input index = out·stride + offset.
    fn offset(&self, a: usize, t: usize) -> isize {
        (t * self.dilation[a]) as isize - self.pad[a] as isize
    }

    /// Visits each output row (z, y) of each column-matrix row: `visit(col_offset, input_row, x_range,
    /// x_offset)`, where column entries col_offset + x for x in x_range read input
    /// `input_row + x·stride_w + x_offset`, and every other entry of the row is padding. `input_row` is
    /// None when the whole row lies in padding.
    fn for_each_row(&self, mut visit: impl FnMut(usize, Option<usize>, (usize, usize), isize)) {
        let [d, h, w] = self.in_dims;
        let [od, oh, ow] = self.out_dims;
        let [kd, kh, kw] = self.kernel;
        let mut row = 0;
        for ci in 0..self.c_in_g {
            let plane = ci * d * h * w;
            for a in 0..kd {
                let (z_lo, z_hi) = valid_range(od, d, self.stride[0], self.offset(0, a));
                for b in 0..kh {
                    let (y_lo, y_hi) = valid_range(oh, h, self.stride[1], self.offset(1, b));
                    for c in 0..kw {
                        let x_off = self.offset(2, c);
                        let x_range = valid_range(ow, w, self.stride[2], x_off);
                        for z in 0..od {
                            for y in 0..oh {
                                let col_offset = row * self.out_spatial + (z * oh + y) * ow;
                                let inside = (z_lo..z_hi).contains(&z) && (y_lo..y_hi).contains(&y);
                                let input_row = inside.then(|| {
                                    let iz = ((z * self.stride[0]) as isize + self.offset(0, a)) as usize;
                                    let iy = ((y * self.stride[1]) as isize + self.offset(1, b)) as usize;
                                    plane + (iz * h + iy) * w
                                });
                                visit(col_offset, input_row, x_range, x_off);
                            }
                        }
                        row += 1;
                    }
                }
            }
        }
    }

    /// col (col_rows, out_spatial) ← x (c_in_g, D, H, W); taps outside the input read zero padding.
    fn im2col(&self, x: &[f32], col: &mut [f32]) {
        let (ow, sw) = (self.out_dims[2], self.stride[2]);
        self.for_each_row(|col_offset, input_row, (lo, hi), x_off| {
            let dst = &mut col[col_offset..col_offset + ow];
            let Some(input_row) = input_row else {
                dst.fill(0.0);
                return;
            };
            dst[..lo].fill(0.0);
            dst[hi..].fill(0.0);
            let start = (input_row as isize + (lo * sw) as isize + x_off) as usize;
            if sw == 1 {
                dst[lo..hi].copy_from_slice(&x[start..start + (hi - lo)]);
            } else {
                for (j, v) in dst[lo..hi].iter_mut().enumerate() {
                    *v = x[start + j * sw];
                }
            }
        });
    }

    /// dx (c_in_g, D, H, W) += col2im(dcol)
    fn col2im(&self, dcol: &[f32], dx: &mut [f32]) {
        let sw = self.stride[2];
        self.for_each_row(|col_offset, input_row, (lo, hi), x_off| {
            let Some(input_row) = input_row else { return };
            let src = &dcol[col_offset + lo..col_offset + hi];
            let start = (input_row as isize + (lo * sw) as isize + x_off) as usize;
            if sw == 1 {
                dx[start..start + (hi - lo)]
                    .iter_mut()
                    .zip(src)
                    .for_each(|(d, s)| *d += s);
            } else {
                for (j, s) in src.iter().enumerate() {
                    dx[start + j * sw] += s;
                }
            }
        });
    }
}

pub fn forward(p: &ConvParams, x: &[f32], w: &[f32], bias: Option<&[f32]>, y: &mut [f32]) -> Result<()> {
    check_shapes(p, x, w, y.len())?;
    if let Some(b) = bias {
        check_len("conv forward", "bias", p.c_out as usize, b.len())?;
    }
    let g = Geometry::new(p);
    let x_img = p.c_in as usize * g.in_spatial;
    let y_img = p.c_out as usize * g.out_spatial;
    let col_len = if g.is_pointwise() {
        0
    } else {
        g.col_rows * g.out_spatial
    };
    y.par_chunks_mut(y_img).zip(x.par_chunks(x_img)).for_each_init(
        || vec![0.0f32; col_len],
        |col, (y_n, x_n)| forward_image(&g, x_n, w, bias, y_n, col),
    );
    Ok(())
}

fn forward_image(
    g: &Geometry,
    x_n: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y_n: &mut [f32],
    col: &mut [f32],
) {
    let w_group = g.c_out_g * g.col_rows;
    for grp in 0..g.groups {
        let x_g = &x_n[grp * g.c_in_g * g.in_spatial..][..g.c_in_g * g.in_spatial];
        let cols: &[f32] = if g.is_pointwise() {
            x_g
        } else {
            g.im2col(x_g, col);
            col
        };
        let y_g = &mut y_n[grp * g.c_out_g * g.out_spatial..][..g.c_out_g * g.out_spatial];
        let w_g = &w[grp * w_group..][..w_group];
        // y_g (c_out_g, P) = w_g (c_out_g, col_rows) · cols (col_rows, P)
        sgemm(
            g.c_out_g,
            g.out_spatial,
            g.col_rows,
            MatRef::rows(w_g, g.col_rows),
            MatRef::rows(cols, g.out_spatial),
            y_g,
            false,
        );
    }
    if let Some(b) = bias {
        for (co, plane) in y_n.chunks_mut(g.out_spatial).enumerate() {
            plane.iter_mut().for_each(|v| *v += b[co]);
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub fn backward(
    p: &ConvParams,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    dx: Option<&mut [f32]>,
    dw: &mut [f32],
    dbias: Option<&mut [f32]>,
) -> Result<()> {
    check_shapes(p, x, w, dy.len())?;
    check_len("conv backward", "dw", p.weight_len(), dw.len())?;
    let g = Geometry::new(p);
    let n = p.n as usize;
    let x_img = p.c_in as usize * g.in_spatial;
    let y_img = p.c_out as usize * g.out_spatial;
    if let Some(dx) = dx {
        check_len("conv backward", "dx", p.input_len(), dx.len())?;
        let col_len = g.col_rows * g.out_spatial;
        dx.par_chunks_mut(x_img).zip(dy.par_chunks(y_img)).for_each_init(
            || vec![0.0f32; col_len],
            |dcol, (dx_n, dy_n)| input_grad_image(&g, w, dy_n, dx_n, dcol),
        );
    }
    let per_chunk = n.div_ceil(WEIGHT_GRAD_CHUNKS).max(1);
    let partials: Vec<Vec<f32>> = (0..n.div_ceil(per_chunk))
        .into_par_iter()
        .map(|c| {
            let images = c * per_chunk..((c + 1) * per_chunk).min(n);
            weight_grad_chunk(&g, p.weight_len(), images, x_img, y_img, x, dy)
        })
        .collect();
    for part in &partials {
        dw.iter_mut().zip(part).for_each(|(d, v)| *d += v);
    }
    if let Some(db) = dbias {
        check_len("conv backward", "dbias", p.c_out as usize, db.len())?;
        bias_grad(n, p.c_out as usize, g.out_spatial, dy, db);
    }
    Ok(())
}

fn input_grad_image(g: &Geometry, w: &[f32], dy_n: &[f32], dx_n: &mut [f32], dcol: &mut [f32]) {
    let w_group = g.c_out_g * g.col_rows;
    dx_n.fill(0.0);
    for grp in 0..g.groups {
        let dy_g = &dy_n[grp * g.c_out_g * g.out_spatial..][..g.c_out_g * g.out_spatial];
        let w_g = &w[grp * w_group..][..w_group];
        let dx_g = &mut dx_n[grp * g.c_in_g * g.in_spatial..][..g.c_in_g * g.in_spatial];
        // dcol (col_rows, P) = w_gᵀ (col_rows, c_out_g) · dy_g (c_out_g, P)
        let target: &mut [f32] = if g.is_pointwise() { dx_g } else { dcol };
        sgemm(
            g.col_rows,
            g.out_spatial,
            g.c_out_g,
            MatRef::transposed(w_g, g.col_rows),
            MatRef::rows(dy_g, g.out_spatial),
            target,
            false,
        );
        if !g.is_pointwise() {
            g.col2im(dcol, dx_g);
        }
    }
}

/// Σ over `images` of dy_n (c_out_g, P) · col_nᵀ (P, col_rows), per group, summed in image order.
fn weight_grad_chunk(
    g: &Geometry,
    weight_len: usize,
    images: std::ops::Range<usize>,
    x_img: usize,
    y_img: usize,
    x: &[f32],
    dy: &[f32],
) -> Vec<f32> {
    let mut part = vec![0.0f32; weight_len];
    let mut col = vec![
        0.0f32;
        if g.is_pointwise() {
            0
        } else {
            g.col_rows * g.out_spatial
        }
    ];
    let w_group = g.c_out_g * g.col_rows;
    for img in images {
        let x_n = &x[img * x_img..][..x_img];
        let dy_n = &dy[img * y_img..][..y_img];
        for grp in 0..g.groups {
            let x_g = &x_n[grp * g.c_in_g * g.in_spatial..][..g.c_in_g * g.in_spatial];
            let cols: &[f32] = if g.is_pointwise() {
                x_g
            } else {
                g.im2col(x_g, &mut col);
                &col
            };
            let dy_g = &dy_n[grp * g.c_out_g * g.out_spatial..][..g.c_out_g * g.out_spatial];
            sgemm(
                g.c_out_g,
                g.col_rows,
                g.out_spatial,
                MatRef::rows(dy_g, g.out_spatial),
                MatRef::transposed(cols, g.out_spatial),
                &mut part[grp * w_group..][..w_group],
                true,
            );
        }
    }
    part
}

/// db[c] += Σ_n Σ_s dy[n, c, s], one channel per task, summed in f64 in (n, s) order.
fn bias_grad(n: usize, channels: usize, spatial: usize, dy: &[f32], db: &mut [f32]) {
    db.par_iter_mut().enumerate().for_each(|(c, d)| {
        let mut sum = 0.0f64;
        for img in 0..n {
            let plane = &dy[(img * channels + c) * spatial..][..spatial];
            sum += plane.iter().map(|&v| v as f64).sum::<f64>();
        }
        *d += sum as f32;
    });
}

fn check_shapes(p: &ConvParams, x: &[f32], w: &[f32], y_len: usize) -> Result<()> {
    if p.groups == 0 || p.c_in % p.groups != 0 || p.c_out % p.groups != 0 {
        return Err(crate::backend::BackendError::Params {
            op: "conv",
            reason: format!(
                "groups {} must divide c_in {} and c_out {}",
                p.groups, p.c_in, p.c_out
            ),
        });
    }
    check_len("conv", "x", p.input_len(), x.len())?;
    check_len("conv", "w", p.weight_len(), w.len())?;
    check_len("conv", "y", p.output_len(), y_len)
}
