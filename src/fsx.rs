//! Durable file replacement: the one implementation of write-temporary, fsync, rename, fsync-directory
//! that every writer of a file others read (indexes, manifests, catalogs, checkpoints, reports, plots,
//! staged shards) goes through, so a crash leaves the old content or the new, never a mix, and a
//! completed rename survives a power loss.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The temporary name `write_atomic` writes beside `path` before renaming it into place. The process ID
/// keeps two processes that replace the same file (ranks on a shared file system) off each other's
/// temporary file.
pub fn temporary_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp.{}", std::process::id()));
    path.with_file_name(name)
}

/// Replaces `path` with `bytes` so that a reader sees the old or the new content, never a mix, and the
/// new content is on disk when this returns. On failure the temporary file is removed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = temporary_path(path);
    let written = fs::File::create(&tmp).and_then(|mut file| {
        file.write_all(bytes)?;
        file.sync_all()
    });
    let result = written.and_then(|()| commit_synced(&tmp, path));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Moves a finished file written by other means (HDF5, a streamed copy) from `partial` to `path`
/// durably: fsync of its bytes, rename, fsync of the directory.
pub fn commit_file(partial: &Path, path: &Path) -> std::io::Result<()> {
    fs::File::open(partial)?.sync_all()?;
    commit_synced(partial, path)
}

/// Renames a directory whose files are already synced (a checkpoint) into place: fsync of the directory
/// itself (its entries), rename, fsync of the parent.
pub fn commit_dir(partial: &Path, path: &Path) -> std::io::Result<()> {
    sync_dir(partial)?;
    commit_synced(partial, path)
}

/// Rename of an already-synced file or directory, made durable by syncing the parent directory.
pub fn commit_synced(from: &Path, to: &Path) -> std::io::Result<()> {
    fs::rename(from, to)?;
    sync_dir(parent(to))
}

/// Makes the entries of `dir` (a rename into it, a new file) durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    fs::File::open(dir)?.sync_all()
}

/// Extension of the BLAKE3 checksum file written beside a file (`b3sum` format: `<hex>  <name>`).
pub const CHECKSUM_SUFFIX: &str = ".blake3";

/// `<path>.blake3`.
pub fn checksum_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(CHECKSUM_SUFFIX);
    path.with_file_name(name)
}

/// Hashes the file at `path` and writes its checksum file atomically; returns the hash (hex).
pub fn write_checksum(path: &Path) -> std::io::Result<String> {
    let hash = blake3::Hasher::new()
        .update_mmap(path)?
        .finalize()
        .to_hex()
        .to_string();
    write_checksum_of(path, &hash)?;
    Ok(hash)
}

/// Writes the checksum file of `path` for an already computed `hash` (hex), atomically: for a file
/// hashed before it was renamed to `path` (a shard is hashed as `.partial`).
pub fn write_checksum_of(path: &Path, hash: &str) -> std::io::Result<()> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    write_atomic(&checksum_path(path), format!("{hash}  {name}\n").as_bytes())
}

/// Checks the file at `path` against its checksum file before anything parses it. The error says what
/// is wrong (no checksum file, an unreadable one, or another hash) in words fit for a user.
pub fn verify_checksum(path: &Path) -> Result<(), String> {
    let sidecar = checksum_path(path);
    let mut text = String::new();
    let read = fs::File::open(&sidecar).and_then(|f| {
        use std::io::Read;
        f.take(1024).read_to_string(&mut text)
    });
    match read {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!("its checksum file {} is missing", sidecar.display()))
        }
        Err(e) => {
            return Err(format!(
                "cannot read its checksum file {}: {e}",
                sidecar.display()
            ))
        }
        Ok(_) => {}
    }
    let want = text.split_whitespace().next().unwrap_or_default();
    if want.len() != 64 || !want.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "its checksum file {} holds no BLAKE3 hash",
            sidecar.display()
        ));
    }
    let got = blake3::Hasher::new()
        .update_mmap(path)
        .map_err(|e| format!("cannot read it: {e}"))?
        .finalize()
        .to_hex();
    if !got.as_str().eq_ignore_ascii_case(want) {
        return Err(format!(
            "its BLAKE3 is {got}, its checksum file {} says {want}",
            sidecar.display()
        ));
    }
    Ok(())
}

fn parent(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_replaces_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_atomic(&path, b"old").unwrap();
        write_atomic(&path, b"new").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
    }

    #[test]
    fn a_failed_write_keeps_the_old_content_and_removes_the_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        write_atomic(&path, b"old").unwrap();
        // Renaming a file over a non-empty directory fails after the temporary was written.
        let blocked = dir.path().join("blocked");
        fs::create_dir(&blocked).unwrap();
        fs::write(blocked.join("x"), b"x").unwrap();
        assert!(write_atomic(&blocked, b"new").is_err());
        assert!(!temporary_path(&blocked).exists());
        assert_eq!(fs::read(&path).unwrap(), b"old");
    }

    #[test]
    fn checksums_are_written_and_verified() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.h5");
        fs::write(&path, b"manifest bytes").unwrap();
        assert!(verify_checksum(&path).unwrap_err().contains("missing"));
        let hash = write_checksum(&path).unwrap();
        // The independent reference: BLAKE3 of the bytes, in b3sum's line format.
        assert_eq!(hash, blake3::hash(b"manifest bytes").to_hex().as_str());
        assert_eq!(
            fs::read_to_string(checksum_path(&path)).unwrap(),
            format!("{hash}  m.h5\n")
        );
        verify_checksum(&path).unwrap();
        fs::write(&path, b"manifest bytez").unwrap();
        assert!(verify_checksum(&path).unwrap_err().contains("BLAKE3"));
        fs::write(checksum_path(&path), b"not a hash\n").unwrap();
        assert!(verify_checksum(&path).unwrap_err().contains("holds no BLAKE3"));
    }

    #[test]
    fn commit_file_and_commit_dir_move_into_place() {
        let dir = tempfile::tempdir().unwrap();
        let partial = dir.path().join("x.h5.partial");
        fs::write(&partial, b"bytes").unwrap();
        commit_file(&partial, &dir.path().join("x.h5")).unwrap();
        assert_eq!(fs::read(dir.path().join("x.h5")).unwrap(), b"bytes");
        let d = dir.path().join("ckpt.partial");
        fs::create_dir(&d).unwrap();
        commit_dir(&d, &dir.path().join("ckpt")).unwrap();
        assert!(dir.path().join("ckpt").is_dir() && !d.exists());
    }
}
