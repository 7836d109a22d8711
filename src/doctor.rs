//! `medtrain doctor`: will it run here? Checks MPI, HDF5, the CUDA libraries and the GPU, the
//! node-local disk, the Slurm environment and the thread count, each as ok / warning / error with the
//! remedy. The CUDA rows come from the same resolver and probe the backend uses (`backend::cuda::libs`,
//! `backend::cuda::probe`), so doctor and a real run cannot disagree.

use crate::backend::cuda::libs::{build_cuda_major, resolve, search_dirs_from, Lib};
use crate::exit::{Failure, EXIT_FAILURES, EXIT_OK};
use clap::Args;
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// The device the job will use: with `cuda`, a missing GPU or library is an error, not a warning.
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DoctorDevice,
    /// Node-local directory the job will stage to (free space and write speed are measured there).
    #[arg(long)]
    pub local: Option<PathBuf>,
    /// Print the checks as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DoctorDevice {
    Auto,
    Cpu,
    Cuda,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warning,
    Error,
}

/// One line of the report.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub name: String,
    pub status: Status,
    pub detail: String,
    /// What to do about a warning or an error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remedy: Option<String>,
}

fn check(name: &str, status: Status, detail: impl Into<String>, remedy: Option<&str>) -> Check {
    Check {
        name: name.into(),
        status,
        detail: detail.into(),
        remedy: remedy.map(str::to_string),
    }
}

/// The first line of a C string as a library reports it: up to its NUL (Open MPI's version string
/// carries one, which made a job log a binary file to grep), trimmed.
fn first_line(text: &str) -> String {
    let text = text.split('\0').next().unwrap_or_default();
    text.lines().next().unwrap_or_default().trim().to_string()
}

/// The launcher variables and whether medtrain would initialise MPI, plus the library's version.
fn mpi_check(env: &[(String, String)]) -> Check {
    let mode = crate::dist::MpiMode::parse(
        env.iter()
            .find(|(k, _)| k == crate::dist::MPI_ENV)
            .map(|(_, v)| v.as_str()),
    );
    let library = mpi::environment::library_version()
        .map(|v| first_line(&v))
        .unwrap_or_else(|_| "unknown".into());
    let launcher = crate::dist::launcher_from_env(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    match (mode, launcher) {
        (Err(e), _) => check(
            "mpi",
            Status::Error,
            format!("{e}; library {library}"),
            Some("set MEDTRAIN_MPI to always, never or auto"),
        ),
        (Ok(crate::dist::MpiMode::Never), _) => check(
            "mpi",
            Status::Warning,
            format!("MEDTRAIN_MPI=never: every process is a world of one; library {library}"),
            Some("unset MEDTRAIN_MPI to use MPI under a launcher"),
        ),
        (Ok(_), Some(var)) => check(
            "mpi",
            Status::Ok,
            format!("started by a launcher ({var}): MPI will initialise; library {library}"),
            None,
        ),
        (Ok(_), None) => check(
            "mpi",
            Status::Ok,
            format!(
                "no launcher: a world of one without MPI (under mpirun or srun --mpi=pmix it initialises); library {library}"
            ),
            None,
        ),
    }
}

fn hdf5_check() -> Check {
    let (a, b, c) = hdf5::library_version();
    let status = if (a, b) >= (1, 10) {
        Status::Ok
    } else {
        Status::Error
    };
    check(
        "hdf5",
        status,
        format!("libhdf5 {a}.{b}.{c}"),
        (status != Status::Ok).then_some("install HDF5 1.10 or newer (libhdf5-dev)"),
    )
}

/// The version a library file's name carries (`libcudnn.so.9.10.2` → `9.10.2`), following symlinks.
fn file_version(path: &Path) -> String {
    let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let name = real.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    name.split_once(".so.")
        .map_or("unversioned".into(), |(_, v)| v.to_string())
}

/// One row per CUDA library the build loads: its resolved file and version, or why none fits; and
/// the resolved cuDNN's file version, for the support table.
fn library_checks(needed: bool, env: &impl Fn(&str) -> Option<String>) -> (Vec<Check>, Option<String>) {
    let major = build_cuda_major();
    let dirs = search_dirs_from(env);
    let missing = if needed { Status::Error } else { Status::Warning };
    let mut cudnn_version = None;
    let rows = Lib::ALL
        .iter()
        .map(|&lib| {
            let name = format!("cuda library {lib:?}").to_lowercase();
            let remedy =
                "put the CUDA libraries of this build's major on LD_LIBRARY_PATH or MEDTRAIN_CUDA_LIB_DIRS";
            match resolve(major, &dirs, &[lib]) {
                Ok(found) => match found.first() {
                    Some((_, path)) => {
                        let version = file_version(path);
                        if lib == Lib::Cudnn {
                            cudnn_version = Some(version.clone());
                        }
                        check(
                            &name,
                            Status::Ok,
                            format!("{} (version {version})", path.display()),
                            None,
                        )
                    }
                    None => check(
                        &name,
                        missing,
                        format!(
                            "not found for CUDA {major} in {} directories searched",
                            dirs.len()
                        ),
                        Some(remedy),
                    ),
                },
                Err(reason) => check(&name, missing, reason, Some(remedy)),
            }
        })
        .collect();
    (rows, cudnn_version)
}

/// cuDNN 9's version number (`cudnnGetVersion`'s encoding) from a file version such as `9.10.2`.
fn cudnn_number(version: &str) -> Option<u32> {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
    let (major, minor, patch) = (
        parts.next()??,
        parts.next().flatten().unwrap_or(0),
        parts.next().flatten().unwrap_or(0),
    );
    Some(major * 10000 + minor * 100 + patch)
}

/// The rows of the (cuDNN version → SM) support table (`backend::cuda::support`, the one the start-up
/// self-test applies) that concern the resolved cuDNN, for the GPUs a cluster may hold: a login node
/// without a GPU learns that its cuDNN will be refused on, say, the V100 nodes.
fn cudnn_support_check(version: Option<&str>) -> Option<Check> {
    use crate::backend::cuda::support::{cudnn_version_text, Verdict, KNOWN};
    let n = cudnn_number(version?)?;
    let hits: Vec<String> = KNOWN
        .iter()
        .filter(|k| (k.cudnn_from..k.cudnn_below).contains(&n) && k.verdict == Verdict::Refuse)
        .map(|k| {
            format!(
                "sm_{}-sm_{}: {} ({})",
                k.sm_from,
                k.sm_below.min(999) - 1,
                k.problem,
                k.remedy
            )
        })
        .collect();
    Some(if hits.is_empty() {
        check(
            "cudnn support",
            Status::Ok,
            format!(
                "cuDNN {} has no known bad GPU architecture",
                cudnn_version_text(n)
            ),
            None,
        )
    } else {
        check(
            "cudnn support",
            Status::Warning,
            format!(
                "cuDNN {} is refused on {}",
                cudnn_version_text(n),
                hits.join("; ")
            ),
            Some("nodes with those GPUs need another cuDNN (the start-up self-test refuses them)"),
        )
    })
}

fn gpu_check(needed: bool) -> Check {
    match crate::backend::cuda::probe::probe() {
        Ok(info) => check(
            "gpu",
            Status::Ok,
            format!("{} visible device(s)", info.visible_devices),
            None,
        ),
        Err(e) => check(
            "gpu",
            if needed { Status::Error } else { Status::Warning },
            format!("{}; jobs run on the CPU", e.reason),
            Some(if needed {
                "run on a GPU node (check CUDA_VISIBLE_DEVICES and the driver), or use --device cpu"
            } else {
                "none needed for --device cpu; on a GPU node, check the driver and CUDA_VISIBLE_DEVICES"
            }),
        ),
    }
}

/// Bytes written by the write-speed probe.
const PROBE_BYTES: usize = 64 << 20;

/// Free space and synced write speed of the node-local directory.
fn local_check(local: Option<&Path>) -> Check {
    let Some(dir) = local else {
        return check(
            "local disk",
            Status::Warning,
            "no --local DIR given: free space and write speed of the staging disk not checked",
            Some("give --local with the node-local directory (e.g. $SLURM_TMPDIR)"),
        );
    };
    let free = match crate::stage::copy::free_bytes(dir) {
        Ok(b) => b,
        Err(e) => {
            return check(
                "local disk",
                Status::Error,
                format!("{}: {e}", dir.display()),
                Some("create the directory or give another --local"),
            )
        }
    };
    let path = dir.join(format!(".medtrain-doctor-{}", std::process::id()));
    let started = Instant::now();
    let written = std::fs::File::create(&path).and_then(|mut f| {
        let block = vec![0x5au8; 1 << 20];
        for _ in 0..PROBE_BYTES / block.len() {
            f.write_all(&block)?;
        }
        f.sync_all()
    });
    let seconds = started.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&path);
    match written {
        Ok(()) => check(
            "local disk",
            Status::Ok,
            format!(
                "{}: {:.1} GiB free, {:.0} MB/s synced write",
                dir.display(),
                free as f64 / (1u64 << 30) as f64,
                PROBE_BYTES as f64 / seconds / 1e6
            ),
            None,
        ),
        Err(e) => check(
            "local disk",
            Status::Error,
            format!("{}: cannot write: {e}", dir.display()),
            Some("give a writable node-local directory with --local"),
        ),
    }
}

/// The Slurm job, its tasks and the GPU binding a rank sees.
fn slurm_check(env: &impl Fn(&str) -> Option<String>) -> Check {
    let Some(job) = env("SLURM_JOB_ID") else {
        return check("slurm", Status::Ok, "not inside a Slurm job", None);
    };
    let get = |k: &str| env(k).unwrap_or_else(|| "unset".into());
    let detail = format!(
        "job {job}, {} task(s) on {} node(s), SLURM_GPUS_ON_NODE={}, CUDA_VISIBLE_DEVICES={}",
        get("SLURM_NTASKS"),
        get("SLURM_JOB_NUM_NODES"),
        get("SLURM_GPUS_ON_NODE"),
        get("CUDA_VISIBLE_DEVICES")
    );
    if env("SLURM_GPUS_ON_NODE").is_some() && env("CUDA_VISIBLE_DEVICES").is_none() {
        return check(
            "slurm",
            Status::Warning,
            detail,
            Some("GPUs allocated but none bound to this task: use --gpus-per-task or --gpu-bind"),
        );
    }
    check("slurm", Status::Ok, detail, None)
}

fn threads_check(env: &impl Fn(&str) -> Option<String>) -> Check {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let local: usize = [
        "OMPI_COMM_WORLD_LOCAL_SIZE",
        "SLURM_NTASKS_PER_NODE",
        "MPI_LOCALNRANKS",
    ]
    .iter()
    .find_map(|k| env(k).and_then(|v| v.parse().ok()))
    .unwrap_or(1);
    let per_rank = match env("RAYON_NUM_THREADS").and_then(|v| v.parse::<usize>().ok()) {
        Some(n) => n,
        None => (cores / local.max(1)).max(1),
    };
    let detail =
        format!("{cores} core(s) available, {local} rank(s) on this node, {per_rank} thread(s) per rank");
    if per_rank * local > cores {
        check(
            "threads",
            Status::Warning,
            detail,
            Some("more threads than cores: lower RAYON_NUM_THREADS or [train] threads"),
        )
    } else {
        check("threads", Status::Ok, detail, None)
    }
}

/// Every check, in the order they are printed.
pub fn run_checks(args: &DoctorArgs) -> Vec<Check> {
    let env_list: Vec<(String, String)> = std::env::vars().collect();
    let env = |k: &str| std::env::var(k).ok();
    let needed = args.device == DoctorDevice::Cuda;
    let mut checks = vec![mpi_check(&env_list), hdf5_check()];
    if args.device != DoctorDevice::Cpu {
        let (libraries, cudnn_version) = library_checks(needed, &env);
        let support = cudnn_support_check(cudnn_version.as_deref());
        checks.extend(libraries);
        checks.extend(support);
        checks.push(gpu_check(needed));
    }
    checks.push(local_check(args.local.as_deref()));
    checks.push(slurm_check(&env));
    checks.push(threads_check(&env));
    checks
}

pub fn run(args: DoctorArgs) -> Result<i32, Failure> {
    let checks = run_checks(&args);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&checks).expect("serialisable"));
    } else {
        for c in &checks {
            let mark = match c.status {
                Status::Ok => "ok     ",
                Status::Warning => "warning",
                Status::Error => "error  ",
            };
            println!("{mark} {:<22} {}", c.name, c.detail);
            if let Some(r) = &c.remedy {
                println!("        {:<22} -> {r}", "");
            }
        }
    }
    let worst = checks.iter().map(|c| c.status).max().unwrap_or(Status::Ok);
    Ok(if worst == Status::Error {
        EXIT_FAILURES
    } else {
        EXIT_OK
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_strings_end_at_their_nul() {
        assert_eq!(
            first_line("Open MPI v4.1.4, May 26, 2022\0"),
            "Open MPI v4.1.4, May 26, 2022"
        );
        assert_eq!(
            first_line("MPICH Version: 4.1\nMPICH Release date: x\0\0"),
            "MPICH Version: 4.1"
        );
        let report = run_checks(&DoctorArgs {
            device: DoctorDevice::Cpu,
            local: None,
            json: false,
        });
        for c in &report {
            assert!(!c.detail.contains('\0'), "{}: {:?}", c.name, c.detail);
        }
    }

    #[test]
    fn versions_come_from_file_names() {
        assert_eq!(file_version(Path::new("/nowhere/libcudnn.so.9.10.2")), "9.10.2");
        assert_eq!(file_version(Path::new("/nowhere/libnvrtc.so")), "unversioned");
    }

    #[test]
    fn the_support_table_warns_of_a_cudnn_that_volta_refuses() {
        let new = cudnn_support_check(Some("9.28.0")).unwrap();
        assert_eq!(new.status, Status::Warning);
        assert!(
            new.detail.contains("sm_70") && new.detail.contains("9.10"),
            "{}",
            new.detail
        );
        assert_eq!(cudnn_support_check(Some("9.10.2")).unwrap().status, Status::Ok);
        assert!(cudnn_support_check(Some("unversioned")).is_none());
        assert!(cudnn_support_check(None).is_none());
        assert_eq!(cudnn_number("9.10.2"), Some(91002));
    }

    #[test]
    fn slurm_without_a_gpu_binding_is_a_warning() {
        let env = |k: &str| match k {
            "SLURM_JOB_ID" => Some("7".to_string()),
            "SLURM_GPUS_ON_NODE" => Some("4".to_string()),
            _ => None,
        };
        assert_eq!(slurm_check(&env).status, Status::Warning);
        let bound = |k: &str| match k {
            "CUDA_VISIBLE_DEVICES" => Some("0".to_string()),
            other => env(other),
        };
        assert_eq!(slurm_check(&bound).status, Status::Ok);
        assert_eq!(slurm_check(&|_: &str| None).status, Status::Ok);
    }

    #[test]
    fn oversubscribed_threads_are_a_warning() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let many = move |k: &str| match k {
            "OMPI_COMM_WORLD_LOCAL_SIZE" => Some("1".to_string()),
            "RAYON_NUM_THREADS" => Some((cores + 1).to_string()),
            _ => None,
        };
        assert_eq!(threads_check(&many).status, Status::Warning);
        assert_eq!(threads_check(&|_: &str| None).status, Status::Ok);
    }
}
