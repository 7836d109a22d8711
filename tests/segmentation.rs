//! Segmentation as a task of `train` and `eval`: patches and their masks through the loader's
//! transforms, foreground oversampling, a two-rank run against the threshold segmenter, a bitwise
//! resume, and the case table of `eval`.

use crate::common::{ok, run, s, tempdir};
use crate::train::{assert_same_newest_checkpoints, check, mpirun};
use medtrain::catalog::split::Manifest;
use medtrain::data::{DataConfig, Dataset, SampleMode};
use std::path::{Path, PathBuf};

/// A phantom with LIDC-style readers, packed with a fixed site key (so the pseudonyms, and with them
/// the split, are the same on every run), catalogued, its consensus (≥ 2 readers) imported as mask
/// set `lidc`, and a series-level split of the CT.
fn seg_cohort(root: &Path, patients: &str) -> (PathBuf, PathBuf) {
    let p = |x: &str| root.join(x);
    crate::common::fixed_site_key(root);
    let (catalog, key) = crate::common::phantom_catalog_with(
        root,
        &[
            "--patients",
            patients,
            "--size",
            "96",
            "--slices",
            "24",
            "--no-radiographs",
        ],
    );
    crate::common::import_lidc(&catalog, &p("phantom/truth/lidc"), &key, "lidc");
    ok(&[
        "catalog",
        "split",
        s(&p("catalog")),
        "modality = 'CT'",
        "--level",
        "series",
        "--out",
        s(&p("manifest.h5")),
        "--ratios",
        "train=0.6,val=0.2,test=0.2",
        "--seed",
        "2026",
    ]);
    (p("catalog"), p("manifest.h5"))
}

/// Crop3d patches of the `lidc` masks with flips, and with `turn` a rotation and zoom too.
fn patch_config(foreground: f64, turn: bool) -> DataConfig {
    DataConfig {
        mode: SampleMode::Crop3d,
        size: vec![8, 32, 32],
        windows: vec![[-600.0, 1500.0]],
        masks: Some("lidc".into()),
        foreground: Some(foreground),
        augment: medtrain::data::AugmentConfig {
            flip_lr: true,
            flip_ud: true,
            rotate_deg: if turn { 20.0 } else { 0.0 },
            scale: if turn { 0.1 } else { 0.0 },
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Under flips, rotation and zoom, a patch's mask target lands on the nodule in its image (a dense
/// ball in lung): the image is dense wherever the target is 1. With every patch centred on the
/// foreground (flips only: a rotated, zoomed grid may step over a one-voxel nodule at its centre)
/// each one holds some; placed uniformly, few do.
#[test]
fn patch_targets_follow_their_images_and_foreground_oversampling_centres_them() {
    let dir = tempdir();
    let (catalog, manifest) = seg_cohort(dir.path(), "24");
    let manifest = Manifest::load(&manifest).unwrap();
    let with_fg = |fraction: f64, turn: bool| -> (usize, usize, Vec<f32>) {
        let ds = Dataset::open(&catalog, &manifest, "train", &patch_config(fraction, turn)).unwrap();
        assert!(ds.has_masks());
        let (len, voxels) = (ds.sample_len(), ds.sample_len());
        let (mut x, mut y) = (vec![0.0f32; len], vec![0.0f32; voxels]);
        let (mut holding, mut draws, mut inside) = (0, 0, Vec::new());
        for epoch in 0..4u64 {
            for i in 0..ds.len() {
                let t = ds
                    .load(i, Some(medtrain::data::sample_seed(7, epoch, i)), &mut x)
                    .unwrap();
                ds.mask_target(i, &t, &mut y).unwrap();
                draws += 1;
                holding += y.iter().any(|&v| v != 0.0) as usize;
                // Interior target voxels (all six neighbours in the target too): away from the rim,
                // where interpolation mixes nodule and lung.
                let [d, h, w] = ds.extent().map(|e| e as usize);
                let at = |z: usize, r: usize, c: usize| y[(z * h + r) * w + c] != 0.0;
                for z in 1..d - 1 {
                    for r in 1..h - 1 {
                        for c in 1..w - 1 {
                            if at(z, r, c)
                                && at(z - 1, r, c)
                                && at(z + 1, r, c)
                                && at(z, r - 1, c)
                                && at(z, r + 1, c)
                                && at(z, r, c - 1)
                                && at(z, r, c + 1)
                            {
                                inside.push(x[(z * h + r) * w + c]);
                            }
                        }
                    }
                }
            }
        }
        (holding, draws, inside)
    };
    let (centred, draws, _) = with_fg(1.0, false);
    let (uniform, _, _) = with_fg(0.0, false);
    let (_, _, inside) = with_fg(1.0, true);
    // Series without a consensus nodule have no foreground to centre on.
    let ds = Dataset::open(&catalog, &manifest, "train", &patch_config(1.0, false)).unwrap();
    let labelled = ds
        .case_samples()
        .iter()
        .filter(|&&i| ds.native_mask(i).unwrap().contains(&true))
        .count();
    assert!(labelled >= 3, "{labelled} training series with a nodule");
    assert_eq!(
        centred,
        4 * labelled,
        "every patch of a labelled series holds foreground"
    );
    assert!(
        uniform * 2 < centred,
        "uniform {uniform} vs centred {centred} of {draws}"
    );
    // Lung is about -850 HU (0.33 in the window), a nodule soft tissue (0.85 and above): bilinear
    // reads at the rim mix both, so most, not all, target voxels are dense.
    let dense = inside.iter().filter(|&&v| v > 0.6).count() as f64 / inside.len() as f64;
    assert!(
        inside.len() > 100 && dense > 0.85,
        "{} target voxels, {dense:.2} dense",
        inside.len()
    );
}

fn seg_config(root: &Path, extra: &str) -> PathBuf {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/ldct-seg-demo.toml"))
            .unwrap();
    let path = root.join("seg.toml");
    let text = text
        .replace("epochs = 50", "epochs = 60")
        .replace("eval_every = 25", "eval_every = 0")
        .replace("bootstrap = 1000", &format!("bootstrap = 200\n{extra}"));
    std::fs::write(&path, text).unwrap();
    path
}

/// The reduced `ldct-seg` demo: two ranks train a 3D U-Net on patches; its held-out Dice beats the
/// threshold segmenter's, and `eval` writes one row per test series whose truth counts are the
/// consensus voxels of the readers' masks.
#[test]
fn a_two_rank_unet_beats_the_threshold_segmenter_and_eval_lists_every_case() {
    let dir = tempdir();
    let (catalog, manifest) = seg_cohort(dir.path(), "40");
    let cfg = seg_config(dir.path(), "");
    let run_dir = dir.path().join("run");
    let out = mpirun(
        2,
        &[
            "train",
            s(&catalog),
            s(&manifest),
            "--out",
            s(&run_dir),
            "--config",
            s(&cfg),
            "--json",
        ],
        &[],
    )
    .output()
    .unwrap();
    check(&out, "segmentation training on two ranks");
    let outcome: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(outcome["world_size"], 2);
    let seg = &outcome["final_eval"]["segmentation"];
    let dice = seg["model"]["dice"]["estimate"].as_f64().expect("a model Dice");
    let base = seg["baseline"]["dice"]["estimate"]
        .as_f64()
        .expect("a baseline Dice");
    assert_eq!(seg["cases"], 8, "every validation series is a case");
    assert!(dice > base + 0.1, "U-Net Dice {dice:.3} vs threshold {base:.3}");
    // The training log holds the means, not a row per case per validation.
    let log = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
    assert!(
        last["eval"]["segmentation"]["model"]["dice"].is_object(),
        "{last}"
    );
    assert_eq!(
        last["eval"]["segmentation"]["rows"].as_array().map(Vec::len),
        Some(0),
        "{last}"
    );

    let ev = dir.path().join("eval");
    let (code, _, err) = run(&["eval", s(&run_dir), "--split", "test", "--out", s(&ev)]);
    assert_eq!(code, 0, "{err}");
    let csv = std::fs::read_to_string(ev.join("cases.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(rows.len(), 8, "{csv}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ev.join("eval.json")).unwrap()).unwrap();
    // The truth of each case on the pack's grid is the readers' consensus in the mask shard.
    let m = Manifest::load(&manifest).unwrap();
    let ds = Dataset::open(&catalog, &m, "test", &patch_config(0.0, false)).unwrap();
    for (row, &i) in report["segmentation"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .zip(&ds.case_samples())
    {
        let truth = ds.native_mask(i).unwrap().iter().filter(|&&v| v).count() as u64;
        assert_eq!(row["truth_voxels"].as_u64(), Some(truth), "{row}");
        assert_eq!(
            row["dice"].is_null(),
            truth == 0,
            "Dice is undefined exactly without a nodule: {row}"
        );
    }
    // Detection: the predicted regions find the nodules better than the threshold segmenter's blobs,
    // which the vessels crowd with false positives; every candidate is listed.
    let seg = &report["segmentation"];
    let cpm = seg["detection"]["cpm"]["estimate"]
        .as_f64()
        .expect("a CPM: the test split has nodules");
    let base = seg["baseline_detection"]["cpm"]["estimate"]
        .as_f64()
        .expect("a threshold CPM");
    assert!(cpm > base, "CPM {cpm:.3} vs threshold {base:.3}");
    let listed = std::fs::read_to_string(ev.join("candidates.csv"))
        .unwrap()
        .lines()
        .count()
        - 1;
    assert_eq!(Some(listed as u64), seg["detection"]["candidates"].as_u64());
    // Sample-scoring verbs refuse a segmentation model with the reason.
    let (code, _, err) = run(&["explain", s(&run_dir), "test", "--out", s(&dir.path().join("x"))]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("segmentation"), "{err}");
}

/// Patch positions and their augmentation are pure functions of (seed, epoch, sample): two ranks
/// stopped mid-run and resumed reach bitwise the weights of an uninterrupted run.
#[test]
fn a_resumed_segmentation_run_is_bitwise_identical() {
    let dir = tempdir();
    let (catalog, manifest) = seg_cohort(dir.path(), "12");
    let cfg = seg_config(dir.path(), "");
    let cfg_text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("epochs = 60", "epochs = 3");
    std::fs::write(&cfg, cfg_text).unwrap();
    let train = |out: &Path, extra: &[&str]| {
        let mut a = vec![
            "train",
            s(&catalog),
            s(&manifest),
            "--out",
            s(out),
            "--config",
            s(&cfg),
        ];
        a.extend_from_slice(extra);
        let o = mpirun(2, &a, &[]).output().unwrap();
        check(&o, "segmentation run");
    };
    let (whole, parts) = (dir.path().join("whole"), dir.path().join("parts"));
    train(&whole, &[]);
    train(&parts, &["--max-steps", "4"]);
    train(&parts, &["--resume", "auto"]);
    assert_same_newest_checkpoints(&whole, &parts);
}

/// A 2D U-Net on the slices of a slice-level split: it trains, and `eval` predicts each test series
/// slice by slice, its truth the readers' consensus on the pack's grid.
#[test]
fn a_2d_unet_trains_on_slices_and_eval_stacks_them_per_series() {
    let dir = tempdir();
    let (catalog, _) = seg_cohort(dir.path(), "12");
    let manifest = dir.path().join("slices.h5");
    ok(&[
        "catalog",
        "split",
        s(&catalog),
        "modality = 'CT'",
        "--level",
        "slices",
        "--out",
        s(&manifest),
        "--ratios",
        "train=0.5,test=0.5",
        "--seed",
        "7",
    ]);
    let cfg = dir.path().join("2d.toml");
    std::fs::write(
        &cfg,
        "[model]\narchitecture = \"unet\"\nwidths = [8, 16]\n[data]\nmode = \"slice\"\nsize = [96, 96]\n\
         masks = \"lidc\"\n[train]\ntask = \"segmentation\"\nepochs = 1\nbatch_size = 4\nmax_steps = 3\n\
         eval_every = 0\nval_split = \"test\"\n[eval]\nbootstrap = 50\n",
    )
    .unwrap();
    let run_dir = dir.path().join("run");
    ok(&[
        "train",
        s(&catalog),
        s(&manifest),
        "--out",
        s(&run_dir),
        "--config",
        s(&cfg),
    ]);
    let ev = dir.path().join("eval");
    ok(&["eval", s(&run_dir), "--split", "test", "--out", s(&ev)]);
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ev.join("eval.json")).unwrap()).unwrap();
    let m = Manifest::load(&manifest).unwrap();
    let cfg2 = DataConfig {
        mode: SampleMode::Slice,
        size: vec![96, 96],
        masks: Some("lidc".into()),
        ..Default::default()
    };
    let ds = Dataset::open(&catalog, &m, "test", &cfg2).unwrap();
    let cases = ds.case_samples();
    let rows = report["segmentation"]["rows"].as_array().unwrap();
    assert_eq!(rows.len(), cases.len(), "one case per series, not per slice");
    for (row, &i) in rows.iter().zip(&cases) {
        let truth = ds.native_mask(i).unwrap().iter().filter(|&&v| v).count() as u64;
        assert_eq!(row["truth_voxels"].as_u64(), Some(truth), "{row}");
    }
    predicted_masks_lie_on_their_series(dir.path(), &run_dir);
}

/// `predict` on the packs writes a NIfTI mask per series that nibabel places voxel for voxel on its
/// DICOM series (pydicom's positions and orientation), and candidates that are the mask's
/// 26-connected regions as scipy labels them, at their mean voxel centre.
fn predicted_masks_lie_on_their_series(root: &Path, run_dir: &Path) {
    let pred = root.join("pred");
    let (code, out, err) = run(&[
        "predict",
        s(run_dir),
        s(&root.join("pack")),
        "--out",
        s(&pred),
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let summary: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let got: serde_json::Value = serde_json::from_str(&crate::common::reference_script(
        "predicted_masks.py",
        &[s(&pred), s(&root.join("phantom/dicom"))],
    ))
    .unwrap();
    let masks = got["masks"].as_u64().unwrap();
    assert!(
        masks > 0 && Some(masks) == summary["masks"].as_u64(),
        "{summary} {got}"
    );
    assert_eq!(got["placed"].as_array().unwrap().len() as u64, masks, "{got}");
    let text = std::fs::read_to_string(pred.join("candidates.csv")).unwrap();
    let mut ours: std::collections::BTreeMap<String, Vec<[f64; 4]>> = Default::default();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let v = |i: usize| f[i].parse::<f64>().unwrap();
        ours.entry(f[0].to_string())
            .or_default()
            .push([v(1), v(2), v(3), v(6)]);
    }
    let by_size = |v: &mut Vec<[f64; 4]>| {
        v.sort_by(|a, b| {
            a.iter()
                .zip(b)
                .map(|(x, y)| x.total_cmp(y))
                .find(|o| o.is_ne())
                .unwrap_or(std::cmp::Ordering::Equal)
        })
    };
    let mut regions = 0;
    for (key, want) in got["regions"].as_object().unwrap() {
        let mut want: Vec<[f64; 4]> = want
            .as_array()
            .unwrap()
            .iter()
            .map(|r| std::array::from_fn(|i| r[i].as_f64().unwrap()))
            .collect();
        let mut mine = ours.remove(key).unwrap_or_default();
        assert_eq!(mine.len(), want.len(), "{key}: regions");
        by_size(&mut want);
        by_size(&mut mine);
        for (m, w) in mine.iter().zip(&want) {
            assert!(
                m.iter().zip(w).all(|(a, b)| (a - b).abs() < 2e-3),
                "{key}: {m:?} vs scipy {w:?}"
            );
        }
        regions += want.len();
    }
    assert!(ours.is_empty(), "candidates of series without a mask: {ours:?}");
    assert!(regions > 0, "the masks have regions to compare");
    predicted_segs_open_in_highdicom(root, run_dir, &pred, masks);
}

/// The DICOM SEGs beside the masks: highdicom opens them and their frames are the NIfTI masks'
/// slices (pydicom unpacks the bits). With `--source`, each frame references the source instance at
/// its position and the patient, study and frame of reference are the source's; a wrong key finds
/// no series, exits 1 and says why.
fn predicted_segs_open_in_highdicom(root: &Path, run_dir: &Path, local: &Path, masks: u64) {
    let dicom = root.join("phantom/dicom");
    let check = |out: &Path, mode: &str| -> serde_json::Value {
        let got: serde_json::Value = serde_json::from_str(&crate::common::reference_script(
            "predicted_seg.py",
            &[s(out), s(&dicom), mode],
        ))
        .unwrap();
        assert_eq!(got["problems"], serde_json::json!([]), "{got}");
        assert_eq!(got["segs"].as_u64(), Some(masks), "{got}");
        for what in ["opened", "pixels"] {
            assert_eq!(got[what], got["segs"], "{what}: {got}");
        }
        got
    };
    check(local, "local");
    let pred = root.join("pred-source");
    let (code, _, err) = run(&[
        "predict",
        s(run_dir),
        s(&root.join("pack")),
        "--out",
        s(&pred),
        "--source",
        s(&dicom),
        "--key",
        s(&root.join("site.key")),
    ]);
    assert_eq!(code, 0, "{err}");
    let got = check(&pred, "source");
    for what in ["references", "identity"] {
        assert_eq!(got[what], got["segs"], "{what}: {got}");
    }
    // Another key's pseudonyms match no source series: no SEG, the reason, exit 1.
    let other = crate::common::key_file(root, "other.key");
    let (code, _, err) = run(&[
        "predict",
        s(run_dir),
        s(&root.join("pack")),
        "--out",
        s(&root.join("pred-wrong")),
        "--source",
        s(&dicom),
        "--key",
        s(&other),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no series under --source"), "{err}");
    let (code, _, err) = run(&[
        "predict",
        s(run_dir),
        s(&root.join("pack")),
        "--out",
        s(&root.join("x")),
        "--source",
        s(&dicom),
    ]);
    assert_eq!(code, 2, "--source without --key: {err}");
}

/// A split with a series whose pack shard has masks but which has none itself is refused when the
/// dataset opens, naming how many series lack one (not midway through training).
#[test]
fn a_split_with_an_unlabelled_series_is_refused_at_open() {
    let dir = tempdir();
    let (catalog, key) = crate::common::phantom_catalog(dir.path(), "3", "64");
    let truth = dir.path().join("phantom/truth");
    let csv = std::fs::read_to_string(truth.join("masks.csv")).unwrap();
    let one: Vec<&str> = csv.lines().take(2).collect();
    std::fs::write(truth.join("one.csv"), one.join("\n") + "\n").unwrap();
    ok(&[
        "catalog",
        "labels",
        "masks",
        s(&truth.join("one.csv")),
        "--out",
        s(&catalog),
        "--name",
        "one",
        "--key",
        s(&key),
    ]);
    let manifest = dir.path().join("m.h5");
    ok(&[
        "catalog",
        "split",
        s(&catalog),
        "modality = 'CT'",
        "--level",
        "series",
        "--out",
        s(&manifest),
        "--ratios",
        "train=1.0",
    ]);
    let m = Manifest::load(&manifest).unwrap();
    let cfg = DataConfig {
        masks: Some("one".into()),
        ..patch_config(0.5, false)
    };
    let err = Dataset::open(&catalog, &m, "train", &cfg).err().expect("refused");
    assert!(
        err.to_string().contains("2 series of the split have no mask"),
        "{err}"
    );
}
