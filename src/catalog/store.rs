//! Catalog files on disk: HDF5 files whose datasets are contiguous and page-aligned, written and
//! read through memory maps at the byte offsets HDF5 reports.
//!
//! Why HDF5 and not a bespoke columnar format: h5py/pandas users open a catalog without medtrain,
//! and because every column is one contiguous little-endian dataset, a mapped HDF5 file is as
//! fast to scan as raw column files (a query touches only the pages of the columns it reads). The
//! HDF5 library is used for the structure only; bulk data goes through `memmap2`.

use super::columns::{ColType, ColumnSpec, Level};
use super::{h5err, ioerr, CatalogError};
use crate::h5text::text_attr;
use crate::pack::format::PAGE_ALIGNMENT;
use hdf5::types::{FixedAscii, TypeDescriptor};
use hdf5::H5Type;
use memmap2::{Mmap, MmapMut};
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

/// Every dataset, however small, starts on a page so that typed views of the mapping are aligned.
const ALIGN_EVERYTHING: u64 = 1;

/// Creates a catalog HDF5 file with the page alignment its readers rely on.
pub fn create_h5(path: &Path) -> Result<hdf5::File, CatalogError> {
    let _ = fs::remove_file(path);
    hdf5::File::with_options()
        .with_fapl(|p| p.alignment(ALIGN_EVERYTHING, PAGE_ALIGNMENT))
        .create_excl(path)
        .map_err(h5err(path))
}

/// Opens an HDF5 file read-only without taking a file lock: catalogs and shards are immutable once
/// published, and locks fail or serialise on Lustre and between threads of one process.
pub fn open_read(path: &Path) -> Result<hdf5::File, CatalogError> {
    hdf5::File::with_options()
        .with_fapl(|p| p.file_locking(false))
        .open(path)
        .map_err(h5err(path))
}

fn shape(rows: usize, width: usize) -> Vec<usize> {
    if width == 1 {
        vec![rows]
    } else {
        vec![rows, width]
    }
}

/// Creates an allocated, unfilled, contiguous dataset (its bytes are written through a map later).
pub fn allocate(group: &hdf5::Group, spec: &ColumnSpec, rows: usize) -> hdf5::Result<hdf5::Dataset> {
    macro_rules! make {
        ($t:ty) => {
            group
                .new_dataset::<$t>()
                .shape(shape(rows, spec.width))
                .no_chunk()
                .alloc_time(Some(hdf5::plist::dataset_create::AllocTime::Early))
                .fill_time(hdf5::plist::dataset_create::FillTime::Never)
                .create(spec.name)
        };
    }
    match spec.ty {
        ColType::U8 => make!(u8),
        ColType::U32 => make!(u32),
        ColType::I32 => make!(i32),
        ColType::U64 => make!(u64),
        ColType::F64 => make!(f64),
        ColType::Key32 => make!(FixedAscii<32>),
        ColType::Code16 => make!(FixedAscii<16>),
    }
}

/// Writes a whole contiguous dataset from memory (label sets, manifests: small enough to hold).
pub fn write_column<T: H5Type>(
    group: &hdf5::Group,
    name: &str,
    data: &[T],
    width: usize,
) -> hdf5::Result<()> {
    let rows = data.len() / width.max(1);
    let ds = group
        .new_dataset::<T>()
        .shape(shape(rows, width))
        .no_chunk()
        .create(name)?;
    if !data.is_empty() {
        ds.write_raw(data)?;
    }
    Ok(())
}

/// Where a column's bytes are in a file.
#[derive(Clone, Copy, Debug)]
pub struct ColumnPlace {
    pub ty: ColType,
    pub width: usize,
    pub rows: usize,
    pub offset: usize,
}

impl ColumnPlace {
    pub fn bytes(&self) -> usize {
        self.rows * self.width * self.ty.size()
    }
}

fn col_type(td: &TypeDescriptor) -> Option<ColType> {
    use hdf5::types::{FloatSize, IntSize};
    Some(match td {
        TypeDescriptor::Unsigned(IntSize::U1) | TypeDescriptor::Boolean => ColType::U8,
        TypeDescriptor::Unsigned(IntSize::U4) => ColType::U32,
        TypeDescriptor::Integer(IntSize::U4) => ColType::I32,
        TypeDescriptor::Unsigned(IntSize::U8) => ColType::U64,
        TypeDescriptor::Float(FloatSize::U8) => ColType::F64,
        TypeDescriptor::FixedAscii(32) => ColType::Key32,
        TypeDescriptor::FixedAscii(16) => ColType::Code16,
        _ => return None,
    })
}

/// Finds every dataset of `group` (recursively) and where its bytes are.
fn walk(
    path: &Path,
    group: &hdf5::Group,
    prefix: &str,
    out: &mut HashMap<String, ColumnPlace>,
) -> Result<(), CatalogError> {
    for name in group.member_names().map_err(h5err(path))? {
        let full = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        if let Ok(ds) = group.dataset(&name) {
            let td = ds.dtype().and_then(|t| t.to_descriptor()).map_err(h5err(path))?;
            let ty = col_type(&td).ok_or_else(|| {
                CatalogError::invalid(path, format!("dataset {full} has unsupported type {td}"))
            })?;
            let dims = ds.shape();
            let rows = dims.first().copied().unwrap_or(0);
            let width = dims.get(1).copied().unwrap_or(1);
            let offset = if rows == 0 {
                0
            } else {
                ds.offset().ok_or_else(|| {
                    CatalogError::invalid(
                        path,
                        format!("dataset {full} is not contiguous; rewrite the file"),
                    )
                })? as usize
            };
            if offset % PAGE_ALIGNMENT as usize != 0 {
                return Err(CatalogError::invalid(
                    path,
                    format!("dataset {full} is not page-aligned"),
                ));
            }
            out.insert(
                full,
                ColumnPlace {
                    ty,
                    width,
                    rows,
                    offset,
                },
            );
        } else if let Ok(sub) = group.group(&name) {
            walk(path, &sub, &full, out)?;
        }
    }
    Ok(())
}

/// A catalog HDF5 file mapped read-only, with typed views of its datasets.
pub struct MappedFile {
    pub path: PathBuf,
    map: Option<Mmap>,
    columns: HashMap<String, ColumnPlace>,
}

impl MappedFile {
    /// Maps `path`; `check` inspects the open HDF5 file (format attributes) first.
    pub fn open(
        path: &Path,
        check: impl FnOnce(&hdf5::File) -> Result<(), CatalogError>,
    ) -> Result<MappedFile, CatalogError> {
        let file = open_read(path)?;
        check(&file)?;
        let mut columns = HashMap::new();
        walk(path, &file, "", &mut columns)?;
        drop(file);
        let handle = fs::File::open(path).map_err(ioerr(path))?;
        let size = handle.metadata().map_err(ioerr(path))?.len() as usize;
        for (name, place) in &columns {
            if place.offset + place.bytes() > size {
                return Err(CatalogError::invalid(
                    path,
                    format!("dataset {name} lies outside the file"),
                ));
            }
        }
        // SAFETY: catalog files are immutable once published (updates write new files and
        // replace catalog.json); bounds were checked against the file size above.
        let map = if size == 0 {
            None
        } else {
            Some(unsafe { Mmap::map(&handle) }.map_err(ioerr(path))?)
        };
        Ok(MappedFile {
            path: path.to_path_buf(),
            map,
            columns,
        })
    }

    pub fn place(&self, name: &str) -> Option<&ColumnPlace> {
        self.columns.get(name)
    }

    pub fn has(&self, name: &str) -> bool {
        self.columns.contains_key(name)
    }

    fn raw(&self, name: &str, ty: ColType) -> Result<(&[u8], ColumnPlace), CatalogError> {
        let place = *self
            .columns
            .get(name)
            .ok_or_else(|| CatalogError::invalid(&self.path, format!("missing dataset {name}")))?;
        if place.ty != ty {
            return Err(CatalogError::invalid(
                &self.path,
                format!("dataset {name} is {:?}, expected {ty:?}", place.ty),
            ));
        }
        let bytes = match &self.map {
            Some(map) if place.rows > 0 => &map[place.offset..place.offset + place.bytes()],
            _ => &[][..],
        };
        Ok((bytes, place))
    }

    fn typed<T: Pod>(&self, name: &str, ty: ColType) -> Result<&[T], CatalogError> {
        let (bytes, _) = self.raw(name, ty)?;
        if bytes.is_empty() {
            return Ok(&[]);
        }
        // SAFETY: the range lies in the mapping (checked at open), starts on a page boundary
        // (checked at open; the mapping itself is page-aligned), and T is plain data of the
        // dataset's little-endian element type.
        Ok(unsafe {
            std::slice::from_raw_parts(bytes.as_ptr() as *const T, bytes.len() / std::mem::size_of::<T>())
        })
    }

    pub fn u8s(&self, name: &str) -> Result<&[u8], CatalogError> {
        self.typed(name, ColType::U8)
    }
    pub fn u32s(&self, name: &str) -> Result<&[u32], CatalogError> {
        self.typed(name, ColType::U32)
    }
    pub fn i32s(&self, name: &str) -> Result<&[i32], CatalogError> {
        self.typed(name, ColType::I32)
    }
    pub fn u64s(&self, name: &str) -> Result<&[u64], CatalogError> {
        self.typed(name, ColType::U64)
    }
    pub fn f64s(&self, name: &str) -> Result<&[f64], CatalogError> {
        self.typed(name, ColType::F64)
    }
    pub fn keys(&self, name: &str) -> Result<&[[u8; 32]], CatalogError> {
        self.typed(name, ColType::Key32)
    }
    pub fn codes(&self, name: &str) -> Result<&[[u8; 16]], CatalogError> {
        self.typed(name, ColType::Code16)
    }
}

/// Plain-old-data cell types that may be viewed from mapped bytes.
pub trait Pod: Copy {}
impl Pod for u8 {}
impl Pod for u32 {}
impl Pod for i32 {}
impl Pod for u64 {}
impl Pod for f64 {}
impl Pod for [u8; 32] {}
impl Pod for [u8; 16] {}

/// A tables file being filled: datasets allocated by HDF5, bytes written through a writable map.
pub struct TableWriter {
    pub path: PathBuf,
    map: Option<MmapMut>,
    places: HashMap<String, ColumnPlace>,
}

impl TableWriter {
    /// Allocates every column of the three levels with the given row counts.
    pub fn create(
        path: &Path,
        attrs: &[(&str, String)],
        rows: impl Fn(Level) -> usize,
    ) -> Result<TableWriter, CatalogError> {
        let file = create_h5(path)?;
        let h5 = h5err(path);
        for (name, value) in attrs {
            text_attr(&file, name, value).map_err(&h5)?;
        }
        for level in [Level::Patient, Level::Series, Level::Slice] {
            let group = file.create_group(level.group()).map_err(&h5)?;
            for spec in super::columns::level_columns(level) {
                allocate(&group, &spec, rows(level)).map_err(&h5)?;
            }
        }
        let mut places = HashMap::new();
        walk(path, &file, "", &mut places)?;
        file.close().map_err(&h5)?;
        let handle = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(ioerr(path))?;
        let size = handle.metadata().map_err(ioerr(path))?.len();
        // SAFETY: the file was just created by this process under a private name; nobody else
        // maps or truncates it until it is published.
        let map = if size == 0 {
            None
        } else {
            Some(unsafe { MmapMut::map_mut(&handle) }.map_err(ioerr(path))?)
        };
        Ok(TableWriter {
            path: path.to_path_buf(),
            map,
            places,
        })
    }

    /// The writable bytes of rows `start..start+n` of column `level/name`.
    pub fn rows_mut(&mut self, level: Level, name: &str, start: usize, n: usize) -> &mut [u8] {
        let key = format!("{}/{name}", level.group());
        let place = self.places[&key];
        let row = place.width * place.ty.size();
        assert!(
            start + n <= place.rows,
            "{key}: rows {start}+{n} beyond {}",
            place.rows
        );
        if n == 0 {
            return &mut [];
        }
        let begin = place.offset + start * row;
        &mut self.map.as_mut().expect("non-empty file")[begin..begin + n * row]
    }

    /// Flushes the bytes to disk.
    pub fn finish(self) -> Result<(), CatalogError> {
        if let Some(map) = &self.map {
            map.flush().map_err(ioerr(&self.path))?;
        }
        Ok(())
    }
}

/// Little-endian bytes of a slice of numbers.
pub fn le_bytes<T: Pod>(values: &[T]) -> &[u8] {
    // SAFETY: Pod types are plain data; the target is little-endian (checked in pack::reader).
    unsafe { std::slice::from_raw_parts(values.as_ptr() as *const u8, std::mem::size_of_val(values)) }
}
