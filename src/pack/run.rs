//! The `pack` pipeline: walk the roots, read headers in parallel, assemble series, skip what the
//! pack already holds, decode batches in parallel and write them in order into shards.

use super::format::PARTIAL_SUFFIX;
use super::index::{PackIndex, ShardEntry};
use super::journal::{commit_journals, Journal};
use super::quarantine::{QuarantineEntry, QuarantineReport, Stage, QUARANTINE_FILE};
use super::shard::{ItemLuts, PackedItem, ShardWriter};
use super::tables::{Presentation, SeriesRecord, SliceRecord};
use super::ultrasound::{crop_frames, ultrasound_crop};
use super::voxels::{to_hu, HuStats, PaddingRange};
use crate::deid::{IdKind, SiteKey};
use crate::dicom::decode::{decode_pixels, PixelBuffer};
use crate::dicom::guard::PREAMBLE_LEN;
use crate::dicom::header::{read_header, FileKind};
use crate::dicom::modality::{modality_lut, voi_lut, ModalityLut};
use crate::dicom::open::has_part10_magic;
use crate::dicom::read::{open_checked, open_header_checked, salvage_header, Opened, ReadError};
use crate::dicom::series::{assemble, group_by_series, ItemKind, PackItem, SourceFile};
use crate::fsx::write_atomic;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Default target size of a shard's pixel data (bytes).
pub const DEFAULT_SHARD_BYTES: u64 = 2 << 30;
/// File name of the pack run summary inside a pack directory.
pub const REPORT_FILE: &str = "pack-report.json";
/// Items decoded in parallel per batch, per worker thread.
const BATCH_PER_THREAD: usize = 2;

pub struct PackOptions {
    pub roots: Vec<PathBuf>,
    pub out: PathBuf,
    pub key: SiteKey,
    /// Target bytes of pixel data per shard; a shard is closed once it reaches this.
    pub shard_bytes: u64,
    /// This worker's rank and the number of workers (MPI ranks); items are dealt round-robin.
    /// With more than one worker, committed shards go to the worker's journal, and only the
    /// coordinating process (`prepare_pack`, `finish_pack`) writes `index.json`.
    pub rank: usize,
    pub workers: usize,
    pub progress: bool,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PackReport {
    /// Processes that packed this run (MPI ranks; 1 without a launcher).
    pub workers: u64,
    pub files_seen: u64,
    pub image_files: u64,
    pub not_dicom: u64,
    pub non_image_skipped: BTreeMap<String, u64>,
    pub items_total: u64,
    pub items_packed: u64,
    pub items_already_packed: u64,
    pub items_other_workers: u64,
    pub slices_packed: u64,
    pub duplicate_copies_dropped: u64,
    pub quarantined_entries: u64,
    pub quarantined_files: u64,
    pub shards_written: u64,
    pub pixel_bytes_written: u64,
    pub voxels_clamped: u64,
    pub padding_voxels: u64,
    pub seconds: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error(
        "pack directory {path}: {source}{}",
        crate::remedy::io_remedy(source, "run the same pack command again (committed shards are kept)")
    )]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Index(#[from] super::index::IndexError),
    #[error(transparent)]
    Key(#[from] crate::deid::KeyError),
    #[error(transparent)]
    Shard(#[from] super::shard::ShardError),
    #[error("input root {0} does not exist or is not a directory")]
    MissingRoot(PathBuf),
    /// A failure on another MPI rank (or one reported through the rank that coordinates).
    #[error("rank {rank}: {reason}")]
    OnRank {
        rank: usize,
        usage: bool,
        reason: String,
    },
}

/// Rank `rank` of `workers` packs items `i` with `i % workers == rank` (items sorted by series).
pub fn assigned_to(item: usize, rank: usize, workers: usize) -> bool {
    item % workers.max(1) == rank
}

enum Scanned {
    Image(SourceFile),
    /// An unreadable file whose header survived: its whole series is incomplete.
    Damaged {
        series_uid: String,
        entry: QuarantineEntry,
    },
    NonImage(String),
    NotDicom,
    Bad(QuarantineEntry),
}

fn walk(root: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = walkdir::WalkDir::new(root)
        .follow_links(false)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect();
    files.sort();
    files
}

fn has_dicm_magic(path: &Path) -> bool {
    let mut head = [0u8; PREAMBLE_LEN + 4];
    let n = fs::File::open(path)
        .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
        .unwrap_or(0);
    has_part10_magic(&head[..n])
}

fn scan(path: &Path, key: &SiteKey) -> Scanned {
    let file_key = key.pseudonym(IdKind::Path, &path.to_string_lossy());
    let bad = |stage, reason: String, hash: Vec<String>| {
        tracing::warn!(path = %path.display(), "quarantined: {reason}");
        Scanned::Bad(entry(stage, reason, None, vec![file_key.clone()], hash))
    };
    let opened = match open_header_checked(path) {
        Ok(opened) => opened,
        Err(ReadError::Io(e)) => return bad(Stage::Read, format!("cannot read: {e}"), vec![]),
        Err(e) if has_dicm_magic(path) => {
            let reason = e.to_string();
            let series_uid = match salvage_header(path).map(|h| read_header(&h)) {
                Some(Ok(FileKind::Image(h))) => h.series_uid,
                _ => return bad(Stage::Read, reason, vec![]),
            };
            tracing::warn!(path = %path.display(), "quarantined: {reason}");
            return Scanned::Damaged {
                series_uid,
                entry: entry(Stage::Read, reason, None, vec![file_key], vec![]),
            };
        }
        Err(_) => return Scanned::NotDicom,
    };
    let hash = opened.content_hash.to_hex().to_string();
    match read_header(&opened.object) {
        Ok(FileKind::NonImage { what }) => Scanned::NonImage(what),
        Ok(FileKind::Image(header)) => Scanned::Image(SourceFile {
            path: path.to_path_buf(),
            content_hash: opened.content_hash,
            header: *header,
        }),
        Err(e) => bad(Stage::Header, e.to_string(), vec![hash]),
    }
}

pub(crate) fn entry(
    stage: Stage,
    reason: String,
    series: Option<String>,
    files: Vec<String>,
    hashes: Vec<String>,
) -> QuarantineEntry {
    QuarantineEntry {
        stage,
        reason,
        series,
        files,
        content_blake3: hashes,
    }
}

pub(crate) fn item_entry(
    stage: Stage,
    reason: String,
    files: &[SourceFile],
    key: &SiteKey,
) -> QuarantineEntry {
    let series = files
        .first()
        .map(|f| key.pseudonym(IdKind::Series, &f.header.series_uid));
    let names = files
        .iter()
        .map(|f| key.pseudonym(IdKind::Path, &f.path.to_string_lossy()))
        .collect();
    let hashes = files
        .iter()
        .map(|f| f.content_hash.to_hex().to_string())
        .collect();
    entry(stage, reason, series, names, hashes)
}

/// What one worker did: its counters and what it quarantined, split by phase. Every worker scans
/// every input (series need all their files), so scan-phase entries are the same on all workers
/// and are kept from one; decode-phase entries belong to the worker that decoded the item.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ShareReport {
    pub report: PackReport,
    pub scan_quarantine: Vec<QuarantineEntry>,
    pub decode_quarantine: Vec<QuarantineEntry>,
}

/// Packs the roots into `opts.out` in one process. Bad inputs are quarantined and reported; only
/// problems with the output (I/O, key, index) are errors.
pub fn run_pack(opts: &PackOptions) -> Result<(PackReport, Vec<QuarantineEntry>), PackError> {
    prepare_pack(opts)?;
    let share = pack_share(opts)?;
    finish_pack(opts, vec![share])
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> PackError {
    let path = path.to_path_buf();
    move |source| PackError::Io { path, source }
}

/// Run by one process before any worker starts: checks the roots and the key, folds the journals of
/// an interrupted multi-worker run into `index.json` (their shards are committed), removes what was
/// never committed and writes the index, so that every worker starts from the same one.
pub fn prepare_pack(opts: &PackOptions) -> Result<(), PackError> {
    for root in &opts.roots {
        if !root.is_dir() {
            return Err(PackError::MissingRoot(root.clone()));
        }
    }
    fs::create_dir_all(&opts.out).map_err(io_error(&opts.out))?;
    let index = load_checked(opts)?;
    let index = commit_journals(&opts.out, index)?;
    remove_uncommitted(&opts.out, &index).map_err(io_error(&opts.out))?;
    index.save(&opts.out)?;
    Ok(())
}

pub(crate) fn load_checked(opts: &PackOptions) -> Result<PackIndex, PackError> {
    Ok(match PackIndex::load(&opts.out)? {
        Some(index) => {
            opts.key
                .check_fingerprint(&format!("pack {}", opts.out.display()), &index.key_fingerprint)?;
            index
        }
        None => PackIndex::new(&opts.key.fingerprint()),
    })
}

/// One worker's share (items `i` with `assigned_to(i, rank, workers)`), after `prepare_pack`.
pub fn pack_share(opts: &PackOptions) -> Result<ShareReport, PackError> {
    let start = Instant::now();
    for root in &opts.roots {
        if !root.is_dir() {
            return Err(PackError::MissingRoot(root.clone()));
        }
    }
    let fingerprint = opts.key.fingerprint();
    let index = load_checked(opts)?;

    let mut report = PackReport::default();
    let mut quarantine: Vec<QuarantineEntry> = Vec::new();

    let paths: Vec<PathBuf> = opts.roots.par_iter().flat_map_iter(|r| walk(r)).collect();
    report.files_seen = paths.len() as u64;
    let scanned: Vec<Scanned> = paths.par_iter().map(|p| scan(p, &opts.key)).collect();
    let mut images = Vec::new();
    let mut damaged: BTreeMap<String, Vec<QuarantineEntry>> = BTreeMap::new();
    for s in scanned {
        match s {
            Scanned::Image(f) => images.push(f),
            Scanned::Damaged { series_uid, entry } => damaged.entry(series_uid).or_default().push(entry),
            Scanned::NonImage(what) => *report.non_image_skipped.entry(what).or_default() += 1,
            Scanned::NotDicom => report.not_dicom += 1,
            Scanned::Bad(e) => quarantine.push(e),
        }
    }
    report.image_files = images.len() as u64;

    let mut items: Vec<PackItem> = Vec::new();
    for series in group_by_series(images) {
        if let Some(bad) = damaged.remove(&series[0].header.series_uid) {
            let reason = format!(
                "{} of its files could not be read (first: {})",
                bad.len(),
                bad[0].reason
            );
            tracing::warn!(series_files = series.len(), "series quarantined: {reason}");
            quarantine.extend(bad);
            quarantine.push(item_entry(Stage::Read, reason, &series, &opts.key));
            continue;
        }
        let files = series.clone();
        match assemble(series) {
            Ok(found) => items.extend(found),
            Err(e) => {
                tracing::warn!(series_files = files.len(), "series quarantined: {e}");
                quarantine.push(item_entry(Stage::Geometry, e.to_string(), &files, &opts.key));
            }
        }
    }
    quarantine.extend(damaged.into_values().flatten());
    let scanned_quarantine = quarantine.len();
    report.items_total = items.len() as u64;
    report.duplicate_copies_dropped = items.iter().map(|i| i.duplicate_copies as u64).sum();

    let todo: Vec<PackItem> = items
        .into_iter()
        .enumerate()
        .filter_map(|(i, item)| {
            if !assigned_to(i, opts.rank, opts.workers) {
                report.items_other_workers += 1;
                None
            } else if index.contains_source(&item.source_hash) {
                report.items_already_packed += 1;
                None
            } else {
                Some(item)
            }
        })
        .collect();

    let progress = opts.progress.then(|| progress_bar(todo.len() as u64));
    let batch = (rayon::current_num_threads() * BATCH_PER_THREAD).max(1);
    let mut sink = ShardSink::new(opts, &fingerprint, index, report, quarantine, progress);
    // Decoding (rayon) and writing (one thread: HDF5 is serial) overlap: batch k is written while
    // batch k+1 is decoded. A writer error (disk full) stops the decoding at the next batch.
    sink = std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Decoded>(batch);
        let handle = scope.spawn(move || -> Result<ShardSink, PackError> {
            for result in rx {
                sink.accept(result)?;
            }
            sink.close()?;
            Ok(sink)
        });
        'decode: for chunk in todo.chunks(batch) {
            let decoded: Vec<Decoded> = chunk.par_iter().map(|item| pack_item(item, &opts.key)).collect();
            for result in decoded {
                if tx.send(result).is_err() {
                    break 'decode;
                }
            }
        }
        drop(tx);
        handle.join().expect("the shard writer thread does not panic")
    })?;
    sink.finish(start, scanned_quarantine)
}

/// Run by one process after every worker finished: commits the workers' journals into
/// `index.json` and writes the merged quarantine report and run summary. `shares` are in rank
/// order; counters of the scan phase (the same on every worker) come from the first.
pub fn finish_pack(
    opts: &PackOptions,
    shares: Vec<ShareReport>,
) -> Result<(PackReport, Vec<QuarantineEntry>), PackError> {
    let index = load_checked(opts)?;
    commit_journals(&opts.out, index)?;
    let (mut report, quarantine) = merge_shares(shares);
    report.quarantined_entries = quarantine.len() as u64;
    report.quarantined_files = quarantine.iter().map(|e| e.files.len() as u64).sum();
    let q = QuarantineReport {
        format: "medtrain-quarantine",
        entries: quarantine.clone(),
    };
    let path = opts.out.join(QUARANTINE_FILE);
    write_atomic(
        &path,
        serde_json::to_string_pretty(&q).expect("serialisable").as_bytes(),
    )
    .map_err(io_error(&path))?;
    let path = opts.out.join(REPORT_FILE);
    write_atomic(
        &path,
        serde_json::to_string_pretty(&report)
            .expect("serialisable")
            .as_bytes(),
    )
    .map_err(io_error(&path))?;
    Ok((report, quarantine))
}

/// One report for the whole pack: scan counters from the first share, work counters summed, the
/// slowest worker's time; scan quarantine once, then every worker's decode quarantine in rank order.
fn merge_shares(shares: Vec<ShareReport>) -> (PackReport, Vec<QuarantineEntry>) {
    let mut shares = shares.into_iter();
    let Some(first) = shares.next() else {
        return (PackReport::default(), Vec::new());
    };
    let workers = 1 + shares.len() as u64;
    let mut report = first.report;
    report.workers = workers;
    let mut quarantine = first.scan_quarantine;
    quarantine.extend(first.decode_quarantine);
    let several = workers > 1;
    for share in shares {
        let r = share.report;
        report.items_packed += r.items_packed;
        report.items_already_packed += r.items_already_packed;
        report.slices_packed += r.slices_packed;
        report.shards_written += r.shards_written;
        report.pixel_bytes_written += r.pixel_bytes_written;
        report.voxels_clamped += r.voxels_clamped;
        report.padding_voxels += r.padding_voxels;
        report.seconds = report.seconds.max(r.seconds);
        quarantine.extend(share.decode_quarantine);
    }
    if several {
        // Every item was some worker's: none is left to "other workers" in the merged view.
        report.items_other_workers = 0;
    }
    (report, quarantine)
}

fn progress_bar(len: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} packing {pos}/{len} items [{elapsed_precise}<{eta}] {per_sec}",
        )
        .expect("valid template"),
    );
    bar
}

pub(crate) type Decoded = Result<(PackedItem, HuStats), QuarantineEntry>;

/// The writing end of the pipeline: fills shards in order and commits each one when it is full.
pub(crate) struct ShardSink<'a> {
    out: &'a Path,
    fingerprint: &'a str,
    rank: usize,
    /// Where this worker records committed shards when it is one of several (else `index`).
    journal: Option<Journal>,
    shard_bytes: u64,
    writer: Option<ShardWriter>,
    index: PackIndex,
    report: PackReport,
    quarantine: Vec<QuarantineEntry>,
    hu_total: HuStats,
    progress: Option<indicatif::ProgressBar>,
}

impl<'a> ShardSink<'a> {
    /// A sink for one worker's share; `report` and `quarantine` carry what the scan found.
    pub(crate) fn new(
        opts: &'a PackOptions,
        fingerprint: &'a str,
        index: PackIndex,
        report: PackReport,
        quarantine: Vec<QuarantineEntry>,
        progress: Option<indicatif::ProgressBar>,
    ) -> ShardSink<'a> {
        ShardSink {
            out: &opts.out,
            fingerprint,
            rank: opts.rank,
            journal: (opts.workers > 1).then(|| Journal::new(opts.rank, fingerprint)),
            shard_bytes: opts.shard_bytes,
            writer: None,
            index,
            report,
            quarantine,
            hu_total: HuStats::default(),
            progress,
        }
    }

    /// Whether the committed shards (including this run's) hold an item with this source hash.
    pub(crate) fn holds_source(&self, source_hash: &str) -> bool {
        self.index.contains_source(source_hash)
    }

    /// Saves the index or journal and returns the share's report; the first `scanned_quarantine`
    /// entries are the scan phase's. Call after `close`.
    pub(crate) fn finish(self, start: Instant, scanned_quarantine: usize) -> Result<ShareReport, PackError> {
        let ShardSink {
            out,
            index,
            journal,
            mut report,
            mut quarantine,
            hu_total,
            progress,
            ..
        } = self;
        if let Some(bar) = progress {
            bar.finish_and_clear();
        }
        match journal {
            Some(journal) => journal.save(out)?,
            None => index.save(out)?,
        }
        report.voxels_clamped = hu_total.clamped;
        report.padding_voxels = hu_total.padding;
        report.seconds = start.elapsed().as_secs_f64();
        let decode_quarantine = quarantine.split_off(scanned_quarantine.min(quarantine.len()));
        Ok(ShareReport {
            report,
            scan_quarantine: quarantine,
            decode_quarantine,
        })
    }

    /// Counters of the share so far (the fetch stage adds its own).
    pub(crate) fn report_mut(&mut self) -> &mut PackReport {
        &mut self.report
    }

    /// Records an input that failed before decoding.
    pub(crate) fn quarantine(&mut self, entry: QuarantineEntry) {
        self.quarantine.push(entry);
    }

    pub(crate) fn accept(&mut self, result: Decoded) -> Result<(), PackError> {
        if let Some(bar) = &self.progress {
            bar.inc(1);
        }
        let (packed, stats) = match result {
            Ok(ok) => ok,
            Err(e) => {
                self.quarantine.push(e);
                return Ok(());
            }
        };
        self.hu_total += stats;
        self.report.items_packed += 1;
        self.report.slices_packed += packed.slices.len() as u64;
        if self.writer.is_none() {
            let name = next_shard_name(self.out, &self.index, self.rank);
            self.writer = Some(ShardWriter::create(self.out, &name, self.fingerprint)?);
        }
        let w = self.writer.as_mut().expect("just created");
        w.add(packed)?;
        if w.pixel_bytes() >= self.shard_bytes {
            self.commit()?;
        }
        Ok(())
    }

    /// Commits the open shard, if any.
    pub(crate) fn close(&mut self) -> Result<(), PackError> {
        if self.writer.is_some() {
            self.commit()?;
        }
        Ok(())
    }

    fn commit(&mut self) -> Result<(), PackError> {
        let entry: ShardEntry = self.writer.take().expect("an open shard").finish()?;
        self.report.shards_written += 1;
        self.report.pixel_bytes_written += entry.pixel_bytes;
        tracing::info!(shard = %entry.file, series = entry.series, bytes = entry.bytes, "shard committed");
        self.index.shards.push(entry.clone());
        match &mut self.journal {
            Some(journal) => {
                journal.shards.push(entry);
                journal.save(self.out)?;
            }
            None => self.index.save(self.out)?,
        }
        Ok(())
    }
}

/// Shard names carry the writer's rank, so ranks never collide: `shard-<rank>-<sequence>.h5`.
fn next_shard_name(out: &Path, index: &PackIndex, rank: usize) -> String {
    let prefix = format!("shard-{rank:04}-");
    let mut seq = index
        .shards
        .iter()
        .filter_map(|s| {
            s.file
                .strip_prefix(&prefix)?
                .strip_suffix(".h5")?
                .parse::<u64>()
                .ok()
        })
        .max()
        .map_or(0, |m| m + 1);
    while out.join(format!("{prefix}{seq:06}.h5")).exists() {
        seq += 1;
    }
    format!("{prefix}{seq:06}.h5")
}

/// Removes what an interrupted run left: partial shards, and shards never entered in the index.
/// Only safe while no worker is packing (`prepare_pack`): a worker's open shard is uncommitted too.
fn remove_uncommitted(out: &Path, index: &PackIndex) -> std::io::Result<()> {
    for entry in fs::read_dir(out)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let is_shard =
            name.starts_with("shard-") && (name.ends_with(".h5") || name.ends_with(PARTIAL_SUFFIX));
        let base = name.trim_end_matches(PARTIAL_SUFFIX);
        if is_shard && (name.ends_with(PARTIAL_SUFFIX) || !index.shards.iter().any(|s| s.file == base)) {
            tracing::warn!(file = %name, "removing uncommitted shard left by an interrupted run");
            fs::remove_file(&path)?;
            let _ = fs::remove_file(out.join(format!("{base}{}", super::index::CHECKSUM_SUFFIX)));
        }
    }
    Ok(())
}

/// Decodes one item read from files and builds its table rows.
fn pack_item(item: &PackItem, key: &SiteKey) -> Result<(PackedItem, HuStats), QuarantineEntry> {
    pack_item_with(item, key, &|file: &SourceFile| open_checked(&file.path))
}

/// Decodes one item whose objects `open` yields (read from files, or from bytes fetched over the
/// network) and builds its table rows.
pub(crate) fn pack_item_with(
    item: &PackItem,
    key: &SiteKey,
    open: &(dyn Fn(&SourceFile) -> Result<Opened, ReadError> + Sync),
) -> Result<(PackedItem, HuStats), QuarantineEntry> {
    let fail = |file: &SourceFile, reason: String| {
        tracing::warn!(path = %file.path.display(), "quarantined: {reason}");
        item_entry(Stage::Decode, reason, &item.files, key)
    };
    let first = &item.files[0].header;
    let is_ct = first.modality == "CT";
    // (slices, rows, cols), reserved once: growing a volume-sized vector copies it repeatedly.
    let mut hu: Vec<i16> = Vec::with_capacity(if is_ct {
        item.files.len() * first.frames as usize * first.rows as usize * first.cols as usize
    } else {
        0
    });
    let mut stored: Option<PixelBuffer> = None;
    let mut stats = HuStats::default();
    let mut slices = Vec::new();
    let mut lut0: Option<ModalityLut> = None;
    let mut voi0: Option<Option<ModalityLut>> = None;
    let mut photometric = first.photometric.clone();
    let mut frames_total = 0u32;
    let mut spp = first.samples_per_pixel;
    let crop = ultrasound_crop(item).map_err(|(file, reason)| {
        tracing::warn!(path = %file.path.display(), "quarantined: {reason}");
        item_entry(Stage::Header, reason, &item.files, key)
    })?;
    for (file_index, file) in item.files.iter().enumerate() {
        let h = &file.header;
        let opened = open(file).map_err(|e| fail(file, e.to_string()))?;
        // Hashing again costs a pass over bytes already in memory, and is what keeps the source
        // hash in the index true to the pixels in the shard (idempotent re-packing relies on it).
        if opened.content_hash != file.content_hash {
            return Err(fail(file, "file changed while packing; run pack again".into()));
        }
        let obj = opened.object;
        let decoded = decode_pixels(&obj).map_err(|e| fail(file, e.reason()))?;
        if decoded.rows != first.rows || decoded.cols != first.cols {
            return Err(fail(
                file,
                format!(
                    "decoded size {}x{} differs from the series' {}x{}",
                    decoded.rows, decoded.cols, first.rows, first.cols
                ),
            ));
        }
        let expected = decoded.frames as usize
            * decoded.rows as usize
            * decoded.cols as usize
            * decoded.samples_per_pixel as usize;
        if decoded.pixels.len() != expected {
            return Err(fail(
                file,
                format!(
                    "decoded {} values, expected {expected} ({} frames of {}x{}x{})",
                    decoded.pixels.len(),
                    decoded.frames,
                    decoded.rows,
                    decoded.cols,
                    decoded.samples_per_pixel
                ),
            ));
        }
        let decoded = match &crop {
            Some(region) => crop_frames(decoded, region.bounds),
            None => decoded,
        };
        let lut = modality_lut(&obj).map_err(|e| fail(file, e.reason()))?;
        // CT is converted to HU slice by slice; other items keep stored values and record one
        // rescale for the series, which is only true when every slice has the same.
        if let (false, Some(first_lut)) = (is_ct, &lut0) {
            if !same_rescale(first_lut, &lut) {
                return Err(fail(
                    file,
                    format!(
                        "RescaleSlope/Intercept differ across slices (slice {} of {}: {} vs {} on slice 1); \
                         one rescale per series is recorded, so the volume cannot be packed",
                        file_index + 1,
                        item.files.len(),
                        describe_rescale(&lut),
                        describe_rescale(first_lut)
                    ),
                ));
            }
        }
        if voi0.is_none() {
            voi0 = Some(voi_lut(&obj).map_err(|e| fail(file, e.reason()))?);
        }
        photometric = decoded.photometric.clone();
        spp = decoded.samples_per_pixel;
        if is_ct {
            let padding = h
                .padding
                .map(|(v, limit)| PaddingRange::new(v, limit, h.pixel_representation == 1, h.bits_allocated));
            stats += to_hu(&decoded.pixels, &lut, padding, &mut hu);
        } else {
            append(&mut stored, decoded.pixels).map_err(|reason| fail(file, reason))?;
        }
        lut0.get_or_insert(lut);
        let sop_key = key.pseudonym(IdKind::Instance, &h.sop_instance_uid);
        for frame in 0..decoded.frames {
            slices.push(SliceRecord {
                series_index: 0,
                position: if item.kind == ItemKind::Volume {
                    item.positions[slices.len()]
                } else {
                    0.0
                },
                image_position: h.image_position.unwrap_or([f64::NAN; 3]),
                thickness: h.slice_thickness.unwrap_or(f64::NAN),
                sop_key: sop_key.clone(),
                instance_number: h.instance_number.unwrap_or(i32::MIN),
                frame,
            });
        }
        frames_total += decoded.frames;
    }
    let pixels = if is_ct {
        PixelBuffer::I16(hu)
    } else {
        stored.expect("at least one file")
    };
    let (rows, cols) = match &crop {
        Some(r) => (r.bounds[3] - r.bounds[1] + 1, r.bounds[2] - r.bounds[0] + 1),
        None => (first.rows, first.cols),
    };
    let mut shape = vec![frames_total as usize, rows as usize, cols as usize];
    if spp > 1 {
        shape.push(spp as usize);
    }
    let lut = lut0.unwrap_or(ModalityLut::Identity);
    let (slope, intercept) = match &lut {
        ModalityLut::Identity => (1.0, 0.0),
        ModalityLut::Linear { slope, intercept } => (*slope, *intercept),
        ModalityLut::Table { .. } => (f64::NAN, f64::NAN),
    };
    let transform = match (is_ct, &lut) {
        (false, _) => "none",
        (true, ModalityLut::Table { .. }) => "hu-lut",
        (true, _) => "hu-linear",
    };
    let table = |lut: Option<&ModalityLut>| match lut {
        Some(ModalityLut::Table { first_mapped, values }) => (*first_mapped as f64, values.clone()),
        _ => (f64::NAN, Vec::new()),
    };
    // CT tables are applied at pack time (HU are stored); other series keep theirs for training.
    let (modality_first, modality_values) = table(if is_ct { None } else { Some(&lut) });
    let (voi_first, voi_values) = table(voi0.flatten().as_ref());
    let presentation = Presentation {
        voi_function: first.voi_function.clone(),
        patient_orientation: first.patient_orientation.clone(),
        burned_in_annotation: match first.burned_in_annotation {
            Some(false) => 0,
            Some(true) => 1,
            None => 2,
        },
        frame_of_reference_key: if first.frame_of_reference_uid.is_empty() {
            String::new()
        } else {
            key.pseudonym(IdKind::FrameOfReference, &first.frame_of_reference_uid)
        },
        modality_lut_first: modality_first,
        modality_lut_entries: modality_values.len() as u32,
        voi_lut_first: voi_first,
        voi_lut_entries: voi_values.len() as u32,
        crop: crop.map(|r| r.bounds),
    };
    let record = SeriesRecord {
        series_key: key.pseudonym(IdKind::Series, &first.series_uid),
        study_key: key.pseudonym(IdKind::Study, &first.study_uid),
        patient_key: key.pseudonym(IdKind::Patient, &first.patient_id),
        modality: first.modality.clone(),
        kind: item.kind,
        study_day: key
            .day_offset(&first.patient_id, &first.study_date)
            .unwrap_or(i32::MIN),
        n_slices: frames_total,
        rows,
        cols,
        samples_per_pixel: spp as u8,
        dtype: String::new(),
        pixel_spacing: crop
            .and_then(|r| r.spacing_mm)
            .or(first.pixel_spacing)
            .unwrap_or([f64::NAN; 2]),
        slice_spacing: item.slice_spacing,
        slice_thickness: first.slice_thickness.unwrap_or(f64::NAN),
        orientation: first.image_orientation.unwrap_or([f64::NAN; 6]),
        origin: first.image_position.unwrap_or([f64::NAN; 3]),
        photometric,
        transform: transform.into(),
        rescale_slope: slope,
        rescale_intercept: intercept,
        window_center: first.window.map_or(f64::NAN, |w| w.0),
        window_width: first.window.map_or(f64::NAN, |w| w.1),
        body_part: first.body_part.clone(),
        convolution_kernel: first.convolution_kernel.clone(),
        dataset: String::new(),
        data_offset: 0,
        data_length: 0,
        first_slice: 0,
        source_hash: item.source_hash.clone(),
        n_clamped: stats.clamped,
        n_padding: stats.padding,
        presentation,
    };
    Ok((
        PackedItem {
            record,
            slices,
            pixels,
            shape,
            luts: ItemLuts {
                modality: modality_values,
                voi: voi_values,
            },
        },
        stats,
    ))
}

/// Whether two slices' modality transforms are the same (an absent rescale is slope 1, intercept 0).
fn same_rescale(a: &ModalityLut, b: &ModalityLut) -> bool {
    a == b || (a.is_identity() && b.is_identity())
}

/// "slope/intercept" of a slice's modality transform, for a quarantine reason.
fn describe_rescale(lut: &ModalityLut) -> String {
    match lut {
        ModalityLut::Identity => "1/0".into(),
        ModalityLut::Linear { slope, intercept } => format!("{slope}/{intercept}"),
        ModalityLut::Table { values, .. } => format!("a Modality LUT of {} entries", values.len()),
    }
}

/// Appends decoded frames of one file to those of the item's earlier files (same stored type).
fn append(acc: &mut Option<PixelBuffer>, next: PixelBuffer) -> Result<(), String> {
    let Some(acc) = acc else {
        *acc = Some(next);
        return Ok(());
    };
    match (acc, next) {
        (PixelBuffer::U8(a), PixelBuffer::U8(b)) => a.extend(b),
        (PixelBuffer::I8(a), PixelBuffer::I8(b)) => a.extend(b),
        (PixelBuffer::U16(a), PixelBuffer::U16(b)) => a.extend(b),
        (PixelBuffer::I16(a), PixelBuffer::I16(b)) => a.extend(b),
        (PixelBuffer::U32(a), PixelBuffer::U32(b)) => a.extend(b),
        (PixelBuffer::I32(a), PixelBuffer::I32(b)) => a.extend(b),
        (PixelBuffer::F32(a), PixelBuffer::F32(b)) => a.extend(b),
        (PixelBuffer::F64(a), PixelBuffer::F64(b)) => a.extend(b),
        _ => return Err("slices of the series decode to different pixel types".into()),
    }
    Ok(())
}
