//! `pack` end to end on a real DICOM phantom cohort: packed volumes read back through mmap equal the
//! phantom's analytic volumes; h5py reads the shards at the recorded offsets; bad inputs are
//! quarantined; re-runs are idempotent; an interrupted pack leaves nothing half-written; a wrong key
//! is refused; no planted identifier reaches any output byte.

use crate::common::{key_file, reference_script, run, s, tempdir};
use medtrain::deid::{IdKind, SiteKey};
use medtrain::dicom::series::ItemKind;
use medtrain::pack::index::PackIndex;
use medtrain::pack::reader::ShardReader;
use medtrain::phantom::{ct_volume, generate, PhantomConfig};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

fn small_cohort(patients: u32) -> PhantomConfig {
    PhantomConfig {
        seed: 7,
        patients,
        size: 32,
        slices: 12,
        slice_thickness_mm: 2.5,
        radiographs: true,
    }
}

struct Packed {
    _dir: tempfile::TempDir,
    root: PathBuf,
    dicom: PathBuf,
    out: PathBuf,
    key: PathBuf,
    cfg: PhantomConfig,
    planted: Vec<String>,
}

fn phantom(patients: u32) -> Packed {
    let dir = tempdir();
    let root = dir.path().to_path_buf();
    let cfg = small_cohort(patients);
    let summary = generate(&cfg, &root.join("phantom")).expect("phantom");
    Packed {
        root: root.clone(),
        dicom: summary.dicom_dir.clone(),
        out: root.join("pack"),
        key: key_file(&root, "site.key"),
        cfg,
        planted: summary.planted_identifiers.clone(),
        _dir: dir,
    }
}

fn pack(p: &Packed, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec![
        "pack",
        s(&p.dicom),
        "--out",
        s(&p.out),
        "--key",
        s(&p.key),
        "--json",
    ];
    args.extend_from_slice(extra);
    run(&args)
}

fn shards(out: &Path) -> Vec<ShardReader> {
    let index = PackIndex::load(out).unwrap().expect("index");
    index
        .shards
        .iter()
        .map(|e| ShardReader::open(&out.join(&e.file)).unwrap())
        .collect()
}

fn report(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("pack --json printed {stdout:?}: {e}"))
}

#[test]
fn packed_volumes_equal_the_analytic_phantom() {
    let p = phantom(4);
    let (code, stdout, stderr) = pack(&p, &["--shard-size", "16KiB"]);
    assert_eq!(code, 0, "{stderr}");
    let r = report(&stdout);
    assert_eq!(r["quarantined_entries"], 0);
    let key = SiteKey::load(&p.key).unwrap();
    let shards = shards(&p.out);
    assert!(shards.len() > 1, "a small shard size must give several shards");
    let mut seen = 0;
    let mut radiographs = 0;
    for patient in 0..p.cfg.patients {
        let truth = ct_volume(&p.cfg, patient);
        let patient_key = key.pseudonym(IdKind::Patient, &truth.patient_id);
        let series_key = key.pseudonym(IdKind::Series, &truth.series_uid);
        for shard in &shards {
            for (i, s) in shard.series.iter().enumerate() {
                if s.patient_key != patient_key {
                    continue;
                }
                if s.kind == ItemKind::Images {
                    radiographs += 1;
                    assert!(s.modality == "CR" || s.modality == "DX", "{}", s.modality);
                    continue;
                }
                assert_eq!(s.series_key, series_key);
                assert_eq!(
                    (s.n_slices as usize, s.rows as usize, s.cols as usize),
                    (truth.slices, truth.rows, truth.cols)
                );
                let hu = shard.volume_i16(i).unwrap();
                let diff = hu.iter().zip(&truth.hu).filter(|(a, b)| a != b).count();
                assert_eq!(
                    diff, 0,
                    "patient {patient}: {diff} voxels differ from the analytic volume"
                );
                assert_eq!(s.n_padding, truth.padding_voxels);
                assert_eq!(s.data_offset % 4096, 0, "pixel data must be page-aligned");
                let positions: Vec<f64> = shard.slices_of(i).iter().map(|r| r.position).collect();
                assert!(
                    positions.windows(2).all(|w| w[1] > w[0]),
                    "slices ascend along the normal"
                );
                assert!((s.slice_spacing - truth.slice_spacing).abs() < 1e-6);
                assert!(
                    (s.origin[2] - truth.origin[2]).abs() < 1e-6,
                    "origin is the lowest slice"
                );
                seen += 1;
            }
        }
    }
    assert_eq!(seen, p.cfg.patients, "one CT series per patient");
    assert_eq!(radiographs, p.cfg.patients, "one radiograph per patient");
}

#[test]
fn h5py_reads_the_pixels_at_the_recorded_offsets() {
    let p = phantom(2);
    let (code, _, stderr) = pack(&p, &[]);
    assert_eq!(code, 0, "{stderr}");
    for shard in shards(&p.out) {
        let out = reference_script("read_shard.py", &[s(&shard.path)]);
        let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
        assert_eq!(rows.len(), shard.series.len());
        for (i, row) in rows.iter().enumerate() {
            let ours = hex::encode(Sha256::digest(shard.pixel_bytes(i).unwrap()));
            assert_eq!(row["sha256"], ours, "series {i}: h5py reads other pixels");
            assert_eq!(row["offset"], shard.series[i].data_offset);
            assert_eq!(row["series_key"], shard.series[i].series_key);
        }
    }
}

fn quarantine(out: &Path) -> Vec<serde_json::Value> {
    let q: serde_json::Value =
        serde_json::from_slice(&fs::read(out.join("quarantine.json")).unwrap()).unwrap();
    q["entries"].as_array().unwrap().clone()
}

/// The multi-file (CT) series folders below the DICOM root, each list of files sorted, in path order.
fn ct_series(dicom: &Path) -> Vec<Vec<PathBuf>> {
    let mut series: Vec<Vec<PathBuf>> = Vec::new();
    for patient in fs::read_dir(dicom).unwrap() {
        for s in fs::read_dir(patient.unwrap().path()).unwrap() {
            let mut files: Vec<PathBuf> = fs::read_dir(s.unwrap().path())
                .unwrap()
                .map(|f| f.unwrap().path())
                .collect();
            files.sort();
            if files.len() > 1 {
                series.push(files);
            }
        }
    }
    series.sort();
    series
}

#[test]
fn corrupt_truncated_and_gapped_inputs_are_quarantined_and_the_rest_packed() {
    let p = phantom(4);
    // Three CT series damaged in three ways.
    let all_series = ct_series(&p.dicom);
    assert!(all_series.len() >= 3);
    // 1. truncated file
    let f = &all_series[0][3];
    let bytes = fs::read(f).unwrap();
    fs::write(f, &bytes[..bytes.len() / 2]).unwrap();
    // 2. a length field overwritten with garbage in the header
    let f = &all_series[1][2];
    let mut bytes = fs::read(f).unwrap();
    for b in &mut bytes[300..340] {
        *b = 0xFF;
    }
    fs::write(f, &bytes).unwrap();
    // 3. a missing slice in the middle: a gap
    fs::remove_file(middle_slice(&all_series[2])).unwrap();
    // and a stray non-DICOM file
    fs::write(p.dicom.join("README.txt"), "exported by the archive").unwrap();

    let (code, stdout, stderr) = pack(&p, &[]);
    assert_eq!(code, 1, "quarantined inputs give exit code 1: {stderr}");
    let r = report(&stdout);
    assert_eq!(r["not_dicom"], 1);
    let entries = quarantine(&p.out);
    let stages: BTreeSet<String> = entries
        .iter()
        .map(|e| e["stage"].as_str().unwrap().to_string())
        .collect();
    assert!(stages.contains("read"), "{entries:?}");
    assert!(stages.contains("geometry"), "{entries:?}");
    assert!(
        entries
            .iter()
            .any(|e| e["reason"].as_str().unwrap().contains("gap")),
        "{entries:?}"
    );
    for e in &entries {
        assert!(!e["reason"].as_str().unwrap().is_empty());
        assert!(!e["files"].as_array().unwrap().is_empty());
    }
    // The undamaged patient's CT and every radiograph were packed.
    let cts: usize = shards(&p.out)
        .iter()
        .map(|s| s.series.iter().filter(|r| r.kind == ItemKind::Volume).count())
        .sum();
    assert_eq!(cts, 1, "{stdout}");
}

/// The file whose slice lies in the middle of the series (by ImagePositionPatient).
fn middle_slice(files: &[PathBuf]) -> PathBuf {
    let mut with_z: Vec<(f64, PathBuf)> = files
        .iter()
        .map(|f| {
            let obj = dicom_object::open_file(f).unwrap();
            let z = obj
                .element(dicom_dictionary_std::tags::IMAGE_POSITION_PATIENT)
                .unwrap()
                .to_multi_float64()
                .unwrap()[2];
            (z, f.clone())
        })
        .collect();
    with_z.sort_by(|a, b| a.0.total_cmp(&b.0));
    with_z[with_z.len() / 2].1.clone()
}

#[test]
fn rerun_is_idempotent_and_a_wrong_key_is_refused() {
    let p = phantom(3);
    let (code, first, stderr) = pack(&p, &[]);
    assert_eq!(code, 0, "{stderr}");
    let index_before = fs::read(p.out.join("index.json")).unwrap();
    let (code, second, stderr) = pack(&p, &[]);
    assert_eq!(code, 0, "{stderr}");
    let (first, second) = (report(&first), report(&second));
    assert_eq!(second["items_packed"], 0);
    assert_eq!(second["shards_written"], 0);
    assert_eq!(second["items_already_packed"], first["items_packed"]);
    assert_eq!(fs::read(p.out.join("index.json")).unwrap(), index_before);

    let other = key_file(&p.root, "other.key");
    let (code, _, stderr) = run(&["pack", s(&p.dicom), "--out", s(&p.out), "--key", s(&other)]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("site key mismatch"), "{stderr}");
}

#[test]
fn interrupted_pack_resumes_to_the_same_result() {
    let p = phantom(6);
    // Uninterrupted reference run.
    let reference = p.root.join("reference");
    let (code, _, stderr) = run(&[
        "pack",
        s(&p.dicom),
        "--out",
        s(&reference),
        "--key",
        s(&p.key),
        "--shard-size",
        "4KiB",
    ]);
    assert_eq!(code, 0, "{stderr}");
    // Killed run: SIGKILL as soon as the first shard is committed.
    let mut child = crate::common::medtrain()
        .args([
            "pack",
            s(&p.dicom),
            "--out",
            s(&p.out),
            "--key",
            s(&p.key),
            "--shard-size",
            "4KiB",
        ])
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !p.out.join("index.json").exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let reference_shards = PackIndex::load(&reference).unwrap().unwrap().shards.len();
    let killed_shards = PackIndex::load(&p.out).unwrap().map_or(0, |i| i.shards.len());
    assert!(
        killed_shards < reference_shards,
        "the kill must land before the pack finished"
    );
    // What the killed run left: every indexed shard verifies; partial files are not shards.
    let (code, stdout, stderr) = run(&["inspect", s(&p.out), "--verify", "--json"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    // Leftovers of a crash in the middle of a write.
    fs::write(p.out.join("shard-0000-000777.h5.partial"), b"half").unwrap();
    fs::write(p.out.join("shard-0000-000778.h5"), b"never indexed").unwrap();
    let (code, _, stderr) = pack(&p, &["--shard-size", "4KiB"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(!p.out.join("shard-0000-000777.h5.partial").exists());
    assert!(!p.out.join("shard-0000-000778.h5").exists());
    let sources = |dir: &Path| -> BTreeSet<String> {
        PackIndex::load(dir)
            .unwrap()
            .unwrap()
            .shards
            .into_iter()
            .flat_map(|s| s.sources)
            .collect()
    };
    assert_eq!(sources(&p.out), sources(&reference));
    // The same pixels, whatever the shard boundaries.
    let pixels = |dir: &Path| -> BTreeSet<(String, String)> {
        shards(dir)
            .iter()
            .flat_map(|sh| {
                (0..sh.series.len())
                    .map(|i| {
                        (
                            sh.series[i].source_hash.clone(),
                            hex::encode(Sha256::digest(sh.pixel_bytes(i).unwrap())),
                        )
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    assert_eq!(pixels(&p.out), pixels(&reference));
}

#[test]
fn no_planted_identifier_reaches_any_output() {
    let p = phantom(3);
    // Include a quarantined file so the quarantine report is non-trivial.
    let victim = ct_series(&p.dicom)[0][0].clone();
    let bytes = fs::read(&victim).unwrap();
    fs::write(&victim, &bytes[..bytes.len() - 100]).unwrap();
    let (code, stdout, stderr) = pack(&p, &[]);
    assert_eq!(code, 1, "{stderr}");
    let mut needles: Vec<String> = p.planted.iter().filter(|s| s.len() >= 4).cloned().collect();
    // Folder names below the DICOM root carry patient IDs.
    for patient in fs::read_dir(&p.dicom).unwrap() {
        needles.push(patient.unwrap().file_name().to_string_lossy().into_owned());
    }
    assert!(needles.len() > 10, "{needles:?}");
    let mut outputs: Vec<(String, Vec<u8>)> = vec![("stdout".into(), stdout.into_bytes())];
    for f in fs::read_dir(&p.out).unwrap() {
        let path = f.unwrap().path();
        outputs.push((path.display().to_string(), fs::read(&path).unwrap()));
    }
    for (name, bytes) in &outputs {
        for needle in &needles {
            let found = bytes
                .windows(needle.len())
                .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()));
            assert!(!found, "{needle:?} found in {name}");
        }
    }
}

/// A series written and read back by tests/reference/write_series.py (pydicom): the slices in
/// ascending z with pydicom's rescale and `apply_modality_lut` values.
pub(crate) struct WrittenSeries {
    pub rescale_differs: bool,
    pub slices: Vec<serde_json::Value>,
}

impl WrittenSeries {
    /// pydicom's modality-LUT values of every slice, in ascending z, row major.
    pub fn values(&self) -> Vec<f64> {
        self.slices
            .iter()
            .flat_map(|s| {
                s["values"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap())
            })
            .collect()
    }
}

pub(crate) fn write_series(dir: &Path, args: &[&str]) -> WrittenSeries {
    let mut all = vec![s(dir)];
    all.extend_from_slice(args);
    let out = reference_script("write_series.py", &all);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    WrittenSeries {
        rescale_differs: v["rescale_differs"].as_bool().unwrap(),
        slices: v["slices"].as_array().unwrap().clone(),
    }
}

/// Packs `input` into `out` with a new key; (exit code, stdout, stderr).
pub(crate) fn pack_dir(input: &Path, out: &Path, key: &Path) -> (i32, String, String) {
    run(&[
        "pack",
        s(input),
        "--out",
        s(out),
        "--key",
        s(key),
        "--create-key",
        "--json",
    ])
}

#[test]
fn a_lone_ct_image_without_orientation_packs_as_2d_and_a_series_without_it_is_quarantined() {
    let dir = tempdir();
    let input = dir.path().join("in");
    let lone = write_series(
        &input.join("lone"),
        &["--modality", "CT", "--slices", "1", "--no-orientation"],
    );
    assert!(!lone.slices[0]["has_orientation"].as_bool().unwrap());
    let three = write_series(
        &input.join("three"),
        &["--modality", "CT", "--slices", "3", "--no-orientation"],
    );
    assert_eq!(three.slices.len(), 3);
    let out = dir.path().join("pack");
    let (code, stdout, stderr) = pack_dir(&input, &out, &dir.path().join("site.key"));
    assert_eq!(code, 1, "the 3-slice series is quarantined: {stdout}\n{stderr}");
    let r = report(&stdout);
    assert_eq!(r["items_packed"], 1, "{stdout}");

    // The lone image: one 2D item, orientation unknown (NaN), HU equal to pydicom's.
    let shards = shards(&out);
    let series: Vec<(usize, usize)> = shards
        .iter()
        .enumerate()
        .flat_map(|(k, sh)| (0..sh.series.len()).map(move |i| (k, i)))
        .collect();
    assert_eq!(series.len(), 1);
    let (k, i) = series[0];
    let rec = &shards[k].series[i];
    assert_eq!(rec.kind, ItemKind::Images);
    assert_eq!(rec.modality, "CT");
    assert_eq!(rec.transform, "hu-linear");
    assert_eq!((rec.n_slices, rec.rows, rec.cols), (1, 8, 6));
    assert!(
        rec.orientation.iter().all(|v| v.is_nan()),
        "{:?}",
        rec.orientation
    );
    assert_eq!(rec.pixel_spacing, [0.7, 0.8]);
    let hu: Vec<f64> = shards[k]
        .volume_i16(i)
        .unwrap()
        .iter()
        .map(|&v| v as f64)
        .collect();
    assert_eq!(
        hu,
        lone.values(),
        "packed HU differ from pydicom's apply_modality_lut"
    );

    // Three slices without the tag cannot be ordered: quarantined with the reason.
    let entries = quarantine(&out);
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["stage"], "geometry");
    assert_eq!(
        entries[0]["reason"],
        "slice without ImageOrientationPatient: cannot order the volume"
    );
    assert_eq!(entries[0]["files"].as_array().unwrap().len(), 3);
}

/// Writes `catalog split` of `catalog` with `filter` (all patients in `train`) to `out`.
fn split_all_train(catalog: &Path, filter: &str, out: &Path) -> medtrain::catalog::split::Manifest {
    let (code, stdout, stderr) = run(&[
        "catalog",
        "split",
        s(catalog),
        filter,
        "--out",
        s(out),
        "--ratios",
        "train=1",
    ]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    medtrain::catalog::split::Manifest::load(out).unwrap()
}

#[test]
fn training_refuses_palette_colour_normalises_a_signed_mr_series_and_reads_a_lone_ct_image() {
    use medtrain::data::{DataConfig, DataError, Dataset};
    let dir = tempdir();
    let input = dir.path().join("in");
    // Signed MR pixels are stored as int16 like HU, but they are not HU: never windowed as such.
    let mr = write_series(
        &input.join("mr"),
        &[
            "--modality",
            "MR",
            "--slices",
            "3",
            "--signed",
            "--slopes",
            "2,2,2",
        ],
    );
    assert!(!mr.rescale_differs);
    write_series(
        &input.join("ct"),
        &["--modality", "CT", "--slices", "1", "--no-orientation"],
    );
    // pydicom's PALETTE COLOR ultrasound image: packed, but its pixels are indices, not intensities.
    fs::create_dir_all(input.join("us")).unwrap();
    fs::copy(
        crate::common::pydicom_file("examples_palette.dcm"),
        input.join("us/examples_palette.dcm"),
    )
    .unwrap();
    let out = dir.path().join("pack");
    let key = dir.path().join("site.key");
    let (code, stdout, stderr) = pack_dir(&input, &out, &key);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let shards = shards(&out);
    let find = |modality: &str| {
        shards
            .iter()
            .flat_map(|sh| sh.series.iter())
            .find(|r| r.modality == modality)
            .unwrap_or_else(|| panic!("the {modality} series is packed"))
            .clone()
    };
    let mr_rec = find("MR");
    assert_eq!(
        (mr_rec.dtype.as_str(), mr_rec.transform.as_str()),
        ("i16", "none")
    );
    let us_rec = find("US");
    // Its Sequence of Ultrasound Regions overruns the 800 x 350 image (rows 60-518, columns 120-800):
    // the crop is the region's intersection with the image.
    assert_eq!(us_rec.presentation.crop, Some([120, 60, 799, 349]));
    assert_eq!((us_rec.rows, us_rec.cols), (290, 680));

    let catalog = dir.path().join("catalog");
    let (code, o, e) = run(&["catalog", "build", s(&out), "--out", s(&catalog)]);
    assert_eq!(code, 0, "{o}\n{e}");
    let cfg = DataConfig::default();

    // Every series: the PALETTE COLOR one is refused at open, naming the series and the reason.
    let all = split_all_train(&catalog, "", &dir.path().join("all.h5"));
    match Dataset::open(&catalog, &all, "train", &cfg) {
        Err(DataError::Unsupported { series, reason }) => {
            assert_eq!(series, us_rec.series_key);
            assert!(
                reason.contains("modality US") && reason.contains("PALETTE COLOR pixels are indices"),
                "{reason}"
            );
        }
        Err(other) => panic!("expected the PALETTE COLOR series refused, got {other}"),
        Ok(ds) => panic!("a PALETTE COLOR series was accepted ({} samples)", ds.len()),
    }

    // MR: z-scored per series (mean 0 over the series, negative values), not an HU window in [0, 1].
    let mr_split = split_all_train(&catalog, "modality = 'MR'", &dir.path().join("mr.h5"));
    let mr_cfg = DataConfig {
        size: vec![8, 6],
        ..DataConfig::default()
    };
    let ds = Dataset::open(&catalog, &mr_split, "train", &mr_cfg).unwrap();
    assert_eq!(ds.len(), 3);
    let mut all_values = Vec::new();
    let mut sample = vec![f32::NAN; ds.sample_len()];
    for i in 0..ds.len() {
        ds.load(i, None, &mut sample).unwrap();
        all_values.extend(sample.iter().map(|&v| v as f64));
    }
    let mean = all_values.iter().sum::<f64>() / all_values.len() as f64;
    assert!(mean.abs() < 1e-5, "MR mean {mean}");
    assert!(
        all_values.iter().any(|&v| v < -0.5),
        "MR values look windowed: {all_values:?}"
    );

    // CT only: the lone 2D image (orientation unknown) is one slice sample and loads.
    let ct = split_all_train(&catalog, "modality = 'CT'", &dir.path().join("ct.h5"));
    let ds = Dataset::open(&catalog, &ct, "train", &cfg).unwrap();
    assert_eq!(ds.len(), 1);
    let mut sample = vec![f32::NAN; ds.sample_len()];
    ds.load(0, None, &mut sample).unwrap();
    assert!(sample.iter().all(|v| v.is_finite()));
}

#[test]
fn an_mr_series_with_per_slice_rescale_is_quarantined_and_equal_rescale_packs_like_pydicom() {
    let dir = tempdir();
    let input = dir.path().join("in");
    let differ = write_series(
        &input.join("differ"),
        &["--modality", "MR", "--slices", "3", "--slopes", "1,1,2"],
    );
    assert!(
        differ.rescale_differs,
        "pydicom reads the same rescale on every slice"
    );
    let same = write_series(
        &input.join("same"),
        &[
            "--modality",
            "MR",
            "--slices",
            "3",
            "--slopes",
            "2,2,2",
            "--intercepts",
            "5,5,5",
        ],
    );
    assert!(!same.rescale_differs);
    let out = dir.path().join("pack");
    let (code, stdout, stderr) = pack_dir(&input, &out, &dir.path().join("site.key"));
    assert_eq!(code, 1, "the differing series is quarantined: {stdout}\n{stderr}");

    let entries = quarantine(&out);
    assert_eq!(entries.len(), 1, "{entries:?}");
    let reason = entries[0]["reason"].as_str().unwrap();
    assert!(
        reason
            .starts_with("RescaleSlope/Intercept differ across slices (slice 3 of 3: 2/0 vs 1/0 on slice 1)"),
        "{reason}"
    );
    assert_eq!(entries[0]["files"].as_array().unwrap().len(), 3);

    // Equal rescale: stored values and the recorded rescale give pydicom's apply_modality_lut.
    let shards = shards(&out);
    let packed: Vec<(usize, usize)> = shards
        .iter()
        .enumerate()
        .flat_map(|(k, sh)| (0..sh.series.len()).map(move |i| (k, i)))
        .collect();
    assert_eq!(packed.len(), 1);
    let (k, i) = packed[0];
    let rec = &shards[k].series[i];
    assert_eq!((rec.modality.as_str(), rec.kind), ("MR", ItemKind::Volume));
    assert_eq!(rec.transform, "none");
    assert_eq!((rec.rescale_slope, rec.rescale_intercept), (2.0, 5.0));
    let values: Vec<f64> = shards[k]
        .volume_u16(i)
        .unwrap()
        .iter()
        .map(|&v| v as f64 * rec.rescale_slope + rec.rescale_intercept)
        .collect();
    assert_eq!(values, same.values());
}

/// Burned-in text is patient data in the pixels: a series whose BurnedInAnnotation is YES (written with
/// pydicom) is quarantined with the reason, and none of its pixels reaches a shard; the same series
/// with NO, and one without the attribute, pack.
#[test]
fn a_series_with_burned_in_annotation_is_quarantined_and_never_packed() {
    let dir = tempdir();
    let input = dir.path().join("in");
    for (name, flag) in [("yes", Some("YES")), ("no", Some("NO")), ("absent", None)] {
        let mut args = vec!["--modality", "MR", "--slices", "2"];
        if let Some(flag) = flag {
            args.extend(["--burned-in", flag]);
        }
        write_series(&input.join(name), &args);
    }
    let out = dir.path().join("pack");
    let (code, stdout, stderr) = pack_dir(&input, &out, &dir.path().join("site.key"));
    assert_eq!(code, 1, "the annotated series is quarantined: {stdout}\n{stderr}");
    let entries = quarantine(&out);
    assert_eq!(entries.len(), 1, "{entries:?}");
    let reason = entries[0]["reason"].as_str().unwrap();
    assert!(reason.starts_with("BurnedInAnnotation is YES"), "{reason}");
    assert_eq!(entries[0]["files"].as_array().unwrap().len(), 2);
    let packed: Vec<u8> = shards(&out)
        .iter()
        .flat_map(|sh| sh.series.iter().map(|r| r.presentation.burned_in_annotation))
        .collect();
    // NO (0) and absent (2) are packed; YES (1) never is.
    let mut sorted = packed.clone();
    sorted.sort();
    assert_eq!(sorted, vec![0, 2], "{packed:?}");
}
