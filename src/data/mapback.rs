//! Maps on the network input grid back into the pack's geometry: each pack voxel (slice, row, col)
//! is taken through the inverse of the sample's recorded affine (so flips are undone and crops land
//! where they were cut), and voxel indices go to patient coordinates (mm) through the series'
//! origin, orientation and spacing ([`series_geometry`] reads them from the catalog). Below
//! `explain` and `train`, which both place maps and regions in the patient frame.

use super::SampleTransform;
use crate::catalog::columns::Level;
use crate::catalog::view::Catalog;

/// Inverse of a 2×2 or 3×3 matrix given as rows; None when singular or not finite (a series of
/// unknown orientation has NaN steps).
fn invert3(m: [[f64; 3]; 3]) -> Option<[[f64; 3]; 3]> {
    let det = m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
        - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
    if !(det.abs() >= 1e-12 && det.is_finite()) {
        return None;
    }
    let c = |r0: usize, c0: usize, r1: usize, c1: usize| m[r0][c0] * m[r1][c1] - m[r0][c1] * m[r1][c0];
    Some([
        [c(1, 1, 2, 2) / det, -c(0, 1, 2, 2) / det, c(0, 1, 1, 2) / det],
        [-c(1, 0, 2, 2) / det, c(0, 0, 2, 2) / det, -c(0, 0, 1, 2) / det],
        [c(1, 0, 2, 1) / det, -c(0, 0, 2, 1) / det, c(0, 0, 1, 1) / det],
    ])
}

/// Trilinear read of a (D, H, W) map at a fractional point, clamped to the grid.
fn sample(map: &[f32], dims: [usize; 3], p: [f64; 3]) -> f32 {
    let mut i0 = [0usize; 3];
    let mut i1 = [0usize; 3];
    let mut f = [0f64; 3];
    for a in 0..3 {
        let x = p[a].clamp(0.0, (dims[a] - 1) as f64);
        i0[a] = x.floor() as usize;
        i1[a] = (i0[a] + 1).min(dims[a] - 1);
        f[a] = x - i0[a] as f64;
    }
    let at = |z: usize, y: usize, x: usize| map[(z * dims[1] + y) * dims[2] + x] as f64;
    let mut v = 0.0;
    for (z, wz) in [(i0[0], 1.0 - f[0]), (i1[0], f[0])] {
        for (y, wy) in [(i0[1], 1.0 - f[1]), (i1[1], f[1])] {
            for (x, wx) in [(i0[2], 1.0 - f[2]), (i1[2], f[2])] {
                let w = wz * wy * wx;
                if w != 0.0 {
                    v += w * at(z, y, x);
                }
            }
        }
    }
    v as f32
}

/// Writes `map` (D, H, W on the network grid) into `out` (the pack volume, (slices, rows, cols)) at
/// every voxel the sample covered (within half a grid step of the sampled region); other voxels
/// are left as they are. A 2D sample covers its own slice only. Returns the voxels written.
pub fn map_to_pack(
    map: &[f32],
    dims: [usize; 3],
    t: &SampleTransform,
    pack_shape: [usize; 3],
    out: &mut [f32],
) -> usize {
    let a = &t.affine;
    let two_d = dims[0] == 1 && a[0][0] == 0.0 && a[0][1] == 0.0 && a[0][2] == 0.0;
    let lin = if two_d {
        [[1.0, 0.0, 0.0], [0.0, a[1][1], a[1][2]], [0.0, a[2][1], a[2][2]]]
    } else {
        [
            [a[0][0], a[0][1], a[0][2]],
            [a[1][0], a[1][1], a[1][2]],
            [a[2][0], a[2][1], a[2][2]],
        ]
    };
    let Some(inv) = invert3(lin) else {
        return 0;
    };
    let [slices, rows, cols] = pack_shape;
    let slice_range = if two_d {
        let k = a[0][3].round();
        if k < 0.0 || k >= slices as f64 {
            return 0;
        }
        k as usize..k as usize + 1
    } else {
        0..slices
    };
    let inside = |p: [f64; 3]| (0..3).all(|ax| p[ax] >= -0.5 && p[ax] <= dims[ax] as f64 - 0.5);
    let mut written = 0;
    for k in slice_range {
        for r in 0..rows {
            for c in 0..cols {
                let d = if two_d {
                    [0.0, r as f64 - a[1][3], c as f64 - a[2][3]]
                } else {
                    [k as f64 - a[0][3], r as f64 - a[1][3], c as f64 - a[2][3]]
                };
                let mut p = [0.0; 3];
                for (i, row) in inv.iter().enumerate() {
                    p[i] = row[0] * d[0] + row[1] * d[1] + row[2] * d[2];
                }
                if inside(p) {
                    out[(k * rows + r) * cols + c] = sample(map, dims, p);
                    written += 1;
                }
            }
        }
    }
    written
}

/// A series' position in the patient frame (DICOM LPS, mm).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SeriesGeometry {
    /// Patient position of voxel (0, 0, 0).
    pub origin: [f64; 3],
    /// Patient step of one column (+1 col), one row (+1 row) and one slice (+1 slice), in mm.
    pub col_step: [f64; 3],
    pub row_step: [f64; 3],
    pub slice_step: [f64; 3],
}

impl SeriesGeometry {
    /// From DICOM ImageOrientationPatient (row direction, column direction), PixelSpacing (row,
    /// col) and the step between consecutive slices (signed, along the stored order). An unknown
    /// orientation (NaN, see `pack::tables::SeriesRecord`) gives a geometry that places nothing:
    /// [`SeriesGeometry::to_voxel`] is None (no lesion maps into it), overlays show it as stored.
    pub fn new(
        origin: [f64; 3],
        orientation: [f64; 6],
        pixel_spacing: [f64; 2],
        slice_step: [f64; 3],
    ) -> Self {
        let u = [orientation[0], orientation[1], orientation[2]];
        let v = [orientation[3], orientation[4], orientation[5]];
        SeriesGeometry {
            origin,
            col_step: u.map(|e| e * pixel_spacing[1]),
            row_step: v.map(|e| e * pixel_spacing[0]),
            slice_step,
        }
    }

    /// Patient coordinates of voxel (slice, row, col) (fractional indices allowed).
    pub fn to_patient(&self, voxel: [f64; 3]) -> [f64; 3] {
        std::array::from_fn(|i| {
            self.origin[i]
                + voxel[0] * self.slice_step[i]
                + voxel[1] * self.row_step[i]
                + voxel[2] * self.col_step[i]
        })
    }

    /// Voxel (slice, row, col) of a patient point; None for a degenerate geometry.
    pub fn to_voxel(&self, patient: [f64; 3]) -> Option<[f64; 3]> {
        // Columns of M are the slice, row and col steps: patient − origin = M · voxel.
        let m = std::array::from_fn(|i| [self.slice_step[i], self.row_step[i], self.col_step[i]]);
        let inv = invert3(m)?;
        let d: [f64; 3] = std::array::from_fn(|i| patient[i] - self.origin[i]);
        Some(std::array::from_fn(|i| {
            inv[i][0] * d[0] + inv[i][1] * d[1] + inv[i][2] * d[2]
        }))
    }
}

/// The patient geometry of a catalog series: origin and orientation from the series table, the
/// slice step from the first two slices' positions (the stored order), else the orientation's
/// normal times the slice spacing.
pub fn series_geometry(cat: &Catalog, series_row: u32) -> Result<SeriesGeometry, String> {
    let r = series_row as usize;
    let err = |e: crate::catalog::CatalogError| format!("catalog series row {r}: {e}");
    let origin = cat.col_f64(Level::Series, "origin").map_err(err)?;
    let orient = cat.col_f64(Level::Series, "orientation").map_err(err)?;
    let spacing = cat.col_f64(Level::Series, "pixel_spacing").map_err(err)?;
    let slice_spacing = cat.col_f64(Level::Series, "slice_spacing").map_err(err)?[r];
    let n = cat.col_u32(Level::Series, "n_slices").map_err(err)?[r] as usize;
    let start = cat.col_u64(Level::Series, "slice_start").map_err(err)?[r] as usize;
    let o: [f64; 3] = std::array::from_fn(|i| origin[3 * r + i]);
    let ori: [f64; 6] = std::array::from_fn(|i| orient[6 * r + i]);
    let ps = [spacing[2 * r], spacing[2 * r + 1]];
    let normal = [
        ori[1] * ori[5] - ori[2] * ori[4],
        ori[2] * ori[3] - ori[0] * ori[5],
        ori[0] * ori[4] - ori[1] * ori[3],
    ];
    let mut step = normal.map(|e| e * if slice_spacing > 0.0 { slice_spacing } else { 1.0 });
    if n > 1 {
        if let Ok(pos) = cat.col_f64(Level::Slice, "image_position") {
            if pos.len() >= 3 * (start + 2) {
                let d: [f64; 3] = std::array::from_fn(|i| pos[3 * (start + 1) + i] - pos[3 * start + i]);
                if d.iter().any(|v| v.abs() > 1e-9) {
                    step = d;
                }
            }
        }
    }
    let mut g = SeriesGeometry::new(o, ori, ps, step);
    if let Ok(pos) = cat.col_f64(Level::Slice, "image_position") {
        if pos.len() >= 3 * (start + 1) {
            g.origin = std::array::from_fn(|i| pos[3 * start + i]);
        }
    }
    Ok(g)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::config::SampleMode;
    use crate::data::transform::{Augmentation, Grid};

    fn transform(grid: &Grid, aug: &Augmentation) -> SampleTransform {
        SampleTransform {
            series_row: 0,
            slice_index: grid.centre_slice.unwrap_or(0),
            affine: grid.affine(aug),
            flips: aug.flips,
        }
    }

    #[test]
    fn a_flipped_slice_sample_lands_unflipped_in_its_own_slice() {
        // Source slice 2 of a (4, 3, 5) series sampled at native size: the identity in plane.
        let grid = Grid {
            mode: SampleMode::Slice,
            src_shape: [4, 3, 5],
            src_spacing: [2.0, 1.0, 1.0],
            out_extent: [1, 3, 5],
            out_spacing: None,
            centre_slice: Some(2),
        };
        let map: Vec<f32> = (0..15).map(|i| i as f32).collect();
        let mut out = vec![-1.0f32; 60];
        let n = map_to_pack(
            &map,
            [1, 3, 5],
            &transform(&grid, &Augmentation::none()),
            [4, 3, 5],
            &mut out,
        );
        assert_eq!(n, 15);
        assert_eq!(&out[30..45], &map[..]);
        assert!(out[..30].iter().chain(&out[45..]).all(|&v| v == -1.0));
        // Mirrored columns in the sample: the map of the sample is mirrored back.
        let mut aug = Augmentation::none();
        aug.flips = [false, false, true];
        let mut back = vec![0.0f32; 60];
        map_to_pack(&map, [1, 3, 5], &transform(&grid, &aug), [4, 3, 5], &mut back);
        for r in 0..3 {
            for c in 0..5 {
                assert_eq!(back[30 + r * 5 + c], map[r * 5 + (4 - c)], "row {r} col {c}");
            }
        }
    }

    #[test]
    fn a_centre_crop_is_placed_where_it_was_cut() {
        // A (2, 2, 2) crop from the centre of a (4, 4, 4) volume covers voxels 1..3 on every axis.
        let grid = Grid {
            mode: SampleMode::Crop3d,
            src_shape: [4, 4, 4],
            src_spacing: [1.0, 1.0, 1.0],
            out_extent: [2, 2, 2],
            out_spacing: None,
            centre_slice: None,
        };
        let map: Vec<f32> = (1..=8).map(|i| i as f32).collect();
        let mut out = vec![0.0f32; 64];
        let n = map_to_pack(
            &map,
            [2, 2, 2],
            &transform(&grid, &Augmentation::none()),
            [4, 4, 4],
            &mut out,
        );
        assert_eq!(n, 8);
        for z in 0..2 {
            for y in 0..2 {
                for x in 0..2 {
                    assert_eq!(out[((z + 1) * 4 + y + 1) * 4 + x + 1], map[(z * 2 + y) * 2 + x]);
                }
            }
        }
    }

    #[test]
    fn an_unknown_orientation_places_nothing() {
        let g = SeriesGeometry::new([0.0; 3], [f64::NAN; 6], [0.7, 0.7], [0.0, 0.0, 1.0]);
        assert_eq!(g.to_voxel([1.0, 2.0, 3.0]), None);
    }

    #[test]
    fn patient_coordinates_round_trip() {
        let g = SeriesGeometry::new(
            [-100.0, -50.0, 20.0],
            [0.0, 1.0, 0.0, 0.0, 0.0, -1.0],
            [0.8, 0.7],
            [2.5, 0.0, 0.0],
        );
        let v = [3.0, 10.0, 7.0];
        let p = g.to_patient(v);
        // col → +y × 0.7 mm, row → −z × 0.8 mm, slice → +x × 2.5 mm.
        assert!((p[0] - (-100.0 + 7.5)).abs() < 1e-9 && (p[1] - (-50.0 + 4.9)).abs() < 1e-9);
        assert!((p[2] - (20.0 - 8.0)).abs() < 1e-9);
        let back = g.to_voxel(p).unwrap();
        assert!((0..3).all(|i| (back[i] - v[i]).abs() < 1e-9), "{back:?}");
    }
}
