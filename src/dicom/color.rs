//! Sample rearrangements pydicom applies after decoding: bit unpacking, planar → interleaved,
//! YBR_FULL_422 up-sampling, and its exact YBR_FULL → RGB conversion (float32, round half up, clip).

/// Unpack 1-bit samples, least significant bit first, to one byte (0 or 1) per sample.
pub fn unpack_bits(packed: &[u8], samples: usize) -> Vec<u8> {
    packed
        .iter()
        .flat_map(|&byte| (0..8).map(move |bit| (byte >> bit) & 1))
        .take(samples)
        .collect()
}

/// Planar (all R, then all G, ...) to interleaved, frame by frame.
/// `bytes`: (frames, samples, rows*cols) planes of `width`-byte samples → (frames, rows*cols, samples).
pub fn interleave_planes(bytes: &[u8], samples: usize, frame_samples: usize, width: usize) -> Vec<u8> {
    let pixels = frame_samples / samples;
    let mut out = vec![0u8; bytes.len()];
    for (frame_in, frame_out) in bytes
        .chunks_exact(frame_samples * width)
        .zip(out.chunks_exact_mut(frame_samples * width))
    {
        for s in 0..samples {
            for p in 0..pixels {
                let src = (s * pixels + p) * width;
                let dst = (p * samples + s) * width;
                frame_out[dst..dst + width].copy_from_slice(&frame_in[src..src + width]);
            }
        }
    }
    out
}

/// Native YBR_FULL_422 stores Y1 Y2 Cb Cr for each pair of pixels (PS3.3 C.7.6.3.1.2); repeat the
/// chroma to get Y1 Cb Cr Y2 Cb Cr, exactly as pydicom does.
pub fn expand_ybr422(bytes: &[u8], width: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() / 2 * 3);
    for group in bytes.chunks_exact(4 * width) {
        let (y1, y2) = (&group[..width], &group[width..2 * width]);
        let (cb, cr) = (&group[2 * width..3 * width], &group[3 * width..]);
        for part in [y1, cb, cr, y2, cb, cr] {
            out.extend_from_slice(part);
        }
    }
    out
}

/// Offset of the chroma channels in 8-bit YBR_FULL.
const CHROMA_OFFSET: f32 = 128.0;

/// YBR_FULL → RGB in place on interleaved 8-bit samples, replicating pydicom's
/// `_convert_YBR_FULL_to_RGB`: float32 arithmetic with coefficients from PS3.3 C.7.6.3.1.2 rounded to
/// float32, then floor(x + 0.5) and clipping to 0..=255.
pub fn ybr_full_to_rgb(values: &mut [u8]) {
    // Coefficients as pydicom writes them (computed in f64, stored as f32).
    let cr_to_r = 1.402_f64 as f32;
    let cb_to_g = (-0.114_f64 * 1.772 / 0.587) as f32;
    let cr_to_g = (-0.299_f64 * 1.402 / 0.587) as f32;
    let cb_to_b = 1.772_f64 as f32;
    for px in values.chunks_exact_mut(3) {
        let y = px[0] as f32;
        let cb = px[1] as f32 - CHROMA_OFFSET;
        let cr = px[2] as f32 - CHROMA_OFFSET;
        let r = y + cr * cr_to_r;
        let g = y + cb * cb_to_g + cr * cr_to_g;
        let b = y + cb * cb_to_b;
        px[0] = round_clip(r);
        px[1] = round_clip(g);
        px[2] = round_clip(b);
    }
}

fn round_clip(x: f32) -> u8 {
    (x + 0.5).floor().clamp(0.0, 255.0) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaves_two_frames_of_planar_rgb() {
        // 2 frames, 2 pixels, 3 samples: R R G G B B per frame.
        let planar = [1, 2, 10, 20, 100, 200, 3, 4, 30, 40, 101, 201];
        let out = interleave_planes(&planar, 3, 6, 1);
        assert_eq!(out, [1, 10, 100, 2, 20, 200, 3, 30, 101, 4, 40, 201]);
    }

    #[test]
    fn expands_422_pairs() {
        assert_eq!(
            expand_ybr422(&[10, 20, 128, 129], 1),
            [10, 128, 129, 20, 128, 129]
        );
    }

    #[test]
    fn neutral_chroma_is_grey_and_extremes_clip() {
        let mut v = [77, 128, 128, 255, 255, 255, 0, 0, 0];
        ybr_full_to_rgb(&mut v);
        assert_eq!(&v[..3], &[77, 77, 77]);
        // Y=255, Cb=Cr=255: R = 255 + 1.402*127 clips to 255; G = 255 - 0.344*127 - 0.714*127 ≈ 120.6.
        assert_eq!(v[3], 255);
        assert_eq!(v[4], 121);
        assert_eq!(v[6], 0);
    }

    #[test]
    fn unpacks_lsb_first() {
        assert_eq!(
            unpack_bits(&[0b0000_0101, 0b1], 10),
            [1, 0, 1, 0, 0, 0, 0, 0, 1, 0]
        );
    }
}
