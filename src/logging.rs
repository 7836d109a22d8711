//! Logging set-up: human-readable lines on stderr by default, JSON lines with `--log-format json`.
//! `RUST_LOG` overrides the level (`info` by default, `debug` with `-v`).

use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

pub fn init(format: LogFormat, verbose: bool, quiet: bool) {
    let default = if quiet {
        "warn"
    } else if verbose {
        "debug"
    } else {
        "info"
    };
    // Third-party decoders log every tile at info level: keep them to warnings.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{default},jpeg2k=warn,openjp2=warn")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Human => builder
            .with_ansi(std::io::stderr().is_terminal())
            .with_target(false)
            .try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Progress bars only make sense for a person watching a terminal.
pub fn show_progress() -> bool {
    std::io::stderr().is_terminal()
}
