//! A structural check of a DICOM file before any parser allocates for it: every element length
//! must fit inside its container, so a corrupt or hostile length is rejected in microseconds
//! instead of making a parser allocate gigabytes. It also finds the encoding the data set really
//! uses: files whose meta group says explicit VR but whose data set is implicit VR are common in
//! old archives (other readers detect this too).

/// Length of the Part 10 preamble; the "DICM" magic follows it.
pub const PREAMBLE_LEN: usize = 128;
const UNDEFINED: u32 = 0xFFFF_FFFF;
const ITEM: (u16, u16) = (0xFFFE, 0xE000);
const ITEM_END: (u16, u16) = (0xFFFE, 0xE00D);
const SEQUENCE_END: (u16, u16) = (0xFFFE, 0xE0DD);
const PIXEL_DATA: (u16, u16) = (0x7FE0, 0x0010);
/// Nesting deeper than this is treated as corrupt (real objects nest a handful of levels).
const MAX_DEPTH: usize = 32;

/// The uncompressed transfer syntaxes (the one place their UIDs are spelled out).
pub const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";
pub const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
pub const DEFLATED_EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1.99";
pub const EXPLICIT_VR_BE: &str = "1.2.840.10008.1.2.2";

/// How the data set of a file is laid out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Byte offset of the file meta group (132 with a preamble, 0 without).
    pub meta_offset: usize,
    /// Byte offset of the data set (after the meta group).
    pub dataset_offset: usize,
    /// Transfer syntax named in the meta group (empty when the file has no meta group).
    pub declared_syntax: String,
    /// Whether the data set is encoded with explicit VRs and which byte order, as found.
    pub explicit_vr: bool,
    pub big_endian: bool,
    /// Byte ranges of top-level UN elements of undefined length (sequences encoded implicitly
    /// inside an explicit data set). Parsers disagree on them and they only ever hold private
    /// data, so they are cut out before parsing.
    pub strip: Vec<(usize, usize)>,
    /// For a deflated data set: the file with its data set inflated (the meta group as it was);
    /// `strip` and the element offsets refer to these bytes.
    pub inflated: Option<Vec<u8>>,
}

/// Inflated data sets larger than this are refused: deflate expands up to about 1000×, so a small
/// hostile file could otherwise claim gigabytes. No real deflated object comes near it.
pub const MAX_INFLATED_BYTES: usize = 1 << 30;

/// The bytes up to `dataset_offset` followed by the raw-deflate data set after it, inflated.
fn inflate_dataset(bytes: &[u8], dataset_offset: usize) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let start = dataset_offset.min(bytes.len());
    let (head, compressed) = bytes.split_at(start);
    let mut plain = head.to_vec();
    let limit = (MAX_INFLATED_BYTES + 1) as u64;
    flate2::read::DeflateDecoder::new(compressed)
        .take(limit)
        .read_to_end(&mut plain)
        .map_err(|e| format!("deflated data set does not inflate: {e}"))?;
    if plain.len() - start > MAX_INFLATED_BYTES {
        return Err(format!(
            "deflated data set inflates to more than {} MiB",
            MAX_INFLATED_BYTES >> 20
        ));
    }
    Ok(plain)
}

#[derive(Clone, Copy)]
struct Enc {
    explicit: bool,
    big: bool,
}

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
    strip: Vec<(usize, usize)>,
    pixel_data_at: Option<usize>,
}

impl Cursor<'_> {
    fn u16(&mut self, enc: Enc) -> Result<u16, String> {
        let s = self.take(2)?;
        Ok(if enc.big {
            u16::from_be_bytes([s[0], s[1]])
        } else {
            u16::from_le_bytes([s[0], s[1]])
        })
    }
    fn u32(&mut self, enc: Enc) -> Result<u32, String> {
        let s = self.take(4)?;
        let a = [s[0], s[1], s[2], s[3]];
        Ok(if enc.big {
            u32::from_be_bytes(a)
        } else {
            u32::from_le_bytes(a)
        })
    }
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        if self.b.len() - self.pos < n {
            return Err(format!("file ends inside an element header at byte {}", self.pos));
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
}

/// Whether an explicit VR element header has the 4-byte length form. As parsers read it (PS3.5
/// 7.1.2), every VR but the 16-bit-length ones, so an unknown VR too (it is read as UN).
fn long_length_vr(vr: &[u8]) -> bool {
    !matches!(
        vr,
        b"AE"
            | b"AS"
            | b"AT"
            | b"CS"
            | b"DA"
            | b"DS"
            | b"DT"
            | b"FL"
            | b"FD"
            | b"IS"
            | b"LO"
            | b"LT"
            | b"PN"
            | b"SH"
            | b"SL"
            | b"SS"
            | b"ST"
            | b"TM"
            | b"UI"
            | b"UL"
            | b"US"
    )
}

/// The VRs of the standard with the 4-byte length form; any other two letters are read as UN.
fn known_long_vr(vr: &[u8]) -> bool {
    matches!(
        vr,
        b"OB" | b"OD" | b"OF" | b"OL" | b"OV" | b"OW" | b"SQ" | b"UC" | b"UN" | b"UR" | b"UT" | b"SV" | b"UV"
    )
}

fn is_vr(vr: &[u8]) -> bool {
    vr.len() == 2 && vr[0].is_ascii_uppercase() && vr[1].is_ascii_uppercase()
}

/// What the items met directly inside a walk hold.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Items {
    /// Data sets (sequence items): walked like any data set, as parsers read them.
    DataSets,
    /// Raw fragments (encapsulated Pixel Data): only their bounds are checked.
    Fragments,
}

/// Bytes per value of the binary VRs a parser reads as arrays of numbers (1 for the others).
fn value_unit(vr: &[u8]) -> usize {
    match vr {
        b"US" | b"SS" | b"OW" => 2,
        b"UL" | b"SL" | b"FL" | b"OF" | b"OL" | b"AT" => 4,
        b"FD" | b"OD" | b"SV" | b"UV" | b"OV" => 8,
        _ => 1,
    }
}

/// [`value_unit`] of the VR the standard dictionary gives `tag` (implicit VR data sets).
fn dictionary_unit(tag: (u16, u16)) -> usize {
    use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
    dicom_dictionary_std::StandardDataDictionary
        .by_tag(dicom_core::Tag(tag.0, tag.1))
        .map_or(1, |e| value_unit(e.vr().relaxed().to_string().as_bytes()))
}

/// Whether the standard dictionary gives `tag` the VR SQ: how an implicit VR data set's parser
/// knows a defined-length element holds a sequence.
fn dictionary_sq(tag: (u16, u16)) -> bool {
    use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
    dicom_dictionary_std::StandardDataDictionary
        .by_tag(dicom_core::Tag(tag.0, tag.1))
        .is_some_and(|e| e.vr().relaxed() == dicom_core::VR::SQ)
}

/// Walks elements from `c.pos` up to `end`, or to the delimiter `until`; `items` says what items
/// directly inside hold.
fn walk(
    c: &mut Cursor,
    end: usize,
    enc: Enc,
    depth: usize,
    until: Option<(u16, u16)>,
    items: Items,
) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!("sequences nested deeper than {MAX_DEPTH} levels"));
    }
    while c.pos < end {
        let at = c.pos;
        let tag = (c.u16(enc)?, c.u16(enc)?);
        if tag.0 == 0xFFFE {
            let len = c.u32(enc)?;
            if Some(tag) == until {
                return Ok(());
            }
            if tag == ITEM {
                item(c, end, enc, depth, len, at, items)?;
                continue;
            }
            return Err(format!(
                "unexpected delimiter ({:04X},{:04X}) at byte {at}",
                tag.0, tag.1
            ));
        }
        let (vr, len): (Option<[u8; 2]>, u32) = if enc.explicit {
            let vr = c.take(2)?;
            let vr = [vr[0], vr[1]];
            if !is_vr(&vr) {
                return Err(format!(
                    "invalid VR at byte {} for ({:04X},{:04X})",
                    at + 4,
                    tag.0,
                    tag.1
                ));
            }
            if long_length_vr(&vr) {
                c.take(2)?;
                let vr = if known_long_vr(&vr) { vr } else { *b"UN" };
                (Some(vr), c.u32(enc)?)
            } else {
                (Some(vr), c.u16(enc)? as u32)
            }
        } else {
            (None, c.u32(enc)?)
        };
        if depth == 0 && tag == PIXEL_DATA {
            c.pixel_data_at = Some(at);
        }
        if len == UNDEFINED {
            // Undefined length: a sequence (SQ, or UN/implicit holding one), or encapsulated pixel data
            // (whose items are fragments); parsers read any other such element as a sequence too.
            let is_un = vr.as_ref().is_some_and(|v| v == b"UN");
            let inner = if is_un {
                Enc {
                    explicit: false,
                    big: false,
                }
            } else {
                enc
            };
            let inside = if tag == PIXEL_DATA && !is_un {
                Items::Fragments
            } else {
                Items::DataSets
            };
            walk(c, end, inner, depth + 1, Some(SEQUENCE_END), inside)?;
            if is_un {
                if depth > 0 {
                    return Err(format!(
                        "nested UN element of undefined length ({:04X},{:04X}) at byte {at}",
                        tag.0, tag.1
                    ));
                }
                c.strip.push((at, c.pos));
            }
            continue;
        }
        let len = len as usize;
        if len > end - c.pos {
            if depth == 0 && tag == PIXEL_DATA {
                c.pixel_data_at = Some(at);
            }
            return Err(format!(
                "element ({:04X},{:04X}) at byte {at} declares {len} bytes but only {} remain",
                tag.0,
                tag.1,
                end - c.pos
            ));
        }
        // A parser reads whole binary values only (4 bytes of FL, 2 of US, ...) and carries on from
        // there: a remainder would shift everything after it.
        let unit = match &vr {
            Some(v) => value_unit(v),
            None => dictionary_unit(tag),
        };
        if unit > 1 && len % unit != 0 && c.pos + len < c.b.len() {
            return Err(format!(
                "element ({:04X},{:04X}) at byte {at} declares {len} bytes, not a whole number of \
                 {unit}-byte values",
                tag.0, tag.1
            ));
        }
        let sequence = match &vr {
            Some(v) => v == b"SQ",
            None => dictionary_sq(tag),
        };
        if sequence {
            let stop = c.pos + len;
            walk(c, stop, enc, depth + 1, None, Items::DataSets)?;
            c.pos = stop;
        } else {
            c.pos += len;
        }
    }
    if until.is_some() && c.pos >= end && end == c.b.len() {
        return Err("file ends inside a sequence or item of undefined length".into());
    }
    Ok(())
}

fn item(
    c: &mut Cursor,
    end: usize,
    enc: Enc,
    depth: usize,
    len: u32,
    at: usize,
    items: Items,
) -> Result<(), String> {
    if len == UNDEFINED {
        return walk(c, end, enc, depth + 1, Some(ITEM_END), Items::DataSets);
    }
    let len = len as usize;
    if len > end - c.pos {
        return Err(format!(
            "item at byte {at} declares {len} bytes but only {} remain",
            end - c.pos
        ));
    }
    let stop = c.pos + len;
    if items == Items::DataSets {
        // The item's data set, element by element: a parser allocates what its lengths claim.
        walk(c, stop, enc, depth + 1, None, Items::DataSets)?;
    }
    c.pos = stop;
    Ok(())
}

/// Reads the meta group; returns (declared transfer syntax, offset of the data set).
fn meta(b: &[u8], start: usize) -> Result<(String, usize), String> {
    let le = Enc {
        explicit: true,
        big: false,
    };
    let mut c = Cursor {
        b,
        pos: start,
        strip: Vec::new(),
        pixel_data_at: None,
    };
    let mut syntax = String::new();
    while c.pos + 8 <= b.len() {
        let at = c.pos;
        let group = u16::from_le_bytes([b[at], b[at + 1]]);
        if group != 0x0002 {
            break;
        }
        let element = u16::from_le_bytes([b[at + 2], b[at + 3]]);
        c.pos += 4;
        let vr = c.take(2)?;
        let vr = [vr[0], vr[1]];
        let len = if long_length_vr(&vr) {
            c.take(2)?;
            c.u32(le)? as usize
        } else {
            c.u16(le)? as usize
        };
        if len > b.len() - c.pos {
            return Err(format!(
                "file meta element (0002,{element:04X}) declares {len} bytes beyond the end"
            ));
        }
        if element == 0x0010 {
            syntax = String::from_utf8_lossy(&b[c.pos..c.pos + len])
                .trim_end_matches(['\0', ' '])
                .to_string();
        }
        c.pos += len;
    }
    Ok((syntax, c.pos))
}

/// A structural defect, and where the pixel data starts when only the pixel data is damaged (a
/// truncated file): the header before it is intact and tells which series lost a slice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuardError {
    pub message: String,
    pub pixel_data_at: Option<usize>,
}

impl std::fmt::Display for GuardError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Checks the structure of a whole file in memory and reports its layout.
pub fn check(bytes: &[u8]) -> Result<Layout, GuardError> {
    let has_preamble = bytes.len() >= PREAMBLE_LEN + 4 && &bytes[PREAMBLE_LEN..PREAMBLE_LEN + 4] == b"DICM";
    // Part 10 with preamble, the magic without a preamble, or a bare data set without meta group.
    let meta_offset = if has_preamble {
        PREAMBLE_LEN + 4
    } else if bytes.starts_with(b"DICM") {
        4
    } else {
        0
    };
    let (declared, dataset_offset) = meta(bytes, meta_offset).map_err(|message| GuardError {
        message,
        pixel_data_at: None,
    })?;
    if declared == DEFLATED_EXPLICIT_VR_LE {
        // A parser reading the compressed stream cannot bound a length by the bytes left, so the data
        // set is inflated here (bounded) and checked like any other.
        let no_salvage = |message| GuardError {
            message,
            pixel_data_at: None,
        };
        let plain = inflate_dataset(bytes, dataset_offset).map_err(no_salvage)?;
        let mut c = Cursor {
            b: &plain,
            pos: dataset_offset,
            strip: Vec::new(),
            pixel_data_at: None,
        };
        walk(
            &mut c,
            plain.len(),
            Enc {
                explicit: true,
                big: false,
            },
            0,
            None,
            Items::DataSets,
        )
        .map_err(|e| no_salvage(format!("inflated data set: {e}")))?;
        let strip = std::mem::take(&mut c.strip);
        return Ok(Layout {
            meta_offset,
            dataset_offset,
            declared_syntax: declared,
            explicit_vr: true,
            big_endian: false,
            strip,
            inflated: Some(plain),
        });
    }
    let big = declared == EXPLICIT_VR_BE;
    let declared_explicit = declared != IMPLICIT_VR_LE && !declared.is_empty();
    let try_enc = |explicit: bool, big: bool| {
        let mut c = Cursor {
            b: bytes,
            pos: dataset_offset,
            strip: Vec::new(),
            pixel_data_at: None,
        };
        walk(
            &mut c,
            bytes.len(),
            Enc { explicit, big },
            0,
            None,
            Items::DataSets,
        )
        .map(|()| c.strip)
        .map_err(|message| GuardError {
            message,
            pixel_data_at: c.pixel_data_at,
        })
    };
    let first = try_enc(declared_explicit, big);
    let layout = |explicit, big, strip| Layout {
        meta_offset,
        dataset_offset,
        declared_syntax: declared.clone(),
        explicit_vr: explicit,
        big_endian: big,
        strip,
        inflated: None,
    };
    match first {
        Ok(strip) => Ok(layout(declared_explicit, big, strip)),
        // The other VR encoding (little endian), as found in mislabelled files.
        Err(e) => match try_enc(!declared_explicit, false) {
            Ok(strip) => Ok(layout(!declared_explicit, false, strip)),
            // A bare data set in (retired) explicit VR big endian.
            Err(_) if declared.is_empty() => match try_enc(true, true) {
                Ok(strip) => Ok(layout(true, true, strip)),
                Err(_) => Err(e),
            },
            Err(_) => Err(e),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elem_explicit(tag: (u16, u16), vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend(tag.0.to_le_bytes());
        v.extend(tag.1.to_le_bytes());
        v.extend(vr);
        if long_length_vr(vr) {
            v.extend([0, 0]);
            v.extend((value.len() as u32).to_le_bytes());
        } else {
            v.extend((value.len() as u16).to_le_bytes());
        }
        v.extend(value);
        v
    }

    fn file(ts: &str, dataset: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 128];
        f.extend(b"DICM");
        let mut uid = ts.as_bytes().to_vec();
        if uid.len() % 2 == 1 {
            uid.push(0);
        }
        f.extend(elem_explicit((2, 0x10), b"UI", &uid));
        f.extend(dataset);
        f
    }

    #[test]
    fn accepts_well_formed_and_detects_mislabelled_implicit() {
        let ds = elem_explicit((0x10, 0x20), b"LO", b"ID01");
        let l = check(&file(EXPLICIT_VR_LE, &ds)).unwrap();
        assert!(l.explicit_vr);
        let mut implicit = Vec::new();
        implicit.extend(0x10u16.to_le_bytes());
        implicit.extend(0x20u16.to_le_bytes());
        implicit.extend(4u32.to_le_bytes());
        implicit.extend(b"ID01");
        let l = check(&file(EXPLICIT_VR_LE, &implicit)).unwrap();
        assert!(!l.explicit_vr);
    }

    #[test]
    fn rejects_length_beyond_end() {
        let mut ds = elem_explicit((0x7FE0, 0x10), b"OW", &[0u8; 8]);
        ds.truncate(ds.len() - 4);
        let e = check(&file(EXPLICIT_VR_LE, &ds)).unwrap_err();
        assert!(e.message.contains("declares 8 bytes but only 4 remain"), "{e}");
        assert!(e.pixel_data_at.is_some());
    }

    fn deflate(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(data).unwrap();
        z.finish().unwrap()
    }

    #[test]
    fn deflated_data_sets_are_inflated_and_checked() {
        let ds = elem_explicit((0x10, 0x20), b"LO", b"ID01");
        let f = file(DEFLATED_EXPLICIT_VR_LE, &deflate(&ds));
        let l = check(&f).unwrap();
        let plain = l.inflated.expect("the inflated data set");
        assert_eq!(&plain[l.dataset_offset..], &ds[..]);
        assert_eq!(&plain[..l.dataset_offset], &f[..l.dataset_offset]);
        // A length past the end of the inflated stream (4 GB claimed by an unknown VR) is refused
        // before a parser could allocate for it.
        let mut hostile = ds.clone();
        hostile.extend([0xBC, 0xBC, 0xBC, 0xBC, 0xBC, 0xBC, 0, 0, 0xBC, 0xBC, 0xBC, 0xBC]);
        let e = check(&file(DEFLATED_EXPLICIT_VR_LE, &deflate(&hostile))).unwrap_err();
        assert!(e.message.starts_with("inflated data set:"), "{e}");
        assert_eq!(e.pixel_data_at, None);
        // Not a deflate stream at all.
        let e = check(&file(DEFLATED_EXPLICIT_VR_LE, &[0xFF; 16])).unwrap_err();
        assert!(e.message.contains("does not inflate"), "{e}");
    }

    fn item_bytes(tag: (u16, u16), content: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend(tag.0.to_le_bytes());
        v.extend(tag.1.to_le_bytes());
        v.extend((content.len() as u32).to_le_bytes());
        v.extend(content);
        v
    }

    #[test]
    fn lengths_inside_sequence_items_are_checked_but_pixel_fragments_are_not_parsed() {
        // A defined-length item whose data set claims 4 GB.
        let mut hostile = elem_explicit((0x10, 0x20), b"LO", b"ID01");
        hostile.extend([0x10, 0x00, 0x30, 0x00, b'O', b'B', 0, 0, 0xFF, 0xFF, 0xFF, 0xF0]);
        let sq = |content: &[u8]| elem_explicit((0x08, 0x1140), b"SQ", &item_bytes(ITEM, content));
        let ok = sq(&elem_explicit((0x10, 0x20), b"LO", b"ID01"));
        check(&file(EXPLICIT_VR_LE, &ok)).unwrap();
        let e = check(&file(EXPLICIT_VR_LE, &sq(&hostile))).unwrap_err();
        assert!(e.message.contains("declares 4043309055 bytes"), "{e}");
        // The same in implicit VR: the dictionary says (0008,1140) is a sequence.
        let implicit = |content: &[u8]| {
            let items = item_bytes(ITEM, content);
            let mut v = Vec::new();
            v.extend(0x08u16.to_le_bytes());
            v.extend(0x1140u16.to_le_bytes());
            v.extend((items.len() as u32).to_le_bytes());
            v.extend(items);
            v
        };
        let mut hostile_implicit = Vec::new();
        hostile_implicit.extend([0x10, 0x00, 0x30, 0x00, 0xFF, 0xFF, 0xFF, 0xF0]);
        let e = check(&file(IMPLICIT_VR_LE, &implicit(&hostile_implicit))).unwrap_err();
        assert!(e.message.contains("declares 4043309055 bytes"), "{e}");
        // Any other undefined-length element is read as a sequence too; Pixel Data's items are
        // fragments (a fragment holding the same bytes is fine).
        let undefined = |tag: (u16, u16)| {
            let mut v = Vec::new();
            v.extend(tag.0.to_le_bytes());
            v.extend(tag.1.to_le_bytes());
            v.extend(b"OB");
            v.extend([0, 0]);
            v.extend(UNDEFINED.to_le_bytes());
            v.extend(item_bytes(ITEM, &[]));
            v.extend(item_bytes(ITEM, &hostile));
            v.extend(item_bytes(SEQUENCE_END, &[]));
            v
        };
        check(&file(EXPLICIT_VR_LE, &undefined(PIXEL_DATA))).unwrap();
        let e = check(&file(EXPLICIT_VR_LE, &undefined((0x7F1E, 0x10)))).unwrap_err();
        assert!(e.message.contains("declares 4043309055 bytes"), "{e}");
    }

    #[test]
    fn an_unknown_vr_has_the_long_length_form_as_parsers_read_it() {
        // "XX" is read as UN: 2 reserved bytes, then a 4-byte length.
        let ok = elem_explicit((0x0009, 0x1010), b"XX", b"abcd");
        assert_eq!(ok.len(), 4 + 2 + 2 + 4 + 4);
        check(&file(EXPLICIT_VR_LE, &ok)).unwrap();
        let mut hostile = ok[..8].to_vec();
        hostile.extend(0xA5F0_0000u32.to_le_bytes());
        hostile.extend(b"abcd");
        let e = check(&file(EXPLICIT_VR_LE, &hostile)).unwrap_err();
        assert!(e.message.contains("declares 2783969280 bytes"), "{e}");
    }

    #[test]
    fn a_binary_value_that_is_not_whole_values_is_refused_unless_it_ends_the_file() {
        // High Bit as FL with 2 bytes: the parser reads no float, stays 2 bytes behind and takes
        // later bytes for lengths.
        let mut ds = elem_explicit((0x28, 0x102), b"FL", &[7, 0]);
        ds.extend(elem_explicit((0x28, 0x103), b"US", &[0, 0]));
        let e = check(&file(EXPLICIT_VR_LE, &ds)).unwrap_err();
        assert!(e.message.contains("not a whole number of 4-byte values"), "{e}");
        // Implicit VR: the dictionary's VR (Rows is US).
        let mut implicit = Vec::new();
        for (element, value) in [(0x10u16, &[1u8, 0, 0][..]), (0x11, &[1, 0][..])] {
            implicit.extend(0x28u16.to_le_bytes());
            implicit.extend(element.to_le_bytes());
            implicit.extend((value.len() as u32).to_le_bytes());
            implicit.extend(value);
        }
        let e = check(&file(IMPLICIT_VR_LE, &implicit)).unwrap_err();
        assert!(e.message.contains("not a whole number of 2-byte values"), "{e}");
        // The last element of the file shifts nothing.
        check(&file(
            EXPLICIT_VR_LE,
            &elem_explicit((0x28, 0x102), b"FL", &[7, 0]),
        ))
        .unwrap();
    }
}
