//! DICOM RLE Lossless (PS3.5 Annex G): a 64-byte header of segment offsets, then one PackBits segment
//! per byte plane, most significant byte of each sample first. Decoded straight to interleaved samples.

/// Header: number of segments (u32 LE), then 15 segment offsets (u32 LE).
const HEADER_LEN: usize = 64;
const MAX_SEGMENTS: usize = 15;

/// Decode one frame to (rows*cols, samples) interleaved little-endian samples of `width` bytes.
pub fn decode_frame(data: &[u8], pixels: usize, samples: usize, width: usize) -> Result<Vec<u8>, String> {
    let offsets = segment_offsets(data)?;
    let expected = samples * width;
    if offsets.len() != expected {
        return Err(format!(
            "RLE header lists {} segments but {samples} samples x {width} bytes need {expected}",
            offsets.len()
        ));
    }
    let mut out = vec![0u8; pixels * expected];
    for (segment, &start) in offsets.iter().enumerate() {
        let end = offsets.get(segment + 1).copied().unwrap_or(data.len());
        if start > end || end > data.len() {
            return Err(format!(
                "RLE segment {segment} spans {start}..{end} outside the {}-byte frame",
                data.len()
            ));
        }
        let plane =
            unpack_bits(&data[start..end], pixels).map_err(|e| format!("RLE segment {segment}: {e}"))?;
        // Segment order is sample by sample, most significant byte first.
        let (sample, byte_from_msb) = (segment / width, segment % width);
        let byte = width - 1 - byte_from_msb;
        for (p, &value) in plane.iter().enumerate() {
            out[(p * samples + sample) * width + byte] = value;
        }
    }
    Ok(out)
}

fn segment_offsets(data: &[u8]) -> Result<Vec<usize>, String> {
    if data.len() < HEADER_LEN {
        return Err(format!(
            "RLE frame of {} bytes is shorter than its {HEADER_LEN}-byte header",
            data.len()
        ));
    }
    let word = |i: usize| {
        u32::from_le_bytes([data[4 * i], data[4 * i + 1], data[4 * i + 2], data[4 * i + 3]]) as usize
    };
    let count = word(0);
    if count == 0 || count > MAX_SEGMENTS {
        return Err(format!(
            "RLE header gives {count} segments (1..={MAX_SEGMENTS} allowed)"
        ));
    }
    Ok((1..=count).map(word).collect())
}

/// PackBits: n >= 0 copies n+1 literal bytes, -127..=-1 repeats the next byte 1-n times, -128 is a no-op.
fn unpack_bits(segment: &[u8], length: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(length);
    let mut i = 0;
    while out.len() < length && i < segment.len() {
        let n = segment[i] as i8;
        i += 1;
        if n >= 0 {
            let count = n as usize + 1;
            let literal = segment
                .get(i..i + count)
                .ok_or("literal run past the end of the segment")?;
            out.extend_from_slice(literal);
            i += count;
        } else if n != -128 {
            let value = *segment
                .get(i)
                .ok_or("replicate run past the end of the segment")?;
            out.extend(std::iter::repeat(value).take((1 - n as isize) as usize));
            i += 1;
        }
    }
    if out.len() < length {
        return Err(format!("decoded {} bytes, {length} expected", out.len()));
    }
    out.truncate(length);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packbits_literal_and_replicate() {
        // 2 literals (n=1), then 3 repeats of 9 (n=-2), a no-op, then 1 literal.
        let seg = [1, 5, 6, (-2i8) as u8, 9, 0x80, 0, 7];
        assert_eq!(unpack_bits(&seg, 6).unwrap(), [5, 6, 9, 9, 9, 7]);
        assert!(unpack_bits(&seg, 7).is_err());
    }

    #[test]
    fn sixteen_bit_segments_are_msb_first() {
        // 1 sample, 16 bits, 2 pixels: segment 0 holds high bytes, segment 1 low bytes.
        let mut frame = vec![0u8; HEADER_LEN];
        frame[0] = 2;
        frame[4] = HEADER_LEN as u8;
        frame[8] = HEADER_LEN as u8 + 3;
        frame.extend_from_slice(&[1, 0x12, 0x34]);
        frame.extend_from_slice(&[1, 0x56, 0x78]);
        let out = decode_frame(&frame, 2, 1, 2).unwrap();
        assert_eq!(out, [0x56, 0x12, 0x78, 0x34]);
    }
}
