//! The MPI layer under a real launcher (Open MPI's `mpirun -np 2`): the bucketed allreduce gives the
//! closed-form averages on both ranks, a plain process is a world of one without MPI, a failing rank
//! ends the whole job within seconds, and `pack` on two ranks gives the same pack as one process
//! (volumes checked against the analytic phantom, read back through HDF5) and resumes from journals.

use crate::common::{key_file, medtrain, s, tempdir};
use medtrain::deid::{IdKind, SiteKey};
use medtrain::pack::index::PackIndex;
use medtrain::pack::journal::Journal;
use medtrain::pack::reader::ShardReader;
use medtrain::phantom::{ct_volume, generate, PhantomConfig};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RANKS: &str = "2";
/// Variables of a launcher: removed for runs that must see no launcher.
const LAUNCHER_VARS: [&str; 7] = [
    "OMPI_COMM_WORLD_SIZE",
    "PMIX_RANK",
    "PMI_RANK",
    "PMI_SIZE",
    "MV2_COMM_WORLD_SIZE",
    "SLURM_STEP_ID",
    "MEDTRAIN_MPI",
];

/// `mpirun -np 2 medtrain --quiet <args>`, allowed as root and oversubscribed.
fn mpirun(args: &[&str]) -> Command {
    let mut cmd = Command::new("mpirun");
    cmd.args(["--allow-run-as-root", "--oversubscribe", "-np", RANKS])
        .arg(env!("CARGO_BIN_EXE_medtrain"))
        .arg("--quiet")
        .args(args)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMPI_MCA_rmaps_base_oversubscribe", "1")
        .env_remove("MEDTRAIN_MPI");
    cmd
}

struct Finished {
    code: i32,
    stdout: String,
    stderr: String,
    seconds: f64,
}

/// Runs `cmd`; a run longer than `limit` is terminated and fails the test.
fn run_within(mut cmd: Command, limit: Duration) -> Finished {
    let start = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mpirun (Open MPI) or medtrain");
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = r.read_to_string(&mut text);
            text
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > limit {
            // SAFETY: signalling our own child by its pid; mpirun forwards SIGTERM to its ranks.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            std::thread::sleep(Duration::from_secs(2));
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "still running after {limit:?}; killed. stderr:\n{}",
                err.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Finished {
        code: status.code().unwrap_or(-1),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
        seconds: start.elapsed().as_secs_f64(),
    }
}

fn json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("expected one JSON document, got {stdout:?}: {e}"))
}

#[test]
fn bucketed_allreduce_on_two_ranks_gives_the_closed_form_average() {
    let args = [
        "bench",
        "allreduce",
        "--check",
        "--tensors",
        "37",
        "--bytes",
        "3MB",
        "--bucket-bytes",
        "200KB",
        "--iters",
        "3",
        "--json",
    ];
    let r = run_within(mpirun(&args), Duration::from_secs(120));
    assert_eq!(r.code, 0, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    let j = json(&r.stdout);
    assert_eq!(j["world_sizes_seen"], serde_json::json!([2, 2]), "{j}");
    assert_eq!(j["mpi_initialised"], true);
    assert_eq!(j["check"], "passed");
    assert_eq!(j["ok"], true);
    let ranks = j["ranks"].as_array().unwrap();
    assert_eq!(ranks.len(), 2);
    for (r, rank) in ranks.iter().enumerate() {
        assert_eq!(rank["rank"], r);
        assert_eq!(rank["world_size"], 2);
        assert_eq!(rank["mpi_initialised"], true);
        // One host: the shared-memory split puts both ranks on one node.
        assert_eq!(rank["local_size"], 2);
        assert_eq!(rank["local_rank"], r);
        assert_eq!(rank["nodes"], 1);
    }
    // 3 MB over 200 KB buckets of whole tensors: more than one bucket, each started per iteration.
    let buckets = j["buckets"].as_u64().unwrap();
    assert!(buckets > 1, "{j}");
    assert_eq!(j["stats"]["comm_started"].as_u64().unwrap(), buckets * 3);
    assert_eq!(j["stats"]["bytes"].as_u64().unwrap(), 3 * 3_000_000);
}

#[test]
fn without_a_launcher_medtrain_is_a_world_of_one_without_mpi() {
    let mut cmd = medtrain();
    cmd.args([
        "bench",
        "allreduce",
        "--check",
        "--bytes",
        "1MB",
        "--tensors",
        "9",
        "--iters",
        "2",
    ]);
    for var in LAUNCHER_VARS {
        cmd.env_remove(var);
    }
    let r = run_within(cmd, Duration::from_secs(60));
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("MPI was not initialised"), "{}", r.stdout);
    assert!(r.stdout.contains("check passed"), "{}", r.stdout);

    let mut cmd = medtrain();
    cmd.args([
        "bench",
        "allreduce",
        "--check",
        "--bytes",
        "1MB",
        "--tensors",
        "9",
        "--iters",
        "2",
        "--json",
    ]);
    for var in LAUNCHER_VARS {
        cmd.env_remove(var);
    }
    let r = run_within(cmd, Duration::from_secs(60));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let j = json(&r.stdout);
    assert_eq!(j["mpi_initialised"], false);
    assert_eq!(j["world_sizes_seen"], serde_json::json!([1]));
    assert_eq!(j["stats"]["comm_started"], 0);
}

#[test]
fn a_bad_mpi_setting_is_a_usage_error() {
    let mut cmd = medtrain();
    cmd.args(["bench", "allreduce", "--bytes", "1MB", "--iters", "1"])
        .env("MEDTRAIN_MPI", "sometimes");
    let r = run_within(cmd, Duration::from_secs(60));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("MEDTRAIN_MPI"), "{}", r.stderr);
}

#[test]
fn a_rank_that_fails_while_the_other_waits_ends_the_job() {
    // Many iterations: without the abort, rank 0 would wait in the next barrier for ever.
    let args = [
        "bench",
        "allreduce",
        "--bytes",
        "1MB",
        "--tensors",
        "8",
        "--iters",
        "100000",
        "--fail-rank",
        "1",
    ];
    let r = run_within(mpirun(&args), Duration::from_secs(30));
    assert_ne!(r.code, 0, "{}", r.stderr);
    assert!(r.seconds < 30.0);
    let all = format!("{}{}", r.stdout, r.stderr);
    assert!(all.contains("rank 1"), "the failing rank is named:\n{all}");
    assert!(all.contains("failed on purpose"), "the reason is printed:\n{all}");
}

struct Cohort {
    _dir: tempfile::TempDir,
    dicom: std::path::PathBuf,
    root: std::path::PathBuf,
    key: std::path::PathBuf,
    cfg: PhantomConfig,
}

fn cohort() -> Cohort {
    let dir = tempdir();
    let root = dir.path().to_path_buf();
    let cfg = PhantomConfig {
        seed: 11,
        patients: 5,
        size: 32,
        slices: 10,
        slice_thickness_mm: 2.5,
        radiographs: true,
    };
    let summary = generate(&cfg, &root.join("phantom")).expect("phantom");
    Cohort {
        dicom: summary.dicom_dir.clone(),
        key: key_file(&root, "site.key"),
        root,
        cfg,
        _dir: dir,
    }
}

fn pack_args<'a>(c: &'a Cohort, out: &'a Path) -> Vec<&'a str> {
    vec![
        "pack",
        s(&c.dicom),
        "--out",
        s(out),
        "--key",
        s(&c.key),
        "--shard-size",
        "16KiB",
        "--json",
    ]
}

/// Every series of a pack by series key: (modality, shape, pixel bytes), read through the index.
/// (modality, (slices, rows, cols), pixel bytes) of one packed series.
type PackedSeries = (String, (u32, u32, u32), Vec<u8>);

fn series_of(out: &Path) -> BTreeMap<String, PackedSeries> {
    let index = PackIndex::load(out).unwrap().expect("index.json");
    let mut all = BTreeMap::new();
    for entry in &index.shards {
        let shard = ShardReader::open(&out.join(&entry.file)).unwrap();
        for (i, r) in shard.series.iter().enumerate() {
            let value = (
                r.modality.clone(),
                (r.n_slices, r.rows, r.cols),
                shard.pixel_bytes(i).unwrap().to_vec(),
            );
            assert!(
                all.insert(r.series_key.clone(), value).is_none(),
                "{} packed twice",
                r.series_key
            );
        }
    }
    all
}

fn quarantine_set(out: &Path) -> BTreeSet<String> {
    let q: serde_json::Value =
        serde_json::from_slice(&fs::read(out.join("quarantine.json")).unwrap()).unwrap();
    q["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.to_string())
        .collect()
}

#[test]
fn pack_on_two_ranks_equals_pack_in_one_process_and_reruns_skip_everything() {
    let c = cohort();
    // A truncated slice (a scan-phase quarantine, seen by every rank) and a stray file.
    let ct_dir = fs::read_dir(&c.dicom)
        .unwrap()
        .flat_map(|p| fs::read_dir(p.unwrap().path()).unwrap())
        .map(|s| s.unwrap().path())
        .filter(|s| fs::read_dir(s).unwrap().count() > 1)
        .min()
        .expect("a CT series folder");
    let mut slices: Vec<_> = fs::read_dir(&ct_dir)
        .unwrap()
        .map(|f| f.unwrap().path())
        .collect();
    slices.sort();
    let bytes = fs::read(&slices[2]).unwrap();
    fs::write(&slices[2], &bytes[..bytes.len() / 2]).unwrap();
    fs::write(c.dicom.join("README.txt"), "exported by the archive").unwrap();

    let single = c.root.join("pack-single");
    let one = run_within(
        {
            let mut cmd = medtrain();
            cmd.args(pack_args(&c, &single));
            for var in LAUNCHER_VARS {
                cmd.env_remove(var);
            }
            cmd
        },
        Duration::from_secs(120),
    );
    assert_eq!(one.code, 1, "one quarantined series gives exit 1: {}", one.stderr);

    let multi = c.root.join("pack-mpi");
    let two = run_within(mpirun(&pack_args(&c, &multi)), Duration::from_secs(180));
    assert_eq!(two.code, 1, "every rank exits 1:\n{}\n{}", two.stdout, two.stderr);
    let (r1, r2) = (json(&one.stdout), json(&two.stdout));
    assert_eq!(r1["workers"], 1);
    assert_eq!(r2["workers"], 2, "{r2}");
    for field in [
        "items_total",
        "items_packed",
        "slices_packed",
        "quarantined_entries",
        "not_dicom",
    ] {
        assert_eq!(r1[field], r2[field], "{field}: {r1} vs {r2}");
    }
    assert_eq!(r2["items_packed"], r2["items_total"]);
    assert_eq!(r2["quarantined_entries"], 2, "the file and its series: {r2}");
    assert_eq!(quarantine_set(&single), quarantine_set(&multi));

    // Same series, same pixels; CT volumes equal the analytic phantom.
    let (a, b) = (series_of(&single), series_of(&multi));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    assert_eq!(a, b, "the two packs hold different pixels");
    let key = SiteKey::load(&c.key).unwrap();
    let mut cts = 0u32;
    for patient in 0..c.cfg.patients {
        let truth = ct_volume(&c.cfg, patient);
        if let Some((modality, _, pixels)) = b.get(&key.pseudonym(IdKind::Series, &truth.series_uid)) {
            assert_eq!(modality, "CT");
            let hu: Vec<i16> = pixels
                .chunks_exact(2)
                .map(|p| i16::from_le_bytes([p[0], p[1]]))
                .collect();
            assert!(
                hu == truth.hu,
                "patient {patient}: packed CT differs from the analytic volume"
            );
            cts += 1;
        }
    }
    assert_eq!(cts, c.cfg.patients - 1, "all CTs but the damaged one");

    // index.json lists shards of both ranks; no journal is left.
    let index = PackIndex::load(&multi).unwrap().unwrap();
    let files: Vec<&str> = index.shards.iter().map(|s| s.file.as_str()).collect();
    assert!(files.iter().any(|f| f.starts_with("shard-0000-")), "{files:?}");
    assert!(files.iter().any(|f| f.starts_with("shard-0001-")), "{files:?}");
    for f in &files {
        assert!(multi.join(f).is_file(), "{f} listed but missing");
    }
    assert!(!fs::read_dir(&multi).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with("journal-")));

    let again = run_within(mpirun(&pack_args(&c, &multi)), Duration::from_secs(180));
    assert_eq!(again.code, 1, "{}", again.stderr);
    let r = json(&again.stdout);
    assert_eq!(r["items_packed"], 0, "{r}");
    assert_eq!(r["shards_written"], 0);
    assert_eq!(r["items_already_packed"], r["items_total"]);
    assert_eq!(PackIndex::load(&multi).unwrap().unwrap(), index);
}

#[test]
fn shards_recorded_only_in_a_rank_journal_survive_a_rerun() {
    let c = cohort();
    let out = c.root.join("pack");
    let first = run_within(mpirun(&pack_args(&c, &out)), Duration::from_secs(180));
    assert_eq!(first.code, 0, "{}", first.stderr);
    let total = json(&first.stdout)["items_total"].clone();
    // What a run killed before rank 0 merged leaves: rank 1's shards only in its journal.
    let mut index = PackIndex::load(&out).unwrap().unwrap();
    let (rank1, rest): (Vec<_>, Vec<_>) = index
        .shards
        .drain(..)
        .partition(|s| s.file.starts_with("shard-0001-"));
    assert!(!rank1.is_empty());
    index.shards = rest;
    index.save(&out).unwrap();
    let mut journal = Journal::new(1, &index.key_fingerprint);
    journal.shards = rank1.clone();
    journal.save(&out).unwrap();

    let again = run_within(mpirun(&pack_args(&c, &out)), Duration::from_secs(180));
    assert_eq!(again.code, 0, "{}", again.stderr);
    let r = json(&again.stdout);
    assert_eq!(r["items_packed"], 0, "journaled shards count as packed: {r}");
    assert_eq!(r["items_already_packed"], total);
    let index = PackIndex::load(&out).unwrap().unwrap();
    for s in &rank1 {
        assert!(index.shards.contains(s), "{} back in the index", s.file);
        assert!(out.join(&s.file).is_file(), "{} kept on disk", s.file);
    }
    assert!(!Journal::path(&out, 1).exists());
    assert_eq!(
        series_of(&out).values().filter(|v| v.0 == "CT").count(),
        c.cfg.patients as usize
    );
}

/// `bench comm` on 2 ranks: one point per size (×4 from min to max), every timing positive, an α-β
/// fit of each path with non-negative terms, and the same report in `comm.json`. The fit itself is
/// checked against known α and β in `dist::costmodel`'s unit tests. One process is a usage error
/// (nothing to measure).
#[test]
fn bench_comm_measures_sizes_and_fits_alpha_beta() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let args = [
        "bench",
        "comm",
        "--min-bytes",
        "4KiB",
        "--max-bytes",
        "1MiB",
        "--iters",
        "3",
        "--json",
        "--out",
        out,
    ];
    let r = run_within(mpirun(&args), Duration::from_secs(120));
    assert_eq!(r.code, 0, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    let j = json(&r.stdout);
    assert_eq!(j["world_size"], 2);
    let sizes: Vec<u64> = j["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["bytes"].as_u64().unwrap())
        .collect();
    assert_eq!(sizes, vec![4096, 16384, 65536, 262144, 1048576]);
    for p in j["points"].as_array().unwrap() {
        assert!(
            p["bucketed_s"].as_f64().unwrap() > 0.0 && p["raw_s"].as_f64().unwrap() > 0.0,
            "{p}"
        );
    }
    for path in ["bucketed", "raw"] {
        let (a, b) = (
            j[path]["alpha_s"].as_f64().unwrap(),
            j[path]["beta_s_per_byte"].as_f64().unwrap(),
        );
        assert!(a >= 0.0 && b >= 0.0 && a + b > 0.0, "{path}: {j}");
    }
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("comm.json")).unwrap()).unwrap();
    assert_eq!(written, j);
    let one = medtrain_alone(&["bench", "comm", "--max-bytes", "16KiB"]);
    assert_eq!(
        one.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&one.stderr)
    );
}

fn medtrain_alone(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_medtrain"))
        .arg("--quiet")
        .args(args)
        .env_remove("MEDTRAIN_MPI")
        .env_remove("OMPI_COMM_WORLD_SIZE")
        .env_remove("OMPI_COMM_WORLD_RANK")
        .output()
        .expect("run medtrain")
}
