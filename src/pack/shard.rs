//! One HDF5 shard being written: pixel datasets that are contiguous and page-aligned (so readers
//! memory-map them at the offset HDF5 reports), the series and slice tables, and format
//! attributes. A shard becomes visible only by rename after it is complete, fsynced and hashed.

use super::format::{create_aligned, dtype_size, write_shard_attrs, PARTIAL_SUFFIX, VOLUMES_GROUP};
use super::index::ShardEntry;
use super::tables::{lut_dataset, write_tables, SeriesRecord, SliceRecord, TableError, LUTS_GROUP};
use crate::dicom::decode::PixelBuffer;
use std::fs;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error(
        "HDF5 error in shard {path}: {source}{}",
        crate::remedy::low_space_remedy(path, RERUN)
    )]
    Hdf5 { path: PathBuf, source: hdf5::Error },
    #[error("shard {path}: {source}{}", crate::remedy::low_space_remedy(path, RERUN))]
    Table { path: PathBuf, source: TableError },
    #[error("I/O error on {path}: {source}{}", io_remedy(source, path))]
    Io { path: PathBuf, source: std::io::Error },
    #[error("shard {path}: pixel dataset {dataset} has no contiguous offset")]
    NoOffset { path: PathBuf, dataset: String },
}

/// What to do once the cause of a failed shard write is fixed.
const RERUN: &str = "run the same pack command again (committed shards are kept)";

fn io_remedy(e: &std::io::Error, path: &Path) -> String {
    match crate::remedy::io_remedy(e, RERUN) {
        hint if hint.is_empty() => crate::remedy::low_space_remedy(path, RERUN),
        hint => hint,
    }
}

/// Pixels of one item ready for a shard, with its table rows (dataset fields filled in by the writer).
pub struct PackedItem {
    pub record: SeriesRecord,
    pub slices: Vec<SliceRecord>,
    pub pixels: PixelBuffer,
    /// Dataset shape: (slices, rows, cols) or (images, rows, cols, samples).
    pub shape: Vec<usize>,
    /// Modality LUT and VOI LUT tables (written to `luts/` when the record counts entries).
    pub luts: ItemLuts,
}

/// The LUT tables of one item, one f64 per entry.
#[derive(Clone, Debug, Default)]
pub struct ItemLuts {
    pub modality: Vec<f64>,
    pub voi: Vec<f64>,
}

pub struct ShardWriter {
    file: Option<hdf5::File>,
    partial: PathBuf,
    path: PathBuf,
    series: Vec<SeriesRecord>,
    slices: Vec<SliceRecord>,
    pixel_bytes: u64,
}

/// Bytes of pixel data, by the same element sizes the reader checks against.
fn pixel_bytes(p: &PixelBuffer) -> u64 {
    p.len() as u64 * dtype_size(dtype_code(p))
}

/// Short dtype code stored in `series/dtype` (numpy's names without the byte order).
pub fn dtype_code(p: &PixelBuffer) -> &'static str {
    match p {
        PixelBuffer::U8(_) => "u8",
        PixelBuffer::I8(_) => "i8",
        PixelBuffer::U16(_) => "u16",
        PixelBuffer::I16(_) => "i16",
        PixelBuffer::U32(_) => "u32",
        PixelBuffer::I32(_) => "i32",
        PixelBuffer::F32(_) => "f32",
        PixelBuffer::F64(_) => "f64",
    }
}

impl ShardWriter {
    /// Starts `<dir>/<name>` (written as `<name>.partial` until `finish`).
    pub fn create(dir: &Path, name: &str, key_fingerprint: &str) -> Result<ShardWriter, ShardError> {
        let path = dir.join(name);
        let partial = dir.join(format!("{name}{PARTIAL_SUFFIX}"));
        let h5 = |source| ShardError::Hdf5 {
            path: partial.clone(),
            source,
        };
        let file = create_aligned(&partial).map_err(h5)?;
        let created_by = format!("medtrain {}", env!("CARGO_PKG_VERSION"));
        write_shard_attrs(&file, key_fingerprint, &created_by).map_err(h5)?;
        file.create_group(VOLUMES_GROUP).map_err(h5)?;
        Ok(ShardWriter {
            file: Some(file),
            partial,
            path,
            series: Vec::new(),
            slices: Vec::new(),
            pixel_bytes: 0,
        })
    }

    pub fn pixel_bytes(&self) -> u64 {
        self.pixel_bytes
    }

    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// Appends one item: a contiguous, page-aligned dataset plus its table rows.
    pub fn add(&mut self, item: PackedItem) -> Result<(), ShardError> {
        let file = self.file.as_ref().expect("open until finish");
        let h5 = |source| ShardError::Hdf5 {
            path: self.partial.clone(),
            source,
        };
        let index = self.series.len();
        let dataset = format!("{VOLUMES_GROUP}/{index:06}");
        let group = file.group(VOLUMES_GROUP).map_err(h5)?;
        let name = format!("{index:06}");
        let shape = item.shape.as_slice();
        macro_rules! write {
            ($t:ty, $v:expr) => {{
                let ds = group
                    .new_dataset::<$t>()
                    .shape(shape)
                    .no_chunk()
                    .alloc_time(Some(hdf5::plist::dataset_create::AllocTime::Early))
                    .fill_time(hdf5::plist::dataset_create::FillTime::Never)
                    .create(name.as_str())
                    .map_err(h5)?;
                ds.write_raw($v).map_err(h5)?;
                ds
            }};
        }
        let ds = match &item.pixels {
            PixelBuffer::U8(v) => write!(u8, v),
            PixelBuffer::I8(v) => write!(i8, v),
            PixelBuffer::U16(v) => write!(u16, v),
            PixelBuffer::I16(v) => write!(i16, v),
            PixelBuffer::U32(v) => write!(u32, v),
            PixelBuffer::I32(v) => write!(i32, v),
            PixelBuffer::F32(v) => write!(f32, v),
            PixelBuffer::F64(v) => write!(f64, v),
        };
        let offset = ds.offset().ok_or_else(|| ShardError::NoOffset {
            path: self.partial.clone(),
            dataset: dataset.clone(),
        })?;
        for (which, values) in [("modality", &item.luts.modality), ("voi", &item.luts.voi)] {
            if values.is_empty() {
                continue;
            }
            let luts = match file.group(LUTS_GROUP) {
                Ok(g) => g,
                Err(_) => file.create_group(LUTS_GROUP).map_err(h5)?,
            };
            let lut_name = lut_dataset(&dataset, which);
            let lut_name = lut_name.rsplit('/').next().expect("a name");
            luts.new_dataset::<f64>()
                .shape(values.len())
                .create(lut_name)
                .map_err(h5)?
                .write_raw(values)
                .map_err(h5)?;
        }
        let mut record = item.record;
        record.dtype = dtype_code(&item.pixels).into();
        record.dataset = dataset;
        record.data_offset = offset;
        record.data_length = pixel_bytes(&item.pixels);
        record.first_slice = self.slices.len() as u64;
        self.pixel_bytes += record.data_length;
        let series_index = index as u32;
        self.slices.extend(item.slices.into_iter().map(|mut s| {
            s.series_index = series_index;
            s
        }));
        self.series.push(record);
        Ok(())
    }

    /// Writes the tables, closes and fsyncs the file, writes its checksum beside it and renames it
    /// into place. Returns the index entry.
    pub fn finish(mut self) -> Result<ShardEntry, ShardError> {
        let file = self.file.take().expect("open until finish");
        let partial = self.partial.clone();
        write_tables(&file, &self.series, &self.slices).map_err(|source| ShardError::Table {
            path: partial.clone(),
            source,
        })?;
        file.close().map_err(|source| ShardError::Hdf5 {
            path: partial.clone(),
            source,
        })?;
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ShardError::Io { path, source }
        };
        let (hash, bytes) = hash_file(&partial).map_err(io(&partial))?;
        let name = self
            .path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        crate::fsx::write_checksum_of(&self.path, &hash)
            .map_err(io(&crate::fsx::checksum_path(&self.path)))?;
        crate::fsx::commit_file(&partial, &self.path).map_err(io(&self.path))?;
        Ok(ShardEntry {
            file: name,
            bytes,
            blake3: hash,
            series: self.series.len() as u64,
            slices: self.slices.len() as u64,
            pixel_bytes: self.pixel_bytes,
            sources: self.series.iter().map(|s| s.source_hash.clone()).collect(),
        })
    }
}

impl Drop for ShardWriter {
    fn drop(&mut self) {
        // An abandoned shard (error or panic) leaves no file behind.
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.partial);
        }
    }
}

/// Whole-file BLAKE3 (hex) and size.
pub fn hash_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut hasher = blake3::Hasher::new();
    hasher.update_mmap_rayon(path)?;
    let bytes = fs::metadata(path)?.len();
    Ok((hasher.finalize().to_hex().to_string(), bytes))
}
