//! Interim modality LUT (replaced by the conformance-tested version).

use dicom_dictionary_std::tags;
use dicom_object::DefaultDicomObject;

pub enum ModalityLut {
    Identity,
    Linear { slope: f64, intercept: f64 },
    Table { first_mapped: i64, values: Vec<f64> },
}

impl ModalityLut {
    pub fn apply(&self, stored: f64) -> f64 {
        match self {
            ModalityLut::Identity => stored,
            ModalityLut::Linear { slope, intercept } => stored * slope + intercept,
            ModalityLut::Table { first_mapped, values } => {
                let i = (stored as i64 - first_mapped).clamp(0, values.len() as i64 - 1);
                values[i as usize]
            }
        }
    }
}

pub fn modality_lut(obj: &DefaultDicomObject) -> Result<ModalityLut, super::decode::DecodeError> {
    let get = |t| {
        obj.element_opt(t)
            .ok()
            .flatten()
            .and_then(|e| e.to_float64().ok())
    };
    Ok(match (get(tags::RESCALE_SLOPE), get(tags::RESCALE_INTERCEPT)) {
        (None, None) => ModalityLut::Identity,
        (s, i) => ModalityLut::Linear {
            slope: s.unwrap_or(1.0),
            intercept: i.unwrap_or(0.0),
        },
    })
}
