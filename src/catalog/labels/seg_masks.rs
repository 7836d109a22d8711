//! DICOM Segmentation objects as mask label volumes, binary or fractional (a fractional pixel is in
//! its segment at half the maximum fractional value or more).
//!
//! - **The series**: the Referenced Series Sequence's SeriesInstanceUID, pseudonymised with the site
//!   key; without one, the series of the same frame of reference (its pseudonym) on whose slices
//!   every frame lies.
//! - **The slice of a frame**: the source image its Derivation Image Sequence names (matched
//!   through the instance pseudonyms), else the slice at its ImagePositionPatient (within a tenth of
//!   a pixel).
//! - **Geometry**: rows, columns, orientation and pixel spacing must be the series'; a SEG on another
//!   grid is refused with both, never resampled.
//!
//! The label value holds the segments as bits (bit s: the s-th item of the Segment Sequence; at most
//! 16); a voxel is foreground when any segment covers it.

use super::super::columns::{cell_text, padded, Level};
use super::super::view::Catalog;
use super::grid::SeriesGrid;
use crate::deid::{IdKind, SiteKey};
use crate::dicomseg::ReadSeg;
use std::collections::HashMap;
use std::path::Path;

/// Most segments a label value's bits hold.
pub const MAX_SEGMENTS: usize = 16;

fn close(a: [f64; 3], b: [f64; 3], tol: f64) -> bool {
    (0..3).all(|i| (a[i] - b[i]).abs() <= tol)
}

/// The catalog row of the series a SEG annotates, and the SEG.
pub fn series_row(cat: &Catalog, key: &SiteKey, path: &Path) -> Result<(usize, ReadSeg), String> {
    let seg = crate::dicomseg::read(path)?;
    let err = |e: crate::catalog::CatalogError| e.to_string();
    let keys = cat.col_keys(Level::Series, "series_key").map_err(err)?;
    if let Some(uid) = &seg.series_uid {
        let want = padded::<32>(&key.pseudonym(IdKind::Series, uid));
        let row = keys.iter().position(|k| *k == want).ok_or_else(|| {
            format!("ReferencedSeriesSequence SeriesInstanceUID {uid:?} is not in the catalog (unknown key?)")
        })?;
        return Ok((row, seg));
    }
    let uid = seg
        .frame_of_reference_uid
        .clone()
        .ok_or("neither a ReferencedSeriesSequence nor a FrameOfReferenceUID names the series")?;
    let want = padded::<32>(&key.pseudonym(IdKind::FrameOfReference, &uid));
    let frames = cat
        .col_keys(Level::Series, "frame_of_reference_key")
        .map_err(err)?;
    for row in (0..keys.len()).filter(|&r| frames[r] == want) {
        let grid = super::masks::series_grid(cat, row).map_err(err)?;
        let tol = 0.1 * grid.spacing[0].min(grid.spacing[1]);
        let lies = |p: Option<[f64; 3]>| p.is_some_and(|p| grid.positions.iter().any(|q| close(p, *q, tol)));
        if seg.frames.iter().all(|f| lies(f.position)) {
            return Ok((row, seg));
        }
    }
    Err(format!(
        "no catalogued series of FrameOfReferenceUID {uid:?} has a slice at every frame's ImagePositionPatient"
    ))
}

/// The SEG's segments as bits on series `row`'s grid, in (slice, row, column) order.
pub fn volume(
    cat: &Catalog,
    key: &SiteKey,
    row: usize,
    grid: &SeriesGrid,
    seg: &ReadSeg,
) -> Result<Vec<u16>, String> {
    if seg.segments.len() > MAX_SEGMENTS {
        return Err(format!(
            "{} segments; at most {MAX_SEGMENTS} are kept",
            seg.segments.len()
        ));
    }
    let [n, rows, cols] = grid.dims;
    if (seg.rows, seg.cols) != (rows, cols) {
        return Err(format!(
            "the SEG's frames are {}×{} pixels, the series' slices {rows}×{cols}",
            seg.rows, seg.cols
        ));
    }
    if let Some(o) = seg.orientation {
        if (0..6).any(|i| (o[i] - grid.orientation[i]).abs() > 1e-3) {
            return Err(format!(
                "the SEG's ImageOrientationPatient {o:?} is not the series' {:?}",
                grid.orientation
            ));
        }
    }
    if let Some(s) = seg.pixel_spacing {
        if (0..2).any(|i| (s[i] - grid.spacing[i]).abs() > 1e-3 * grid.spacing[i]) {
            return Err(format!(
                "the SEG's PixelSpacing {s:?} is not the series' {:?}",
                grid.spacing
            ));
        }
    }
    let start = cat
        .col_u64(Level::Series, "slice_start")
        .map_err(|e| e.to_string())?[row] as usize;
    let sops = cat.col_keys(Level::Slice, "sop_key").map_err(|e| e.to_string())?;
    let slice_of: HashMap<&str, usize> = (0..n).map(|k| (cell_text(&sops[start + k]), k)).collect();
    let tol = 0.1 * grid.spacing[0].min(grid.spacing[1]);
    let plane = rows * cols;
    let mut labels = vec![0u16; n * plane];
    for (f, frame) in seg.frames.iter().enumerate() {
        let at = format!("PerFrameFunctionalGroupsSequence[{f}]");
        let bit = seg
            .segments
            .iter()
            .position(|(number, _)| *number == frame.segment)
            .ok_or_else(|| {
                format!(
                    "{at}: ReferencedSegmentNumber {} is not in the SegmentSequence",
                    frame.segment
                )
            })?;
        let k = match (&frame.source_sop, frame.position) {
            (Some(uid), _) => *slice_of
                .get(key.pseudonym(IdKind::Instance, uid).as_str())
                .ok_or_else(|| {
                    format!("{at}: source ReferencedSOPInstanceUID {uid:?} is not a slice of the series")
                })?,
            (None, Some(p)) => (0..n)
                .find(|&k| close(p, grid.positions[k], tol))
                .ok_or_else(|| format!("{at}: ImagePositionPatient {p:?} is no slice of the series"))?,
            (None, None) => return Err(format!("{at}: names neither a source image nor a plane position")),
        };
        if let (Some(p), true) = (frame.position, frame.source_sop.is_some()) {
            if !close(p, grid.positions[k], tol) {
                return Err(format!(
                    "{at}: ImagePositionPatient {p:?} is not that of its source image, slice {k} at {:?}",
                    grid.positions[k]
                ));
            }
        }
        for (l, &v) in labels[k * plane..(k + 1) * plane].iter_mut().zip(&frame.pixels) {
            if v {
                *l |= 1 << bit;
            }
        }
    }
    Ok(labels)
}
