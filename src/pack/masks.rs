//! Mask shards: the label volumes of one mask label set for the series of one pack shard, in a
//! sibling file (shards are immutable). Each volume is a contiguous, page-aligned u8 or u16 dataset
//! of the series' voxel grid (slices, rows, cols) in the shard's stored order, so a loader maps it
//! like the pixels. The file carries its own BLAKE3 (`.blake3` beside it) and an index of its
//! volumes (`index_json`, UTF-8 JSON bytes: series key, dataset, byte offset and length, shape).

use super::format::{create_aligned, PARTIAL_SUFFIX};
use crate::h5text::{read_text_attr, text_attr};
use memmap2::Mmap;
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Path, PathBuf};

/// Identifies a medtrain mask shard (root attribute `format`).
pub const MASK_FORMAT: &str = "medtrain-masks";
pub const MASK_FORMAT_VERSION: u32 = 1;
const VOLUMES: &str = "masks";
const INDEX: &str = "index_json";

/// Label values of one series' grid, (slices, rows, cols) row-major.
#[derive(Clone, Debug, PartialEq)]
pub enum MaskData {
    U8(Vec<u8>),
    U16(Vec<u16>),
}

impl MaskData {
    /// The narrowest type that holds every value.
    pub fn from_labels(labels: Vec<u16>) -> MaskData {
        if labels.iter().all(|&v| v <= u8::MAX as u16) {
            MaskData::U8(labels.into_iter().map(|v| v as u8).collect())
        } else {
            MaskData::U16(labels)
        }
    }
    pub fn len(&self) -> usize {
        match self {
            MaskData::U8(v) => v.len(),
            MaskData::U16(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn dtype(&self) -> &'static str {
        match self {
            MaskData::U8(_) => "u8",
            MaskData::U16(_) => "u16",
        }
    }
}

/// One volume of a mask shard's index.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MaskEntry {
    pub series_key: String,
    pub dataset: String,
    pub offset: u64,
    pub length: u64,
    pub shape: [usize; 3],
    pub dtype: String,
}

/// A committed mask shard, as the label set records it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MaskShardRef {
    pub file: String,
    /// The pack shard whose series it holds (file name).
    pub shard: String,
    pub bytes: u64,
    pub blake3: String,
    pub series: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum MaskShardError {
    #[error("mask shard {path}: {source}")]
    Hdf5 { path: PathBuf, source: hdf5::Error },
    #[error("mask shard {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("mask shard {path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

pub struct MaskShardWriter {
    file: Option<hdf5::File>,
    partial: PathBuf,
    path: PathBuf,
    shard: String,
    entries: Vec<MaskEntry>,
}

impl MaskShardWriter {
    /// Starts `<dir>/<name>` for the series of pack shard `shard` (written as `.partial` until
    /// `finish`; dropped unfinished, it leaves nothing).
    pub fn create(dir: &Path, name: &str, shard: &str, label_set: &str) -> Result<Self, MaskShardError> {
        let path = dir.join(name);
        let partial = dir.join(format!("{name}{PARTIAL_SUFFIX}"));
        let h5 = |source| MaskShardError::Hdf5 {
            path: partial.clone(),
            source,
        };
        let file = create_aligned(&partial).map_err(h5)?;
        text_attr(&file, "format", MASK_FORMAT).map_err(h5)?;
        file.new_attr::<u32>()
            .create("format_version")
            .and_then(|a| a.write_scalar(&MASK_FORMAT_VERSION))
            .map_err(h5)?;
        text_attr(&file, "label_set", label_set).map_err(h5)?;
        text_attr(&file, "shard", shard).map_err(h5)?;
        file.create_group(VOLUMES).map_err(h5)?;
        Ok(MaskShardWriter {
            file: Some(file),
            partial,
            path,
            shard: shard.to_string(),
            entries: Vec::new(),
        })
    }

    /// Appends the mask of one series (`shape` = slices, rows, cols).
    pub fn add(
        &mut self,
        series_key: &str,
        shape: [usize; 3],
        data: &MaskData,
    ) -> Result<(), MaskShardError> {
        assert_eq!(
            data.len(),
            shape.iter().product::<usize>(),
            "mask matches its shape"
        );
        let file = self.file.as_ref().expect("open until finish");
        let h5 = |source| MaskShardError::Hdf5 {
            path: self.partial.clone(),
            source,
        };
        let name = format!("{:06}", self.entries.len());
        let group = file.group(VOLUMES).map_err(h5)?;
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
        let ds = match data {
            MaskData::U8(v) => write!(u8, v),
            MaskData::U16(v) => write!(u16, v),
        };
        let dataset = format!("{VOLUMES}/{name}");
        let offset = ds.offset().ok_or_else(|| MaskShardError::Invalid {
            path: self.partial.clone(),
            reason: format!("dataset {dataset} has no contiguous offset"),
        })?;
        self.entries.push(MaskEntry {
            series_key: series_key.to_string(),
            dataset,
            offset,
            length: ds.storage_size(),
            shape,
            dtype: data.dtype().into(),
        });
        Ok(())
    }

    /// Writes the index, closes and hashes the file, writes its checksum and renames it into place.
    pub fn finish(mut self) -> Result<MaskShardRef, MaskShardError> {
        let file = self.file.take().expect("open until finish");
        let partial = self.partial.clone();
        let h5 = |source| MaskShardError::Hdf5 {
            path: partial.clone(),
            source,
        };
        let json = serde_json::to_vec(&self.entries).expect("index serialises");
        file.new_dataset::<u8>()
            .shape(json.len())
            .create(INDEX)
            .and_then(|d| d.write_raw(&json))
            .map_err(h5)?;
        file.close().map_err(h5)?;
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| MaskShardError::Io { path, source }
        };
        let (blake3, bytes) = super::shard::hash_file(&partial).map_err(io(&partial))?;
        crate::fsx::write_checksum_of(&self.path, &blake3).map_err(io(&self.path))?;
        crate::fsx::commit_file(&partial, &self.path).map_err(io(&self.path))?;
        Ok(MaskShardRef {
            file: self
                .path
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default(),
            shard: self.shard.clone(),
            bytes,
            blake3,
            series: self.entries.len() as u64,
        })
    }
}

impl Drop for MaskShardWriter {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.partial);
        }
    }
}

/// An open mask shard: its index, checked against HDF5's own offsets, and the file mapped.
pub struct MaskShard {
    pub path: PathBuf,
    pub entries: Vec<MaskEntry>,
    map: Mmap,
}

/// One series' mask, borrowed from the mapped file.
pub enum MaskView<'a> {
    U8(&'a [u8]),
    U16(Vec<u16>),
}

impl MaskView<'_> {
    pub fn get(&self, i: usize) -> u16 {
        match self {
            MaskView::U8(v) => v[i] as u16,
            MaskView::U16(v) => v[i],
        }
    }
    pub fn len(&self) -> usize {
        match self {
            MaskView::U8(v) => v.len(),
            MaskView::U16(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl MaskShard {
    pub fn open(path: &Path) -> Result<MaskShard, MaskShardError> {
        let invalid = |reason: String| MaskShardError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        let h5 = |source| MaskShardError::Hdf5 {
            path: path.to_path_buf(),
            source,
        };
        let file = hdf5::File::with_options()
            .with_fapl(|p| p.file_locking(false))
            .open(path)
            .map_err(h5)?;
        match read_text_attr(&file, "format") {
            Ok(f) if f == MASK_FORMAT => {}
            _ => return Err(invalid("not a medtrain mask shard".into())),
        }
        let version = file
            .attr("format_version")
            .and_then(|a| a.read_scalar::<u32>())
            .map_err(h5)?;
        if version != MASK_FORMAT_VERSION {
            return Err(invalid(format!(
                "format version {version}; this medtrain reads {MASK_FORMAT_VERSION}: import the masks again"
            )));
        }
        let json: Vec<u8> = file.dataset(INDEX).and_then(|d| d.read_raw()).map_err(h5)?;
        let entries: Vec<MaskEntry> =
            serde_json::from_slice(&json).map_err(|e| invalid(format!("index: {e}")))?;
        let size = fs::metadata(path)
            .map_err(|source| MaskShardError::Io {
                path: path.to_path_buf(),
                source,
            })?
            .len();
        for e in &entries {
            let ds = file.dataset(&e.dataset).map_err(h5)?;
            let width = if e.dtype == "u16" { 2 } else { 1 };
            let want = e.shape.iter().product::<usize>() as u64 * width;
            if ds.offset() != Some(e.offset) || ds.storage_size() != e.length || e.length != want {
                return Err(invalid(format!(
                    "dataset {} is not where its index says (offset {:?}, {} bytes)",
                    e.dataset,
                    ds.offset(),
                    ds.storage_size()
                )));
            }
            if e.offset + e.length > size {
                return Err(invalid(format!(
                    "dataset {} runs past the end: truncated",
                    e.dataset
                )));
            }
        }
        drop(file);
        let f = fs::File::open(path).map_err(|source| MaskShardError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        // SAFETY: mask shards are immutable once committed; every range read was checked above
        // against the file's size.
        let map = unsafe { Mmap::map(&f) }.map_err(|source| MaskShardError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(MaskShard {
            path: path.to_path_buf(),
            entries,
            map,
        })
    }

    /// The mask of the series with this key, and its shape.
    pub fn volume(&self, series_key: &str) -> Option<(MaskView<'_>, [usize; 3])> {
        let e = self.entries.iter().find(|e| e.series_key == series_key)?;
        let bytes = &self.map[e.offset as usize..(e.offset + e.length) as usize];
        let view = if e.dtype == "u16" {
            MaskView::U16(
                bytes
                    .chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]))
                    .collect(),
            )
        } else {
            MaskView::U8(bytes)
        };
        Some((view, e.shape))
    }
}
