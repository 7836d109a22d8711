//! NVRTC compilation of the custom kernels (`kernels/*.cu`) to machine code for the device in hand.
//!
//! - **Cubin for the exact SM.** A device `sm_XY` that this NVRTC lists (`nvrtcGetSupportedArchs`) gets
//!   a cubin compiled for `sm_XY` (`nvrtcGetCUBIN`); nothing is left to the driver's JIT.
//! - **PTX only for an SM this NVRTC does not know** (a device newer than the toolkit): PTX for the
//!   newest architecture NVRTC knows below the device, and only after checking that the driver
//!   accepts that PTX ISA version ([`check_driver_for_ptx`]).
//! - **No retry with another architecture.** A failed compile is an error naming the source file, the
//!   architecture, the NVRTC version and NVRTC's log.
//! - **Cache.** Compiled images are kept per (source hash, target, NVRTC version) in the user cache
//!   directory ([`cache_dir`]), written atomically, their BLAKE3 checked on load; a damaged or
//!   mismatching entry is compiled again and replaced.
//!
//! Everything but the NVRTC and driver calls is a pure function tested without a GPU; the real NVRTC
//! test (`real_nvrtc_compiles_every_kernel`) compiles every source for sm_70, sm_80, sm_90 and the
//! newest SM NVRTC knows, and runs `ptxas -v` on the PTX.

use std::ffi::CString;
use std::path::{Path, PathBuf};

use cudarc::nvrtc::{result as nvrtc_result, sys as nvrtc_sys};

use crate::backend::kernels::{standalone_source, KernelSource};
use crate::backend::{BackendError, Result};

fn error(op: &'static str, reason: impl std::fmt::Display) -> BackendError {
    BackendError::Device {
        op,
        backend: "cuda",
        reason: reason.to_string(),
    }
}

/// An NVRTC (= CUDA toolkit) version, as `nvrtcVersion` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NvrtcVersion {
    pub major: u32,
    pub minor: u32,
}

impl std::fmt::Display for NvrtcVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// What one source is compiled to. The number is the architecture as NVRTC lists it (`major*10+minor`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// Machine code for exactly `sm_N`.
    Cubin(u32),
    /// PTX for `compute_N`, JIT-compiled by the driver for a newer device.
    Ptx(u32),
}

impl Target {
    /// NVRTC's `--gpu-architecture` value: `sm_N` for a cubin, `compute_N` for PTX.
    pub fn arch(self) -> String {
        match self {
            Target::Cubin(sm) => format!("sm_{sm}"),
            Target::Ptx(sm) => format!("compute_{sm}"),
        }
    }

    fn extension(self) -> &'static str {
        match self {
            Target::Cubin(_) => "cubin",
            Target::Ptx(_) => "ptx",
        }
    }
}

/// The NVRTC options of every kernel for `target`: IEEE division and square root, no flush to zero,
/// no FMA contraction and no fast math, so the kernels compute what the CPU reference computes.
pub fn compile_options(target: Target) -> Vec<String> {
    [
        "--ftz=false",
        "--prec-sqrt=true",
        "--prec-div=true",
        "--fmad=false",
        "-std=c++14",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!("--gpu-architecture={}", target.arch())])
    .collect()
}

/// The target for a device of architecture `sm` (`major*10+minor`) given the architectures this NVRTC
/// supports: a cubin when NVRTC knows `sm`; PTX of the newest known architecture below `sm` when it
/// does not (a device newer than this NVRTC; the caller checks the driver with
/// [`check_driver_for_ptx`]); an error when NVRTC knows nothing at or below `sm` (NVRTC 13 dropped
/// Volta, for instance).
pub fn plan(sm: u32, nvrtc: NvrtcVersion, supported: &[u32]) -> std::result::Result<Target, String> {
    if supported.contains(&sm) {
        return Ok(Target::Cubin(sm));
    }
    match supported.iter().copied().filter(|&a| a < sm).max() {
        Some(below) => Ok(Target::Ptx(below)),
        None => Err(format!(
            "NVRTC {nvrtc} cannot compile for sm_{sm} (it supports {}); use a CUDA build whose NVRTC \
             supports this GPU (README: CUDA versions)",
            supported
                .iter()
                .map(|a| format!("sm_{a}"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// The PTX ISA version NVRTC `nvrtc` writes (`.version` of its PTX). Source: the PTX ISA manual's
/// release history ("PTX ISA Version N.M" ↔ "CUDA x.y", docs.nvidia.com/cuda/parallel-thread-execution,
/// section "Release Notes"); CUDA 12.6 kept 8.5. Checked against the PyPI wheels' NVRTC: 11.8 writes
/// 7.8, 12.9 writes 8.8 (the real-NVRTC test checks this row every run), 13.5 writes 9.5. Other 13.x
/// are not tabled (the driver check then asks for the NVRTC's own version).
pub fn ptx_isa(nvrtc: NvrtcVersion) -> Option<(u32, u32)> {
    Some(match (nvrtc.major, nvrtc.minor) {
        (11, m @ 0..=8) => (7, m),
        (12, m @ 0..=5) => (8, m),
        (12, 6) => (8, 5),
        (12, m @ 7..=9) => (8, m - 1),
        (13, m @ (0 | 5)) => (9, m),
        _ => return None,
    })
}

/// The oldest driver (`cuDriverGetVersion`: 1000·major + 10·minor of the newest CUDA it supports) that
/// JIT-compiles the PTX NVRTC `nvrtc` writes: the driver of the CUDA release that introduced that PTX
/// ISA (CUDA Compatibility guide: a driver JIT-compiles PTX of its own CUDA version or older; minor
/// version compatibility covers cubins, not newer PTX). An NVRTC missing from [`ptx_isa`] needs a
/// driver of at least its own version.
pub fn min_driver_for_ptx(nvrtc: NvrtcVersion) -> i32 {
    let introduced = match ptx_isa(nvrtc) {
        Some((7, m)) => (11, m),
        Some((8, m)) => (12, if m <= 5 { m } else { m + 1 }),
        Some((9, m)) => (13, m),
        _ => (nvrtc.major, nvrtc.minor),
    };
    (introduced.0 * 1000 + introduced.1 * 10) as i32
}

/// Whether the driver (`cuDriverGetVersion`) accepts the PTX of NVRTC `nvrtc`.
pub fn check_driver_for_ptx(driver: i32, nvrtc: NvrtcVersion) -> std::result::Result<(), String> {
    let need = min_driver_for_ptx(nvrtc);
    if driver >= need {
        return Ok(());
    }
    let isa = ptx_isa(nvrtc).map_or("an unknown PTX ISA".to_string(), |(a, b)| {
        format!("PTX ISA {a}.{b}")
    });
    Err(format!(
        "the GPU is newer than NVRTC {nvrtc} knows, so the kernels would be PTX ({isa}), which needs a \
         driver for CUDA {}.{} or newer; this driver supports CUDA {}.{}: update the driver or use a \
         CUDA build whose NVRTC knows this GPU",
        need / 1000,
        need % 1000 / 10,
        driver / 1000,
        driver % 1000 / 10
    ))
}

/// The version of the NVRTC library cudarc loaded.
pub fn nvrtc_version() -> Result<NvrtcVersion> {
    let (mut major, mut minor) = (0, 0);
    // SAFETY: two out-pointers to live integers.
    unsafe { nvrtc_sys::nvrtcVersion(&mut major, &mut minor) }
        .result()
        .map_err(|e| error("kernels: NVRTC version", e))?;
    Ok(NvrtcVersion {
        major: major as u32,
        minor: minor as u32,
    })
}

/// The architectures (`major*10+minor`) this NVRTC compiles for.
pub fn supported_archs() -> Result<Vec<u32>> {
    let mut n = 0;
    // SAFETY: an out-pointer to a live integer.
    unsafe { nvrtc_sys::nvrtcGetNumSupportedArchs(&mut n) }
        .result()
        .map_err(|e| error("kernels: NVRTC architectures", e))?;
    let mut archs = vec![0i32; n.max(0) as usize];
    // SAFETY: `archs` holds the number of entries NVRTC just reported.
    unsafe { nvrtc_sys::nvrtcGetSupportedArchs(archs.as_mut_ptr()) }
        .result()
        .map_err(|e| error("kernels: NVRTC architectures", e))?;
    Ok(archs.into_iter().map(|a| a as u32).collect())
}

/// The CUDA version the driver supports (`cuDriverGetVersion`), e.g. 12040.
pub fn driver_version() -> Result<i32> {
    let mut v = 0;
    // SAFETY: an out-pointer to a live integer; cuDriverGetVersion needs no cuInit.
    let r = unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut v) };
    if r != cudarc::driver::sys::CUresult::CUDA_SUCCESS {
        return Err(error("kernels: driver version", format!("{r:?}")));
    }
    Ok(v)
}

/// An NVRTC program, destroyed on drop.
struct Program(nvrtc_sys::nvrtcProgram);

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: created by create_program and destroyed only here.
        let _ = unsafe { nvrtc_result::destroy_program(self.0) };
    }
}

fn c_text(bytes: Vec<std::ffi::c_char>) -> String {
    let bytes: Vec<u8> = bytes.into_iter().map(|c| c as u8).collect();
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).trim_end().to_string()
}

/// Compiles one kernel source for `target` with [`compile_options`]: the cubin or the PTX text (without
/// its terminating NUL). Any failure is an error naming the file, the architecture, the NVRTC version
/// and NVRTC's log; there is no retry with another architecture.
pub fn compile(src: &KernelSource, target: Target, nvrtc: NvrtcVersion) -> Result<Vec<u8>> {
    let what = || format!("{} for {} with NVRTC {nvrtc}", src.file, target.arch());
    let fail = |e: &dyn std::fmt::Display| error("kernels: NVRTC compile", format!("{}: {e}", what()));
    let text = CString::new(standalone_source(src)).map_err(|e| fail(&e))?;
    let name = CString::new(src.file).map_err(|e| fail(&e))?;
    let prog = Program(nvrtc_result::create_program(&text, Some(name.as_c_str())).map_err(|e| fail(&e))?);
    let options = compile_options(target);
    // SAFETY: `prog` is live until dropped at the end of this function.
    if let Err(e) = unsafe { nvrtc_result::compile_program(prog.0, &options) } {
        // SAFETY: as above.
        let log = unsafe { nvrtc_result::get_program_log(prog.0) }
            .map_or_else(|e| format!("(no log: {e})"), c_text);
        return Err(error(
            "kernels: NVRTC compile",
            format!("{}: {e}; options {options:?}; log:\n{log}", what()),
        ));
    }
    match target {
        Target::Cubin(_) => {
            let mut size = 0usize;
            // SAFETY: `prog` compiled; `size` is a live out-pointer.
            unsafe { nvrtc_sys::nvrtcGetCUBINSize(prog.0, &mut size) }
                .result()
                .map_err(|e| fail(&e))?;
            let mut cubin = vec![0u8; size];
            // SAFETY: `cubin` holds the size NVRTC just reported.
            unsafe { nvrtc_sys::nvrtcGetCUBIN(prog.0, cubin.as_mut_ptr().cast()) }
                .result()
                .map_err(|e| fail(&e))?;
            if cubin.is_empty() {
                return Err(fail(&"NVRTC returned an empty cubin"));
            }
            Ok(cubin)
        }
        Target::Ptx(_) => {
            // SAFETY: `prog` compiled.
            let ptx = unsafe { nvrtc_result::get_ptx(prog.0) }.map_err(|e| fail(&e))?;
            Ok(c_text(ptx).into_bytes())
        }
    }
}

/// The kernel entry points of a compiled image: the function symbols of a cubin (ELF64), the `.entry`
/// directives of PTX.
pub fn entry_points(target: Target, image: &[u8]) -> std::result::Result<Vec<String>, String> {
    match target {
        Target::Cubin(_) => elf_functions(image),
        Target::Ptx(_) => {
            let text = std::str::from_utf8(image).map_err(|e| format!("PTX is not UTF-8: {e}"))?;
            Ok(text
                .lines()
                .filter_map(|l| {
                    let l = l.trim_start();
                    let l = l.strip_prefix(".visible ").unwrap_or(l);
                    let rest = l.strip_prefix(".entry ")?;
                    Some(
                        rest.split(|c: char| c == '(' || c.is_whitespace())
                            .next()?
                            .to_string(),
                    )
                })
                .collect())
        }
    }
}

/// Names of the STT_FUNC symbols of a little-endian ELF64 image (a cubin).
fn elf_functions(elf: &[u8]) -> std::result::Result<Vec<String>, String> {
    let bad = |what: &str| format!("not a valid cubin: {what}");
    let slice = |off: usize, len: usize| {
        off.checked_add(len)
            .and_then(|end| elf.get(off..end))
            .ok_or_else(|| bad("truncated"))
    };
    let u16_at = |off: usize| slice(off, 2).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize);
    let u32_at = |off: usize| slice(off, 4).map(|b| u32::from_le_bytes(b.try_into().unwrap()) as usize);
    let u64_at = |off: usize| slice(off, 8).map(|b| u64::from_le_bytes(b.try_into().unwrap()) as usize);
    if elf.get(..4) != Some(b"\x7fELF") || elf.get(4) != Some(&2) || elf.get(5) != Some(&1) {
        return Err(bad("no little-endian ELF64 header"));
    }
    let (shoff, shentsize, shnum) = (u64_at(0x28)?, u16_at(0x3a)?, u16_at(0x3c)?);
    if shentsize < 64 {
        return Err(bad("section header size"));
    }
    let section = |i: usize| -> std::result::Result<(usize, usize, usize, usize, usize), String> {
        let h = shoff
            .checked_add(i.checked_mul(shentsize).ok_or_else(|| bad("section index"))?)
            .filter(|&h| h <= elf.len())
            .ok_or_else(|| bad("section offset"))?;
        // (type, offset, size, link, entsize); `h` is within the image, so `h + 56` cannot overflow.
        Ok((
            u32_at(h + 4)?,
            u64_at(h + 24)?,
            u64_at(h + 32)?,
            u32_at(h + 40)?,
            u64_at(h + 56)?,
        ))
    };
    let mut names = Vec::new();
    for i in 0..shnum {
        let (kind, off, size, link, entsize) = section(i)?;
        if kind != 2 {
            continue; // SHT_SYMTAB
        }
        if entsize < 24 {
            return Err(bad("symbol size"));
        }
        let (_, str_off, str_size, _, _) = section(link)?;
        let strings = slice(str_off, str_size)?;
        for sym in slice(off, size)?.chunks_exact(entsize) {
            if sym[4] & 0xf != 2 {
                continue; // STT_FUNC
            }
            let name = u32::from_le_bytes([sym[0], sym[1], sym[2], sym[3]]) as usize;
            let tail = strings.get(name..).ok_or_else(|| bad("symbol name"))?;
            let end = tail
                .iter()
                .position(|&b| b == 0)
                .ok_or_else(|| bad("symbol name"))?;
            names.push(String::from_utf8_lossy(&tail[..end]).into_owned());
        }
    }
    Ok(names)
}

/// The entry points `src` declares (the ones the launch layer calls) that `image` lacks.
pub fn missing_entries(
    src: &KernelSource,
    target: Target,
    image: &[u8],
) -> std::result::Result<Vec<&'static str>, String> {
    let have = entry_points(target, image)?;
    Ok(src
        .functions
        .iter()
        .copied()
        .filter(|f| !have.iter().any(|h| h == f))
        .collect())
}

/// The cache directory of compiled kernels from the environment: `$MEDTRAIN_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/medtrain`, else `$HOME/.cache/medtrain`; none when none of them is set (empty
/// values count as unset).
pub fn cache_dir_from(get: impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let var = |k: &str| get(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    var("MEDTRAIN_CACHE_DIR")
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("medtrain")))
        .or_else(|| var("HOME").map(|d| d.join(".cache").join("medtrain")))
}

/// [`cache_dir_from`] the process environment.
pub fn cache_dir() -> Option<PathBuf> {
    cache_dir_from(|k| std::env::var(k).ok())
}

/// The cache file of `src` compiled for `target` by NVRTC `nvrtc`, under `dir`:
/// `kernels/<stem>-<arch>-nvrtc<version>-<hash>.<cubin|ptx>`, where the hash (BLAKE3, 16 bytes) covers
/// the exact source text NVRTC compiles, the options, the target and the NVRTC version, so an edited
/// kernel, header or option is a different entry.
pub fn cache_path(dir: &Path, src: &KernelSource, target: Target, nvrtc: NvrtcVersion) -> PathBuf {
    let mut h = blake3::Hasher::new();
    h.update(b"medtrain kernel cache v1\0");
    h.update(standalone_source(src).as_bytes());
    for o in compile_options(target) {
        h.update(b"\0");
        h.update(o.as_bytes());
    }
    h.update(format!("\0{target:?}\0nvrtc {nvrtc}").as_bytes());
    let key = h.finalize().to_hex();
    let stem = src.file.strip_suffix(".cu").unwrap_or(src.file);
    dir.join("kernels").join(format!(
        "{stem}-{}-nvrtc{nvrtc}-{}.{}",
        target.arch(),
        &key.as_str()[..32],
        target.extension()
    ))
}

/// A cache entry: the BLAKE3 of the image, then the image.
fn encode_entry(image: &[u8]) -> Vec<u8> {
    let mut out = blake3::hash(image).as_bytes().to_vec();
    out.extend_from_slice(image);
    out
}

/// The image of a cache entry whose hash matches, or why it cannot be used.
fn decode_entry(entry: &[u8]) -> std::result::Result<&[u8], &'static str> {
    if entry.len() <= 32 {
        return Err("truncated");
    }
    let (hash, image) = entry.split_at(32);
    if blake3::hash(image).as_bytes() != hash {
        return Err("hash mismatch");
    }
    Ok(image)
}

/// Where an image came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    Cache,
    Compiled,
}

/// The image of `src` for `target`: from the cache under `dir` when an entry is there, its hash
/// matches and it holds every entry point; otherwise from `compile` (NVRTC, or a stand-in in tests),
/// checked for every entry point and written to the cache atomically. A cache that cannot be read or
/// written is logged and bypassed, never an error.
pub fn cached_image(
    dir: Option<&Path>,
    src: &KernelSource,
    target: Target,
    nvrtc: NvrtcVersion,
    compile: impl FnOnce() -> Result<Vec<u8>>,
) -> Result<(Vec<u8>, Origin)> {
    let path = dir.map(|d| cache_path(d, src, target, nvrtc));
    if let Some(path) = &path {
        match std::fs::read(path) {
            Ok(entry) => match decode_entry(&entry) {
                Ok(image) if missing_entries(src, target, image).is_ok_and(|m| m.is_empty()) => {
                    return Ok((image.to_vec(), Origin::Cache));
                }
                Ok(_) => {
                    tracing::warn!(path = %path.display(), "kernel cache entry lacks entry points; recompiling")
                }
                Err(why) => {
                    tracing::warn!(path = %path.display(), why, "kernel cache entry is damaged; recompiling")
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "kernel cache entry unreadable; recompiling")
            }
        }
    }
    let image = compile()?;
    let missing = missing_entries(src, target, &image).map_err(|e| {
        error(
            "kernels: NVRTC output",
            format!("{} for {}: {e}", src.file, target.arch()),
        )
    })?;
    if !missing.is_empty() {
        return Err(error(
            "kernels: NVRTC output",
            format!(
                "{} for {} with NVRTC {nvrtc} lacks entry points {missing:?}",
                src.file,
                target.arch()
            ),
        ));
    }
    if let Some(path) = &path {
        let stored = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| crate::fsx::write_atomic(path, &encode_entry(&image)));
        if let Err(e) = stored {
            tracing::warn!(path = %path.display(), error = %e, "kernel cache entry not written");
        }
    }
    Ok((image, Origin::Compiled))
}

#[cfg(test)]
mod tests;
