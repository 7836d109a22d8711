//! Opening one shard file for a dataset: checked against the catalog's byte ranges, then mapped.

use super::{Luts, SeriesInfo};
use crate::data::DataError;
use memmap2::Mmap;
use std::fs;
use std::path::Path;

/// Checks one shard file against the byte ranges the catalog recorded for `series`, asks HDF5
/// (metadata only, no file lock) where each pixel dataset starts, and maps the file read-only.
pub(super) fn open_shard(path: &Path, series: &[&SeriesInfo]) -> Result<(Mmap, Vec<Luts>), DataError> {
    let err = |reason: String| DataError::Shard {
        path: path.to_path_buf(),
        reason,
    };
    let file = fs::File::open(path).map_err(|e| {
        let remedy = match e.kind() {
            std::io::ErrorKind::NotFound => {
                "; the catalog lists it: put the pack back where it was built (or give the staged \
                 copy with --shard-dir), or rebuild the catalog with `medtrain catalog build` on the \
                 packs that exist"
            }
            std::io::ErrorKind::PermissionDenied => "; make the shard readable for this user",
            _ => "",
        };
        err(format!("cannot open: {e}{remedy}"))
    })?;
    let size = file
        .metadata()
        .map_err(|e| err(format!("cannot stat: {e}")))?
        .len();
    let needed = series.iter().map(|s| s.offset + s.length).max().unwrap_or(0);
    if size < needed {
        return Err(err(format!(
            "{size} bytes, but its pixel data reach byte {needed}: truncated or incomplete copy"
        )));
    }
    let h5 = hdf5::File::with_options()
        .with_fapl(|p| p.file_locking(false))
        .open(path)
        .map_err(|e| err(format!("not a readable HDF5 file: {e}")))?;
    for s in series {
        let ds = h5
            .dataset(&s.dataset)
            .map_err(|e| err(format!("no pixel dataset {}: {e}", s.dataset)))?;
        let (offset, bytes) = (ds.offset(), ds.storage_size());
        if offset != Some(s.offset) || bytes != s.length {
            return Err(err(format!(
                "pixel dataset {} lies at {offset:?} ({bytes} bytes), the catalog says {} ({} bytes): \
                 not the catalogued shard",
                s.dataset, s.offset, s.length
            )));
        }
    }
    let mut luts = Vec::with_capacity(series.len());
    for s in series {
        let mut l = Luts::default();
        for which in s.plan.lut_names() {
            let name = crate::pack::tables::lut_dataset(&s.dataset, which);
            let values: Vec<f64> = h5
                .dataset(&name)
                .and_then(|ds| ds.read_raw())
                .map_err(|e| err(format!("no LUT dataset {name}: {e}")))?;
            match which {
                "modality" => l.modality = values,
                _ => l.voi = values,
            }
        }
        s.plan
            .check_luts(&l)
            .map_err(|reason| err(format!("series of {}: {reason}", s.dataset)))?;
        luts.push(l);
    }
    drop(h5);
    // SAFETY: shards are immutable once published (pack renames them into place; staging copies
    // them before training starts); the ranges read were checked against the file size above.
    let map = unsafe { Mmap::map(&file) }.map_err(|e| err(format!("cannot map: {e}")))?;
    Ok((map, luts))
}
