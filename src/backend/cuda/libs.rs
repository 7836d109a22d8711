//! Which CUDA library files this build uses.
//!
//! cudarc (dynamic loading) opens the first name of its candidate list that `dlopen` finds, and that
//! list starts with the unversioned names (`libnvrtc.so`, `libcublas.so`, `libcudnn.so`), so a CUDA 12
//! build can pick up CUDA 11's cuBLAS or CUDA 13's NVRTC, and it never tries `libnvrtc.so.11.2` (CUDA
//! 11's NVRTC). [`resolve`] chooses exact files instead: the versioned names of the build's CUDA major
//! only, in the given directories, refusing a directory set that mixes majors and cuDNN before 9.
//!
//! Mechanism ([`preload`]): the resolved file is opened by absolute path with `RTLD_NOW | RTLD_GLOBAL`
//! before cudarc's first call. The dynamic loader then answers cudarc's `dlopen("libnvrtc.so.12")` with
//! the copy already loaded (same SONAME) without a search; afterwards [`preload`] checks that cudarc
//! really resolves a symbol to that copy (an unversioned `libnvrtc.so` on the search path would be
//! found first by cudarc and is reported, not silently used). This keeps the crates.io cudarc
//! unpatched; a patched copy of cudarc would be a second code base to follow upstream.

use std::ffi::{c_void, CString};
use std::path::{Path, PathBuf};

/// A CUDA library the backend loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lib {
    Nvrtc,
    Cublas,
    CublasLt,
    Cudnn,
}

impl Lib {
    pub const ALL: [Lib; 4] = [Lib::Nvrtc, Lib::Cublas, Lib::CublasLt, Lib::Cudnn];

    fn stem(self) -> &'static str {
        match self {
            Lib::Nvrtc => "libnvrtc.so",
            Lib::Cublas => "libcublas.so",
            Lib::CublasLt => "libcublasLt.so",
            Lib::Cudnn => "libcudnn.so",
        }
    }
}

/// The exact file names of `lib` for CUDA `major`, preferred first. NVRTC 11 keeps the SONAME
/// `libnvrtc.so.11.2` for all of 11.2–11.8; cuDNN is 9 for every CUDA major this project builds for.
pub fn exact_names(lib: Lib, major: u32) -> Vec<String> {
    match (lib, major) {
        (Lib::Nvrtc, 11) => vec!["libnvrtc.so.11.2".into()],
        (Lib::Cudnn, _) => vec!["libcudnn.so.9".into()],
        (Lib::Cublas | Lib::CublasLt, 11) => vec![format!("{}.11", lib.stem())],
        (_, m) => vec![format!("{}.{m}", lib.stem())],
    }
}

/// The CUDA major (or cuDNN major) of a versioned file name of `lib`: `libnvrtc.so.12` → 12,
/// `libnvrtc.so.11.2` → 11, `libcudnn.so.8.9.7` → 8; None for other names (unversioned, other libraries,
/// `libnvrtc-builtins`, NVIDIA's `libnvrtc.alt.so.12`).
fn major_of(lib: Lib, name: &str) -> Option<u32> {
    let rest = name.strip_prefix(lib.stem())?.strip_prefix('.')?;
    rest.split('.').next()?.parse().ok()
}

/// Resolves every library of `libs` for CUDA `major` in `dirs` (searched in order): the first directory
/// holding one of [`exact_names`] wins. Refused: a directory holding `lib` only for another CUDA major
/// when no directory has the build's (named in the message, so a CUDA 11 cuBLAS is never taken for a
/// CUDA 12 build), and cuDNN older than 9. A library found nowhere is left out of the answer (cudarc's
/// own search then applies and the probe reports it missing).
pub fn resolve(major: u32, dirs: &[PathBuf], libs: &[Lib]) -> Result<Vec<(Lib, PathBuf)>, String> {
    let mut found = Vec::new();
    for &lib in libs {
        let wanted = exact_names(lib, major);
        let hit = dirs
            .iter()
            .find_map(|d| wanted.iter().map(|n| d.join(n)).find(|p| p.exists()));
        if let Some(path) = hit {
            found.push((lib, path));
            continue;
        }
        let mut others = Vec::new();
        for d in dirs {
            let Ok(entries) = std::fs::read_dir(d) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(m) = major_of(lib, &name) {
                    others.push((m, d.join(&name)));
                }
            }
        }
        others.sort();
        if lib == Lib::Cudnn {
            if let Some((m, p)) = others.iter().find(|(m, _)| *m < 9) {
                return Err(format!(
                    "{} is cuDNN {m}; medtrain needs cuDNN 9 ({})",
                    p.display(),
                    wanted.join(" or ")
                ));
            }
        } else if let Some((m, p)) = others.first() {
            return Err(format!(
                "{} is for CUDA {m}, but this build is for CUDA {major} and found no {}: install the CUDA \
                 {major} library or use the cuda-{m} build",
                p.display(),
                wanted.join(" or ")
            ));
        }
    }
    Ok(found)
}

/// Opens `path` with `RTLD_NOW | RTLD_GLOBAL` and checks that `cudarc_symbol` (the address cudarc's
/// loader resolves for `symbol`, called after the open) lies in that copy. Returns the handle, which
/// stays open for the life of the process.
pub fn preload(
    path: &Path,
    symbol: &str,
    cudarc_symbol: impl FnOnce() -> Result<*const c_void, String>,
) -> Result<*mut c_void, String> {
    let c_path = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
    let c_sym = CString::new(symbol).map_err(|e| e.to_string())?;
    // SAFETY: dlopen/dlsym with NUL-terminated strings; the handle is never closed.
    let handle = unsafe { libc::dlopen(c_path.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
    if handle.is_null() {
        // SAFETY: dlerror returns a thread-local C string or null.
        let why = unsafe { libc::dlerror() };
        let why = if why.is_null() {
            "unknown error".to_string()
        } else {
            // SAFETY: non-null C string from dlerror.
            unsafe { std::ffi::CStr::from_ptr(why) }
                .to_string_lossy()
                .into_owned()
        };
        return Err(format!("cannot load {}: {why}", path.display()));
    }
    // SAFETY: as above.
    let ours = unsafe { libc::dlsym(handle, c_sym.as_ptr()) } as *const c_void;
    if ours.is_null() {
        return Err(format!("{} has no symbol {symbol}", path.display()));
    }
    let theirs = cudarc_symbol()?;
    if theirs != ours {
        return Err(format!(
            "cudarc resolved {symbol} in another copy of the library than {} (an unversioned name on \
             the library search path comes first in cudarc's list; remove it from LD_LIBRARY_PATH)",
            path.display()
        ));
    }
    Ok(handle)
}

/// [`preload`] of NVRTC for cudarc's `nvrtc` module: loads `path`, then makes cudarc load its NVRTC and
/// checks it is that file.
pub fn preload_nvrtc(path: &Path) -> Result<(), String> {
    preload(path, "nvrtcVersion", || {
        std::panic::catch_unwind(|| {
            // SAFETY: loads NVRTC (already in the process) and looks up one symbol; nothing is called.
            let lib = unsafe { cudarc::nvrtc::sys::culib() };
            // SAFETY: the symbol's address is only compared, never called through this type.
            unsafe { lib.get::<*const c_void>(b"nvrtcVersion\0") }
                .map(|s| *s)
                .map_err(|e| e.to_string())
        })
        .map_err(|_| "cudarc found no NVRTC library under its names".to_string())?
    })
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(files: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for f in files {
            let p = dir.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"").unwrap();
        }
        dir
    }

    /// File lists of the PyPI wheels (`unzip -l`): nvidia-cuda-nvrtc-cu12 12.9.86,
    /// nvidia-cuda-nvrtc-cu11 11.8.89, nvidia-cuda-nvrtc 13.5.37.
    const CU12: &[&str] = &[
        "nvidia/cuda_nvrtc/lib/libnvrtc-builtins.alt.so.12.9",
        "nvidia/cuda_nvrtc/lib/libnvrtc-builtins.so.12.9",
        "nvidia/cuda_nvrtc/lib/libnvrtc.alt.so.12",
        "nvidia/cuda_nvrtc/lib/libnvrtc.so.12",
    ];
    const CU11: &[&str] = &[
        "nvidia/cuda_nvrtc/lib/libnvrtc-builtins.so.11.8",
        "nvidia/cuda_nvrtc/lib/libnvrtc.so.11.2",
    ];
    const CU13: &[&str] = &[
        "nvidia/cu13/lib/libnvrtc-builtins.so.13.5",
        "nvidia/cu13/lib/libnvrtc.so.13",
    ];

    #[test]
    fn exact_names_follow_the_cuda_major() {
        assert_eq!(exact_names(Lib::Nvrtc, 12), ["libnvrtc.so.12"]);
        assert_eq!(exact_names(Lib::Nvrtc, 11), ["libnvrtc.so.11.2"]);
        assert_eq!(exact_names(Lib::Nvrtc, 13), ["libnvrtc.so.13"]);
        assert_eq!(exact_names(Lib::CublasLt, 12), ["libcublasLt.so.12"]);
        assert_eq!(exact_names(Lib::Cublas, 11), ["libcublas.so.11"]);
        assert_eq!(exact_names(Lib::Cudnn, 13), ["libcudnn.so.9"]);
    }

    #[test]
    fn wheel_layouts_resolve_to_their_own_major_only() {
        let d12 = layout(CU12);
        let d11 = layout(CU11);
        let d13 = layout(CU13);
        let lib12 = d12.path().join("nvidia/cuda_nvrtc/lib");
        let lib11 = d11.path().join("nvidia/cuda_nvrtc/lib");
        let lib13 = d13.path().join("nvidia/cu13/lib");
        let one = |major, dirs: &[PathBuf]| resolve(major, dirs, &[Lib::Nvrtc]);

        assert_eq!(
            one(12, &[lib12.clone()]).unwrap(),
            [(Lib::Nvrtc, lib12.join("libnvrtc.so.12"))]
        );
        assert_eq!(
            one(11, &[lib11.clone()]).unwrap(),
            [(Lib::Nvrtc, lib11.join("libnvrtc.so.11.2"))]
        );
        assert_eq!(
            one(13, &[lib13.clone()]).unwrap(),
            [(Lib::Nvrtc, lib13.join("libnvrtc.so.13"))]
        );
        // The build's major wins wherever it is in the search order.
        let all = [lib13.clone(), lib11.clone(), lib12.clone()];
        assert_eq!(
            one(12, &all).unwrap(),
            [(Lib::Nvrtc, lib12.join("libnvrtc.so.12"))]
        );
        assert_eq!(
            one(11, &all).unwrap(),
            [(Lib::Nvrtc, lib11.join("libnvrtc.so.11.2"))]
        );
        // Only another major present: refused, naming it.
        let e = one(12, &[lib13.clone()]).unwrap_err();
        assert!(
            e.contains("libnvrtc.so.13") && e.contains("CUDA 13") && e.contains("cuda-13"),
            "{e}"
        );
        let e = one(12, &[lib11.clone()]).unwrap_err();
        assert!(e.contains("libnvrtc.so.11.2") && e.contains("CUDA 11"), "{e}");
        // Nothing at all: left to the probe.
        assert!(one(12, &[d12.path().to_path_buf()]).unwrap().is_empty());
    }

    #[test]
    fn unversioned_names_and_old_cudnn_are_not_taken() {
        let d = layout(&[
            "libnvrtc.so",
            "libcublas.so",
            "libcublas.so.11",
            "libcublasLt.so.12",
            "libcublas.so.12",
            "libcudnn.so",
            "libcudnn.so.8",
            "libcudnn.so.8.9.7",
        ]);
        let dirs = [d.path().to_path_buf()];
        let got = resolve(12, &dirs, &[Lib::Cublas, Lib::CublasLt]).unwrap();
        assert_eq!(
            got,
            [
                (Lib::Cublas, d.path().join("libcublas.so.12")),
                (Lib::CublasLt, d.path().join("libcublasLt.so.12"))
            ]
        );
        assert!(resolve(12, &dirs, &[Lib::Nvrtc]).unwrap().is_empty());
        let e = resolve(12, &dirs, &[Lib::Cudnn]).unwrap_err();
        assert!(e.contains("cuDNN 8") && e.contains("libcudnn.so.9"), "{e}");
        std::fs::write(d.path().join("libcudnn.so.9"), b"").unwrap();
        assert_eq!(
            resolve(12, &dirs, &[Lib::Cudnn]).unwrap(),
            [(Lib::Cudnn, d.path().join("libcudnn.so.9"))]
        );
        // CUDA 11's cuBLAS is refused for a CUDA 13 build.
        let e = resolve(13, &dirs, &[Lib::Cublas]).unwrap_err();
        assert!(e.contains("CUDA 11") || e.contains("CUDA 12"), "{e}");
    }
}
