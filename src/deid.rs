//! De-identification by construction: keyed pseudonyms (HMAC-SHA256 with a site key) for every
//! identifier that reaches a shard, and keyed per-patient date shifts so that only day offsets
//! are stored. The same functions serve `pack` and the label import, so keys always meet.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Bytes of key material in a site key file (stored as hex, one line).
pub const SITE_KEY_BYTES: usize = 32;
/// Hex characters kept from an HMAC for a pseudonym (128 bits).
pub const PSEUDONYM_HEX_LEN: usize = 32;
/// Hex characters of the key fingerprint stored in every shard.
pub const FINGERPRINT_HEX_LEN: usize = 16;
/// Reference dates are spread over this many days before the study date epoch (about 100 years),
/// so the stored offsets reveal nothing about the calendar.
const DATE_SHIFT_RANGE_DAYS: u64 = 36_525;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("site key file {path} does not exist; pass --create-key to create it (mode 0600)")]
    Missing { path: PathBuf },
    #[error("cannot read site key file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot create site key file {path}: {source}")]
    Create { path: PathBuf, source: std::io::Error },
    #[error("site key file {path} is malformed: expected {expected} hex characters on one line")]
    Malformed { path: PathBuf, expected: usize },
    #[error("site key file {path} is readable by group or others (mode {mode:o}); run `chmod 600 {path}`")]
    Permissions { path: PathBuf, mode: u32 },
    #[error(
        "site key mismatch: {what} was made with key {expected}, but {path} has fingerprint {found}; \
         use the site key that made it"
    )]
    Mismatch {
        what: String,
        expected: String,
        found: String,
        path: PathBuf,
    },
}

/// Kinds of identifier that are pseudonymised; the kind is part of the HMAC message, so the same
/// string used as a patient ID and as a UID never yields the same pseudonym.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdKind {
    Patient,
    Study,
    Series,
    Instance,
    /// A source file path (quarantine reports name files by this, never by path).
    Path,
    FrameOfReference,
}

impl IdKind {
    fn tag(self) -> &'static str {
        match self {
            IdKind::Patient => "patient",
            IdKind::Study => "study",
            IdKind::Series => "series",
            IdKind::Instance => "instance",
            IdKind::Path => "path",
            IdKind::FrameOfReference => "frame-of-reference",
        }
    }
}

/// The site's secret key. Never logged; only its fingerprint leaves this struct.
#[derive(Clone)]
pub struct SiteKey {
    bytes: [u8; SITE_KEY_BYTES],
    path: PathBuf,
}

impl std::fmt::Debug for SiteKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SiteKey({})", self.fingerprint())
    }
}

impl SiteKey {
    /// Loads the key at `path`; creates it (mode 0600, from the OS random source) when `create`
    /// is set and the file does not exist yet.
    pub fn load_or_create(path: &Path, create: bool) -> Result<SiteKey, KeyError> {
        if !path.exists() {
            if !create {
                return Err(KeyError::Missing {
                    path: path.to_path_buf(),
                });
            }
            Self::create(path)?;
        }
        Self::load(path)
    }

    pub fn load(path: &Path) -> Result<SiteKey, KeyError> {
        let read_err = |source| KeyError::Read {
            path: path.to_path_buf(),
            source,
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(path).map_err(read_err)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(KeyError::Permissions {
                    path: path.to_path_buf(),
                    mode,
                });
            }
        }
        let text = fs::read_to_string(path).map_err(read_err)?;
        let malformed = || KeyError::Malformed {
            path: path.to_path_buf(),
            expected: SITE_KEY_BYTES * 2,
        };
        let decoded = hex::decode(text.trim()).map_err(|_| malformed())?;
        let bytes: [u8; SITE_KEY_BYTES] = decoded.try_into().map_err(|_| malformed())?;
        Ok(SiteKey {
            bytes,
            path: path.to_path_buf(),
        })
    }

    fn create(path: &Path) -> Result<(), KeyError> {
        let create_err = |source| KeyError::Create {
            path: path.to_path_buf(),
            source,
        };
        let mut bytes = [0u8; SITE_KEY_BYTES];
        let mut urandom = fs::File::open("/dev/urandom").map_err(create_err)?;
        std::io::Read::read_exact(&mut urandom, &mut bytes).map_err(create_err)?;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(create_err)?;
        }
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path).map_err(create_err)?;
        writeln!(file, "{}", hex::encode(bytes)).map_err(create_err)?;
        file.sync_all().map_err(create_err)?;
        Ok(())
    }

    /// A key made from fixed bytes (tests and the phantom's documented demo key).
    pub fn from_bytes(bytes: [u8; SITE_KEY_BYTES]) -> SiteKey {
        SiteKey {
            bytes,
            path: PathBuf::from("<memory>"),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn mac(&self, domain: &str, value: &[u8]) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.bytes).expect("any key length");
        mac.update(domain.as_bytes());
        mac.update(b":");
        mac.update(value);
        mac.finalize().into_bytes().into()
    }

    /// Public fingerprint of the key: stored in shards, catalogs and label sets so that a later
    /// run with another key is refused.
    pub fn fingerprint(&self) -> String {
        hex::encode(self.mac("fingerprint", b""))[..FINGERPRINT_HEX_LEN].to_string()
    }

    /// Keyed pseudonym of an identifier (surrounding whitespace and NUL padding ignored, as DICOM
    /// pads values).
    pub fn pseudonym(&self, kind: IdKind, value: &str) -> String {
        let value = value.trim_matches(|c: char| c.is_whitespace() || c == '\0');
        hex::encode(self.mac(kind.tag(), value.as_bytes()))[..PSEUDONYM_HEX_LEN].to_string()
    }

    /// The patient's reference date as days since 1970-01-01: a keyed pseudo-random date, so that
    /// stored day offsets keep intervals exact but reveal no calendar date.
    pub fn reference_day(&self, patient_id: &str) -> i64 {
        let patient_id = patient_id.trim_matches(|c: char| c.is_whitespace() || c == '\0');
        let mac = self.mac("reference-date", patient_id.as_bytes());
        let shift = u64::from_le_bytes(mac[..8].try_into().expect("8 bytes")) % DATE_SHIFT_RANGE_DAYS;
        // Reference dates fall between 1870 and 1970: before any DICOM study date.
        -(shift as i64) - 1
    }

    /// Day offset of a calendar date (YYYYMMDD) from the patient's reference date.
    pub fn day_offset(&self, patient_id: &str, yyyymmdd: &str) -> Option<i32> {
        let day = days_from_dicom_date(yyyymmdd)?;
        i32::try_from(day - self.reference_day(patient_id)).ok()
    }

    /// Refuses to go on when an artefact (shard, catalog, label set) carries another fingerprint.
    pub fn check_fingerprint(&self, what: &str, expected: &str) -> Result<(), KeyError> {
        let found = self.fingerprint();
        if found == expected {
            Ok(())
        } else {
            Err(KeyError::Mismatch {
                what: what.to_string(),
                expected: expected.to_string(),
                found,
                path: self.path.clone(),
            })
        }
    }
}

/// Days since 1970-01-01 of a DICOM DA value (YYYYMMDD; also the ACR-NEMA form YYYY.MM.DD).
pub fn days_from_dicom_date(value: &str) -> Option<i64> {
    let digits: String = value.trim().chars().filter(|c| *c != '.').collect();
    if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let y: i64 = digits[0..4].parse().ok()?;
    let m: i64 = digits[4..6].parse().ok()?;
    let d: i64 = digits[6..8].parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    Some(days_from_civil(y, m, d))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_days_match_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_dicom_date("20000301"), Some(11_017));
        assert_eq!(days_from_dicom_date("2000.03.01"), Some(11_017));
        assert_eq!(days_from_dicom_date("2000031"), None);
    }

    #[test]
    fn pseudonyms_depend_on_key_and_kind() {
        let a = SiteKey::from_bytes([1; SITE_KEY_BYTES]);
        let b = SiteKey::from_bytes([2; SITE_KEY_BYTES]);
        assert_ne!(
            a.pseudonym(IdKind::Patient, "P1"),
            b.pseudonym(IdKind::Patient, "P1")
        );
        assert_ne!(
            a.pseudonym(IdKind::Patient, "P1"),
            a.pseudonym(IdKind::Study, "P1")
        );
        assert_eq!(
            a.pseudonym(IdKind::Patient, "P1 "),
            a.pseudonym(IdKind::Patient, "P1")
        );
        assert_eq!(a.pseudonym(IdKind::Patient, "P1").len(), PSEUDONYM_HEX_LEN);
    }

    #[test]
    fn day_offsets_keep_intervals() {
        let k = SiteKey::from_bytes([7; SITE_KEY_BYTES]);
        let d0 = k.day_offset("P9", "20010105").unwrap();
        let d1 = k.day_offset("P9", "20020105").unwrap();
        assert_eq!(d1 - d0, 365);
        assert!(d0 > 0);
    }
}
