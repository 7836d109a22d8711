//! `catalog query` against SQLite: the reference script loads the same rows from the shards (h5py)
//! and the CSVs, pseudonymising identifiers itself, and runs the SQL twin of each query.

use crate::catalog_common::{cohort, key_file, write_csvs, write_pack, KEY_BYTES};
use medtrain::catalog::build::build;
use medtrain::catalog::columns::Level;
use medtrain::catalog::labels::{import, EventWithin, ImportSpec};
use medtrain::catalog::query::{run, Request};
use medtrain::catalog::view::Catalog;
use medtrain::deid::SiteKey;
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;

/// (name, level, filter, group by, mean): names match the SQL in catalog_sqlite.py.
const QUERIES: &[(&str, &str, &str, &[&str], &[&str])] = &[
    ("thin", "slices", "slice_thickness <= 1.25", &[], &[]),
    (
        "thin_nodule",
        "slices",
        "slice_thickness <= 1.25 and sop.nodule = true",
        &[],
        &[],
    ),
    (
        "sop_false_or_low_instance",
        "slices",
        "sop.nodule = false or instance_number in 1..3",
        &[],
        &[],
    ),
    ("sop_unknown", "slices", "sop.nodule is unknown", &[], &[]),
    ("patients_with_nodule", "patients", "sop.nodule", &[], &[]),
    ("death5_unknown", "patients", "pt.death_5y is unknown", &[], &[]),
    ("death5_true", "patients", "pt.death_5y", &[], &[]),
    ("death5_absent", "patients", "pt.death_5y is absent", &[], &[]),
    (
        "not_thick_ct",
        "series",
        "not (slice_thickness > 1) and modality = 'CT'",
        &[],
        &[],
    ),
    (
        "series_by_patient_labels",
        "series",
        "pt.maxnodulediametermm > 5 or pt.nodulecount = 0",
        &[],
        &[],
    ),
    ("inst_nodule_slices", "slices", "inst.nodule = true", &[], &[]),
    (
        "groups_modality_kernel",
        "slices",
        "ser.nodule",
        &["modality", "convolution_kernel"],
        &["slice_thickness"],
    ),
    (
        "groups_per_series",
        "slices",
        "inst.nodule = true",
        &["series_key"],
        &[],
    ),
    ("groups_slice_key", "slices", "", &["inst.nodule"], &["position"]),
    (
        "groups_patient_death",
        "patients",
        "modality = 'MR'",
        &["pt.death"],
        &[],
    ),
];

fn key_text(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => (*b as u8).to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub fn import_fixture_labels(catalog: &Path, csv_dir: &Path, key: &SiteKey) {
    let spec = |csv: &str, name: &str| ImportSpec {
        csv: csv_dir.join(csv),
        name: name.into(),
        ..ImportSpec::default()
    };
    let mut pt = spec("patients.csv", "pt");
    pt.event_within.push(EventWithin {
        name: "death_5y".into(),
        event: "Death".into(),
        time: "FollowUpDays".into(),
        days: 1826.0,
    });
    import(catalog, key, &pt).unwrap();
    let mut ser = spec("series.csv", "ser");
    ser.ignore.push("Modality".into());
    import(catalog, key, &ser).unwrap();
    import(catalog, key, &spec("slices_by_sop.csv", "sop")).unwrap();
    import(catalog, key, &spec("slices_by_instance.csv", "inst")).unwrap();
}

#[test]
fn queries_match_sqlite() {
    let tmp = tempfile::tempdir().unwrap();
    let key = SiteKey::from_bytes(KEY_BYTES);
    let series = cohort(30);
    let pack = write_pack(&tmp.path().join("pack"), &key, &series, 3, 0);
    write_csvs(tmp.path(), &series);
    let keyfile = key_file(tmp.path());
    let catalog = tmp.path().join("catalog");
    build(&[pack.clone()], &catalog).unwrap();
    import_fixture_labels(&catalog, tmp.path(), &key);

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/catalog_sqlite.py");
    // The interpreter scripts/test.sh prepares (MEDTRAIN_PYTHON: a venv with h5py), else python3.
    let out = crate::common::python()
        .arg(&script)
        .args([&pack, tmp.path(), &keyfile])
        .output()
        .expect("python3 runs (the reference needs python3 with h5py)");
    assert!(
        out.status.success(),
        "reference failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reference: HashMap<String, Value> = serde_json::from_slice(&out.stdout).unwrap();

    let cat = Catalog::open(&catalog).unwrap();
    for (name, level, filter, group_by, mean) in QUERIES {
        let req = Request {
            group_by: group_by.iter().map(|s| s.to_string()).collect(),
            mean: mean.iter().map(|s| s.to_string()).collect(),
            ..Request::count(filter, Level::parse(level).unwrap())
        };
        let answer = run(&cat, &req).unwrap_or_else(|e| panic!("{name}: {e}"));
        let want = &reference[*name];
        if let Some(count) = want.get("count") {
            assert_eq!(answer.count, count.as_u64().unwrap(), "{name}: {filter}");
            continue;
        }
        let n_keys = group_by.len();
        let mut expected: HashMap<Vec<String>, Vec<Value>> = HashMap::new();
        for row in want["groups"].as_array().unwrap() {
            let row = row.as_array().unwrap();
            let keys = row[..n_keys]
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect();
            expected.insert(keys, row[n_keys..].to_vec());
        }
        let groups = answer.groups.unwrap();
        assert_eq!(groups.len(), expected.len(), "{name}: group count");
        assert!(!groups.is_empty(), "{name}: the fixture must produce groups");
        for g in groups {
            let keys: Vec<String> = g.key.iter().map(key_text).collect();
            let row = expected
                .get(&keys)
                .unwrap_or_else(|| panic!("{name}: group {keys:?} not in SQLite"));
            assert_eq!(g.count, row[0].as_u64().unwrap(), "{name}: count of {keys:?}");
            for (m, r) in g.mean.iter().zip(&row[1..]) {
                match (m, r.as_f64()) {
                    (Some(a), Some(b)) => assert!(
                        (a - b).abs() <= 1e-9 * b.abs().max(1.0),
                        "{name}: mean {a} vs {b}"
                    ),
                    (None, None) => {}
                    other => panic!("{name}: mean {other:?}"),
                }
            }
        }
    }
}
