//! Text attributes of the HDF5 files medtrain writes (shards, catalogs, manifests, label tables).
//!
//! They are stored as 1-D `u8` arrays of UTF-8 (h5py: `bytes(f.attrs[name]).decode()`), not as
//! variable-length strings. A variable-length string lives in HDF5's global heap, and a damaged global
//! heap makes the HDF5 1.10 library loop forever while reading it (found by fuzzing `Manifest::load`,
//! and again by fuzzing `ShardReader::open`, in `H5HG_read`). A byte array is read from the attribute
//! message itself, and its type is checked before any data is read. An empty text is stored as one NUL
//! byte.

use hdf5::types::{IntSize, TypeDescriptor};

/// Writes `value` as the text attribute `name` of `loc`.
pub fn text_attr(loc: &hdf5::Location, name: &str, value: &str) -> Result<(), hdf5::Error> {
    let bytes: &[u8] = if value.is_empty() { b"\0" } else { value.as_bytes() };
    loc.new_attr::<u8>()
        .shape(bytes.len())
        .create(name)?
        .write_raw(bytes)
}

/// Reads the text attribute `name` of `loc` (see `text_attr`). An attribute of any other type is
/// refused from its type alone, before any of its data is read.
pub fn read_text_attr(loc: &hdf5::Location, name: &str) -> Result<String, hdf5::Error> {
    let attr = loc.attr(name)?;
    match attr.dtype()?.to_descriptor()? {
        TypeDescriptor::Unsigned(IntSize::U1) => {}
        other => {
            return Err(hdf5::Error::from(format!(
                "attribute `{name}` is stored as {other:?}, not as UTF-8 bytes: the file was written by an \
                 older medtrain or is damaged"
            )))
        }
    }
    if attr.ndim() != 1 {
        return Err(hdf5::Error::from(format!(
            "attribute `{name}` is not a 1-D byte array"
        )));
    }
    let mut bytes = attr.read_raw::<u8>()?;
    while bytes.last() == Some(&0) {
        bytes.pop();
    }
    String::from_utf8(bytes).map_err(|_| hdf5::Error::from(format!("attribute `{name}` is not UTF-8 text")))
}

/// Whether the attribute `name` of `loc` is a variable-length string, as medtrain wrote text before;
/// decided from its type alone, without reading the string.
pub fn is_vlen_text(loc: &hdf5::Location, name: &str) -> bool {
    loc.attr(name)
        .and_then(|a| a.dtype())
        .and_then(|t| t.to_descriptor())
        .map(|d| matches!(d, TypeDescriptor::VarLenUnicode | TypeDescriptor::VarLenAscii))
        .unwrap_or(false)
}
