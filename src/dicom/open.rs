//! Opening DICOM files, including bare data sets that lack the Part 10 preamble and File Meta group.
//! Old archives and some test files (pydicom's `no_meta.dcm`) are written that way; the transfer syntax
//! is then guessed from the first element header, as pydicom does.

use std::fs;
use std::path::Path;

use dicom_core::value::{PixelFragmentSequence, Value};
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::file::ReadPreamble;
use dicom_object::meta::FileMetaTableBuilder;
use dicom_object::{DefaultDicomObject, InMemDicomObject, OpenFileOptions};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

use super::decode::DecodeError;
use super::guard::{self, EXPLICIT_VR_BE, EXPLICIT_VR_LE, IMPLICIT_VR_LE, PREAMBLE_LEN};

/// The magic bytes after the preamble.
const DICM_MAGIC: &[u8; 4] = b"DICM";

/// Open a DICOM file: Part 10 with or without preamble, or a bare data set with no File Meta group.
pub fn open_dicom(path: &Path) -> Result<DefaultDicomObject, DecodeError> {
    let bytes = fs::read(path).map_err(|e| open_error(path, e.to_string()))?;
    open_bytes(path, &bytes)
}

/// Open a file already read into memory (`path` only names it in errors).
pub fn open_bytes(path: &Path, bytes: &[u8]) -> Result<DefaultDicomObject, DecodeError> {
    open_guarded(path, bytes, false)
}

/// Like `open_bytes`, but a standard file is parsed only up to its Pixel Data (the whole file is
/// still structurally checked): what a header scan needs, without copying the pixels.
pub fn open_header_bytes(path: &Path, bytes: &[u8]) -> Result<DefaultDicomObject, DecodeError> {
    open_guarded(path, bytes, true)
}

fn open_guarded(path: &Path, bytes: &[u8], header_only: bool) -> Result<DefaultDicomObject, DecodeError> {
    // The parser is third-party code reading untrusted bytes: a panic becomes an error.
    std::panic::catch_unwind(|| open_unguarded(path, bytes, header_only)).unwrap_or_else(|_| {
        Err(open_error(
            path,
            "the DICOM parser panicked on this file; it is malformed".to_string(),
        ))
    })
}

fn open_unguarded(path: &Path, bytes: &[u8], header_only: bool) -> Result<DefaultDicomObject, DecodeError> {
    let layout = guard::check(bytes);
    if has_part10_magic(bytes) {
        let layout = layout.map_err(|e| open_error(path, format!("structure check: {e}")))?;
        if let Some(plain) = &layout.inflated {
            // Deflated: the checked, inflated data set is read as the explicit VR little endian it
            // is, under the file's own meta group (pixel decoding treats the syntax as native).
            let kept = without_ranges(plain, &layout.strip);
            return open_with_lenient_pixel_data(path, &kept, EXPLICIT_VR_LE)
                .map_err(|e| open_error(path, format!("deflated data set: {e}")));
        }
        let encoding = syntax_of(layout.explicit_vr, layout.big_endian);
        let declared = layout.declared_syntax.trim_end_matches(['\0', ' ']);
        let mislabelled = matches!(declared, IMPLICIT_VR_LE | EXPLICIT_VR_LE | EXPLICIT_VR_BE)
            && declared != encoding
            || !matches!(declared, IMPLICIT_VR_LE | EXPLICIT_VR_BE) && !layout.explicit_vr;
        let mut part10_error = if mislabelled {
            format!("data set is {encoding}, not {declared} as the meta group says")
        } else {
            "data set has undefined-length UN elements".to_string()
        };
        if !mislabelled && layout.strip.is_empty() {
            let options = OpenFileOptions::new();
            let options = if header_only {
                options.read_until(tags::PIXEL_DATA)
            } else {
                options
            };
            match options.from_reader(bytes) {
                Ok(obj) => return Ok(obj),
                Err(e) => part10_error = e.to_string(),
            }
        }
        // Read the way pydicom does when the data set's VR encoding disagrees with the meta group or
        // the encapsulated Pixel Data runs past the end (a truncated last fragment); undefined-length
        // UN elements, which parsers disagree on and which only hold private data, are cut out.
        let kept = without_ranges(bytes, &layout.strip);
        return open_with_lenient_pixel_data(path, &kept, encoding)
            .map_err(|lenient| open_error(path, format!("{part10_error} (lenient read: {lenient})")));
    }
    let encoding = match &layout {
        Ok(layout) => syntax_of(layout.explicit_vr, layout.big_endian),
        // The structure check also tries explicit VR big endian on a bare data set; a data set that
        // fails it in every encoding is never handed to the parser (its lengths are not bounded).
        Err(e) => {
            return Err(open_error(
                path,
                format!("neither Part 10 nor a bare data set: {e}"),
            ))
        }
    };
    open_bare_dataset(&bytes, encoding)
        .map_err(|bare| open_error(path, format!("as a bare data set: {bare}")))
}

/// `bytes` without the given (start, end) ranges.
fn without_ranges(bytes: &[u8], ranges: &[(usize, usize)]) -> Vec<u8> {
    let mut kept = Vec::with_capacity(bytes.len());
    let mut at = 0;
    for &(start, end) in ranges {
        kept.extend_from_slice(&bytes[at..start.max(at).min(bytes.len())]);
        at = end.max(at).min(bytes.len());
    }
    kept.extend_from_slice(&bytes[at..]);
    kept
}

fn syntax_of(explicit_vr: bool, big_endian: bool) -> &'static str {
    match (explicit_vr, big_endian) {
        (true, true) => EXPLICIT_VR_BE,
        (true, false) => EXPLICIT_VR_LE,
        (false, _) => IMPLICIT_VR_LE,
    }
}

fn open_error(path: &Path, reason: String) -> DecodeError {
    DecodeError::Open {
        path: path.to_path_buf(),
        reason,
    }
}

/// Whether the bytes start like a Part 10 file ("DICM" after the preamble, or at the start).
pub fn has_part10_magic(bytes: &[u8]) -> bool {
    bytes.get(PREAMBLE_LEN..PREAMBLE_LEN + DICM_MAGIC.len()) == Some(&DICM_MAGIC[..])
        || bytes.starts_with(DICM_MAGIC)
}

/// Pixel Data tag (7FE0,0010) as little-endian bytes, and the undefined length of encapsulated data.
const PIXEL_DATA_TAG_LE: [u8; 4] = [0xE0, 0x7F, 0x10, 0x00];
const UNDEFINED_LENGTH: [u8; 4] = [0xFF; 4];
/// Item (FFFE,E000) and Sequence Delimitation Item (FFFE,E0DD) tags, little endian.
const ITEM_TAG_LE: [u8; 4] = [0xFE, 0xFF, 0x00, 0xE0];
const ITEM_HEADER_LEN: usize = 8;

/// Read a Part 10 file that dicom-object rejects, as pydicom would: the File Meta group as written,
/// the data set in whichever VR encoding parses (some writers label implicit VR data explicit), and
/// encapsulated Pixel Data leniently: items until a delimiter, a non-item tag or the end of the file
/// (a short last fragment keeps the bytes that are there).
fn open_with_lenient_pixel_data(
    path: &Path,
    bytes: &[u8],
    encoding: &str,
) -> Result<DefaultDicomObject, String> {
    let start = if bytes.starts_with(DICM_MAGIC) {
        0
    } else {
        PREAMBLE_LEN
    };
    let meta_end = start + meta_group_len(&bytes[start..]).ok_or("no File Meta Group Length")?;
    let meta = OpenFileOptions::new()
        .read_preamble(ReadPreamble::Never)
        .from_reader(bytes.get(start..meta_end).ok_or("File Meta group past the end")?)
        .map_err(|e| format!("File Meta group of {}: {e}", path.display()))?
        .meta()
        .clone();
    let pixel_items = encapsulated_pixel_data_start(bytes);
    let dataset_end = match pixel_items {
        Some((tag_at, _)) => tag_at,
        None => bytes.len(),
    };
    let mut obj = read_dataset(&bytes[meta_end..dataset_end], encoding)?;
    if let Some((_, items_start)) = pixel_items {
        let (offset_table, fragments) = lenient_items(&bytes[items_start..])?;
        let sequence = PixelFragmentSequence::new(offset_table, fragments);
        obj.put(DataElement::new(tags::PIXEL_DATA, VR::OB, Value::from(sequence)));
    }
    Ok(obj.with_exact_meta(meta))
}

/// Bytes from "DICM" to the end of the File Meta group: magic (4), the group length element (12),
/// then the length it gives.
fn meta_group_len(from_magic: &[u8]) -> Option<usize> {
    const MAGIC_AND_GROUP_LENGTH_ELEMENT: usize = 4 + 12;
    let value = from_magic.get(12..16)?;
    Some(MAGIC_AND_GROUP_LENGTH_ELEMENT + u32::from_le_bytes(value.try_into().ok()?) as usize)
}

fn read_dataset(bytes: &[u8], uid: &str) -> Result<InMemDicomObject, String> {
    let ts = TransferSyntaxRegistry
        .get(uid)
        .ok_or("built-in transfer syntax missing")?;
    match InMemDicomObject::read_dataset_with_ts(bytes, ts) {
        Ok(obj) if obj.iter().next().is_some() => Ok(obj),
        Ok(_) => Err(format!("no elements when read as {uid}")),
        Err(e) => Err(format!("read as {uid}: {e}")),
    }
}

/// (offset of the Pixel Data tag, offset of its first item) for the last undefined-length Pixel Data
/// header in the file (explicit or implicit VR).
fn encapsulated_pixel_data_start(bytes: &[u8]) -> Option<(usize, usize)> {
    let tag_at = bytes.windows(4).rposition(|w| w == PIXEL_DATA_TAG_LE)?;
    let after_tag = &bytes[tag_at + 4..];
    let explicit = after_tag.len() >= 8
        && matches!(&after_tag[..2], b"OB" | b"OW")
        && after_tag[4..8] == UNDEFINED_LENGTH;
    let implicit = after_tag.len() >= 4 && after_tag[..4] == UNDEFINED_LENGTH;
    match (explicit, implicit) {
        (true, _) => Some((tag_at, tag_at + 4 + 8)),
        (false, true) => Some((tag_at, tag_at + 4 + 4)),
        _ => None,
    }
}

/// The Basic Offset Table and fragments of an item sequence that may be cut short.
fn lenient_items(mut rest: &[u8]) -> Result<(Vec<u32>, Vec<Vec<u8>>), String> {
    let mut items = Vec::new();
    while rest.len() >= ITEM_HEADER_LEN && rest[..4] == ITEM_TAG_LE {
        let length = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]) as usize;
        let end = (ITEM_HEADER_LEN + length).min(rest.len());
        items.push(rest[ITEM_HEADER_LEN..end].to_vec());
        rest = &rest[end..];
    }
    if items.len() < 2 {
        return Err("encapsulated Pixel Data holds no fragment".to_string());
    }
    let table = items.remove(0);
    let offsets = table
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok((offsets, items))
}

/// Read a data set with no File Meta group in the given encoding.
fn open_bare_dataset(bytes: &[u8], uid: &'static str) -> Result<DefaultDicomObject, String> {
    let obj = read_dataset(bytes, uid)?;
    obj.with_meta(FileMetaTableBuilder::new().transfer_syntax(uid))
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An explicit VR big endian element (short-length VRs only, plus OB with a given length).
    fn be(tag: (u16, u16), vr: &[u8; 2], value: &[u8], ob_len: Option<u32>) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend(tag.0.to_be_bytes());
        v.extend(tag.1.to_be_bytes());
        v.extend(vr);
        match ob_len {
            Some(len) => {
                v.extend([0, 0]);
                v.extend(len.to_be_bytes());
            }
            None => v.extend((value.len() as u16).to_be_bytes()),
        }
        v.extend(value);
        v
    }

    #[test]
    fn bare_big_endian_data_set_is_read_only_when_its_lengths_check_out() {
        let mut ds = be((0x0008, 0x0005), b"CS", b"ISO_IR 100", None);
        ds.extend(be((0x0010, 0x0020), b"LO", b"ID01", None));
        let obj = open_bytes(Path::new("be.dcm"), &ds).unwrap();
        assert_eq!(obj.meta().transfer_syntax(), EXPLICIT_VR_BE);
        let id = obj.element(tags::PATIENT_ID).unwrap().to_str().unwrap();
        assert_eq!(id.trim_end(), "ID01");
        // Pixel Data claiming 4 GB in a few bytes: refused by the structure check, not parsed.
        ds.extend(be((0x7FE0, 0x0010), b"OB", &[0; 8], Some(0xFF00_0000)));
        let e = open_bytes(Path::new("be.dcm"), &ds).unwrap_err().to_string();
        assert!(e.contains("neither Part 10 nor a bare data set"), "{e}");
    }
}
