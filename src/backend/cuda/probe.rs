//! Whether this process can use CUDA, decided before cudarc touches a library: with dynamic loading,
//! cudarc panics on the first call into a library it cannot load, so each one is opened here first,
//! after `libs` has preloaded the exact files of the build's CUDA major.

use cudarc::driver::CudaContext;

/// What the probe found on a machine where CUDA is usable.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DeviceInfo {
    /// Devices this process can see (after CUDA_VISIBLE_DEVICES).
    pub visible_devices: usize,
}

/// Why CUDA cannot be used here; `reason` names the missing library or the missing device.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("CUDA is not available: {reason}")]
pub struct Unavailable {
    pub reason: String,
}

/// (what it is, cudarc's library stem, cudarc's presence check).
type Library = (&'static str, &'static str, unsafe fn() -> bool);

/// The libraries the CUDA backend loads, in the order it needs them, with cudarc's own presence check
/// (which tries the same file names as the loader it uses later).
fn libraries() -> [Library; 4] {
    [
        (
            "the CUDA driver (libcuda)",
            "cuda",
            cudarc::driver::sys::is_culib_present,
        ),
        ("cuBLAS", "cublas", cudarc::cublas::sys::is_culib_present),
        ("cuDNN", "cudnn", cudarc::cudnn::sys::is_culib_present),
        ("NVRTC", "nvrtc", cudarc::nvrtc::sys::is_culib_present),
    ]
}

/// The file names tried for one library, shortened for a message.
fn candidates(stem: &str) -> String {
    let names = cudarc::get_lib_name_candidates(stem);
    let mut shown: Vec<String> = names.iter().take(3).cloned().collect();
    if let Some(last) = names.iter().rev().find(|n| n.contains(".so.")) {
        shown.push(last.clone());
    }
    shown.dedup();
    shown.join(", ")
}

/// The first library of `present` (one flag per entry of `libraries()`) that is missing, as a reason.
pub fn missing_library_reason(present: &[bool]) -> Option<String> {
    libraries()
        .iter()
        .zip(present)
        .find(|(_, &ok)| !ok)
        .map(|((what, stem, _), _)| {
            format!(
                "{what} could not be loaded (tried {}; is it on LD_LIBRARY_PATH?)",
                candidates(stem)
            )
        })
}

/// Resolves and preloads the build's CUDA libraries (`libs`: exact versioned files of the build's CUDA
/// major, used by cudarc as loaded), checks every library, then asks the driver for the device count.
/// Never panics.
pub fn probe() -> Result<DeviceInfo, Unavailable> {
    match super::libs::preload_build_libraries() {
        Ok(files) => {
            for (lib, path) in files {
                tracing::debug!(?lib, path = %path.display(), "CUDA library");
            }
        }
        Err(reason) => return Err(Unavailable { reason }),
    }
    let present: Vec<bool> = libraries()
        .iter()
        // SAFETY: each check only opens and closes the shared library with libloading; it runs no
        // code of the library beyond its initialisers, and has no preconditions.
        .map(|(_, _, check)| unsafe { check() })
        .collect();
    if let Some(reason) = missing_library_reason(&present) {
        return Err(Unavailable { reason });
    }
    let count = std::panic::catch_unwind(CudaContext::device_count)
        .map_err(|_| Unavailable {
            reason: "the CUDA driver is missing a function this build needs (driver too old?)".into(),
        })?
        .map_err(|e| Unavailable {
            reason: format!("the CUDA driver did not initialise: {e:?}"),
        })?;
    if count <= 0 {
        let cvd = std::env::var("CUDA_VISIBLE_DEVICES").unwrap_or_else(|_| "unset".into());
        return Err(Unavailable {
            reason: format!("the CUDA driver sees no device (CUDA_VISIBLE_DEVICES={cvd})"),
        });
    }
    Ok(DeviceInfo {
        visible_devices: count as usize,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reason_names_the_first_missing_library() {
        let r = missing_library_reason(&[true, true, false, false]).expect("a library is missing");
        assert!(r.starts_with("cuDNN could not be loaded"), "{r}");
        assert!(r.contains("libcudnn"), "{r}");
        let r = missing_library_reason(&[false, true, true, true]).expect("libcuda is missing");
        assert!(r.contains("libcuda"), "{r}");
        assert_eq!(missing_library_reason(&[true; 4]), None);
    }

    #[test]
    fn probe_returns_instead_of_panicking() {
        // On a machine without a GPU this is Unavailable with a reason; with one, the device count.
        match probe() {
            Ok(info) => assert!(info.visible_devices > 0),
            Err(e) => assert!(!e.reason.is_empty()),
        }
    }
}
