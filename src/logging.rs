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

/// Progress of a long piece of work: a bar on a terminal, otherwise a structured line at most every
/// 10 seconds and one at the end (so batch logs show progress without control characters).
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    what: String,
    len: u64,
    done: u64,
    last: std::time::Instant,
}

impl Progress {
    /// `what` names the work and its unit, e.g. "catalog build: shards".
    pub fn new(what: &str, len: u64) -> Progress {
        let bar = show_progress().then(|| {
            let bar = indicatif::ProgressBar::new(len);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{msg} {bar:30} {pos}/{len}  ETA {eta}")
                    .expect("valid template"),
            );
            bar.set_message(what.to_string());
            bar
        });
        Progress {
            bar,
            what: what.to_string(),
            len,
            done: 0,
            last: std::time::Instant::now(),
        }
    }

    /// A bar or line that shows nothing (ranks other than 0).
    pub fn hidden() -> Progress {
        Progress {
            bar: None,
            what: String::new(),
            len: 0,
            done: 0,
            last: std::time::Instant::now(),
        }
    }

    pub fn inc(&mut self, n: u64) {
        self.done += n;
        if let Some(bar) = &self.bar {
            bar.set_position(self.done);
        } else if !self.what.is_empty() && self.last.elapsed().as_secs() >= 10 {
            self.last = std::time::Instant::now();
            tracing::info!(done = self.done, of = self.len, "{}", self.what);
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        } else if !self.what.is_empty() {
            tracing::info!(done = self.done, of = self.len, "{}: done", self.what);
        }
    }
}
