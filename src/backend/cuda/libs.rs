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

/// The address cudarc's loader resolves for a symbol: `cudarc_symbol!(cudarc::nvrtc::sys, b"name\0")`
/// loads the library under cudarc's names (its `culib`, which panics when it finds none) and looks the
/// symbol up; nothing is called.
macro_rules! cudarc_symbol {
    ($sys:path, $symbol:expr) => {{
        use $sys as sys;
        std::panic::catch_unwind(|| {
            // SAFETY: loads the library and looks up one symbol, whose address is only compared.
            unsafe { sys::culib().get::<*const c_void>($symbol) }
                .map(|s| *s)
                .map_err(|e| e.to_string())
        })
        .map_err(|_| "cudarc found none of its file names for this library".to_string())
        .and_then(|r| r)
    }};
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
        cudarc_symbol!(cudarc::nvrtc::sys, b"nvrtcVersion\0")
    })
    .map(|_| ())
}

/// The CUDA major version this build's bindings target (the cuda-11 / cuda-12 / cuda-13 feature).
pub fn build_cuda_major() -> u32 {
    if cfg!(feature = "cuda-11") {
        11
    } else if cfg!(feature = "cuda-13") {
        13
    } else {
        12
    }
}

/// The directories [`resolve`] searches, in order: `$MEDTRAIN_CUDA_LIB_DIRS` (colon-separated), then
/// `$LD_LIBRARY_PATH`, then `$CUDA_HOME/lib64` and `$CUDA_PATH/lib64`, then the usual system places of
/// the CUDA toolkit and of distribution packages. Duplicates are dropped.
pub fn search_dirs_from(get: impl Fn(&str) -> Option<String>) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for var in ["MEDTRAIN_CUDA_LIB_DIRS", "LD_LIBRARY_PATH"] {
        for d in get(var).unwrap_or_default().split(':').filter(|d| !d.is_empty()) {
            dirs.push(PathBuf::from(d));
        }
    }
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Some(home) = get(var).filter(|h| !h.is_empty()) {
            dirs.push(Path::new(&home).join("lib64"));
        }
    }
    for d in [
        "/usr/local/cuda/lib64",
        "/usr/local/cuda/targets/x86_64-linux/lib",
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib64",
        "/usr/lib",
    ] {
        dirs.push(PathBuf::from(d));
    }
    let mut seen = std::collections::HashSet::new();
    dirs.retain(|d| seen.insert(d.clone()));
    dirs
}

/// Resolves the build's CUDA libraries ([`resolve`] over [`search_dirs_from`] the environment) and
/// preloads each before cudarc loads it, checking that cudarc then uses that very file. cuBLASLt has no
/// cudarc loader here: preloaded first, it is the copy cuBLAS links against (same SONAME). Runs once
/// per process; the answer is the files used, or why the libraries cannot be used together.
pub fn preload_build_libraries() -> Result<Vec<(Lib, PathBuf)>, String> {
    static DONE: std::sync::OnceLock<Result<Vec<(Lib, PathBuf)>, String>> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        let major = build_cuda_major();
        let dirs = search_dirs_from(|k| std::env::var(k).ok());
        let found = resolve(
            major,
            &dirs,
            &[Lib::CublasLt, Lib::Cublas, Lib::Cudnn, Lib::Nvrtc],
        )?;
        for (lib, path) in &found {
            match lib {
                Lib::Nvrtc => preload(path, "nvrtcVersion", || {
                    cudarc_symbol!(cudarc::nvrtc::sys, b"nvrtcVersion\0")
                }),
                Lib::Cublas => preload(path, "cublasCreate_v2", || {
                    cudarc_symbol!(cudarc::cublas::sys, b"cublasCreate_v2\0")
                }),
                Lib::Cudnn => preload(path, "cudnnCreate", || {
                    cudarc_symbol!(cudarc::cudnn::sys, b"cudnnCreate\0")
                }),
                Lib::CublasLt => preload_only(path).map(|()| std::ptr::null_mut()),
            }?;
        }
        Ok(found)
    })
    .clone()
}

/// Opens `path` with `RTLD_NOW | RTLD_GLOBAL` for good.
fn preload_only(path: &Path) -> Result<(), String> {
    let c_path = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
    // SAFETY: dlopen with a NUL-terminated path; the handle is never closed.
    if unsafe { libc::dlopen(c_path.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) }.is_null() {
        return Err(format!("cannot load {}: {}", path.display(), dl_error()));
    }
    Ok(())
}

/// The last dlerror message.
fn dl_error() -> String {
    // SAFETY: dlerror returns a thread-local C string or null.
    let why = unsafe { libc::dlerror() };
    if why.is_null() {
        "unknown error".to_string()
    } else {
        // SAFETY: non-null C string from dlerror.
        unsafe { std::ffi::CStr::from_ptr(why) }
            .to_string_lossy()
            .into_owned()
    }
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
    fn search_dirs_put_medtrain_and_ld_library_path_first() {
        let env = |k: &str| match k {
            "MEDTRAIN_CUDA_LIB_DIRS" => Some("/wheels/nvrtc:/wheels/cublas".to_string()),
            "LD_LIBRARY_PATH" => Some(":/opt/cuda/lib64:/usr/local/cuda/lib64".to_string()),
            "CUDA_HOME" => Some("/opt/cuda".to_string()),
            _ => None,
        };
        let dirs = search_dirs_from(env);
        let want: Vec<PathBuf> = [
            "/wheels/nvrtc",
            "/wheels/cublas",
            "/opt/cuda/lib64",
            "/usr/local/cuda/lib64",
            "/usr/local/cuda/targets/x86_64-linux/lib",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(dirs[..5], want[..]);
        assert_eq!(
            dirs.iter().filter(|d| d.ends_with("opt/cuda/lib64")).count(),
            1,
            "no duplicates"
        );
        assert!(dirs.ends_with(&[PathBuf::from("/usr/lib")]));
        if cfg!(feature = "cuda-12") {
            assert_eq!(build_cuda_major(), 12);
        }
    }

    /// The runtime path with the real NVRTC wheel: scripts/test.sh puts its lib directory in
    /// MEDTRAIN_CUDA_LIB_DIRS; the probe's preload then resolves and loads exactly that file, and
    /// cudarc uses it.
    #[test]
    fn build_libraries_preload_the_wheel_nvrtc() {
        let dirs = std::env::var("MEDTRAIN_CUDA_LIB_DIRS").unwrap_or_default();
        let Some(dir) = dirs.split(':').find(|d| d.ends_with("nvidia/cuda_nvrtc/lib")) else {
            eprintln!(
                "SKIPPED: MEDTRAIN_CUDA_LIB_DIRS names no nvidia/cuda_nvrtc/lib (scripts/test.sh sets it)"
            );
            return;
        };
        if !cfg!(feature = "cuda-12") {
            eprintln!("SKIPPED: the wheel is CUDA 12's; this is not the cuda-12 build");
            return;
        }
        let files = preload_build_libraries().expect("the wheel's NVRTC is resolved and used by cudarc");
        let nvrtc = files
            .iter()
            .find(|(l, _)| *l == Lib::Nvrtc)
            .map(|(_, p)| p.clone());
        assert_eq!(nvrtc, Some(Path::new(dir).join("libnvrtc.so.12")));
        assert_eq!(crate::backend::cuda::compile::nvrtc_version().unwrap().major, 12);
    }

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
            one(12, std::slice::from_ref(&lib12)).unwrap(),
            [(Lib::Nvrtc, lib12.join("libnvrtc.so.12"))]
        );
        assert_eq!(
            one(11, std::slice::from_ref(&lib11)).unwrap(),
            [(Lib::Nvrtc, lib11.join("libnvrtc.so.11.2"))]
        );
        assert_eq!(
            one(13, std::slice::from_ref(&lib13)).unwrap(),
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
        let e = one(12, std::slice::from_ref(&lib13)).unwrap_err();
        assert!(
            e.contains("libnvrtc.so.13") && e.contains("CUDA 13") && e.contains("cuda-13"),
            "{e}"
        );
        let e = one(12, std::slice::from_ref(&lib11)).unwrap_err();
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
