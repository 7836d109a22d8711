//! Single-threaded f32 GEMM on strided row/column matrices, backed by the `gemm` crate.
//!
//! Every call runs on one thread: the layers parallelise over images or chunks of fixed size, so each
//! output element is summed in the same order whatever the thread count (bitwise determinism), and
//! thread pools never nest.

/// A read-only matrix: element (r, c) lives at `data[r*rs + c*cs]`.
#[derive(Clone, Copy)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

impl<'a> MatRef<'a> {
    /// Row-major (rows, cols) matrix.
    pub fn rows(data: &'a [f32], cols: usize) -> Self {
        Self {
            data,
            rs: cols,
            cs: 1,
        }
    }
    /// The transpose of a row-major (cols, rows) matrix, without copying.
    pub fn transposed(data: &'a [f32], rows: usize) -> Self {
        Self {
            data,
            rs: 1,
            cs: rows,
        }
    }
    fn last_index(&self, rows: usize, cols: usize) -> usize {
        (rows - 1) * self.rs + (cols - 1) * self.cs
    }
}

/// c (m, n, row-major) = a (m, k) · b (k, n), or c += a·b when `accumulate`.
pub fn sgemm(m: usize, n: usize, k: usize, a: MatRef, b: MatRef, c: &mut [f32], accumulate: bool) {
    sgemm_strided(m, n, k, a, b, c, n, accumulate)
}

/// `sgemm` into the first n columns of a row-major matrix whose rows are `ldc` apart (a column block
/// of a wider matrix).
#[allow(clippy::too_many_arguments)]
pub fn sgemm_strided(
    m: usize,
    n: usize,
    k: usize,
    a: MatRef,
    b: MatRef,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(ldc >= n, "gemm: row stride {ldc} < {n} columns");
    let need = (m - 1) * ldc + n;
    assert!(c.len() >= need, "gemm: output holds {} < {need}", c.len());
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                c[r * ldc..r * ldc + n].fill(0.0);
            }
        }
        return;
    }
    assert!(a.last_index(m, k) < a.data.len(), "gemm: lhs too short");
    assert!(b.last_index(k, n) < b.data.len(), "gemm: rhs too short");
    // SAFETY: the asserts above bound every index the kernel reads (a, b) and writes (c: m rows of n,
    // `ldc` apart); `c` is borrowed mutably, so it aliases neither input.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            ldc as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_naive_product_with_transposes() {
        let (m, n, k) = (5, 7, 3);
        let a: Vec<f32> = (0..m * k).map(|i| i as f32 * 0.5 - 3.0).collect();
        let bt: Vec<f32> = (0..n * k).map(|i| (i as f32).sin()).collect(); // (n, k)
        let mut c = vec![1.0; m * n];
        sgemm(
            m,
            n,
            k,
            MatRef::rows(&a, k),
            MatRef::transposed(&bt, k),
            &mut c,
            true,
        );
        for i in 0..m {
            for j in 0..n {
                let want: f32 = 1.0 + (0..k).map(|l| a[i * k + l] * bt[j * k + l]).sum::<f32>();
                assert!(
                    (c[i * n + j] - want).abs() < 1e-5,
                    "({i},{j}) {} vs {want}",
                    c[i * n + j]
                );
            }
        }
    }
}
