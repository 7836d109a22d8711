//! `medtrain doctor` on this machine (no GPU): a missing GPU is a warning for `auto` and an error for
//! `--device cuda`; a missing `--local` is reported; MPI, HDF5, the node-local disk, Slurm and threads
//! are ok.

use crate::common::{run, s, tempdir};

fn checks(out: &str) -> Vec<serde_json::Value> {
    serde_json::from_str::<serde_json::Value>(out)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn status<'a>(checks: &'a [serde_json::Value], name: &str) -> &'a str {
    checks
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name}: {checks:?}"))["status"]
        .as_str()
        .unwrap()
}

#[test]
fn doctor_reports_each_check_with_its_status_and_exit_code() {
    let dir = tempdir();
    let (code, out, err) = run(&["doctor", "--local", s(dir.path()), "--json"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let c = checks(&out);
    for name in ["mpi", "hdf5", "local disk", "slurm", "threads"] {
        assert_eq!(status(&c, name), "ok", "{name}: {c:?}");
    }
    // No GPU here: a warning with a remedy, not an error, when the device is not required.
    assert_eq!(status(&c, "gpu"), "warning");
    assert!(c.iter().find(|x| x["name"] == "gpu").unwrap()["remedy"].is_string());
    let hdf5 = c.iter().find(|x| x["name"] == "hdf5").unwrap()["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(hdf5.starts_with("libhdf5 1."), "{hdf5}");

    let (code, out, _) = run(&["doctor", "--device", "cuda", "--json"]);
    assert_eq!(code, 1, "{out}");
    let c = checks(&out);
    assert_eq!(status(&c, "gpu"), "error");
    assert_eq!(
        status(&c, "local disk"),
        "warning",
        "a missing --local is reported"
    );

    let (code, out, _) = run(&["doctor", "--device", "cpu", "--local", s(dir.path())]);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("gpu"), "--device cpu checks no GPU: {out}");
    let (code, _, _) = run(&["doctor", "--device", "tpu"]);
    assert_eq!(code, 2, "an unknown device is a usage error");
}
