//! Splitting encapsulated Pixel Data (PS3.5 A.4) into one byte string per frame, as pydicom's
//! `get_frame` does: one frame takes every fragment; otherwise one fragment per frame, the Basic Offset
//! Table, the Extended Offset Table, or (with neither) a new frame at each fragment that starts a
//! codestream.

use dicom_core::value::Value;
use dicom_dictionary_std::tags;
use dicom_object::DefaultDicomObject;

/// Each fragment item has an 8-byte header (tag + length) that Basic Offset Table offsets count.
const ITEM_HEADER_LEN: u64 = 8;
/// Codestream starts: JPEG/JPEG-LS SOI, JPEG 2000 SOC+SIZ, and the JP2 signature box.
const JPEG_SOI: [u8; 2] = [0xFF, 0xD8];
const J2K_SOC_SIZ: [u8; 4] = [0xFF, 0x4F, 0xFF, 0x51];
const JP2_SIGNATURE: [u8; 8] = [0, 0, 0, 0x0C, b'j', b'P', b' ', b' '];

/// The bytes of every frame, in order.
pub fn frame_fragments(obj: &DefaultDicomObject, frames: u32) -> Result<Vec<Vec<u8>>, String> {
    let element = obj.get(tags::PIXEL_DATA).ok_or("no Pixel Data")?;
    let Value::PixelSequence(sequence) = element.value() else {
        return Err("Pixel Data is not encapsulated although the transfer syntax is".to_string());
    };
    let fragments = sequence.fragments();
    let frames = frames as usize;
    if fragments.is_empty() {
        return Err("encapsulated Pixel Data has no fragments".to_string());
    }
    if frames == 1 {
        return Ok(vec![fragments.concat()]);
    }
    if let Some(extended) = extended_offsets(obj) {
        return split_at_offsets(fragments, &extended, frames);
    }
    if fragments.len() == frames {
        return Ok(fragments.to_vec());
    }
    let basic: Vec<u64> = sequence.offset_table().iter().map(|&o| o as u64).collect();
    if !basic.is_empty() {
        return split_at_offsets(fragments, &basic, frames);
    }
    split_at_codestream_starts(fragments, frames)
}

/// Extended Offset Table (7FE0,0001), 64-bit little-endian offsets, when present.
fn extended_offsets(obj: &DefaultDicomObject) -> Option<Vec<u64>> {
    let bytes = obj.get(tags::EXTENDED_OFFSET_TABLE)?.value().to_bytes().ok()?;
    let offsets: Vec<u64> = bytes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("chunk of 8")))
        .collect();
    (!offsets.is_empty()).then_some(offsets)
}

/// Group fragments by the offset, counted from the first fragment's item tag, at which each frame starts
/// (both offset tables count item headers).
fn split_at_offsets(fragments: &[Vec<u8>], offsets: &[u64], frames: usize) -> Result<Vec<Vec<u8>>, String> {
    if offsets.len() != frames {
        return Err(format!(
            "offset table has {} entries for {frames} frames",
            offsets.len()
        ));
    }
    let mut out = vec![Vec::new(); frames];
    let mut position = 0u64;
    for fragment in fragments {
        let frame = offsets
            .iter()
            .rposition(|&o| o <= position)
            .ok_or("offset table does not start at 0")?;
        out[frame].extend_from_slice(fragment);
        position += ITEM_HEADER_LEN + fragment.len() as u64;
    }
    Ok(out)
}

fn starts_codestream(fragment: &[u8]) -> bool {
    fragment.starts_with(&JPEG_SOI)
        || fragment.starts_with(&J2K_SOC_SIZ)
        || fragment.starts_with(&JP2_SIGNATURE)
}

fn split_at_codestream_starts(fragments: &[Vec<u8>], frames: usize) -> Result<Vec<Vec<u8>>, String> {
    let mut out: Vec<Vec<u8>> = Vec::with_capacity(frames);
    for fragment in fragments {
        match out.last_mut() {
            Some(current) if !starts_codestream(fragment) => current.extend_from_slice(fragment),
            _ => out.push(fragment.clone()),
        }
    }
    if out.len() != frames {
        return Err(format!(
            "{} fragments without an offset table form {} codestreams, but Number of Frames is {frames}",
            fragments.len(),
            out.len()
        ));
    }
    Ok(out)
}
