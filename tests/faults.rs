//! Fault injection on real processes and file systems: a full disk (a size-limited tmpfs) under pack
//! and checkpoints, SIGKILL of `pack` at seeded random moments and of a training rank mid-step and
//! mid-checkpoint, a stalled rank ended by the watchdog, NaN/Inf steps stopped or skipped in agreement
//! across ranks, and read-only, missing or wrong-version inputs refused with the remedy. Each test
//! compares with an undisturbed run or with what a reader independent of the writer accepts.

use crate::common::{key_file, medtrain, run, s, tempdir};
use crate::train::{check, cohort, mpirun, newest_checkpoint, tensors, write_config, Cohort};
use medtrain::pack::index::PackIndex;
use medtrain::pack::reader::ShardReader;
use medtrain::phantom::{generate, PhantomConfig};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A tmpfs of `size` at `dir`, unmounted on drop; None (with the reason printed) where mounting is
/// not allowed, so the test is skipped rather than failed on machines without the privilege.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs", s(dir)])
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs {
                dir: dir.to_path_buf(),
            }),
            Ok(o) => {
                eprintln!(
                    "SKIPPED: cannot mount a tmpfs at {} ({}); disk-full tests need root",
                    dir.display(),
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("SKIPPED: cannot run mount ({e}); disk-full tests need root");
                None
            }
        }
    }

    /// Frees space the way an operator would: a bigger file system under the same path.
    fn grow(&self, size: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,size={size}"), s(&self.dir)])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "remount: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn remount_read_only(&self) {
        let out = Command::new("mount")
            .args(["-o", "remount,ro", s(&self.dir)])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "remount ro: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Waits for `child` at most `limit`; kills it and fails the test when it does not end.
fn wait_at_most(mut child: std::process::Child, limit: Duration, what: &str) -> Output {
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("{what} did not end within {limit:?}:\n{}", text(&out));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().unwrap()
}

// ---------------------------------------------------------------------------------------------
// pack

struct Dicom {
    _dir: tempfile::TempDir,
    root: PathBuf,
    dicom: PathBuf,
    key: PathBuf,
}

fn dicom(patients: u32) -> Dicom {
    let dir = tempdir();
    let root = dir.path().to_path_buf();
    let cfg = PhantomConfig {
        seed: 5,
        patients,
        size: 32,
        slices: 12,
        slice_thickness_mm: 2.5,
        radiographs: true,
    };
    let summary = generate(&cfg, &root.join("phantom")).expect("phantom");
    Dicom {
        key: key_file(&root, "site.key"),
        dicom: summary.dicom_dir,
        root,
        _dir: dir,
    }
}

fn pack_cmd(d: &Dicom, out: &Path) -> Command {
    let mut cmd = medtrain();
    cmd.args([
        "pack",
        s(&d.dicom),
        "--out",
        s(out),
        "--key",
        s(&d.key),
        "--shard-size",
        "16KiB",
    ]);
    cmd
}

/// What a reader accepts from a pack: for every indexed shard that opens and verifies, each source's
/// pixel hash. Shards the index does not list are not part of the pack.
fn pack_contents(dir: &Path) -> BTreeSet<(String, String)> {
    let Some(index) = PackIndex::load(dir).unwrap() else {
        return BTreeSet::new();
    };
    let mut seen = BTreeSet::new();
    for shard in &index.shards {
        let reader = ShardReader::open(&dir.join(&shard.file))
            .unwrap_or_else(|e| panic!("an indexed shard must open: {e}"));
        for i in 0..reader.series.len() {
            let pixels = reader.pixel_bytes(i).unwrap();
            seen.insert((
                reader.series[i].source_hash.clone(),
                blake3::hash(pixels).to_hex().to_string(),
            ));
        }
    }
    seen
}

/// `inspect --verify` (checksums of every indexed shard) must accept what a killed or failed run left.
fn assert_verifies(dir: &Path) {
    if !dir.join("index.json").exists() {
        return;
    }
    let (code, out, err) = run(&["inspect", s(dir), "--verify", "--json"]);
    assert_eq!(code, 0, "what an interrupted pack left must verify:\n{out}{err}");
}

fn bytes_of(dir: &Path) -> u64 {
    walkdir(dir)
        .iter()
        .map(|p| p.metadata().map_or(0, |m| m.len()))
        .sum()
}

fn walkdir(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walkdir(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn fault_pack_on_a_full_disk_fails_naming_the_path_and_a_rerun_completes() {
    let d = dicom(4);
    let reference = d.root.join("reference");
    check(&pack_cmd(&d, &reference).output().unwrap(), "undisturbed pack");
    let want = pack_contents(&reference);
    let total = bytes_of(&reference);
    assert!(!want.is_empty());

    let mnt = d.root.join("small");
    let Some(fs) = Tmpfs::mount(&mnt, &format!("{}", (total / 2 / 4096 + 1) * 4096)) else {
        return;
    };
    let out_dir = mnt.join("pack");
    let out = pack_cmd(&d, &out_dir).output().unwrap();
    let msg = text(&out);
    assert!(
        !out.status.success(),
        "a pack twice the disk's size must fail:\n{msg}"
    );
    assert!(
        msg.contains("no space left on device"),
        "the need must be named:\n{msg}"
    );
    assert!(msg.contains(s(&out_dir)), "the path must be named:\n{msg}");
    // Nothing a reader accepts is incomplete: the index lists only verified shards.
    assert_verifies(&out_dir);
    let partial = pack_contents(&out_dir);
    assert!(partial.is_subset(&want) && partial.len() < want.len(), "{msg}");

    fs.grow("64m");
    check(
        &pack_cmd(&d, &out_dir).output().unwrap(),
        "pack after space was freed",
    );
    assert_eq!(
        pack_contents(&out_dir),
        want,
        "the rerun must give the undisturbed result"
    );
}

/// SIGKILL at seeded random moments of a pack (scan, decode, shard write, index commit), then a
/// rerun: never a shard a reader accepts that is incomplete, and always the undisturbed result.
#[test]
fn fault_pack_killed_at_random_points_resumes_to_the_same_result() {
    use rand::{Rng, SeedableRng};
    let d = dicom(4);
    let reference = d.root.join("reference");
    let started = Instant::now();
    check(&pack_cmd(&d, &reference).output().unwrap(), "undisturbed pack");
    let whole = started.elapsed();
    let want = pack_contents(&reference);
    for seed in [1u64, 2, 3, 4] {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let at = whole.mul_f64(rng.gen_range(0.05..0.95));
        let out_dir = d.root.join(format!("killed-{seed}"));
        let mut child = pack_cmd(&d, &out_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(at);
        let _ = child.kill(); // SIGKILL
        child.wait().unwrap();
        assert_verifies(&out_dir);
        assert!(pack_contents(&out_dir).is_subset(&want), "seed {seed}");
        check(&pack_cmd(&d, &out_dir).output().unwrap(), "pack after the kill");
        assert_eq!(pack_contents(&out_dir), want, "seed {seed}: killed after {at:?}");
        let leftovers: Vec<PathBuf> = walkdir(&out_dir)
            .into_iter()
            .filter(|p| p.to_string_lossy().ends_with(".partial"))
            .collect();
        assert!(leftovers.is_empty(), "seed {seed}: {leftovers:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// train

fn train_args<'a>(c: &'a Cohort, out: &'a Path, cfg: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "train",
        s(&c.catalog),
        s(&c.manifest),
        "--out",
        s(out),
        "--config",
        s(cfg),
    ];
    v.extend_from_slice(extra);
    v
}

fn final_tensors(run: &Path) -> Vec<(String, Vec<u8>)> {
    let dir = newest_checkpoint(run);
    let mut all = tensors(&dir.join("model.safetensors"));
    all.extend(tensors(&dir.join("optimizer.safetensors")));
    all
}

fn assert_same_weights(a: &Path, b: &Path, what: &str) {
    let (x, y) = (final_tensors(a), final_tensors(b));
    assert_eq!(x.len(), y.len(), "{what}");
    for ((nx, bx), (ny, by)) in x.iter().zip(&y) {
        assert_eq!(nx, ny, "{what}");
        assert!(bx == by, "{what}: {nx} differs from the undisturbed run");
    }
}

fn all_finite(run: &Path) -> bool {
    tensors(&newest_checkpoint(run).join("model.safetensors"))
        .iter()
        .filter(|(n, _)| !n.ends_with("num_batches_tracked"))
        .all(|(_, b)| {
            b.chunks_exact(4)
                .all(|c| f32::from_le_bytes(c.try_into().unwrap()).is_finite())
        })
}

/// Every checkpoint directory not marked partial must verify (hashes of its files).
fn assert_checkpoints_verify(run: &Path) {
    let Ok(entries) = std::fs::read_dir(run.join("checkpoints")) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if p.is_dir() && !name.contains('.') {
            medtrain::checkpoint::inspect(&p)
                .unwrap_or_else(|err| panic!("{} is accepted as complete but: {err}", p.display()));
        }
    }
}

fn status(run: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(run.join("train-status.json")).unwrap()).unwrap()
}

/// Two ranks, a checkpoint every other step; rank 1 SIGKILLed before a step, then rank 0 SIGKILLed in
/// the middle of a checkpoint write (weights written, state not yet): each time the job ends, the
/// partial checkpoint is not taken, and `--resume auto` reaches bitwise the undisturbed weights.
#[test]
fn fault_training_rank_killed_mid_step_and_mid_checkpoint_resumes_bitwise() {
    let c = cohort(10);
    let cfg = write_config(
        &c.root,
        "t.toml",
        "checkpoint_every = 2\neval_every = 0\nkeep_checkpoints = 10",
    );
    let whole = c.root.join("whole");
    let out = mpirun(2, &train_args(&c, &whole, &cfg, &["--json"]), &[])
        .output()
        .unwrap();
    check(&out, "undisturbed run");
    let outcome: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(outcome["world_size"], 2, "both ranks must be in one world");
    let steps = outcome["global_step"].as_u64().unwrap();
    assert!(steps >= 6, "need a few steps, got {steps}");

    let parts = c.root.join("parts");
    let faults = [
        format!("kill@{}:rank:1", steps / 3),
        format!("kill-in-checkpoint@{}", 2 * steps / 3 / 2 * 2),
    ];
    for fault in &faults {
        let out = mpirun(
            2,
            &train_args(&c, &parts, &cfg, &["--resume", "auto"]),
            &[("MEDTRAIN_FAULT", fault)],
        )
        .output()
        .unwrap();
        assert!(
            !out.status.success(),
            "{fault}: the job must end with the killed rank:\n{}",
            text(&out)
        );
        assert_checkpoints_verify(&parts);
    }
    let partials: Vec<_> = std::fs::read_dir(parts.join("checkpoints"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
        .collect();
    assert_eq!(partials.len(), 1, "the checkpoint write was interrupted");
    let out = mpirun(
        2,
        &train_args(&c, &parts, &cfg, &["--resume", "auto", "--json"]),
        &[],
    )
    .output()
    .unwrap();
    check(&out, "resumed run");
    let resumed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(resumed["world_size"], 2);
    assert_eq!(resumed["global_step"].as_u64().unwrap(), steps);
    assert_same_weights(&whole, &parts, "killed and resumed");
    // TensorBoard, read by its own EventAccumulator: one event file per run (rank 0 alone writes),
    // and across the killed and resumed runs every step once, with the undisturbed run's losses
    // (the SessionLog START of each resume dropped what the killed runs logged past their checkpoint).
    let files = |run: &Path| std::fs::read_dir(run.join("tb")).unwrap().count();
    assert_eq!(files(&whole), 1);
    assert_eq!(files(&parts), 1 + faults.len());
    let losses = |run: &Path| -> Vec<(u64, f64)> {
        let out = crate::common::reference_script("read_tensorboard.py", &[s(&run.join("tb"))]);
        let j: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
        j["scalars"]["train/loss"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p[0].as_u64().unwrap(), p[1].as_f64().unwrap()))
            .collect()
    };
    let (want, got) = (losses(&whole), losses(&parts));
    assert_eq!(
        want.iter().map(|p| p.0).collect::<Vec<_>>(),
        (1..=steps).collect::<Vec<_>>()
    );
    assert_eq!(got, want, "the resumed runs' TensorBoard curve");
    // steps.jsonl likewise: every step once, in order, with the undisturbed run's losses.
    let step_lines = |run: &Path| -> Vec<(u64, f64)> {
        std::fs::read_to_string(run.join("steps.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap())
            })
            .collect()
    };
    let tb_f32 =
        |v: Vec<(u64, f64)>| -> Vec<(u64, f32)> { v.into_iter().map(|(s, l)| (s, l as f32)).collect() };
    assert_eq!(tb_f32(step_lines(&whole)), tb_f32(want.clone()));
    assert_eq!(
        step_lines(&parts),
        step_lines(&whole),
        "the resumed runs' steps.jsonl"
    );
}

/// A rank that stops calling collectives: the watchdog ends the job with the rank and phase named.
#[test]
fn fault_stalled_rank_is_ended_by_the_watchdog() {
    let c = cohort(10);
    let cfg = write_config(&c.root, "t.toml", "epochs = 50\nwatchdog_s = 3");
    let run_dir = c.root.join("run");
    let child = mpirun(
        2,
        &train_args(&c, &run_dir, &cfg, &[]),
        &[("MEDTRAIN_FAULT", "stall@2:rank:1")],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let out = wait_at_most(child, Duration::from_secs(90), "a job with a stalled rank");
    let msg = text(&out);
    assert!(!out.status.success(), "{msg}");
    assert!(
        msg.contains("watchdog: no progress"),
        "the watchdog must say why:\n{msg}"
    );
    assert!(
        msg.contains("of 2 aborts the job"),
        "rank and world size must be named:\n{msg}"
    );
    assert!(
        msg.contains("in phase \"data loading\"") || msg.contains("in phase \"gradient allreduce\""),
        "the phase must be named:\n{msg}"
    );
}

/// NaN in one rank's gradient (after the allreduce, so only that rank sees it): every rank stops at the
/// same step, rank 1 names the layer, and no checkpoint is written from the poisoned step.
#[test]
fn fault_nonfinite_gradient_on_one_rank_stops_every_rank_without_a_checkpoint() {
    let c = cohort(10);
    let cfg = write_config(&c.root, "t.toml", "checkpoint_every = 1\neval_every = 0");
    let run_dir = c.root.join("run");
    let out = mpirun(
        2,
        &train_args(&c, &run_dir, &cfg, &[]),
        &[("MEDTRAIN_FAULT", "nan@3:rank:1")],
    )
    .output()
    .unwrap();
    let msg = text(&out);
    assert!(!out.status.success(), "{msg}");
    assert!(msg.contains("global step 3"), "the step must be named:\n{msg}");
    // Rank 1 names its layer; rank 0 knows only through the agreed flag (so both are in one world).
    assert!(msg.contains("first non-finite gradient in "), "{msg}");
    assert!(msg.contains("on rank 1"), "{msg}");
    assert!(
        msg.contains("non-finite gradient on another rank"),
        "rank 0 must stop too:\n{msg}"
    );
    let newest = newest_checkpoint(&run_dir);
    assert!(
        newest.ends_with(medtrain::checkpoint::checkpoint_name(3)),
        "{}",
        newest.display()
    );
    assert!(all_finite(&run_dir));
    assert_checkpoints_verify(&run_dir);
}

/// `on_nonfinite = "skip"`: an infinite loss on one rank skips that step on both ranks, counted in the
/// outcome and the metrics; the skipped step leaves weights and batch-norm statistics as they were.
#[test]
fn fault_nonfinite_loss_skipped_in_agreement_and_counted() {
    let c = cohort(10);
    let cfg = write_config(
        &c.root,
        "t.toml",
        "on_nonfinite = \"skip\"\ncheckpoint_every = 1\nkeep_checkpoints = 100\neval_every = 0",
    );
    let run_dir = c.root.join("run");
    let out = mpirun(
        2,
        &train_args(&c, &run_dir, &cfg, &["--json"]),
        &[("MEDTRAIN_FAULT", "inf@2:rank:0")],
    )
    .output()
    .unwrap();
    check(&out, "a run that skips a step");
    let outcome: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(outcome["world_size"], 2, "both ranks must be in one world");
    assert_eq!(outcome["skipped_steps"], 1, "{outcome}");
    let metrics = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
    let skipped: u64 = metrics
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["skipped_steps"]
                .as_u64()
                .unwrap()
        })
        .sum();
    assert_eq!(skipped, 1, "{metrics}");
    assert!(all_finite(&run_dir));
    // Step 3's checkpoint (after the skipped step with global index 2) holds step 2's weights.
    let ckpt = |step: u64| -> Vec<(String, Vec<u8>)> {
        let dir = run_dir
            .join("checkpoints")
            .join(medtrain::checkpoint::checkpoint_name(step));
        tensors(&dir.join("model.safetensors"))
            .into_iter()
            .filter(|(n, _)| !n.ends_with("num_batches_tracked"))
            .collect()
    };
    assert!(
        ckpt(2) == ckpt(3),
        "a skipped step must leave weights and statistics unchanged"
    );
    assert!(ckpt(3) != ckpt(4), "the step after it trains again");
}

/// Checkpoints on a full disk: the run fails naming the path and the need, no incomplete checkpoint is
/// accepted, and after space is freed `--resume auto` reaches the undisturbed weights bitwise.
#[test]
fn fault_checkpoint_on_a_full_disk_fails_cleanly_and_resume_is_bitwise() {
    let c = cohort(10);
    let cfg = write_config(
        &c.root,
        "t.toml",
        "checkpoint_every = 1\neval_every = 0\nkeep_checkpoints = 2",
    );
    let whole = c.root.join("whole");
    let (code, o, e) = run(&train_args(&c, &whole, &cfg, &[]));
    assert_eq!(code, 0, "{o}{e}");
    let one = std::fs::read_dir(newest_checkpoint(&whole))
        .unwrap()
        .flatten()
        .map(|f| f.metadata().unwrap().len())
        .sum::<u64>();

    let mnt = c.root.join("small");
    // Room for about three checkpoints: keep_checkpoints = 2 plus the one being written does not fit.
    let Some(fs) = Tmpfs::mount(&mnt, &format!("{}", (one * 5 / 2 / 4096 + 2) * 4096)) else {
        return;
    };
    let run_dir = mnt.join("run");
    let (code, o, e) = run(&train_args(&c, &run_dir, &cfg, &[]));
    let msg = format!("{o}{e}");
    assert_ne!(code, 0, "training must fail on a full disk:\n{msg}");
    assert!(
        msg.contains("no space left on device"),
        "the need must be named:\n{msg}"
    );
    assert!(msg.contains(s(&run_dir)), "the path must be named:\n{msg}");
    assert!(msg.contains("--resume auto"), "the remedy must be named:\n{msg}");
    assert_checkpoints_verify(&run_dir);

    fs.grow("64m");
    let (code, o, e) = run(&train_args(&c, &run_dir, &cfg, &["--resume", "auto"]));
    assert_eq!(code, 0, "{o}{e}");
    assert_eq!(status(&run_dir)["status"], "finished");
    assert_same_weights(&whole, &run_dir, "resumed after the disk was freed");
}

// ---------------------------------------------------------------------------------------------
// read-only, missing and wrong-version inputs

#[test]
fn fault_read_only_missing_and_wrong_version_inputs_name_the_remedy() {
    let c = cohort(6);
    let cfg = write_config(&c.root, "t.toml", "max_steps = 2\neval_every = 0");
    let expect = |args: &[&str], needles: &[&str], what: &str| {
        let (code, o, e) = run(args);
        let msg = format!("{o}{e}");
        assert_ne!(code, 0, "{what} must fail:\n{msg}");
        for n in needles {
            assert!(msg.contains(n), "{what}: the message must contain {n:?}:\n{msg}");
        }
    };

    // A missing checkpoint to resume from.
    let run_dir = c.root.join("run");
    let missing = c.root.join("no-such-checkpoint");
    expect(
        &train_args(&c, &run_dir, &cfg, &["--resume", s(&missing)]),
        &[s(&missing), "--resume auto"],
        "a missing checkpoint",
    );

    // A checkpoint of another format version.
    let (code, o, e) = run(&train_args(&c, &run_dir, &cfg, &[]));
    assert_eq!(code, 0, "{o}{e}");
    let ckpt = newest_checkpoint(&run_dir);
    let state = ckpt.join("state.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    v["version"] = 99.into();
    std::fs::write(&state, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    expect(
        &train_args(&c, &run_dir, &cfg, &["--resume", s(&ckpt)]),
        &[s(&ckpt), "version 99", "medtrain"],
        "a checkpoint of another version",
    );

    // A read-only output directory.
    if let Some(ro) = Tmpfs::mount(&c.root.join("ro"), "1m") {
        ro.remount_read_only();
        let out = c.root.join("ro/run");
        expect(
            &train_args(&c, &out, &cfg, &[]),
            &[s(&c.root.join("ro")), "read-only"],
            "a read-only output directory",
        );
    }

    // A missing catalog and a catalog of another version.
    let nowhere = c.root.join("no-catalog");
    let args = [
        "train",
        s(&nowhere),
        s(&c.manifest),
        "--out",
        s(&run_dir),
        "--config",
        s(&cfg),
    ];
    expect(&args, &[s(&nowhere), "catalog build"], "a missing catalog");

    let catalog_json = c.catalog.join("catalog.json");
    let original = std::fs::read_to_string(&catalog_json).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&original).unwrap();
    let key = ["format_version", "version"]
        .into_iter()
        .find(|k| v.get(*k).is_some())
        .expect("catalog.json carries a version");
    v[key] = 99.into();
    std::fs::write(&catalog_json, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    expect(
        &train_args(&c, &c.root.join("run2"), &cfg, &[]),
        &[s(&catalog_json), "99", "catalog build"],
        "a catalog of another version",
    );
    std::fs::write(&catalog_json, original).unwrap();

    // A shard that disappeared from under the catalog.
    let pack = c.root.join("pack");
    let shard = PackIndex::load(&pack).unwrap().unwrap().shards[0].file.clone();
    let shard = pack.join(shard);
    std::fs::rename(&shard, shard.with_extension("moved")).unwrap();
    expect(
        &train_args(&c, &c.root.join("run3"), &cfg, &[]),
        &[s(&shard), "catalog build"],
        "a missing shard",
    );
    std::fs::rename(shard.with_extension("moved"), &shard).unwrap();
}

// ---------------------------------------------------------------------------------------------
// fuzzing findings

/// Found by `scripts/fuzz.sh` (target `manifest`): a manifest whose global heap is corrupt makes the
/// system libhdf5 (1.10, `H5HG_read` under `H5Aread` of the `format` attribute) loop forever, so
/// `train` would hang at start-up instead of refusing the file. Fixed: catalog and manifest text
/// attributes are byte arrays, and a variable-length string attribute is refused before its data is read.
#[test]
fn fuzz_manifest_with_a_corrupt_global_heap_is_refused_not_hung() {
    let dir = tempdir();
    let path = dir.path().join("manifest.h5");
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fuzz/regressions/manifest-global-heap-hang.h5.gz"
    );
    let out = Command::new("gzip")
        .args(["-dc", fixture])
        .output()
        .expect("gzip");
    assert!(out.status.success());
    std::fs::write(&path, &out.stdout).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(medtrain::catalog::split::Manifest::load(&path).is_err());
    });
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(refused) => assert!(refused, "a corrupt manifest must be refused"),
        Err(_) => panic!("Manifest::load did not return within 10 s on a corrupt manifest"),
    }
}

/// Decompresses a reproducer from `fuzz/regressions/` into `dir`.
fn regression(name: &str, dir: &Path, file: &str) -> PathBuf {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(name);
    let out = Command::new("gzip")
        .arg("-dc")
        .arg(&fixture)
        .output()
        .expect("gzip");
    assert!(out.status.success(), "gzip -dc {}", fixture.display());
    let path = dir.join(file);
    std::fs::write(&path, &out.stdout).unwrap();
    path
}

/// fuzz hdf5_shard: a table column whose extent the file cannot hold (written by h5py,
/// `tests/reference/damage_shard.py`) made the reader allocate it and the process abort with no message.
/// Every verb that opens shards now refuses it, naming the column. Run as a process: an abort on the old
/// code must not take the test harness with it.
#[test]
fn fuzz_shard_with_an_impossible_table_extent_is_refused_not_aborted() {
    let dir = tempdir();
    let shard = regression(
        "hdf5_shard-impossible-table-extent.h5.gz",
        dir.path(),
        "shard-0-00000.h5",
    );
    let (code, _, err) = run(&["catalog", "build", s(&shard), "--out", s(&dir.path().join("cat"))]);
    assert_eq!(
        code, 1,
        "catalog build must refuse the shard (an abort gives -1), got {code}: {err}"
    );
    assert!(
        err.contains("series/series_key") && err.contains("damaged"),
        "{err}"
    );
    // The same check through the library on a fresh damage of an intact shard: a column whose row
    // count differs from its table's (shape, not size).
    let key = medtrain::deid::SiteKey::from_bytes(crate::catalog_common::KEY_BYTES);
    let cohort = crate::catalog_common::cohort(3);
    let pack = crate::catalog_common::write_pack(&dir.path().join("pack"), &key, &cohort, 1, 0);
    let good = pack.join(&PackIndex::load(&pack).unwrap().unwrap().shards[0].file);
    let fresh = dir.path().join("fresh.h5");
    crate::common::reference_script("damage_shard.py", &[s(&good), s(&fresh), "slices/position", "3"]);
    match ShardReader::open(&fresh) {
        Err(e) => assert!(e.to_string().contains("slices/position"), "{e}"),
        Ok(_) => panic!("a damaged shard was opened"),
    }
}

/// Writes an HDF5 file with the root attributes of a shard of format 2 (variable-length strings), then
/// damages its global heap: the first heap object's index and size are zeroed, so libhdf5 1.10 parsing
/// the collection never advances (`H5HG__cache_heap_deserialize`), the loop fuzz hdf5_shard found at
/// input 4,901 reading such an attribute (`H5Aread` → `H5T__conv_vlen` → `H5HG_read`).
fn vlen_shard_with_a_looping_global_heap(path: &Path, version: u32) {
    use hdf5::types::VarLenUnicode;
    {
        let file = hdf5::File::create(path).unwrap();
        for (name, value) in [
            ("format", "medtrain-shard"),
            ("key_fingerprint", "0123456789abcdef"),
        ] {
            let v: VarLenUnicode = value.parse().unwrap();
            file.new_attr::<VarLenUnicode>()
                .create(name)
                .unwrap()
                .write_scalar(&v)
                .unwrap();
        }
        file.new_attr::<u32>()
            .create("format_version")
            .unwrap()
            .write_scalar(&version)
            .unwrap();
    }
    let mut bytes = std::fs::read(path).unwrap();
    let at = bytes
        .windows(4)
        .position(|w| w == b"GCOL")
        .expect("a global heap collection");
    // Signature (4), version (1), reserved (3), collection size (8), then the first object's header:
    // index (2), reference count (2), reserved (4), size (8).
    let object = at + 16;
    bytes[object..object + 2].fill(0);
    bytes[object + 8..object + 16].fill(0);
    std::fs::write(path, bytes).unwrap();
}

/// fuzz hdf5_shard, input 4,901: a shard whose text attribute points into a damaged global heap made
/// libhdf5 loop forever in `ShardReader::open` (it read the variable-length `format` string). Shards
/// now keep their text attributes in the attribute message (format 3), and an attribute that is a
/// variable-length string is judged by its type alone: an old shard is refused with "repack", a damaged
/// one as not a shard, both at once.
#[test]
fn fuzz_shard_with_a_damaged_global_heap_is_refused_not_hung() {
    let dir = tempdir();
    for (version, wanted) in [(2u32, "format version 2"), (3, "not a medtrain shard")] {
        let path = dir.path().join(format!("shard-v{version}.h5"));
        vlen_shard_with_a_looping_global_heap(&path, version);
        let (tx, rx) = std::sync::mpsc::channel();
        let open = path.clone();
        std::thread::spawn(move || {
            let _ = tx.send(ShardReader::open(&open).err().map(|e| e.to_string()));
        });
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Some(e)) => assert!(e.contains(wanted), "version {version}: {e}"),
            Ok(None) => panic!("version {version}: a damaged shard was opened"),
            Err(_) => panic!("version {version}: ShardReader::open did not return within 10 s"),
        }
        let (code, _, err) = run(&["catalog", "build", s(&path), "--out", s(&dir.path().join("cat"))]);
        assert_eq!(code, 1, "catalog build must refuse it: {err}");
        assert!(
            err.contains(if version == 2 { "repack" } else { wanted }),
            "{err}"
        );
    }
}

/// fuzz hdf5_shard (campaign of 2026-12-06): a table column whose stored datatype claims 1,886,351,971-byte
/// values (the bytes "crop" read as a size) made libhdf5 allocate 1.9 GB for a 32-byte column before
/// failing with "addr overflow". Each column's stored element size and storage are now checked from
/// its metadata before it is read. Run under a 1 GB address-space limit: the old code could not
/// allocate and failed with libhdf5's message, not ours.
#[test]
fn fuzz_shard_with_a_damaged_datatype_size_is_refused_without_allocating_it() {
    let dir = tempdir();
    let shard = regression(
        "hdf5_shard-datatype-size-oom.h5.gz",
        dir.path(),
        "shard-0-00000.h5",
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg("ulimit -v 1048576 && exec \"$0\" catalog build \"$1\" --out \"$2\"")
        .arg(env!("CARGO_BIN_EXE_medtrain"))
        .arg(&shard)
        .arg(dir.path().join("cat"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("series/n_padding") && err.contains("damaged"),
        "{err}"
    );
}

/// A manifest is checked against its checksum file before the HDF5 library sees it: a damaged manifest
/// (fuzz manifest: libhdf5 allocated 4 GB in H5Dopen2 on one) and a manifest whose plan was altered
/// (a patient index changed: the old code read it as a valid plan) are refused with the remedy.
#[test]
fn fuzz_manifest_is_verified_before_the_hdf5_library_opens_it() {
    let dir = tempdir();
    let c = crate::catalog_common::cohort(6);
    let key = medtrain::deid::SiteKey::from_bytes(crate::catalog_common::KEY_BYTES);
    let pack = crate::catalog_common::write_pack(&dir.path().join("pack"), &key, &c, 1, 0);
    let cat = dir.path().join("cat");
    let (code, _, err) = run(&["catalog", "build", s(&pack), "--out", s(&cat)]);
    assert_eq!(code, 0, "{err}");
    let manifest = dir.path().join("manifest.h5");
    let (code, _, err) = run(&[
        "catalog",
        "split",
        s(&cat),
        "modality = 'CT'",
        "--out",
        s(&manifest),
        "--ratios",
        "train=0.5,val=0.5",
        "--seed",
        "1",
    ]);
    assert_eq!(code, 0, "{err}");
    medtrain::catalog::split::Manifest::load(&manifest).expect("an intact manifest loads");
    // Alter one patient index of the plan, as h5py would write it: a valid HDF5 file with another plan.
    let bytes = std::fs::read(&manifest).unwrap();
    let loaded = medtrain::catalog::split::Manifest::load(&manifest).unwrap();
    let first = loaded.splits[0].patients[0];
    let needle = first.to_le_bytes();
    let mut altered = bytes.clone();
    let at = (0..bytes.len() - 4)
        .rev()
        .find(|&i| bytes[i..i + 4] == needle)
        .expect("the patient index is stored");
    altered[at] ^= 0x40;
    std::fs::write(&manifest, &altered).unwrap();
    let e =
        medtrain::catalog::split::Manifest::load(&manifest).expect_err("an altered manifest must be refused");
    let text = e.to_string();
    assert!(
        text.contains("damaged") && text.contains("catalog split"),
        "{text}"
    );
    // No checksum file at all (an older medtrain, or a copy without it): refused the same way.
    std::fs::write(&manifest, &bytes).unwrap();
    std::fs::remove_file(dir.path().join("manifest.h5.blake3")).unwrap();
    let text = medtrain::catalog::split::Manifest::load(&manifest)
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("missing") && text.contains("catalog split"),
        "{text}"
    );
    // The committed reproducer of the global-heap hang, with no checksum file beside it.
    let old = regression("manifest-global-heap-hang.h5.gz", dir.path(), "old.h5");
    assert!(medtrain::catalog::split::Manifest::load(&old).is_err());
}

/// The lines of `metrics.jsonl`, parsed.
fn metrics_lines(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// SIGKILL in the end-of-epoch evaluation, after that epoch's checkpoint: `--resume auto` evaluates
/// the epoch first, so every epoch has its metrics line (with the undisturbed run's loss and
/// evaluation) and, after a kill in the last evaluation, `final_eval` is set.
#[test]
fn fault_killed_in_evaluation_resumes_the_evaluation() {
    let c = cohort(10);
    let cfg = write_config(&c.root, "t.toml", "epochs = 2\neval_every = 1");
    let whole = c.root.join("whole");
    let (code, out, err) = run(&train_args(&c, &whole, &cfg, &["--json"]));
    assert_eq!(code, 0, "{out}\n{err}");
    let outcome: serde_json::Value = serde_json::from_str(&out).unwrap();
    let steps = outcome["global_step"].as_u64().unwrap();
    assert!(!outcome["final_eval"].is_null(), "{outcome}");

    let parts = c.root.join("parts");
    for fault in [
        format!("kill-in-eval@{}", steps / 2),
        format!("kill-in-eval@{steps}"),
    ] {
        let out = medtrain()
            .args(train_args(&c, &parts, &cfg, &["--resume", "auto"]))
            .env("MEDTRAIN_FAULT", &fault)
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "{fault}: the run must be killed:\n{}",
            text(&out)
        );
    }
    let (code, out, err) = run(&train_args(&c, &parts, &cfg, &["--resume", "auto", "--json"]));
    assert_eq!(code, 0, "{out}\n{err}");
    let resumed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(resumed["status"], "finished");
    assert_eq!(resumed["global_step"].as_u64().unwrap(), steps);
    assert_eq!(
        resumed["final_eval"], outcome["final_eval"],
        "final_eval after the resumed evaluation"
    );

    let (want, got) = (metrics_lines(&whole), metrics_lines(&parts));
    let epochs: Vec<u64> = got.iter().map(|l| l["epoch"].as_u64().unwrap()).collect();
    assert_eq!(epochs, [1, 2], "one metrics line per epoch");
    for (w, g) in want.iter().zip(&got) {
        for key in [
            "epoch",
            "global_step",
            "train_loss",
            "lr",
            "skipped_steps",
            "eval",
        ] {
            assert_eq!(w[key], g[key], "epoch {}: {key}", w["epoch"]);
        }
        assert!(!g["eval"].is_null());
    }

    // Resuming the finished run again changes nothing: the last evaluation is not repeated.
    let (code, out, err) = run(&train_args(&c, &parts, &cfg, &["--resume", "auto", "--json"]));
    assert_eq!(code, 0, "{out}\n{err}");
    let again: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(again["final_eval"], outcome["final_eval"]);
    assert_eq!(metrics_lines(&parts).len(), 2);
}
