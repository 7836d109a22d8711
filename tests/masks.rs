//! Pixel labels: NIfTI label maps imported as a mask label set, checked against the analytic lesion
//! balls of the phantom, against nibabel's reading of the same files (and of nibabel's own re-layouts
//! of them: flipped, reoriented, axes swapped, qform only, NIfTI-2, int16), on an oblique series
//! whose qform nibabel encodes, and the segmentation metrics against numpy/scipy
//! (tests/reference/nifti_masks.py, seg_metrics.py).

use crate::common::{ok, phantom_catalog, reference_script, run, s, tempdir};
use medtrain::catalog::columns::Level;
use medtrain::catalog::query::{run as query, Request};
use medtrain::catalog::view::Catalog;
use medtrain::deid::{IdKind, SiteKey};
use medtrain::pack::masks::MaskShard;
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

/// A voxel centre this close to a ball's surface may fall either way (lesions.csv rounds to 0.01 mm).
const SURFACE_SLACK_MM: f64 = 0.02;

fn import(catalog: &Path, key: &Path, csv: &Path, name: &str) -> (i32, String, String) {
    import_as(catalog, key, csv, name, &[])
}

/// `catalog labels masks INPUT --out CATALOG --name NAME --key KEY --json` with `format` (flags).
fn import_as(catalog: &Path, key: &Path, input: &Path, name: &str, format: &[&str]) -> (i32, String, String) {
    let mut args = vec!["catalog", "labels", "masks", s(input)];
    args.extend_from_slice(format);
    args.extend(["--out", s(catalog), "--name", name, "--key", s(key), "--json"]);
    run(&args)
}

fn csv_rows(path: &Path) -> Vec<HashMap<String, String>> {
    let text = fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header: Vec<String> = lines.next().unwrap().split(',').map(String::from).collect();
    lines
        .map(|l| {
            header
                .iter()
                .cloned()
                .zip(l.split(',').map(String::from))
                .collect()
        })
        .collect()
}

/// Every catalog series with a mask in the newest version of `set`: (row, labels in stored order).
fn masks_of(catalog: &Path, set: &str) -> HashMap<usize, Vec<u16>> {
    let cat = Catalog::open(catalog).unwrap();
    let meta = &cat.label_set(set, None).expect("the set").meta;
    let m = meta.masks.as_ref().expect("a mask set");
    let keys = cat.col_keys(Level::Series, "series_key").unwrap();
    let mut out = HashMap::new();
    for shard in &m.shards {
        let path = catalog.join(&m.dir).join(&shard.file);
        let (hash, _) = medtrain::pack::shard::hash_file(&path).unwrap();
        assert_eq!(hash, shard.blake3, "{}", path.display());
        let open = MaskShard::open(&path).unwrap();
        for (row, k) in keys.iter().enumerate() {
            let key = medtrain::catalog::columns::cell_text(k);
            if let Some((view, shape)) = open.volume(key) {
                assert_eq!(view.len(), shape.iter().product::<usize>());
                out.insert(row, (0..view.len()).map(|i| view.get(i)).collect());
            }
        }
    }
    out
}

/// LPS centre of voxel (slice k, row r, column c) of catalog series `row`, by DICOM's formula from
/// the catalog's columns: IPP_k + c·Δc·X + r·Δr·Y.
fn voxel_centre(cat: &Catalog, row: usize, k: usize, r: usize, c: usize) -> [f64; 3] {
    let start = cat.col_u64(Level::Series, "slice_start").unwrap()[row] as usize;
    let ipp = &cat.col_f64(Level::Slice, "image_position").unwrap()[3 * (start + k)..3 * (start + k) + 3];
    let o = &cat.col_f64(Level::Series, "orientation").unwrap()[6 * row..6 * row + 6];
    let sp = &cat.col_f64(Level::Series, "pixel_spacing").unwrap()[2 * row..2 * row + 2];
    std::array::from_fn(|d| ipp[d] + c as f64 * sp[1] * o[d] + r as f64 * sp[0] * o[3 + d])
}

fn dims(cat: &Catalog, row: usize) -> [usize; 3] {
    [
        cat.col_u32(Level::Series, "n_slices").unwrap()[row] as usize,
        cat.col_u32(Level::Series, "rows").unwrap()[row] as usize,
        cat.col_u32(Level::Series, "cols").unwrap()[row] as usize,
    ]
}

/// Labelled voxels of a mask as (LPS centre, label), sorted like the reference script sorts them.
fn labelled_points(cat: &Catalog, row: usize, mask: &[u16]) -> Vec<([f64; 3], u16)> {
    let [n, rows, cols] = dims(cat, row);
    let mut out = Vec::new();
    for k in 0..n {
        for r in 0..rows {
            for c in 0..cols {
                let v = mask[(k * rows + r) * cols + c];
                if v != 0 {
                    out.push((voxel_centre(cat, row, k, r, c), v));
                }
            }
        }
    }
    out.sort_by(|a, b| {
        (a.0[2], a.0[1], a.0[0])
            .partial_cmp(&(b.0[2], b.0[1], b.0[0]))
            .unwrap()
    });
    out
}

fn assert_same_points(ours: &[([f64; 3], u16)], nibabel: &serde_json::Value, what: &str) {
    let theirs = nibabel.as_array().unwrap();
    assert_eq!(ours.len(), theirs.len(), "{what}: labelled voxels");
    for ((p, label), t) in ours.iter().zip(theirs) {
        let q: Vec<f64> = t["lps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let off = (0..3).map(|d| (p[d] - q[d]).powi(2)).sum::<f64>().sqrt();
        assert!(off < 1e-3, "{what}: our voxel at {p:?}, nibabel's at {q:?}");
        assert_eq!(*label as u64, t["label"].as_u64().unwrap(), "{what}");
    }
}

#[test]
fn phantom_masks_are_the_lesion_balls_where_nibabel_puts_them_in_every_layout() {
    let dir = tempdir();
    let (catalog, key_path) = phantom_catalog(dir.path(), "4", "32");
    let truth = dir.path().join("phantom/truth");
    let (code, out, err) = import(&catalog, &key_path, &truth.join("masks.csv"), "lesions");
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["series"], 4);

    let key = SiteKey::load(&key_path).unwrap();
    let cat = Catalog::open(&catalog).unwrap();
    let keys = cat.col_keys(Level::Series, "series_key").unwrap();
    let row_of = |uid: &str| {
        let k = key.pseudonym(IdKind::Series, uid);
        keys.iter()
            .position(|c| medtrain::catalog::columns::cell_text(c) == &k[..k.len().min(32)])
            .expect("series in the catalog")
    };
    let masks = masks_of(&catalog, "lesions");
    let lesions = csv_rows(&truth.join("lesions.csv"));
    let patients = csv_rows(&truth.join("patients.csv"));
    let set = cat.label_set("lesions", None).unwrap();
    let (components, volume) = (
        set.values("components").unwrap(),
        set.values("volume_mm3").unwrap(),
    );
    let mut with_nodules = 0;
    for m in csv_rows(&truth.join("masks.csv")) {
        let row = row_of(&m["SeriesInstanceUID"]);
        let mask = &masks[&row];
        let balls: Vec<([f64; 3], f64)> = lesions
            .iter()
            .filter(|l| l["SeriesInstanceUID"] == m["SeriesInstanceUID"])
            .map(|l| {
                let f = |k: &str| l[k].parse::<f64>().unwrap();
                ([f("CenterXMm"), f("CenterYMm"), f("CenterZMm")], f("RadiusMm"))
            })
            .collect();
        // The analytic truth: a voxel is labelled exactly when its centre is inside a ball.
        let [n, rows, cols] = dims(&cat, row);
        let mut labelled = 0;
        for k in 0..n {
            for r in 0..rows {
                for c in 0..cols {
                    let p = voxel_centre(&cat, row, k, r, c);
                    let gap = balls
                        .iter()
                        .map(|(centre, radius)| {
                            (0..3).map(|d| (p[d] - centre[d]).powi(2)).sum::<f64>().sqrt() - radius
                        })
                        .fold(f64::INFINITY, f64::min);
                    let v = mask[(k * rows + r) * cols + c];
                    labelled += (v != 0) as u64;
                    if gap < -SURFACE_SLACK_MM {
                        assert_eq!(v, 1, "voxel ({k}, {r}, {c}) is {gap:.3} mm inside a ball");
                    } else if gap > SURFACE_SLACK_MM {
                        assert_eq!(v, 0, "voxel ({k}, {r}, {c}) is {gap:.3} mm outside every ball");
                    }
                }
            }
        }
        let nodules: f64 = patients
            .iter()
            .find(|p| p["PatientID"] == m["PatientID"])
            .unwrap()["NoduleCount"]
            .parse()
            .unwrap();
        with_nodules += (nodules > 0.0) as u64;
        assert!(components[row] <= nodules && (labelled > 0) == (nodules > 0.0));
        let sp = &cat.col_f64(Level::Series, "pixel_spacing").unwrap()[2 * row..2 * row + 2];
        let step =
            (voxel_centre(&cat, row, n - 1, 0, 0)[2] - voxel_centre(&cat, row, 0, 0, 0)[2]) / (n - 1) as f64;
        assert!((volume[row] - labelled as f64 * sp[0] * sp[1] * step).abs() < 1e-6 * volume[row].max(1.0));
        // nibabel places the same voxels at the same points.
        let theirs: serde_json::Value = serde_json::from_str(&reference_script(
            "nifti_masks.py",
            &["points", s(&truth.join(&m["File"]))],
        ))
        .unwrap();
        assert_same_points(&labelled_points(&cat, row, mask), &theirs, &m["File"]);
    }
    assert!(with_nodules > 0, "the cohort has a nodule to test with");
    let count = |filter: &str, level| query(&cat, &Request::count(filter, level)).unwrap().count;
    assert_eq!(count("lesions.volume_mm3 > 0", Level::Series), with_nodules);
    assert_eq!(
        count("lesions.area_mm2 > 0", Level::Slice),
        masks
            .values()
            .map(|m| m.chunks(32 * 32).filter(|s| s.iter().any(|&v| v != 0)).count() as u64)
            .sum::<u64>()
    );

    // nibabel's own layouts of a mask with a nodule import to the same voxels; the rest are refused.
    let m = csv_rows(&truth.join("masks.csv"))
        .into_iter()
        .find(|m| masks[&row_of(&m["SeriesInstanceUID"])].iter().any(|&v| v != 0))
        .unwrap();
    let row = row_of(&m["SeriesInstanceUID"]);
    let vdir = dir.path().join("variants");
    fs::create_dir_all(&vdir).unwrap();
    let files: HashMap<String, String> = serde_json::from_str(&reference_script(
        "nifti_masks.py",
        &["variants", s(&truth.join(&m["File"])), s(&vdir)],
    ))
    .unwrap();
    let state_before = fs::read(catalog.join("catalog.json")).unwrap();
    for (name, file) in &files {
        let csv = vdir.join(format!("{name}.csv"));
        fs::write(
            &csv,
            format!("File,SeriesInstanceUID\n{file},{}\n", m["SeriesInstanceUID"]),
        )
        .unwrap();
        let set = format!("v_{name}");
        let (code, _, err) = import(&catalog, &key_path, &csv, &set);
        match name.as_str() {
            "shifted" | "probability" => {
                assert_eq!(code, 1, "{name} must be refused");
                let why = if name == "shifted" {
                    "mm apart"
                } else {
                    "holds 0.5"
                };
                assert!(
                    err.contains(why) && err.contains(&format!("line 2 ({file})")),
                    "{name}: {err}"
                );
                if name == "shifted" {
                    assert!(err.contains("mask grid") && err.contains("series grid"), "{err}");
                }
                assert_eq!(
                    fs::read(catalog.join("catalog.json")).unwrap(),
                    state_before,
                    "{name}"
                );
                let leftovers: Vec<_> = fs::read_dir(&catalog)
                    .unwrap()
                    .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
                    .filter(|n| n.contains(&set))
                    .collect();
                assert!(leftovers.is_empty(), "{name} left {leftovers:?}");
            }
            _ => {
                assert_eq!(code, 0, "{name}: {err}");
                assert_eq!(masks_of(&catalog, &set)[&row], masks[&row], "{name}");
                fs::write(catalog.join("catalog.json"), &state_before).unwrap();
            }
        }
    }
    // A series the catalog does not hold is refused with its line, and nothing is written.
    let csv = vdir.join("unknown.csv");
    fs::write(
        &csv,
        format!("File,SeriesInstanceUID\n{},1.2.3.4.5\n", files["int16"]),
    )
    .unwrap();
    let (code, _, err) = import(&catalog, &key_path, &csv, "unknown");
    assert!(
        code == 1 && err.contains("line 2") && err.contains("not in the catalog"),
        "{err}"
    );
    assert_eq!(fs::read(catalog.join("catalog.json")).unwrap(), state_before);
}

#[test]
fn an_oblique_series_takes_the_qform_nibabel_writes_for_it() {
    use medtrain::dicom::decode::PixelBuffer;
    use medtrain::dicom::series::ItemKind;
    use medtrain::pack::index::PackIndex;
    use medtrain::pack::shard::{PackedItem, ShardWriter};
    use medtrain::pack::tables::{SeriesRecord, SliceRecord};

    let dir = tempdir();
    let key_path = crate::catalog_common::key_file(dir.path());
    let key = SiteKey::load(&key_path).unwrap();
    // Rows and columns turned 30° about z, then tilted 20° about x; slices 1.7 mm apart along the normal.
    let (a, b) = (30f64.to_radians(), 20f64.to_radians());
    let x = [a.cos(), a.sin(), 0.0];
    let y = [-a.sin() * b.cos(), a.cos() * b.cos(), b.sin()];
    let normal = [
        x[1] * y[2] - x[2] * y[1],
        x[2] * y[0] - x[0] * y[2],
        x[0] * y[1] - x[1] * y[0],
    ];
    let (n, rows, cols, step) = (5usize, 6usize, 7usize, 1.7);
    let first = [12.5, -40.25, 80.0];
    let ipp = |k: usize| -> [f64; 3] { std::array::from_fn(|d| first[d] + k as f64 * step * normal[d]) };
    let uid = "1.2.826.0.1.77.1.1";
    let record = SeriesRecord {
        series_key: key.pseudonym(IdKind::Series, uid),
        study_key: key.pseudonym(IdKind::Study, "1.2.826.0.1.77.1"),
        patient_key: key.pseudonym(IdKind::Patient, "OBL001"),
        modality: "MR".into(),
        kind: ItemKind::Volume,
        study_day: 0,
        n_slices: n as u32,
        rows: rows as u32,
        cols: cols as u32,
        samples_per_pixel: 1,
        dtype: "i16".into(),
        pixel_spacing: [0.9, 1.1],
        slice_spacing: step,
        slice_thickness: step,
        orientation: [x[0], x[1], x[2], y[0], y[1], y[2]],
        origin: first,
        photometric: "MONOCHROME2".into(),
        transform: "none".into(),
        rescale_slope: 1.0,
        rescale_intercept: 0.0,
        window_center: f64::NAN,
        window_width: f64::NAN,
        body_part: "ANKLE".into(),
        convolution_kernel: String::new(),
        dataset: String::new(),
        data_offset: 0,
        data_length: 0,
        first_slice: 0,
        source_hash: "0".repeat(32),
        n_clamped: 0,
        n_padding: 0,
        presentation: Default::default(),
    };
    let slices = (0..n)
        .map(|k| SliceRecord {
            series_index: 0,
            position: k as f64 * step,
            image_position: ipp(k),
            thickness: step,
            sop_key: key.pseudonym(IdKind::Instance, &format!("{uid}.{k}")),
            instance_number: k as i32 + 1,
            frame: 0,
        })
        .collect();
    let pack = dir.path().join("pack");
    fs::create_dir_all(&pack).unwrap();
    let mut w = ShardWriter::create(&pack, "shard-0-0000.h5", &key.fingerprint()).unwrap();
    w.add(PackedItem {
        record,
        slices,
        pixels: PixelBuffer::I16(vec![0; n * rows * cols]),
        shape: vec![n, rows, cols],
        luts: Default::default(),
    })
    .unwrap();
    let mut index = PackIndex::new(&key.fingerprint());
    index.shards.push(w.finish().unwrap());
    index.save(&pack).unwrap();
    let catalog = dir.path().join("catalog");
    ok(&["catalog", "build", s(&pack), "--out", s(&catalog)]);

    let voxels = [[0, 0, 0], [6, 5, 4], [3, 2, 1], [1, 4, 3]]; // (column, row, slice)
    let spec = serde_json::json!({
        "orientation": [x[0], x[1], x[2], y[0], y[1], y[2]],
        "pixel_spacing": [0.9, 1.1],
        "first_position": first,
        "slice_step": normal.map(|v| v * step),
        "dims": [cols, rows, n],
        "voxels": voxels,
    });
    let spec_path = dir.path().join("oblique.json");
    fs::write(&spec_path, spec.to_string()).unwrap();
    let nii = dir.path().join("oblique.nii.gz");
    let theirs: serde_json::Value = serde_json::from_str(&reference_script(
        "nifti_masks.py",
        &["oblique", s(&spec_path), s(&nii)],
    ))
    .unwrap();
    let csv = dir.path().join("map.csv");
    fs::write(
        &csv,
        format!("PatientID,SeriesInstanceUID,File\nOBL001,{uid},oblique.nii.gz\n"),
    )
    .unwrap();
    let (code, _, err) = import(&catalog, &key_path, &csv, "tendon");
    assert_eq!(code, 0, "{err}");
    let cat = Catalog::open(&catalog).unwrap();
    let masks = masks_of(&catalog, "tendon");
    let ours = labelled_points(&cat, 0, &masks[&0]);
    assert_eq!(ours.len(), voxels.len());
    assert_same_points(&ours, &theirs, "oblique qform");
}

#[test]
fn segmentation_metrics_match_numpy_and_scipy() {
    use medtrain::train::segmetrics::case_metrics;
    // Blobs on an anisotropic grid, masks touching the border, an empty truth, an empty prediction.
    let dims = [6usize, 9, 11];
    let len: usize = dims.iter().product();
    let ball = |c: [f64; 3], r: f64, sp: [f64; 3]| -> Vec<bool> {
        (0..len)
            .map(|i| {
                let p = [(i / 99) as f64, (i % 99 / 11) as f64, (i % 11) as f64];
                (0..3).map(|d| ((p[d] - c[d]) * sp[d]).powi(2)).sum::<f64>() <= r * r
            })
            .collect()
    };
    let sp = [2.5, 0.8, 0.7];
    let noisy = |m: &[bool], seed: usize| -> Vec<bool> {
        m.iter()
            .enumerate()
            .map(|(i, &v)| v ^ ((i * 7919 + seed * 104_729) % 23 == 0))
            .collect()
    };
    let a = ball([2.0, 4.0, 5.0], 3.2, sp);
    let b = ball([2.6, 4.5, 4.0], 2.9, sp);
    let edge = ball([0.0, 0.0, 0.0], 4.0, sp);
    let empty = vec![false; len];
    let cases = vec![
        (a.clone(), b.clone()),
        (noisy(&a, 1), a.clone()),
        (edge.clone(), noisy(&edge, 2)),
        (a.clone(), empty.clone()),
        (empty.clone(), b.clone()),
        (empty.clone(), empty.clone()),
    ];
    let json: Vec<serde_json::Value> = cases
        .iter()
        .map(|(p, t)| {
            serde_json::json!({
                "dims": dims, "spacing": sp,
                "pred": p.iter().map(|&v| v as u8).collect::<Vec<_>>(),
                "truth": t.iter().map(|&v| v as u8).collect::<Vec<_>>(),
            })
        })
        .collect();
    let dir = tempdir();
    let path = dir.path().join("cases.json");
    fs::write(&path, serde_json::to_string(&json).unwrap()).unwrap();
    let want: Vec<serde_json::Value> =
        serde_json::from_str(&reference_script("seg_metrics.py", &[s(&path)])).unwrap();
    for (i, ((p, t), w)) in cases.iter().zip(&want).enumerate() {
        let got = case_metrics(p, t, dims, sp);
        for (name, value) in [
            ("dice", got.dice),
            ("iou", got.iou),
            ("hd95", got.hd95),
            ("msd", got.msd),
        ] {
            match (value, w[name].as_f64()) {
                (None, None) => {}
                (Some(x), Some(y)) => assert!((x - y).abs() < 1e-9, "case {i} {name}: {x} vs scipy {y}"),
                other => panic!("case {i} {name}: {other:?}"),
            }
        }
    }
}

#[test]
fn lidc_readers_and_their_consensus_match_elementtree_matplotlib_and_pydicom() {
    let dir = tempdir();
    let p = |x: &str| dir.path().join(x);
    let (catalog, key) = phantom_catalog(dir.path(), "3", "64");
    let lidc = p("phantom/truth/lidc");
    let args = |inputs: &Path, name: &str| {
        import_as(
            &catalog,
            &key,
            inputs,
            name,
            &["--format", "lidc", "--agreement", "2"],
        )
    };
    let (code, _, err) = args(&lidc, "lidc");
    assert_eq!(code, 0, "{err}");
    let masks = masks_of(&catalog, "lidc");
    let cat = Catalog::open(&catalog).unwrap();
    let set = cat.label_set("lidc", None).unwrap();
    assert_eq!(set.meta.masks.as_ref().unwrap().readers_agree, Some(2));
    let (voxels, readers) = (set.values("voxels").unwrap(), set.values("readers").unwrap());
    let site = SiteKey::load(&key).unwrap();
    let keys = cat.col_keys(Level::Series, "series_key").unwrap();
    let mut disagreements = 0;
    let mut files: Vec<PathBuf> = fs::read_dir(&lidc).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    for xml in &files {
        let want: serde_json::Value = serde_json::from_str(&reference_script(
            "lidc_masks.py",
            &[s(xml), s(&p("phantom/dicom")), "2"],
        ))
        .unwrap();
        let k = site.pseudonym(IdKind::Series, want["series_uid"].as_str().unwrap());
        let row = keys
            .iter()
            .position(|c| medtrain::catalog::columns::cell_text(c) == k)
            .unwrap();
        let bits: Vec<u16> = want["bits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u16)
            .collect();
        assert_eq!(masks[&row], bits, "{}: readers' outlines", xml.display());
        let consensus = want["consensus"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v.as_u64() == Some(1))
            .count();
        assert_eq!(
            voxels[row],
            consensus as f64,
            "{}: consensus voxels",
            xml.display()
        );
        assert_eq!(readers[row], want["readers"].as_f64().unwrap());
        let all = (1u16 << want["readers"].as_u64().unwrap()) - 1;
        disagreements += bits.iter().filter(|&&b| b != 0 && b != all).count();
    }
    assert!(disagreements > 0, "the simulated readers disagree somewhere");
    // A ROI on a slice the series does not have is refused with the file and the element.
    let bad = p("bad.xml");
    let text = fs::read_to_string(&files[0]).unwrap();
    let at = text.find("<imageSOP_UID>").expect("a ROI") + "<imageSOP_UID>".len();
    let end = at + text[at..].find('<').unwrap();
    fs::write(&bad, format!("{}9.9.9.9{}", &text[..at], &text[end..])).unwrap();
    let before = fs::read(catalog.join("catalog.json")).unwrap();
    let (code, _, err) = args(&bad, "broken");
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("bad.xml") && err.contains("<imageSOP_UID> \"9.9.9.9\"") && err.contains("line "),
        "{err}"
    );
    assert_eq!(fs::read(catalog.join("catalog.json")).unwrap(), before);
    assert!(!catalog.join("masks-broken-v1").exists() && !catalog.join("masks-broken-v1.partial").exists());
}

/// RT Structure Sets (the phantom's nodules as planar contours in mm) rasterise as pydicom, numpy and
/// matplotlib do, a nested contour cuts a hole, and a contour on an image the series lacks is
/// refused naming the file and the element, with nothing imported.
#[test]
fn rtstruct_contours_match_pydicom_and_matplotlib_holes_included() {
    let dir = tempdir();
    let p = |x: &str| dir.path().join(x);
    let (catalog, key) = phantom_catalog(dir.path(), "4", "256");
    let rtdir = p("phantom/truth/rtstruct");
    let mut files: Vec<PathBuf> = fs::read_dir(&rtdir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    // The file of the largest nodule gets a hole (written beside, then put in its place).
    let csv = fs::read_to_string(p("phantom/truth/patients.csv")).unwrap();
    let diameter = |f: &PathBuf| {
        let id = f.file_stem().unwrap().to_string_lossy().to_string();
        csv.lines()
            .find(|l| l.starts_with(&format!("{id},")))
            .and_then(|l| l.split(',').nth(4)?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let with_nodule = files
        .iter()
        .max_by(|a, b| diameter(a).total_cmp(&diameter(b)))
        .unwrap()
        .clone();
    assert!(diameter(&with_nodule) > 8.0, "a nodule large enough for a hole");
    let holed = p("holed.dcm");
    reference_script("rtstruct_masks.py", &["hole", s(&with_nodule), s(&holed)]);
    fs::rename(&holed, &with_nodule).unwrap();
    let args = |inputs: &Path, name: &str| import_as(&catalog, &key, inputs, name, &["--format", "rtstruct"]);
    let (code, _, err) = args(&rtdir, "rt");
    assert_eq!(code, 0, "{err}");
    let masks = masks_of(&catalog, "rt");
    let cat = Catalog::open(&catalog).unwrap();
    let site = SiteKey::load(&key).unwrap();
    let keys = cat.col_keys(Level::Series, "series_key").unwrap();
    let mut labelled = 0;
    for file in &files {
        let want: serde_json::Value = serde_json::from_str(&reference_script(
            "rtstruct_masks.py",
            &["masks", s(file), s(&p("phantom/dicom"))],
        ))
        .unwrap();
        let k = site.pseudonym(IdKind::Series, want["series_uid"].as_str().unwrap());
        let row = keys
            .iter()
            .position(|c| medtrain::catalog::columns::cell_text(c) == k)
            .unwrap();
        let bits: Vec<u16> = want["bits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u16)
            .collect();
        let differ = masks[&row].iter().zip(&bits).filter(|(a, b)| a != b).count();
        assert_eq!(masks[&row].len(), bits.len(), "{}: voxels", file.display());
        assert_eq!(
            differ,
            0,
            "{}: ROI bits differ at {differ} voxels",
            file.display()
        );
        labelled += bits.iter().filter(|&&b| b != 0).count();
    }
    assert!(labelled > 0, "the phantom's nodules are labelled");
    // The hole: the holed file's largest slice of ROI 1 has unlabelled pixels inside its outline,
    // which the reference agrees with above; here, that the hole is really there.
    let want: serde_json::Value = serde_json::from_str(&reference_script(
        "rtstruct_masks.py",
        &["masks", s(&with_nodule), s(&p("phantom/dicom"))],
    ))
    .unwrap();
    let dims: Vec<usize> = want["dims"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let k = site.pseudonym(IdKind::Series, want["series_uid"].as_str().unwrap());
    let row = keys
        .iter()
        .position(|c| medtrain::catalog::columns::cell_text(c) == k)
        .unwrap();
    let plane = dims[1] * dims[2];
    let holes = (0..dims[0])
        .filter(|&z| {
            let m = &masks[&row][z * plane..(z + 1) * plane];
            // A row of the slice that enters ROI 1, leaves it and enters it again.
            (0..dims[1]).any(|y| {
                let line: Vec<bool> = (0..dims[2]).map(|x| m[y * dims[2] + x] & 1 != 0).collect();
                line.windows(2).filter(|w| !w[0] && w[1]).count() >= 2
            })
        })
        .count();
    assert!(holes >= 1, "a nested contour cuts a hole");
    // A contour naming an image the series lacks (the reference script rewrites one reference).
    let bad = p("bad.dcm");
    reference_script("rtstruct_masks.py", &["unknown_image", s(&with_nodule), s(&bad)]);
    let before = fs::read(catalog.join("catalog.json")).unwrap();
    let (code, _, err) = args(&bad, "broken");
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("bad.dcm") && err.contains("ContourSequence[0]") && err.contains("\"9.9.9.9\""),
        "{err}"
    );
    assert_eq!(
        fs::read(catalog.join("catalog.json")).unwrap(),
        before,
        "nothing imported"
    );
    assert!(!catalog.join("masks-broken-v1").exists() && !catalog.join("masks-broken-v1.partial").exists());
}

/// DICOM SEGs that highdicom writes of the phantom's truth (binary; fractional with pixels just
/// under half around the nodules; frames placed by plane position alone) import to exactly the
/// NIfTI truth's voxels (which the test above holds to the analytic balls); a SEG whose frame
/// references an instance the series lacks is refused with the reason, and nothing is written.
#[test]
fn dicom_segs_from_highdicom_import_to_the_nifti_truth() {
    let dir = tempdir();
    let (catalog, key) = phantom_catalog(dir.path(), "6", "48");
    let truth = dir.path().join("phantom/truth");
    let (code, _, err) = import(&catalog, &key, &truth.join("masks.csv"), "lesions");
    assert_eq!(code, 0, "{err}");
    let segs = dir.path().join("segs");
    let written: serde_json::Value = serde_json::from_str(&reference_script(
        "write_seg.py",
        &[s(&truth), s(&dir.path().join("phantom/dicom")), s(&segs)],
    ))
    .unwrap();
    let n = written["series"].as_array().unwrap().len();
    assert!(n >= 2, "series with a nodule: {written}");
    let want = masks_of(&catalog, "lesions");
    for mode in ["binary", "fractional", "position"] {
        let name = format!("seg_{mode}");
        let (code, _, err) = import_as(&catalog, &key, &segs.join(mode), &name, &["--format", "seg"]);
        assert_eq!(code, 0, "{mode}: {err}");
        let got = masks_of(&catalog, &name);
        assert_eq!(got.len(), n, "{mode}: one mask per SEG");
        for (row, mask) in &got {
            let truth: Vec<bool> = want[row].iter().map(|&v| v != 0).collect();
            let ours: Vec<bool> = mask.iter().map(|&v| v != 0).collect();
            assert!(truth.iter().any(|&v| v), "{mode}: series row {row} has a nodule");
            assert_eq!(ours, truth, "{mode}: series row {row}");
        }
    }
    let (code, _, err) = import_as(
        &catalog,
        &key,
        &segs.join("unknown"),
        "seg_unknown",
        &["--format", "seg"],
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("9.9.9.9") && err.contains("not a slice of the series"),
        "{err}"
    );
    assert!(Catalog::open(&catalog)
        .unwrap()
        .label_set("seg_unknown", None)
        .is_none());
}
