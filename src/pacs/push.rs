//! `medtrain push DIR --to URL --out DIR`: stores DICOM objects (the SEGs `predict` writes) in an
//! archive with STOW-RS, one object per request.
//!
//! - The files are every `*.dcm` under DIR, in path order; each must parse as DICOM with a
//!   SOPInstanceUID, else it is recorded as failed and not sent.
//! - `push-manifest.json` in `--out` records each file's SOPInstanceUID, BLAKE3 and outcome, and is
//!   rewritten (atomically) after every file. A rerun sends only what is not recorded as stored
//!   with the same content, so a push stopped midway (killed, the archive gone) completes without
//!   sending anything twice. A manifest belongs to one archive: pushing to another with the same
//!   `--out` is refused.
//! - Credentials, TLS and redirects follow `pack --from`: credentials from the environment or
//!   `--auth-file`, never the command line; TLS always verified (`--ca-file` for a site CA); no
//!   redirect followed. Credentials refused (401/403) stop the push at once: exit 2.

use super::client::{ClientOptions, DicomWebClient, FetchError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const MANIFEST: &str = "push-manifest.json";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PushStatus {
    Stored,
    Failed,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PushEntry {
    pub sop_instance_uid: Option<String>,
    pub blake3: String,
    pub status: PushStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Requests made for it, retries included (this run).
    pub attempts: u32,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PushManifest {
    /// The archive (credentials never recorded).
    pub url: String,
    /// By path relative to the pushed directory.
    pub files: BTreeMap<String, PushEntry>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct PushReport {
    pub files: usize,
    pub sent: usize,
    pub stored: usize,
    /// Already stored by an earlier run, with the same content: not sent again.
    pub skipped: usize,
    pub failed: usize,
    pub manifest: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("{0}")]
    Usage(String),
    #[error("the archive refused the credentials (HTTP {0}); nothing more was sent")]
    Credentials(u16),
    #[error("{0}")]
    Io(String),
}

fn dicom_files(dir: &Path) -> Result<Vec<PathBuf>, PushError> {
    if !dir.is_dir() {
        return Err(PushError::Usage(format!("{} is not a directory", dir.display())));
    }
    let mut files: Vec<PathBuf> = walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .map(|e| e.into_path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e.eq_ignore_ascii_case("dcm")))
        .collect();
    files.sort();
    Ok(files)
}

fn save(path: &Path, m: &PushManifest) -> Result<(), PushError> {
    let text = serde_json::to_string_pretty(m).expect("serialisable");
    crate::fsx::write_atomic(path, text.as_bytes())
        .map_err(|e| PushError::Io(format!("{}: {e}", path.display())))
}

/// Pushes every `*.dcm` under `dir` to the archive of `client`, recording outcomes under `out`.
pub fn run_push(dir: &Path, client: &ClientOptions, out: &Path) -> Result<PushReport, PushError> {
    let files = dicom_files(dir)?;
    let http = DicomWebClient::new(client).map_err(|e| PushError::Usage(e.to_string()))?;
    std::fs::create_dir_all(out).map_err(|e| PushError::Io(format!("{}: {e}", out.display())))?;
    let path = out.join(MANIFEST);
    let mut manifest: PushManifest = match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| PushError::Usage(format!("{}: not a push manifest: {e}", path.display())))?,
        Err(_) => PushManifest::default(),
    };
    if !manifest.url.is_empty() && manifest.url != http.base() {
        return Err(PushError::Usage(format!(
            "{} records pushes to {}, not {}: give another --out for another archive",
            path.display(),
            manifest.url,
            http.base()
        )));
    }
    manifest.url = http.base().to_string();
    let mut report = PushReport {
        files: files.len(),
        manifest: path.clone(),
        ..Default::default()
    };
    for file in &files {
        let name = file
            .strip_prefix(dir)
            .unwrap_or(file)
            .to_string_lossy()
            .to_string();
        let bytes = std::fs::read(file).map_err(|e| PushError::Io(format!("{}: {e}", file.display())))?;
        let hash = blake3::hash(&bytes).to_hex().to_string();
        if manifest
            .files
            .get(&name)
            .is_some_and(|e| e.status == PushStatus::Stored && e.blake3 == hash)
        {
            report.skipped += 1;
            continue;
        }
        let sop = crate::dicom::read::open_header_checked_bytes(file, &bytes)
            .map_err(|e| e.to_string())
            .and_then(|o| {
                o.object
                    .element(dicom_dictionary_std::tags::SOP_INSTANCE_UID)
                    .ok()
                    .and_then(|e| e.to_str().ok())
                    .map(|v| v.trim_end_matches(['\0', ' ']).to_string())
                    .ok_or_else(|| "no SOPInstanceUID".to_string())
            });
        let entry = match sop {
            Err(reason) => PushEntry {
                sop_instance_uid: None,
                blake3: hash,
                status: PushStatus::Failed,
                reason: Some(format!("not sent: {reason}")),
                attempts: 0,
            },
            Ok(uid) => {
                report.sent += 1;
                match http.store(&bytes) {
                    Ok(attempts) => PushEntry {
                        sop_instance_uid: Some(uid),
                        blake3: hash,
                        status: PushStatus::Stored,
                        reason: None,
                        attempts,
                    },
                    Err((e, _)) if e.is_auth() => {
                        save(&path, &manifest)?;
                        return Err(PushError::Credentials(e.status().unwrap_or(401)));
                    }
                    Err((e, attempts)) => PushEntry {
                        sop_instance_uid: Some(uid),
                        blake3: hash,
                        status: PushStatus::Failed,
                        reason: Some(describe(&e)),
                        attempts,
                    },
                }
            }
        };
        match entry.status {
            PushStatus::Stored => report.stored += 1,
            PushStatus::Failed => {
                report.failed += 1;
                tracing::warn!(file = %name, reason = entry.reason.as_deref().unwrap_or(""), "not stored");
            }
        }
        manifest.files.insert(name, entry);
        save(&path, &manifest)?;
    }
    Ok(report)
}

fn describe(e: &FetchError) -> String {
    match e {
        FetchError::Status { status } => format!("the archive answered HTTP {status}"),
        other => other.to_string(),
    }
}
