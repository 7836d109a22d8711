//! Experiment settings from a TOML file (`--config FILE`). Unknown keys are errors that name the
//! key and line; command-line flags override the file.

use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid size {value:?} for {key}: use bytes or a suffix like 512MiB, 2GiB")]
    Size { key: &'static str, value: String },
}

/// Settings of `pack`.
#[derive(Clone, Debug, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PackConfig {
    /// Target pixel bytes per shard, e.g. "2GiB".
    pub shard_size: Option<String>,
    /// Site key file.
    pub key: Option<PathBuf>,
    /// `pack --from`: PEM file with the archive's CA certificate(s).
    pub ca_file: Option<PathBuf>,
    /// `pack --from`: credentials file (`user:password` or `bearer TOKEN`).
    pub auth_file: Option<PathBuf>,
}

/// The whole file; each verb reads its own table.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub phantom: Option<toml::Value>,
    pub pack: PackConfig,
    /// Read by `catalog` itself (label import column mappings and the like).
    pub catalog: Option<toml::Value>,
    /// `train`/`eval`/`predict`: the model, its input samples, the sampler, the training run and the
    /// evaluation (typed and validated in `settings`).
    pub model: Option<toml::Value>,
    pub data: Option<toml::Value>,
    pub sampler: Option<toml::Value>,
    pub train: Option<toml::Value>,
    pub eval: Option<toml::Value>,
    /// `stage`: node-local staging (typed in `stage::cli`).
    pub stage: Option<toml::Value>,
}

impl Config {
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let Some(path) = path else {
            return Ok(Config::default());
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        Config::from_toml(&text, path)
    }

    /// Parses the text of a config file; `path` only names it in errors.
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            message: e.to_string(),
        })
    }
}

/// Parses "123", "512MiB", "2GiB", "1.5GB" into bytes.
pub fn parse_size(key: &'static str, value: &str) -> Result<u64, ConfigError> {
    let err = || ConfigError::Size {
        key,
        value: value.to_string(),
    };
    let v = value.trim();
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let num: f64 = num.parse().map_err(|_| err())?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" => 1e12,
        "tib" => 1024f64.powi(4),
        _ => return Err(err()),
    };
    let bytes = num * mult;
    if !(bytes >= 1.0) || !bytes.is_finite() {
        return Err(err());
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("x", "512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("x", "2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("x", "1000").unwrap(), 1000);
        assert!(parse_size("x", "lots").is_err());
        assert!(parse_size("x", "0").is_err());
    }

    #[test]
    fn unknown_key_is_named() {
        let e = toml::from_str::<Config>("[pack]\nshard_sise = \"1GiB\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("shard_sise"), "{e}");
    }
}
