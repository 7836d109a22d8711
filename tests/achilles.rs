//! The Achilles phantom as a reader sees it (pydicom, tests/reference/achilles_check.py): ultrasound
//! in three forms (RGB, a cine loop, one grey frame) with a Sequence of Ultrasound Regions below a
//! border that holds burned-in text exactly when BurnedInAnnotation is YES, and sagittal MR series;
//! then packed: nothing quarantined, no planted identifier in any output byte, and no burned-in text
//! pixel in any ultrasound series of the shards (the region crop removes the border).

use crate::common::{reference_script, run, s, tempdir};
use medtrain::pack::index::PackIndex;
use medtrain::pack::reader::ShardReader;
use medtrain::phantom::{achilles, PhantomConfig};
use std::collections::BTreeSet;
use std::fs;

#[test]
fn achilles_phantom_reads_in_pydicom_and_packs_without_identifiers_or_burned_in_text() {
    let dir = tempdir();
    let root = dir.path();
    let cfg = PhantomConfig {
        patients: 6,
        ..PhantomConfig::default()
    };
    let summary = achilles::generate(&cfg, &root.join("phantom")).unwrap();
    assert_eq!((summary.patients, summary.series), (6, 18));

    let files: Vec<serde_json::Value> =
        serde_json::from_str(&reference_script("achilles_check.py", &[s(&summary.dicom_dir)])).unwrap();
    let us: Vec<&serde_json::Value> = files.iter().filter(|f| f["modality"] == "US").collect();
    let mr: Vec<&serde_json::Value> = files.iter().filter(|f| f["modality"] == "MR").collect();
    assert_eq!(
        (us.len(), mr.len()),
        (12, 30),
        "two ultrasounds (first visit, follow-up) and five MR slices per patient"
    );
    let forms: BTreeSet<(String, i64, i64)> = us
        .iter()
        .map(|f| {
            (
                f["photometric"].as_str().unwrap().to_string(),
                f["samples"].as_i64().unwrap(),
                f["frames"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        forms,
        BTreeSet::from([
            ("MONOCHROME2".to_string(), 1, 1),
            ("MONOCHROME2".to_string(), 1, 3),
            ("RGB".to_string(), 3, 1),
        ])
    );
    let mut burned = 0;
    for f in &us {
        assert_eq!(f["region"], serde_json::json!([0, 16, 127, 111]), "{f}");
        assert_eq!(f["delta_cm"], serde_json::json!([0.025, 0.025]));
        assert!(f["grey"].as_bool().unwrap(), "RGB holds a grey B-mode image: {f}");
        assert!(
            f["tissue_max"].as_i64().unwrap() < 255,
            "tissue never reaches 255: {f}"
        );
        let yes = f["burned_in"] == "YES";
        burned += yes as usize;
        assert_eq!(
            f["border_max"].as_i64().unwrap() == 255,
            yes,
            "text in the border iff YES: {f}"
        );
    }
    assert_eq!(burned, 6);
    for f in &mr {
        assert_eq!(
            f["orientation"],
            serde_json::json!([0.0, 1.0, 0.0, 0.0, 0.0, -1.0])
        );
        assert_eq!((f["rows"].as_i64(), f["cols"].as_i64()), (Some(80), Some(96)));
    }
    let healing = fs::read_to_string(summary.truth_dir.join(achilles::HEALING_CSV)).unwrap();
    let features = fs::read_to_string(summary.truth_dir.join(achilles::FEATURES_CSV)).unwrap();
    let series: BTreeSet<&str> = files.iter().map(|f| f["series"].as_str().unwrap()).collect();
    for csv in [&healing, &features] {
        let keyed: BTreeSet<&str> = csv
            .lines()
            .skip(1)
            .map(|l| l.split(',').nth(1).unwrap())
            .collect();
        assert_eq!(keyed, series, "a truth row per series");
    }
    let mut grade_of = std::collections::HashMap::new();
    for line in healing.lines().skip(1) {
        let grade: u8 = line.rsplit(',').next().unwrap().parse().unwrap();
        assert!((1..=7).contains(&grade), "{line}");
        grade_of.insert(line.split(',').nth(1).unwrap().to_string(), grade);
    }
    // Longitudinal: per patient, the follow-up ultrasound is a later study of a tendon healed by 1–3
    // grades (at most 7); the MR shares the first ultrasound's grade.
    let patients: BTreeSet<&str> = files.iter().map(|f| f["patient_id"].as_str().unwrap()).collect();
    let mut healed = 0;
    for p in patients {
        let mut visits: Vec<(&str, &str, u8)> = files
            .iter()
            .filter(|f| f["patient_id"] == p)
            .map(|f| {
                let series = f["series"].as_str().unwrap();
                (
                    f["study_date"].as_str().unwrap(),
                    f["modality"].as_str().unwrap(),
                    grade_of[series],
                )
            })
            .collect();
        visits.sort();
        visits.dedup();
        let us: Vec<_> = visits.iter().filter(|v| v.1 == "US").collect();
        let mr = visits.iter().find(|v| v.1 == "MR").unwrap();
        assert_eq!(us.len(), 2, "{p}: {visits:?}");
        let (first, later) = (us[0], us[1]);
        assert!(later.0 > first.0 && mr.0 <= first.0, "{p}: dates {visits:?}");
        assert_eq!(mr.2, first.2, "{p}: MR and first ultrasound share a grade");
        assert!(
            later.2 >= first.2 && later.2 <= 7 && later.2 <= first.2 + 3,
            "{p}: {visits:?}"
        );
        healed += usize::from(later.2 > first.2);
    }
    assert!(healed > 0, "some tendons heal between the visits");

    let out = root.join("pack");
    let (code, stdout, stderr) = run(&[
        "pack",
        s(&summary.dicom_dir),
        "--out",
        s(&out),
        "--key",
        s(&root.join("site.key")),
        "--create-key",
        "--json",
    ]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let mut needles: Vec<String> = summary
        .planted_identifiers
        .iter()
        .filter(|p| p.len() >= 4)
        .cloned()
        .collect();
    for patient in fs::read_dir(&summary.dicom_dir).unwrap() {
        needles.push(patient.unwrap().file_name().to_string_lossy().into_owned());
    }
    let index = PackIndex::load(&out).unwrap().expect("index");
    let mut us_series = 0;
    for entry in &index.shards {
        let path = out.join(&entry.file);
        let bytes = fs::read(&path).unwrap();
        for needle in &needles {
            let found = bytes
                .windows(needle.len())
                .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()));
            assert!(!found, "{needle:?} found in {}", path.display());
        }
        let shard = ShardReader::open(&path).unwrap();
        for (i, rec) in shard.series.iter().enumerate() {
            if rec.modality != "US" {
                continue;
            }
            us_series += 1;
            assert_eq!((rec.rows, rec.cols), (96, 128), "cropped to the region");
            assert!(
                shard.pixel_bytes(i).unwrap().iter().all(|&v| v < 255),
                "no burned-in text pixel reaches the shard"
            );
        }
    }
    assert_eq!(us_series, 12);
}
