//! `pack --from` against a real archive: Orthanc with its DICOMweb plugin (OS packages), started with
//! a generated configuration inside its own network namespace (only loopback; the client runs in
//! the same namespace through `nsenter`), loaded with a phantom cohort over its REST API. What is
//! pulled must equal what `pack` makes of the same files on disk; deleted series, a stopped server,
//! wrong credentials and an empty query must behave as documented.

use crate::common::{key_file, s, tempdir};
use medtrain::pack::index::PackIndex;
use medtrain::pack::reader::ShardReader;
use medtrain::phantom::{generate, PhantomConfig};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const USER: &str = "medtrain";
const PASSWORD: &str = "orthanc-test-pw";
/// Any port is free in a fresh network namespace.
const PORT: u16 = 8042;

fn plugin_path() -> Option<PathBuf> {
    let out = Command::new("dpkg")
        .args(["-L", "orthanc-dicomweb"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(PathBuf::from)
        .find(|p| p.extension().is_some_and(|e| e == "so") && p.exists())
}

/// A network namespace with only loopback, and Orthanc running in it.
struct Archive {
    dir: PathBuf,
    ns: Child,
    orthanc: Option<Child>,
}

impl Archive {
    /// `None` (with the reason printed) where Orthanc is not installed or namespaces are not allowed.
    fn start(dir: &Path) -> Option<Archive> {
        let plugin =
            plugin_path().expect("orthanc-dicomweb is installed (scripts/install-deps.sh installs it)");
        let ns = Command::new("unshare")
            .args(["-n", "sleep", "3600"])
            .stdin(Stdio::null())
            .spawn()
            .ok()?;
        let mut archive = Archive {
            dir: dir.to_path_buf(),
            ns,
            orthanc: None,
        };
        std::thread::sleep(Duration::from_millis(100));
        let up = archive.in_ns("ip").args(["link", "set", "lo", "up"]).status();
        if !up.is_ok_and(|s| s.success()) {
            eprintln!("SKIPPED: cannot create a network namespace (unshare -n / nsenter not permitted)");
            return None;
        }
        let storage = dir.join("orthanc-db");
        let config = serde_json::json!({
            "Name": "medtrain-test",
            "StorageDirectory": storage,
            "IndexDirectory": storage,
            "HttpPort": PORT,
            "DicomServerEnabled": false,
            "RemoteAccessAllowed": false,
            "AuthenticationEnabled": true,
            "RegisteredUsers": { USER: PASSWORD },
            "Plugins": [plugin],
            "DicomWeb": { "Enable": true, "Root": "/dicom-web/" },
        });
        std::fs::write(dir.join("orthanc.json"), config.to_string()).unwrap();
        archive.start_orthanc();
        Some(archive)
    }

    /// A command run inside the namespace.
    fn in_ns(&self, program: &str) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &self.ns.id().to_string(), "-n", program]);
        cmd
    }

    fn start_orthanc(&mut self) {
        let log = std::fs::File::create(self.dir.join("orthanc.log")).unwrap();
        let child = self
            .in_ns("Orthanc")
            .arg(self.dir.join("orthanc.json"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start Orthanc");
        self.orthanc = Some(child);
        let until = Instant::now() + Duration::from_secs(60);
        while Instant::now() < until {
            let (code, _) = self.curl(&["/system"]);
            if code == 200 {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "Orthanc did not answer within 60 s; its log:\n{}",
            std::fs::read_to_string(self.dir.join("orthanc.log")).unwrap_or_default()
        );
    }

    /// Kills Orthanc (no clean shutdown: a server that goes away mid-transfer).
    fn stop_orthanc(&mut self) {
        if let Some(mut c) = self.orthanc.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{PORT}")
    }

    /// `curl` inside the namespace with the archive's credentials: (HTTP status, body).
    fn curl(&self, args: &[&str]) -> (u16, String) {
        let mut cmd = self.in_ns("curl");
        cmd.args(["-s", "-u", &format!("{USER}:{PASSWORD}"), "-w", "\n%{http_code}"]);
        let (path, rest) = args.split_first().expect("a path");
        cmd.arg(format!("{}{path}", self.url())).args(rest);
        let out = cmd.output().expect("run curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    /// Stores every file under `root` through the REST API.
    fn load(&self, root: &Path) -> usize {
        let mut n = 0;
        for entry in walk(root) {
            let (code, body) = self.curl(&[
                "/instances",
                "-X",
                "POST",
                "--data-binary",
                &format!("@{}", entry.display()),
            ]);
            assert_eq!(code, 200, "POST /instances {}: {body}", entry.display());
            n += 1;
        }
        n
    }

    /// SeriesInstanceUIDs the archive holds, sorted (the order `pack --from` fetches them in).
    fn series_uids(&self) -> Vec<String> {
        let (code, body) = self.curl(&["/dicom-web/series"]);
        assert_eq!(code, 200, "{body}");
        let list: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
        let mut uids: Vec<String> = list
            .iter()
            .map(|o| o["0020000E"]["Value"][0].as_str().unwrap().to_string())
            .collect();
        uids.sort();
        uids
    }

    fn delete_series(&self, uid: &str) {
        let (code, body) = self.curl(&["/tools/lookup", "-X", "POST", "--data-binary", uid]);
        assert_eq!(code, 200, "{body}");
        let found: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
        let id = found
            .iter()
            .find(|f| f["Type"] == "Series")
            .and_then(|f| f["ID"].as_str())
            .expect("the series is in the archive");
        let (code, body) = self.curl(&[&format!("/series/{id}"), "-X", "DELETE"]);
        assert_eq!(code, 200, "{body}");
    }

    /// `medtrain pack --from` in the namespace, credentials in the environment.
    fn pack_cmd(&self, out: &Path, key: &Path, password: &str, extra: &[&str]) -> Command {
        let mut cmd = self.in_ns(env!("CARGO_BIN_EXE_medtrain"));
        cmd.args(["--quiet", "pack", "--from"])
            .arg(format!("{}/dicom-web", self.url()))
            .args(["--out", s(out), "--key", s(key), "--json"])
            .args(extra)
            .env("MEDTRAIN_DICOMWEB_USER", USER)
            .env("MEDTRAIN_DICOMWEB_PASSWORD", password)
            .env_remove("MEDTRAIN_DICOMWEB_TOKEN");
        cmd
    }
}

impl Drop for Archive {
    fn drop(&mut self) {
        self.stop_orthanc();
        let _ = self.ns.kill();
        let _ = self.ns.wait();
    }
}

fn walk(root: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                files.push(p);
            }
        }
    }
    files.sort();
    files
}

struct Cohort {
    _dir: tempfile::TempDir,
    root: PathBuf,
    dicom: PathBuf,
    key: PathBuf,
    archive: Archive,
    /// The same files packed from disk: the reference.
    disk: PathBuf,
}

/// Two phantom patients (a CT series and a radiograph each: 4 series, 26 objects) in a fresh
/// archive, and packed from disk.
fn cohort() -> Option<Cohort> {
    let dir = tempdir();
    let root = dir.path().to_path_buf();
    let cfg = PhantomConfig {
        seed: 11,
        patients: 2,
        size: 32,
        slices: 12,
        slice_thickness_mm: 2.5,
        radiographs: true,
    };
    let dicom = generate(&cfg, &root.join("phantom")).expect("phantom").dicom_dir;
    let archive = Archive::start(&root)?;
    assert_eq!(archive.load(&dicom), 26);
    let key = key_file(&root, "site.key");
    let disk = root.join("disk");
    let (code, _, stderr) = crate::common::run(&["pack", s(&dicom), "--out", s(&disk), "--key", s(&key)]);
    assert_eq!(code, 0, "{stderr}");
    Some(Cohort {
        _dir: dir,
        root,
        dicom,
        key,
        archive,
        disk,
    })
}

fn output(o: Output) -> (i32, serde_json::Value, String) {
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    let json = serde_json::from_str(&stdout).unwrap_or(serde_json::Value::Null);
    (o.status.code().unwrap_or(-1), json, stderr)
}

/// Every packed item by (series pseudonym, first SOP pseudonym): its table rows (Debug text, so
/// NaN equals NaN) without the shard layout fields and the source hash, and its pixel bytes.
/// The source hash is left out because an archive may send a stored object in another transfer
/// syntax (Orthanc's WADO-RS sends Implicit VR files as Explicit VR): other bytes, same content.
fn packed_items(out: &Path) -> BTreeMap<(String, String), (String, String, Vec<u8>)> {
    let index = PackIndex::load(out).unwrap().expect("an index");
    let mut items = BTreeMap::new();
    for e in &index.shards {
        let shard = ShardReader::open(&out.join(&e.file)).unwrap();
        for (i, rec) in shard.series.iter().enumerate() {
            let mut rec = rec.clone();
            rec.dataset.clear();
            rec.data_offset = 0;
            rec.first_slice = 0;
            rec.source_hash.clear();
            let mut slices = shard.slices_of(i).to_vec();
            for s in &mut slices {
                s.series_index = 0;
            }
            let k = (rec.series_key.clone(), slices[0].sop_key.clone());
            let value = (
                format!("{rec:?}"),
                format!("{slices:?}"),
                shard.pixel_bytes(i).unwrap().to_vec(),
            );
            assert!(
                items.insert(k, value).is_none(),
                "an item packed twice in {}",
                out.display()
            );
        }
    }
    items
}

fn manifest(out: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("fetch-manifest.json")).unwrap()).unwrap()
}

fn quarantine(out: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("quarantine.json")).unwrap()).unwrap()
}

/// Waits for the fetcher to reach the hold point (it creates the gate file).
fn wait_for_gate(gate: &Path, child: &mut Child) {
    let until = Instant::now() + Duration::from_secs(60);
    while !gate.exists() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "pack --from ended before the hold point"
        );
        assert!(Instant::now() < until, "pack --from never reached the hold point");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn pacs_pull_equals_packing_the_files_and_reruns_skip_what_is_packed() {
    let Some(c) = cohort() else { return };
    let out = c.root.join("pulled");
    let (code, r, stderr) = output(
        c.archive
            .pack_cmd(&out, &c.key, PASSWORD, &["--concurrency", "3"])
            .output()
            .unwrap(),
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(r["series_matched"], 4);
    assert_eq!(r["series_fetched"], 4);
    assert_eq!(r["instances_fetched"], 26);
    assert_eq!(r["pack"]["items_packed"], 4);
    let reference = packed_items(&c.disk);
    assert_eq!(reference.len(), 4);
    assert_eq!(
        packed_items(&out),
        reference,
        "pulled items differ from the same files packed from disk"
    );

    // The manifest names series by pseudonym only, and nothing carries the archive's UIDs.
    let uids = c.archive.series_uids();
    let m = manifest(&out);
    assert_eq!(m["base_url"], format!("{}/dicom-web", c.archive.url()));
    let series = m["series"].as_object().unwrap();
    assert_eq!(series.len(), 4);
    let instances: u64 = series.values().map(|e| e["instances"].as_u64().unwrap()).sum();
    assert_eq!(instances, 26);
    assert!(series
        .values()
        .all(|e| e["status"] == "packed" && e["bytes"].as_u64().unwrap() > 0));
    for name in [
        "fetch-manifest.json",
        "pack-report.json",
        "quarantine.json",
        "index.json",
    ] {
        let text = std::fs::read_to_string(out.join(name)).unwrap();
        for uid in &uids {
            assert!(!text.contains(uid.as_str()), "{name} holds a SeriesInstanceUID");
        }
        assert!(!text.contains(PASSWORD));
    }

    // A rerun fetches nothing and writes nothing.
    let shards_before = PackIndex::load(&out).unwrap().unwrap().shards;
    let (code, r, stderr) = output(c.archive.pack_cmd(&out, &c.key, PASSWORD, &[]).output().unwrap());
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(r["series_already_packed"], 4);
    assert_eq!(r["series_fetched"], 0);
    assert_eq!(PackIndex::load(&out).unwrap().unwrap().shards, shards_before);

    // Filters: modality and date select; a query matching nothing is a warning, not a failure.
    let ct = c.root.join("ct");
    let (code, r, stderr) = output(
        c.archive
            .pack_cmd(
                &ct,
                &c.key,
                PASSWORD,
                &["--modality", "CT", "--study-date", "19000101-21001231"],
            )
            .output()
            .unwrap(),
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(r["series_matched"], 2);
    let none = c.root.join("none");
    let (code, r, stderr) = output(
        c.archive
            .pack_cmd(&none, &c.key, PASSWORD, &["--modality", "MR"])
            .output()
            .unwrap(),
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(r["series_matched"], 0);
    assert!(stderr.contains("matched no series"), "{stderr}");
    assert!(!none.exists(), "nothing may be written when nothing matched");
    // Series UIDs select exactly those series.
    let one = c.root.join("one");
    let (code, r, stderr) = output(
        c.archive
            .pack_cmd(&one, &c.key, PASSWORD, &["--series-uid", &uids[1]])
            .output()
            .unwrap(),
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(r["series_fetched"], 1);

    // A CSV of accession numbers and study UIDs selects those studies (each has one series here).
    let (code, body) = c.archive.curl(&["/dicom-web/studies"]);
    assert_eq!(code, 200, "{body}");
    let studies: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    let tag = |s: &serde_json::Value, t: &str| s[t]["Value"][0].as_str().unwrap().to_string();
    let csv = c.root.join("cohort.csv");
    std::fs::write(
        &csv,
        format!(
            "PatientLabel,AccessionNumber,StudyInstanceUID\nx,{},\ny,,{}\n",
            tag(&studies[0], "00080050"),
            tag(&studies[1], "0020000D")
        ),
    )
    .unwrap();
    let listed = c.root.join("listed");
    let (code, r, stderr) = output(
        c.archive
            .pack_cmd(&listed, &c.key, PASSWORD, &["--query-csv", s(&csv)])
            .output()
            .unwrap(),
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(r["series_fetched"], 2, "{r}");

    // Wrong credentials: a clear error, exit 2, nothing packed, the password not echoed.
    let refused = c.root.join("refused");
    let wrong = "not-the-password";
    let (code, _, stderr) = output(c.archive.pack_cmd(&refused, &c.key, wrong, &[]).output().unwrap());
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("refused the credentials") && stderr.contains("401"),
        "{stderr}"
    );
    assert!(!stderr.contains(wrong));
    assert!(
        !refused.exists(),
        "nothing may be written when the credentials are refused"
    );
    let _ = &c.dicom;
}

#[test]
fn pacs_series_deleted_mid_run_is_quarantined_by_status_and_the_rest_is_packed() {
    let Some(c) = cohort() else { return };
    let out = c.root.join("pulled");
    let gate = c.root.join("gate");
    let uids = c.archive.series_uids();
    let mut child = c
        .archive
        .pack_cmd(&out, &c.key, PASSWORD, &["--concurrency", "1"])
        .env("MEDTRAIN_PACS_HOLD", format!("1:{}", gate.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_gate(&gate, &mut child);
    c.archive.delete_series(&uids[3]);
    std::fs::remove_file(&gate).unwrap();
    let (code, r, stderr) = output(child.wait_with_output().unwrap());
    assert_eq!(code, 1, "a quarantined series makes the exit status 1: {stderr}");
    assert_eq!(r["series_fetched"], 3);
    assert_eq!(r["series_failed"], 1);
    let q = quarantine(&out);
    let entries = q["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{q}");
    let reason = entries[0]["reason"].as_str().unwrap();
    assert_eq!(entries[0]["stage"], "fetch");
    assert!(reason.contains("HTTP status 404"), "{reason}");
    assert!(
        reason.contains(&format!("{}/dicom-web/studies/", c.archive.url())),
        "{reason}"
    );
    for uid in &uids {
        assert!(
            !reason.contains(uid.as_str()),
            "the quarantine names a UID: {reason}"
        );
    }
    let m = manifest(&out);
    let failed: Vec<_> = m["series"]
        .as_object()
        .unwrap()
        .values()
        .filter(|e| e["status"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["http_status"], 404);
    // What was packed equals the disk pack of the same series.
    let pulled = packed_items(&out);
    let reference = packed_items(&c.disk);
    assert_eq!(pulled.len(), 3);
    for (k, v) in &pulled {
        assert_eq!(Some(v), reference.get(k));
    }
}

#[test]
fn pacs_server_stopped_mid_transfer_then_a_rerun_completes_the_pack() {
    let Some(mut c) = cohort() else { return };
    let out = c.root.join("pulled");
    let gate = c.root.join("gate");
    let mut child = c
        .archive
        .pack_cmd(&out, &c.key, PASSWORD, &["--concurrency", "1", "--retries", "1"])
        .env("MEDTRAIN_PACS_HOLD", format!("2:{}", gate.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_gate(&gate, &mut child);
    c.archive.stop_orthanc();
    std::fs::remove_file(&gate).unwrap();
    let (code, r, stderr) = output(child.wait_with_output().unwrap());
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(r["series_fetched"], 2, "{r}");
    assert_eq!(r["series_failed"], 2, "{r}");
    let q = quarantine(&out);
    for e in q["entries"].as_array().unwrap() {
        let reason = e["reason"].as_str().unwrap();
        assert!(
            reason.contains("connection failed") && reason.contains("after 2 attempt(s)"),
            "{reason}"
        );
    }

    c.archive.start_orthanc();
    let (code, r, stderr) = output(c.archive.pack_cmd(&out, &c.key, PASSWORD, &[]).output().unwrap());
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(r["series_already_packed"], 2, "{r}");
    assert_eq!(r["series_fetched"], 2, "{r}");
    assert_eq!(
        packed_items(&out),
        packed_items(&c.disk),
        "the resumed pack differs from the disk pack"
    );
    let m = manifest(&out);
    assert!(
        m["series"]
            .as_object()
            .unwrap()
            .values()
            .all(|e| e["status"] == "packed"),
        "{m}"
    );
}

#[test]
fn pacs_pull_on_two_mpi_ranks_shares_the_series_and_equals_the_disk_pack() {
    let Some(c) = cohort() else { return };
    let out = c.root.join("pulled");
    let mpirun = |out: &Path| {
        let mut cmd = c.archive.in_ns("mpirun");
        cmd.args([
            "--allow-run-as-root",
            "--oversubscribe",
            "-np",
            "2",
            env!("CARGO_BIN_EXE_medtrain"),
        ])
        .args(["--quiet", "pack", "--from"])
        .arg(format!("{}/dicom-web", c.archive.url()))
        .args([
            "--out",
            s(out),
            "--key",
            s(&c.key),
            "--json",
            "--concurrency",
            "2",
        ])
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMPI_MCA_rmaps_base_oversubscribe", "1")
        .env("MEDTRAIN_DICOMWEB_USER", USER)
        .env("MEDTRAIN_DICOMWEB_PASSWORD", PASSWORD)
        .env_remove("MEDTRAIN_MPI");
        output(cmd.output().expect("run mpirun"))
    };
    let (code, r, stderr) = mpirun(&out);
    assert_eq!(code, 0, "{stderr}");
    // One report from a world of 2 (two singletons would print two reports of one worker each).
    assert_eq!(r["pack"]["workers"], 2, "{r}");
    assert_eq!(r["series_fetched"], 4);
    assert_eq!(r["instances_fetched"], 26);
    let index = PackIndex::load(&out).unwrap().unwrap();
    for rank in ["shard-0000-", "shard-0001-"] {
        assert!(
            index.shards.iter().any(|e| e.file.starts_with(rank)),
            "no shard from {rank}"
        );
    }
    assert_eq!(
        packed_items(&out),
        packed_items(&c.disk),
        "two ranks pulled another pack than the disk pack"
    );
    let m = manifest(&out);
    assert_eq!(m["series"].as_object().unwrap().len(), 4, "{m}");
    assert!(
        !out.join("fetch-manifest-0001.json").exists(),
        "rank manifests are folded into one"
    );

    let (code, r, stderr) = mpirun(&out);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(r["series_already_packed"], 4, "{r}");
    assert_eq!(r["series_fetched"], 0, "{r}");
}

/// `medtrain push` in the namespace, credentials in the environment.
fn push_cmd(archive: &Archive, segs: &Path, out: &Path, password: &str, root: &str) -> Command {
    let mut cmd = archive.in_ns(env!("CARGO_BIN_EXE_medtrain"));
    cmd.args(["--quiet", "push", s(segs), "--to"])
        .arg(format!("{}{root}", archive.url()))
        .args(["--out", s(out), "--json", "--retries", "0"])
        .env("MEDTRAIN_DICOMWEB_USER", USER)
        .env("MEDTRAIN_DICOMWEB_PASSWORD", password)
        .env_remove("MEDTRAIN_DICOMWEB_TOKEN");
    cmd
}

/// `push` stores DICOM SEGs (highdicom's, of the phantom's nodules) beside their series with
/// STOW-RS, and the archive gives each back byte for byte. Wrong credentials exit 2 and store
/// nothing; a push while the archive is down records every file as failed (exit 1); the rerun once
/// it is back stores them all, and a third run sends nothing, so nothing is stored twice.
#[test]
fn pacs_push_stores_segs_and_reruns_send_only_what_is_missing() {
    let Some(mut c) = cohort() else { return };
    let segs = c.root.join("segs");
    let written: serde_json::Value = serde_json::from_str(&crate::common::reference_script(
        "write_seg.py",
        &[s(&c.root.join("phantom/truth")), s(&c.dicom), s(&segs)],
    ))
    .unwrap();
    let files = walk(&segs.join("binary"));
    let n = written["series"].as_array().unwrap().len();
    assert!(n >= 1 && files.len() == n, "{written}");
    let instances = |a: &Archive| {
        let (code, body) = a.curl(&["/instances"]);
        assert_eq!(code, 200, "{body}");
        serde_json::from_str::<Vec<String>>(&body).unwrap().len()
    };
    let out = c.root.join("push");
    let push = |a: &Archive, password: &str| {
        output(
            push_cmd(a, &segs.join("binary"), &out, password, "/dicom-web")
                .output()
                .unwrap(),
        )
    };
    let (code, _, err) = push(&c.archive, "wrong");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("credentials"), "{err}");
    assert_eq!(instances(&c.archive), 26, "nothing stored with wrong credentials");

    c.archive.stop_orthanc();
    let (code, report, err) = push(&c.archive, PASSWORD);
    assert_eq!(code, 1, "{err}");
    assert_eq!(report["failed"].as_u64(), Some(n as u64), "{report}");
    c.archive.start_orthanc();
    let (code, report, err) = push(&c.archive, PASSWORD);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        (report["stored"].as_u64(), report["skipped"].as_u64()),
        (Some(n as u64), Some(0)),
        "{report}"
    );
    let (code, report, err) = push(&c.archive, PASSWORD);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        (report["sent"].as_u64(), report["skipped"].as_u64()),
        (Some(0), Some(n as u64)),
        "{report}"
    );
    assert_eq!(instances(&c.archive), 26 + n, "each SEG stored once");
    // The manifest belongs to this archive: another URL with the same --out is refused.
    let other = push_cmd(&c.archive, &segs.join("binary"), &out, PASSWORD, "/other").output();
    let (code, _, err) = output(other.unwrap());
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("records pushes to"), "{err}");
    // WADO-RS gives every SEG back as it was sent.
    for file in &files {
        let ds = medtrain::dicom::read::open_header_checked(file).unwrap().object;
        let uid = |t| {
            ds.element(t)
                .unwrap()
                .to_str()
                .unwrap()
                .trim_end_matches('\0')
                .to_string()
        };
        use dicom_dictionary_std::tags;
        let path = format!(
            "/dicom-web/studies/{}/series/{}/instances/{}",
            uid(tags::STUDY_INSTANCE_UID),
            uid(tags::SERIES_INSTANCE_UID),
            uid(tags::SOP_INSTANCE_UID)
        );
        let got = c.root.join("got.bin");
        let (code, _) = c.archive.curl(&[
            &path,
            "-H",
            "Accept: multipart/related; type=\"application/dicom\"; transfer-syntax=*",
            "-o",
            s(&got),
        ]);
        assert_eq!(code, 200, "{path}");
        let body = std::fs::read(&got).unwrap();
        let sent = std::fs::read(file).unwrap();
        assert!(
            body.windows(sent.len()).any(|w| w == &sent[..]),
            "{}: the archive's part is not the file sent",
            file.display()
        );
    }
}
