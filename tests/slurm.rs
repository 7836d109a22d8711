//! The job scripts in `slurm/` on a real single-node Slurm (slurmctld, slurmd and munged from the OS
//! packages): `scripts/slurm-test.sh` packs, trains (2 ranks, MPI through `srun --mpi=pmix`), checks a
//! signal-driven checkpoint and requeue, runs the scaling benchmark, and tears the daemons down. Skipped
//! with the reason when Slurm is not installed or the test does not run as root.

use std::path::Path;
use std::process::Command;

fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false)
        || Path::new("/usr/sbin").join(name).is_file()
}

#[test]
fn slurm_job_scripts_run_on_a_single_node_cluster() {
    if !on_path("slurmctld") {
        eprintln!(
            "skipping: slurmctld is not installed (scripts/install-deps.sh installs slurm-wlm and munge)"
        );
        return;
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping: the single-node cluster runs with SlurmUser=root and needs root");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("bash")
        .arg(root.join("scripts/slurm-test.sh"))
        .env("MEDTRAIN_BIN", env!("CARGO_BIN_EXE_medtrain"))
        .env(
            "PATH",
            format!("{}:/usr/sbin:/sbin", std::env::var("PATH").unwrap_or_default()),
        )
        .output()
        .expect("run bash scripts/slurm-test.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("slurm-test: ok"),
        "scripts/slurm-test.sh failed ({:?})\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    // The script's own checks passed; its summary names what ran on 2 ranks.
    assert!(
        stdout.contains("requeue job") && stdout.contains("after 1 restart(s)"),
        "{stdout}"
    );
    eprintln!("{stdout}");
}
