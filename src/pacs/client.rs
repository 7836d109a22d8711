//! The HTTP side of a DICOMweb archive: one `ureq` agent (rustls; certificates verified against the
//! bundled web PKI roots or a site CA), QIDO-RS JSON searches and WADO-RS series retrieval, with
//! retries and exponential backoff for failures that may pass (5xx, 408, 429, broken connections).
//! URLs carry UIDs, so neither they nor credentials are ever logged; callers name series by pseudonym.

use super::auth::Credentials;
use super::multipart::{boundary_of, MultipartError, MultipartReader};
use rand::Rng;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Media type of QIDO-RS results.
const DICOM_JSON: &str = "application/dicom+json";
/// What WADO-RS is asked for: whole Part 10 objects, one per part, as stored (no transcoding).
const MULTIPART_DICOM_AS_STORED: &str = "multipart/related; type=\"application/dicom\"; transfer-syntax=*";
/// The same without the transfer syntax, for archives that refuse `*` (406); they send their
/// default (Explicit VR Little Endian for uncompressed objects).
const MULTIPART_DICOM: &str = "multipart/related; type=\"application/dicom\"";
/// A QIDO-RS JSON response larger than this is refused (bytes).
const MAX_JSON_BYTES: u64 = 256 << 20;
/// Backoff never waits longer than this between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How to reach the archive.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// The DICOMweb root, e.g. `https://pacs.example.org/dicom-web`.
    pub base_url: String,
    pub credentials: Credentials,
    /// PEM file with the site's CA certificate(s); the web PKI roots when `None`.
    pub ca_file: Option<PathBuf>,
    /// Limit for one whole request, response body included.
    pub timeout: Duration,
    /// Further attempts after a failure that may pass.
    pub retries: u32,
    /// First backoff; doubled per attempt, with jitter.
    pub backoff: Duration,
}

impl ClientOptions {
    pub fn new(base_url: &str) -> ClientOptions {
        ClientOptions {
            base_url: base_url.to_string(),
            credentials: Credentials::Anonymous,
            ca_file: None,
            timeout: Duration::from_secs(300),
            retries: 4,
            backoff: Duration::from_millis(500),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("archive URL {0:?} is not an http:// or https:// URL")]
    BadUrl(String),
    #[error(
        "archive URL must not carry credentials; use {} / {} or --auth-file",
        super::auth::ENV_USER,
        super::auth::ENV_PASSWORD
    )]
    CredentialsInUrl,
    #[error("CA file {path}: {reason}")]
    CaFile { path: PathBuf, reason: String },
}

/// Why one request failed (after its retries). The text never holds the URL.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    #[error("HTTP status {status}")]
    Status { status: u16 },
    #[error("connection failed: {0}")]
    Transport(String),
    #[error("unexpected response: {0}")]
    Protocol(String),
}

impl FetchError {
    pub fn status(&self) -> Option<u16> {
        match self {
            FetchError::Status { status } => Some(*status),
            _ => None,
        }
    }

    /// The server refused our credentials.
    pub fn is_auth(&self) -> bool {
        matches!(self.status(), Some(401 | 403))
    }

    /// Worth another attempt: server errors, timeouts, rate limits, broken connections.
    pub fn is_transient(&self) -> bool {
        match self {
            FetchError::Status { status } => *status >= 500 || matches!(status, 408 | 429),
            FetchError::Transport(_) => true,
            FetchError::Protocol(_) => false,
        }
    }
}

fn transport(e: ureq::Error) -> FetchError {
    match e {
        ureq::Error::StatusCode(status) => FetchError::Status { status },
        other => FetchError::Transport(other.to_string()),
    }
}

fn multipart_error(e: MultipartError) -> FetchError {
    match e {
        // A body cut short is a broken connection: worth another attempt.
        MultipartError::Io(_) | MultipartError::Truncated(_) => FetchError::Transport(e.to_string()),
        other => FetchError::Protocol(other.to_string()),
    }
}

/// One series as retrieved: its objects' bytes in the order the archive sent them.
pub struct FetchedSeries {
    pub instances: Vec<Vec<u8>>,
    /// Bytes received in the multipart body (the last attempt's).
    pub bytes: u64,
    /// Attempts made (1 without retries).
    pub attempts: u32,
}

pub struct DicomWebClient {
    agent: ureq::Agent,
    base: String,
    authorization: Option<String>,
    retries: u32,
    backoff: Duration,
}

/// The base URL as it may be written to reports: scheme, host, port and path, no query.
pub fn display_url(base: &str) -> String {
    base.split(['?', '#'])
        .next()
        .unwrap_or_default()
        .trim_end_matches('/')
        .to_string()
}

fn root_certs(path: &Path) -> Result<ureq::tls::RootCerts, ClientError> {
    let bad = |reason: String| ClientError::CaFile {
        path: path.to_path_buf(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        if let ureq::tls::PemItem::Certificate(c) = item.map_err(|e| bad(e.to_string()))? {
            certs.push(c);
        }
    }
    if certs.is_empty() {
        return Err(bad("no PEM certificate in it".into()));
    }
    Ok(ureq::tls::RootCerts::Specific(Arc::new(certs)))
}

impl DicomWebClient {
    pub fn new(opts: &ClientOptions) -> Result<DicomWebClient, ClientError> {
        let base = display_url(&opts.base_url);
        let rest = base
            .strip_prefix("https://")
            .or_else(|| base.strip_prefix("http://"))
            .ok_or_else(|| ClientError::BadUrl(base.clone()))?;
        let authority = rest.split('/').next().unwrap_or_default();
        if authority.contains('@') {
            return Err(ClientError::CredentialsInUrl);
        }
        if authority.is_empty() {
            return Err(ClientError::BadUrl(base.clone()));
        }
        let mut tls = ureq::tls::TlsConfig::builder();
        if let Some(path) = &opts.ca_file {
            tls = tls.root_certs(root_certs(path)?);
        }
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(opts.timeout))
            .timeout_connect(Some(opts.timeout.min(Duration::from_secs(30))))
            // A redirect could carry the Authorization header to another host.
            .max_redirects(0)
            .tls_config(tls.build())
            .user_agent(concat!("medtrain/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(DicomWebClient {
            agent: config.into(),
            base,
            authorization: opts.credentials.header(),
            retries: opts.retries,
            backoff: opts.backoff,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn get(
        &self,
        path_and_query: &str,
        accept: &str,
    ) -> Result<ureq::http::Response<ureq::Body>, FetchError> {
        let mut req = self
            .agent
            .get(format!("{}{path_and_query}", self.base))
            .header("Accept", accept);
        if let Some(auth) = &self.authorization {
            req = req.header("Authorization", auth);
        }
        let resp = req.call().map_err(transport)?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            return Err(FetchError::Status { status });
        }
        Ok(resp)
    }

    /// Runs `attempt` until it succeeds, fails for good, or the retries are spent.
    fn with_retries<T>(
        &self,
        mut attempt: impl FnMut() -> Result<T, FetchError>,
    ) -> Result<(T, u32), (FetchError, u32)> {
        let mut tries = 0;
        loop {
            tries += 1;
            match attempt() {
                Ok(v) => return Ok((v, tries)),
                Err(e) if e.is_transient() && tries <= self.retries => {
                    let wait = self
                        .backoff
                        .saturating_mul(1 << (tries - 1).min(16))
                        .min(MAX_BACKOFF);
                    let jitter = rand::thread_rng().gen_range(0.5..1.5);
                    tracing::debug!(attempt = tries, "request failed ({e}); retrying");
                    std::thread::sleep(wait.mul_f64(jitter));
                }
                Err(e) => return Err((e, tries)),
            }
        }
    }

    /// A QIDO-RS search: `path` (e.g. `/studies`) with `query` parameters, every page of it
    /// (`limit`/`offset`), as DICOM JSON objects.
    pub fn search(
        &self,
        path: &str,
        query: &[(&str, String)],
        page: usize,
    ) -> Result<Vec<serde_json::Value>, FetchError> {
        let mut all = Vec::new();
        loop {
            let mut params: Vec<String> = query
                .iter()
                .map(|(k, v)| format!("{k}={}", encode_query(v)))
                .collect();
            params.push(format!("limit={page}"));
            params.push(format!("offset={}", all.len()));
            let url = format!("{path}?{}", params.join("&"));
            let (batch, _) = self
                .with_retries(|| {
                    let resp = match self.get(&url, DICOM_JSON) {
                        Ok(r) => r,
                        // Some archives answer an empty search with 204 No Content.
                        Err(FetchError::Status { status: 204 }) => return Ok(Vec::new()),
                        Err(e) => return Err(e),
                    };
                    if resp.status().as_u16() == 204 {
                        return Ok(Vec::new());
                    }
                    let reader = resp.into_body().into_with_config().limit(MAX_JSON_BYTES).reader();
                    let value: serde_json::Value = serde_json::from_reader(reader)
                        .map_err(|e| FetchError::Protocol(format!("QIDO-RS result is not JSON: {e}")))?;
                    match value {
                        serde_json::Value::Array(items) => Ok(items),
                        _ => Err(FetchError::Protocol("QIDO-RS result is not a JSON array".into())),
                    }
                })
                .map_err(|(e, _)| e)?;
            let n = batch.len();
            all.extend(batch);
            if n < page {
                return Ok(all);
            }
        }
    }

    /// WADO-RS: every object of one series, read from the multipart stream part by part.
    pub fn fetch_series(
        &self,
        study_uid: &str,
        series_uid: &str,
    ) -> Result<FetchedSeries, (FetchError, u32)> {
        let url = format!(
            "/studies/{}/series/{}",
            encode_query(study_uid),
            encode_query(series_uid)
        );
        self.with_retries(|| {
            let resp = match self.get(&url, MULTIPART_DICOM_AS_STORED) {
                Err(FetchError::Status { status: 406 }) => self.get(&url, MULTIPART_DICOM)?,
                other => other?,
            };
            let content_type = resp
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let boundary = boundary_of(&content_type).map_err(|e| FetchError::Protocol(e.to_string()))?;
            let mut parts = MultipartReader::new(resp.into_body().into_reader(), &boundary);
            let mut instances = Vec::new();
            while let Some(part) = parts.next_part().map_err(multipart_error)? {
                let kind = part.header("content-type").unwrap_or("application/dicom");
                if !kind.to_ascii_lowercase().starts_with("application/dicom") {
                    return Err(FetchError::Protocol(format!(
                        "a part is {kind}, not application/dicom"
                    )));
                }
                instances.push(part.body);
            }
            Ok((instances, parts.bytes_read))
        })
        .map(|((instances, bytes), attempts)| FetchedSeries {
            instances,
            bytes,
            attempts,
        })
    }
}

impl DicomWebClient {
    /// STOW-RS: stores one Part 10 object (`POST {base}/studies`, multipart/related of one
    /// application/dicom part). 200 is stored; 202 is stored only when the response lists no
    /// failed SOP instance (FailedSOPSequence, 0008,1198); anything else is an error (transient ones
    /// are retried).
    pub fn store(&self, dicom: &[u8]) -> Result<u32, (FetchError, u32)> {
        let mut salt = 0u32;
        let boundary = loop {
            let b = format!(
                "medtrain-{}",
                &blake3::hash(&[dicom, &salt.to_le_bytes()].concat()).to_hex()[..24]
            );
            if !dicom.windows(b.len()).any(|w| w == b.as_bytes()) {
                break b;
            }
            salt += 1;
        };
        let mut body = Vec::with_capacity(dicom.len() + 160);
        body.extend_from_slice(format!("--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").as_bytes());
        body.extend_from_slice(dicom);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let content_type = format!("multipart/related; type=\"application/dicom\"; boundary={boundary}");
        self.with_retries(|| {
            let mut req = self
                .agent
                .post(format!("{}/studies", self.base))
                .header("Content-Type", content_type.as_str())
                .header("Accept", DICOM_JSON);
            if let Some(auth) = &self.authorization {
                req = req.header("Authorization", auth);
            }
            let resp = req.send(&body[..]).map_err(transport)?;
            let status = resp.status().as_u16();
            if !(200..300).contains(&status) {
                return Err(FetchError::Status { status });
            }
            if status == 202 {
                let text = resp
                    .into_body()
                    .into_with_config()
                    .limit(MAX_JSON_BYTES)
                    .read_to_string()
                    .unwrap_or_default();
                if text.contains("00081198") {
                    return Err(FetchError::Protocol(format!(
                        "the archive refused the instance (202 with a FailedSOPSequence): {}",
                        text.chars().take(300).collect::<String>()
                    )));
                }
            }
            Ok(())
        })
        .map(|((), attempts)| attempts)
    }
}

/// Percent-encodes a query or path value (UIDs and dates need none; CSV values might).
pub fn encode_query(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_' | b'~' | b',' | b'*' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_failures_are_retried_and_others_are_not() {
        for s in [500, 502, 503, 408, 429] {
            assert!(FetchError::Status { status: s }.is_transient(), "{s}");
        }
        for s in [400, 401, 403, 404, 410] {
            assert!(!FetchError::Status { status: s }.is_transient(), "{s}");
        }
        assert!(FetchError::Transport("reset".into()).is_transient());
        assert!(FetchError::Status { status: 401 }.is_auth());
    }

    #[test]
    fn urls_with_credentials_or_odd_schemes_are_refused() {
        let mut o = ClientOptions::new("http://user:pw@host/dicom-web");
        assert!(matches!(
            DicomWebClient::new(&o),
            Err(ClientError::CredentialsInUrl)
        ));
        o.base_url = "ftp://host".into();
        assert!(matches!(DicomWebClient::new(&o), Err(ClientError::BadUrl(_))));
        o.base_url = "https://host:8443/dicom-web/?x=1".into();
        assert_eq!(
            DicomWebClient::new(&o).unwrap().base(),
            "https://host:8443/dicom-web"
        );
        assert_eq!(encode_query("1.2.3 &x"), "1.2.3%20%26x");
    }
}
