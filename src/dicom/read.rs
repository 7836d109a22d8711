//! Reading a source file for `pack`: its bytes are read once, hashed (the source hash that makes
//! re-packing idempotent) and opened through the checked opener. A file whose pixel data is
//! damaged still yields its header, so the series that lost a slice can be quarantined whole.

use super::decode::DecodeError;
use super::guard;
use super::open::{open_bytes, open_header_bytes};
use dicom_object::DefaultDicomObject;
use std::path::Path;

/// A parsed object and the BLAKE3 of the file's bytes.
pub struct Opened {
    pub object: DefaultDicomObject,
    pub content_hash: blake3::Hash,
}

/// Why a file could not be opened; the messages carry no path.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read file: {0}")]
    Io(#[from] std::io::Error),
    #[error("{}", .0.reason())]
    Open(#[from] DecodeError),
}

/// Reads, hashes, checks and parses one file.
pub fn open_checked(path: &Path) -> Result<Opened, ReadError> {
    let bytes = std::fs::read(path)?;
    let content_hash = blake3::hash(&bytes);
    let object = open_bytes(path, &bytes)?;
    Ok(Opened { object, content_hash })
}

/// Hashes, checks and parses one object already in memory (fetched over the network); `name`
/// only names it in errors.
pub fn open_checked_bytes(name: &Path, bytes: &[u8]) -> Result<Opened, ReadError> {
    let content_hash = blake3::hash(bytes);
    let object = open_bytes(name, bytes)?;
    Ok(Opened { object, content_hash })
}

/// Like `open_checked_bytes`, but parses the header only (the whole object is still checked).
pub fn open_header_checked_bytes(name: &Path, bytes: &[u8]) -> Result<Opened, ReadError> {
    let content_hash = blake3::hash(bytes);
    let object = open_header_bytes(name, bytes)?;
    Ok(Opened { object, content_hash })
}

/// Reads and hashes one file, checks its whole structure and parses its header only.
pub fn open_header_checked(path: &Path) -> Result<Opened, ReadError> {
    let bytes = std::fs::read(path)?;
    let content_hash = blake3::hash(&bytes);
    let object = open_header_bytes(path, &bytes)?;
    Ok(Opened { object, content_hash })
}

/// The header of a file whose pixel data is damaged (truncated), read from the intact bytes
/// before the pixel data; `None` when the damage starts earlier.
pub fn salvage_header(path: &Path) -> Option<DefaultDicomObject> {
    let bytes = std::fs::read(path).ok()?;
    let cut = guard::check(&bytes).err()?.pixel_data_at?;
    open_bytes(path, &bytes[..cut]).ok()
}
