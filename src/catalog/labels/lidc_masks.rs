//! LIDC-IDRI XML as mask label volumes: each reading session's outlines rasterised on their slices
//! (`lidc::rasterise`: even-odd, pixel centres strictly inside; exclusions cut out), the readers'
//! masks kept as the bits of the label value (bit r: reader r, in file order; at most 16 readers),
//! and the consensus at an agreement level (at least k readers) used for the aggregates and as the
//! training target.

use super::super::columns::{cell_text, padded, Level};
use super::super::view::Catalog;
use crate::deid::{IdKind, SiteKey};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Most readers a label value's bits hold.
pub const MAX_READERS: usize = 16;

/// One series' masks from an LIDC file.
pub struct LidcVolume {
    /// Reader bits per voxel, (slice, row, column).
    pub labels: Vec<u16>,
    /// Series-level values: readers, malignancy_max, subtlety_min.
    pub extra: BTreeMap<&'static str, Option<f64>>,
}

/// The catalog row of the series an LIDC file annotates, from its SeriesInstanceUid.
pub fn series_row(
    cat: &Catalog,
    key: &SiteKey,
    path: &Path,
) -> Result<(usize, crate::lidc::LidcRead), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
    let read = crate::lidc::parse(&text)?;
    let want = padded::<32>(&key.pseudonym(IdKind::Series, &read.series_uid));
    let keys = cat
        .col_keys(Level::Series, "series_key")
        .map_err(|e| e.to_string())?;
    let row = keys.iter().position(|k| *k == want).ok_or_else(|| {
        format!(
            "<SeriesInstanceUid> {:?} is not in the catalog (unknown key)",
            read.series_uid
        )
    })?;
    Ok((row, read))
}

/// Rasterises every reader's outlines onto series `row`'s slices.
pub fn volume(
    cat: &Catalog,
    key: &SiteKey,
    row: usize,
    read: &crate::lidc::LidcRead,
) -> Result<LidcVolume, String> {
    if read.readers.len() > MAX_READERS {
        return Err(format!(
            "{} reading sessions; at most {MAX_READERS} are kept",
            read.readers.len()
        ));
    }
    let col = |name: &str| cat.col_u32(Level::Series, name).map_err(|e| e.to_string());
    let (n, rows, cols) = (
        col("n_slices")?[row] as usize,
        col("rows")?[row] as usize,
        col("cols")?[row] as usize,
    );
    let start = cat
        .col_u64(Level::Series, "slice_start")
        .map_err(|e| e.to_string())?[row] as usize;
    let sops = cat.col_keys(Level::Slice, "sop_key").map_err(|e| e.to_string())?;
    let slice_of: HashMap<&str, usize> = (0..n).map(|k| (cell_text(&sops[start + k]), k)).collect();
    let plane = rows * cols;
    let mut labels = vec![0u16; n * plane];
    let (mut malignancy, mut subtlety): (Option<f64>, Option<f64>) = (None, None);
    for (r, reader) in read.readers.iter().enumerate() {
        let mut mask = vec![false; n * plane];
        for nodule in &reader.nodules {
            if let Some(&m) = nodule.characteristics.get("malignancy") {
                malignancy = Some(malignancy.map_or(m, |v| v.max(m)));
            }
            if let Some(&s) = nodule.characteristics.get("subtlety") {
                subtlety = Some(subtlety.map_or(s, |v| v.min(s)));
            }
            // Per slice: inclusions united, exclusions removed, then added to the reader's mask.
            let mut slices: BTreeMap<usize, (Vec<bool>, Vec<bool>)> = BTreeMap::new();
            for roi in &nodule.rois {
                let k = *slice_of
                    .get(key.pseudonym(IdKind::Instance, &roi.sop_uid).as_str())
                    .ok_or_else(|| {
                        format!(
                            "line {}: <imageSOP_UID> {:?} (reader {}, nodule {:?}) is not a slice of the series",
                            roi.line, roi.sop_uid, reader.id, nodule.id
                        )
                    })?;
                let (inc, exc) = slices
                    .entry(k)
                    .or_insert_with(|| (vec![false; plane], vec![false; plane]));
                let target = if roi.inclusion { inc } else { exc };
                for (t, v) in target
                    .iter_mut()
                    .zip(crate::lidc::rasterise(&roi.points, rows, cols))
                {
                    *t |= v;
                }
            }
            for (k, (inc, exc)) in slices {
                for i in 0..plane {
                    mask[k * plane + i] |= inc[i] && !exc[i];
                }
            }
        }
        for (l, m) in labels.iter_mut().zip(&mask) {
            if *m {
                *l |= 1 << r;
            }
        }
    }
    let extra = BTreeMap::from([
        ("readers", Some(read.readers.len() as f64)),
        ("malignancy_max", malignancy),
        ("subtlety_min", subtlety),
    ]);
    Ok(LidcVolume { labels, extra })
}
