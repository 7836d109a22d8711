//! The `pack --from` flags and their run: credentials and CA from flags, config or environment;
//! the report printed like `pack`'s. Exit status: 0 packed (or nothing matched, with a warning),
//! 1 some series quarantined, 2 bad URL, credentials refused, unreadable CA/credentials/CSV file.

use super::auth::Credentials;
use super::client::ClientOptions;
use super::pull::{run_pull_ranks, PullOptions, PullReport, DEFAULT_CONCURRENCY};
use super::query::SeriesQuery;
use crate::config::PackConfig;
use crate::dist::World;
use crate::exit::{usage, Failure, EXIT_FAILURES, EXIT_OK};
use crate::pack::cli::print_pack_summary;
use crate::pack::run::PackOptions;
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args, Debug, Default)]
pub struct ArchiveArgs {
    /// Pack from a DICOMweb archive at this base URL (QIDO-RS/WADO-RS) instead of directories.
    /// Credentials: MEDTRAIN_DICOMWEB_USER/_PASSWORD or MEDTRAIN_DICOMWEB_TOKEN, or --auth-file.
    #[arg(long, value_name = "URL")]
    pub from: Option<String>,
    /// Only series of this modality (e.g. CT).
    #[arg(long, requires = "from")]
    pub modality: Option<String>,
    /// Only studies of this date or range: YYYYMMDD or YYYYMMDD-YYYYMMDD.
    #[arg(long, requires = "from")]
    pub study_date: Option<String>,
    /// Only this study (repeatable).
    #[arg(long, requires = "from")]
    pub study_uid: Vec<String>,
    /// Only this series (repeatable).
    #[arg(long, requires = "from")]
    pub series_uid: Vec<String>,
    /// CSV with an AccessionNumber or StudyInstanceUID column selecting the studies.
    #[arg(long, requires = "from")]
    pub query_csv: Option<PathBuf>,
    /// Concurrent WADO-RS requests.
    #[arg(long, requires = "from", default_value_t = DEFAULT_CONCURRENCY)]
    pub concurrency: usize,
    /// Retries of a request that failed with 5xx, 408, 429 or a broken connection.
    #[arg(long, requires = "from", default_value_t = 4)]
    pub retries: u32,
    /// Seconds one request (a whole series) may take.
    #[arg(long, requires = "from", default_value_t = 300)]
    pub timeout: u64,
    /// Credentials file: one line `user:password` or `bearer TOKEN`.
    #[arg(long, requires = "from")]
    pub auth_file: Option<PathBuf>,
    /// PEM file with the archive's CA certificate(s) (default: the bundled web PKI roots).
    #[arg(long, requires = "from")]
    pub ca_file: Option<PathBuf>,
}

/// Runs `pack --from` with the pack options already resolved.
pub fn pull(
    world: &World,
    args: ArchiveArgs,
    pack: PackOptions,
    config: &PackConfig,
    json: bool,
) -> Result<i32, Failure> {
    let url = args.from.unwrap_or_default();
    if args.concurrency == 0 {
        return Err(usage("--concurrency must be at least 1"));
    }
    let auth_file = args.auth_file.or_else(|| config.auth_file.clone());
    let credentials = Credentials::load(auth_file.as_deref()).map_err(usage)?;
    let mut client = ClientOptions::new(&url);
    client.credentials = credentials;
    client.ca_file = args.ca_file.or_else(|| config.ca_file.clone());
    client.retries = args.retries;
    client.timeout = Duration::from_secs(args.timeout.max(1));
    let opts = PullOptions {
        pack,
        client,
        query: SeriesQuery {
            modality: args.modality,
            study_date: args.study_date,
            study_uids: args.study_uid,
            series_uids: args.series_uid,
            query_csv: args.query_csv,
        },
        concurrency: args.concurrency,
    };
    let report = run_pull_ranks(world, &opts).map_err(|e| {
        if e.is_usage() {
            usage(e)
        } else {
            Failure::Job(e.to_string())
        }
    })?;
    // Every rank has the same report; rank 0 prints it.
    if world.rank() == 0 {
        print_report(&report, &url, &opts.pack.out, json);
    }
    Ok(if report.pack.quarantined_entries > 0 {
        EXIT_FAILURES
    } else {
        EXIT_OK
    })
}

fn print_report(report: &PullReport, url: &str, out: &std::path::Path, json: bool) {
    if report.series_matched == 0 {
        eprintln!(
            "warning: the query matched no series in {}; nothing packed",
            super::client::display_url(url)
        );
    }
    if json {
        println!("{}", serde_json::to_string_pretty(report).expect("serialisable"));
    } else if report.series_matched > 0 {
        println!(
            "fetched {} of {} series ({} objects, {:.1} MB); {} already packed, {} failed",
            report.series_fetched,
            report.series_matched,
            report.instances_fetched,
            report.bytes_fetched as f64 / 1e6,
            report.series_already_packed,
            report.series_failed
        );
        print_pack_summary(&report.pack, out);
    }
}

/// `medtrain push DIR --to URL --out DIR`.
#[derive(clap::Args, Debug)]
pub struct PushArgs {
    /// Directory of DICOM objects to store (every `*.dcm` under it, e.g. predict's `seg/`).
    #[arg(required = true, num_args = 1)]
    pub inputs: Vec<PathBuf>,
    /// The archive's DICOMweb base URL (STOW-RS). Credentials: MEDTRAIN_DICOMWEB_USER/_PASSWORD or
    /// MEDTRAIN_DICOMWEB_TOKEN, or --auth-file.
    #[arg(long, value_name = "URL")]
    pub to: String,
    /// Where push-manifest.json goes (a rerun sends only what it does not record as stored).
    #[arg(long)]
    pub out: PathBuf,
    /// Retries of a request that failed with 5xx, 408, 429 or a broken connection.
    #[arg(long, default_value_t = 4)]
    pub retries: u32,
    /// Seconds one request may take.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
    /// Credentials file: one line `user:password` or `bearer TOKEN`.
    #[arg(long)]
    pub auth_file: Option<PathBuf>,
    /// PEM file with the archive's CA certificate(s) (default: the bundled web PKI roots).
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Config file: `[pack] auth_file` and `ca_file` apply when the flags are not given.
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

/// Exit status: 0 everything stored, 1 some files not stored (recorded with the reason), 2 bad URL,
/// credentials refused, unreadable input or manifest.
pub fn push(args: PushArgs) -> Result<i32, Failure> {
    let config = crate::config::Config::load(args.config.as_deref()).map_err(usage)?;
    let auth_file = args.auth_file.or_else(|| config.pack.auth_file.clone());
    let credentials = Credentials::load(auth_file.as_deref()).map_err(usage)?;
    let mut client = ClientOptions::new(&args.to);
    client.credentials = credentials;
    client.ca_file = args.ca_file.or_else(|| config.pack.ca_file.clone());
    client.retries = args.retries;
    client.timeout = Duration::from_secs(args.timeout.max(1));
    let report = super::push::run_push(&args.inputs[0], &client, &args.out).map_err(|e| match e {
        super::push::PushError::Io(m) => Failure::Job(m),
        other => usage(other),
    })?;
    if args.json {
        println!("{}", serde_json::to_string(&report).expect("serialisable"));
    } else {
        println!(
            "push: {} files: {} stored, {} already stored, {} failed; {}",
            report.files,
            report.stored,
            report.skipped,
            report.failed,
            report.manifest.display()
        );
    }
    Ok(if report.failed > 0 { EXIT_FAILURES } else { EXIT_OK })
}
