//! Helpers shared by the integration tests: the binary under test, the reference Python, and
//! small phantom cohorts.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn medtrain() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_medtrain"));
    cmd.arg("--quiet");
    cmd
}

/// Runs medtrain and returns (exit code, stdout, stderr).
pub fn run(args: &[&str]) -> (i32, String, String) {
    let out: Output = medtrain().args(args).output().expect("run medtrain");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs medtrain, requires exit 0 (else fails with the output), and returns stdout.
pub fn ok(args: &[&str]) -> String {
    let (code, out, err) = run(args);
    assert_eq!(code, 0, "{args:?}\n{out}\n{err}");
    out
}

/// The interpreter with the reference packages (scripts/test.sh sets MEDTRAIN_PYTHON).
pub fn python() -> Command {
    let exe = std::env::var("MEDTRAIN_PYTHON").unwrap_or_else(|_| "python3".into());
    Command::new(exe)
}

/// Runs a script from tests/reference/ and returns its stdout; fails the test with its stderr.
pub fn reference_script(script: &str, args: &[&str]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/reference")
        .join(script);
    let out = python()
        .arg(&path)
        .args(args)
        .output()
        .expect("start the reference Python");
    assert!(
        out.status.success(),
        "{script} failed (run scripts/test.sh, which installs the reference packages):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A file of pydicom's test data (MEDTRAIN_PYDICOM_DATA, else where scripts/fetch-test-data.sh puts it).
pub fn pydicom_file(name: &str) -> PathBuf {
    let data = std::env::var_os("MEDTRAIN_PYDICOM_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-data/pydicom/data/test_files")
        });
    let file = data.join(name);
    assert!(
        file.is_file(),
        "{} not found: run scripts/fetch-test-data.sh",
        file.display()
    );
    file
}

/// `medtrain phantom` (CT and radiographs) of `patients` × `size`² × 12 slices under `root/phantom`,
/// packed with a new site key (`root/site.key`) into `root/pack` and catalogued in `root/catalog`.
/// Returns (catalog, key).
pub fn phantom_catalog(root: &Path, patients: &str, size: &str) -> (PathBuf, PathBuf) {
    phantom_catalog_with(root, &["--patients", patients, "--size", size, "--slices", "12"])
}

/// A phantom made with `phantom_args`, packed with a new site key and catalogued: (catalog, key).
pub fn phantom_catalog_with(root: &Path, phantom_args: &[&str]) -> (PathBuf, PathBuf) {
    let p = |x: &str| root.join(x);
    let out = p("phantom");
    let mut args = vec!["phantom", "--out", s(&out)];
    args.extend_from_slice(phantom_args);
    ok(&args);
    ok(&[
        "pack",
        s(&p("phantom/dicom")),
        "--out",
        s(&p("pack")),
        "--key",
        s(&p("site.key")),
        "--create-key",
    ]);
    ok(&["catalog", "build", s(&p("pack")), "--out", s(&p("catalog"))]);
    (p("catalog"), p("site.key"))
}

/// Imports the phantom's LIDC reader XML as mask set `name`, consensus of at least 2 readers.
pub fn import_lidc(catalog: &Path, lidc: &Path, key: &Path, name: &str) {
    ok(&[
        "catalog",
        "labels",
        "masks",
        s(lidc),
        "--format",
        "lidc",
        "--agreement",
        "2",
        "--out",
        s(catalog),
        "--name",
        name,
        "--key",
        s(key),
    ]);
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("medtrain-test-")
        .tempdir()
        .expect("temp dir")
}

/// A key file with mode 0600 in `dir`.
pub fn key_file(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let key = medtrain::deid::SiteKey::load_or_create(&path, true).expect("create key");
    drop(key);
    path
}

/// A fixed site key in `dir/site.key` (mode 0600), for the demo scripts, which reuse a key that is
/// there: the pseudonyms, and so the patient splits, are then the same in every run, and a demo's
/// verdict is a function of the commit rather than of a random key.
pub fn fixed_site_key(dir: &Path) -> PathBuf {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("site.key");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .unwrap();
    // "demo tests: one key, one verdict"
    std::io::Write::write_all(
        &mut f,
        b"64656d6f2074657374733a206f6e65206b65792c206f6e652076657264696374\n",
    )
    .unwrap();
    path
}

pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Every F32 tensor of a safetensors file, read with the safetensors crate.
pub fn read_f32_tensors(path: &Path) -> std::collections::HashMap<String, (Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (the fixtures: tests/reference/torch_checkpoint.py)",
            path.display()
        )
    });
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .filter(|(_, v)| v.dtype() == safetensors::Dtype::F32)
        .map(|(name, v)| {
            let values = v
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            (name, (v.shape().to_vec(), values))
        })
        .collect()
}
