//! Opening DICOM files, including bare data sets that lack the Part 10 preamble and File Meta group.
//! Old archives and some test files (pydicom's `no_meta.dcm`) are written that way; the transfer syntax
//! is then guessed from the first element header, as pydicom does.

use std::fs;
use std::path::Path;

use dicom_encoding::TransferSyntaxIndex;
use dicom_object::meta::FileMetaTableBuilder;
use dicom_object::{DefaultDicomObject, InMemDicomObject, OpenFileOptions};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

use super::decode::DecodeError;

/// Syntaxes a bare data set may be in (Explicit VR Big Endian is retired but still found).
const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";
const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
const EXPLICIT_VR_BE: &str = "1.2.840.10008.1.2.2";
/// Length of the Part 10 preamble that precedes the "DICM" magic.
const PREAMBLE_LEN: usize = 128;
/// The magic bytes after the preamble.
const DICM_MAGIC: &[u8; 4] = b"DICM";
/// An element header is group (2), element (2), then for explicit VR two VR letters.
const HEADER_VR_OFFSET: usize = 4;

/// Open a DICOM file: Part 10 with or without preamble, or a bare data set with no File Meta group.
pub fn open_dicom(path: &Path) -> Result<DefaultDicomObject, DecodeError> {
    let part10 = OpenFileOptions::new().open_file(path);
    let part10_error = match part10 {
        Ok(obj) => return Ok(obj),
        Err(e) => e.to_string(),
    };
    let bytes = fs::read(path).map_err(|e| open_error(path, e.to_string()))?;
    if has_part10_magic(&bytes) {
        // A real Part 10 file that failed to parse: report the parser's reason.
        return Err(open_error(path, part10_error));
    }
    open_bare_dataset(path, &bytes).map_err(|bare| {
        open_error(
            path,
            format!("as Part 10: {part10_error}; as a bare data set: {bare}"),
        )
    })
}

fn open_error(path: &Path, reason: String) -> DecodeError {
    DecodeError::Open {
        path: path.to_path_buf(),
        reason,
    }
}

fn has_part10_magic(bytes: &[u8]) -> bool {
    bytes.get(PREAMBLE_LEN..PREAMBLE_LEN + DICM_MAGIC.len()) == Some(&DICM_MAGIC[..])
        || bytes.starts_with(DICM_MAGIC)
}

/// Read a data set with no File Meta group, trying the transfer syntax its first header suggests first.
fn open_bare_dataset(path: &Path, bytes: &[u8]) -> Result<DefaultDicomObject, String> {
    let mut last_error = String::from("empty file");
    for uid in candidate_syntaxes(bytes) {
        let ts = TransferSyntaxRegistry
            .get(uid)
            .ok_or_else(|| format!("transfer syntax {uid} is not registered"))?;
        match InMemDicomObject::read_dataset_with_ts(bytes, ts) {
            Ok(obj) if obj.iter().next().is_some() => {
                let meta = FileMetaTableBuilder::new().transfer_syntax(uid);
                return obj.with_meta(meta).map_err(|e| e.to_string());
            }
            Ok(_) => last_error = format!("no elements when read as {uid}"),
            Err(e) => last_error = format!("read as {uid}: {e}"),
        }
    }
    Err(format!("{last_error} ({})", path.display()))
}

/// Explicit VR when the bytes after the tag look like a VR; big endian when the group number reads
/// sensibly only that way round (data sets start with low groups such as 0008).
fn candidate_syntaxes(bytes: &[u8]) -> Vec<&'static str> {
    let explicit = bytes
        .get(HEADER_VR_OFFSET..HEADER_VR_OFFSET + 2)
        .is_some_and(|vr| vr.iter().all(u8::is_ascii_uppercase));
    let big_endian = bytes.len() >= 2 && bytes[0] == 0 && bytes[1] != 0;
    let first = match (explicit, big_endian) {
        (true, true) => EXPLICIT_VR_BE,
        (true, false) => EXPLICIT_VR_LE,
        (false, _) => IMPLICIT_VR_LE,
    };
    let mut all = vec![first];
    for uid in [EXPLICIT_VR_LE, IMPLICIT_VR_LE, EXPLICIT_VR_BE] {
        if !all.contains(&uid) {
            all.push(uid);
        }
    }
    all
}
