//! Opening a DICOM file safely: the bytes are read once, hashed, structurally checked
//! (`guard`), and only then parsed, with the data set read in the encoding it really has. Files
//! without a file meta group are given one built from the data set.

use super::guard::{self, Layout, EXPLICIT_VR_BE, EXPLICIT_VR_LE, IMPLICIT_VR_LE};
use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::meta::FileMetaTableBuilder;
use dicom_object::{DefaultDicomObject, FileMetaTable, InMemDicomObject, OpenFileOptions};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use std::path::Path;

/// Where the meta group starts in a standard Part 10 file (after the preamble and "DICM").
const STANDARD_META_OFFSET: usize = 132;

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot read file: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed DICOM: {0}")]
    Malformed(guard::GuardError),
    #[error("not parseable as DICOM: {0}")]
    Parse(String),
    #[error("unsupported transfer syntax {0}")]
    Syntax(String),
}

/// A parsed object with what was learnt while opening it.
pub struct Opened {
    pub object: DefaultDicomObject,
    /// BLAKE3 of the file's bytes.
    pub content_hash: blake3::Hash,
    pub layout: Layout,
}

/// Reads, checks and parses one file.
pub fn open_checked(path: &Path) -> Result<Opened, OpenError> {
    let bytes = std::fs::read(path)?;
    let content_hash = blake3::hash(&bytes);
    let layout = guard::check(&bytes).map_err(OpenError::Malformed)?;
    let object = parse(path, &bytes, &layout)?;
    Ok(Opened {
        object,
        content_hash,
        layout,
    })
}

/// The header of a file whose pixel data is damaged (truncated), read from the intact bytes
/// before the pixel data; `None` when the damage starts earlier.
pub fn salvage_header(path: &Path) -> Option<DefaultDicomObject> {
    let bytes = std::fs::read(path).ok()?;
    let cut = guard::check(&bytes).err()?.pixel_data_at?;
    let head = &bytes[..cut];
    let layout = guard::check(head).ok()?;
    parse_bytes(head, &layout).ok()
}

fn syntax_as_found(layout: &Layout) -> &str {
    let declared_explicit = layout.declared_syntax != IMPLICIT_VR_LE && !layout.declared_syntax.is_empty();
    match (layout.explicit_vr, layout.big_endian) {
        (true, _) if declared_explicit => &layout.declared_syntax,
        (false, _) => IMPLICIT_VR_LE,
        (true, true) => EXPLICIT_VR_BE,
        (true, false) => EXPLICIT_VR_LE,
    }
}

fn parse(path: &Path, bytes: &[u8], layout: &Layout) -> Result<DefaultDicomObject, OpenError> {
    let parse_err = |e: &dyn std::fmt::Display| OpenError::Parse(e.to_string());
    let as_found = syntax_as_found(layout);
    if layout.meta_offset == STANDARD_META_OFFSET && as_found == layout.declared_syntax && layout.strip.is_empty() {
        // The standard path (it also inflates deflated data sets).
        return OpenFileOptions::new().open_file(path).map_err(|e| parse_err(&e));
    }
    parse_bytes(bytes, layout)
}

/// Parses bytes that passed the guard, in the encoding found (not the standard file path).
fn parse_bytes(bytes: &[u8], layout: &Layout) -> Result<DefaultDicomObject, OpenError> {
    let parse_err = |e: &dyn std::fmt::Display| OpenError::Parse(e.to_string());
    let as_found = syntax_as_found(layout);
    let ts = TransferSyntaxRegistry
        .get(as_found)
        .ok_or_else(|| OpenError::Syntax(as_found.to_string()))?;
    let mut data = &bytes[layout.dataset_offset..];
    let kept: Vec<u8>;
    if !layout.strip.is_empty() {
        let mut pos = layout.dataset_offset;
        let mut buf = Vec::with_capacity(bytes.len() - pos);
        for &(start, end) in &layout.strip {
            buf.extend_from_slice(&bytes[pos..start]);
            pos = end;
        }
        buf.extend_from_slice(&bytes[pos..]);
        kept = buf;
        data = &kept;
    }
    let dataset = InMemDicomObject::read_dataset_with_ts(data, ts).map_err(|e| parse_err(&e))?;
    let meta = if layout.meta_offset > 0 {
        let mut meta =
            FileMetaTable::from_reader(&bytes[layout.meta_offset - 4..]).map_err(|e| parse_err(&e))?;
        meta.transfer_syntax = as_found.to_string();
        meta
    } else {
        let uid = |tag| {
            dataset
                .element_opt(tag)
                .ok()
                .flatten()
                .and_then(|e| e.to_str().ok().map(|s| s.trim_end_matches('\0').to_string()))
                .unwrap_or_default()
        };
        FileMetaTableBuilder::new()
            .media_storage_sop_class_uid(uid(tags::SOP_CLASS_UID))
            .media_storage_sop_instance_uid(uid(tags::SOP_INSTANCE_UID))
            .transfer_syntax(as_found)
            .build()
            .map_err(|e| parse_err(&e))?
    };
    Ok(dataset.with_exact_meta(meta))
}
