//! The shard format: its name and version, the layout constants, and the root attributes every
//! shard carries, with their one writer and one reader. Below both the writer (`shard.rs`) and the
//! reader (`reader.rs`), so neither imports the other.

use crate::h5text::{is_vlen_text, read_text_attr, text_attr};

/// Identifies a medtrain shard (root attribute `format`).
pub const SHARD_FORMAT: &str = "medtrain-shard";
/// Version of the shard layout (root attribute `format_version`).
/// 2: presentation columns (VOI LUT function and tables, window, PatientOrientation,
/// BurnedInAnnotation, frame of reference) and the `luts` group.
/// 3: the text attributes are UTF-8 byte arrays (`h5text`), not variable-length strings; the series
/// table's `crop` column (ultrasound tissue region).
pub const SHARD_FORMAT_VERSION: u32 = 3;
/// Pixel datasets start on page boundaries so that an mmap of their bytes is aligned.
pub const PAGE_ALIGNMENT: u64 = 4096;
/// Every object of at least this many bytes starts on a page: all pixel datasets, however small.
pub const ALIGNMENT_THRESHOLD: u64 = 1;
/// Suffix of a shard being written; never read.
pub const PARTIAL_SUFFIX: &str = ".partial";
/// Group holding the pixel datasets.
pub const VOLUMES_GROUP: &str = "volumes";

/// The root attributes every shard carries (format, version, key fingerprint, writer); the text ones as
/// UTF-8 byte arrays (`h5text`). The one writer of them, for `pack` and `catalog synth` alike, so that
/// `ShardReader` and `catalog build` accept whatever either writes.
pub fn write_shard_attrs(file: &hdf5::File, key_fingerprint: &str, created_by: &str) -> hdf5::Result<()> {
    text_attr(file, "format", SHARD_FORMAT)?;
    file.new_attr::<u32>()
        .create("format_version")?
        .write_scalar(&SHARD_FORMAT_VERSION)?;
    text_attr(file, "key_fingerprint", key_fingerprint)?;
    text_attr(file, "created_by", created_by)
}

/// Creates `partial` (removing a stale one first) as an HDF5 file whose objects all start on page
/// boundaries, so that the datasets written contiguously into it can be memory-mapped: the one way
/// shards and mask shards are started.
pub fn create_aligned(partial: &std::path::Path) -> hdf5::Result<hdf5::File> {
    let _ = std::fs::remove_file(partial);
    hdf5::File::with_options()
        .with_fapl(|p| p.alignment(ALIGNMENT_THRESHOLD, PAGE_ALIGNMENT))
        .create_excl(partial)
}

/// Why a file's root attributes do not make it a shard this medtrain reads.
#[derive(Debug)]
pub enum HeaderError {
    /// Not a medtrain shard: the `format` attribute found (empty when missing or unreadable).
    NotAShard(String),
    /// A medtrain shard of another format version.
    Version(u32),
    Hdf5(hdf5::Error),
}

/// Checks a shard's root attributes and returns its site-key fingerprint: the one reader of what
/// `write_shard_attrs` writes, for `ShardReader` and `catalog build`. No attribute is read from HDF5's
/// global heap: a shard of version 2 or older, whose texts were variable-length strings, is recognised
/// by the type of its `format` attribute and its version number, and refused as such.
pub fn read_shard_header(file: &hdf5::File) -> Result<String, HeaderError> {
    let version = || file.attr("format_version").and_then(|a| a.read_scalar::<u32>());
    let format = match read_text_attr(file, "format") {
        Ok(format) => format,
        Err(_) if is_vlen_text(file, "format") => {
            return Err(match version() {
                Ok(v) if v < SHARD_FORMAT_VERSION => HeaderError::Version(v),
                _ => HeaderError::NotAShard(String::new()),
            })
        }
        Err(_) => return Err(HeaderError::NotAShard(String::new())),
    };
    if format != SHARD_FORMAT {
        return Err(HeaderError::NotAShard(format));
    }
    match version() {
        Ok(SHARD_FORMAT_VERSION) => {}
        Ok(v) => return Err(HeaderError::Version(v)),
        Err(e) => return Err(HeaderError::Hdf5(e)),
    }
    read_text_attr(file, "key_fingerprint").map_err(HeaderError::Hdf5)
}

/// Bytes per element of a dtype code (0 for unknown codes).
pub fn dtype_size(code: &str) -> u64 {
    match code {
        "u8" | "i8" => 1,
        "u16" | "i16" => 2,
        "u32" | "i32" | "f32" => 4,
        "f64" => 8,
        _ => 0,
    }
}
