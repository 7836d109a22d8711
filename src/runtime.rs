//! Where a job runs: the device `--device` resolves to (CUDA when usable, else the CPU), the backend
//! opened on it and agreed across ranks, compute threads per rank, and the MPI world's start and end.
//! Shared by every verb that runs a model (train, eval, predict, explain, bench explain).

use crate::backend::cpu::CpuBackend;
use crate::backend::cuda::{self, selftest, CudaBackend};
use crate::backend::Backend;
use crate::dist::World;
use crate::exit::{usage, Failure, EXIT_FAILURES, EXIT_USAGE};

/// Compute threads per rank: the setting, else RAYON_NUM_THREADS, else the node's cores shared by its ranks.
pub fn set_threads(world: &World, threads: Option<usize>) {
    if std::env::var_os("RAYON_NUM_THREADS").is_some() && threads.is_none() {
        return;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let n = threads.unwrap_or((cores / world.local_size().max(1)).max(1));
    let _ = rayon::ThreadPoolBuilder::new().num_threads(n).build_global();
}

/// The backend `--device` resolved to on this machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    Cpu,
    /// `auto`: chosen by `--device auto` (a GPU that fails its self-test may fall back to the CPU
    /// with MEDTRAIN_ALLOW_CPU_FALLBACK=1); otherwise `--device cuda`.
    Cuda {
        auto: bool,
    },
}

/// auto: CUDA when every CUDA library loads and a device is visible, else the CPU (logged); cuda: the
/// same probe, and a usage error naming what is missing when it fails. Runs before MPI starts. The
/// GPU's start-up self-test runs later, when the backend is opened (`open_gpu`).
pub fn resolve_device(setting: &str) -> Result<Device, Failure> {
    match setting {
        "cpu" => Ok(Device::Cpu),
        "cuda" => match cuda::probe() {
            Ok(_) => Ok(Device::Cuda { auto: false }),
            Err(e) => Err(usage(format!("--device cuda: {e}"))),
        },
        "auto" => match cuda::probe() {
            Ok(info) => {
                tracing::info!(devices = info.visible_devices, "device auto: using CUDA");
                Ok(Device::Cuda { auto: true })
            }
            Err(e) => {
                tracing::info!("device auto: {e}; using the CPU");
                Ok(Device::Cpu)
            }
        },
        other => Err(usage(format!("--device {other:?}: use auto, cpu or cuda"))),
    }
}

/// A job written once, generic over the backend, and run on the one `--device` chose.
pub trait OnBackend {
    fn run<B: Backend>(self, b: &B) -> Result<i32, Failure>;
}

/// Opens this rank's GPU (`CudaBackend::for_local_rank`: probe, device choice, start-up self-test)
/// and agrees on the verdict with the other ranks through `agree` (this rank passed → every rank
/// passed), so no job runs with some ranks on GPUs and others on CPUs. Some(backend): use it; None:
/// use the CPU (auto with MEDTRAIN_ALLOW_CPU_FALLBACK=1); Err: a usage error (exit 2).
pub fn open_gpu(
    auto: bool,
    rank: usize,
    local_rank: usize,
    local_size: usize,
    agree: impl FnOnce(bool) -> bool,
) -> Result<Option<CudaBackend>, Failure> {
    let local = CudaBackend::for_local_rank(local_rank, local_size);
    if let Err(e) = &local {
        tracing::error!("rank {rank}: {e}");
    }
    let all_ok = agree(local.is_ok());
    let reason = local.as_ref().err().map(|e| format!("rank {rank}: {e}"));
    let allow = selftest::allow_fallback_from(std::env::var("MEDTRAIN_ALLOW_CPU_FALLBACK").ok().as_deref());
    match selftest::decide(all_ok, reason.as_deref(), auto, allow) {
        selftest::Decision::UseGpu => {
            let b = local.map_err(|e| Failure::Job(format!("rank {rank}: {e}")))?;
            tracing::info!(ordinal = b.ordinal(), device = b.device_name(), "CUDA backend");
            Ok(Some(b))
        }
        selftest::Decision::UseCpu(why) => {
            tracing::warn!("{why}");
            Ok(None)
        }
        selftest::Decision::Refuse(why) => Err(usage(why)),
    }
}

/// Creates this rank's backend (CUDA: the GPU chosen from its node-local rank, self-tested, the
/// verdict agreed across ranks) and runs `job` on it.
pub fn run_on(device: Device, world: &World, job: impl OnBackend) -> Result<i32, Failure> {
    match device {
        Device::Cpu => job.run(&CpuBackend),
        Device::Cuda { auto } => {
            let agree = |ok: bool| {
                let mut v = [ok as u64];
                world.allreduce_min_u64(&mut v);
                v[0] == 1
            };
            match open_gpu(auto, world.rank(), world.local_rank(), world.local_size(), agree)? {
                Some(b) => job.run(&b),
                None => job.run(&CpuBackend),
            }
        }
    }
}

pub fn init_world() -> Result<World, Failure> {
    World::init().map_err(|e| Failure::Job(format!("MPI: {e}")))
}

/// Ends every rank when one fails under MPI (the others may be waiting in a collective).
pub fn finish(world: &World, result: Result<i32, Failure>) -> Result<i32, Failure> {
    if world.size() > 1 {
        // A usage error (a refused GPU included, agreed by every rank) keeps its exit status 2.
        match &result {
            Err(Failure::Usage(msg)) => world.abort(EXIT_USAGE, &format!("rank {}: {msg}", world.rank())),
            Err(Failure::Job(msg)) => world.abort(EXIT_FAILURES, &format!("rank {}: {msg}", world.rank())),
            Ok(_) => {}
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a machine without a GPU (CI, this project's build hosts): auto is the CPU, cuda a usage
    /// error (exit 2) naming what is missing, and opening the GPU reports "not available" cleanly.
    #[test]
    fn without_a_gpu_auto_is_the_cpu_and_cuda_is_refused_by_name() {
        if let Ok(info) = cuda::probe() {
            eprintln!("skipped: {} CUDA device(s) visible", info.visible_devices);
            return;
        }
        assert!(matches!(resolve_device("auto"), Ok(Device::Cpu)));
        match resolve_device("cuda") {
            Err(Failure::Usage(m)) => assert!(m.starts_with("--device cuda: CUDA is not available: "), "{m}"),
            _ => panic!("--device cuda without a GPU must be a usage error"),
        }
        match open_gpu(false, 0, 0, 1, |ok| ok) {
            Err(Failure::Usage(m)) => {
                assert!(
                    m.starts_with("--device cuda: rank 0: CUDA is not available: "),
                    "{m}"
                )
            }
            _ => panic!("opening a GPU that is not there must be a usage error"),
        }
        // Another rank's failure is agreed: this rank refuses too, even with a fallback-free auto.
        match open_gpu(true, 1, 0, 1, |_| false) {
            Err(Failure::Usage(m)) => {
                assert!(m.contains("--device auto: a GPU is visible but unusable"), "{m}")
            }
            _ => panic!("refused"),
        }
        assert!(matches!(resolve_device("gpu"), Err(Failure::Usage(_))));
    }
}
