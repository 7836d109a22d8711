//! Reading a shard: HDF5 for the attributes and tables only, `memmap2` for the pixels, which are
//! used in place at the byte offset HDF5 reported (no copy before the transform).

use super::format::dtype_size;
use super::format::{read_shard_header, HeaderError, SHARD_FORMAT_VERSION};
use super::tables::{read_series, read_slices, SeriesRecord, SliceRecord, TableError};
use memmap2::Mmap;
use std::fs;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot open shard {path}: {source}")]
    Open { path: PathBuf, source: std::io::Error },
    #[error("shard {path} is not a readable HDF5 file: {source}")]
    Hdf5 { path: PathBuf, source: hdf5::Error },
    #[error("shard {path}: {source}")]
    Table { path: PathBuf, source: TableError },
    #[error("{path} is not a medtrain shard (format {found:?})")]
    NotAShard { path: PathBuf, found: String },
    #[error("shard {path} has format version {found}; this medtrain reads version {expected}: repack with this version of medtrain (`medtrain pack`)")]
    Version {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    #[error("shard {path}: series {series} pixel bytes {offset}+{length} lie outside the file ({size} bytes) or are misaligned for {dtype}")]
    Bounds {
        path: PathBuf,
        series: usize,
        offset: u64,
        length: u64,
        size: u64,
        dtype: String,
    },
    #[error("shard {path}: series {series} holds {found}, not {wanted}")]
    Dtype {
        path: PathBuf,
        series: usize,
        found: String,
        wanted: &'static str,
    },
}

/// Read-only opens must not take HDF5 file locks: they fail or serialise on Lustre and on
/// read-only staging directories. Readers also ask for this per file (`open_shard`); the variable
/// covers HDF5 files opened by anything else in the process. Called once by `main`, before any
/// thread starts (changing the environment is not thread-safe).
pub fn disable_hdf5_file_locking() {
    if std::env::var_os("HDF5_USE_FILE_LOCKING").is_none() {
        std::env::set_var("HDF5_USE_FILE_LOCKING", "FALSE");
    }
}

/// An open shard: tables in memory, pixels mapped.
pub struct ShardReader {
    pub path: PathBuf,
    pub key_fingerprint: String,
    pub series: Vec<SeriesRecord>,
    pub slices: Vec<SliceRecord>,
    map: Mmap,
}

impl ShardReader {
    pub fn open(path: &Path) -> Result<ShardReader, ReadError> {
        let h5 = |source| ReadError::Hdf5 {
            path: path.to_path_buf(),
            source,
        };
        let file = hdf5::File::with_options()
            .with_fapl(|p| p.file_locking(false))
            .open(path)
            .map_err(h5)?;
        let key_fingerprint = read_shard_header(&file).map_err(|e| match e {
            HeaderError::NotAShard(found) => ReadError::NotAShard {
                path: path.to_path_buf(),
                found,
            },
            HeaderError::Version(found) => ReadError::Version {
                path: path.to_path_buf(),
                found,
                expected: SHARD_FORMAT_VERSION,
            },
            HeaderError::Hdf5(source) => h5(source),
        })?;
        let table = |source| ReadError::Table {
            path: path.to_path_buf(),
            source,
        };
        let series = read_series(&file).map_err(table)?;
        let slices = read_slices(&file).map_err(table)?;
        drop(file);
        let handle = fs::File::open(path).map_err(|source| ReadError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        // SAFETY: shards are immutable once renamed into place; a concurrent truncation by another
        // program would be a misuse that the bounds checks below cannot catch for pages already mapped.
        let map = unsafe { Mmap::map(&handle) }.map_err(|source| ReadError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let reader = ShardReader {
            path: path.to_path_buf(),
            key_fingerprint,
            series,
            slices,
            map,
        };
        for i in 0..reader.series.len() {
            reader.pixel_bytes(i)?;
        }
        Ok(reader)
    }

    /// The raw bytes of series `i`'s pixel dataset, checked against the file size and alignment.
    pub fn pixel_bytes(&self, i: usize) -> Result<&[u8], ReadError> {
        let s = &self.series[i];
        let size = self.map.len() as u64;
        let elem = dtype_size(&s.dtype);
        let end = s.data_offset.checked_add(s.data_length);
        if end.is_none_or(|e| e > size) || elem == 0 || s.data_offset % elem != 0 || s.data_length % elem != 0
        {
            return Err(ReadError::Bounds {
                path: self.path.clone(),
                series: i,
                offset: s.data_offset,
                length: s.data_length,
                size,
                dtype: s.dtype.clone(),
            });
        }
        Ok(&self.map[s.data_offset as usize..(s.data_offset + s.data_length) as usize])
    }

    /// Series `i` as int16 (CT volumes in HU), borrowed from the mapping.
    pub fn volume_i16(&self, i: usize) -> Result<&[i16], ReadError> {
        self.typed::<i16>(i, "i16")
    }

    /// Series `i` as uint16.
    pub fn volume_u16(&self, i: usize) -> Result<&[u16], ReadError> {
        self.typed::<u16>(i, "u16")
    }

    /// Series `i` as uint8.
    pub fn volume_u8(&self, i: usize) -> Result<&[u8], ReadError> {
        self.typed::<u8>(i, "u8")
    }

    fn typed<T: bytemuck_free::Pod>(&self, i: usize, wanted: &'static str) -> Result<&[T], ReadError> {
        let s = &self.series[i];
        if s.dtype != wanted {
            return Err(ReadError::Dtype {
                path: self.path.clone(),
                series: i,
                found: s.dtype.clone(),
                wanted,
            });
        }
        let bytes = self.pixel_bytes(i)?;
        // SAFETY: `pixel_bytes` checked that the range is inside the mapping and that offset and
        // length are multiples of the element size; the mapping is page-aligned, so the pointer is
        // aligned for T. HDF5 stores these datasets little-endian (native on supported targets).
        Ok(unsafe {
            std::slice::from_raw_parts(bytes.as_ptr() as *const T, bytes.len() / std::mem::size_of::<T>())
        })
    }

    /// Slice rows of series `i`.
    pub fn slices_of(&self, i: usize) -> &[SliceRecord] {
        let s = &self.series[i];
        let start = s.first_slice as usize;
        &self.slices[start..start + s.n_slices as usize]
    }
}

/// Plain-old-data element types that may be viewed from mapped bytes.
mod bytemuck_free {
    pub trait Pod: Copy {}
    impl Pod for i16 {}
    impl Pod for u16 {}
    impl Pod for u8 {}
}

#[cfg(not(target_endian = "little"))]
compile_error!("shards are little-endian and mapped in place: big-endian hosts are not supported");
