//! Which GPU a rank uses: one per rank, chosen from the rank's index on its node. Pure, so every
//! launcher layout (mpirun, srun, srun with Slurm's per-task GPU binding) is unit-tested without a GPU.

/// The Slurm variables that change how the visible devices map to ranks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SlurmGpus {
    /// SLURM_GPUS_PER_TASK: with per-task binding each task sees only its own GPUs.
    pub gpus_per_task: Option<usize>,
}

impl SlurmGpus {
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> SlurmGpus {
        SlurmGpus {
            gpus_per_task: get("SLURM_GPUS_PER_TASK").and_then(|v| v.trim().parse().ok()),
        }
    }
}

/// Entries of CUDA_VISIBLE_DEVICES (indices or UUIDs); None when the variable is unset.
fn visible_list(cvd: Option<&str>) -> Option<Vec<&str>> {
    cvd.map(|v| v.split(',').map(str::trim).filter(|e| !e.is_empty()).collect())
}

/// The device ordinal (within the devices this process sees) for node-local rank `local_rank` of
/// `local_size`, given `visible` devices and the launcher's environment.
pub fn select_device(
    local_rank: usize,
    local_size: usize,
    visible: usize,
    cuda_visible_devices: Option<&str>,
    slurm: &SlurmGpus,
) -> Result<usize, String> {
    if local_rank >= local_size.max(1) {
        return Err(format!(
            "node-local rank {local_rank} is not below the node's {local_size} rank(s)"
        ));
    }
    let listed = visible_list(cuda_visible_devices);
    if let Some(list) = &listed {
        if list.is_empty() || list.iter().any(|e| e.starts_with('-') || *e == "NoDevFiles") {
            return Err(format!(
                "CUDA_VISIBLE_DEVICES={:?} hides every GPU from rank {local_rank}",
                cuda_visible_devices.unwrap_or_default()
            ));
        }
    }
    if visible == 0 {
        return Err(format!("rank {local_rank} sees no CUDA device"));
    }
    // Slurm bound this task to its own GPU(s) (srun --gpus-per-task, --gpu-bind=single:1 or a
    // per-task CUDA_VISIBLE_DEVICES): the first device it sees is its own.
    let per_task = slurm.gpus_per_task == Some(visible)
        || (local_size > 1
            && listed
                .as_ref()
                .is_some_and(|l| l.len() == visible && visible < local_size));
    if local_size == 1 || per_task {
        return Ok(0);
    }
    if local_rank < visible {
        return Ok(local_rank);
    }
    Err(format!(
        "{local_size} ranks on this node but only {visible} visible GPU(s): run one rank per GPU \
         (mpirun -np / srun --ntasks-per-node), or use --device cpu"
    ))
}

/// Reads the environment of this process.
pub fn select_from_env(local_rank: usize, local_size: usize, visible: usize) -> Result<usize, String> {
    let cvd = std::env::var("CUDA_VISIBLE_DEVICES").ok();
    let slurm = SlurmGpus::from_env(|k| std::env::var(k).ok());
    select_device(local_rank, local_size, visible, cvd.as_deref(), &slurm)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slurm(gpus_per_task: Option<usize>) -> SlurmGpus {
        SlurmGpus { gpus_per_task }
    }

    #[test]
    fn launcher_layouts() {
        // (local_rank, local_size, visible, CUDA_VISIBLE_DEVICES, SLURM_GPUS_PER_TASK) → ordinal
        let ok: &[(usize, usize, usize, Option<&str>, Option<usize>, usize)] = &[
            // single process, any number of GPUs: the first one
            (0, 1, 1, None, None, 0),
            (0, 1, 8, None, None, 0),
            (0, 1, 2, Some("3,5"), None, 0),
            // mpirun: every rank sees every GPU of the node
            (0, 4, 4, None, None, 0),
            (3, 4, 4, None, None, 3),
            (1, 2, 8, None, None, 1),
            // srun with the node's GPUs in CUDA_VISIBLE_DEVICES (no per-task binding)
            (2, 4, 4, Some("0,1,2,3"), None, 2),
            (1, 2, 2, Some("GPU-aa,GPU-bb"), None, 1),
            // srun --gpus-per-task=1: each task sees one device, whatever its local rank
            (3, 4, 1, Some("3"), Some(1), 0),
            (2, 4, 1, Some("2"), None, 0),
            (1, 4, 1, None, Some(1), 0),
            // two GPUs per task: the first of the task's own
            (3, 4, 2, Some("6,7"), Some(2), 0),
        ];
        for &(rank, size, visible, cvd, gpt, want) in ok {
            assert_eq!(
                select_device(rank, size, visible, cvd, &slurm(gpt)),
                Ok(want),
                "rank {rank}/{size}, {visible} visible, CVD {cvd:?}, gpus/task {gpt:?}"
            );
        }
    }

    #[test]
    fn layouts_that_cannot_work_are_refused() {
        let bad: &[(usize, usize, usize, Option<&str>, Option<usize>, &str)] = &[
            (0, 1, 0, None, None, "sees no CUDA device"),
            (0, 2, 2, Some(""), None, "hides every GPU"),
            (0, 2, 2, Some("-1"), None, "hides every GPU"),
            (0, 2, 2, Some("NoDevFiles"), None, "hides every GPU"),
            // more ranks than GPUs without Slurm's binding
            (3, 4, 2, None, None, "only 2 visible GPU(s)"),
            (4, 4, 4, None, None, "not below"),
        ];
        for &(rank, size, visible, cvd, gpt, what) in bad {
            let e = select_device(rank, size, visible, cvd, &slurm(gpt)).expect_err("refused");
            assert!(e.contains(what), "{e}");
        }
    }

    #[test]
    fn slurm_variables_are_read() {
        let s = SlurmGpus::from_env(|k| (k == "SLURM_GPUS_PER_TASK").then(|| "1".to_string()));
        assert_eq!(s.gpus_per_task, Some(1));
        assert_eq!(SlurmGpus::from_env(|_| None), SlurmGpus::default());
    }
}
