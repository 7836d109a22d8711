//! The README's main command, end to end: phantom → pack → catalog → split → training on 2 ranks →
//! evaluation → explanations. The nodule task must be learned for real (validation AUC ≥ 0.9 over at
//! least 40 held-out patients) while the trivial baseline (brightest lung voxel per series) stays
//! ≤ 0.75, and the maps of the method and layer chosen on validation must point at the test split's
//! lesions (pointing game).

use crate::common::tempdir;
use std::path::Path;
use std::process::Command;

#[test]
fn main_command_learns_the_nodule_task_and_beats_the_baseline() {
    let dir = tempdir();
    let out = dir.path().join("demo");
    crate::common::fixed_site_key(&out);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let result = Command::new("bash")
        .arg(root.join("scripts/quickstart.sh"))
        .arg(&out)
        .env("MEDTRAIN_BIN", env!("CARGO_BIN_EXE_medtrain"))
        .env("MEDTRAIN_RANKS", "2")
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .output()
        .expect("run scripts/quickstart.sh");
    let stdout = String::from_utf8_lossy(&result.stdout);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(result.status.success(), "quickstart failed\n{stdout}\n{stderr}");
    let status: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("run/train-status.json")).unwrap()).unwrap();
    assert_eq!(status["status"], "finished");
    assert_eq!(
        status["world_size"], 2,
        "the demo trains on 2 ranks when mpirun is there"
    );
    let eval = &status["final_eval"];
    let series = &eval["series"];
    let patients_held_out = eval["patients"]["n"].as_u64().unwrap();
    assert!(
        patients_held_out >= 40,
        "validation covers {patients_held_out} patients"
    );
    let auc = series["auc"]["estimate"].as_f64().unwrap();
    let baseline = eval["baseline_series"]["auc"]["estimate"].as_f64().unwrap();
    eprintln!("demo: validation series AUC {auc:.3}, brightest-lung-voxel baseline {baseline:.3}");
    assert!(auc >= 0.9, "validation AUC {auc:.3} < 0.9\n{stdout}");
    assert!(baseline <= 0.75, "baseline AUC {baseline:.3} > 0.75");
    for f in [
        "run/report.md",
        "run/loss.png",
        "run/validation.png",
        "eval/eval.json",
        "explain/report.md",
        "explain/quality.md",
        "explain/maps.h5",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    // The explanation quality table parses: a method and layer chosen on val (three methods at the
    // stem and the three block outputs), numbers for them on test.
    let quality: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("explain/quality.json")).unwrap()).unwrap();
    let best = quality["best_layer"].as_str().unwrap();
    let method = quality["method"].as_str().unwrap();
    assert_eq!(
        quality["validation"].as_array().unwrap().len(),
        12,
        "three methods at four layers scored"
    );
    let hit_rate = quality["best"]["hit_rate"].as_f64().unwrap();
    let series = quality["best"]["series"].as_u64().unwrap();
    assert!(quality["sanity"]["correlations"].as_array().unwrap().len() >= 2);
    eprintln!("demo: explain best {method} at {best}, test pointing-game hit rate {hit_rate:.3} over {series} series");
    // Maps that miss their lesions (a misplaced up-sampling grid scored 0.17–0.5 at deep layers) fall
    // well below this; trained models of the demo reached 0.92–1.0 at the chosen pair.
    assert!(series >= 8, "{series} test series with lesions");
    assert!(
        hit_rate >= 0.75,
        "test pointing-game hit rate {hit_rate:.3} < 0.75"
    );
    // TensorBoard holds the validation ROC curve of every epoch as an image.
    let tb = crate::common::reference_script("read_tensorboard.py", &[out.join("run/tb").to_str().unwrap()]);
    let tb: serde_json::Value = serde_json::from_str(tb.lines().last().unwrap()).unwrap();
    let rocs = tb["images"]["validation/roc"].as_array().unwrap();
    assert_eq!(
        rocs.len() as u64,
        status["epochs"].as_u64().unwrap(),
        "{}",
        tb["images"]
    );
    assert!(rocs.iter().all(|r| r[1] == 640 && r[2] == 400), "{rocs:?}");
    // And Grad-CAM overlays of the same 4 validation series after epochs 2 and 4 (explain_every = 2),
    // also kept under run/explain-epochs/.
    let cams: Vec<(&String, &serde_json::Value)> = tb["images"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(tag, _)| tag.starts_with("gradcam/"))
        .collect();
    assert_eq!(cams.len(), 4, "{}", tb["images"]);
    assert!(
        cams.iter().all(|(_, v)| v.as_array().unwrap().len() == 2),
        "{cams:?}"
    );
    assert!(out.join("run/explain-epochs/epoch-4/report.md").is_file());
    let pngs = std::fs::read_dir(out.join("explain"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "png"))
        .count();
    assert!(pngs >= 2, "{pngs} overlay images");
    // The overlays show heat over the lesions, not only the cross. Over the test overlays whose slice
    // shows a lesion: in the median overlay at least half the lesion's pixels are coloured (a map
    // that misses its lesion, as the pointing game allows for a quarter, colours none of it), and,
    // pooled, coloured pixels are at least twice as dense within 5 mm of a lesion as over the rest of
    // the lung. (The trained weights, and with them the maps' spread, differ between CPUs: the same
    // commit gave ≥ 5× on one AMD EPYC VM and 2.7× (1.000 against 0.374) on another, while its
    // pointing game, coverage and AUC stayed where they are required to be.)
    let per_overlay = heat_on_lesions(&out.join("explain"));
    let density = |c: usize, n: usize| c as f64 / n.max(1) as f64;
    let mut coverage: Vec<f64> = per_overlay
        .iter()
        .map(|h| density(h.lesion_coloured, h.lesion))
        .collect();
    coverage.sort_by(f64::total_cmp);
    let heat = per_overlay.iter().fold(HeatCounts::default(), |a, h| HeatCounts {
        overlays: a.overlays + 1,
        lesion: a.lesion + h.lesion,
        lesion_coloured: a.lesion_coloured + h.lesion_coloured,
        near: a.near + h.near,
        near_coloured: a.near_coloured + h.near_coloured,
        rest: a.rest + h.rest,
        rest_coloured: a.rest_coloured + h.rest_coloured,
    });
    let (near, rest) = (
        density(heat.near_coloured, heat.near),
        density(heat.rest_coloured, heat.rest),
    );
    let median = coverage.get(coverage.len() / 2).copied().unwrap_or(0.0);
    eprintln!(
        "demo: {} overlays with a lesion, share of lesion pixels coloured per overlay {coverage:.2?} \
         (median {median:.2}), within 5 mm {near:.3}, rest of the lung {rest:.4}",
        heat.overlays
    );
    assert!(heat.overlays >= 4 && heat.lesion >= 100, "{heat:?}");
    assert!(
        median >= 0.5,
        "median share of lesion pixels coloured {median:.3}: {coverage:?}"
    );
    assert!(
        near >= 2.0 * rest,
        "heat density near the lesions {near:.3}, elsewhere in the lung {rest:.4}"
    );
}

/// `scripts/demo.sh achilles` on a reduced cohort (60 patients): tendon ultrasound and MR with the
/// hand-crafted features fused late. The healing grade must be learned: test MAE ≤ 0.6 × the mean
/// predictor's (the training split's mean grade, computed here from the targets), with overlays
/// written for the ultrasound and MR series of the test split.
#[test]
fn achilles_demo_learns_the_healing_grade() {
    use medtrain::catalog::split::Manifest;
    use medtrain::data::{DataConfig, Dataset};
    let (_dir, out, eval) = run_demo("achilles", 60);
    let mae = eval["mae"].as_f64().unwrap();
    let manifest = Manifest::load(&out.join("manifest.h5")).unwrap();
    let cfg = DataConfig {
        size: vec![48, 48],
        fit: true,
        labels: vec!["healing.score".into()],
        ..DataConfig::default()
    };
    let grades = |split: &str| {
        let ds = Dataset::open_lazy(&out.join("catalog"), &manifest, split, &cfg).unwrap();
        (0..ds.len())
            .map(|i| {
                let (mut v, mut m) = ([0.0f32], [0.0f32]);
                ds.target(i, &mut v, &mut m);
                assert_eq!(m[0], 1.0, "every series has a grade");
                v[0] as f64
            })
            .collect::<Vec<f64>>()
    };
    let train = grades("train");
    let mean = train.iter().sum::<f64>() / train.len() as f64;
    let test = grades("test");
    let mean_mae = test.iter().map(|g| (g - mean).abs()).sum::<f64>() / test.len() as f64;
    eprintln!(
        "demo achilles: test MAE {mae:.3}, mean predictor {mean_mae:.3}, baselines {}",
        eval["baselines"]
    );
    assert!(
        mae <= 0.6 * mean_mae,
        "test MAE {mae:.3} vs the mean predictor's {mean_mae:.3}\n{eval}"
    );
    let pngs = std::fs::read_dir(out.join("explain"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "png"))
        .count();
    assert!(pngs >= 4, "{pngs} overlay images");
}

/// Runs `scripts/demo.sh TASK` on a cohort of `patients` and returns its output directory and the
/// test split's evaluation.
fn run_demo(task: &str, patients: u32) -> (tempfile::TempDir, std::path::PathBuf, serde_json::Value) {
    let dir = tempdir();
    let out = dir.path().join(format!("demo-{task}"));
    crate::common::fixed_site_key(&out);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let result = Command::new("bash")
        .arg(root.join("scripts/demo.sh"))
        .arg(task)
        .arg(&out)
        .env("MEDTRAIN_BIN", env!("CARGO_BIN_EXE_medtrain"))
        .env("MEDTRAIN_RANKS", "2")
        .env("MEDTRAIN_PATIENTS", patients.to_string())
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .output()
        .expect("run scripts/demo.sh");
    let stdout = String::from_utf8_lossy(&result.stdout);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(
        result.status.success(),
        "demo.sh {task} failed\n{stdout}\n{stderr}"
    );
    let eval: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("eval/eval.json")).unwrap()).unwrap();
    (dir, out, eval)
}

/// The risk model must rank patients better than its trivial image baseline with confidence: the
/// lower end of the model's 95% C-index interval above the baseline's estimate (and above 0.5, a
/// constant risk), over at least 60 test patients.
fn assert_beats_baseline(task: &str, eval: &serde_json::Value) -> f64 {
    let c = &eval["c_index"];
    let (est, low) = (c["estimate"].as_f64().unwrap(), c["low"].as_f64().unwrap());
    let baseline = &eval["baseline_survival"];
    let base = baseline["c_index"]["estimate"].as_f64().unwrap();
    let n = eval["risk_patients"].as_u64().unwrap();
    eprintln!(
        "demo {task}: test C-index {est:.3} [{low:.3}, {:.3}] over {n} patients; baseline {} {base:.3}",
        c["high"].as_f64().unwrap(),
        baseline["name"]
    );
    assert!(n >= 60, "{n} test patients");
    assert!(
        low > base,
        "model C-index lower bound {low:.3} ≤ baseline {base:.3}\n{eval}"
    );
    assert!(low > 0.5, "model C-index lower bound {low:.3} ≤ 0.5\n{eval}");
    est
}

/// `scripts/demo.sh cxr-risk` on 200 patients: a Cox model on the chest radiographs. The C-index
/// beats the dense-fraction baseline, and the AUC of death within 5 years comes with its interval
/// over the patients known at the horizon (those censored earlier are left out).
#[test]
fn cxr_risk_demo_ranks_death_risk_from_radiographs() {
    let (_dir, out, eval) = run_demo("cxr-risk", 200);
    assert_beats_baseline("cxr-risk", &eval);
    assert_eq!(eval["baseline_survival"]["name"], "dense fraction of the image");
    let h = &eval["horizon_auc"];
    assert_eq!(h["horizon"].as_f64(), Some(1826.0));
    let (n, events) = (h["n"].as_u64().unwrap(), h["events"].as_u64().unwrap());
    assert!(events > 0 && events < n, "{h}");
    let auc = &h["auc"];
    assert!(
        auc["low"].as_f64().unwrap() > 0.5,
        "AUC of death within 5 years: {auc}"
    );
    let md = std::fs::read_to_string(out.join("eval/eval.md")).unwrap();
    assert!(
        md.contains("| the model |") && md.contains("| baseline: dense fraction"),
        "{md}"
    );
    // The Kaplan–Meier figure of the risk tertiles, linked from eval.md, with its log-rank test; its
    // data cover every patient with a risk.
    assert!(md.contains("![km](km.png)"), "{md}");
    let km: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("eval/km.json")).unwrap()).unwrap();
    assert!(km["note"].as_str().unwrap().starts_with("log-rank"), "{km}");
    let counted: u64 = km["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let name = s["name"].as_str().unwrap();
            name[name.find("n = ").unwrap() + 4..name.len() - 1]
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    assert_eq!(Some(counted), eval["risk_patients"].as_u64());
    assert!(out.join("eval/km.png").is_file() && out.join("eval/km.svg").is_file());
    assert!(out.join("explain/report.md").is_file());
}

/// `scripts/demo.sh ldct-risk` on 300 patients (the 3D model learns less from the same number than
/// the radiograph model, and a larger test split narrows its interval): a 3D Cox model on whole CT
/// volumes beats the brightest-lung-voxel baseline.
#[test]
fn ldct_risk_demo_ranks_death_risk_from_ct_volumes() {
    let (_dir, out, eval) = run_demo("ldct-risk", 300);
    assert_beats_baseline("ldct-risk", &eval);
    assert_eq!(eval["baseline_survival"]["name"], "brightest lung voxel (CT)");
    assert!(out.join("explain/report.md").is_file());
}

/// Heat over the lesions in `explain`'s overlays, read back from the PNGs with the panel geometry
/// written beside each: the pixel counts of one overlay whose slice shows a reference lesion.
#[derive(Debug, Default)]
struct HeatCounts {
    overlays: usize,
    /// Pixels enclosed by the red outline (the lesion), and of those, coloured by the map.
    lesion: usize,
    lesion_coloured: usize,
    /// Pixels within 5 mm of the lesion, and coloured.
    near: usize,
    near_coloured: usize,
    /// Lung pixels (dark in the image panel and enclosed by the body) farther away, and coloured.
    rest: usize,
    rest_coloured: usize,
}

fn read_rgb(path: &Path) -> (usize, usize, Vec<u8>) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb, "{}", path.display());
    buf.truncate(info.buffer_size());
    (info.width as usize, info.height as usize, buf)
}

/// The pixels of a `w`×`h` region that `open` lets through and that cannot be reached from the
/// region's border through such pixels (4-neighbours).
fn enclosed(w: usize, h: usize, open: &dyn Fn(usize, usize) -> bool) -> Vec<bool> {
    let mut reached = vec![false; w * h];
    let mut stack: Vec<(usize, usize)> = (0..w)
        .flat_map(|x| [(x, 0), (x, h - 1)])
        .chain((0..h).flat_map(|y| [(0, y), (w - 1, y)]))
        .collect();
    while let Some((x, y)) = stack.pop() {
        if reached[y * w + x] || !open(x, y) {
            continue;
        }
        reached[y * w + x] = true;
        if x > 0 {
            stack.push((x - 1, y));
        }
        if y > 0 {
            stack.push((x, y - 1));
        }
        if x + 1 < w {
            stack.push((x + 1, y));
        }
        if y + 1 < h {
            stack.push((x, y + 1));
        }
    }
    (0..w * h).map(|i| open(i % w, i / w) && !reached[i]).collect()
}

fn heat_on_lesions(dir: &Path) -> Vec<HeatCounts> {
    let mut all = vec![];
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|x| x != "json") || path.ends_with("quality.json") {
            continue;
        }
        let g: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let (width, _, rgb) = read_rgb(&path.with_extension("png"));
        let rect = |name: &str| -> Vec<usize> {
            g["panels"][name]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as usize)
                .collect()
        };
        let colour = |name: &str| -> [u8; 3] {
            let c: Vec<u8> = g[name]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u8)
                .collect();
            [c[0], c[1], c[2]]
        };
        let (ov, im) = (rect("overlay"), rect("image"));
        let (w, h) = (ov[2], ov[3]);
        let px = |r: &[usize], x: usize, y: usize| {
            let i = ((r[1] + y) * width + r[0] + x) * 3;
            [rgb[i], rgb[i + 1], rgb[i + 2]]
        };
        let outline = colour("outline_rgb");
        let is_outline = |x: usize, y: usize| px(&ov, x, y) == outline;
        if !(0..w * h).any(|i| is_outline(i % w, i / w)) {
            continue; // the slice shown holds no reference lesion
        }
        // Heat: a pixel whose channels differ (the slice is grey; outline, marker and contours are
        // not heat).
        let marks = [outline, colour("marker_rgb"), colour("contour_rgb")];
        let coloured = |x: usize, y: usize| {
            let c = px(&ov, x, y);
            !marks.contains(&c) && c.iter().max().unwrap() - c.iter().min().unwrap() >= 16
        };
        let lesion = enclosed(w, h, &|x, y| !is_outline(x, y));
        let lesion_px: Vec<(usize, usize)> = (0..w * h)
            .filter(|&i| lesion[i])
            .map(|i| (i % w, i / w))
            .collect();
        let radius = 5.0 * g["px_per_mm"].as_f64().unwrap();
        let near = |x: usize, y: usize| {
            lesion_px.iter().any(|&(lx, ly)| {
                let (dx, dy) = (lx as f64 - x as f64, ly as f64 - y as f64);
                (dx * dx + dy * dy).sqrt() <= radius
            })
        };
        // Lung: dark in the image panel (below mid-grey in the lung window) and not connected to the
        // panel's border (the air around the body).
        let lung = enclosed(w, h, &|x, y| px(&im, x, y)[0] < 128);
        let mut counts = HeatCounts {
            overlays: 1,
            ..HeatCounts::default()
        };
        for y in 0..h {
            for x in 0..w {
                let i = y * w + x;
                let c = coloured(x, y) as usize;
                if lesion[i] {
                    counts.lesion += 1;
                    counts.lesion_coloured += c;
                }
                if is_outline(x, y) {
                    continue;
                }
                if near(x, y) {
                    counts.near += 1;
                    counts.near_coloured += c;
                } else if lung[i] {
                    counts.rest += 1;
                    counts.rest_coloured += c;
                }
            }
        }
        all.push(counts);
    }
    all
}
