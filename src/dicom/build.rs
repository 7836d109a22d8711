//! Writing DICOM: a data set built element by element, and Part 10 files (the phantom's images and
//! annotations, and predicted segmentations).

use dicom_core::value::{DataSetSequence, C};
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_object::meta::FileMetaTableBuilder;
use dicom_object::InMemDicomObject;
use std::path::Path;

/// Our implementation's class UID in every file meta group (a fixed `2.25` UUID-derived UID).
pub const IMPLEMENTATION_CLASS_UID: &str = "2.25.181473938611229014837116526118350812901";

/// Builds a data set element by element.
pub struct DicomBuilder(pub InMemDicomObject);

impl From<InMemDicomObject> for DicomBuilder {
    fn from(o: InMemDicomObject) -> Self {
        DicomBuilder(o)
    }
}

impl Default for DicomBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl DicomBuilder {
    pub fn new() -> Self {
        DicomBuilder(InMemDicomObject::new_empty())
    }
    pub fn put(&mut self, element: DataElement<InMemDicomObject>) -> &mut Self {
        self.0.put(element);
        self
    }
    pub fn into_inner(self) -> InMemDicomObject {
        self.0
    }
    pub fn str(&mut self, tag: Tag, vr: VR, value: impl Into<String>) -> &mut Self {
        self.0
            .put(DataElement::new(tag, vr, PrimitiveValue::from(value.into())));
        self
    }
    pub fn strs(&mut self, tag: Tag, vr: VR, values: &[String]) -> &mut Self {
        self.0.put(DataElement::new(
            tag,
            vr,
            PrimitiveValue::Strs(C::from_vec(values.to_vec())),
        ));
        self
    }
    pub fn signed(&mut self, tag: Tag, value: i16) -> &mut Self {
        self.0
            .put(DataElement::new(tag, VR::SS, PrimitiveValue::from(value)));
        self
    }
    pub fn us(&mut self, tag: Tag, value: u16) -> &mut Self {
        self.0
            .put(DataElement::new(tag, VR::US, PrimitiveValue::from(value)));
        self
    }
    /// A sequence of `items`.
    pub fn seq(&mut self, tag: Tag, items: Vec<InMemDicomObject>) -> &mut Self {
        self.0.put(seq(tag, items));
        self
    }
}

/// A sequence element of `items`.
pub fn seq(tag: Tag, items: Vec<InMemDicomObject>) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::SQ, DataSetSequence::from(items))
}

/// DS text with a fixed number of decimals.
pub fn ds(value: f64, decimals: usize) -> String {
    format!("{value:.decimals$}")
}

/// Writes `object` as a Part 10 file in `transfer_syntax` (durably: a reader never sees a partial
/// file); returns its size in bytes.
pub fn write_part10(
    object: InMemDicomObject,
    transfer_syntax: &str,
    version_name: &str,
    path: &Path,
) -> Result<u64, String> {
    let meta = FileMetaTableBuilder::new()
        .transfer_syntax(transfer_syntax)
        .implementation_class_uid(IMPLEMENTATION_CLASS_UID)
        .implementation_version_name(version_name);
    let file = object.with_meta(meta).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    file.write_all(&mut bytes).map_err(|e| e.to_string())?;
    crate::fsx::write_atomic(path, &bytes).map_err(|e| e.to_string())?;
    Ok(bytes.len() as u64)
}
