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

/// Converts stored CT values of one frame sequence to HU, appending to `out`. 16-bit data (every CT
/// scanner) goes through a 65,536-entry table built once per call, so each voxel is one lookup;
/// other types are converted value by value. Both give the same results (tested).
pub fn to_hu(
    stored: &PixelBuffer,
    lut: &ModalityLut,
    padding: Option<PaddingRange>,
    out: &mut Vec<i16>,
) -> HuStats {
    match stored {
        PixelBuffer::I16(v) if v.len() > TABLE_WORTH_IT => with_table(
            v.iter().map(|&x| (x as u16) as usize),
            i16::MIN as i64,
            lut,
            padding,
            out,
        ),
        PixelBuffer::U16(v) if v.len() > TABLE_WORTH_IT => {
            with_table(v.iter().map(|&x| x as usize), 0, lut, padding, out)
        }
        _ => to_hu_direct(stored, lut, padding, out),
    }
}

/// Below this many voxels, building the 65,536-entry table costs more than it saves.
const TABLE_WORTH_IT: usize = 1 << 16;
const TABLE_LEN: usize = 1 << 16;

/// One entry per possible 16-bit stored value: the HU and whether it was clamped or padding.
fn with_table(
    indices: impl Iterator<Item = usize>,
    first_value: i64,
    lut: &ModalityLut,
    padding: Option<PaddingRange>,
    out: &mut Vec<i16>,
) -> HuStats {
    const CLAMPED: u8 = 1;
    const PADDING: u8 = 2;
    let mut hu = vec![0i16; TABLE_LEN];
    let mut flag = vec![0u8; TABLE_LEN];
    // Index = stored value reinterpreted as u16; for signed data value = index as i16.
    for index in 0..TABLE_LEN {
        let value = if first_value < 0 {
            (index as u16) as i16 as f64
        } else {
            index as f64
        };
        let (h, f) = convert_one(value, lut, padding);
        hu[index] = h;
        flag[index] = f.0 as u8 * CLAMPED | f.1 as u8 * PADDING;
    }
    let mut counts = [0u64; 4];
    out.extend(indices.map(|i| {
        counts[flag[i] as usize] += 1;
        hu[i]
    }));
    HuStats {
        clamped: counts[1] + counts[3],
        padding: counts[2] + counts[3],
    }
}

/// HU of one stored value, and (clamped, padding).
fn convert_one(v: f64, lut: &ModalityLut, padding: Option<PaddingRange>) -> (i16, (bool, bool)) {
    if padding.is_some_and(|p| p.contains(v)) {
        return (PADDING_HU, (false, true));
    }
    let hu = lut.apply(v).round();
    let clamped = hu < i16::MIN as f64 || hu > i16::MAX as f64 || hu.is_nan();
    // `as` saturates and maps NaN to 0.
    (hu as i16, (clamped, false))
}

/// The value-by-value conversion (any stored type).
fn to_hu_direct(
    stored: &PixelBuffer,
    lut: &ModalityLut,
    padding: Option<PaddingRange>,
    out: &mut Vec<i16>,
) -> HuStats {
    let mut stats = HuStats::default();
    let mut convert = |v: f64| {
        let (hu, (clamped, pad)) = convert_one(v, lut, padding);
        stats.clamped += clamped as u64;
        stats.padding += pad as u64;
        hu
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
    fn table_path_equals_value_by_value_for_every_16_bit_value() {
        let luts = [
            ModalityLut::Linear {
                slope: 1.0,
                intercept: -1024.0,
            },
            ModalityLut::Linear {
                slope: 0.37,
                intercept: -3000.5,
            },
            ModalityLut::Linear {
                slope: 2.0,
                intercept: 0.0,
            },
            ModalityLut::Table {
                first_mapped: -10,
                values: (0..300).map(|i| i as f64 * 1.5 - 7.0).collect(),
            },
        ];
        let signed: Vec<i16> = (i16::MIN..=i16::MAX).chain(0..10).collect();
        let unsigned: Vec<u16> = (0..=u16::MAX).chain(0..10).collect();
        for lut in &luts {
            for padding in [None, Some(PaddingRange::new(-2000, Some(-1990), true, 16))] {
                let (mut a, mut b) = (Vec::new(), Vec::new());
                let sa = to_hu(&PixelBuffer::I16(signed.clone()), lut, padding, &mut a);
                let sb = to_hu_direct(&PixelBuffer::I16(signed.clone()), lut, padding, &mut b);
                assert_eq!((a, sa), (b, sb));
            }
            for padding in [None, Some(PaddingRange::new(0, None, false, 16))] {
                let (mut a, mut b) = (Vec::new(), Vec::new());
                let sa = to_hu(&PixelBuffer::U16(unsigned.clone()), lut, padding, &mut a);
                let sb = to_hu_direct(&PixelBuffer::U16(unsigned.clone()), lut, padding, &mut b);
                assert_eq!((a, sa), (b, sb));
            }
        }
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
