//! Credentials for the archive: basic auth or a bearer token, read from the environment or from a
//! file, never from the command line (it shows in `ps` and shell history) and never logged.

use base64::Engine;
use std::path::{Path, PathBuf};

/// User name for basic auth.
pub const ENV_USER: &str = "MEDTRAIN_DICOMWEB_USER";
/// Password for basic auth (with `ENV_USER`).
pub const ENV_PASSWORD: &str = "MEDTRAIN_DICOMWEB_PASSWORD";
/// A bearer token.
pub const ENV_TOKEN: &str = "MEDTRAIN_DICOMWEB_TOKEN";

/// How requests authenticate. `Debug` never shows the secret.
#[derive(Clone, Default)]
pub enum Credentials {
    #[default]
    Anonymous,
    Basic {
        user: String,
        password: String,
    },
    Bearer(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.kind())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read the credentials file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("credentials file {path}: {reason} (expected one line `user:password` or `bearer TOKEN`)")]
    Format { path: PathBuf, reason: &'static str },
    #[error("{ENV_USER} is set but {ENV_PASSWORD} is not (or the reverse); set both for basic auth")]
    HalfBasic,
}

impl Credentials {
    /// What kind of credentials these are, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Credentials::Anonymous => "anonymous",
            Credentials::Basic { .. } => "basic",
            Credentials::Bearer(_) => "bearer token",
        }
    }

    /// From `file` when given, else from the environment (token first, then user and password).
    pub fn load(file: Option<&Path>) -> Result<Credentials, AuthError> {
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            return Self::parse(&text).map_err(|reason| AuthError::Format {
                path: path.to_path_buf(),
                reason,
            });
        }
        let var = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
        if let Some(token) = var(ENV_TOKEN) {
            return Ok(Credentials::Bearer(token));
        }
        match (var(ENV_USER), var(ENV_PASSWORD)) {
            (Some(user), Some(password)) => Ok(Credentials::Basic { user, password }),
            (None, None) => Ok(Credentials::Anonymous),
            _ => Err(AuthError::HalfBasic),
        }
    }

    /// The first non-blank line of a credentials file: `bearer TOKEN` or `user:password`.
    pub fn parse(text: &str) -> Result<Credentials, &'static str> {
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .ok_or("the file is empty")?;
        if let Some((scheme, token)) = line.split_once(char::is_whitespace) {
            if scheme.eq_ignore_ascii_case("bearer") {
                let token = token.trim();
                if token.is_empty() {
                    return Err("empty bearer token");
                }
                return Ok(Credentials::Bearer(token.to_string()));
            }
        }
        match line.split_once(':') {
            Some((user, password)) if !user.is_empty() => Ok(Credentials::Basic {
                user: user.to_string(),
                password: password.to_string(),
            }),
            _ => Err("no `user:password` or `bearer TOKEN`"),
        }
    }

    /// The `Authorization` header value, if any.
    pub fn header(&self) -> Option<String> {
        match self {
            Credentials::Anonymous => None,
            Credentials::Basic { user, password } => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            )),
            Credentials::Bearer(token) => Some(format!("Bearer {token}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_forms_and_header_values() {
        let basic = Credentials::parse("\n  alice:s3:cret \n").unwrap();
        // RFC 7617 example encoding of "Aladdin:open sesame".
        let aladdin = Credentials::parse("Aladdin:open sesame").unwrap();
        assert_eq!(aladdin.header().unwrap(), "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
        assert!(
            matches!(basic, Credentials::Basic { ref user, ref password } if user == "alice" && password == "s3:cret")
        );
        let bearer = Credentials::parse("Bearer abc.def").unwrap();
        assert_eq!(bearer.header().unwrap(), "Bearer abc.def");
        assert!(Credentials::parse("").is_err());
        assert!(Credentials::parse("bearer   ").is_err());
        assert!(Credentials::parse("no-colon").is_err());
        assert_eq!(format!("{bearer:?}"), "bearer token");
        assert!(!format!("{basic:?}").contains("s3"));
    }
}
