//! The quarantine report: every file or series that could not be packed, with the stage and the
//! reason. Files are named by keyed pseudonyms of their paths and by content hash, never by path
//! (folder names carry patient IDs); `medtrain pack` logs the real path to the operator's terminal.

use serde::{Deserialize, Serialize};

/// File name of the quarantine report inside a pack directory.
pub const QUARANTINE_FILE: &str = "quarantine.json";

/// Where in the pipeline an input failed.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// The file could not be read or parsed as DICOM.
    Read,
    /// Required attributes are missing or invalid.
    Header,
    /// The series' slices do not form a consistent volume.
    Geometry,
    /// Pixel data could not be decoded or converted.
    Decode,
    /// The series could not be fetched from the archive (`pack --from`).
    Fetch,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct QuarantineEntry {
    pub stage: Stage,
    pub reason: String,
    /// Series pseudonym, when the series is known.
    pub series: Option<String>,
    /// Keyed pseudonyms of the source paths involved.
    pub files: Vec<String>,
    /// BLAKE3 of the files' content (find a file with `b3sum`), in the same order.
    pub content_blake3: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct QuarantineReport {
    pub format: &'static str,
    pub entries: Vec<QuarantineEntry>,
}
