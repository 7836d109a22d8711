//! `train`, `eval` and `predict` end to end on a small phantom cohort: real DICOM → pack → catalog →
//! manifest → training under `mpirun -np 2` and as a single process. Invariants between runs (resumed vs
//! uninterrupted, one rank with two micro-batches vs two ranks with one each) and the fault paths
//! (an erroring rank, SIGTERM).

use crate::common::{medtrain, run, s, tempdir};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A cohort small enough for seconds of training: phantom → pack → catalog with labels → split.
pub struct Cohort {
    pub _dir: tempfile::TempDir,
    pub root: PathBuf,
    pub catalog: PathBuf,
    pub manifest: PathBuf,
}

pub fn cohort(patients: u32) -> Cohort {
    cohort_with(patients, None)
}

/// `cohort` packed into shards of about `shard_size` pixel bytes (e.g. "48KiB"), for several shards.
pub fn cohort_with(patients: u32, shard_size: Option<&str>) -> Cohort {
    let dir = tempdir();
    let root = dir.path().to_path_buf();
    let p = |x: &str| root.join(x);
    let patients = patients.to_string();
    let ok = |args: &[&str]| {
        let (code, out, err) = run(args);
        assert_eq!(code, 0, "{args:?}\n{out}\n{err}");
    };
    ok(&[
        "phantom",
        "--out",
        s(&p("phantom")),
        "--patients",
        &patients,
        "--size",
        "32",
        "--slices",
        "12",
        "--no-radiographs",
    ]);
    let (dicom, pack_dir, key) = (p("phantom/dicom"), p("pack"), p("site.key"));
    let mut pack: Vec<&str> = vec![
        "pack",
        s(&dicom),
        "--out",
        s(&pack_dir),
        "--key",
        s(&key),
        "--create-key",
    ];
    if let Some(size) = shard_size {
        pack.extend(["--shard-size", size]);
    }
    ok(&pack);
    ok(&["catalog", "build", s(&p("pack")), "--out", s(&p("catalog"))]);
    let (catalog, key) = (p("catalog"), p("site.key"));
    for (csv, name) in [
        ("slices_by_instance.csv", "nodule_slices"),
        ("patients.csv", "outcome"),
    ] {
        let csv = p(&format!("phantom/truth/{csv}"));
        ok(&[
            "catalog",
            "labels",
            "import",
            s(&csv),
            "--out",
            s(&catalog),
            "--name",
            name,
            "--key",
            s(&key),
        ]);
    }
    ok(&[
        "catalog",
        "split",
        s(&p("catalog")),
        "modality = 'CT'",
        "--out",
        s(&p("manifest.h5")),
        "--ratios",
        "train=0.6,val=0.2,test=0.2",
        "--seed",
        "7",
    ]);
    Cohort {
        catalog: p("catalog"),
        manifest: p("manifest.h5"),
        root,
        _dir: dir,
    }
}

/// A tiny 2.5D model; `overrides` ("key = value" lines) replace or extend the [train] table.
pub fn write_config(dir: &Path, name: &str, overrides: &str) -> PathBuf {
    let path = dir.join(name);
    let mut train: Vec<(String, String)> = [
        ("epochs", "2"),
        ("batch_size", "4"),
        ("lr", "0.01"),
        ("warmup_steps", "2"),
        ("seed", "11"),
        ("threads", "1"),
        ("eval_every", "1"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for line in overrides.lines().filter(|l| !l.trim().is_empty()) {
        let (k, v) = line.split_once('=').expect("key = value");
        let (k, v) = (k.trim().to_string(), v.trim().to_string());
        match train.iter_mut().find(|(key, _)| *key == k) {
            Some(entry) => entry.1 = v,
            None => train.push((k, v)),
        }
    }
    let train: String = train.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
    let text = format!(
        r#"
[model]
widths = [4, 8]
blocks = [1, 1]
stem_kernel = 3
stem_stride = 1
stem_pool = false

[data]
mode = "slice25d"
context = 1
size = [32, 32]
labels = ["nodule_slices.nodule"]

[data.augment]
flip_lr = true

[train]
{train}
[eval]
bootstrap = 50
"#
    );
    std::fs::write(&path, text).unwrap();
    path
}

pub fn mpirun(np: u32, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new("mpirun");
    cmd.args(["--allow-run-as-root", "--oversubscribe", "-np", &np.to_string()])
        .arg(env!("CARGO_BIN_EXE_medtrain"))
        .arg("--quiet")
        .args(args)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMPI_MCA_rmaps_base_oversubscribe", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

pub fn check(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({:?})\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `train --json` on two ranks; checks it succeeded in one world of two and returns the outcome.
fn train_two_ranks(c: &Cohort, out: &Path, config: &Path) -> serde_json::Value {
    let args = [
        "train",
        s(&c.catalog),
        s(&c.manifest),
        "--out",
        s(out),
        "--config",
        s(config),
        "--json",
    ];
    let result = mpirun(2, &args, &[]).output().unwrap();
    check(&result, "training on two ranks");
    let outcome: serde_json::Value = serde_json::from_slice(&result.stdout).unwrap();
    assert_eq!(outcome["world_size"], 2, "both ranks must be in one world");
    outcome
}

/// Every tensor of a safetensors file, by name.
pub fn tensors(path: &Path) -> Vec<(String, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<(String, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| (name, view.data().to_vec()))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// The newest checkpoint directory of a run.
pub fn newest_checkpoint(run: &Path) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(run.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir() && !p.to_string_lossy().ends_with(".partial"))
        .collect();
    dirs.sort();
    dirs.pop().expect("a checkpoint")
}

fn status(run: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(run.join("train-status.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// `--tensorboard DIR` puts the events of a run under DIR/<run directory name>/, a log directory
/// that several runs share, instead of <run>/tb/; the steps are the same as steps.jsonl's.
#[test]
fn train_tensorboard_flag_writes_events_into_a_shared_directory() {
    let c = cohort(10);
    let cfg = write_config(&c.root, "t.toml", "epochs = 1");
    let shared = c.root.join("project-tb");
    let run_dir = c.root.join("run-a");
    let (code, out, err) = run(&[
        "train",
        s(&c.catalog),
        s(&c.manifest),
        "--out",
        s(&run_dir),
        "--config",
        s(&cfg),
        "--tensorboard",
        s(&shared),
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(!run_dir.join("tb").exists(), "no events under the run directory");
    let out = crate::common::reference_script("read_tensorboard.py", &[s(&shared.join("run-a"))]);
    let j: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    let steps = std::fs::read_to_string(run_dir.join("steps.jsonl"))
        .unwrap()
        .lines()
        .count();
    assert!(steps > 0);
    assert_eq!(j["scalars"]["train/loss"].as_array().unwrap().len(), steps, "{j}");
}

#[test]
fn train_eval_predict_single_process() {
    let c = cohort(10);
    let cfg = write_config(&c.root, "t.toml", "");
    let run_dir = c.root.join("run");
    let (code, out, err) = run(&[
        "train",
        s(&c.catalog),
        s(&c.manifest),
        "--out",
        s(&run_dir),
        "--config",
        s(&cfg),
        "--json",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    let outcome: serde_json::Value = serde_json::from_str(&out).expect("--json prints the outcome");
    assert_eq!(outcome["status"], "finished");
    assert_eq!(outcome["world_size"], 1);
    assert_eq!(outcome["epochs"], 2);
    for f in [
        "metrics.jsonl",
        "loss.png",
        "report.md",
        "settings.json",
        "train-status.json",
    ] {
        assert!(run_dir.join(f).is_file(), "{f} missing");
    }
    let metrics = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 2, "one line per epoch");
    // The plots' data (JSON beside each PNG and SVG) are the logged values: the loss per step from
    // steps.jsonl with its debiased EMA, the epoch means and the validation AUCs from metrics.jsonl.
    let json_lines = |f: &str| -> Vec<serde_json::Value> {
        std::fs::read_to_string(run_dir.join(f))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let (steps, epochs) = (json_lines("steps.jsonl"), json_lines("metrics.jsonl"));
    assert_eq!(
        steps.len() as u64,
        epochs[1]["global_step"].as_u64().unwrap(),
        "a line per step"
    );
    let chart = |f: &str| -> serde_json::Value {
        assert!(run_dir.join(format!("{f}.png")).is_file() && run_dir.join(format!("{f}.svg")).is_file());
        serde_json::from_str(&std::fs::read_to_string(run_dir.join(format!("{f}.json"))).unwrap()).unwrap()
    };
    let points = |c: &serde_json::Value, i: usize| -> Vec<(f64, f64)> {
        c["series"][i]["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p[0].as_f64().unwrap(), p[1].as_f64().unwrap()))
            .collect()
    };
    let loss = chart("loss");
    let raw: Vec<(f64, f64)> = steps
        .iter()
        .map(|l| (l["step"].as_f64().unwrap(), l["loss"].as_f64().unwrap()))
        .collect();
    assert_eq!(points(&loss, 0), raw);
    let (mut acc, mut norm) = (0.0, 0.0);
    for ((x, y), (ex, ey)) in raw.iter().zip(points(&loss, 1)) {
        acc = 0.9 * acc + 0.1 * y;
        norm = 0.9 * norm + 0.1;
        assert_eq!(*x, ex);
        assert!((acc / norm - ey).abs() < 1e-12, "EMA {ey} vs {}", acc / norm);
    }
    let epoch_means: Vec<(f64, f64)> = epochs
        .iter()
        .map(|l| {
            (
                l["global_step"].as_f64().unwrap(),
                l["train_loss"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(points(&loss, 2), epoch_means);
    // The validation loss of each epoch (the training BCE over the validation samples).
    let val_loss: Vec<(f64, f64)> = epochs
        .iter()
        .map(|l| {
            let v = l["eval"]["loss"].as_f64().unwrap();
            assert!(v.is_finite() && v > 0.0, "{l}");
            (l["global_step"].as_f64().unwrap(), v)
        })
        .collect();
    assert_eq!(points(&loss, 3), val_loss);
    // Validation AUCs, where the validation split has both classes.
    let aucs: Vec<(f64, f64)> = epochs
        .iter()
        .filter_map(|l| {
            Some((
                l["epoch"].as_f64()?,
                l["eval"]["series"]["auc"]["estimate"].as_f64()?,
            ))
        })
        .collect();
    if aucs.is_empty() {
        assert!(!run_dir.join("validation.json").exists());
    } else {
        let validation = chart("validation");
        assert_eq!(validation["series"][0]["name"], "series AUC");
        assert_eq!(points(&validation, 0), aucs);
    }
    // The validation metrics cover every validation series, with an interval around the estimate.
    let series = &outcome["final_eval"]["series"];
    assert!(series["n"].as_u64().unwrap() >= 1, "{outcome}");

    // eval and predict read the weights alone: they work without the optimizer state.
    std::fs::remove_file(newest_checkpoint(&run_dir).join("optimizer.safetensors")).unwrap();

    // eval on the test split.
    let eval_dir = c.root.join("eval");
    let (code, out, err) = run(&[
        "eval",
        s(&run_dir),
        "--out",
        s(&eval_dir),
        "--split",
        "test",
        "--json",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["split"], "test");
    assert!(eval_dir.join("eval.md").is_file());
    // Not on a terminal, progress comes as structured lines: at least the closing one, with counts
    // (shown without --quiet).
    let loud = std::process::Command::new(env!("CARGO_BIN_EXE_medtrain"))
        .args([
            "eval",
            s(&run_dir),
            "--out",
            s(&c.root.join("eval-loud")),
            "--split",
            "test",
        ])
        .output()
        .unwrap();
    assert!(loud.status.success());
    let err = String::from_utf8_lossy(&loud.stderr);
    let progress = err
        .lines()
        .find(|l| l.contains("samples scored (rank 0's share): done"))
        .unwrap_or_else(|| panic!("no progress line:\n{err}"));
    assert!(
        progress.contains("done=") && progress.contains("of="),
        "{progress}"
    );
    // The reliability diagram of the test series: its bins hold every scored series once.
    let calibration: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(eval_dir.join("calibration.json")).unwrap()).unwrap();
    let binned: u64 = calibration["note"]
        .as_str()
        .unwrap()
        .trim_start_matches("series per bin: ")
        .split(' ')
        .map(|n| n.parse::<u64>().unwrap())
        .sum();
    let scored: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(eval_dir.join("eval.json")).unwrap()).unwrap();
    assert_eq!(Some(binned), scored["series"]["n"].as_u64());
    // An unknown split is a usage error.
    let (code, _, err) = run(&["eval", s(&run_dir), "--out", s(&eval_dir), "--split", "nope"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("nope"), "{err}");

    // predict on the pack without labels: one score per CT slice (10 patients × 12 slices).
    let pred_dir = c.root.join("pred");
    let (code, out, err) = run(&[
        "predict",
        s(&run_dir),
        s(&c.root.join("pack")),
        "--out",
        s(&pred_dir),
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    let csv = std::fs::read_to_string(pred_dir.join("predictions.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 10 * 12);
    let series_csv = std::fs::read_to_string(pred_dir.join("series-predictions.csv")).unwrap();
    assert_eq!(series_csv.lines().count(), 1 + 10);
}

#[test]
fn bad_train_config_is_a_usage_error_naming_the_key() {
    let dir = tempdir();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[train]\nepochs = 0\n[data]\nlabels = [\"x.y\"]\n").unwrap();
    let (code, _, err) = run(&["train", "a", "b", "--out", s(dir.path()), "--config", s(&cfg)]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("epochs"), "{err}");
    std::fs::write(&cfg, "[train]\nepoch = 3\n").unwrap();
    let (code, _, err) = run(&["train", "a", "b", "--out", s(dir.path()), "--config", s(&cfg)]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("epoch"), "{err}");
}

/// Two ranks, stopped mid-epoch by --max-steps and resumed, reach bitwise the weights of an
/// uninterrupted two-rank run.
#[test]
fn mpirun_resume_mid_epoch_is_bitwise_identical() {
    let c = cohort(10);
    let cfg = write_config(&c.root, "t.toml", "");
    let args = |out: &Path| {
        vec![
            "train".to_string(),
            s(&c.catalog).into(),
            s(&c.manifest).into(),
            "--out".into(),
            s(out).into(),
            "--config".into(),
            s(&cfg).into(),
            "--json".into(),
        ]
    };
    let whole = c.root.join("whole");
    let a: Vec<String> = args(&whole);
    let a: Vec<&str> = a.iter().map(|x| x.as_str()).collect();
    let out = mpirun(2, &a, &[]).output().unwrap();
    check(&out, "uninterrupted run");
    let outcome: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("one JSON outcome from rank 0");
    assert_eq!(outcome["world_size"], 2, "both ranks must be in one world");
    let steps = outcome["global_step"].as_u64().unwrap();
    assert!(steps >= 4, "need a few steps per epoch, got {steps}");

    let parts = c.root.join("parts");
    let stop_at = (steps / 2 - 1).to_string(); // inside the first epoch
    let mut b: Vec<String> = args(&parts);
    b.extend(["--max-steps".to_string(), stop_at.clone()]);
    let b: Vec<&str> = b.iter().map(|x| x.as_str()).collect();
    let out = mpirun(2, &b, &[]).output().unwrap();
    check(&out, "first part");
    assert_eq!(status(&parts)["status"], "max-steps");
    let mut r: Vec<String> = args(&parts);
    r.extend(["--resume".to_string(), "auto".to_string()]);
    let r: Vec<&str> = r.iter().map(|x| x.as_str()).collect();
    let out = mpirun(2, &r, &[]).output().unwrap();
    check(&out, "resumed part");
    assert_eq!(status(&parts)["status"], "finished");
    assert_eq!(status(&parts)["global_step"].as_u64().unwrap(), steps);

    assert_same_newest_checkpoints(&whole, &parts);
}

/// The newest checkpoints of two runs hold bitwise the same weights and optimizer state.
pub fn assert_same_newest_checkpoints(whole: &Path, parts: &Path) {
    for file in ["model.safetensors", "optimizer.safetensors"] {
        let x = tensors(&newest_checkpoint(whole).join(file));
        let y = tensors(&newest_checkpoint(parts).join(file));
        assert_eq!(x.len(), y.len());
        for ((nx, bx), (ny, by)) in x.iter().zip(&y) {
            assert_eq!(nx, ny);
            assert!(
                bx == by,
                "{file}: {nx} differs between the resumed and the uninterrupted run"
            );
        }
    }
}

/// One rank with two micro-batches of 4 and two ranks with one micro-batch of 4 each take the same
/// optimizer steps (same global batches, batch-norm statistics averaged the same way).
#[test]
fn one_rank_two_micro_batches_equals_two_ranks() {
    let c = cohort(10);
    let sgd = "optimizer = { kind = \"sgd\", momentum = 0.9, nesterov = false, weight_decay = 0.0 }\nmax_steps = 4\neval_every = 0";
    let one = write_config(&c.root, "one.toml", &format!("micro_batches = 2\n{sgd}"));
    let two = write_config(&c.root, "two.toml", &format!("micro_batches = 1\n{sgd}"));
    let run_one = c.root.join("one");
    let run_two = c.root.join("two");
    let (code, out, err) = run(&[
        "train",
        s(&c.catalog),
        s(&c.manifest),
        "--out",
        s(&run_one),
        "--config",
        s(&one),
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    train_two_ranks(&c, &run_two, &two);
    let x = tensors(&newest_checkpoint(&run_one).join("model.safetensors"));
    let y = tensors(&newest_checkpoint(&run_two).join("model.safetensors"));
    let mut checked = 0;
    for ((nx, bx), (ny, by)) in x.iter().zip(&y) {
        assert_eq!(nx, ny);
        if nx.ends_with("num_batches_tracked") {
            continue;
        }
        let (a, b) = (f32s(bx), f32s(by));
        for (i, (p, q)) in a.iter().zip(&b).enumerate() {
            let tol = 1e-4 * (1.0 + p.abs().max(q.abs()));
            assert!((p - q).abs() <= tol, "{nx}[{i}]: {p} vs {q}");
        }
        checked += 1;
    }
    assert!(checked > 10);
}

/// A rank that fails while the other waits in a collective ends the whole job quickly, with the reason.
#[test]
fn an_erroring_rank_ends_the_job() {
    let c = cohort(10);
    let cfg = write_config(&c.root, "t.toml", "epochs = 50");
    let started = Instant::now();
    let mut child = mpirun(
        2,
        &[
            "train",
            s(&c.catalog),
            s(&c.manifest),
            "--out",
            s(&c.root.join("run")),
            "--config",
            s(&cfg),
        ],
        &[("MEDTRAIN_FAULT", "rank:1:step:2")],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let deadline = Duration::from_secs(120);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            panic!("the job did not end within {deadline:?} after rank 1 failed");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("injected fault"),
        "the reason must be printed:\n{text}"
    );
    assert!(text.contains("rank 1"), "{text}");
}

/// SIGTERM (Slurm's warning before the time limit) makes the run write a checkpoint and exit cleanly;
/// `--resume auto` continues from it.
#[test]
fn sigterm_writes_a_checkpoint_and_resume_continues() {
    let c = cohort(10);
    let cfg = write_config(&c.root, "t.toml", "epochs = 40\neval_every = 0");
    let run_dir = c.root.join("run");
    let mut child = medtrain()
        .args([
            "train",
            s(&c.catalog),
            s(&c.manifest),
            "--out",
            s(&run_dir),
            "--config",
            s(&cfg),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the end of the first epoch (its checkpoint), then ask to stop.
    let started = Instant::now();
    while !run_dir.join("checkpoints").is_dir()
        || std::fs::read_dir(run_dir.join("checkpoints")).unwrap().count() == 0
    {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no checkpoint after 120 s"
        );
        assert!(child.try_wait().unwrap().is_none(), "training ended early");
        std::thread::sleep(Duration::from_millis(100));
    }
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    check(&out, "training stopped by SIGTERM");
    let st = status(&run_dir);
    assert_eq!(st["status"], "interrupted", "{st}");
    let stopped_at = st["global_step"].as_u64().unwrap();
    let ck = newest_checkpoint(&run_dir);
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ck.join("state.json")).unwrap()).unwrap();
    assert_eq!(
        state["state"]["global_step"]
            .as_u64()
            .or(state["global_step"].as_u64()),
        Some(stopped_at)
    );
    // Resume for a couple of steps more.
    let more = (stopped_at + 2).to_string();
    let (code, out, err) = run(&[
        "train",
        s(&c.catalog),
        s(&c.manifest),
        "--out",
        s(&run_dir),
        "--config",
        s(&cfg),
        "--resume",
        "auto",
        "--max-steps",
        &more,
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(status(&run_dir)["global_step"].as_u64().unwrap(), stopped_at + 2);
}

/// A risk model on two ranks: the Cox loss gathers risks from both ranks, and eval reports a C-index
/// (with its bootstrap interval) over the patients of a split (the training split: enough of them).
#[test]
fn survival_task_on_two_ranks_reports_a_c_index() {
    let c = cohort(10);
    let cfg = write_config(
        &c.root,
        "surv.toml",
        "task = \"survival\"\nmax_steps = 6\nlr = 0.001",
    );
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "labels = [\"nodule_slices.nodule\"]",
        "labels = [\"outcome.followupdays\", \"outcome.deathevent\"]",
    );
    std::fs::write(&cfg, text).unwrap();
    let run_dir = c.root.join("surv");
    train_two_ranks(&c, &run_dir, &cfg);
    let (code, out, err) = run(&[
        "eval",
        s(&run_dir),
        "--out",
        s(&c.root.join("eval")),
        "--split",
        "train",
        "--json",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let c_index = &report["c_index"];
    let (est, low, high) = (
        c_index["estimate"].as_f64().unwrap(),
        c_index["low"].as_f64().unwrap(),
        c_index["high"].as_f64().unwrap(),
    );
    assert!(
        (0.0..=1.0).contains(&est) && low <= est && est <= high,
        "{report}"
    );
}

/// Checkpoint files are a function of the trajectory alone: two identical runs write the same bytes,
/// and so does a run stopped and resumed (the safetensors header used to list its metadata in hash
/// order, which changes from process to process).
#[test]
fn checkpoint_files_are_byte_reproducible() {
    let c = cohort(10);
    let cfg = write_config(&c.root, "t.toml", "epochs = 1\neval_every = 0");
    let train = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "train",
            s(&c.catalog),
            s(&c.manifest),
            "--out",
            s(out),
            "--config",
            s(&cfg),
        ];
        args.extend_from_slice(extra);
        let (code, stdout, stderr) = run(&args);
        assert_eq!(code, 0, "{args:?}\n{stdout}\n{stderr}");
    };
    let (first, second, parts) = (c.root.join("first"), c.root.join("second"), c.root.join("parts"));
    train(&first, &[]);
    train(&second, &[]);
    train(&parts, &["--max-steps", "3"]);
    assert_eq!(status(&parts)["status"], "max-steps");
    train(&parts, &["--resume", "auto"]);
    assert_eq!(status(&parts)["status"], "finished");
    let want = newest_checkpoint(&first);
    for other in [&second, &parts] {
        let got = newest_checkpoint(other);
        assert_eq!(want.file_name(), got.file_name());
        for file in ["model.safetensors", "optimizer.safetensors", "state.json"] {
            let (a, b) = (
                std::fs::read(want.join(file)).unwrap(),
                std::fs::read(got.join(file)).unwrap(),
            );
            assert!(
                a == b,
                "{file} of {} differs from {}",
                got.display(),
                want.display()
            );
        }
    }
}

/// Regression with unknown targets spread unevenly over the samples: one rank with two micro-batches
/// and two ranks with one each take the same steps, because both divide by the known targets of the
/// whole global batch (not by each micro-batch's or rank's own count, nor by all targets).
#[test]
fn regression_with_unknown_targets_one_rank_equals_two_ranks() {
    let c = cohort(10);
    // A slice score, unknown (empty) for about 40 % of the slices in an irregular pattern.
    let truth = std::fs::read_to_string(c.root.join("phantom/truth/slices_by_instance.csv")).unwrap();
    let mut csv = String::from("PatientID,SeriesInstanceUID,InstanceNumber,Score\n");
    let (mut known, mut unknown, mut slice) = (0, 0, 0usize);
    for line in truth.lines().skip(1) {
        // PatientID and SeriesInstanceUID (quoted where they hold commas), an InstanceNumber or a
        // range of them ("1-12"), Nodule. Written out one slice per row.
        let cells: Vec<&str> = line.rsplitn(3, ',').collect();
        let (nodule, instances, key) = (cells[0].trim(), cells[1].trim(), cells[2]);
        let (first, last) = instances.split_once('-').unwrap_or((instances, instances));
        let parse = |x: &str| x.parse::<u32>().unwrap_or_else(|e| panic!("{line}: {e}"));
        let nodule: f32 = nodule.parse().unwrap_or_else(|e| panic!("{line}: {e}"));
        for instance in parse(first)..=parse(last) {
            slice += 1;
            let score = if (slice * 7 + slice / 12) % 5 < 2 {
                unknown += 1;
                String::new()
            } else {
                known += 1;
                format!("{:.3}", instance as f32 / 6.0 - 1.0 + nodule)
            };
            csv.push_str(&format!("{key},{instance},{score}\n"));
        }
    }
    assert!(unknown > 20 && known > 20, "{unknown} unknown, {known} known");
    let scores = c.root.join("scores.csv");
    std::fs::write(&scores, csv).unwrap();
    let (code, out, err) = run(&[
        "catalog",
        "labels",
        "import",
        s(&scores),
        "--out",
        s(&c.catalog),
        "--name",
        "score",
        "--key",
        s(&c.root.join("site.key")),
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    let sgd = "task = \"regression\"\noptimizer = { kind = \"sgd\", momentum = 0.9, nesterov = false, weight_decay = 0.0 }\nmax_steps = 4\neval_every = 0";
    let regression = |name: &str, micro: u32| {
        let path = write_config(&c.root, name, &format!("micro_batches = {micro}\n{sgd}"));
        let text = std::fs::read_to_string(&path).unwrap().replace(
            "labels = [\"nodule_slices.nodule\"]",
            "labels = [\"score.score\"]",
        );
        std::fs::write(&path, text).unwrap();
        path
    };
    let (one, two) = (regression("one.toml", 2), regression("two.toml", 1));
    let (run_one, run_two) = (c.root.join("one"), c.root.join("two"));
    let (code, out, err) = run(&[
        "train",
        s(&c.catalog),
        s(&c.manifest),
        "--out",
        s(&run_one),
        "--config",
        s(&one),
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    train_two_ranks(&c, &run_two, &two);
    let x = tensors(&newest_checkpoint(&run_one).join("model.safetensors"));
    let y = tensors(&newest_checkpoint(&run_two).join("model.safetensors"));
    let mut checked = 0;
    for ((nx, bx), (ny, by)) in x.iter().zip(&y) {
        assert_eq!(nx, ny);
        if nx.ends_with("num_batches_tracked") {
            continue;
        }
        let (a, b) = (f32s(bx), f32s(by));
        for (i, (p, q)) in a.iter().zip(&b).enumerate() {
            let tol = 1e-4 * (1.0 + p.abs().max(q.abs()));
            assert!((p - q).abs() <= tol, "{nx}[{i}]: {p} vs {q}");
        }
        checked += 1;
    }
    assert!(checked > 10);
}

/// `bench loader` on two ranks reads every sample of the split exactly once per epoch: its checksum
/// is the sum of every sample loaded here through the library, one at a time.
#[test]
fn bench_loader_reads_every_sample_once_across_ranks() {
    use medtrain::catalog::split::Manifest;
    use medtrain::config::Config;
    use medtrain::data::Dataset;
    use medtrain::settings::Settings;
    let c = cohort(4);
    let cfg = write_config(&c.root, "loader.toml", "");
    let out = mpirun(
        2,
        &[
            "bench",
            "loader",
            s(&c.catalog),
            s(&c.manifest),
            "--config",
            s(&cfg),
            "--epochs",
            "2",
            "--json",
        ],
        &[],
    )
    .output()
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&text).unwrap();
    let settings = Settings::from_config(&Config::load(Some(&cfg)).unwrap()).unwrap();
    let manifest = Manifest::load(&c.manifest).unwrap();
    let ds = Dataset::open(&c.catalog, &manifest, "train", &settings.data).unwrap();
    let mut buf = vec![0f32; ds.sample_len()];
    let mut sum = 0.0f64;
    for i in 0..ds.len() {
        ds.load(i, None, &mut buf).unwrap();
        sum += buf.iter().map(|&v| v as f64).sum::<f64>();
    }
    assert_eq!(report["ranks"], 2);
    assert_eq!(report["samples"].as_u64(), Some(ds.len() as u64));
    assert_eq!(report["images_per_second"].as_array().unwrap().len(), 2);
    let checksum = report["checksum"].as_f64().unwrap();
    assert!(
        (checksum - sum).abs() <= 1e-9 * sum.abs().max(1.0),
        "checksum {checksum} vs {sum} summed sample by sample"
    );
}

/// `[model] init` through `train`: a torchvision-layout ResNet-18 state dict written by PyTorch
/// (tests/reference/torch_checkpoint.py; widths 4–32, one input channel, a 2-class head) starts the
/// run. The head is of another shape for a binary task and is skipped by `skip_mismatched`; every
/// other weight of the first checkpoint is the file's (the one step taken uses lr = 1e-12).
#[test]
fn train_starts_from_a_torchvision_state_dict_given_in_the_config() {
    let c = cohort(4);
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/reference/fixtures/torch_ckpt_resnet18w4.safetensors");
    let cfg = c.root.join("init.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[model]
widths = [4, 8, 16, 32]
blocks = [2, 2, 2, 2]
stem_kernel = 7
stem_stride = 2
stem_pool = true
init = "{}"
skip_mismatched = ["fc."]

[data]
mode = "slice"
size = [32, 32]
labels = ["nodule_slices.nodule"]

[train]
max_steps = 1
batch_size = 2
lr = 1e-12
warmup_steps = 0
threads = 1
optimizer = {{ kind = "sgd", momentum = 0.0, nesterov = false, weight_decay = 0.0 }}
"#,
            fixture.display()
        ),
    )
    .unwrap();
    let run_dir = c.root.join("run");
    let (code, out, err) = run(&[
        "train",
        s(&c.catalog),
        s(&c.manifest),
        "--out",
        s(&run_dir),
        "--config",
        s(&cfg),
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    let ck = std::fs::read_dir(run_dir.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.join("model.safetensors").is_file())
        .expect("a checkpoint");
    let torch = crate::common::read_f32_tensors(&fixture);
    let ours = crate::common::read_f32_tensors(&ck.join("model.safetensors"));
    let mut compared = 0;
    for (name, (_, want)) in &torch {
        if name.starts_with("fc.") || name.contains("running_") {
            // The head was skipped; running statistics move with the one training forward pass.
            continue;
        }
        let (_, got) = ours
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing from the checkpoint"));
        assert_eq!(got.len(), want.len(), "{name}");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() <= 1e-6, "{name}[{i}]: {g} vs the file's {w}");
        }
        compared += 1;
    }
    assert!(compared >= 40, "{compared} tensors compared");
    assert_eq!(
        ours["fc.weight"].0,
        vec![1, 32],
        "a one-output head of 32 features"
    );
}
