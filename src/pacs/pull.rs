//! `pack --from URL`: the QIDO-RS query selects series; up to `concurrency` WADO-RS requests fetch
//! them while this thread turns each fetched series (in memory, one at a time per request) into
//! pack items through the same header scan, series assembly, decode and shard writer as files.
//! Series already packed are not fetched again; a series that cannot be fetched is quarantined with
//! its pseudonymised URL and HTTP status, and the rest goes on.

use super::client::{display_url, ClientError, ClientOptions, DicomWebClient, FetchError, FetchedSeries};
use super::manifest::{rank_file, FetchManifest, FetchStatus, ManifestError, SeriesEntry, MANIFEST_FILE};
use super::query::{find_series, QueryError, SeriesQuery, SeriesRef};
use crate::deid::{IdKind, SiteKey};
use crate::dicom::header::{read_header, FileKind};
use crate::dicom::read::{open_checked_bytes, open_header_checked_bytes, Opened, ReadError};
use crate::dicom::series::{assemble, PackItem, SourceFile};
use crate::dist::World;
use crate::pack::index::PackIndex;
use crate::pack::journal::commit_journals;
use crate::pack::quarantine::{QuarantineEntry, Stage};
use crate::pack::run::{
    assigned_to, entry, finish_pack, item_entry, load_checked, pack_item_with, prepare_pack, Decoded,
    PackError, PackOptions, PackReport, ShardSink, ShareReport,
};
use rayon::prelude::*;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The rank that queries, prepares the pack directory and commits.
const ROOT: usize = 0;
/// Default number of concurrent WADO-RS requests.
pub const DEFAULT_CONCURRENCY: usize = 4;
/// Test hook: `N:PATH` makes the fetcher create PATH before fetching the series at position N
/// (0-based, among those not yet packed) and wait until PATH is removed, so that a test can change
/// the archive at a known point of the run.
pub const HOLD_ENV: &str = "MEDTRAIN_PACS_HOLD";
/// The hold gives up after this long.
const HOLD_LIMIT: Duration = Duration::from_secs(120);

pub struct PullOptions {
    /// Where and how to pack (`roots` is unused).
    pub pack: PackOptions,
    pub client: ClientOptions,
    pub query: SeriesQuery,
    /// Concurrent WADO-RS requests (at least 1).
    pub concurrency: usize,
}

/// What a pull did.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct PullReport {
    /// Series the query matched.
    pub series_matched: u64,
    /// Series skipped because an earlier run packed them.
    pub series_already_packed: u64,
    pub series_fetched: u64,
    pub series_failed: u64,
    pub instances_fetched: u64,
    pub bytes_fetched: u64,
    pub pack: PackReport,
}

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Auth(#[from] super::auth::AuthError),
    #[error("the archive {url} refused the credentials ({kind}): HTTP {status}; nothing was packed")]
    Refused {
        url: String,
        kind: &'static str,
        status: u16,
    },
    #[error("archive {url}: {source}")]
    Query { url: String, source: QueryError },
    #[error(transparent)]
    Pack(#[from] PackError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// A failure on another MPI rank (or reported through the root).
    #[error("rank {rank}: {reason}")]
    OnRank {
        rank: usize,
        usage: bool,
        reason: String,
    },
}

impl PullError {
    /// Errors in what the command was given (exit status 2): URL, credentials, CA file, query CSV.
    pub fn is_usage(&self) -> bool {
        match self {
            PullError::Client(_) | PullError::Auth(_) | PullError::Refused { .. } => true,
            PullError::Query { source, .. } => matches!(source, QueryError::Csv { .. }),
            PullError::Pack(e) => crate::pack::ranks::is_usage(e),
            PullError::Manifest(_) => false,
            PullError::OnRank { usage, .. } => *usage,
        }
    }
}

/// The query as recorded in the manifest: UIDs only as pseudonyms.
fn query_record(q: &SeriesQuery, key: &SiteKey) -> serde_json::Value {
    let mut v = serde_json::to_value(q).expect("serialisable");
    let pseudo =
        |kind, uids: &[String]| -> Vec<String> { uids.iter().map(|u| key.pseudonym(kind, u)).collect() };
    v["study_uids"] = serde_json::json!(pseudo(IdKind::Study, &q.study_uids));
    v["series_uids"] = serde_json::json!(pseudo(IdKind::Series, &q.series_uids));
    v
}

/// Pulls the query's series into `opts.pack.out` in this process.
pub fn run_pull(opts: &PullOptions) -> Result<PullReport, PullError> {
    run_pull_ranks(&World::single(), opts)
}

/// A step's result as sent between ranks.
#[derive(Serialize, Deserialize)]
enum Outcome<T> {
    Done(T),
    Failed {
        rank: usize,
        usage: bool,
        reason: String,
    },
}

fn encode<T: Serialize>(rank: usize, result: Result<&T, &PullError>) -> Vec<u8> {
    let outcome: Outcome<&T> = match result {
        Ok(v) => Outcome::Done(v),
        Err(e) => Outcome::Failed {
            rank,
            usage: e.is_usage(),
            reason: e.to_string(),
        },
    };
    serde_json::to_vec(&outcome).expect("outcomes serialise")
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, PullError> {
    match serde_json::from_slice(bytes).expect("every rank sends an outcome") {
        Outcome::Done(v) => Ok(v),
        Outcome::Failed { rank, usage, reason } => Err(PullError::OnRank { rank, usage, reason }),
    }
}

/// `step` run on the root, its result given to every rank.
fn on_root<T: Serialize + DeserializeOwned>(
    world: &World,
    step: impl FnOnce() -> Result<T, PullError>,
) -> Result<T, PullError> {
    if world.size() == 1 {
        return step();
    }
    let result = (world.rank() == ROOT).then(step);
    let mut bytes = match &result {
        Some(r) => encode(ROOT, r.as_ref()),
        None => Vec::new(),
    };
    world.broadcast_bytes(ROOT, &mut bytes);
    match result {
        Some(r) => r,
        None => decode(&bytes),
    }
}

/// Pulls the query's series into `opts.pack.out` with every rank of `world` (`opts.pack.rank` and
/// `workers` must be the world's): the root runs the query and prepares the pack directory, every
/// rank fetches and packs series `i` with `assigned_to(i, rank, workers)` into its own shards,
/// journal and manifest, and the root commits them. Returns the same report on every rank; `Ok`
/// with nothing matched (and nothing written) when the query selects no series.
pub fn run_pull_ranks(world: &World, opts: &PullOptions) -> Result<PullReport, PullError> {
    let start = Instant::now();
    let client = DicomWebClient::new(&opts.client)?;
    let url = display_url(client.base());
    let series = on_root(world, || query(&client, opts, &url))?;
    if series.is_empty() {
        return Ok(PullReport::default());
    }
    let key = &opts.pack.key;
    let fingerprint = key.fingerprint();
    let record = query_record(&opts.query, key);
    on_root(world, || {
        prepare_pack(&opts.pack)?;
        FetchManifest::load_or_new(&opts.pack.out, &url, &fingerprint, record.clone())?
            .fold_rank_files(&opts.pack.out)?;
        Ok(())
    })?;
    let share = pull_share(opts, &client, &url, &series, start);
    if world.size() == 1 {
        let (share, pull) = share?;
        return finish_pull(opts, &url, vec![share], vec![pull], series.len());
    }
    if let Err(e) = &share {
        tracing::error!(rank = world.rank(), "pulling this rank's share failed: {e}");
    }
    let gathered = world.gather_bytes(ROOT, &encode(world.rank(), share.as_ref()));
    on_root(world, move || {
        let mut shares = Vec::new();
        let mut pulls = Vec::new();
        let mut failure = None;
        for bytes in gathered.expect("the root gathers") {
            match decode::<(ShareReport, PullReport)>(&bytes) {
                Ok((share, pull)) => {
                    shares.push(share);
                    pulls.push(pull);
                }
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        match failure {
            None => finish_pull(opts, &url, shares, pulls, series.len()),
            Some(e) => {
                // What the other ranks committed stays committed.
                if let Ok(Some(index)) = PackIndex::load(&opts.pack.out) {
                    let _ = commit_journals(&opts.pack.out, index);
                }
                Err(e)
            }
        }
    })
}

fn query(client: &DicomWebClient, opts: &PullOptions, url: &str) -> Result<Vec<SeriesRef>, PullError> {
    find_series(client, &opts.query).map_err(|source| match source.fetch() {
        Some(f) if f.is_auth() => PullError::Refused {
            url: url.to_string(),
            kind: opts.client.credentials.kind(),
            status: f.status().unwrap_or_default(),
        },
        _ => PullError::Query {
            url: url.to_string(),
            source,
        },
    })
}

/// The root, after every rank finished: one pack report (the scan counters summed over the ranks:
/// each scanned only its own series), journals committed, the ranks' manifests folded into one.
fn finish_pull(
    opts: &PullOptions,
    url: &str,
    mut shares: Vec<ShareReport>,
    pulls: Vec<PullReport>,
    matched: usize,
) -> Result<PullReport, PullError> {
    let mut pull = PullReport {
        series_matched: matched as u64,
        ..PullReport::default()
    };
    let mut scan = PackReport::default();
    for (p, s) in pulls.iter().zip(&shares) {
        pull.series_already_packed += p.series_already_packed;
        pull.series_fetched += p.series_fetched;
        pull.series_failed += p.series_failed;
        pull.instances_fetched += p.instances_fetched;
        pull.bytes_fetched += p.bytes_fetched;
        let r = &s.report;
        scan.image_files += r.image_files;
        scan.duplicate_copies_dropped += r.duplicate_copies_dropped;
        scan.items_total += r.items_packed + r.items_already_packed;
        for (k, v) in &r.non_image_skipped {
            *scan.non_image_skipped.entry(k.clone()).or_default() += v;
        }
    }
    if let Some(first) = shares.first_mut() {
        let r = &mut first.report;
        r.files_seen = pull.instances_fetched;
        r.image_files = scan.image_files;
        r.duplicate_copies_dropped = scan.duplicate_copies_dropped;
        r.items_total = scan.items_total;
        r.non_image_skipped = scan.non_image_skipped;
    }
    let (report, _quarantine) = finish_pack(&opts.pack, shares)?;
    let key = &opts.pack.key;
    FetchManifest::load_or_new(
        &opts.pack.out,
        url,
        &key.fingerprint(),
        query_record(&opts.query, key),
    )?
    .fold_rank_files(&opts.pack.out)?;
    pull.pack = report;
    Ok(pull)
}

/// This rank's share of `series`: fetched, scanned, decoded and written to its shards; its manifest
/// entries saved after each series (the shared manifest with one rank, its own file with several).
fn pull_share(
    opts: &PullOptions,
    client: &DicomWebClient,
    url: &str,
    series: &[SeriesRef],
    start: Instant,
) -> Result<(ShareReport, PullReport), PullError> {
    let key = &opts.pack.key;
    let fingerprint = key.fingerprint();
    let index = load_checked(&opts.pack)?;
    let shared =
        FetchManifest::load_or_new(&opts.pack.out, url, &fingerprint, query_record(&opts.query, key))?;
    let (mut manifest, manifest_name) = if opts.pack.workers > 1 {
        let mut own = shared.clone();
        own.series.clear();
        (own, rank_file(opts.pack.rank))
    } else {
        (shared.clone(), MANIFEST_FILE.to_string())
    };
    let mut pull = PullReport::default();
    let mut report = PackReport::default();
    let todo: Vec<&SeriesRef> = series
        .iter()
        .enumerate()
        .filter(|(i, _)| assigned_to(*i, opts.pack.rank, opts.pack.workers))
        .map(|(_, s)| s)
        .filter(|s| {
            let series_key = key.pseudonym(IdKind::Series, &s.series_uid);
            let packed = shared.is_packed(&series_key, |h| index.contains_source(h));
            if packed {
                pull.series_already_packed += 1;
                report.items_already_packed += shared.series[&series_key].sources.len() as u64;
            }
            !packed
        })
        .collect();
    let mut sink = ShardSink::new(&opts.pack, &fingerprint, index, report, Vec::new(), None);
    let next = AtomicUsize::new(0);
    let hold = hold_point();
    let workers = opts.concurrency.clamp(1, todo.len().max(1));
    let outcome: Result<(), PullError> = std::thread::scope(|scope| {
        let (tx, rx) =
            std::sync::mpsc::sync_channel::<(usize, Result<FetchedSeries, (FetchError, u32)>)>(workers);
        for _ in 0..workers {
            let tx = tx.clone();
            let (todo, next, hold) = (&todo, &next, &hold);
            scope.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(s) = todo.get(i) else { break };
                if let Some((at, gate)) = hold {
                    if *at == i {
                        wait_at_gate(gate);
                    }
                }
                if tx
                    .send((i, client.fetch_series(&s.study_uid, &s.series_uid)))
                    .is_err()
                {
                    break;
                }
            });
        }
        drop(tx);
        for (i, fetched) in rx {
            let s = todo[i];
            let entry = match fetched {
                Ok(f) => pack_fetched(&mut sink, key, s, f, &mut pull)?,
                Err((e, attempts)) => fetch_failed(&mut sink, key, url, s, e, attempts, &mut pull),
            };
            manifest.series.insert(entry.series.clone(), entry);
            manifest.save_as(&opts.pack.out, &manifest_name)?;
        }
        Ok(())
    });
    outcome?;
    sink.close()?;
    Ok((sink.finish(start, 0)?, pull))
}

/// The hook's position and gate file, when set.
fn hold_point() -> Option<(usize, PathBuf)> {
    let v = std::env::var(HOLD_ENV).ok()?;
    let (n, path) = v.split_once(':')?;
    Some((n.parse().ok()?, PathBuf::from(path)))
}

fn wait_at_gate(gate: &Path) {
    if std::fs::write(gate, b"held\n").is_err() {
        return;
    }
    let until = Instant::now() + HOLD_LIMIT;
    while gate.exists() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The URL of a series as reports may show it: UIDs replaced by their pseudonyms.
fn series_url(url: &str, key: &SiteKey, s: &SeriesRef) -> String {
    format!(
        "{url}/studies/{}/series/{}",
        key.pseudonym(IdKind::Study, &s.study_uid),
        key.pseudonym(IdKind::Series, &s.series_uid)
    )
}

fn manifest_entry(key: &SiteKey, s: &SeriesRef, status: FetchStatus) -> SeriesEntry {
    SeriesEntry {
        study: key.pseudonym(IdKind::Study, &s.study_uid),
        series: key.pseudonym(IdKind::Series, &s.series_uid),
        modality: s.modality.clone(),
        instances: 0,
        bytes: 0,
        attempts: 0,
        status,
        http_status: None,
        reason: None,
        sources: Vec::new(),
    }
}

fn fetch_failed(
    sink: &mut ShardSink,
    key: &SiteKey,
    url: &str,
    s: &SeriesRef,
    e: FetchError,
    attempts: u32,
    pull: &mut PullReport,
) -> SeriesEntry {
    pull.series_failed += 1;
    let where_ = series_url(url, key, s);
    let reason = format!("GET {where_}: {e} (after {attempts} attempt(s))");
    tracing::warn!("series quarantined: {reason}");
    let mut q = entry(Stage::Fetch, reason.clone(), None, Vec::new(), Vec::new());
    q.series = Some(key.pseudonym(IdKind::Series, &s.series_uid));
    sink.quarantine(q);
    let mut m = manifest_entry(key, s, FetchStatus::Failed);
    m.attempts = attempts;
    m.http_status = e.status();
    m.reason = Some(reason);
    m
}

/// The name an object fetched over the network goes by (it has no path); only its pseudonym
/// reaches reports.
fn object_name(key: &SiteKey, s: &SeriesRef, n: usize) -> PathBuf {
    PathBuf::from(format!(
        "dicomweb/{}/{n:06}",
        key.pseudonym(IdKind::Series, &s.series_uid)
    ))
}

/// Scans, assembles, decodes and writes one fetched series; returns its manifest entry.
fn pack_fetched(
    sink: &mut ShardSink,
    key: &SiteKey,
    s: &SeriesRef,
    fetched: FetchedSeries,
    pull: &mut PullReport,
) -> Result<SeriesEntry, PullError> {
    pull.series_fetched += 1;
    pull.instances_fetched += fetched.instances.len() as u64;
    pull.bytes_fetched += fetched.bytes;
    let mut m = manifest_entry(key, s, FetchStatus::Packed);
    m.instances = fetched.instances.len() as u64;
    m.bytes = fetched.bytes;
    m.attempts = fetched.attempts;
    let objects: HashMap<PathBuf, Vec<u8>> = fetched
        .instances
        .into_iter()
        .enumerate()
        .map(|(n, bytes)| (object_name(key, s, n), bytes))
        .collect();
    let mut names: Vec<&PathBuf> = objects.keys().collect();
    names.sort();
    let mut files = Vec::new();
    let mut failed = Vec::new();
    for name in names {
        match scan_object(name, &objects[name], key, &s.series_uid) {
            Ok(Some(f)) => files.push(f),
            Ok(None) => {
                *sink
                    .report_mut()
                    .non_image_skipped
                    .entry("from archive".into())
                    .or_default() += 1
            }
            Err(e) => failed.push(e),
        }
    }
    sink.report_mut().image_files += files.len() as u64;
    if !failed.is_empty() {
        let reason = format!(
            "{} of its objects could not be read (first: {})",
            failed.len(),
            failed[0].reason
        );
        tracing::warn!("series quarantined: {reason}");
        for f in failed {
            sink.quarantine(f);
        }
        sink.quarantine(item_entry(Stage::Read, reason.clone(), &files, key));
        m.status = FetchStatus::Partial;
        m.reason = Some(reason);
        return Ok(m);
    }
    if files.is_empty() {
        return Ok(m);
    }
    let items = match assemble(files.clone()) {
        Ok(items) => items,
        Err(e) => {
            tracing::warn!("series quarantined: {e}");
            sink.quarantine(item_entry(Stage::Geometry, e.to_string(), &files, key));
            m.status = FetchStatus::Partial;
            m.reason = Some(e.to_string());
            return Ok(m);
        }
    };
    sink.report_mut().duplicate_copies_dropped +=
        items.iter().map(|i| i.duplicate_copies as u64).sum::<u64>();
    m.sources = items.iter().map(|i| i.source_hash.clone()).collect();
    let todo: Vec<&PackItem> = items
        .iter()
        .filter(|item| {
            let held = sink.holds_source(&item.source_hash);
            sink.report_mut().items_already_packed += held as u64;
            !held
        })
        .collect();
    let open = |f: &SourceFile| -> Result<Opened, ReadError> {
        let bytes = objects.get(&f.path).map(Vec::as_slice).unwrap_or_default();
        open_checked_bytes(&f.path, bytes)
    };
    let decoded: Vec<Decoded> = todo
        .par_iter()
        .map(|item| pack_item_with(item, key, &open))
        .collect();
    for result in decoded {
        if result.is_err() {
            m.status = FetchStatus::Partial;
        }
        sink.accept(result)?;
    }
    Ok(m)
}

/// Reads one fetched object's header: `Ok(None)` for a valid object without an image.
fn scan_object(
    name: &Path,
    bytes: &[u8],
    key: &SiteKey,
    series_uid: &str,
) -> Result<Option<SourceFile>, QuarantineEntry> {
    let file_key = key.pseudonym(IdKind::Path, &name.to_string_lossy());
    let series = Some(key.pseudonym(IdKind::Series, series_uid));
    let bad = |stage, reason: String, hash: Vec<String>| {
        entry(stage, reason, series.clone(), vec![file_key.clone()], hash)
    };
    let opened =
        open_header_checked_bytes(name, bytes).map_err(|e| bad(Stage::Read, e.to_string(), vec![]))?;
    let hash = opened.content_hash.to_hex().to_string();
    match read_header(&opened.object) {
        Ok(FileKind::NonImage { .. }) => Ok(None),
        Ok(FileKind::Image(header)) if header.series_uid != series_uid => Err(bad(
            Stage::Header,
            "the archive returned an object of another series".into(),
            vec![hash],
        )),
        Ok(FileKind::Image(header)) => Ok(Some(SourceFile {
            path: name.to_path_buf(),
            content_hash: opened.content_hash,
            header: *header,
        })),
        Err(e) => Err(bad(Stage::Header, e.to_string(), vec![hash])),
    }
}
