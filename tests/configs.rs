//! Every settings file in `configs/` is a template a user starts from, so each must train: one
//! optimizer step with the template's own model, data and task settings (only epochs, batch size and
//! the step count are overridden), on data of the modality it is written for. The CT and radiograph
//! templates train on the phantom's CT series and CR/DX radiographs; the Achilles template on an MR
//! cohort written with pydicom from pydicom's `MR_small.dcm` (int16 MR in arbitrary units, normalised
//! per series, never windowed as HU). A template that no longer parses, names a setting the code does
//! not have, or asks for data the loader refuses fails here.

use crate::common::{ok, pydicom_file, reference_script, run, s, tempdir};
use std::path::{Path, PathBuf};

/// A catalog of a small phantom (CT and one radiograph per patient) with its label sets, and its
/// manifests: CT slices, CT series (for 3D volumes) and radiographs.
struct Manifests {
    catalog: PathBuf,
    ct: PathBuf,
    ct_series: PathBuf,
    cxr: PathBuf,
}

fn phantom_catalog(root: &Path) -> Manifests {
    let p = |x: &str| root.join(x);
    let (catalog, key) = crate::common::phantom_catalog(root, "6", "32");
    let import = |csv: &str, name: &str, extra: &[&str]| {
        let csv = p(&format!("phantom/truth/{csv}"));
        let mut args = vec![
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
        ];
        args.extend_from_slice(extra);
        ok(&args);
    };
    import("slices_by_instance.csv", "nodule_slices", &[]);
    import(
        "series.csv",
        "series_labels",
        &["--ignore", "Modality", "--ignore", "StudyInstanceUID"],
    );
    import(
        "patients.csv",
        "outcome",
        &["--event-within", "death_5y=DeathEvent,FollowUpDays,1826"],
    );
    crate::common::import_lidc(&catalog, &p("phantom/truth/lidc"), &key, "lidc");
    let split = |query: &str, out: &str, extra: &[&str]| {
        let out = p(out);
        let mut args = vec![
            "catalog",
            "split",
            s(&catalog),
            query,
            "--out",
            s(&out),
            "--ratios",
            "train=0.5,val=0.5",
            "--seed",
            "3",
        ];
        args.extend_from_slice(extra);
        ok(&args);
    };
    split("modality = 'CT'", "ct.h5", &[]);
    split("modality = 'CT'", "ct-series.h5", &["--level", "series"]);
    split("modality = 'CR' or modality = 'DX'", "cxr.h5", &[]);
    Manifests {
        catalog: p("catalog"),
        ct: p("ct.h5"),
        ct_series: p("ct-series.h5"),
        cxr: p("cxr.h5"),
    }
}

/// An MR cohort of `n` patients with a series-level healing score and hand-crafted features,
/// catalogued and split.
fn mr_catalog(root: &Path, n: usize) -> (PathBuf, PathBuf) {
    let file = pydicom_file("MR_small.dcm");
    let p = |x: &str| root.join(x);
    reference_script("write_mr_cohort.py", &[s(&file), s(&p("mr")), &n.to_string()]);
    ok(&[
        "pack",
        s(&p("mr/dicom")),
        "--out",
        s(&p("mr-pack")),
        "--key",
        s(&p("mr.key")),
        "--create-key",
    ]);
    ok(&["catalog", "build", s(&p("mr-pack")), "--out", s(&p("mr-catalog"))]);
    for name in ["healing", "features"] {
        ok(&[
            "catalog",
            "labels",
            "import",
            s(&p(&format!("mr/{name}.csv"))),
            "--out",
            s(&p("mr-catalog")),
            "--name",
            name,
            "--key",
            s(&p("mr.key")),
        ]);
    }
    ok(&[
        "catalog",
        "split",
        s(&p("mr-catalog")),
        "modality = 'MR'",
        "--out",
        s(&p("mr.h5")),
        "--ratios",
        "train=0.5,val=0.5",
        "--seed",
        "3",
    ]);
    (p("mr-catalog"), p("mr.h5"))
}

#[test]
fn every_config_template_trains_on_its_modality() {
    let dir = tempdir();
    let root = dir.path();
    let phantom = phantom_catalog(root);
    let (mr_catalog, mr) = mr_catalog(root, 4);
    let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    let mut names: Vec<String> = std::fs::read_dir(&configs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".toml"))
        .collect();
    names.sort();
    let mut trained = Vec::new();
    for name in &names {
        let (catalog, manifest) = match name.as_str() {
            "cxr-death-risk.toml" | "cxr-risk-demo.toml" => (&phantom.catalog, &phantom.cxr),
            "achilles-healing.toml" | "achilles-demo.toml" => (&mr_catalog, &mr),
            "smoke.toml" | "ldct-nodule.toml" => (&phantom.catalog, &phantom.ct),
            "ldct-death-risk.toml" | "ldct-risk-demo.toml" | "ldct-seg-demo.toml" => {
                (&phantom.catalog, &phantom.ct_series)
            }
            other => panic!("configs/{other}: say here which data this template trains on"),
        };
        let out = root.join(format!("run-{name}"));
        let (code, stdout, err) = run(&[
            "train",
            s(catalog),
            s(manifest),
            "--out",
            s(&out),
            "--config",
            s(&configs.join(name)),
            "--epochs",
            "1",
            "--batch-size",
            "2",
            "--max-steps",
            "1",
            "--threads",
            "1",
        ]);
        assert_eq!(code, 0, "configs/{name} does not train\n{stdout}\n{err}");
        let status: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("train-status.json")).unwrap()).unwrap();
        assert_eq!(status["global_step"], 1, "configs/{name}: {status}");
        trained.push(name.clone());
    }
    assert_eq!(trained, names);
}
