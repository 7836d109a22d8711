//! The copier: one shard from the archive to the node-local job directory, verified while it
//! streams. The bytes go to `<name>.partial` (created exclusively, mode 0600), are hashed with BLAKE3
//! as they pass, fsynced, compared with the checksum recorded at pack time, and only then renamed to
//! `<name>` (and the directory fsynced). So a file under its final name was verified once.
//!
//! A rerun re-hashes every file already under its final name instead of trusting a marker: the rerun
//! is the recovery path (after a kill or a node problem), reading the local disk is much cheaper
//! than the archive, and it also catches a staged file damaged after it was verified. Leftover
//! `.partial` files are removed and copied again.

use super::plan::PlannedShard;
use std::fs;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Suffix of a copy in progress.
pub const PARTIAL_SUFFIX: &str = ".partial";
/// Mode of staged files: readable by the job's user only.
pub const FILE_MODE: u32 = 0o600;
/// Bytes moved per read/write.
const CHUNK_BYTES: usize = 4 << 20;
/// Chunks read ahead of the one being hashed and written.
const READ_AHEAD: usize = 3;
/// Copy attempts per shard before it is reported as failed.
const ATTEMPTS: usize = 2;

/// What happened to one shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShardOutcome {
    /// A verified copy was already in place.
    Skipped,
    /// Copied and verified; `replaced` says a damaged file was in place, `partial` that a leftover
    /// `.partial` was removed first.
    Copied { replaced: bool, partial: bool },
    /// Failed every attempt; the reason names the file.
    Failed { reason: String },
}

/// A bandwidth limit: sleeps so that the bytes moved since `start` never run ahead of the rate.
/// With a stop flag, a copy ends (as failed, leaving no file) soon after the flag is set.
pub struct RateLimit {
    bytes_per_second: Option<f64>,
    start: Instant,
    moved: u64,
    stop: Option<Arc<AtomicBool>>,
}

/// Longest sleep between two looks at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(20);

impl RateLimit {
    /// `None` or a non-positive rate: no limit.
    pub fn new(bytes_per_second: Option<f64>) -> RateLimit {
        RateLimit {
            bytes_per_second: bytes_per_second.filter(|r| *r > 0.0 && r.is_finite()),
            start: Instant::now(),
            moved: 0,
            stop: None,
        }
    }

    /// The same limit, and copies end early once `stop` is set.
    pub fn with_stop(mut self, stop: Arc<AtomicBool>) -> RateLimit {
        self.stop = Some(stop);
        self
    }

    /// Whether the stop flag is set.
    pub fn stopped(&self) -> bool {
        self.stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst))
    }

    fn account(&mut self, bytes: usize) {
        self.moved += bytes as u64;
        if let Some(rate) = self.bytes_per_second {
            let due = Duration::from_secs_f64(self.moved as f64 / rate);
            loop {
                let elapsed = self.start.elapsed();
                if due <= elapsed || self.stopped() {
                    break;
                }
                let pause = due - elapsed;
                std::thread::sleep(if self.stop.is_some() {
                    pause.min(STOP_POLL)
                } else {
                    pause
                });
            }
        }
    }
}

/// Stages `shard` into `dir` (see the module documentation); never panics on I/O errors.
pub fn stage_shard(shard: &PlannedShard, dir: &Path, limit: &mut RateLimit) -> ShardOutcome {
    let target = dir.join(&shard.file);
    let partial = partial_path(dir, &shard.file);
    let mut replaced = false;
    if target.exists() {
        match hash_file(&target) {
            Ok((hash, len)) if hash == shard.blake3 && len == shard.bytes => return ShardOutcome::Skipped,
            Ok((hash, len)) => tracing::warn!(
                file = %target.display(),
                "staged copy is damaged ({len} bytes, BLAKE3 {hash}; expected {} bytes, {}): copying again",
                shard.bytes,
                shard.blake3
            ),
            Err(e) => tracing::warn!(file = %target.display(), "staged copy unreadable ({e}): copying again"),
        }
        if let Err(e) = fs::remove_file(&target) {
            return ShardOutcome::Failed {
                reason: format!("{}: cannot remove the damaged copy: {e}", target.display()),
            };
        }
        replaced = true;
    }
    let partial_found = partial.exists();
    let mut reasons = Vec::new();
    for _ in 0..ATTEMPTS {
        match copy_verified(shard, &partial, &target, limit) {
            Ok(()) => {
                return ShardOutcome::Copied {
                    replaced,
                    partial: partial_found,
                }
            }
            Err(reason) => {
                let _ = fs::remove_file(&partial);
                if limit.stopped() {
                    return ShardOutcome::Failed {
                        reason: format!("{}: stopped before it was staged", shard.source.display()),
                    };
                }
                tracing::warn!(shard = %shard.source.display(), "staging failed: {reason}");
                reasons.push(reason);
            }
        }
    }
    ShardOutcome::Failed {
        reason: format!(
            "{} -> {}: {}",
            shard.source.display(),
            target.display(),
            reasons.join("; then: ")
        ),
    }
}

/// `<dir>/<file>.partial`.
pub fn partial_path(dir: &Path, file: &str) -> PathBuf {
    dir.join(format!("{file}{PARTIAL_SUFFIX}"))
}

/// One attempt: stream source → partial while hashing, fsync, compare, rename, fsync the directory.
fn copy_verified(
    shard: &PlannedShard,
    partial: &Path,
    target: &Path,
    limit: &mut RateLimit,
) -> Result<(), String> {
    match fs::remove_file(partial) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot remove the leftover {}: {e}", partial.display())),
    }
    let mut src =
        fs::File::open(&shard.source).map_err(|e| format!("cannot open {}: {e}", shard.source.display()))?;
    let mut dst = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(partial)
        .map_err(|e| format!("cannot create {}: {e}", partial.display()))?;
    // The umask can only remove bits; make the mode exact whatever it is.
    dst.set_permissions(fs::Permissions::from_mode(FILE_MODE))
        .map_err(|e| format!("cannot set the mode of {}: {e}", partial.display()))?;
    // A reader thread keeps the next chunks coming while this one is hashed and written, and each
    // written chunk's writeback starts at once (sync_file_range), so the final fsync has little left to
    // wait for: reading, hashing and writing back overlap instead of taking turns.
    let mut hasher = blake3::Hasher::new();
    let mut copied = 0u64;
    let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<std::io::Result<Vec<u8>>>(READ_AHEAD);
    let (empty_tx, empty_rx) = std::sync::mpsc::channel::<Vec<u8>>();
    for _ in 0..READ_AHEAD + 1 {
        let _ = empty_tx.send(vec![0u8; CHUNK_BYTES]);
    }
    let source = shard.source.clone();
    let reader = std::thread::spawn(move || {
        while let Ok(mut buf) = empty_rx.recv() {
            buf.resize(CHUNK_BYTES, 0);
            let n = loop {
                match src.read(&mut buf) {
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    other => break other,
                }
            };
            match n {
                Ok(0) => return,
                Ok(n) => {
                    buf.truncate(n);
                    if full_tx.send(Ok(buf)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = full_tx.send(Err(e));
                    return;
                }
            }
        }
    });
    let fd = dst.as_raw_fd();
    let mut result = Ok(());
    for chunk in full_rx.iter() {
        let buf = match chunk {
            Ok(buf) => buf,
            Err(e) => {
                result = Err(format!("reading {}: {e}", source.display()));
                break;
            }
        };
        hasher.update(&buf);
        if let Err(e) = dst.write_all(&buf) {
            result = Err(format!("writing {}: {e}", partial.display()));
            break;
        }
        // SAFETY: `fd` is the open descriptor of `dst`, which outlives this call; the range lies within
        // what was just written. A failure only means no early writeback: fsync below still syncs all.
        unsafe {
            libc::sync_file_range(fd, copied as i64, buf.len() as i64, libc::SYNC_FILE_RANGE_WRITE);
        }
        copied += buf.len() as u64;
        limit.account(buf.len());
        if limit.stopped() {
            result = Err("stopped".into());
            break;
        }
        // The reader may have finished (end of file) while chunks are still queued: keep draining.
        let _ = empty_tx.send(buf);
    }
    drop(empty_tx);
    drop(full_rx);
    let _ = reader.join();
    result?;
    dst.sync_all()
        .map_err(|e| format!("fsync {}: {e}", partial.display()))?;
    drop(dst);
    let hash = hasher.finalize().to_hex().to_string();
    if hash != shard.blake3 {
        return Err(format!(
            "checksum mismatch: copied {copied} bytes with BLAKE3 {hash}, the catalog records {}",
            shard.blake3
        ));
    }
    crate::fsx::commit_synced(partial, target)
        .map_err(|e| format!("cannot rename into {}: {e}", target.display()))?;
    Ok(())
}

/// BLAKE3 (hex) and length of a file.
pub fn hash_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut file = fs::File::open(path)?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; CHUNK_BYTES];
    let mut len = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        len += n as u64;
    }
    Ok((hasher.finalize().to_hex().to_string(), len))
}

/// Free bytes for an unprivileged writer on the file system holding `path` (statvfs).
pub fn free_bytes(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "path holds a NUL byte"))?;
    // SAFETY: statvfs is a plain C struct for which all-zero bytes are a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated string and `st` a writable statvfs for the call.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard_in(dir: &Path, bytes: &[u8]) -> PlannedShard {
        let source = dir.join("src").join("shard-0000-000000.h5");
        fs::create_dir_all(source.parent().unwrap()).unwrap();
        fs::write(&source, bytes).unwrap();
        PlannedShard {
            id: 0,
            file: "shard-0000-000000.h5".into(),
            source,
            blake3: blake3::hash(bytes).to_hex().to_string(),
            bytes: bytes.len() as u64,
        }
    }

    #[test]
    fn a_file_of_many_chunks_is_copied_whole() {
        // More chunks than the read-ahead holds, and a short last one: the reader reaches the end of the
        // file while chunks are still queued for writing.
        let tmp = tempfile::tempdir().unwrap();
        let len = CHUNK_BYTES * (READ_AHEAD + 3) + 12_345;
        let data: Vec<u8> = (0..len as u64)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let shard = shard_in(tmp.path(), &data);
        let local = tmp.path().join("local");
        fs::create_dir_all(&local).unwrap();
        let out = stage_shard(&shard, &local, &mut RateLimit::new(None));
        assert_eq!(
            out,
            ShardOutcome::Copied {
                replaced: false,
                partial: false
            }
        );
        assert!(fs::read(local.join(&shard.file)).unwrap() == data);
    }

    #[test]
    fn copy_skip_and_repair() {
        let tmp = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let shard = shard_in(tmp.path(), &data);
        let local = tmp.path().join("local");
        fs::create_dir_all(&local).unwrap();
        let mut limit = RateLimit::new(None);
        let out = stage_shard(&shard, &local, &mut limit);
        assert_eq!(
            out,
            ShardOutcome::Copied {
                replaced: false,
                partial: false
            }
        );
        let target = local.join(&shard.file);
        assert_eq!(fs::read(&target).unwrap(), data);
        assert_eq!(
            fs::metadata(&target).unwrap().permissions().mode() & 0o777,
            FILE_MODE
        );
        assert_eq!(stage_shard(&shard, &local, &mut limit), ShardOutcome::Skipped);
        // A flipped byte is found by the re-hash and repaired.
        let mut bad = data.clone();
        bad[500] ^= 0x40;
        fs::write(&target, &bad).unwrap();
        assert_eq!(
            stage_shard(&shard, &local, &mut limit),
            ShardOutcome::Copied {
                replaced: true,
                partial: false
            }
        );
        assert_eq!(fs::read(&target).unwrap(), data);
    }

    #[test]
    fn a_wrong_checksum_fails_twice_and_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let mut shard = shard_in(tmp.path(), b"not the catalogued bytes");
        shard.blake3 = blake3::hash(b"the catalogued bytes").to_hex().to_string();
        let local = tmp.path().join("local");
        fs::create_dir_all(&local).unwrap();
        match stage_shard(&shard, &local, &mut RateLimit::new(None)) {
            ShardOutcome::Failed { reason } => {
                assert!(
                    reason.contains("checksum mismatch") && reason.contains("then:"),
                    "{reason}"
                );
                assert!(reason.contains(shard.source.to_str().unwrap()), "{reason}");
            }
            other => panic!("expected a failure, got {other:?}"),
        }
        assert_eq!(fs::read_dir(&local).unwrap().count(), 0);
    }

    #[test]
    fn rate_limit_slows_the_copy() {
        let tmp = tempfile::tempdir().unwrap();
        let shard = shard_in(tmp.path(), &vec![3u8; 200_000]);
        let local = tmp.path().join("local");
        fs::create_dir_all(&local).unwrap();
        let t = Instant::now();
        let out = stage_shard(&shard, &local, &mut RateLimit::new(Some(1_000_000.0)));
        assert!(matches!(out, ShardOutcome::Copied { .. }));
        assert!(t.elapsed() >= Duration::from_millis(190), "{:?}", t.elapsed());
    }

    #[test]
    fn a_stop_ends_a_slow_copy_and_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let shard = shard_in(tmp.path(), &vec![5u8; 200_000]);
        let local = tmp.path().join("local");
        fs::create_dir_all(&local).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let setter = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            flag.store(true, Ordering::SeqCst);
        });
        let t = Instant::now();
        // 10 kB/s: 20 s for the whole file without the stop.
        let mut limit = RateLimit::new(Some(10_000.0)).with_stop(stop);
        match stage_shard(&shard, &local, &mut limit) {
            ShardOutcome::Failed { reason } => assert!(reason.contains("stopped"), "{reason}"),
            other => panic!("expected a stopped copy, got {other:?}"),
        }
        setter.join().unwrap();
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        assert_eq!(fs::read_dir(&local).unwrap().count(), 0);
    }
}
