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
