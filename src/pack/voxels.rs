//! Stored values → what a shard holds. CT becomes int16 Hounsfield units (rounded, clamped to the
//! int16 range and counted, padding mapped to `PADDING_HU`); other modalities keep their stored
//! type and samples per pixel, with the modality transform recorded rather than applied.

use crate::dicom::decode::PixelBuffer;
use crate::dicom::modality::ModalityLut;

/// HU written for padding voxels (outside the reconstruction field of view): air.
pub const PADDING_HU: i16 = -1024;

/// Counts of voxels that did not map one to one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HuStats {
    pub clamped: u64,
    pub padding: u64,
}

impl std::ops::AddAssign for HuStats {
    fn add_assign(&mut self, other: HuStats) {
        self.clamped += other.clamped;
        self.padding += other.padding;
    }
}

/// Stored-value range that marks padding: PixelPaddingValue, optionally up to
/// PixelPaddingRangeLimit (either order), interpreted with the pixel representation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PaddingRange {
    lo: i64,
    hi: i64,
}

impl PaddingRange {
    /// `signed` and `bits_allocated` reinterpret values that were written with VR US although the
    /// pixels are signed (a common encoder quirk), e.g. 63536 → −2000 for 16-bit signed data.
    pub fn new(value: i64, limit: Option<i64>, signed: bool, bits_allocated: u16) -> PaddingRange {
        let fix = |v: i64| {
            let bits = u32::from(bits_allocated.clamp(1, 32));
            if signed && bits < 64 && v >= (1i64 << (bits - 1)) && v < (1i64 << bits) {
                v - (1i64 << bits)
            } else {
                v
            }
        };
        let (a, b) = (fix(value), fix(limit.unwrap_or(value)));
        PaddingRange {
            lo: a.min(b),
            hi: a.max(b),
        }
    }

    fn contains(&self, stored: f64) -> bool {
        stored >= self.lo as f64 && stored <= self.hi as f64
    }
}

/// Converts stored CT values of one frame sequence to HU, appending to `out`.
pub fn to_hu(
    stored: &PixelBuffer,
    lut: &ModalityLut,
    padding: Option<PaddingRange>,
    out: &mut Vec<i16>,
) -> HuStats {
    let mut stats = HuStats::default();
    let mut convert = |v: f64| {
        if padding.is_some_and(|p| p.contains(v)) {
            stats.padding += 1;
            return PADDING_HU;
        }
        let hu = lut.apply(v).round();
        if hu < i16::MIN as f64 || hu > i16::MAX as f64 || hu.is_nan() {
            stats.clamped += 1;
        }
        // `as` saturates and maps NaN to 0.
        hu as i16
    };
    macro_rules! each {
        ($v:expr) => {
            out.extend($v.iter().map(|&x| convert(x as f64)))
        };
    }
    match stored {
        PixelBuffer::U8(v) => each!(v),
        PixelBuffer::I8(v) => each!(v),
        PixelBuffer::U16(v) => each!(v),
        PixelBuffer::I16(v) => each!(v),
        PixelBuffer::U32(v) => each!(v),
        PixelBuffer::I32(v) => each!(v),
        PixelBuffer::F32(v) => each!(v),
        PixelBuffer::F64(v) => each!(v),
    }
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hu_from_unsigned_with_intercept_padding_and_clamping() {
        let stored = PixelBuffer::U16(vec![0, 1024, 2000, 65535, 3]);
        let lut = ModalityLut::Linear {
            slope: 1.0,
            intercept: -1024.0,
        };
        let mut out = Vec::new();
        let stats = to_hu(
            &stored,
            &lut,
            Some(PaddingRange::new(0, None, false, 16)),
            &mut out,
        );
        assert_eq!(out, [PADDING_HU, 0, 976, 32767, -1021]);
        assert_eq!(
            stats,
            HuStats {
                clamped: 1,
                padding: 1
            }
        );
    }

    #[test]
    fn signed_padding_written_as_unsigned_is_reinterpreted() {
        let p = PaddingRange::new(63536, None, true, 16);
        assert!(p.contains(-2000.0));
        let p = PaddingRange::new(-2000, Some(-1500), true, 16);
        assert!(p.contains(-1700.0) && !p.contains(-1400.0));
    }

    #[test]
    fn rounding_is_to_nearest() {
        let stored = PixelBuffer::I16(vec![1, 3]);
        let lut = ModalityLut::Linear {
            slope: 0.5,
            intercept: 0.0,
        };
        let mut out = Vec::new();
        to_hu(&stored, &lut, None, &mut out);
        assert_eq!(out, [1, 2]); // 0.5 → 1 and 1.5 → 2: half away from zero
    }
}
