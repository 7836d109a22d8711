//! The Modality LUT (PS3.3 C.11.1): stored values → modality units (HU for CT). Either a linear
//! RescaleSlope/RescaleIntercept, also when a writer stored them with VR UN, or a Modality LUT Sequence
//! table. Applied the way pydicom's `apply_modality_lut` does, so `pack` gets the same numbers.

use dicom_core::value::{PrimitiveValue, Value};
use dicom_core::{Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::mem::InMemElement;
use dicom_object::{DefaultDicomObject, InMemDicomObject};

use super::decode::{transfer_syntax_uid, ts_label, DecodeError};

/// A LUT Descriptor's entry count of 0 means 2^16 entries (PS3.3 C.11.1.1).
const ZERO_MEANS_ENTRIES: usize = 1 << 16;
/// Shared Functional Groups (enhanced multi-frame) → Pixel Value Transformation Sequence.
const PIXEL_VALUE_TRANSFORMATION_SEQUENCE: Tag = Tag(0x0028, 0x9145);

#[derive(Debug, Clone, PartialEq)]
pub enum ModalityLut {
    Identity,
    Linear {
        slope: f64,
        intercept: f64,
    },
    /// Values below `first_mapped` map to `values[0]`, beyond the table to its last entry.
    Table {
        first_mapped: i64,
        values: Vec<f64>,
    },
}

impl ModalityLut {
    pub fn apply(&self, stored: f64) -> f64 {
        match self {
            ModalityLut::Identity => stored,
            // Same operation order as pydicom (`arr * slope`, then `+= intercept`), so results agree bitwise.
            ModalityLut::Linear { slope, intercept } => stored * slope + intercept,
            ModalityLut::Table { first_mapped, values } => {
                let index = (stored - *first_mapped as f64).clamp(0.0, (values.len() - 1) as f64);
                values[index as usize]
            }
        }
    }

    pub fn is_identity(&self) -> bool {
        match self {
            ModalityLut::Identity => true,
            ModalityLut::Linear { slope, intercept } => *slope == 1.0 && *intercept == 0.0,
            ModalityLut::Table { .. } => false,
        }
    }
}

/// RescaleSlope/Intercept (also when stored with VR UN: the raw bytes are parsed as DS text), else a
/// Modality LUT Sequence (0028,3000) with LUTDescriptor/LUTData (8/16-bit entries, first-mapped value
/// signed or not), else the enhanced multi-frame shared Pixel Value Transformation, else identity.
/// A LUT Sequence wins over rescale values, as in pydicom.
pub fn modality_lut(obj: &DefaultDicomObject) -> Result<ModalityLut, DecodeError> {
    let ts = transfer_syntax_uid(obj);
    let invalid = |reason: String| DecodeError::ModalityLut {
        ts: ts_label(&ts),
        reason,
    };
    if let Some(item) = first_item(obj, tags::MODALITY_LUT_SEQUENCE) {
        let signed_pixels = uint_value(obj, tags::PIXEL_REPRESENTATION) == Some(1);
        return lut_table(item, signed_pixels).map_err(invalid);
    }
    if let Some(lut) = rescale(obj).map_err(invalid)? {
        return Ok(lut);
    }
    let shared = first_item(obj, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE)
        .and_then(|groups| first_item(groups, PIXEL_VALUE_TRANSFORMATION_SEQUENCE));
    match shared {
        Some(transform) => Ok(rescale(transform)
            .map_err(invalid)?
            .unwrap_or(ModalityLut::Identity)),
        None => Ok(ModalityLut::Identity),
    }
}

/// The first VOI LUT Sequence (0028,3010) item's table (PS3.3 C.11.2), as pydicom's `apply_voi_lut`
/// reads it: `first_mapped` and one value per entry. None when the object has no sequence.
pub fn voi_lut(obj: &DefaultDicomObject) -> Result<Option<ModalityLut>, DecodeError> {
    let ts = transfer_syntax_uid(obj);
    match first_item(obj, tags::VOILUT_SEQUENCE) {
        None => Ok(None),
        Some(item) => {
            let signed_pixels = uint_value(obj, tags::PIXEL_REPRESENTATION) == Some(1);
            lut_table(item, signed_pixels)
                .map(Some)
                .map_err(|reason| DecodeError::ModalityLut {
                    ts: ts_label(&ts),
                    reason: format!("VOI LUT Sequence: {reason}"),
                })
        }
    }
}

fn first_item(obj: &InMemDicomObject, tag: Tag) -> Option<&InMemDicomObject> {
    obj.get(tag)?.items()?.first()
}

fn uint_value(obj: &InMemDicomObject, tag: Tag) -> Option<u32> {
    obj.get(tag)?.value().to_int::<u32>().ok()
}

/// Linear rescale when both slope and intercept are present (pydicom needs both).
fn rescale(obj: &InMemDicomObject) -> Result<Option<ModalityLut>, String> {
    let (Some(slope), Some(intercept)) = (obj.get(tags::RESCALE_SLOPE), obj.get(tags::RESCALE_INTERCEPT))
    else {
        return Ok(None);
    };
    let slope = decimal_string(slope).map_err(|e| format!("RescaleSlope (0028,1053): {e}"))?;
    let intercept = decimal_string(intercept).map_err(|e| format!("RescaleIntercept (0028,1052): {e}"))?;
    Ok(Some(ModalityLut::Linear { slope, intercept }))
}

/// The first value of a DS element, read from its text whatever VR it was stored with (UN keeps the
/// raw bytes, which are still the DS characters).
fn decimal_string(element: &InMemElement) -> Result<f64, String> {
    let text = match element.value() {
        Value::Primitive(PrimitiveValue::U8(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
        Value::Primitive(p) => p.to_str().into_owned(),
        _ => return Err("not a single value".to_string()),
    };
    let first = text
        .split('\\')
        .next()
        .unwrap_or_default()
        .trim_matches([' ', '\0']);
    first
        .parse::<f64>()
        .map_err(|_| format!("{first:?} is not a decimal number"))
}

/// A Modality LUT Sequence item: LUTDescriptor = [entries, first mapped, bits per entry], LUTData.
fn lut_table(item: &InMemDicomObject, signed_pixels: bool) -> Result<ModalityLut, String> {
    let descriptor = item
        .get(tags::LUT_DESCRIPTOR)
        .ok_or("LUTDescriptor (0028,3002) is absent")?;
    let words: Vec<i64> = descriptor
        .value()
        .to_multi_int::<i64>()
        .map_err(|e| format!("LUTDescriptor (0028,3002): {e}"))?;
    let [entries, first_mapped, bits] = words[..] else {
        return Err(format!(
            "LUTDescriptor (0028,3002) has {} values, 3 expected",
            words.len()
        ));
    };
    let entries = if entries == 0 {
        ZERO_MEANS_ENTRIES
    } else {
        entries as usize
    };
    // The first mapped value is SS when pixels are signed (PS3.3 C.11.1.1); a US descriptor then
    // holds its two's complement.
    let first_mapped = if signed_pixels && descriptor.vr() != VR::SS {
        first_mapped as u16 as i16 as i64
    } else {
        first_mapped
    };
    let data = item.get(tags::LUT_DATA).ok_or("LUTData (0028,3006) is absent")?;
    let values = lut_entries(data, entries, bits)?;
    Ok(ModalityLut::Table { first_mapped, values })
}

/// LUT entries: one per 16-bit word, or 8-bit entries packed two to a word when the data is half as long.
fn lut_entries(data: &InMemElement, entries: usize, bits: i64) -> Result<Vec<f64>, String> {
    let words: Vec<u16> = match data.value() {
        Value::Primitive(PrimitiveValue::U16(w)) => w.to_vec(),
        Value::Primitive(PrimitiveValue::I16(w)) => w.iter().map(|&x| x as u16).collect(),
        Value::Primitive(PrimitiveValue::U8(b)) => b
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect(),
        _ => return Err("LUTData (0028,3006) is not a list of 16-bit words".to_string()),
    };
    let values: Vec<f64> = if words.len() >= entries {
        words[..entries].iter().map(|&w| w as f64).collect()
    } else if bits == 8 && words.len() * 2 >= entries {
        words
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .take(entries)
            .map(f64::from)
            .collect()
    } else {
        return Err(format!(
            "LUTData (0028,3006) has {} words for {entries} entries",
            words.len()
        ));
    };
    if values.is_empty() {
        return Err("LUTData (0028,3006) is empty".to_string());
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_core::value::DataSetSequence;
    use dicom_core::{DataElement, PrimitiveValue};
    use dicom_object::meta::FileMetaTableBuilder;

    fn object(elements: Vec<InMemElement>) -> DefaultDicomObject {
        InMemDicomObject::from_element_iter(elements)
            .with_meta(
                FileMetaTableBuilder::new()
                    .transfer_syntax("1.2.840.10008.1.2.1")
                    .media_storage_sop_class_uid("1.2.840.10008.5.1.4.1.1.2")
                    .media_storage_sop_instance_uid("1.2.3.4"),
            )
            .unwrap()
    }

    #[test]
    fn rescale_stored_with_vr_un_is_read_as_text() {
        let obj = object(vec![
            DataElement::new(
                tags::RESCALE_SLOPE,
                VR::UN,
                PrimitiveValue::from(b"2.5 ".to_vec()),
            ),
            DataElement::new(
                tags::RESCALE_INTERCEPT,
                VR::UN,
                PrimitiveValue::from(b"-1024".to_vec()),
            ),
        ]);
        let lut = modality_lut(&obj).unwrap();
        assert_eq!(
            lut,
            ModalityLut::Linear {
                slope: 2.5,
                intercept: -1024.0
            }
        );
        assert_eq!(lut.apply(100.0), -774.0);
        assert!(!lut.is_identity());
    }

    #[test]
    fn rescale_ds_and_missing_intercept() {
        let both = object(vec![
            DataElement::new(tags::RESCALE_SLOPE, VR::DS, PrimitiveValue::from("1")),
            DataElement::new(tags::RESCALE_INTERCEPT, VR::DS, PrimitiveValue::from("0")),
        ]);
        assert!(modality_lut(&both).unwrap().is_identity());
        let slope_only = object(vec![DataElement::new(
            tags::RESCALE_SLOPE,
            VR::DS,
            PrimitiveValue::from("3"),
        )]);
        assert_eq!(modality_lut(&slope_only).unwrap(), ModalityLut::Identity);
    }

    fn lut_item(descriptor_vr: VR, descriptor: PrimitiveValue, data: PrimitiveValue) -> InMemDicomObject {
        InMemDicomObject::from_element_iter([
            DataElement::new(tags::LUT_DESCRIPTOR, descriptor_vr, descriptor),
            DataElement::new(tags::LUT_DATA, VR::OW, data),
        ])
    }

    #[test]
    fn lut_sequence_with_signed_first_mapped_clamps_both_ends() {
        // 4 entries starting at -2: -2 → 10, -1 → 20, 0 → 30, 1 → 40.
        let item = lut_item(
            VR::SS,
            PrimitiveValue::I16([4, -2, 16].into_iter().collect()),
            PrimitiveValue::U16([10, 20, 30, 40].into_iter().collect()),
        );
        let obj = object(vec![
            DataElement::new(tags::PIXEL_REPRESENTATION, VR::US, PrimitiveValue::from(1u16)),
            DataElement::new(
                tags::MODALITY_LUT_SEQUENCE,
                VR::SQ,
                DataSetSequence::from(vec![item]),
            ),
            // Rescale values are ignored when a LUT is present.
            DataElement::new(tags::RESCALE_SLOPE, VR::DS, PrimitiveValue::from("9")),
            DataElement::new(tags::RESCALE_INTERCEPT, VR::DS, PrimitiveValue::from("9")),
        ]);
        let lut = modality_lut(&obj).unwrap();
        let mapped: Vec<f64> = [-5.0, -2.0, -1.0, 0.0, 1.0, 7.0]
            .iter()
            .map(|&v| lut.apply(v))
            .collect();
        assert_eq!(mapped, [10.0, 10.0, 20.0, 30.0, 40.0, 40.0]);
    }

    #[test]
    fn lut_sequence_us_descriptor_with_signed_pixels_and_packed_8_bit_entries() {
        // First mapped 0xFFFF as US with signed pixels is -1; 8-bit entries packed two per word.
        let item = lut_item(
            VR::US,
            PrimitiveValue::U16([3, 0xFFFF, 8].into_iter().collect()),
            PrimitiveValue::U16([0x0201, 0x0003].into_iter().collect()),
        );
        let obj = object(vec![
            DataElement::new(tags::PIXEL_REPRESENTATION, VR::US, PrimitiveValue::from(1u16)),
            DataElement::new(
                tags::MODALITY_LUT_SEQUENCE,
                VR::SQ,
                DataSetSequence::from(vec![item]),
            ),
        ]);
        let lut = modality_lut(&obj).unwrap();
        assert_eq!(
            lut,
            ModalityLut::Table {
                first_mapped: -1,
                values: vec![1.0, 2.0, 3.0]
            }
        );
    }

    #[test]
    fn malformed_descriptor_is_an_error() {
        let item = lut_item(
            VR::US,
            PrimitiveValue::U16([3, 0].into_iter().collect()),
            PrimitiveValue::U16([1, 2, 3].into_iter().collect()),
        );
        let obj = object(vec![DataElement::new(
            tags::MODALITY_LUT_SEQUENCE,
            VR::SQ,
            DataSetSequence::from(vec![item]),
        )]);
        let err = modality_lut(&obj).unwrap_err().to_string();
        assert!(err.contains("LUTDescriptor") && err.contains("2 values"), "{err}");
    }
}
