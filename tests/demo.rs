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
    let pngs = std::fs::read_dir(out.join("explain"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "png"))
        .count();
    assert!(pngs >= 2, "{pngs} overlay images");
}

/// `scripts/demo.sh achilles` on a reduced cohort (60 patients): tendon ultrasound and MR with the
/// hand-crafted features fused late. The healing grade must be learned: test MAE ≤ 0.6 × the mean
/// predictor's (the training split's mean grade, computed here from the targets), with overlays
/// written for the ultrasound and MR series of the test split.
#[test]
fn achilles_demo_learns_the_healing_grade() {
    use medtrain::catalog::split::Manifest;
    use medtrain::data::{DataConfig, Dataset};
    let dir = tempdir();
    let out = dir.path().join("demo-achilles");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let result = Command::new("bash")
        .arg(root.join("scripts/demo.sh"))
        .arg("achilles")
        .arg(&out)
        .env("MEDTRAIN_BIN", env!("CARGO_BIN_EXE_medtrain"))
        .env("MEDTRAIN_RANKS", "2")
        .env("MEDTRAIN_PATIENTS", "60")
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .output()
        .expect("run scripts/demo.sh");
    let stdout = String::from_utf8_lossy(&result.stdout);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(
        result.status.success(),
        "demo.sh achilles failed\n{stdout}\n{stderr}"
    );
    let eval: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("eval/eval.json")).unwrap()).unwrap();
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
        "test MAE {mae:.3} vs the mean predictor's {mean_mae:.3}\n{stdout}"
    );
    let pngs = std::fs::read_dir(out.join("explain"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "png"))
        .count();
    assert!(pngs >= 4, "{pngs} overlay images");
}
