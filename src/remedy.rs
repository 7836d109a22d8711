//! What an operator does about an I/O error that is not a bug: a full disk, a read-only file system,
//! a missing permission. Appended to messages that already name the path, so that a job killed by
//! its environment says what to change before the rerun.

use std::io::{Error, ErrorKind};

/// ENOSPC and EDQUOT: the file system or the user's quota is full.
pub fn is_disk_full(e: &Error) -> bool {
    e.kind() == ErrorKind::StorageFull
        || e.kind() == ErrorKind::QuotaExceeded
        || matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

/// "; no space left on device: free space …, then `rerun`" and the like; empty for other errors.
pub fn io_remedy(e: &Error, rerun: &str) -> String {
    if is_disk_full(e) {
        format!("; no space left on device: free space on that file system, then {rerun}")
    } else if e.kind() == ErrorKind::ReadOnlyFilesystem || e.raw_os_error() == Some(libc::EROFS) {
        format!("; the file system is read-only: use a writable directory, then {rerun}")
    } else if e.kind() == ErrorKind::PermissionDenied {
        format!("; permission denied: make the directory writable for this user, then {rerun}")
    } else {
        String::new()
    }
}

/// Bytes available to this user on the file system holding `path` (or its nearest existing parent).
pub fn free_bytes(path: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let mut at = Some(path);
    while let Some(p) = at {
        if p.exists() {
            let c = std::ffi::CString::new(p.as_os_str().as_bytes()).ok()?;
            let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
            // SAFETY: `c` is a NUL-terminated path and `st` a writable statvfs.
            if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
                return None;
            }
            return Some(st.f_bavail as u64 * st.f_frsize as u64);
        }
        at = p.parent();
    }
    None
}

/// Free space under which a failed write is taken for a full disk: libraries such as HDF5 report a
/// failed write without the system's reason.
pub const NEARLY_FULL_BYTES: u64 = 1 << 20;

/// For an error without an errno (HDF5): the disk-full remedy when `path`'s file system is nearly
/// full, else nothing.
pub fn low_space_remedy(path: &std::path::Path, rerun: &str) -> String {
    match free_bytes(path) {
        Some(free) if free < NEARLY_FULL_BYTES => format!(
            "; no space left on device ({free} bytes free): free space on that file system, then {rerun}"
        ),
        _ => String::new(),
    }
}
