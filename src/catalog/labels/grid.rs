//! Aligning a label map's voxel grid to a packed series' grid by geometry (never by file order).
//!
//! A series' voxel (slice k, row r, column c) lies at `IPP_k + c·Δc·X + r·Δr·Y` in LPS mm (DICOM
//! C.7.6.2.1.1: X the row direction cosines, Y the column ones, Δr and Δc the PixelSpacing). A
//! label map's voxel (i, j, l) lies at `A·(i, j, l, 1)`. The two grids match when every axis of the
//! label map runs along one axis of the series (either way), with the same number of voxels, and
//! every voxel lands on a voxel centre: checked at the eight corners of the grid and at the first
//! voxel of every slice (a regular grid cannot describe unevenly spaced slices), within a tenth of
//! the in-plane pixel size. Anything else is refused with both geometries; masks are never
//! resampled, since a resampled mask is not the annotation that was drawn.

/// Smallest cosine between a label-map axis and the series axis it is taken to run along (≈2.6°).
const MIN_COSINE: f64 = 0.999;

/// A packed series' grid in the patient frame (LPS mm).
#[derive(Clone, Debug)]
pub struct SeriesGrid {
    /// Slices, rows, columns.
    pub dims: [usize; 3],
    /// PixelSpacing: between rows, between columns.
    pub spacing: [f64; 2],
    /// Row direction cosines (X: along a row, as the column index grows), then column ones (Y).
    pub orientation: [f64; 6],
    /// ImagePositionPatient of every slice in stored order.
    pub positions: Vec<[f64; 3]>,
}

/// Where each label-map axis (i, j, l) goes: the series axis (0 slice, 1 row, 2 column) and whether
/// it runs the other way.
pub type AxisMap = [(usize, bool); 3];

fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}
fn norm(a: [f64; 3]) -> f64 {
    dot(a, a).sqrt()
}
fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}
fn fmt3(v: [f64; 3]) -> String {
    format!("({:.3}, {:.3}, {:.3})", v[0], v[1], v[2])
}

impl SeriesGrid {
    fn x(&self) -> [f64; 3] {
        [self.orientation[0], self.orientation[1], self.orientation[2]]
    }
    fn y(&self) -> [f64; 3] {
        [self.orientation[3], self.orientation[4], self.orientation[5]]
    }
    /// Centre of voxel (k, r, c).
    pub fn position(&self, k: usize, r: usize, c: usize) -> [f64; 3] {
        let (x, y, p) = (self.x(), self.y(), self.positions[k]);
        std::array::from_fn(|d| p[d] + c as f64 * self.spacing[1] * x[d] + r as f64 * self.spacing[0] * y[d])
    }
    /// The in-plane voxel size, mm² (area of one pixel).
    pub fn pixel_area(&self) -> f64 {
        self.spacing[0] * self.spacing[1]
    }
    /// Distance between slice centres along the normal (mean over the series; 0 for one slice).
    pub fn slice_step(&self) -> f64 {
        let n = self.positions.len();
        if n < 2 {
            return 0.0;
        }
        let normal = cross(self.x(), self.y());
        let first = self.positions[0];
        let last = self.positions[n - 1];
        (dot(last, normal) - dot(first, normal)).abs() / (n - 1) as f64
    }
    pub fn describe(&self) -> String {
        let n = self.positions.len();
        let step = if n > 1 {
            fmt3(std::array::from_fn(|d| {
                (self.positions[n - 1][d] - self.positions[0][d]) / (n - 1) as f64
            }))
        } else {
            "(one slice)".into()
        };
        format!(
            "series grid {} columns × {} rows × {} slices; column step {} mm, row step {} mm, slice step {step} mm; \
             first voxel at {} (LPS)",
            self.dims[2],
            self.dims[1],
            self.dims[0],
            fmt3(self.x().map(|v| v * self.spacing[1])),
            fmt3(self.y().map(|v| v * self.spacing[0])),
            fmt3(self.positions.first().copied().unwrap_or([f64::NAN; 3]))
        )
    }
    fn is_known(&self) -> bool {
        self.orientation.iter().all(|v| v.is_finite())
            && self.spacing.iter().all(|v| v.is_finite() && *v > 0.0)
            && self.positions.len() == self.dims[0]
            && self.positions.iter().flatten().all(|v| v.is_finite())
    }
}

/// How a label map's grid is described in an error.
pub fn describe_map(dim: [usize; 3], affine_lps: &[[f64; 4]; 3]) -> String {
    let col = |c: usize| [affine_lps[0][c], affine_lps[1][c], affine_lps[2][c]];
    format!(
        "mask grid {}×{}×{} voxels; axis steps i {} j {} k {} mm; voxel (0, 0, 0) at {} (LPS)",
        dim[0],
        dim[1],
        dim[2],
        fmt3(col(0)),
        fmt3(col(1)),
        fmt3(col(2)),
        fmt3(col(3))
    )
}

/// Which series axis each label-map axis runs along, or why the grids do not match.
pub fn align(grid: &SeriesGrid, dim: [usize; 3], affine_lps: &[[f64; 4]; 3]) -> Result<AxisMap, String> {
    let both = |why: String| format!("{why}: {}; {}", describe_map(dim, affine_lps), grid.describe());
    if !grid.is_known() {
        return Err(both(
            "the series' geometry is not recorded (orientation, spacing or positions)".into(),
        ));
    }
    let normal = cross(grid.x(), grid.y());
    let axes = [normal, grid.y(), grid.x()];
    let mut map = [(0usize, false); 3];
    let mut used = [false; 3];
    for (a, slot) in map.iter_mut().enumerate() {
        let u = [affine_lps[0][a], affine_lps[1][a], affine_lps[2][a]];
        let len = norm(u);
        if dim[a] == 1 && grid.dims[0] == 1 && !used[0] {
            // One slice on both sides: this axis is the slice axis whatever its step.
            *slot = (0, false);
            used[0] = true;
            continue;
        }
        if len == 0.0 {
            return Err(both(format!("mask axis {} has zero length", ["i", "j", "k"][a])));
        }
        let (best, cos) = axes
            .iter()
            .enumerate()
            .map(|(s, v)| (s, dot(u, *v) / len))
            .max_by(|x, y| x.1.abs().total_cmp(&y.1.abs()))
            .expect("three axes");
        if cos.abs() < MIN_COSINE || used[best] {
            return Err(both(format!(
                "mask axis {} runs along no series axis",
                ["i", "j", "k"][a]
            )));
        }
        used[best] = true;
        *slot = (best, cos < 0.0);
    }
    for (a, (s, _)) in map.iter().enumerate() {
        if dim[a] != grid.dims[*s] {
            return Err(both(format!(
                "mask axis {} has {} voxels, the series axis it runs along has {}",
                ["i", "j", "k"][a],
                dim[a],
                grid.dims[*s]
            )));
        }
    }
    let tol = (0.1 * grid.spacing[0].min(grid.spacing[1])).max(0.01);
    let check = |ijl: [usize; 3]| -> Result<(), String> {
        let q: [f64; 3] = std::array::from_fn(|d| {
            affine_lps[d][3] + (0..3).map(|a| affine_lps[d][a] * ijl[a] as f64).sum::<f64>()
        });
        let ksc = series_index(&map, grid, ijl);
        let p = grid.position(ksc[0], ksc[1], ksc[2]);
        let off = norm(std::array::from_fn(|d| q[d] - p[d]));
        if off > tol {
            return Err(both(format!(
                "mask voxel {ijl:?} lies at {} but series voxel (slice {}, row {}, column {}) at {}: {off:.3} mm apart",
                fmt3(q),
                ksc[0],
                ksc[1],
                ksc[2],
                fmt3(p)
            )));
        }
        Ok(())
    };
    for corner in 0..8 {
        check(std::array::from_fn(|a| {
            if corner >> a & 1 == 1 {
                dim[a] - 1
            } else {
                0
            }
        }))?;
    }
    let slice_axis = map.iter().position(|(s, _)| *s == 0).expect("a slice axis");
    for k in 0..dim[slice_axis] {
        check(std::array::from_fn(|a| if a == slice_axis { k } else { 0 }))?;
    }
    Ok(map)
}

/// The series voxel (slice, row, column) of label-map voxel (i, j, l).
pub fn series_index(map: &AxisMap, grid: &SeriesGrid, ijl: [usize; 3]) -> [usize; 3] {
    let mut out = [0usize; 3];
    for (a, (s, flip)) in map.iter().enumerate() {
        out[*s] = if *flip { grid.dims[*s] - 1 - ijl[a] } else { ijl[a] };
    }
    out
}

/// The label map's values in the series' order (slice, row, column), as labels; or the first voxel
/// that is not a label (a non-negative integer below 65536).
pub fn reorder(
    map: &AxisMap,
    grid: &SeriesGrid,
    dim: [usize; 3],
    values: &[f64],
) -> Result<Vec<u16>, String> {
    let [_, rows, cols] = grid.dims;
    let mut out = vec![0u16; values.len()];
    let mut at = 0;
    for l in 0..dim[2] {
        for j in 0..dim[1] {
            for i in 0..dim[0] {
                let v = values[at];
                at += 1;
                if v == 0.0 {
                    continue;
                }
                if !(v.fract() == 0.0 && (0.0..=u16::MAX as f64).contains(&v)) {
                    return Err(format!(
                        "voxel ({i}, {j}, {l}) holds {v}: a label map holds non-negative integers \
                         (threshold a probability map first)"
                    ));
                }
                let [k, r, c] = series_index(map, grid, [i, j, l]);
                out[(k * rows + r) * cols + c] = v as u16;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn axial(n: usize) -> SeriesGrid {
        SeriesGrid {
            dims: [n, 4, 5],
            spacing: [0.8, 0.7],
            orientation: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
            positions: (0..n).map(|k| [-10.0, 20.0, 30.0 + 2.5 * k as f64]).collect(),
        }
    }

    #[test]
    fn a_flipped_permuted_grid_maps_and_a_shifted_one_is_refused() {
        let g = axial(3);
        // i runs down the slices from the top one, j along columns, k along rows.
        let a = [
            [0.0, 0.7, 0.0, -10.0],
            [0.0, 0.0, 0.8, 20.0],
            [-2.5, 0.0, 0.0, 35.0],
        ];
        let map = align(&g, [3, 5, 4], &a).unwrap();
        assert_eq!(map, [(0, true), (2, false), (1, false)]);
        assert_eq!(series_index(&map, &g, [0, 4, 1]), [2, 1, 4]);
        let mut shifted = a;
        shifted[0][3] += 0.35;
        let e = align(&g, [3, 5, 4], &shifted).unwrap_err();
        assert!(
            e.contains("0.350 mm apart") && e.contains("series grid 5 columns"),
            "{e}"
        );
        let e = align(&g, [3, 5, 5], &a).unwrap_err();
        assert!(e.contains("has 5 voxels"), "{e}");
    }

    #[test]
    fn uneven_slices_and_non_labels_are_refused() {
        let mut g = axial(3);
        g.positions[2][2] += 1.0;
        let a = [
            [0.7, 0.0, 0.0, -10.0],
            [0.0, 0.8, 0.0, 20.0],
            [0.0, 0.0, 3.0, 30.0],
        ];
        assert!(align(&g, [5, 4, 3], &a).is_err());
        let g = axial(1);
        let map = align(&g, [5, 4, 1], &a).unwrap();
        let mut values = vec![0.0; 20];
        values[7] = 0.5;
        assert!(reorder(&map, &g, [5, 4, 1], &values)
            .unwrap_err()
            .contains("(2, 1, 0) holds 0.5"));
    }
}
