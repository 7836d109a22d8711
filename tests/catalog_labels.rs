//! Label import: joins through keyed pseudonyms (scrambled InstanceNumbers, ranges, ordinals by
//! position) and all-or-nothing rejection of bad CSVs with line numbers.

use crate::catalog_common::{cohort, write_pack, FixtureSeries, KEY_BYTES};
use medtrain::catalog::build::build;
use medtrain::catalog::columns::Level;
use medtrain::catalog::labels::{import, ImportSpec, LabelError, LabelSpec};
use medtrain::catalog::query::{run, Request};
use medtrain::catalog::state::{CatalogState, LabelKind};
use medtrain::catalog::view::Catalog;
use medtrain::deid::SiteKey;
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

fn setup() -> (tempfile::TempDir, Vec<FixtureSeries>, PathBuf, SiteKey) {
    let tmp = tempfile::tempdir().unwrap();
    let key = SiteKey::from_bytes(KEY_BYTES);
    let series = cohort(8);
    let pack = write_pack(&tmp.path().join("pack"), &key, &series, 2, 0);
    let catalog = tmp.path().join("catalog");
    build(&[pack], &catalog).unwrap();
    (tmp, series, catalog, key)
}

fn spec(csv: &Path, name: &str) -> ImportSpec {
    ImportSpec {
        csv: csv.to_path_buf(),
        name: name.into(),
        ..ImportSpec::default()
    }
}

/// Slice indices (0-based stored order) labelled true in series `s`.
fn labelled(catalog: &Path, filter: &str, series_key: &str) -> BTreeSet<u64> {
    let cat = Catalog::open(catalog).unwrap();
    let req = Request {
        list: Some(vec!["series_key".into(), "slice_index".into()]),
        ..Request::count(filter, Level::Slice)
    };
    run(&cat, &req)
        .unwrap()
        .rows
        .unwrap()
        .iter()
        .filter(|r| r[0] == series_key)
        .map(|r| r[1].as_u64().unwrap())
        .collect()
}

#[test]
fn scrambled_instance_numbers_and_ranges_meet_the_right_slices() {
    let (tmp, series, catalog, key) = setup();
    let s = series
        .iter()
        .find(|s| s.instances[0] != 1)
        .expect("fixture has a scrambled series");
    let csv = tmp.path().join("inst.csv");
    fs::write(
        &csv,
        format!(
            "Patient ID,Series Instance UID,Instance Number,Nodule\n{},{},2–4,1\n",
            s.patient, s.series
        ),
    )
    .unwrap();
    import(&catalog, &key, &spec(&csv, "inst")).unwrap();
    let expected: BTreeSet<u64> = s
        .instances
        .iter()
        .enumerate()
        .filter(|(_, n)| (2..=4).contains(*n))
        .map(|(k, _)| k as u64)
        .collect();
    let series_key = key.pseudonym(medtrain::deid::IdKind::Series, &s.series);
    assert_eq!(labelled(&catalog, "inst.nodule", &series_key), expected);
    assert_ne!(expected, (1..=3).collect(), "the scrambled order must matter");

    // Ordinals by position only when asked: 1-2 are the two lowest positions (stored first).
    let csv = tmp.path().join("ord.csv");
    fs::write(
        &csv,
        format!(
            "PatientID,SeriesInstanceUID,Slice,Nodule\n{},{},1-2,1\n",
            s.patient, s.series
        ),
    )
    .unwrap();
    let mut by_pos = spec(&csv, "ord");
    by_pos.keys.instance = "Slice".into();
    by_pos.by_position = true;
    import(&catalog, &key, &by_pos).unwrap();
    assert_eq!(
        labelled(&catalog, "ord.nodule", &series_key),
        BTreeSet::from([0, 1])
    );
}

#[test]
fn bad_csv_is_rejected_whole_with_line_numbers() {
    let (tmp, series, catalog, key) = setup();
    let before = fs::read_to_string(catalog.join("catalog.json")).unwrap();
    let (a, b) = (&series[0], &series[1]);
    let n = a.instances.len();
    let csv = tmp.path().join("bad.csv");
    let text = format!(
        "PatientID,SeriesInstanceUID,InstanceNumber,Grade\n\
         {p},{s},1,2\n\
         NOBODY,{s},1,2\n\
         {p},{s},1,3\n\
         {p},{s},2,high\n\
         {p},{s},{over},1\n\
         {p},{s},5-3,1\n\
         {p},{other},1,1\n\
         {p},{s},3,NA\n",
        p = a.patient,
        s = a.series,
        over = n + 5,
        other = if b.patient != a.patient {
            b.series.clone()
        } else {
            series
                .iter()
                .find(|x| x.patient != a.patient)
                .unwrap()
                .series
                .clone()
        },
    );
    fs::write(&csv, text).unwrap();
    let mut sp = spec(&csv, "grades");
    sp.labels.push(LabelSpec {
        name: "grade".into(),
        column: "Grade".into(),
        kind: Some(LabelKind::Int),
    });
    let err = import(&catalog, &key, &sp).unwrap_err();
    let LabelError::Rejected { problems, .. } = err else {
        panic!("expected a rejection, got {err}")
    };
    let text = problems.join("\n");
    for (line, what) in [
        (3, "not in the catalog"),
        (4, "duplicate of line 2"),
        (5, "not an integer"),
        (6, "out of range"),
        (7, "reversed"),
        (8, "another patient"),
    ] {
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with(&format!("line {line}:")) && p.contains(what)),
            "line {line} ({what}) missing in:\n{text}"
        );
    }
    assert!(
        !text.contains("line 9:"),
        "an NA cell is unknown, not an error:\n{text}"
    );
    assert_eq!(
        fs::read_to_string(catalog.join("catalog.json")).unwrap(),
        before,
        "nothing imported"
    );
    assert!(!catalog.join("labels-grades-v1.h5").exists());

    // A ragged record is reported with its line.
    fs::write(
        &csv,
        format!("PatientID,Death\n{},1\n{},1,9\n", a.patient, b.patient),
    )
    .unwrap();
    match import(&catalog, &key, &spec(&csv, "pt")).unwrap_err() {
        LabelError::Rejected { problems, .. } => assert!(problems[0].starts_with("line 3:"), "{problems:?}"),
        other => panic!("{other}"),
    }
}

#[test]
fn another_site_key_is_refused_and_versions_stack() {
    let (tmp, series, catalog, key) = setup();
    let csv = tmp.path().join("pt.csv");
    fs::write(&csv, format!("PatientID,Death\n{},1\n", series[0].patient)).unwrap();
    let other = SiteKey::from_bytes([9; 32]);
    let err = import(&catalog, &other, &spec(&csv, "pt"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("site key mismatch"), "{err}");
    import(&catalog, &key, &spec(&csv, "pt")).unwrap();
    fs::write(&csv, format!("PatientID,Death\n{},0\n", series[0].patient)).unwrap();
    import(&catalog, &key, &spec(&csv, "pt")).unwrap();
    let state = CatalogState::load(&catalog).unwrap().unwrap();
    let versions: Vec<u32> = state.label_sets.iter().map(|l| l.version).collect();
    assert_eq!(versions, vec![1, 2]);
    let cat = Catalog::open(&catalog).unwrap();
    let count = |f: &str| run(&cat, &Request::count(f, Level::Patient)).unwrap().count;
    assert_eq!(count("pt.death"), 0, "the newest version answers");
    assert_eq!(count("pt@1.death"), 1);
}

/// `catalog synth` writes shards that the rest of the catalog accepts: build, a slice-level label
/// import from its CSV, and a query whose count equals the nodule slices listed in that CSV (counted
/// here from the CSV text, independently of the catalog).
#[test]
fn synthetic_cohort_builds_imports_and_answers_queries() {
    let dir = tempfile::tempdir().unwrap();
    let (pack, cat, key) = (
        dir.path().join("pack"),
        dir.path().join("cat"),
        dir.path().join("site.key"),
    );
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let (code, _, err) = crate::common::run(&[
        "catalog",
        "synth",
        "--out",
        &s(&pack),
        "--key",
        &s(&key),
        "--series",
        "40",
        "--slices",
        "20",
        "--series-per-shard",
        "7",
    ]);
    assert_eq!(code, 0, "synth: {err}");
    let (code, _, err) = crate::common::run(&["catalog", "build", &s(&pack), "--out", &s(&cat)]);
    assert_eq!(code, 0, "build refused the synthetic shards: {err}");
    let csv = pack.join("slices_by_instance.csv");
    let (code, _, err) = crate::common::run(&[
        "catalog",
        "labels",
        "import",
        &s(&csv),
        "--out",
        &s(&cat),
        "--name",
        "inst",
        "--key",
        &s(&key),
    ]);
    assert_eq!(code, 0, "labels import: {err}");
    let expected: u64 = fs::read_to_string(&csv)
        .unwrap()
        .lines()
        .skip(1)
        .map(|line| {
            let range = line.split(',').nth(2).unwrap();
            let (lo, hi) = range.split_once('-').unwrap();
            hi.parse::<u64>().unwrap() - lo.parse::<u64>().unwrap() + 1
        })
        .sum();
    assert!(expected > 0, "the synthetic cohort should hold nodule ranges");
    let (code, out, err) = crate::common::run(&[
        "catalog",
        "query",
        &s(&cat),
        "inst.nodule",
        "--level",
        "slices",
        "--json",
    ]);
    assert_eq!(code, 0, "query: {err}");
    let answer: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(answer["count"].as_u64(), Some(expected), "{out}");
}
