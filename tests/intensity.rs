//! Intensities per modality, end to end: DICOM written by pydicom (tests/reference/write_radiograph.py)
//! is packed, catalogued and split, and the loader's floats equal an independent implementation
//! (pydicom's `apply_modality_lut` + `apply_voi_lut`, MONOCHROME1 inversion, numpy percentile clip
//! and z-score) to 1e-5. Series without a pipeline are refused at open, naming the series.

use crate::common::{pydicom_file, reference_script, run, s, tempdir};
use medtrain::catalog::split::Manifest;
use medtrain::data::{DataConfig, DataError, Dataset};
use std::path::{Path, PathBuf};

const TOLERANCE: f64 = 1e-5;

/// Packs `input`, builds its catalog and a split with every slice in `train`; the catalog dir and manifest.
fn catalogued(input: &Path, work: &Path) -> (PathBuf, Manifest) {
    let out = work.join("pack");
    let (code, o, e) = run(&[
        "pack",
        s(input),
        "--out",
        s(&out),
        "--key",
        s(&work.join("site.key")),
        "--create-key",
        "--json",
    ]);
    assert_eq!(code, 0, "{o}\n{e}");
    let catalog = work.join("catalog");
    let (code, o, e) = run(&["catalog", "build", s(&out), "--out", s(&catalog)]);
    assert_eq!(code, 0, "{o}\n{e}");
    let manifest = work.join("split.h5");
    let (code, o, e) = run(&[
        "catalog",
        "split",
        s(&catalog),
        "",
        "--out",
        s(&manifest),
        "--ratios",
        "train=1",
    ]);
    assert_eq!(code, 0, "{o}\n{e}");
    (catalog, Manifest::load(&manifest).unwrap())
}

fn images(json: &str) -> Vec<Vec<f64>> {
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    v["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|img| {
            img.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect()
}

/// (rows, cols) of the images of a reference script's JSON.
fn image_shape(json: &str) -> (u32, u32) {
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    (
        v["rows"].as_u64().unwrap() as u32,
        v["cols"].as_u64().unwrap() as u32,
    )
}

/// The largest |got − want| of two images of the same length.
fn max_abs_diff(got: &[f32], want: &[f64]) -> f64 {
    got.iter()
        .zip(want)
        .map(|(&g, &w)| (g as f64 - w).abs())
        .fold(0.0, f64::max)
}

/// Loads every sample at the native size and compares it with `expected` (one image per sample).
fn assert_loader_matches(
    name: &str,
    catalog: &Path,
    manifest: &Manifest,
    rows: u32,
    cols: u32,
    expected: &[Vec<f64>],
) {
    assert_loader_within(name, catalog, manifest, rows, cols, expected, TOLERANCE);
}

/// `assert_loader_matches` within `tolerance`; returns the largest difference seen.
fn assert_loader_within(
    name: &str,
    catalog: &Path,
    manifest: &Manifest,
    rows: u32,
    cols: u32,
    expected: &[Vec<f64>],
    tolerance: f64,
) -> f64 {
    let cfg = DataConfig {
        size: vec![rows, cols],
        ..DataConfig::default()
    };
    let ds = Dataset::open(catalog, manifest, "train", &cfg).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(ds.len(), expected.len(), "{name}: samples");
    let mut sample = vec![f32::NAN; ds.sample_len()];
    let mut largest = 0.0f64;
    for (i, want) in expected.iter().enumerate() {
        let t = ds.load(i, None, &mut sample).unwrap();
        assert_eq!(t.slice_index as usize, i, "{name}: samples in stored order");
        assert_eq!(sample.len(), want.len(), "{name}: image {i} size");
        let worst = max_abs_diff(&sample, want);
        assert!(
            worst <= tolerance,
            "{name}: image {i} differs from the pydicom/numpy reference by {worst}"
        );
        largest = largest.max(worst);
    }
    largest
}

#[test]
fn radiographs_and_mr_load_like_pydicom_voi_and_numpy_normalisation() {
    for variant in ["mono1-window", "voi-lut", "modality-lut", "window-only", "mr"] {
        let dir = tempdir();
        let input = dir.path().join("in");
        let expected = images(&reference_script("write_radiograph.py", &[s(&input), variant]));
        let (catalog, manifest) = catalogued(&input, dir.path());
        assert_loader_matches(variant, &catalog, &manifest, 10, 7, &expected);
    }
}

#[test]
fn pydicom_mr_small_loads_like_numpy_normalisation() {
    let file = pydicom_file("MR_small.dcm");
    let dir = tempdir();
    let input = dir.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::copy(&file, input.join("MR_small.dcm")).unwrap();
    let expected = images(&reference_script("write_radiograph.py", &["--file", s(&file)]));
    let (catalog, manifest) = catalogued(&input, dir.path());
    assert_loader_matches("MR_small.dcm", &catalog, &manifest, 64, 64, &expected);
}

#[test]
fn percentiles_come_from_the_data_config() {
    let dir = tempdir();
    let input = dir.path().join("in");
    let expected = images(&reference_script(
        "write_radiograph.py",
        &[s(&input), "window-only", "--low", "5", "--high", "90"],
    ));
    let (catalog, manifest) = catalogued(&input, dir.path());
    let mut cfg = DataConfig {
        size: vec![10, 7],
        ..DataConfig::default()
    };
    cfg.intensity.radiograph_percentiles = [5.0, 90.0];
    let ds = Dataset::open(&catalog, &manifest, "train", &cfg).unwrap();
    let mut sample = vec![0.0f32; ds.sample_len()];
    ds.load(0, None, &mut sample).unwrap();
    let worst = max_abs_diff(&sample, &expected[0]);
    assert!(worst <= TOLERANCE, "{worst}");
    cfg.intensity.radiograph_percentiles = [50.0, 10.0];
    match Dataset::open(&catalog, &manifest, "train", &cfg) {
        Err(DataError::Config { key, .. }) => assert_eq!(key, "data.intensity.radiograph_percentiles"),
        Err(e) => panic!("expected a config error, got {e}"),
        Ok(_) => panic!("inverted percentiles accepted"),
    }
}

#[test]
fn train_refuses_palette_colour_at_start_up_and_older_packs_ask_for_a_repack() {
    let dir = tempdir();
    let input = dir.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::copy(pydicom_file("examples_palette.dcm"), input.join("us.dcm")).unwrap();
    let (catalog, _) = catalogued(&input, dir.path());
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/cxr-death-risk.toml");
    let (code, o, e) = run(&[
        "train",
        s(&catalog),
        s(&dir.path().join("split.h5")),
        "--out",
        s(&dir.path().join("run")),
        "--config",
        s(&config),
        "--device",
        "cpu",
    ]);
    assert_eq!(code, 2, "{o}\n{e}");
    assert!(
        e.contains("modality US") && e.contains("PALETTE COLOR pixels are indices"),
        "{e}"
    );
    assert!(!dir.path().join("run/checkpoints").exists(), "no step ran");

    // A shard of the previous format: catalog build names it and asks for a repack.
    let pack = dir.path().join("pack");
    let shard = std::fs::read_dir(&pack)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "h5"))
        .unwrap();
    {
        let f = hdf5::File::open_rw(&shard).unwrap();
        f.attr("format_version").unwrap().write_scalar(&1u32).unwrap();
    }
    let (code, o, e) = run(&["catalog", "build", s(&pack), "--out", s(&dir.path().join("old"))]);
    assert_ne!(code, 0, "{o}\n{e}");
    assert!(
        format!("{o}{e}").contains("repack with this version of medtrain"),
        "{o}\n{e}"
    );
}

/// Ultrasound, written by pydicom (tests/reference/write_ultrasound.py): pack crops every frame to the
/// tissue region of the Sequence of Ultrasound Regions (the largest 2D one), takes its physical deltas
/// as the pixel spacing and records the crop; a cine loop's frames are samples; RGB and YBR_FULL
/// become luma. The loader's floats equal pydicom's pixels, cropped, with BT.601 luma and numpy's
/// per-frame percentile clip and z-score. The border, where burned-in text is (value 255 here), never
/// reaches a shard, so an annotated object with a region packs.
#[test]
fn ultrasound_is_cropped_to_its_region_and_loads_like_pydicom_and_numpy() {
    for variant in ["rgb-cine", "ybr", "mono"] {
        let dir = tempdir();
        let input = dir.path().join("in");
        let json = reference_script("write_ultrasound.py", &[s(&input), variant]);
        let expected = images(&json);
        let (rows, cols) = image_shape(&json);
        let (catalog, manifest) = catalogued(&input, dir.path());
        let pack = dir.path().join("pack");
        let index = medtrain::pack::index::PackIndex::load(&pack).unwrap().unwrap();
        let shard = medtrain::pack::reader::ShardReader::open(&pack.join(&index.shards[0].file)).unwrap();
        let record = &shard.series[0];
        assert_eq!(
            (record.rows, record.cols),
            (rows, cols),
            "{variant}: cropped shape"
        );
        assert_eq!(
            record.presentation.crop,
            Some([2, 3, 13, 9]),
            "{variant}: crop recorded"
        );
        assert!(
            record.pixel_spacing.iter().all(|&d| (d - 0.2).abs() < 1e-12),
            "{variant}: spacing from the region's deltas: {:?}",
            record.pixel_spacing
        );
        let bytes = shard.pixel_bytes(0).unwrap();
        assert!(
            !bytes.contains(&255),
            "{variant}: a border (burned-in) value reached the shard"
        );
        assert_loader_matches(variant, &catalog, &manifest, rows, cols, &expected);
    }
}

/// Cine frames as channels: `mode = "slice25d"` with `context = 1` gives each frame of a multi-frame
/// ultrasound with its two neighbours (clamped at the ends) as 3 channels, each normalised with its
/// own frame's statistics, against pydicom + numpy per frame (tests/reference/write_ultrasound.py).
#[test]
fn ultrasound_cine_frames_as_channels_load_like_pydicom_and_numpy() {
    use medtrain::data::SampleMode;
    for variant in ["rgb-cine", "mono"] {
        let dir = tempdir();
        let input = dir.path().join("in");
        let json = reference_script("write_ultrasound.py", &[s(&input), variant]);
        let expected = images(&json);
        let (rows, cols) = image_shape(&json);
        let (catalog, manifest) = catalogued(&input, dir.path());
        let cfg = DataConfig {
            mode: SampleMode::Slice25d,
            context: 1,
            size: vec![rows, cols],
            ..DataConfig::default()
        };
        let ds = Dataset::open(&catalog, &manifest, "train", &cfg).unwrap();
        let frames = expected.len();
        assert!(frames >= 2, "{variant}: a cine loop");
        assert_eq!((ds.len(), ds.channels()), (frames, 3), "{variant}");
        let plane = (rows * cols) as usize;
        let mut sample = vec![f32::NAN; ds.sample_len()];
        for i in 0..frames {
            ds.load(i, None, &mut sample).unwrap();
            for (c, offset) in [-1i64, 0, 1].iter().enumerate() {
                let f = (i as i64 + offset).clamp(0, frames as i64 - 1) as usize;
                let worst = max_abs_diff(&sample[c * plane..(c + 1) * plane], &expected[f]);
                assert!(
                    worst <= TOLERANCE,
                    "{variant}: frame {i} channel {c} (frame {f}) differs by {worst}"
                );
            }
        }
    }
}

/// `[data.intensity] rgb = true`: the R, G and B samples become 3 channels, each clipped and z-scored
/// with the frame's luma statistics (a grey object fills the 3 alike), against pydicom + numpy
/// (tests/reference/write_ultrasound.py --rgb) to 1e-5, and the channels of the RGB objects differ.
#[test]
fn ultrasound_rgb_channels_load_like_pydicom_and_numpy() {
    for variant in ["rgb-cine", "ybr", "mono"] {
        let dir = tempdir();
        let input = dir.path().join("in");
        let json = reference_script("write_ultrasound.py", &[s(&input), variant, "--rgb"]);
        let expected = images(&json);
        let (rows, cols) = image_shape(&json);
        let (catalog, manifest) = catalogued(&input, dir.path());
        let mut cfg = DataConfig {
            size: vec![rows, cols],
            windows: vec![[0.0, 1.0]; 3],
            ..DataConfig::default()
        };
        cfg.intensity.rgb = true;
        let ds = Dataset::open(&catalog, &manifest, "train", &cfg).unwrap();
        assert_eq!((ds.len(), ds.channels()), (expected.len(), 3), "{variant}");
        let plane = (rows * cols) as usize;
        let mut sample = vec![f32::NAN; ds.sample_len()];
        for (i, want) in expected.iter().enumerate() {
            ds.load(i, None, &mut sample).unwrap();
            assert_eq!(sample.len(), want.len(), "{variant}: image {i}");
            let worst = max_abs_diff(&sample, want);
            assert!(worst <= TOLERANCE, "{variant}: image {i} differs by {worst}");
            let differ = sample[..plane] != sample[plane..2 * plane];
            assert_eq!(
                differ,
                variant != "mono",
                "{variant}: R and G channels differ for colour"
            );
        }
    }
    // Three channels need three windows.
    let mut cfg = DataConfig::default();
    cfg.intensity.rgb = true;
    let e = cfg.validate().unwrap_err().to_string();
    assert!(e.contains("data.intensity.rgb"), "{e}");
}

/// pydicom's own ultrasound files. `examples_rgb_color.dcm` (RGB, no regions, uncompressed) must match
/// pydicom + numpy to 1e-5. `examples_ybr_color.dcm` is a 30-frame YBR_FULL_422 cine loop in lossy
/// JPEG whose ultrasound region overruns the 320 x 240 image (columns 84-595, rows 31-414): pack crops
/// to the intersection (columns 84-319, rows 31-239) and every frame is one sample. Lossy JPEG is
/// decoded by another library than pydicom's, so its stored values may differ by a count or two
/// (tests/decode_conformance.rs states the lossy tolerance): after z-scoring that was a largest
/// difference of 0.064 here, and the floats are compared within 0.15.
#[test]
fn pydicom_ultrasound_files_load_like_pydicom_and_numpy() {
    for (name, tolerance, frames) in [
        ("examples_rgb_color.dcm", TOLERANCE, 1),
        ("examples_ybr_color.dcm", 0.15, 30),
    ] {
        let file = pydicom_file(name);
        let json = reference_script("write_ultrasound.py", &["--file", s(&file)]);
        let expected = images(&json);
        assert_eq!(expected.len(), frames, "{name}");
        let (rows, cols) = image_shape(&json);
        let dir = tempdir();
        let input = dir.path().join("in");
        std::fs::create_dir_all(&input).unwrap();
        std::fs::copy(&file, input.join(name)).unwrap();
        let (catalog, manifest) = catalogued(&input, dir.path());
        let worst = assert_loader_within(name, &catalog, &manifest, rows, cols, &expected, tolerance);
        eprintln!("{name}: {frames} frame(s) of {rows} x {cols}, largest difference {worst:.2e}");
    }
}
