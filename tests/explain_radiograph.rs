//! Explanations on radiographs: CR images written with pydicom carry a bright marker on the
//! patient's left, stored in both column directions (PatientOrientation L\F and R\F) and half of
//! them MONOCHROME1. Through pack, catalog and the loader's display volume, the overlay shows every
//! marker on image right, bright, as a radiologist reads a PA chest; and `explain` runs on them.

use crate::common::{ok, reference_script, s, tempdir};
use medtrain::catalog::split::Manifest;
use medtrain::data::{DataConfig, Dataset};
use medtrain::explain::overlay::{render_slice, series_flips, SliceView};
use std::path::{Path, PathBuf};

/// Eight marked radiographs, packed, catalogued with a binary label and split in two.
fn marked_catalog(root: &Path) -> (PathBuf, PathBuf) {
    let p = |x: &str| root.join(x);
    reference_script("write_marked_radiographs.py", &[s(&p("cohort")), "8"]);
    let key = p("site.key");
    ok(&[
        "pack",
        s(&p("cohort/dicom")),
        "--out",
        s(&p("pack")),
        "--key",
        s(&key),
        "--create-key",
    ]);
    ok(&["catalog", "build", s(&p("pack")), "--out", s(&p("catalog"))]);
    ok(&[
        "catalog",
        "labels",
        "import",
        s(&p("cohort/labels.csv")),
        "--out",
        s(&p("catalog")),
        "--name",
        "finding",
        "--key",
        s(&key),
    ]);
    ok(&[
        "catalog",
        "split",
        s(&p("catalog")),
        "modality = 'CR'",
        "--out",
        s(&p("split.h5")),
        "--ratios",
        "train=0.5,test=0.5",
    ]);
    (p("catalog"), p("split.h5"))
}

#[test]
fn explain_radiograph_marker_on_the_patients_left_is_drawn_on_image_right() {
    let dir = tempdir();
    let (catalog, manifest) = marked_catalog(dir.path());
    let m = Manifest::load(&manifest).unwrap();
    let cfg = DataConfig {
        size: vec![32, 32],
        fit: true,
        ..DataConfig::default()
    };
    let mut mirrored = 0;
    for split in ["train", "test"] {
        let ds = Dataset::open(&catalog, &m, split, &cfg).unwrap();
        for i in 0..ds.len() {
            let v = ds.series_volume(i).unwrap();
            let [_, rows, cols] = v.shape;
            let window = v.display_window.expect("a radiograph is shown in display units");
            let (flip_cols, flip_rows) = series_flips(ds.catalog(), v.series_row).unwrap();
            mirrored += flip_cols as usize;
            assert!(!flip_rows, "rows run toward the feet in every image");
            let map = vec![0.0f32; rows * cols];
            let img = render_slice(
                &SliceView {
                    hu: &v.values,
                    map: &map,
                    rows,
                    cols,
                    spacing: [v.spacing[1], v.spacing[2]],
                    flip_cols,
                    flip_rows,
                    outline: None,
                    marker: None,
                },
                window,
                64,
            );
            let bright: Vec<usize> = (0..img.height)
                .flat_map(|y| (0..img.width).map(move |x| (x, y)))
                .filter(|&(x, y)| img.pixel(x, y)[0] > 200)
                .map(|(x, _)| x)
                .collect();
            // The marker is 16 × 16 of 64 × 64 pixels: 1/16 of the image, bright once displayed
            // (MONOCHROME1 inverted), all of it right of centre.
            let share = bright.len() as f64 / (img.width * img.height) as f64;
            assert!((0.04..0.09).contains(&share), "{split} {i}: bright share {share}");
            let mean_x = bright.iter().sum::<usize>() as f64 / bright.len() as f64;
            assert!(
                mean_x > img.width as f64 * 0.6,
                "{split} sample {i}: the marker on the patient's left is drawn at x = {mean_x} of {}",
                img.width
            );
        }
    }
    assert_eq!(
        mirrored, 4,
        "the four R\\F images are mirrored for display, the L\\F ones not"
    );

    // `explain` on a radiograph model: one overlay and one montage per series.
    let root = dir.path();
    let config = root.join("cxr.toml");
    std::fs::write(
        &config,
        "[model]\nwidths = [8, 16]\nblocks = [1, 1]\n\n[data]\nsize = [32, 32]\nfit = true\n\
         labels = [\"finding.finding\"]\n\n[train]\nepochs = 1\nbatch_size = 2\n",
    )
    .unwrap();
    let run_dir = root.join("run");
    ok(&[
        "train",
        s(&catalog),
        s(&manifest),
        "--out",
        s(&run_dir),
        "--config",
        s(&config),
    ]);
    let out = root.join("explain");
    ok(&["explain", s(&run_dir), "test", "--out", s(&out)]);
    let pngs = std::fs::read_dir(&out)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "png"))
        .count();
    assert_eq!(pngs, 8, "an overlay and a montage per test series");
}
