//! The phantom cohort read back by independent tools: pydicom (tests/reference/
//! phantom_pydicom_check.py) for voxel-exact HU and geometry, dcmtk's dcmdump for file validity,
//! and the truth CSVs checked against the DICOM geometry and the images.

use medtrain::phantom::{ct_volume, generate, PhantomConfig, PhantomSummary};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const PYDICOM_CHECK: &str = "tests/reference/phantom_pydicom_check.py";
/// Lung parenchyma is about −850 HU; a voxel at a nodule's centre is solid tissue blended with at
/// most half a voxel of lung, so it must be far above this.
const NODULE_CENTRE_MIN_HU: i16 = -600;

fn small_config(seed: u64) -> PhantomConfig {
    PhantomConfig {
        seed,
        patients: 4,
        size: 32,
        slices: 12,
        slice_thickness_mm: 2.5,
        radiographs: true,
    }
}

fn generate_into(cfg: &PhantomConfig) -> (tempfile::TempDir, PhantomSummary) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let summary = generate(cfg, dir.path()).expect("phantom generation");
    (dir, summary)
}

/// Every file under `root`, by relative path, with its bytes.
fn tree(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    for entry in walkdir::WalkDir::new(root) {
        let entry = entry.expect("walk");
        if entry.file_type().is_file() {
            let rel = entry.path().strip_prefix(root).unwrap().to_path_buf();
            files.insert(rel, fs::read(entry.path()).unwrap());
        }
    }
    files
}

/// Rows of a truth CSV as maps from header name to value.
fn csv(path: &Path) -> Vec<HashMap<String, String>> {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = text.lines();
    let header: Vec<String> = lines
        .next()
        .expect("header row")
        .split(',')
        .map(String::from)
        .collect();
    lines
        .map(|line| {
            let cells: Vec<&str> = line.split(',').collect();
            assert_eq!(cells.len(), header.len(), "{}: {line}", path.display());
            header
                .iter()
                .cloned()
                .zip(cells.into_iter().map(String::from))
                .collect()
        })
        .collect()
}

fn series_dirs(dicom: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = walkdir::WalkDir::new(dicom)
        .min_depth(2)
        .max_depth(2)
        .into_iter()
        .map(|e| e.unwrap().into_path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
        .collect();
    dirs.sort();
    dirs
}

fn python_read(kind: &str, source: &Path, out: &Path) -> serde_json::Value {
    // The interpreter scripts/test.sh prepares (MEDTRAIN_PYTHON: a venv with pydicom), else python3.
    let status = crate::common::python()
        .args([PYDICOM_CHECK, kind])
        .arg(source)
        .arg(out)
        .status()
        .expect("python3 must be installed (with pydicom and numpy: python3 -m pip install pydicom numpy)");
    assert!(
        status.success(),
        "{PYDICOM_CHECK} failed on {}; is pydicom installed?",
        source.display()
    );
    serde_json::from_str(&fs::read_to_string(out).unwrap()).unwrap()
}

fn f64s(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[test]
fn same_seed_same_bytes_other_seed_other_cohort() {
    let (a, summary) = generate_into(&small_config(7));
    let (b, _) = generate_into(&small_config(7));
    let (c, _) = generate_into(&small_config(8));
    let (ta, tb, tc) = (tree(a.path()), tree(b.path()), tree(c.path()));
    assert_eq!(
        ta.len() as u64,
        summary.files + 7 + 3 * summary.patients as u64,
        "DICOM files plus seven truth files, a lesion mask, an LIDC file and an RT Structure Set per patient"
    );
    assert_eq!(ta.keys().collect::<Vec<_>>(), tb.keys().collect::<Vec<_>>());
    for (path, bytes) in &ta {
        assert!(
            tb[path] == *bytes,
            "{} differs between two runs with one seed",
            path.display()
        );
    }
    let patients = Path::new("truth/patients.csv");
    assert_ne!(
        ta[patients], tc[patients],
        "another seed must give other patients"
    );
    let common: HashSet<_> = ta.keys().filter(|k| tc.contains_key(*k)).collect();
    assert_eq!(
        common.len(),
        7,
        "only the fixed truth file names coincide: {common:?}"
    );
    assert_eq!(
        summary.bytes,
        ta.iter()
            .filter(|(p, _)| p.starts_with("dicom"))
            .map(|(_, b)| b.len() as u64)
            .sum::<u64>()
    );
}

#[test]
fn refuses_a_non_empty_output_directory() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("dicom")).unwrap();
    fs::write(dir.path().join("dicom/leftover.dcm"), b"x").unwrap();
    let err = generate(&small_config(1), dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("dicom") && err.contains("already holds files"),
        "{err}"
    );
}

#[test]
fn pydicom_reads_every_ct_series_as_ct_volume_says() {
    let cfg = small_config(11);
    let (dir, summary) = generate_into(&cfg);
    let ct_dirs = series_dirs(&summary.dicom_dir, "CT_");
    assert_eq!(ct_dirs.len(), cfg.patients as usize);
    let by_patient: HashMap<String, u32> = (0..cfg.patients)
        .map(|p| (ct_volume(&cfg, p).patient_id, p))
        .collect();
    let mut seen = HashSet::new();
    for (k, series) in ct_dirs.iter().enumerate() {
        let read = python_read("ct", series, &dir.path().join(format!("ct{k}.json")));
        let patient_id = read["patient_id"].as_str().unwrap().to_string();
        let expected = ct_volume(&cfg, by_patient[&patient_id]);
        let shape: Vec<usize> = read["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(shape, [expected.slices, expected.rows, expected.cols]);
        let hu: Vec<i16> = read["hu"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap() as i16)
            .collect();
        let mismatches = hu.iter().zip(&expected.hu).filter(|(a, b)| a != b).count();
        assert_eq!(
            mismatches,
            0,
            "{}: {mismatches} voxels differ from ct_volume",
            series.display()
        );
        assert_eq!(read["series_instance_uid"], expected.series_uid.as_str());
        assert_eq!(
            read["private_patient_id"],
            patient_id.as_str(),
            "private tag carries the patient ID"
        );
        assert_eq!(read["padding_voxels"].as_u64().unwrap(), expected.padding_voxels);
        let origin = f64s(&read["origin"]);
        for a in 0..3 {
            assert!(
                (origin[a] - expected.origin[a]).abs() < 1e-6,
                "origin {origin:?} vs {:?}",
                expected.origin
            );
        }
        let spacing = f64s(&read["pixel_spacing"]);
        assert!((spacing[0] - expected.pixel_spacing[0]).abs() < 1e-9);
        assert!((read["slice_spacing"].as_f64().unwrap() - expected.slice_spacing).abs() < 1e-6);
        assert_eq!(read["sop_class_uid"], "1.2.840.10008.5.1.4.1.1.2");
        seen.extend(storage_traits(&read));
    }
    // Four patients exercise every quirk `pack` must survive, by quota.
    for t in [
        "explicit",
        "implicit",
        "signed",
        "unsigned",
        "bits12",
        "bits16",
        "padding",
        "no padding",
        "ascending",
        "descending",
        "scrambled",
    ] {
        assert!(seen.contains(t), "no CT series is {t}: {seen:?}");
    }
}

/// Names of the storage and ordering variants a series shows, from pydicom's reading.
fn storage_traits(read: &serde_json::Value) -> Vec<&'static str> {
    let numbers: Vec<i64> = read["instance_numbers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    let order = if numbers.windows(2).all(|w| w[0] < w[1]) {
        "ascending"
    } else if numbers.windows(2).all(|w| w[0] > w[1]) {
        "descending"
    } else {
        "scrambled"
    };
    let ts = read["transfer_syntax"].as_str().unwrap();
    vec![
        if ts == "1.2.840.10008.1.2" {
            "implicit"
        } else {
            "explicit"
        },
        if read["pixel_representation"] == 1 {
            "signed"
        } else {
            "unsigned"
        },
        if read["bits_stored"] == 12 {
            "bits12"
        } else {
            "bits16"
        },
        if read["has_padding"] == true {
            "padding"
        } else {
            "no padding"
        },
        order,
    ]
}

#[test]
fn radiographs_are_cr_and_dx_and_monochrome1_is_inverted() {
    let cfg = small_config(5);
    let (dir, summary) = generate_into(&cfg);
    let files: Vec<PathBuf> = ["CR_", "DX_"]
        .iter()
        .flat_map(|p| series_dirs(&summary.dicom_dir, p))
        .map(|d| fs::read_dir(d).unwrap().next().unwrap().unwrap().path())
        .collect();
    assert_eq!(files.len(), cfg.patients as usize);
    let mut kinds = HashSet::new();
    for (k, file) in files.iter().enumerate() {
        let read = python_read("radiograph", file, &dir.path().join(format!("rx{k}.json")));
        let photometric = read["photometric"].as_str().unwrap().to_string();
        kinds.insert(read["modality"].as_str().unwrap().to_string());
        kinds.insert(photometric.clone());
        assert!(read["max"].as_f64().unwrap() <= 4095.0 && read["bits_stored"] == 12);
        // Air beside the chest is the darkest region on display: stored 0 in MONOCHROME2,
        // full scale in MONOCHROME1.
        let corner_is_max = read["max"].as_f64().unwrap() >= 4000.0;
        let corner_is_min = read["min"].as_f64().unwrap() <= 100.0;
        match photometric.as_str() {
            "MONOCHROME1" => assert!(corner_is_max, "{read}"),
            "MONOCHROME2" => assert!(corner_is_min, "{read}"),
            other => panic!("unexpected photometric interpretation {other}"),
        }
    }
    for k in ["CR", "DX", "MONOCHROME1", "MONOCHROME2"] {
        assert!(kinds.contains(k), "no radiograph is {k}: {kinds:?}");
    }
}

#[test]
fn dcmdump_parses_ct_and_radiograph_files() {
    let cfg = small_config(11);
    let (_dir, summary) = generate_into(&cfg);
    let mut samples: Vec<PathBuf> = Vec::new();
    for prefix in ["CT_", "CR_", "DX_"] {
        for series in series_dirs(&summary.dicom_dir, prefix) {
            samples.push(fs::read_dir(series).unwrap().next().unwrap().unwrap().path());
        }
    }
    assert!(samples.len() >= 2 * cfg.patients as usize);
    for file in &samples {
        let output = Command::new("dcmdump")
            .arg(file)
            .output()
            .expect("dcmdump (dcmtk) must be installed: apt-get install dcmtk");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "dcmdump failed on {}: {stderr}",
            file.display()
        );
        assert!(
            !stderr.contains("E:") && !stderr.contains("W:"),
            "dcmdump complains about {}: {stderr}",
            file.display()
        );
        for tag in [
            "(0010,0020)",
            "(0010,0010)",
            "(0020,000d)",
            "(7fe0,0010)",
            "(0029,0010)",
        ] {
            assert!(stdout.contains(tag), "{} lacks {tag}", file.display());
        }
    }
}

#[test]
fn truth_tables_agree_with_dicom_geometry_and_images() {
    let cfg = PhantomConfig {
        seed: 3,
        patients: 6,
        size: 48,
        slices: 16,
        slice_thickness_mm: 2.5,
        radiographs: false,
    };
    let (dir, summary) = generate_into(&cfg);
    let truth = &summary.truth_dir;
    let lesions = csv(&truth.join("lesions.csv"));
    let by_sop = csv(&truth.join("slices_by_sop.csv"));
    let by_instance = csv(&truth.join("slices_by_instance.csv"));
    let patients = csv(&truth.join("patients.csv"));
    let series = csv(&truth.join("series.csv"));
    assert_eq!(
        by_sop.len(),
        (cfg.patients * cfg.slices) as usize,
        "every CT slice has a row"
    );
    assert!(!lesions.is_empty(), "about half of the patients have nodules");
    let sop_label: HashMap<&str, bool> = by_sop
        .iter()
        .map(|r| (r["SOPInstanceUID"].as_str(), r["Nodule"] == "1"))
        .collect();
    let volumes: HashMap<String, _> = (0..cfg.patients)
        .map(|p| ct_volume(&cfg, p))
        .map(|v| (v.patient_id.clone(), v))
        .collect();
    for (k, ct_dir) in series_dirs(&summary.dicom_dir, "CT_").iter().enumerate() {
        let read = python_read("ct", ct_dir, &dir.path().join(format!("t{k}.json")));
        let pid = read["patient_id"].as_str().unwrap();
        let z = f64s(&read["z_positions"]);
        let sops: Vec<&str> = read["sop_instance_uids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let instances: Vec<i64> = read["instance_numbers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        let mine: Vec<&HashMap<String, String>> = lesions.iter().filter(|l| l["PatientID"] == pid).collect();
        let labels: Vec<bool> = sops.iter().map(|s| sop_label[s]).collect();
        for (slice, &label) in labels.iter().enumerate() {
            let cut = mine.iter().any(|l| {
                let (cz, r): (f64, f64) = (l["CenterZMm"].parse().unwrap(), l["RadiusMm"].parse().unwrap());
                (z[slice] - cz).abs() < r
            });
            assert!(
                !label || cut,
                "{pid}: slice at z={} marked nodule but cuts no lesion sphere",
                z[slice]
            );
        }
        let volume = &volumes[pid];
        for l in &mine {
            let c: Vec<f64> = ["CenterXMm", "CenterYMm", "CenterZMm"]
                .iter()
                .map(|k| l[*k].parse().unwrap())
                .collect();
            let nearest = |v: f64, o: f64, s: f64| ((v - o) / s).round() as usize;
            let (kz, i, j) = (
                nearest(c[2], volume.origin[2], volume.slice_spacing),
                nearest(c[1], volume.origin[1], volume.pixel_spacing[0]),
                nearest(c[0], volume.origin[0], volume.pixel_spacing[1]),
            );
            assert!(
                labels[kz],
                "{pid}: the slice through lesion {} is not marked",
                l["LesionID"]
            );
            let hu = volume.hu[(kz * volume.rows + i) * volume.cols + j];
            assert!(
                hu > NODULE_CENTRE_MIN_HU,
                "{pid}: lesion {} centre voxel is {hu} HU",
                l["LesionID"]
            );
        }
        // The InstanceNumber table says the same as the SOP table, run by run.
        let label_of_instance: HashMap<i64, bool> =
            instances.iter().copied().zip(labels.iter().copied()).collect();
        for row in by_instance.iter().filter(|r| r["PatientID"] == pid) {
            let range = &row["InstanceNumber"];
            let (lo, hi) = match range.split_once('-') {
                Some((a, b)) => (a.parse::<i64>().unwrap(), b.parse::<i64>().unwrap()),
                None => (range.parse().unwrap(), range.parse().unwrap()),
            };
            for n in lo..=hi {
                assert_eq!(label_of_instance[&n], row["Nodule"] == "1", "{pid} instance {n}");
            }
        }
        let any = labels.iter().any(|&l| l);
        let patient = patients.iter().find(|r| r["PatientID"] == pid).unwrap();
        assert_eq!(patient["NoduleCount"].parse::<usize>().unwrap(), mine.len());
        let ct_row = series
            .iter()
            .find(|r| r["SeriesInstanceUID"] == read["series_instance_uid"].as_str().unwrap())
            .unwrap();
        assert_eq!(
            ct_row["Nodule"] == "1",
            any,
            "{pid}: series label vs slice labels"
        );
        assert_eq!(
            ct_row["StudyInstanceUID"],
            read["study_instance_uid"].as_str().unwrap()
        );
    }
}

#[test]
fn planted_identifiers_are_listed_and_really_planted() {
    let cfg = small_config(21);
    let (_dir, summary) = generate_into(&cfg);
    let listed: Vec<String> = fs::read_to_string(summary.truth_dir.join("planted_identifiers.txt"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(listed, summary.planted_identifiers);
    let mut haystack = Vec::new();
    for entry in walkdir::WalkDir::new(&summary.dicom_dir) {
        let entry = entry.unwrap();
        haystack.extend_from_slice(entry.path().to_string_lossy().as_bytes());
        if entry.file_type().is_file() {
            haystack.extend(fs::read(entry.path()).unwrap());
        }
    }
    for text in &listed {
        let needle = text.as_bytes();
        assert!(
            haystack.windows(needle.len()).any(|w| w == needle),
            "{text:?} is listed but not in the archive"
        );
    }
    // Every patient of the ground truth is among them by ID.
    let patients = csv(&summary.truth_dir.join("patients.csv"));
    for p in &patients {
        assert!(listed.contains(&p["PatientID"]), "{} not listed", p["PatientID"]);
    }
    assert!(
        listed.len() >= 15 * cfg.patients as usize / 2,
        "{} identifiers for {} patients",
        listed.len(),
        cfg.patients
    );
}

#[test]
fn death_risk_rises_with_nodule_size_heart_size_and_emphysema() {
    // Thin slabs keep this fast; survival depends on nodules, heart, lungs and age, not on the slab.
    let cfg = PhantomConfig {
        seed: 2026,
        patients: 160,
        size: 96,
        slices: 2,
        slice_thickness_mm: 2.5,
        radiographs: false,
    };
    let (_dir, summary) = generate_into(&cfg);
    let patients = csv(&summary.truth_dir.join("patients.csv"));
    let rate = |column: &str, keep: &dyn Fn(f64) -> bool| {
        let group: Vec<_> = patients
            .iter()
            .filter(|r| keep(r[column].parse().unwrap()))
            .collect();
        let deaths = group.iter().filter(|r| r["DeathEvent"] == "1").count();
        (deaths as f64 / group.len() as f64, group.len())
    };
    let (none, n_none) = rate("MaxNoduleDiameterMm", &|d| d == 0.0);
    let (large, n_large) = rate("MaxNoduleDiameterMm", &|d| d >= 14.0);
    assert!(n_none >= 60 && n_large >= 20, "group sizes {n_none}, {n_large}");
    assert!(
        large > none + 0.2,
        "death rate {large:.2} with nodules >= 14 mm vs {none:.2} without"
    );
    // The heart's size and the lungs' density, split at their medians.
    let median = |column: &str| {
        let mut v: Vec<f64> = patients.iter().map(|r| r[column].parse().unwrap()).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let ctr = median("CardiothoracicRatio");
    let (big_heart, _) = rate("CardiothoracicRatio", &|v| v >= ctr);
    let (small_heart, _) = rate("CardiothoracicRatio", &|v| v < ctr);
    assert!(
        big_heart > small_heart + 0.15,
        "death rate {big_heart:.2} with the larger hearts vs {small_heart:.2}"
    );
    let hu = median("LungDensityHu");
    let (emphysema, _) = rate("LungDensityHu", &|v| v < hu);
    let (healthy, _) = rate("LungDensityHu", &|v| v >= hu);
    assert!(
        emphysema > healthy + 0.15,
        "death rate {emphysema:.2} with the less dense lungs vs {healthy:.2}"
    );
    for r in &patients {
        let v: f64 = r["LungDensityHu"].parse().unwrap();
        assert!((-960.0..=-820.0).contains(&v), "lung density {v} HU");
    }
}
