//! RT Structure Sets as mask label volumes. Each closed planar contour goes onto the slice it lies
//! on: the image its Contour Image Sequence names (matched through the keyed pseudonyms), else the
//! slice whose plane holds its points (within half the slice spacing). Points are projected onto
//! the slice's pixel grid (column along the row direction cosines, row along the column ones) and the
//! polygon rasterised with the even-odd rule at pixel centres (`lidc::rasterise`: a centre exactly
//! on an edge is outside). The contours of one ROI on one slice combine by the even-odd rule too
//! (exclusive or), so a contour inside another cuts a hole, as the standard draws holes. A POINT
//! contour labels the pixel under it; open contours bound no region and are left out.
//!
//! The label value holds the ROIs as bits (bit r: the r-th ROI of the ROI Contour Sequence; at most
//! 16); a voxel is foreground when any ROI covers it.

use super::super::columns::{cell_text, padded, Level};
use super::super::view::Catalog;
use super::grid::SeriesGrid;
use crate::deid::{IdKind, SiteKey};
use crate::rtstruct::{ContourKind, RtStruct};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Most ROIs a label value's bits hold.
pub const MAX_ROIS: usize = 16;

/// The catalog row of the series a structure set annotates, and the structure set.
pub fn series_row(cat: &Catalog, key: &SiteKey, path: &Path) -> Result<(usize, RtStruct), String> {
    let rt = crate::rtstruct::read(path)?;
    let want = padded::<32>(&key.pseudonym(IdKind::Series, &rt.series_uid));
    let keys = cat
        .col_keys(Level::Series, "series_key")
        .map_err(|e| e.to_string())?;
    let row = keys.iter().position(|k| *k == want).ok_or_else(|| {
        format!(
            "RTReferencedSeriesSequence SeriesInstanceUID {:?} is not in the catalog (unknown key)",
            rt.series_uid
        )
    })?;
    Ok((row, rt))
}

fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

fn sub(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

/// Rasterises every ROI onto series `row`'s grid; ROI bits in (slice, row, column) order.
pub fn volume(
    cat: &Catalog,
    key: &SiteKey,
    row: usize,
    grid: &SeriesGrid,
    rt: &RtStruct,
) -> Result<Vec<u16>, String> {
    if rt.rois.len() > MAX_ROIS {
        return Err(format!("{} ROIs; at most {MAX_ROIS} are kept", rt.rois.len()));
    }
    let [n, rows, cols] = grid.dims;
    let start = cat
        .col_u64(Level::Series, "slice_start")
        .map_err(|e| e.to_string())?[row] as usize;
    let sops = cat.col_keys(Level::Slice, "sop_key").map_err(|e| e.to_string())?;
    let slice_of: HashMap<&str, usize> = (0..n).map(|k| (cell_text(&sops[start + k]), k)).collect();
    let o = grid.orientation;
    let (along_row, along_col) = ([o[0], o[1], o[2]], [o[3], o[4], o[5]]);
    let normal = [
        along_row[1] * along_col[2] - along_row[2] * along_col[1],
        along_row[2] * along_col[0] - along_row[0] * along_col[2],
        along_row[0] * along_col[1] - along_row[1] * along_col[0],
    ];
    let depth: Vec<f64> = grid.positions.iter().map(|p| dot(*p, normal)).collect();
    let half = if n > 1 {
        (depth[n - 1] - depth[0]).abs() / (n - 1) as f64 / 2.0
    } else {
        f64::INFINITY
    };
    let nearest = |d: f64| {
        (0..n)
            .min_by(|&a, &b| (depth[a] - d).abs().total_cmp(&(depth[b] - d).abs()))
            .filter(|&k| (depth[k] - d).abs() <= half + 1e-6)
    };
    let plane = rows * cols;
    let mut labels = vec![0u16; n * plane];
    for (r, roi) in rt.rois.iter().enumerate() {
        let mut slices: BTreeMap<usize, Vec<bool>> = BTreeMap::new();
        for (c, contour) in roi.contours.iter().enumerate() {
            if contour.kind == ContourKind::Open {
                continue;
            }
            let at = || {
                format!(
                    "ROI {:?} (ROIContourSequence[{r}]) ContourSequence[{c}]",
                    roi.name
                )
            };
            let d = dot(contour.points[0], normal);
            let k = match &contour.image {
                Some(uid) => *slice_of
                    .get(key.pseudonym(IdKind::Instance, uid).as_str())
                    .ok_or_else(|| {
                        format!(
                            "{}: ReferencedSOPInstanceUID {uid:?} is not a slice of the series",
                            at()
                        )
                    })?,
                None => nearest(d).ok_or_else(|| {
                    format!(
                        "{}: its plane ({d:.2} mm along the normal) holds no slice of the series",
                        at()
                    )
                })?,
            };
            if let Some(p) = contour
                .points
                .iter()
                .find(|p| (dot(**p, normal) - depth[k]).abs() > half + 1e-6)
            {
                return Err(format!(
                    "{}: point {p:?} is {:.2} mm off the plane of its slice {k}",
                    at(),
                    (dot(*p, normal) - depth[k]).abs()
                ));
            }
            let pixels: Vec<(f64, f64)> = contour
                .points
                .iter()
                .map(|p| {
                    let v = sub(*p, grid.positions[k]);
                    (
                        dot(v, along_row) / grid.spacing[1],
                        dot(v, along_col) / grid.spacing[0],
                    )
                })
                .collect();
            let mask = slices.entry(k).or_insert_with(|| vec![false; plane]);
            for (m, v) in mask.iter_mut().zip(crate::lidc::rasterise(&pixels, rows, cols)) {
                *m ^= v;
            }
        }
        for (k, mask) in slices {
            for (l, m) in labels[k * plane..(k + 1) * plane].iter_mut().zip(mask) {
                if m {
                    *l |= 1 << r;
                }
            }
        }
    }
    Ok(labels)
}
