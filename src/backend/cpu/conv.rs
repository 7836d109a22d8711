//! Convolution (2D = 3D with depth 1) by im2col + GEMM, one image per task.
//!
//! Forward and the data gradient parallelise over images; the weight gradient sums per-chunk partials
//! over a fixed number of image chunks (set by the batch size alone) in a fixed order, so the bits do
//! not depend on the thread count.
//!
//! A column matrix larger than `WHOLE_COLS_FLOATS` is built one slab of output rows at a time (about
//! `COL_SLAB_FLOATS` entries), so that it stays in cache between im2col and the GEMM that reads it: a
//! whole image's matrix at 32 channels over 32×64×64 voxels would be 450 MB, streamed to memory and
//! back for every product. Slabs are visited in order, so the weight gradient's sums keep a fixed
//! order. Smaller matrices stay whole, so their arithmetic, and the runs trained with them, are the
//! same bits as before slabs existed.

use rayon::prelude::*;

use super::gemm::{sgemm, sgemm_strided, MatRef};
use super::window::valid_range;
use crate::backend::params::ConvParams;
use crate::backend::{check_len, Result};

/// The weight gradient is summed over at most this many image chunks (memory: that many weight copies).
const WEIGHT_GRAD_CHUNKS: usize = 8;
/// Column-matrix entries per slab (1 MiB of f32): the slab is at least one output row.
const COL_SLAB_FLOATS: usize = 1 << 18;
/// Column matrices up to this many entries (16 MiB of f32) are built whole.
const WHOLE_COLS_FLOATS: usize = 1 << 22;

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

    /// Output rows (z, y lines of `out_dims[2]` positions) per slab of the column matrix.
    fn slab_lines(&self) -> usize {
        let lines = self.out_dims[0] * self.out_dims[1];
        if self.col_rows * self.out_spatial <= WHOLE_COLS_FLOATS {
            return lines.max(1);
        }
        (COL_SLAB_FLOATS / (self.col_rows * self.out_dims[2]).max(1)).clamp(1, lines.max(1))
    }

    /// The slabs of output lines, in order.
    fn slabs(&self) -> impl Iterator<Item = std::ops::Range<usize>> {
        let (lines, per) = (self.out_dims[0] * self.out_dims[1], self.slab_lines());
        (0..lines.div_ceil(per)).map(move |i| i * per..((i + 1) * per).min(lines))
    }

    /// Entries of the largest slab's column matrix.
    fn col_len(&self) -> usize {
        if self.is_pointwise() {
            0
        } else {
            self.col_rows * self.slab_lines() * self.out_dims[2]
        }
    }

    /// Offset along axis `a` of kernel tap `t`: input index = out·stride + offset.
    fn offset(&self, a: usize, t: usize) -> isize {
        (t * self.dilation[a]) as isize - self.pad[a] as isize
    }

    /// Visits each output row (z, y) of the slab `lines` (line l = z·out_h + y) of each column-matrix
    /// row: `visit(col_offset, input_row, x_range, x_offset)`, where column entries col_offset + x for
    /// x in x_range read input `input_row + x·stride_w + x_offset`, and every other entry of the row is
    /// padding. `input_row` is None when the whole row lies in padding. The slab's column matrix is
    /// (col_rows, lines.len()·out_w).
    fn for_each_row(
        &self,
        lines: std::ops::Range<usize>,
        mut visit: impl FnMut(usize, Option<usize>, (usize, usize), isize),
    ) {
        let [d, h, w] = self.in_dims;
        let [od, oh, ow] = self.out_dims;
        let [kd, kh, kw] = self.kernel;
        let slab = lines.len() * ow;
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
                        debug_assert!(lines.end <= od * oh);
                        for l in lines.clone() {
                            let (z, y) = (l / oh, l % oh);
                            {
                                let col_offset = row * slab + (l - lines.start) * ow;
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

    /// col (col_rows, slab) ← x (c_in_g, D, H, W) for the output lines `lines`; taps outside the input
    /// read zero padding.
    fn im2col(&self, x: &[f32], col: &mut [f32], lines: std::ops::Range<usize>) {
        let (ow, sw) = (self.out_dims[2], self.stride[2]);
        self.for_each_row(lines, |col_offset, input_row, (lo, hi), x_off| {
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

    /// dx (c_in_g, D, H, W) += col2im(dcol) for the output lines `lines`.
    fn col2im(&self, dcol: &[f32], dx: &mut [f32], lines: std::ops::Range<usize>) {
        let sw = self.stride[2];
        self.for_each_row(lines, |col_offset, input_row, (lo, hi), x_off| {
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
    let col_len = g.col_len();
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
        let y_g = &mut y_n[grp * g.c_out_g * g.out_spatial..][..g.c_out_g * g.out_spatial];
        let w_g = &w[grp * w_group..][..w_group];
        if g.is_pointwise() {
            // y_g (c_out_g, P) = w_g (c_out_g, c_in_g) · x_g (c_in_g, P)
            let b = MatRef::rows(x_g, g.out_spatial);
            sgemm(
                g.c_out_g,
                g.out_spatial,
                g.col_rows,
                MatRef::rows(w_g, g.col_rows),
                b,
                y_g,
                false,
            );
            continue;
        }
        let ow = g.out_dims[2];
        for lines in g.slabs() {
            // y_g[:, slab] (c_out_g, S) = w_g (c_out_g, col_rows) · col (col_rows, S)
            let (p0, len) = (lines.start * ow, lines.len() * ow);
            g.im2col(x_g, col, lines);
            let (w_m, b) = (MatRef::rows(w_g, g.col_rows), MatRef::rows(col, len));
            sgemm_strided(
                g.c_out_g,
                len,
                g.col_rows,
                w_m,
                b,
                &mut y_g[p0..],
                g.out_spatial,
                false,
            );
        }
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
        let col_len = g.col_len();
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
        let w_t = MatRef::transposed(w_g, g.col_rows);
        if g.is_pointwise() {
            // dx_g (c_in_g, P) = w_gᵀ (c_in_g, c_out_g) · dy_g (c_out_g, P)
            let b = MatRef::rows(dy_g, g.out_spatial);
            sgemm(g.col_rows, g.out_spatial, g.c_out_g, w_t, b, dx_g, false);
            continue;
        }
        let ow = g.out_dims[2];
        for lines in g.slabs() {
            // dcol (col_rows, S) = w_gᵀ (col_rows, c_out_g) · dy_g[:, slab] (c_out_g, S)
            let (p0, len) = (lines.start * ow, lines.len() * ow);
            let b = MatRef::rows(&dy_g[p0..], g.out_spatial);
            sgemm(g.col_rows, len, g.c_out_g, w_t, b, dcol, false);
            g.col2im(dcol, dx_g, lines);
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
    let mut col = vec![0.0f32; g.col_len()];
    let w_group = g.c_out_g * g.col_rows;
    for img in images {
        let x_n = &x[img * x_img..][..x_img];
        let dy_n = &dy[img * y_img..][..y_img];
        for grp in 0..g.groups {
            let x_g = &x_n[grp * g.c_in_g * g.in_spatial..][..g.c_in_g * g.in_spatial];
            let dy_g = &dy_n[grp * g.c_out_g * g.out_spatial..][..g.c_out_g * g.out_spatial];
            let dw_g = &mut part[grp * w_group..][..w_group];
            if g.is_pointwise() {
                // dw_g (c_out_g, c_in_g) += dy_g (c_out_g, P) · x_gᵀ (P, c_in_g)
                let (a, b) = (
                    MatRef::rows(dy_g, g.out_spatial),
                    MatRef::transposed(x_g, g.out_spatial),
                );
                sgemm(g.c_out_g, g.col_rows, g.out_spatial, a, b, dw_g, true);
                continue;
            }
            let ow = g.out_dims[2];
            for lines in g.slabs() {
                // dw_g (c_out_g, col_rows) += dy_g[:, slab] (c_out_g, S) · colᵀ (S, col_rows)
                let (p0, len) = (lines.start * ow, lines.len() * ow);
                g.im2col(x_g, &mut col, lines);
                let (a, b) = (
                    MatRef::rows(&dy_g[p0..], g.out_spatial),
                    MatRef::transposed(&col, len),
                );
                sgemm(g.c_out_g, g.col_rows, len, a, b, dw_g, true);
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (((i * 7919 + seed * 104_729) % 1013) as f32 / 506.5) - 1.0)
            .collect()
    }

    /// A convolution whose column matrix (12 M entries) takes several slabs (of 1 output row): the
    /// output against a direct sum, and both gradients by the adjoint identities ⟨dy, y(x, w)⟩ =
    /// ⟨dw, w⟩ = ⟨dx, x⟩ (y is linear in each).
    #[test]
    fn slabbed_columns_give_the_direct_convolution_and_its_adjoints() {
        let p = ConvParams {
            n: 2,
            c_in: 40,
            c_out: 3,
            groups: 1,
            in_dims: [8, 19, 140],
            kernel: [3, 3, 3],
            stride: [1, 2, 1],
            pad: [1, 1, 1],
            dilation: [1, 1, 1],
        };
        let g = Geometry::new(&p);
        assert!(g.slabs().count() > 3, "several slabs");
        let (x, w) = (values(p.input_len(), 1), values(p.weight_len(), 2));
        let mut y = vec![0.0; p.output_len()];
        forward(&p, &x, &w, None, &mut y).unwrap();
        let [od, oh, ow] = g.out_dims;
        let [d, h, wd] = g.in_dims;
        for (i, got) in y.iter().enumerate().step_by(7) {
            let (n, co, z, yy, xx) = (
                i / (3 * od * oh * ow),
                i / (od * oh * ow) % 3,
                i / (oh * ow) % od,
                i / ow % oh,
                i % ow,
            );
            let mut want = 0.0f64;
            for ci in 0..40 {
                for (a, b, c) in (0..27).map(|t| (t / 9, t / 3 % 3, t % 3)) {
                    let (iz, iy, ix) = (
                        z as isize + a as isize - 1,
                        (2 * yy) as isize + b as isize - 1,
                        xx as isize + c as isize - 1,
                    );
                    if iz < 0 || iy < 0 || ix < 0 || iz >= d as isize || iy >= h as isize || ix >= wd as isize
                    {
                        continue;
                    }
                    let xi = (((n * 40 + ci) * d + iz as usize) * h + iy as usize) * wd + ix as usize;
                    want += x[xi] as f64 * w[((co * 40 + ci) * 3 + a) * 9 + b * 3 + c] as f64;
                }
            }
            assert!((*got as f64 - want).abs() < 1e-3, "y[{i}] {got} vs {want}");
        }
        let dy = values(y.len(), 3);
        let (mut dx, mut dw) = (vec![0.0; x.len()], vec![0.0; w.len()]);
        backward(&p, &x, &w, &dy, Some(&mut dx), &mut dw, None).unwrap();
        let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(u, v)| *u as f64 * *v as f64).sum::<f64>();
        let (yy, ww, xx) = (dot(&dy, &y), dot(&dw, &w), dot(&dx, &x));
        assert!((yy - ww).abs() < 1e-3 * yy.abs().max(1.0), "{yy} vs {ww}");
        assert!((yy - xx).abs() < 1e-3 * yy.abs().max(1.0), "{yy} vs {xx}");
    }
}
