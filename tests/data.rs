//! The training data path on a packed phantom cohort: samples equal the HU that the HDF5 library
//! reads (`ShardReader`) windowed; the recorded affine points at the voxels a sample was cut from;
//! labels agree with the phantom's truth CSVs; augmentation is a function of the seed; the loader
//! keeps order, pads, and bounds its queue; bad shards are refused by name.

use crate::common::{key_file, run, s, tempdir};
use medtrain::catalog::build::build;
use medtrain::catalog::columns::{cell_text, Level};
use medtrain::catalog::labels::{import, EventWithin, ImportSpec};
use medtrain::catalog::split::{plan, Manifest, SplitSpec};
use medtrain::catalog::view::Catalog;
use medtrain::data::{sample_seed, AugmentConfig, DataConfig, Dataset, Loader, SampleMode};
use medtrain::deid::{IdKind, SiteKey};
use medtrain::pack::reader::ShardReader;
use medtrain::phantom::{generate, PhantomConfig};
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const SIZE: u32 = 16;
const SLICES: u32 = 6;
const DEATH_HORIZON_DAYS: f64 = 1826.0;

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    catalog: PathBuf,
    truth: PathBuf,
    key: SiteKey,
}

/// Phantom → `medtrain pack` → catalog → the demo's label sets (plus a partial one).
fn fixture(patients: u32) -> Fixture {
    let dir = tempdir();
    let root = dir.path().to_path_buf();
    let cfg = PhantomConfig {
        seed: 31,
        patients,
        size: SIZE,
        slices: SLICES,
        slice_thickness_mm: 2.5,
        radiographs: true,
    };
    let summary = generate(&cfg, &root.join("phantom")).expect("phantom");
    let keyf = key_file(&root, "site.key");
    let pack = root.join("pack");
    let (code, _, err) = run(&[
        "pack",
        s(&summary.dicom_dir),
        "--out",
        s(&pack),
        "--key",
        s(&keyf),
    ]);
    assert_eq!(code, 0, "pack failed: {err}");
    let catalog = root.join("catalog");
    build(&[pack], &catalog).expect("catalog build");
    let key = SiteKey::load(&keyf).unwrap();
    let truth = summary.truth_dir.clone();
    let spec = |csv: &Path, name: &str| ImportSpec {
        csv: csv.to_path_buf(),
        name: name.into(),
        ..ImportSpec::default()
    };
    import(
        &catalog,
        &key,
        &spec(&truth.join("slices_by_instance.csv"), "nodule_slices"),
    )
    .unwrap();
    let mut series = spec(&truth.join("series.csv"), "series_labels");
    series.ignore = vec!["Modality".into(), "StudyInstanceUID".into()];
    import(&catalog, &key, &series).unwrap();
    let mut outcome = spec(&truth.join("patients.csv"), "outcome");
    outcome.event_within.push(EventWithin {
        name: "death_5y".into(),
        event: "DeathEvent".into(),
        time: "FollowUpDays".into(),
        days: DEATH_HORIZON_DAYS,
    });
    import(&catalog, &key, &outcome).unwrap();
    // A label set that covers the first patient only: every other patient is absent.
    let first = read_csv(&truth.join("patients.csv"))[0]["PatientID"].clone();
    fs::write(root.join("partial.csv"), format!("PatientID,Score\n{first},3\n")).unwrap();
    import(&catalog, &key, &spec(&root.join("partial.csv"), "partial")).unwrap();
    Fixture {
        _dir: dir,
        root,
        catalog,
        truth,
        key,
    }
}

fn manifest(fx: &Fixture, filter: &str, level: Level) -> Manifest {
    let cat = Catalog::open(&fx.catalog).unwrap();
    plan(
        &cat,
        &SplitSpec {
            filter: filter.into(),
            level,
            splits: vec![("train".into(), 1.0)],
            stratify: None,
            seed: 1,
        },
    )
    .unwrap()
}

fn read_csv(path: &Path) -> Vec<HashMap<String, String>> {
    let text = fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    lines
        .map(|l| {
            header
                .iter()
                .map(|h| h.to_string())
                .zip(l.split(',').map(String::from))
                .collect()
        })
        .collect()
}

/// HU of every CT series as the HDF5 library reads them, by catalog series row.
fn reference_volumes(catalog: &Path) -> HashMap<u32, (Vec<i16>, [usize; 3])> {
    let cat = Catalog::open(catalog).unwrap();
    let shard = cat.col_u32(Level::Series, "shard").unwrap();
    let shard_row = cat.col_u32(Level::Series, "shard_row").unwrap();
    let mut readers = HashMap::new();
    let mut out = HashMap::new();
    for row in 0..cat.rows(Level::Series) {
        let r = readers.entry(shard[row]).or_insert_with(|| {
            ShardReader::open(Path::new(&cat.state.shards[shard[row] as usize].path)).unwrap()
        });
        let i = shard_row[row] as usize;
        if let Ok(hu) = r.volume_i16(i) {
            let s = &r.series[i];
            out.insert(
                row as u32,
                (
                    hu.to_vec(),
                    [s.n_slices as usize, s.rows as usize, s.cols as usize],
                ),
            );
        }
    }
    out
}

fn window(hu: f32, w: [f32; 2]) -> f32 {
    ((hu - (w[0] - w[1] / 2.0)) / w[1]).clamp(0.0, 1.0)
}

fn voxel(vol: &(Vec<i16>, [usize; 3]), k: i64, r: i64, c: i64) -> f32 {
    let [n, rows, cols] = vol.1;
    if k < 0 || r < 0 || c < 0 || k >= n as i64 || r >= rows as i64 || c >= cols as i64 {
        return -1024.0;
    }
    vol.0[(k as usize * rows + r as usize) * cols + c as usize] as f32
}

/// Trilinear interpolation written out over the 8 corners (bilinear when z is an integer).
fn interpolate(vol: &(Vec<i16>, [usize; 3]), p: [f64; 3]) -> f64 {
    let f = p.map(f64::floor);
    let mut v = 0.0;
    for corner in 0..8 {
        let mut weight = 1.0;
        let mut at = [0i64; 3];
        for a in 0..3 {
            let up = (corner >> a) & 1 == 1;
            let t = p[a] - f[a];
            weight *= if up { t } else { 1.0 - t };
            at[a] = f[a] as i64 + up as i64;
        }
        if weight != 0.0 {
            v += weight * voxel(vol, at[0], at[1], at[2]) as f64;
        }
    }
    v
}

fn apply(m: &[[f64; 4]; 3], z: usize, y: usize, x: usize) -> [f64; 3] {
    [0, 1, 2].map(|i| m[i][0] * z as f64 + m[i][1] * y as f64 + m[i][2] * x as f64 + m[i][3])
}

const WINDOWS: [[f32; 2]; 2] = [[-600.0, 1500.0], [40.0, 400.0]];

#[test]
fn identity_samples_equal_the_hdf5_volumes_windowed() {
    let fx = fixture(2);
    let refs = reference_volumes(&fx.catalog);
    let slices = manifest(&fx, "modality = 'CT'", Level::Slice);
    for (mode, context) in [(SampleMode::Slice, 0), (SampleMode::Slice25d, 1)] {
        let cfg = DataConfig {
            mode,
            context,
            size: vec![SIZE, SIZE],
            windows: WINDOWS.to_vec(),
            ..DataConfig::default()
        };
        let ds = Dataset::open(&fx.catalog, &slices, "train", &cfg).unwrap();
        assert_eq!(ds.len(), 2 * SLICES as usize, "one sample per CT slice");
        let neighbours = 2 * context as i64 + 1;
        assert_eq!(ds.channels() as i64, neighbours * 2);
        let mut out = vec![0f32; ds.sample_len()];
        let mut ends = 0;
        for i in 0..ds.len() {
            let meta = ds.meta(i);
            let t = ds.load(i, None, &mut out).unwrap();
            let k = meta.slice_index as i64;
            assert_eq!(
                t.affine,
                [[0., 0., 0., k as f64], [0., 1., 0., 0.], [0., 0., 1., 0.]]
            );
            let vol = &refs[&meta.series_row];
            let n = vol.1[0] as i64;
            ends += (k == 0 || k == n - 1) as usize;
            let plane = (SIZE * SIZE) as usize;
            for j in 0..neighbours {
                let kk = (k + j - context as i64).clamp(0, n - 1);
                for (wi, w) in WINDOWS.iter().enumerate() {
                    let got = &out[(j as usize * 2 + wi) * plane..][..plane];
                    for (p, &g) in got.iter().enumerate() {
                        let want = window(
                            voxel(vol, kk, (p / SIZE as usize) as i64, (p % SIZE as usize) as i64),
                            *w,
                        );
                        assert_eq!(g, want, "{mode:?} sample {i} slice {kk} window {wi} pixel {p}");
                    }
                }
            }
        }
        assert_eq!(ends, 4, "first and last slices of both series are sampled");
    }
    // 3D: a crop and a resampled volume at the native extent are the whole volume.
    let series = manifest(&fx, "modality = 'CT'", Level::Series);
    for mode in [SampleMode::Crop3d, SampleMode::Volume3d] {
        let cfg = DataConfig {
            mode,
            size: vec![SLICES, SIZE, SIZE],
            ..DataConfig::default()
        };
        let ds = Dataset::open(&fx.catalog, &series, "train", &cfg).unwrap();
        assert_eq!(ds.len(), 2);
        let mut out = vec![0f32; ds.sample_len()];
        for i in 0..ds.len() {
            let t = ds.load(i, None, &mut out).unwrap();
            assert_eq!(t.affine, [[1., 0., 0., 0.], [0., 1., 0., 0.], [0., 0., 1., 0.]]);
            let vol = &refs[&ds.meta(i).series_row];
            let want: Vec<f32> = vol.0.iter().map(|&h| window(h as f32, WINDOWS[0])).collect();
            assert!(out == want, "{mode:?} sample {i} differs from the volume");
        }
    }
}

#[test]
fn recorded_affines_point_at_the_source_voxels() {
    let fx = fixture(2);
    let refs = reference_volumes(&fx.catalog);
    let slices = manifest(&fx, "modality = 'CT'", Level::Slice);
    let w = WINDOWS[0];
    // Flips only: every output pixel lands on an integer source voxel.
    let cfg = DataConfig {
        size: vec![SIZE, SIZE],
        augment: AugmentConfig {
            flip_lr: true,
            flip_ud: true,
            ..AugmentConfig::default()
        },
        ..DataConfig::default()
    };
    let ds = Dataset::open(&fx.catalog, &slices, "train", &cfg).unwrap();
    let mut out = vec![0f32; ds.sample_len()];
    let mut flipped = [0; 2];
    for i in 0..ds.len() {
        for seed in 0..4 {
            let t = ds.load(i, Some(sample_seed(5, seed, i)), &mut out).unwrap();
            flipped[0] += t.flips[1] as usize;
            flipped[1] += t.flips[2] as usize;
            let vol = &refs[&t.series_row];
            for (p, &g) in out.iter().enumerate() {
                let (y, x) = (p / SIZE as usize, p % SIZE as usize);
                let src = apply(&t.affine, 0, y, x);
                let at = src.map(|v| v.round());
                assert!(src.iter().zip(&at).all(|(a, b)| (a - b).abs() < 1e-9), "{src:?}");
                let hu = voxel(vol, at[0] as i64, at[1] as i64, at[2] as i64);
                assert_eq!(g, window(hu, w), "sample {i} seed {seed} pixel ({y}, {x})");
            }
        }
    }
    assert!(flipped.iter().all(|&f| f > 4), "flips drawn: {flipped:?}");

    // Rotation, zoom, shift and a new spacing (2D and 3D): the value is the interpolated source.
    let full = AugmentConfig {
        flip_lr: true,
        flip_ud: true,
        rotate_deg: 25.0,
        scale: 0.2,
        translate_mm: 4.0,
        intensity: 0.0,
    };
    let series = manifest(&fx, "modality = 'CT'", Level::Series);
    let cases = [
        (SampleMode::Slice, vec![12, 20], Some(vec![1.1, 0.9]), &slices),
        (
            SampleMode::Crop3d,
            vec![4, 10, 12],
            Some(vec![2.0, 1.0, 1.3]),
            &series,
        ),
    ];
    for (mode, size, spacing, m) in cases {
        let cfg = DataConfig {
            mode,
            size: size.clone(),
            spacing_mm: spacing,
            augment: full.clone(),
            ..DataConfig::default()
        };
        let ds = Dataset::open(&fx.catalog, m, "train", &cfg).unwrap();
        let [d, h, wd] = ds.extent().map(|n| n as usize);
        let mut out = vec![0f32; ds.sample_len()];
        let mut inside = 0;
        for i in 0..ds.len() {
            let t = ds.load(i, Some(sample_seed(9, 0, i)), &mut out).unwrap();
            let vol = &refs[&t.series_row];
            for z in 0..d {
                for y in 0..h {
                    for x in 0..wd {
                        let src = apply(&t.affine, z, y, x);
                        inside += (src[1] >= 0.0 && src[1] <= (SIZE - 1) as f64) as usize;
                        let want = window(interpolate(vol, src) as f32, w);
                        let got = out[(z * h + y) * wd + x];
                        assert!(
                            (got - want).abs() < 1e-4,
                            "{mode:?} {i} ({z},{y},{x}): {got} vs {want}"
                        );
                    }
                }
            }
        }
        assert!(inside > 0);
    }
}

#[test]
fn flip_lr_mirrors_the_unflipped_sample() {
    let fx = fixture(1);
    let slices = manifest(&fx, "modality = 'CT'", Level::Slice);
    let cfg = DataConfig {
        size: vec![SIZE, SIZE],
        windows: WINDOWS.to_vec(),
        augment: AugmentConfig {
            flip_lr: true,
            ..AugmentConfig::default()
        },
        ..DataConfig::default()
    };
    let ds = Dataset::open(&fx.catalog, &slices, "train", &cfg).unwrap();
    let n = SIZE as usize;
    let (mut plain, mut aug) = (vec![0f32; ds.sample_len()], vec![0f32; ds.sample_len()]);
    let mut seen = [0; 2];
    for seed in 0..12u64 {
        let i = seed as usize % ds.len();
        ds.load(i, None, &mut plain).unwrap();
        let t = ds.load(i, Some(seed), &mut aug).unwrap();
        seen[t.flips[2] as usize] += 1;
        assert!(!t.flips[0] && !t.flips[1]);
        for c in 0..2 {
            for y in 0..n {
                for x in 0..n {
                    let from = if t.flips[2] { n - 1 - x } else { x };
                    assert_eq!(aug[(c * n + y) * n + x], plain[(c * n + y) * n + from]);
                }
            }
        }
    }
    assert!(seen[0] > 0 && seen[1] > 0, "both outcomes drawn: {seen:?}");
}

#[test]
fn targets_agree_with_the_phantom_truth() {
    let fx = fixture(6);
    let cat = Catalog::open(&fx.catalog).unwrap();
    let sop_keys = cat.col_keys(Level::Slice, "sop_key").unwrap();
    let by_sop: HashMap<String, f32> = read_csv(&fx.truth.join("slices_by_sop.csv"))
        .iter()
        .map(|r| {
            let k = fx.key.pseudonym(IdKind::Instance, &r["SOPInstanceUID"]);
            (k, r["Nodule"].parse().unwrap())
        })
        .collect();
    let patients = read_csv(&fx.truth.join("patients.csv"));
    let death: HashMap<String, Option<f32>> = patients
        .iter()
        .map(|r| {
            let days: f64 = r["FollowUpDays"].parse().unwrap();
            let event = r["DeathEvent"] == "1";
            let v = if event && days <= DEATH_HORIZON_DAYS {
                Some(1.0)
            } else if days >= DEATH_HORIZON_DAYS {
                Some(0.0)
            } else {
                None
            };
            (fx.key.pseudonym(IdKind::Patient, &r["PatientID"]), v)
        })
        .collect();
    let first_patient = fx.key.pseudonym(IdKind::Patient, &patients[0]["PatientID"]);
    let by_series: HashMap<String, f32> = read_csv(&fx.truth.join("series.csv"))
        .iter()
        .map(|r| {
            let k = fx.key.pseudonym(IdKind::Series, &r["SeriesInstanceUID"]);
            (k, r["Nodule"].parse().unwrap())
        })
        .collect();

    let cfg = DataConfig {
        size: vec![8, 8],
        labels: vec![
            "nodule_slices.nodule".into(),
            "outcome.death_5y".into(),
            "partial.score".into(),
        ],
        ..DataConfig::default()
    };
    let slices = manifest(&fx, "modality = 'CT'", Level::Slice);
    let ds = Dataset::open(&fx.catalog, &slices, "train", &cfg).unwrap();
    assert_eq!(ds.num_targets(), 3);
    let (mut t, mut m) = ([0f32; 3], [0f32; 3]);
    let mut counts = [0usize; 4]; // nodule slices, clear slices, known deaths, unknown deaths
    let mut series_truth: HashMap<u32, Vec<f32>> = HashMap::new();
    for i in 0..ds.len() {
        let meta = ds.meta(i);
        ds.target(i, &mut t, &mut m);
        let sop = cell_text(&sop_keys[meta.slice_row.unwrap() as usize]).to_string();
        let nodule = by_sop[&sop];
        assert_eq!((t[0], m[0]), (nodule, 1.0), "slice {i}");
        counts[nodule as usize ^ 1] += 1;
        series_truth.entry(meta.series_row).or_default().push(nodule);
        assert_eq!(ds.class_of(i), Some(nodule as u32));
        match death[&meta.patient_key] {
            Some(v) => {
                assert_eq!((t[1], m[1]), (v, 1.0));
                counts[2] += 1;
            }
            None => {
                assert_eq!(m[1], 0.0, "censored before 5 years: unknown");
                counts[3] += 1;
            }
        }
        let partial = if meta.patient_key == first_patient {
            (3.0, 1.0)
        } else {
            (0.0, 0.0)
        };
        assert_eq!((t[2], m[2]), partial);
    }
    assert!(
        counts.iter().all(|&c| c > 0),
        "cohort too small to test every case: {counts:?}"
    );

    // Series samples: a slice-level label is the max over the series' slices.
    let cfg = DataConfig {
        mode: SampleMode::Volume3d,
        size: vec![2, 4, 4],
        labels: vec!["nodule_slices.nodule".into(), "series_labels.nodule".into()],
        ..DataConfig::default()
    };
    let series = manifest(&fx, "modality = 'CT'", Level::Series);
    let ds = Dataset::open(&fx.catalog, &series, "train", &cfg).unwrap();
    assert_eq!(ds.len(), 6);
    let (mut t, mut m) = ([0f32; 2], [0f32; 2]);
    for i in 0..ds.len() {
        let meta = ds.meta(i);
        ds.target(i, &mut t, &mut m);
        let max = series_truth[&meta.series_row].iter().cloned().fold(0.0, f32::max);
        assert_eq!((t[0], m[0]), (max, 1.0), "series sample {i}");
        assert_eq!((t[1], m[1]), (by_series[&meta.series_key], 1.0), "series label");
        assert_eq!(meta.slice_row, None);
    }
}

#[test]
fn augmentation_is_a_function_of_the_seed() {
    let fx = fixture(1);
    let slices = manifest(&fx, "modality = 'CT'", Level::Slice);
    let cfg = DataConfig {
        size: vec![12, 12],
        spacing_mm: Some(vec![1.0, 1.0]),
        augment: AugmentConfig {
            flip_lr: true,
            flip_ud: true,
            rotate_deg: 15.0,
            scale: 0.1,
            translate_mm: 3.0,
            intensity: 0.1,
        },
        ..DataConfig::default()
    };
    let ds = Dataset::open(&fx.catalog, &slices, "train", &cfg).unwrap();
    let mut a = vec![0f32; ds.sample_len()];
    let mut b = vec![0f32; ds.sample_len()];
    for i in 0..ds.len() {
        let ta = ds.load(i, Some(sample_seed(42, 3, i)), &mut a).unwrap();
        b.fill(f32::NAN);
        let tb = ds.load(i, Some(sample_seed(42, 3, i)), &mut b).unwrap();
        assert_eq!(ta, tb);
        assert!(
            a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
            "sample {i}"
        );
        let tc = ds.load(i, Some(sample_seed(42, 4, i)), &mut b).unwrap();
        assert_ne!(ta.affine, tc.affine, "another epoch draws another transform");
        assert_ne!(a, b);
    }
    // JSON round trip of the record that explain reads.
    let json = serde_json::to_string(&ds.load(0, Some(1), &mut a).unwrap()).unwrap();
    let back: medtrain::data::SampleTransform = serde_json::from_str(&json).unwrap();
    assert_eq!(back, ds.load(0, Some(1), &mut b).unwrap());
}

#[test]
fn loader_keeps_order_pads_and_bounds_its_queue() {
    let fx = fixture(2);
    let slices = manifest(&fx, "modality = 'CT'", Level::Slice);
    let cfg = DataConfig {
        size: vec![SIZE, SIZE],
        labels: vec!["nodule_slices.nodule".into()],
        augment: AugmentConfig {
            rotate_deg: 10.0,
            ..AugmentConfig::default()
        },
        ..DataConfig::default()
    };
    let ds = Arc::new(Dataset::open(&fx.catalog, &slices, "train", &cfg).unwrap());
    let indices: Vec<usize> = (0..ds.len()).rev().step_by(1).chain([3, 0, 7]).collect();
    let (batch, prefetch) = (2, 2);
    let steps = indices.len().div_ceil(batch);
    assert!(steps > prefetch + 2 && indices.len() % batch != 0);

    let mut loader = Loader::new(ds.clone(), indices.clone(), batch, 0, Some((7, 1)), prefetch);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while loader.batches_made() < prefetch + 1 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(
        loader.batches_made(),
        prefetch + 1,
        "queue of {prefetch} plus one waiting to enter"
    );

    let mut seen = Vec::new();
    let mut one = vec![0f32; ds.sample_len()];
    let (mut t, mut m) = ([0f32; 1], [0f32; 1]);
    let mut step = 0;
    while let Some(b) = loader.next() {
        let b = b.unwrap();
        assert_eq!(b.step, step);
        assert_eq!(b.samples.len(), batch);
        assert_eq!(b.input.len(), batch * ds.sample_len());
        for (k, &i) in b.samples.iter().enumerate() {
            let tr = ds.load(i, Some(sample_seed(7, 1, i)), &mut one).unwrap();
            assert_eq!(b.transforms[k], tr);
            assert!(
                b.input[k * one.len()..(k + 1) * one.len()] == one[..],
                "step {step} row {k}"
            );
            ds.target(i, &mut t, &mut m);
            assert_eq!(b.targets[k], t[0]);
            assert_eq!(
                b.mask[k],
                if k < b.valid { m[0] } else { 0.0 },
                "padding is masked"
            );
        }
        if b.valid < batch {
            assert_eq!(step, steps - 1, "only the last batch is partial");
            assert_eq!(b.valid, indices.len() % batch);
            assert!(b.samples[b.valid..]
                .iter()
                .all(|s| b.samples[..b.valid].contains(s)));
        }
        seen.extend_from_slice(&b.samples[..b.valid]);
        loader.recycle(b);
        step += 1;
    }
    assert_eq!(seen, indices, "every index once, in order");
    assert!(loader.next().is_none());
    assert!(loader.wait_seconds() >= 0.0);

    // Resuming at a step starts at that step's samples.
    let mut resumed = Loader::new(ds.clone(), indices.clone(), batch, 2, None, 1);
    let b = resumed.next().unwrap().unwrap();
    assert_eq!((b.step, &b.samples[..]), (2, &indices[4..6]));
    drop(resumed);
}

#[test]
fn bad_shards_and_series_are_refused_by_name() {
    let fx = fixture(1);
    let slices = manifest(&fx, "modality = 'CT'", Level::Slice);
    let cat = Catalog::open(&fx.catalog).unwrap();
    let shard = PathBuf::from(&cat.state.shards[0].path);
    let name = shard.file_name().unwrap();

    // Staged copy: read from there.
    let staged = fx.root.join("staged");
    fs::create_dir_all(&staged).unwrap();
    for s in &cat.state.shards {
        let p = Path::new(&s.path);
        fs::copy(p, staged.join(p.file_name().unwrap())).unwrap();
    }
    let mut cfg = DataConfig {
        size: vec![SIZE, SIZE],
        shard_dir: Some(staged.clone()),
        ..DataConfig::default()
    };
    let ds = Dataset::open(&fx.catalog, &slices, "train", &cfg).unwrap();
    assert!(ds.shard_paths().iter().all(|p| p.starts_with(&staged)));

    // Missing file.
    let empty = fx.root.join("empty");
    fs::create_dir_all(&empty).unwrap();
    cfg.shard_dir = Some(empty.clone());
    let e = Dataset::open(&fx.catalog, &slices, "train", &cfg)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains(s(&empty.join(name))), "{e}");

    // Truncated copy.
    let f = fs::OpenOptions::new()
        .write(true)
        .open(staged.join(name))
        .unwrap();
    f.set_len(4096).unwrap();
    cfg.shard_dir = Some(staged.clone());
    let e = Dataset::open(&fx.catalog, &slices, "train", &cfg)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains(s(&staged.join(name))) && e.contains("truncated"),
        "{e}"
    );

    // Radiographs train through their own pipeline (z-scored, not an HU window); unknown splits
    // and labels are named.
    cfg.shard_dir = None;
    let xr = manifest(&fx, "modality != 'CT'", Level::Series);
    let ds = Dataset::open(&fx.catalog, &xr, "train", &cfg).unwrap();
    let mut sample = vec![f32::NAN; ds.sample_len()];
    ds.load(0, None, &mut sample).unwrap();
    assert!(sample.iter().all(|v| v.is_finite()));
    let e = Dataset::open(&fx.catalog, &slices, "val", &cfg)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("val") && e.contains("train"), "{e}");
    cfg.labels = vec!["outcome.nope".into()];
    let e = Dataset::open(&fx.catalog, &slices, "train", &cfg)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("outcome.nope") && e.contains("death_5y"), "{e}");
}

#[test]
fn shard_path_answers_by_catalog_shard_number() {
    // One shard per series (a 1-byte shard size), then a split of the last series only: its dataset
    // uses one shard, whose catalog number is not 0.
    let dir = tempdir();
    let root = dir.path();
    let cfg = PhantomConfig {
        seed: 5,
        patients: 3,
        size: SIZE,
        slices: SLICES,
        slice_thickness_mm: 2.5,
        radiographs: false,
    };
    let summary = generate(&cfg, &root.join("phantom")).expect("phantom");
    let keyf = key_file(root, "site.key");
    let pack = root.join("pack");
    let (code, _, err) = run(&[
        "pack",
        s(&summary.dicom_dir),
        "--out",
        s(&pack),
        "--key",
        s(&keyf),
        "--shard-size",
        "1B",
    ]);
    assert_eq!(code, 0, "pack failed: {err}");
    let catalog = root.join("catalog");
    build(&[pack], &catalog).expect("catalog build");
    let cat = Catalog::open(&catalog).unwrap();
    assert_eq!(cat.state.shards.len(), 3, "one shard per series");
    let last = cat
        .col_u32(Level::Series, "shard")
        .unwrap()
        .iter()
        .copied()
        .max()
        .unwrap();
    let m = plan(
        &cat,
        &SplitSpec {
            filter: format!("modality = 'CT' and shard = {last}"),
            level: Level::Slice,
            splits: vec![("train".into(), 1.0)],
            stratify: None,
            seed: 1,
        },
    )
    .unwrap();
    let data = DataConfig {
        size: vec![SIZE, SIZE],
        ..DataConfig::default()
    };
    let ds = Dataset::open(&catalog, &m, "train", &data).unwrap();
    assert_eq!(ds.shard_paths().len(), 1);
    assert_eq!(
        ds.shard_path(last),
        Some(Path::new(&cat.state.shards[last as usize].path).to_path_buf())
    );
    for other in (0..3).filter(|&i| i != last) {
        assert_eq!(
            ds.shard_path(other),
            None,
            "shard {other} is not used by the split"
        );
    }
}

/// Time per sample of the resampling loop on a synthetic 48 × 256 × 256 int16 CT volume: 2.5D
/// (3 slices × 3 windows, 128²) and a 3D crop (3 windows, 32 × 64²), 7 rounds of 20 samples each,
/// median and range printed. A timing, never a pass/fail (BENCHMARKS.md, "data: resampling").
#[test]
#[ignore = "timing: run on a quiet machine, see BENCHMARKS.md"]
fn resample_timing() {
    use medtrain::data::transform::{resample, Augmentation, Grid, Volume};
    use std::time::Instant;
    let shape = [48usize, 256, 256];
    let bytes: Vec<u8> = (0..shape.iter().product::<usize>())
        .flat_map(|i| (((i * 7919) % 2400) as i16 - 1200).to_le_bytes())
        .collect();
    let vol = Volume {
        bytes: &bytes,
        shape,
        mapped: None,
    };
    let windows = [[-600.0f32, 1500.0], [40.0, 400.0], [-160.0, 240.0]];
    for (mode, extent, context) in [
        (SampleMode::Slice25d, [1u32, 128, 128], 1u32),
        (SampleMode::Crop3d, [32, 64, 64], 0),
    ] {
        let grid = Grid {
            mode,
            src_shape: shape,
            src_spacing: [2.5, 0.7, 0.7],
            out_extent: extent,
            out_spacing: None,
            centre_slice: Some(24),
        };
        let aug = Augmentation::none();
        let m = grid.affine(&aug);
        let channels = (2 * context as usize + 1) * windows.len();
        let mut out = vec![0.0f32; channels * extent.iter().map(|&e| e as usize).product::<usize>()];
        let mut ms = Vec::new();
        for _ in 0..7 {
            let t = Instant::now();
            for _ in 0..20 {
                resample(&vol, mode, &m, extent, context, &windows, &aug, &mut out);
            }
            ms.push(t.elapsed().as_secs_f64() / 20.0 * 1e3);
        }
        ms.sort_by(f64::total_cmp);
        let checksum: f64 = out.iter().map(|&v| v as f64).sum();
        eprintln!(
            "resample {mode:?}: median {:.3} ms per sample [{:.3}, {:.3}], checksum {checksum}",
            ms[3], ms[0], ms[6]
        );
    }
}
