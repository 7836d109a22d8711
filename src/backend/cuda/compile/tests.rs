use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;
use crate::backend::kernels::{BLOCK_THREADS, SOURCES};

const V12_9: NvrtcVersion = NvrtcVersion { major: 12, minor: 9 };
const V13_0: NvrtcVersion = NvrtcVersion { major: 13, minor: 0 };

#[test]
fn options_name_the_exact_architecture_and_ieee_math() {
    let common = [
        "--ftz=false",
        "--prec-sqrt=true",
        "--prec-div=true",
        "--fmad=false",
        "-std=c++14",
    ];
    let mut want: Vec<String> = common.iter().map(|s| s.to_string()).collect();
    want.push("--gpu-architecture=sm_86".into());
    assert_eq!(compile_options(Target::Cubin(86)), want);
    *want.last_mut().unwrap() = "--gpu-architecture=compute_90".into();
    assert_eq!(compile_options(Target::Ptx(90)), want);
    assert!(!compile_options(Target::Cubin(80))
        .iter()
        .any(|o| o.contains("fast-math")));
}

#[test]
fn plan_compiles_a_cubin_for_a_known_sm_and_ptx_only_for_a_newer_one() {
    let nvrtc13 = [75, 80, 86, 87, 89, 90, 100, 103, 110, 120, 121];
    let nvrtc12 = [
        50, 52, 53, 60, 61, 62, 70, 72, 75, 80, 86, 87, 89, 90, 100, 101, 103, 120, 121,
    ];
    assert_eq!(plan(80, V12_9, &nvrtc12), Ok(Target::Cubin(80)));
    assert_eq!(plan(70, V12_9, &nvrtc12), Ok(Target::Cubin(70)));
    assert_eq!(plan(121, V12_9, &nvrtc12), Ok(Target::Cubin(121)));
    // A device newer than NVRTC knows: PTX of the newest architecture below it.
    assert_eq!(plan(130, V12_9, &nvrtc12), Ok(Target::Ptx(121)));
    // An SM between known ones is also PTX of the one below, never a guess above.
    assert_eq!(plan(88, V12_9, &nvrtc12), Ok(Target::Ptx(87)));
    // NVRTC 13 dropped Volta: an error naming both, not a fallback.
    let e = plan(70, V13_0, &nvrtc13).unwrap_err();
    assert!(
        e.contains("sm_70") && e.contains("NVRTC 13.0") && e.contains("sm_75"),
        "{e}"
    );
    assert!(plan(80, V13_0, &[]).is_err());
}

#[test]
fn ptx_isa_and_driver_table() {
    let v = |major, minor| NvrtcVersion { major, minor };
    assert_eq!(ptx_isa(v(11, 8)), Some((7, 8)));
    assert_eq!(ptx_isa(v(12, 0)), Some((8, 0)));
    assert_eq!(ptx_isa(v(12, 4)), Some((8, 4)));
    assert_eq!(ptx_isa(v(12, 6)), Some((8, 5)));
    assert_eq!(ptx_isa(v(12, 8)), Some((8, 7)));
    assert_eq!(ptx_isa(v(12, 9)), Some((8, 8)));
    assert_eq!(ptx_isa(v(13, 0)), Some((9, 0)));
    assert_eq!(ptx_isa(v(13, 5)), Some((9, 5)));
    assert_eq!(ptx_isa(v(13, 2)), None);
    assert_eq!(min_driver_for_ptx(v(11, 8)), 11080);
    assert_eq!(min_driver_for_ptx(v(12, 6)), 12050);
    assert_eq!(min_driver_for_ptx(v(12, 9)), 12090);
    assert_eq!(min_driver_for_ptx(v(13, 0)), 13000);
    assert_eq!(min_driver_for_ptx(v(13, 5)), 13050);
    // Unknown to the table: at least the NVRTC's own version.
    assert_eq!(min_driver_for_ptx(v(13, 2)), 13020);
    assert_eq!(min_driver_for_ptx(v(14, 0)), 14000);
    assert!(check_driver_for_ptx(12090, V12_9).is_ok());
    assert!(check_driver_for_ptx(13000, V12_9).is_ok());
    let e = check_driver_for_ptx(12080, V12_9).unwrap_err();
    assert!(
        e.contains("PTX ISA 8.8") && e.contains("CUDA 12.9") && e.contains("CUDA 12.8"),
        "{e}"
    );
}

#[test]
fn cache_dir_prefers_medtrain_then_xdg_then_home() {
    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    }
    let all = [
        ("MEDTRAIN_CACHE_DIR", "/m"),
        ("XDG_CACHE_HOME", "/x"),
        ("HOME", "/h"),
    ];
    assert_eq!(cache_dir_from(env(&all)), Some(PathBuf::from("/m")));
    assert_eq!(cache_dir_from(env(&all[1..])), Some(PathBuf::from("/x/medtrain")));
    assert_eq!(
        cache_dir_from(env(&all[2..])),
        Some(PathBuf::from("/h/.cache/medtrain"))
    );
    assert_eq!(
        cache_dir_from(env(&[("MEDTRAIN_CACHE_DIR", ""), ("HOME", "/h")])),
        Some(PathBuf::from("/h/.cache/medtrain"))
    );
    assert_eq!(cache_dir_from(env(&[])), None);
}

#[test]
fn cache_key_covers_source_target_and_nvrtc() {
    let dir = Path::new("/c");
    let (a, b) = (&SOURCES[0], &SOURCES[1]);
    let p = cache_path(dir, a, Target::Cubin(80), V12_9);
    assert_eq!(p, cache_path(dir, a, Target::Cubin(80), V12_9), "stable");
    assert!(p.starts_with("/c/kernels"));
    let name = p.file_name().unwrap().to_str().unwrap();
    assert!(
        name.starts_with("elementwise-sm_80-nvrtc12.9-") && name.ends_with(".cubin"),
        "{name}"
    );
    let others = [
        cache_path(dir, b, Target::Cubin(80), V12_9),
        cache_path(dir, a, Target::Cubin(86), V12_9),
        cache_path(dir, a, Target::Ptx(80), V12_9),
        cache_path(dir, a, Target::Cubin(80), NvrtcVersion { major: 12, minor: 8 }),
    ];
    for o in &others {
        assert_ne!(&p, o);
    }
    // An edited source (same file name) is another entry.
    let edited = KernelSource {
        source: "// edited\n",
        ..*a
    };
    assert_ne!(p, cache_path(dir, &edited, Target::Cubin(80), V12_9));
}

/// PTX text declaring every entry point of `src` (a stand-in for NVRTC).
fn fake_ptx(src: &KernelSource) -> Vec<u8> {
    let mut t = String::from(".version 8.8\n.target sm_80\n");
    for f in src.functions {
        t.push_str(&format!(
            ".visible .entry {f}(\n\t.param .u64 {f}_param_0\n)\n{{\n\tret;\n}}\n"
        ));
    }
    t.into_bytes()
}

#[test]
fn cache_hit_corrupt_entry_and_missing_entry_points() {
    let dir = tempfile::tempdir().unwrap();
    let src = &SOURCES[2];
    let target = Target::Ptx(80);
    let compiled = |calls: &std::cell::Cell<u32>| {
        calls.set(calls.get() + 1);
        Ok(fake_ptx(src))
    };
    let calls = std::cell::Cell::new(0);
    let (img, origin) = cached_image(Some(dir.path()), src, target, V12_9, || compiled(&calls)).unwrap();
    assert_eq!((origin, calls.get()), (Origin::Compiled, 1));
    assert_eq!(img, fake_ptx(src));
    let path = cache_path(dir.path(), src, target, V12_9);
    assert!(path.exists());

    let (img2, origin) = cached_image(Some(dir.path()), src, target, V12_9, || compiled(&calls)).unwrap();
    assert_eq!((origin, calls.get()), (Origin::Cache, 1));
    assert_eq!(img2, img);

    // One flipped byte: the hash no longer matches, so the entry is compiled again and replaced.
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let (img3, origin) = cached_image(Some(dir.path()), src, target, V12_9, || compiled(&calls)).unwrap();
    assert_eq!((origin, calls.get()), (Origin::Compiled, 2));
    assert_eq!(img3, img);
    assert_eq!(
        decode_entry(&std::fs::read(&path).unwrap()).unwrap(),
        &img[..],
        "entry repaired"
    );

    // Truncated, and a well-formed entry without the entry points: both recompiled.
    std::fs::write(&path, &bytes[..10]).unwrap();
    let (_, origin) = cached_image(Some(dir.path()), src, target, V12_9, || compiled(&calls)).unwrap();
    assert_eq!((origin, calls.get()), (Origin::Compiled, 3));
    std::fs::write(&path, encode_entry(b".version 8.8\n")).unwrap();
    let (_, origin) = cached_image(Some(dir.path()), src, target, V12_9, || compiled(&calls)).unwrap();
    assert_eq!((origin, calls.get()), (Origin::Compiled, 4));

    // Output lacking an entry point the launch layer names is an error, and is not cached.
    let other = tempfile::tempdir().unwrap();
    let e = cached_image(Some(other.path()), src, target, V12_9, || {
        Ok(fake_ptx(&SOURCES[0]))
    })
    .unwrap_err();
    assert!(e.to_string().contains("mt_cross_entropy_rows"), "{e}");
    assert!(!cache_path(other.path(), src, target, V12_9).exists());

    // A compile error passes through; no cache directory works too.
    let e = cached_image(None, src, target, V12_9, || {
        Err(error("kernels: NVRTC compile", "boom"))
    })
    .unwrap_err();
    assert!(e.to_string().contains("boom"));
    assert_eq!(
        cached_image(None, src, target, V12_9, || Ok(fake_ptx(src)))
            .unwrap()
            .1,
        Origin::Compiled
    );
}

#[test]
fn entry_points_of_ptx_and_malformed_cubins() {
    let src = &SOURCES[3];
    let mut got = entry_points(Target::Ptx(80), &fake_ptx(src)).unwrap();
    got.sort();
    let mut want: Vec<String> = src.functions.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(got, want);
    assert!(entry_points(Target::Cubin(80), b"not an elf").is_err());
    assert!(entry_points(Target::Cubin(80), b"\x7fELF\x02\x01\x01\0\0\0").is_err());
    let mut header = vec![0u8; 64];
    header[..6].copy_from_slice(b"\x7fELF\x02\x01");
    header[0x28..0x30].copy_from_slice(&u64::MAX.to_le_bytes());
    header[0x3a] = 64;
    header[0x3c] = 1;
    assert!(
        entry_points(Target::Cubin(80), &header).is_err(),
        "section table out of range"
    );
}

// ---- the real NVRTC of the PyPI wheels ----

/// `SKIPPED: reason` on stderr, or a failure when `MEDTRAIN_REQUIRE_NVRTC=1` (scripts/test.sh sets it
/// after installing the wheels).
fn skip(reason: &str) {
    if std::env::var("MEDTRAIN_REQUIRE_NVRTC").is_ok_and(|v| v == "1") {
        panic!("MEDTRAIN_REQUIRE_NVRTC=1 but {reason}");
    }
    eprintln!("SKIPPED: {reason}");
}

/// The site-packages style directory holding `nvidia/cuda_nvrtc` and `nvidia/cuda_nvcc`:
/// `$MEDTRAIN_CUDA_WHEELS` (scripts/cuda-wheels.sh), else `target/cuda-wheels`, else the
/// site-packages of the `$MEDTRAIN_PYTHON` virtual environment.
fn wheel_site() -> Option<PathBuf> {
    if let Ok(d) = std::env::var("MEDTRAIN_CUDA_WHEELS") {
        return Some(PathBuf::from(d));
    }
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/cuda-wheels");
    if local.join("nvidia").is_dir() {
        return Some(local);
    }
    let python = PathBuf::from(std::env::var("MEDTRAIN_PYTHON").ok()?);
    let venv = python.parent()?.parent()?;
    std::fs::read_dir(venv.join("lib"))
        .ok()?
        .flatten()
        .map(|e| e.path().join("site-packages"))
        .find(|p| p.join("nvidia/cuda_nvrtc").is_dir())
}

/// Loads the wheel's libnvrtc.so.12 for cudarc (libs::preload_nvrtc) and returns the wheel directory.
fn real_nvrtc() -> Option<PathBuf> {
    if !cfg!(feature = "cuda-12") {
        // Not a failure under MEDTRAIN_REQUIRE_NVRTC: the wheels installed are CUDA 12's.
        eprintln!("SKIPPED: the real-NVRTC tests use the CUDA 12 wheel; this is not the cuda-12 build");
        return None;
    }
    let Some(site) = wheel_site() else {
        skip("needs the nvidia-cuda-nvrtc-cu12 wheel (scripts/cuda-wheels.sh; MEDTRAIN_CUDA_WHEELS)");
        return None;
    };
    let lib = site.join("nvidia/cuda_nvrtc/lib/libnvrtc.so.12");
    if !lib.exists() {
        skip(&format!("needs {} (scripts/cuda-wheels.sh)", lib.display()));
        return None;
    }
    crate::backend::cuda::libs::preload_nvrtc(&lib).expect("cudarc uses the wheel's NVRTC");
    Some(site)
}

/// Per function of `ptxas -v` output: (name, registers, spill store bytes, spill load bytes).
fn ptxas_usage(log: &str) -> Vec<(String, u32, u32, u32)> {
    let mut out: Vec<(String, u32, u32, u32)> = Vec::new();
    let num = |s: &str| s.split_whitespace().next().and_then(|n| n.parse::<u32>().ok());
    for line in log.lines() {
        if let Some(rest) = line.split("Function properties for ").nth(1) {
            out.push((rest.trim().to_string(), 0, 0, 0));
        } else if line.contains("bytes spill stores") {
            let last = out.last_mut().expect("spill line after a function");
            for part in line.split(',') {
                if part.contains("spill stores") {
                    last.2 = num(part).expect("spill stores");
                } else if part.contains("spill loads") {
                    last.3 = num(part).expect("spill loads");
                }
            }
        } else if let Some(rest) = line.split("Used ").nth(1) {
            let regs = num(rest).expect("register count");
            if let Some(f) = out.last_mut() {
                f.1 = regs;
            }
        }
    }
    out
}

#[test]
fn ptxas_usage_parses_the_verbose_report() {
    let log = "ptxas info    : 0 bytes gmem\n\
ptxas info    : Compiling entry function 'mt_fill' for 'sm_80'\n\
ptxas info    : Function properties for mt_fill\n\
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n\
ptxas info    : Used 10 registers, used 0 barriers, 376 bytes cmem[0]\n\
ptxas info    : Function properties for mt_cox_loss\n\
    8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads\n\
ptxas info    : Used 40 registers, 380 bytes cmem[0]\n";
    assert_eq!(
        ptxas_usage(log),
        [
            ("mt_fill".to_string(), 10, 0, 0),
            ("mt_cox_loss".to_string(), 40, 4, 12)
        ]
    );
}

/// Every source through the project's own `compile` (the same options as on a GPU) with the wheel's
/// NVRTC, for sm_70, sm_80, sm_90 and the newest SM it knows: a cubin holding every entry point the
/// launch layer names, PTX of the tabled ISA holding them too, and `ptxas -v` of that PTX without
/// spills and with registers that fit the launch block (BLOCK_THREADS; single-thread launches less).
#[test]
fn real_nvrtc_compiles_every_kernel() {
    let Some(site) = real_nvrtc() else { return };
    let nvrtc = nvrtc_version().unwrap();
    let supported = supported_archs().unwrap();
    let newest = *supported.iter().max().unwrap();
    eprintln!("NVRTC {nvrtc}; architectures {supported:?}");
    let ptxas = site.join("nvidia/cuda_nvcc/bin/ptxas");
    if !ptxas.exists() {
        skip(&format!(
            "the register and spill check needs {} (nvidia-cuda-nvcc-cu12)",
            ptxas.display()
        ));
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut sms = vec![70, 80, 90, newest];
    sms.dedup();
    for sm in sms {
        assert_eq!(plan(sm, nvrtc, &supported), Ok(Target::Cubin(sm)));
        let (mut max_regs, mut spills) = (0u32, 0u32);
        for src in SOURCES {
            let cubin = compile(src, Target::Cubin(sm), nvrtc).unwrap();
            let missing = missing_entries(src, Target::Cubin(sm), &cubin).unwrap();
            assert!(
                missing.is_empty(),
                "sm_{sm} {}: cubin lacks {missing:?}",
                src.file
            );

            let ptx = compile(src, Target::Ptx(sm), nvrtc).unwrap();
            let missing = missing_entries(src, Target::Ptx(sm), &ptx).unwrap();
            assert!(missing.is_empty(), "sm_{sm} {}: PTX lacks {missing:?}", src.file);
            let text = String::from_utf8(ptx).unwrap();
            let (a, b) = ptx_isa(nvrtc).expect("the wheel's NVRTC is in the PTX ISA table");
            assert!(
                text.contains(&format!("\n.version {a}.{b}\n")),
                "{}: PTX ISA not {a}.{b}",
                src.file
            );
            assert!(
                text.contains(&format!("\n.target sm_{sm}\n")),
                "{}: .target",
                src.file
            );

            if !ptxas.exists() {
                continue;
            }
            let file = tmp.path().join(format!("{}-sm_{sm}.ptx", src.file));
            std::fs::write(&file, &text).unwrap();
            let out = Command::new(&ptxas)
                .arg("-v")
                .arg(format!("--gpu-name=sm_{sm}"))
                .arg("-o")
                .arg(tmp.path().join("out.cubin"))
                .arg(&file)
                .output()
                .expect("run ptxas");
            let log =
                String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "ptxas sm_{sm} {}:\n{log}", src.file);
            let usage = ptxas_usage(&log);
            for f in src.functions {
                assert!(
                    usage.iter().any(|u| u.0 == *f),
                    "ptxas sm_{sm}: no report for {f}:\n{log}"
                );
            }
            for (name, regs, stores, loads) in &usage {
                assert_eq!((stores, loads), (&0, &0), "sm_{sm} {name}: spills");
                // Registers are allocated in units of 8 per thread; 64K registers per SM (sm_70..sm_12x).
                assert!(
                    *regs <= 255 && regs.div_ceil(8) * 8 * BLOCK_THREADS <= 65536,
                    "sm_{sm} {name}: {regs} registers do not fit {BLOCK_THREADS} threads"
                );
                eprintln!("sm_{sm} {} {name}: {regs} registers, 0 spills", src.file);
                max_regs = max_regs.max(*regs);
                spills += stores + loads;
            }
        }
        eprintln!(
            "sm_{sm}: {} sources, max {max_regs} registers, {spills} spill bytes",
            SOURCES.len()
        );
    }
}

/// A compile error is an error naming the file, the architecture, the NVRTC version and NVRTC's log,
/// and the cache round trip with the real NVRTC gives back the same cubin.
#[test]
fn real_nvrtc_errors_name_everything_and_cache_round_trips() {
    let Some(_) = real_nvrtc() else { return };
    let nvrtc = nvrtc_version().unwrap();
    let broken = KernelSource {
        file: "broken.cu",
        source: "MT_KERNEL mt_broken(u64 n) { undeclared_name(n); }\n",
        functions: &["mt_broken"],
    };
    let e = compile(&broken, Target::Cubin(80), nvrtc)
        .unwrap_err()
        .to_string();
    for want in ["broken.cu", "sm_80", &format!("NVRTC {nvrtc}"), "undeclared_name"] {
        assert!(e.contains(want), "error lacks {want:?}: {e}");
    }

    let dir = tempfile::tempdir().unwrap();
    let src = &SOURCES[0];
    let t = Target::Cubin(80);
    let (first, o1) = cached_image(Some(dir.path()), src, t, nvrtc, || compile(src, t, nvrtc)).unwrap();
    let (second, o2) = cached_image(Some(dir.path()), src, t, nvrtc, || panic!("cached")).unwrap();
    assert_eq!((o1, o2), (Origin::Compiled, Origin::Cache));
    assert_eq!(first, second);
}

/// Every kernel name the launch layer (backend/cuda/kernels.rs) launches is declared by a source, so
/// the entry-point checks above cover every launch.
#[test]
fn every_launched_kernel_is_declared_by_a_source() {
    let launch_layer = include_str!("../kernels.rs");
    let mut launched: Vec<&str> = launch_layer
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|s| s.starts_with("mt_") && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .collect();
    launched.sort();
    launched.dedup();
    assert!(launched.len() > 20, "found {launched:?}");
    for name in launched {
        assert!(
            SOURCES.iter().any(|s| s.functions.contains(&name)),
            "{name} is launched but no kernels/*.cu source declares it"
        );
    }
}
