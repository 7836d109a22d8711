//! `stage` end to end on a phantom cohort packed into several shards: the plan against the shards
//! train's sampler actually reads, two fake nodes under `mpirun` (MPMD, `MEDTRAIN_NODE_NAME`), copy
//! verification against the catalog's BLAKE3 (re-hashed here), repair of damaged and partial copies,
//! resume after a killed copier, capacity refusal, permissions (mode bits and an unprivileged read),
//! clean-up, training on the staged copies against training on the archive, and training while
//! staging still runs (`train --stage-async`: waiting, archive fallback, wait timeout).

use crate::common::{ok, run, s};
use crate::train::{check, cohort_with, newest_checkpoint, tensors, write_config, Cohort};
use medtrain::catalog::split::Manifest;
use medtrain::catalog::state::CatalogState;
use medtrain::config::Config;
use medtrain::data::sampler::Layout;
use medtrain::data::Dataset;
use medtrain::settings::Settings;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Pixel bytes per shard: a 32×32×12 int16 series is 24 KiB, so about two series per shard.
const SHARD_SIZE: &str = "48KiB";

fn staged_cohort() -> Cohort {
    let c = cohort_with(12, Some(SHARD_SIZE));
    let state = CatalogState::load(&c.catalog).unwrap().unwrap();
    assert!(
        state.shards.len() >= 4,
        "{} shards: the test needs several",
        state.shards.len()
    );
    c
}

fn settings(config: &Path) -> Settings {
    Settings::from_config(&Config::load(Some(config)).unwrap()).unwrap()
}

/// The config with `[sampler] mode = "shard-local"`: each node reads only the shards dealt to it.
fn shard_local(config: std::path::PathBuf) -> std::path::PathBuf {
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[sampler]\nmode = \"shard-local\"\n");
    std::fs::write(&config, text).unwrap();
    config
}

/// Catalog shard ids the ranks of each node read in a run, in order of first use, computed from what
/// train reads: each rank's epoch sample list (the sampler train builds) mapped to shards, the node's
/// ranks interleaved step by step, and after each evaluation epoch the validation samples its ranks
/// score and read for the baselines: rank r of n takes samples r·len/n .. (r+1)·len/n.
fn shards_train_reads(
    set: &Settings,
    train: &Dataset,
    val: &Dataset,
    node_of_rank: &[usize],
) -> Vec<Vec<u32>> {
    let size = node_of_rank.len();
    let nodes = node_of_rank.iter().max().unwrap() + 1;
    (0..nodes)
        .map(|node| {
            let ranks: Vec<usize> = (0..size).filter(|&r| node_of_rank[r] == node).collect();
            let mut val_ids: Vec<u32> = ranks
                .iter()
                .flat_map(|&r| r * val.len() / size..(r + 1) * val.len() / size)
                .map(|i| val.shard_of(i))
                .collect();
            val_ids.sort_unstable();
            val_ids.dedup();
            let samplers: Vec<_> = ranks
                .iter()
                .enumerate()
                .map(|(l, &r)| {
                    let layout = Layout {
                        rank: r,
                        size,
                        node,
                        nodes,
                        local_rank: l,
                        local_size: ranks.len(),
                    };
                    set.train_sampler(train, layout).unwrap()
                })
                .collect();
            let mut seen = HashSet::new();
            let mut order = Vec::new();
            for epoch in 0..set.train.epochs as u64 {
                let lists: Vec<Vec<usize>> = samplers.iter().map(|s| s.epoch(epoch)).collect();
                for k in 0..lists[0].len() {
                    for list in &lists {
                        let id = train.shard_of(list[k]);
                        if seen.insert(id) {
                            order.push(id);
                        }
                    }
                }
                if epoch == 0 {
                    // eval_every = 1: the first evaluation follows the first epoch.
                    for &id in &val_ids {
                        if seen.insert(id) {
                            order.push(id);
                        }
                    }
                }
            }
            order
        })
        .collect()
}

fn mpirun_mpmd(contexts: &[(&str, Vec<String>)]) -> Command {
    let mut cmd = Command::new("mpirun");
    cmd.args(["--allow-run-as-root", "--oversubscribe"])
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMPI_MCA_rmaps_base_oversubscribe", "1");
    for (i, (node, args)) in contexts.iter().enumerate() {
        if i > 0 {
            cmd.arg(":");
        }
        cmd.args(["-np", "1", "env", &format!("MEDTRAIN_NODE_NAME={node}")])
            .arg(env!("CARGO_BIN_EXE_medtrain"))
            .arg("--quiet")
            .args(args);
    }
    cmd
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn files_in(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// The catalog's BLAKE3 of every shard file name.
fn catalog_hashes(catalog: &Path) -> BTreeMap<String, String> {
    let state = CatalogState::load(catalog).unwrap().unwrap();
    state
        .shards
        .iter()
        .map(|r| {
            let name = Path::new(&r.path)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            (name, r.blake3.clone())
        })
        .collect()
}

#[test]
fn plan_is_what_train_reads_and_staged_training_matches_the_archive() {
    let c = staged_cohort();
    // Three epochs for the plan (shards added as epochs go on), one for the runs below.
    let set = settings(&shard_local(write_config(&c.root, "plan.toml", "epochs = 3")));
    let config = shard_local(write_config(&c.root, "stage.toml", "epochs = 1"));
    let manifest = Manifest::load(&c.manifest).unwrap();
    let train = Dataset::open_lazy(&c.catalog, &manifest, "train", &set.data).unwrap();
    let val = Dataset::open_lazy(&c.catalog, &manifest, "val", &set.data).unwrap();
    let state = CatalogState::load(&c.catalog).unwrap().unwrap();

    // One node and two fake nodes (shard-local sampling).
    for node_of_rank in [vec![0usize], vec![0, 0], vec![0, 1]] {
        let plan = medtrain::stage::plan::plan(&set, &state, &train, Some(&val), &node_of_rank).unwrap();
        let expected = shards_train_reads(&set, &train, &val, &node_of_rank);
        let got: Vec<Vec<u32>> = plan
            .nodes
            .iter()
            .map(|n| n.shards.iter().map(|s| s.id).collect())
            .collect();
        assert_eq!(got, expected, "layout {node_of_rank:?}");
        for n in &plan.nodes {
            let unique: HashSet<u32> = n.shards.iter().map(|s| s.id).collect();
            assert_eq!(
                unique.len(),
                n.shards.len(),
                "a shard planned twice on node {}",
                n.node
            );
            let sizes: u64 = n
                .shards
                .iter()
                .map(|s| std::fs::metadata(&s.source).unwrap().len())
                .sum();
            assert_eq!(n.bytes, sizes);
        }
    }
    // Two nodes: the training shards are dealt between them, disjoint and complete, and each node's
    // plan holds its own deal and, of the other node's, only shards that also hold validation samples
    // of its own rank's share. Which shards mix splits depends on the site key.
    let plan = medtrain::stage::plan::plan(&set, &state, &train, Some(&val), &[0, 1]).unwrap();
    let val_share = |n: usize| -> HashSet<u32> {
        (n * val.len() / 2..(n + 1) * val.len() / 2)
            .map(|i| val.shard_of(i))
            .collect()
    };
    let train_ids: HashSet<u32> = (0..train.len()).map(|i| train.shard_of(i)).collect();
    let layout = Layout {
        rank: 0,
        size: 2,
        node: 0,
        nodes: 2,
        local_rank: 0,
        local_size: 1,
    };
    let deal: Vec<HashSet<u32>> = set
        .train_sampler(&train, layout)
        .unwrap()
        .deal(0)
        .into_iter()
        .map(|d| d.into_iter().collect())
        .collect();
    assert_eq!(deal.len(), 2);
    assert!(deal.iter().all(|d| !d.is_empty()), "{deal:?}");
    assert!(deal[0].is_disjoint(&deal[1]), "{deal:?}");
    assert_eq!(&deal[0] | &deal[1], train_ids);
    for (n, node) in plan.nodes.iter().enumerate() {
        let planned: HashSet<u32> = node.shards.iter().map(|s| s.id).collect();
        assert!(
            deal[n].iter().any(|id| planned.contains(id)),
            "node {n} plans none of its deal {:?}: {planned:?}",
            deal[n]
        );
        let foreign: Vec<u32> = deal[1 - n]
            .iter()
            .copied()
            .filter(|id| planned.contains(id) && !val_share(n).contains(id))
            .collect();
        assert!(
            foreign.is_empty(),
            "node {n} plans the other node's shards {foreign:?}"
        );
    }

    // The same plan through the command line: two fake nodes, each its own "NVMe" directory.
    let local = |node: &str| c.root.join(format!("nvme-{node}"));
    let stage_args = |node: &str| {
        let mut v = strings(&[
            "stage",
            s(&c.catalog),
            s(&c.manifest),
            "--config",
            s(&config),
            "--job-id",
            "t1",
        ]);
        v.extend(["--local".into(), s(&local(node)).into(), "--json".into()]);
        v
    };
    let out = mpirun_mpmd(&[("a", stage_args("a")), ("b", stage_args("b"))])
        .output()
        .unwrap();
    check(&out, "stage on two fake nodes");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let nodes = summary["nodes"].as_array().unwrap();
    // Both ranks in one world of 2: rank 1's report reached rank 0.
    assert_eq!(nodes.len(), 2, "{summary}");
    assert_eq!(nodes[0]["ranks"], serde_json::json!([0]));
    assert_eq!(nodes[1]["ranks"], serde_json::json!([1]));
    assert_eq!(
        (nodes[0]["name"].as_str(), nodes[1]["name"].as_str()),
        (Some("a"), Some("b"))
    );
    let hashes = catalog_hashes(&c.catalog);
    for (n, name) in [(0usize, "a"), (1, "b")] {
        let dir = local(name).join("medtrain-t1");
        let want: BTreeSet<String> = plan.nodes[n].shards.iter().map(|s| s.file.clone()).collect();
        assert_eq!(files_in(&dir), want, "node {name}");
        assert_eq!(nodes[n]["bytes_copied"], nodes[n]["bytes_planned"]);
        assert_eq!(nodes[n]["bytes_planned"].as_u64().unwrap(), plan.nodes[n].bytes);
        for f in &want {
            let bytes = std::fs::read(dir.join(f)).unwrap();
            assert_eq!(blake3::hash(&bytes).to_hex().to_string(), hashes[f], "{f}");
        }
    }

    // Train on the staged copies (each node its own directory) and on the archive: same weights.
    let train_args = |out: &Path, shard_dir: Option<&Path>| {
        let mut v = strings(&[
            "train",
            s(&c.catalog),
            s(&c.manifest),
            "--config",
            s(&config),
            "--json",
        ]);
        v.extend(["--out".into(), s(out).into()]);
        if let Some(d) = shard_dir {
            v.extend(["--shard-dir".into(), s(d).into()]);
        }
        v
    };
    let (archive, staged) = (c.root.join("run-archive"), c.root.join("run-staged"));
    let out = mpirun_mpmd(&[
        ("a", train_args(&archive, None)),
        ("b", train_args(&archive, None)),
    ])
    .output()
    .unwrap();
    check(&out, "train from the archive");
    let dir_a = local("a").join("medtrain-t1");
    let dir_b = local("b").join("medtrain-t1");
    let out = mpirun_mpmd(&[
        ("a", train_args(&staged, Some(&dir_a))),
        ("b", train_args(&staged, Some(&dir_b))),
    ])
    .output()
    .unwrap();
    check(&out, "train from the staged copies");
    let outcome: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(outcome["world_size"], 2);
    assert!(outcome["global_step"].as_u64().unwrap() > 0);
    let x = tensors(&newest_checkpoint(&archive).join("model.safetensors"));
    let y = tensors(&newest_checkpoint(&staged).join("model.safetensors"));
    assert!(x.len() > 10);
    assert_eq!(x, y, "weights differ between staged and archive reads");
}

fn stage_cmd(c: &Cohort, config: &Path, local: &Path, extra: &[&str]) -> Vec<String> {
    let mut v = strings(&[
        "stage",
        s(&c.catalog),
        s(&c.manifest),
        "--config",
        s(config),
        "--local",
        s(local),
        "--job-id",
        "j7",
    ]);
    v.extend(strings(extra));
    v
}

fn stage_json(args: &[String]) -> (i32, serde_json::Value, String) {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, out, err) = run(&args);
    let v = serde_json::from_str(&out).unwrap_or(serde_json::Value::Null);
    (code, v, format!("{out}\n{err}"))
}

#[test]
fn copies_are_verified_repaired_resumed_private_and_cleaned() {
    let c = staged_cohort();
    let config = write_config(&c.root, "stage.toml", "epochs = 1");
    let local = c.root.join("nvme");
    let dir = local.join("medtrain-j7");
    let hashes = catalog_hashes(&c.catalog);

    // No local directory at all is a usage error.
    let mut cmd = crate::common::medtrain();
    cmd.args(["stage", s(&c.catalog), s(&c.manifest), "--config", s(&config)])
        .env_remove("TMPDIR")
        .env_remove("SLURM_TMPDIR");
    let out = cmd.output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Dry run: the plan and the free space, nothing created.
    let (code, plan, log) = stage_json(&stage_cmd(&c, &config, &local, &["--dry-run", "--json"]));
    assert_eq!(code, 0, "{log}");
    assert_eq!(plan["status"], "dry-run");
    let node = &plan["nodes"][0];
    let planned: Vec<String> = node["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_string())
        .collect();
    let planned_bytes = node["bytes_planned"].as_u64().unwrap();
    assert!(planned.len() >= 3, "{plan}");
    assert!(node["free_bytes"].as_u64().unwrap() > 0);
    assert!(!dir.exists());

    // Capacity: a reserve larger than the disk is refused with the numbers.
    let (code, _, log) = stage_json(&stage_cmd(&c, &config, &local, &["--reserve", "1000TB"]));
    assert_eq!(code, 1, "{log}");
    assert!(
        log.contains("not enough space") && log.contains(&planned_bytes.to_string()) && log.contains("free"),
        "{log}"
    );
    // And a real small file system when one can be mounted (as root).
    let small = c.root.join("small");
    std::fs::create_dir_all(&small).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16k", "tmpfs", s(&small)])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|st| st.success());
    if mounted {
        let (code, _, log) = stage_json(&stage_cmd(&c, &config, &small, &[]));
        let _ = Command::new("umount").arg(s(&small)).status();
        assert_eq!(code, 1, "{log}");
        assert!(
            log.contains("not enough space") && log.contains(&planned_bytes.to_string()),
            "{log}"
        );
    } else {
        println!("tmpfs capacity check skipped: mount -t tmpfs is not permitted here");
    }

    // A slow copy (bandwidth limit) killed mid-run with SIGKILL…
    let args = stage_cmd(&c, &config, &local, &["--bandwidth-mbps", "0.05"]);
    let mut child = crate::common::medtrain()
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !dir.exists() && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(1500));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let complete: Vec<String> = planned.iter().filter(|f| dir.join(f).exists()).cloned().collect();
    assert!(
        complete.len() < planned.len(),
        "the copier finished before it was killed"
    );
    // …resumes: the complete files are re-hashed and kept, the rest copied; all verified.
    let (code, v, log) = stage_json(&stage_cmd(&c, &config, &local, &["--json"]));
    assert_eq!(code, 0, "{log}");
    let n = &v["nodes"][0];
    assert_eq!(
        n["shards_skipped"].as_u64().unwrap() as usize,
        complete.len(),
        "{v}"
    );
    assert_eq!(
        n["shards_copied"].as_u64().unwrap() as usize,
        planned.len() - complete.len(),
        "{v}"
    );
    assert_eq!(
        n["bytes_copied"].as_u64().unwrap() + n["bytes_skipped"].as_u64().unwrap(),
        planned_bytes
    );
    assert_eq!(v["shard_dir"], s(&dir));
    assert_eq!(
        files_in(&dir),
        planned.iter().cloned().collect::<BTreeSet<String>>()
    );
    for f in &planned {
        let bytes = std::fs::read(dir.join(f)).unwrap();
        assert_eq!(blake3::hash(&bytes).to_hex().to_string(), hashes[f], "{f}");
    }

    // A flipped byte in one staged file, and another left as a partial copy: exactly those two redone.
    let (flipped, partial) = (&planned[0], &planned[1]);
    let mut bytes = std::fs::read(dir.join(flipped)).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(dir.join(flipped), &bytes).unwrap();
    let whole = std::fs::read(dir.join(partial)).unwrap();
    std::fs::remove_file(dir.join(partial)).unwrap();
    std::fs::write(dir.join(format!("{partial}.partial")), &whole[..whole.len() / 3]).unwrap();
    let (code, v, log) = stage_json(&stage_cmd(&c, &config, &local, &["--json"]));
    assert_eq!(code, 0, "{log}");
    let n = &v["nodes"][0];
    assert_eq!(n["shards_copied"], 2, "{v}");
    assert_eq!(n["shards_replaced"], 1, "{v}");
    assert_eq!(n["partials_removed"], 1, "{v}");
    assert_eq!(
        n["shards_skipped"].as_u64().unwrap() as usize,
        planned.len() - 2,
        "{v}"
    );
    let redone = std::fs::metadata(dir.join(flipped)).unwrap().len() + whole.len() as u64;
    assert_eq!(n["bytes_copied"].as_u64().unwrap(), redone);
    for f in &planned {
        let bytes = std::fs::read(dir.join(f)).unwrap();
        assert_eq!(blake3::hash(&bytes).to_hex().to_string(), hashes[f], "{f}");
    }
    assert_eq!(files_in(&dir).len(), planned.len(), "no partial copies left");

    // Permissions by mode bits…
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    for f in &planned {
        assert_eq!(
            std::fs::metadata(dir.join(f)).unwrap().permissions().mode() & 0o777,
            0o600,
            "{f}"
        );
    }
    // …and by a read as an unprivileged user, with the directories above opened to everyone so that
    // only the staging modes can stop it.
    if unsafe { libc::geteuid() } == 0 {
        for p in [c.root.as_path(), local.as_path()] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let file = dir.join(&planned[0]);
        let read_as_nobody = |path: &Path| {
            Command::new("setpriv")
                .args(["--reuid=65534", "--regid=65534", "--clear-groups", "cat", s(path)])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .unwrap()
                .success()
        };
        assert!(!read_as_nobody(&file), "another user read a staged file");
        // The file mode alone also stops it (directory opened for the check).
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(!read_as_nobody(&file), "the file mode did not stop another user");
        // The check itself can succeed: a world-readable file is read.
        let probe = dir.join("probe");
        std::fs::write(&probe, b"x").unwrap();
        std::fs::set_permissions(&probe, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(
            read_as_nobody(&probe),
            "setpriv could not read an open file: the check is void"
        );
        std::fs::remove_file(&probe).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    } else {
        println!("unprivileged read check skipped: not running as root");
    }

    // Clean-up removes the job directory (and needs neither catalog nor config).
    let (code, v, log) = stage_json(&strings(&[
        "stage",
        "--clean",
        "--local",
        s(&local),
        "--job-id",
        "j7",
        "--json",
    ]));
    assert_eq!(code, 0, "{log}");
    assert_eq!(v["nodes"][0]["removed"], true, "{v}");
    assert!(!dir.exists());
    assert!(local.exists());
}

/// `train --stage-async` on two ranks of one node, against training from the archive: with a small
/// bandwidth the first step comes before staging ends, the weights are bitwise the same, and every
/// planned shard ends up verified in the job directory. Then, with `--stage-fallback archive` and a
/// copier far too slow to keep up, training finishes anyway, reading shards from the archive.
#[test]
fn async_staging_trains_while_copying_and_matches_the_archive() {
    let c = staged_cohort();
    // Shard-local sampling, one shard per window: the first steps need the first shard only.
    let config = shard_local(write_config(&c.root, "async.toml", "epochs = 1"));
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("window_shards = 1\n");
    std::fs::write(&config, text).unwrap();
    let set = settings(&config);
    let manifest = Manifest::load(&c.manifest).unwrap();
    let train = Dataset::open_lazy(&c.catalog, &manifest, "train", &set.data).unwrap();
    let val = Dataset::open_lazy(&c.catalog, &manifest, "val", &set.data).unwrap();
    let state = CatalogState::load(&c.catalog).unwrap().unwrap();
    // Two ranks on this one machine: one node.
    let plan = medtrain::stage::plan::plan(&set, &state, &train, Some(&val), &[0, 0]).unwrap();
    let node = &plan.nodes[0];
    assert!(node.shards.len() >= 4, "{} planned shards", node.shards.len());

    let train_args = |out: &Path, extra: &[&str]| {
        let mut v = strings(&[
            "train",
            s(&c.catalog),
            s(&c.manifest),
            "--config",
            s(&config),
            "--json",
            "--out",
            s(out),
        ]);
        v.extend(strings(extra));
        v
    };
    let two_ranks = |args: Vec<String>, what: &str| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = crate::train::mpirun(2, &args, &[]).output().unwrap();
        check(&out, what);
        let outcome: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            outcome["world_size"], 2,
            "both ranks must be in one world: {outcome}"
        );
        outcome
    };
    let archive = c.root.join("run-archive");
    two_ranks(train_args(&archive, &[]), "train from the archive");
    let reference = tensors(&newest_checkpoint(&archive).join("model.safetensors"));
    assert!(reference.len() > 10);

    // About six seconds of copying for the whole plan.
    let local = c.root.join("nvme");
    let mbps = node.bytes as f64 / 6e6;
    let run = c.root.join("run-async");
    let outcome = two_ranks(
        train_args(
            &run,
            &[
                "--stage-async",
                s(&local),
                "--job-id",
                "a1",
                "--bandwidth-mbps",
                &format!("{mbps}"),
            ],
        ),
        "train with asynchronous staging",
    );
    let st = &outcome["staging"];
    println!("asynchronous staging: {st}");
    let first = st["first_step_seconds"]
        .as_f64()
        .unwrap_or_else(|| panic!("{outcome}"));
    let staged = st["staging_seconds"]
        .as_f64()
        .unwrap_or_else(|| panic!("{outcome}"));
    assert!(
        first < staged,
        "the first step ({first} s) came after staging ended ({staged} s): {st}"
    );
    assert!(
        staged >= 5.5,
        "staging took {staged} s at {mbps} MB/s: the limit was not applied"
    );
    assert!(st["waited_for_shards_seconds"].as_f64().unwrap() > 0.0, "{st}");
    assert_eq!(st["archive_reads"], 0, "{st}");
    assert_eq!(st["shards_failed"], 0, "{st}");
    assert_eq!(
        st["shards_copied"].as_u64().unwrap() as usize,
        node.shards.len(),
        "{st}"
    );
    assert_eq!(st["bytes_copied"].as_u64().unwrap(), node.bytes, "{st}");
    let got = tensors(&newest_checkpoint(&run).join("model.safetensors"));
    assert_eq!(
        got, reference,
        "weights differ between asynchronous staging and archive reads"
    );
    let dir = local.join("medtrain-a1");
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let want: BTreeSet<String> = node.shards.iter().map(|s| s.file.clone()).collect();
    assert_eq!(
        files_in(&dir),
        want,
        "exactly the planned shards, no partial copies"
    );
    let hashes = catalog_hashes(&c.catalog);
    for f in &want {
        let bytes = std::fs::read(dir.join(f)).unwrap();
        assert_eq!(blake3::hash(&bytes).to_hex().to_string(), hashes[f], "{f}");
    }

    // A copier at 2 kB/s would need many minutes (each shard takes minutes): the archive fallback
    // trains now, on the same bytes.
    let run = c.root.join("run-fallback");
    let clock = Instant::now();
    let outcome = two_ranks(
        train_args(
            &run,
            &[
                "--stage-async",
                s(&local),
                "--job-id",
                "a2",
                "--bandwidth-mbps",
                "0.002",
                "--stage-fallback",
                "archive",
            ],
        ),
        "train with the archive fallback",
    );
    let st = &outcome["staging"];
    println!("archive fallback: {st}");
    assert!(st["archive_reads"].as_u64().unwrap() >= 1, "{st}");
    assert_eq!(st["fallback"], "archive", "{st}");
    assert!(
        st["staging_seconds"].is_null(),
        "staging cannot have finished: {st}"
    );
    assert_eq!(outcome["status"], "finished");
    assert!(
        clock.elapsed() < Duration::from_secs(120).min(Duration::from_secs(node.bytes / 2000)),
        "training waited for the slow copier ({:?})",
        clock.elapsed()
    );
    let got = tensors(&newest_checkpoint(&run).join("model.safetensors"));
    assert_eq!(
        got, reference,
        "weights differ between archive fallback and archive reads"
    );
    // Whatever was staged is complete and verified; the copy in progress was removed.
    for f in files_in(&local.join("medtrain-a2")) {
        assert!(want.contains(&f), "unexpected file {f}");
        let bytes = std::fs::read(local.join("medtrain-a2").join(&f)).unwrap();
        assert_eq!(blake3::hash(&bytes).to_hex().to_string(), hashes[&f], "{f}");
    }

    // Waiting has a limit, and running into it names the shard and the way out.
    let out = crate::train::mpirun(
        2,
        &train_args(
            &c.root.join("run-timeout"),
            &[
                "--stage-async",
                s(&local),
                "--job-id",
                "a3",
                "--bandwidth-mbps",
                "0.002",
                "--stage-wait-timeout",
                "0.5",
            ],
        )
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>(),
        &[],
    )
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "training did not wait for a shard: {err}");
    assert!(
        err.contains("not staged after waiting")
            && err.contains("medtrain-a3")
            && err.contains("--stage-fallback"),
        "{err}"
    );
}

/// `plan` names, for 1, 2 and 4 nodes of one GPU each, the bytes per node that `stage --dry-run`
/// reports for the same manifest and config: one process, and 2 and 4 rehearsed nodes under `mpirun`
/// (`MEDTRAIN_NODE_NAME`), shard-local sampling so that nodes stage different shares. Its steps per
/// epoch are the sampler's, and a layout whose share exceeds the node-local disk is flagged.
#[test]
fn plan_stages_what_stage_would_and_flags_a_disk_too_small() {
    let c = staged_cohort();
    let config = shard_local(write_config(&c.root, "plan.toml", "epochs = 2"));
    let local = c.root.join("nvme");
    let mut args = strings(&["plan", s(&c.catalog), s(&c.manifest), "--config", s(&config)]);
    args.extend(strings(&[
        "--step-seconds",
        "0.25",
        "--intra",
        "pcie3",
        "--gpus-per-node",
        "1",
        "--max-ranks",
        "4",
        "--nvme",
        "1KiB",
        "--json",
    ]));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, out, err) = run(&argv);
    assert_eq!(code, 0, "{err}");
    let plan: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rows = plan["rows"].as_array().unwrap();
    assert_eq!(
        rows.iter()
            .map(|r| r["ranks"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![1, 2, 4]
    );
    let set = settings(&config);
    let manifest = Manifest::load(&c.manifest).unwrap();
    let train = Dataset::open_lazy(&c.catalog, &manifest, "train", &set.data).unwrap();
    for row in rows {
        let ranks = row["ranks"].as_u64().unwrap() as usize;
        let layout = Layout {
            rank: 0,
            size: ranks,
            node: 0,
            nodes: ranks,
            local_rank: 0,
            local_size: 1,
        };
        let steps = set.train_sampler(&train, layout).unwrap().steps_per_epoch();
        assert_eq!(row["steps_per_epoch"].as_u64().unwrap() as usize, steps, "{row}");
        // stage --dry-run on as many rehearsed nodes.
        let stage = stage_cmd(&c, &config, &local, &["--dry-run", "--json"]);
        let out = if ranks == 1 {
            let argv: Vec<&str> = stage.iter().map(String::as_str).collect();
            run(&argv).1
        } else {
            let names = ["a", "b", "c", "d"];
            let contexts: Vec<(&str, Vec<String>)> =
                names[..ranks].iter().map(|n| (*n, stage.clone())).collect();
            let o = mpirun_mpmd(&contexts).output().unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            String::from_utf8_lossy(&o.stdout).into_owned()
        };
        let dry: serde_json::Value = serde_json::from_str(&out).unwrap();
        let per_node: Vec<u64> = dry["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["bytes_planned"].as_u64().unwrap())
            .collect();
        assert_eq!(per_node.len(), ranks, "{dry}");
        assert_eq!(
            row["stage_bytes_per_node"].as_u64(),
            per_node.iter().max().copied(),
            "{ranks} nodes"
        );
        assert_eq!(row["fits_nvme"], false);
    }
    let warnings = plan["warnings"].as_array().unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| w.as_str().unwrap().contains("node-local disk")),
        "{plan}"
    );
}

/// A tmpfs mounted for one test, unmounted (lazily) on drop.
struct MountedTmpfs(std::path::PathBuf);

impl Drop for MountedTmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// The disk fills up after the capacity check passed, in the middle of a copy (real ENOSPC on a
/// tmpfs): no partial copy is ever taken as staged, `stage` fails naming the file and the error, and
/// once space is freed a rerun completes and every file verifies against the catalog.
#[test]
fn a_disk_that_fills_during_the_copy_fails_the_shard_and_a_rerun_completes() {
    let c = staged_cohort();
    let config = write_config(&c.root, "stage.toml", "epochs = 1");
    let hashes = catalog_hashes(&c.catalog);
    let (code, plan, log) = stage_json(&stage_cmd(
        &c,
        &config,
        &c.root.join("probe"),
        &["--dry-run", "--json"],
    ));
    assert_eq!(code, 0, "{log}");
    let planned: Vec<String> = plan["nodes"][0]["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_string())
        .collect();
    let planned_bytes = plan["nodes"][0]["bytes_planned"].as_u64().unwrap();
    assert!(planned.len() >= 3, "{plan}");

    // Room for the plan (each file rounded up to whole pages, and some to spare): the check passes.
    let page = 4096u64;
    let size = (planned_bytes / page + 2 * planned.len() as u64 + 4) * page;
    let local = c.root.join("full");
    std::fs::create_dir_all(&local).unwrap();
    let mount = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs", s(&local)])
        .output()
        .unwrap();
    if !mount.status.success() {
        println!(
            "SKIPPED: cannot mount a tmpfs at {} ({}); the disk-full staging test needs root",
            local.display(),
            String::from_utf8_lossy(&mount.stderr).trim()
        );
        return;
    }
    let _mounted = MountedTmpfs(local.clone());
    let dir = local.join("medtrain-j7");

    // A slow copy; once the first shard is staged, another writer fills the disk but for 8 KiB, so
    // the next copy gets ENOSPC part-way through its file.
    let args = stage_cmd(&c, &config, &local, &["--bandwidth-mbps", "0.02", "--json"]);
    let child = crate::common::medtrain()
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !planned.iter().any(|f| dir.join(f).exists()) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no shard staged in 60 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let filler_path = local.join("filler");
    let mut filler = std::fs::File::create(&filler_path).unwrap();
    let block = vec![0x5au8; page as usize];
    let full = loop {
        if let Err(e) = std::io::Write::write_all(&mut filler, &block) {
            break e;
        }
    };
    assert_eq!(full.raw_os_error(), Some(libc::ENOSPC), "{full}");
    let filled = filler.metadata().unwrap().len();
    filler.set_len(filled.saturating_sub(2 * page)).unwrap();
    drop(filler);

    let out = child.wait_with_output().unwrap();
    let log = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{log}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], "failed", "{v}");
    let failed = v["nodes"][0]["failed"].as_array().unwrap();
    assert!(!failed.is_empty(), "{v}");
    for f in failed {
        let source = Path::new(f["path"].as_str().unwrap());
        let name = source.file_name().unwrap().to_string_lossy().into_owned();
        let reason = f["reason"].as_str().unwrap();
        assert!(
            reason.contains("No space left on device") && reason.contains(s(&dir.join(&name))),
            "{reason}"
        );
        assert!(
            !dir.join(&name).exists(),
            "{name}: a failed copy is under its final name"
        );
    }
    // Nothing half-copied is left, and what is under a final name is whole.
    let present = files_in(&dir);
    assert!(present.iter().all(|f| !f.ends_with(".partial")), "{present:?}");
    assert_eq!(present.len() + failed.len(), planned.len(), "{present:?} {v}");
    for f in &present {
        let bytes = std::fs::read(dir.join(f)).unwrap();
        assert_eq!(blake3::hash(&bytes).to_hex().to_string(), hashes[f], "{f}");
    }

    // Space freed: the rerun keeps the verified files, copies the rest, and every file verifies.
    std::fs::remove_file(&filler_path).unwrap();
    let (code, v, log) = stage_json(&stage_cmd(&c, &config, &local, &["--json"]));
    assert_eq!(code, 0, "{log}");
    assert_eq!(v["status"], "staged", "{v}");
    let n = &v["nodes"][0];
    assert_eq!(
        n["shards_skipped"].as_u64().unwrap() as usize,
        present.len(),
        "{v}"
    );
    assert_eq!(n["shards_copied"].as_u64().unwrap() as usize, failed.len(), "{v}");
    assert_eq!(
        files_in(&dir),
        planned.iter().cloned().collect::<BTreeSet<String>>()
    );
    for f in &planned {
        let bytes = std::fs::read(dir.join(f)).unwrap();
        assert_eq!(blake3::hash(&bytes).to_hex().to_string(), hashes[f], "{f}");
    }
}

/// A cohort of tables only (`catalog synth`, as an archive-scale plan uses) plans as if packed:
/// every staged shard counts with its file and the int16 pixel bytes of its series, which the test
/// reads from the shards' own series tables with libhdf5. Before `Dataset::open_described`, `plan`
/// refused such a cohort ("voxels … do not fill its 0 pixel bytes").
#[test]
fn plan_counts_a_metadata_only_cohort_with_the_pixel_bytes_its_tables_describe() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name);
    let (pack, cat, key, manifest) = (p("pack"), p("cat"), p("site.key"), p("manifest.h5"));
    ok(&[
        "catalog",
        "synth",
        "--out",
        s(&pack),
        "--key",
        s(&key),
        "--series",
        "60",
        "--slices",
        "40",
        "--series-per-shard",
        "6",
    ]);
    ok(&["catalog", "build", s(&pack), "--out", s(&cat)]);
    let patients = pack.join("patients.csv");
    ok(&[
        "catalog",
        "labels",
        "import",
        s(&patients),
        "--out",
        s(&cat),
        "--name",
        "outcome",
        "--key",
        s(&key),
    ]);
    ok(&[
        "catalog",
        "split",
        s(&cat),
        "modality = 'CT'",
        "--level",
        "series",
        "--out",
        s(&manifest),
        "--ratios",
        "train=0.6,val=0.2,test=0.2",
        "--seed",
        "7",
    ]);
    let config = p("plan.toml");
    std::fs::write(
        &config,
        "[model]\nwidths = [8, 16]\nblocks = [1, 1]\n\
         [data]\nmode = \"volume3d\"\nsize = [16, 32, 32]\nwindows = [[-600.0, 1500.0]]\n\
         labels = [\"outcome.followupdays\", \"outcome.death\"]\n\
         [sampler]\nmode = \"shard-local\"\n\
         [train]\ntask = \"survival\"\nepochs = 3\nbatch_size = 2\n",
    )
    .unwrap();
    let (code, out, err) = run(&[
        "plan",
        s(&cat),
        s(&manifest),
        "--config",
        s(&config),
        "--device-tflops",
        "8.76",
        "--intra",
        "nvlink2",
        "--inter",
        "edr",
        "--gpus-per-node",
        "2",
        "--max-ranks",
        "4",
        "--json",
    ]);
    assert_eq!(code, 0, "plan refused a metadata-only cohort: {err}");
    let plan: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        plan["warnings"].to_string().contains("tables only"),
        "the plan should say it counted described bytes: {plan}"
    );
    // The shards stage holds: those with a train or validation series.
    let m = Manifest::load(&manifest).unwrap();
    let state = CatalogState::load(&cat).unwrap().unwrap();
    let view = medtrain::catalog::view::Catalog::open(&cat).unwrap();
    let shard_of = view
        .col_u32(medtrain::catalog::columns::Level::Series, "shard")
        .unwrap();
    let staged: BTreeSet<u32> = m
        .splits
        .iter()
        .filter(|part| part.name == "train" || part.name == "val")
        .flat_map(|part| part.rows().map(|row| shard_of[row as usize]).collect::<Vec<_>>())
        .collect();
    let expected: u64 = staged
        .iter()
        .map(|&id| {
            let path = Path::new(&state.shards[id as usize].path);
            let f = hdf5::File::open(path).unwrap();
            let col = |name: &str| {
                f.dataset(&format!("series/{name}"))
                    .unwrap()
                    .read_raw::<u32>()
                    .unwrap()
            };
            let (n, r, c) = (col("n_slices"), col("rows"), col("cols"));
            let pixels: u64 = (0..n.len())
                .map(|i| 2 * u64::from(n[i]) * u64::from(r[i]) * u64::from(c[i]))
                .sum();
            std::fs::metadata(path).unwrap().len() + pixels
        })
        .sum();
    let one = &plan["rows"][0];
    assert_eq!(one["ranks"], 1);
    assert_eq!(one["stage_bytes_per_node"].as_u64().unwrap(), expected, "{one}");
    // --device-tflops: the step takes 3× the model's forward FLOPs at that rate.
    let inputs = &plan["inputs"];
    let (flops, secs) = (
        inputs["step_flops"].as_f64().unwrap(),
        inputs["compute_s"].as_f64().unwrap(),
    );
    assert!(
        flops > 0.0 && ((secs * 8.76e12) / flops - 1.0).abs() < 1e-9,
        "{inputs}"
    );
}
