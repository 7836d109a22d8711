//! Late fusion of tabular inputs (`[data] tabular`): the fused head is one linear layer over
//! [pooled CNN features, tabular values] (checked against that product computed here, and its
//! gradients against a closed form and against the same network without the tabular branch); the loader's tabular values are the
//! training split's z-scores with missing indicators (checked against the mean and standard deviation
//! computed here); and on a cohort whose healing score is visible both in the pixels and in a
//! hand-crafted feature, each input alone is learned: with the pixels shuffled across samples the
//! features give MAE ≤ 0.8 × the mean predictor's, and with the features shuffled the pixels do.

use crate::common::{ok, pydicom_file, reference_script, s, tempdir};
use medtrain::backend::cpu::CpuBackend;
use medtrain::catalog::split::Manifest;
use medtrain::data::{DataConfig, Dataset};
use medtrain::nn::resnet::{build, ResNetConfig};
use medtrain::nn::Net;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};

const B: CpuBackend = CpuBackend;

fn fused_config(tabular: u32) -> ResNetConfig {
    let mut cfg = ResNetConfig::resnet18(1, 2, 4);
    cfg.widths = vec![4, 8];
    cfg.blocks = vec![1, 1];
    cfg.stem_kernel = 3;
    cfg.stem_stride = 1;
    cfg.stem_pool = false;
    cfg.tabular = tabular;
    cfg
}

fn rand_vec(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..len).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
}

#[test]
fn the_fused_head_is_one_linear_layer_over_the_concatenation_and_backpropagates() {
    let (n, k, outputs) = (3usize, 4usize, 2usize);
    let mut net = Net::new(&B, build(&fused_config(k as u32), n as u32, [1, 8, 8]), 5).unwrap();
    assert_eq!(net.tabular_len(), n * k);
    let x = rand_vec(net.input_len(), 1);
    let err = net.forward(&B, &x, true).unwrap_err().to_string();
    assert!(
        err.contains("tabular"),
        "a forward without the tabular input is refused: {err}"
    );
    let t = rand_vec(n * k, 2);
    net.set_tabular(&B, &t).unwrap();
    net.forward(&B, &x, true).unwrap();

    // y = [W_img | W_tab] · [pooled; t] + b, computed here in f64 from the pooled features.
    let gap = net
        .spec
        .graph
        .nodes
        .iter()
        .position(|nd| matches!(nd.op, medtrain::nn::graph::Op::GlobalAvgPool { .. }))
        .unwrap();
    let pooled = net.node_output(gap).clone();
    let c = pooled.len() / n;
    let p = |name: &str| net.param[net.spec.params.find(name).unwrap().range.clone()].to_vec();
    let (w_img, bias, w_tab) = (p("fc.weight"), p("fc.bias"), p("fc_tabular.weight"));
    assert_eq!((w_img.len(), w_tab.len()), (outputs * c, outputs * k));
    for row in 0..n {
        for o in 0..outputs {
            let mut y = bias[o] as f64;
            y += (0..c)
                .map(|j| w_img[o * c + j] as f64 * pooled[row * c + j] as f64)
                .sum::<f64>();
            y += (0..k)
                .map(|j| w_tab[o * k + j] as f64 * t[row * k + j] as f64)
                .sum::<f64>();
            let got = net.output()[row * outputs + o] as f64;
            assert!((got - y).abs() < 1e-5, "row {row} output {o}: {got} vs {y}");
        }
    }

    // Gradients of L = Σ r·y: dW_tab = rᵀ t exactly; the stem's by central differences (the
    // gradient reaches the image path through the join).
    let r = rand_vec(n * outputs, 3);
    net.grad.fill(0.0);
    net.backward(&B, &r.clone()).unwrap();
    let range = |name: &str| net.spec.params.find(name).unwrap().range.clone();
    let dw_tab = net.grad[range("fc_tabular.weight")].to_vec();
    for o in 0..outputs {
        for j in 0..k {
            let want: f64 = (0..n)
                .map(|row| r[row * outputs + o] as f64 * t[row * k + j] as f64)
                .sum();
            let got = dw_tab[o * k + j] as f64;
            assert!((got - want).abs() < 1e-5, "dW_tab[{o},{j}]: {got} vs {want}");
        }
    }
    // Everything below the join gets the gradient of the same network without the tabular branch
    // (built from the same seed, so every shared tensor starts equal), bit for bit.
    let mut plain = Net::new(&B, build(&fused_config(0), n as u32, [1, 8, 8]), 5).unwrap();
    assert_eq!(plain.param[..], net.param[..plain.param.len()]);
    plain.forward(&B, &x, true).unwrap();
    plain.grad.fill(0.0);
    plain.backward(&B, &r).unwrap();
    assert_eq!(
        plain.grad[..],
        net.grad[..plain.grad.len()],
        "image-path gradients"
    );
}

/// The fusion cohort, packed, catalogued with its five label sets, and split 60/40.
fn fusion_catalog(root: &Path, n: usize) -> (PathBuf, PathBuf) {
    let file = pydicom_file("MR_small.dcm");
    let p = |x: &str| root.join(x);
    reference_script(
        "write_fusion_cohort.py",
        &[s(&file), s(&p("cohort")), &n.to_string(), "11"],
    );
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
    for name in [
        "healing",
        "features",
        "features_shuffled",
        "healing_pixshuf",
        "features_pixshuf",
    ] {
        let csv = p(&format!("cohort/{name}.csv"));
        ok(&[
            "catalog",
            "labels",
            "import",
            s(&csv),
            "--out",
            s(&p("catalog")),
            "--name",
            name,
            "--key",
            s(&key),
        ]);
    }
    ok(&[
        "catalog",
        "split",
        s(&p("catalog")),
        "modality = 'MR'",
        "--out",
        s(&p("split.h5")),
        "--ratios",
        "train=0.6,val=0.4",
        "--seed",
        "5",
    ]);
    (p("catalog"), p("split.h5"))
}

fn data_config(labels: &[&str], tabular: &[&str]) -> DataConfig {
    DataConfig {
        size: vec![32, 32],
        fit: true,
        labels: labels.iter().map(|l| l.to_string()).collect(),
        tabular: tabular.iter().map(|l| l.to_string()).collect(),
        ..DataConfig::default()
    }
}

/// The tabular values of every training sample: z-scores with the training split's mean and
/// population standard deviation (computed here from the label values), 0 and an indicator of 1
/// where the value is missing; the validation split uses the training split's statistics.
fn check_standardisation(catalog: &Path, manifest: &Path) {
    let m = Manifest::load(manifest).unwrap();
    let columns = ["features.thickness", "features.age"];
    let cfg = data_config(&columns, &columns);
    let mut train = Dataset::open(catalog, &m, "train", &cfg).unwrap();
    let mut val = Dataset::open(catalog, &m, "val", &cfg).unwrap();
    let stats = medtrain::data::targets::standardise(&mut train, Some(&mut val))
        .unwrap()
        .unwrap();
    let values = |ds: &Dataset| {
        (0..ds.len())
            .map(|i| {
                let (mut v, mut mask) = (vec![0.0f32; 2], vec![0.0f32; 2]);
                ds.target(i, &mut v, &mut mask);
                (v, mask)
            })
            .collect::<Vec<_>>()
    };
    let train_values = values(&train);
    let mut missing = 0;
    for c in 0..2 {
        let present: Vec<f64> = train_values
            .iter()
            .filter(|(_, m)| m[c] != 0.0)
            .map(|(v, _)| v[c] as f64)
            .collect();
        missing += train_values.len() - present.len();
        let mean = present.iter().sum::<f64>() / present.len() as f64;
        let sd = (present.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / present.len() as f64).sqrt();
        assert!(
            (stats.mean[c] - mean).abs() < 1e-5 * (1.0 + mean.abs()),
            "{c}: mean {stats:?} vs {mean}"
        );
        assert!(
            (stats.std[c] - sd).abs() < 1e-5 * (1.0 + sd),
            "{c}: std {stats:?} vs {sd}"
        );
        for (ds, vals) in [(&train, &train_values), (&val, &values(&val))] {
            for (i, (v, m)) in vals.iter().enumerate() {
                let mut t = vec![0.0f32; 4];
                ds.tabular(i, &mut t).unwrap();
                let (want, indicator) = if m[c] != 0.0 {
                    (((v[c] as f64 - mean) / sd) as f32, 0.0)
                } else {
                    (0.0, 1.0)
                };
                assert!(
                    (t[c] - want).abs() < 1e-4,
                    "sample {i} column {c}: {} vs {want}",
                    t[c]
                );
                assert_eq!(t[2 + c], indicator, "sample {i}: missing indicator of column {c}");
            }
        }
    }
    assert!(missing > 0, "the cohort has missing Thickness cells");
}

/// Trains a regression run on the given label sets; returns the validation MAE and the mean
/// predictor's (the training split's mean score), both computed here from the targets.
fn mae_of(
    root: &Path,
    catalog: &Path,
    manifest: &Path,
    name: &str,
    score: &str,
    features: &str,
) -> (f64, f64) {
    let config = root.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            "[model]\nwidths = [8, 16]\nblocks = [1, 1]\nstem_kernel = 3\nstem_stride = 2\n\
             stem_pool = false\n\n[data]\nmode = \"slice\"\nsize = [32, 32]\nfit = true\n\
             labels = [\"{score}.score\"]\ntabular = [\"{features}.thickness\", \"{features}.age\"]\n\n\
             [train]\ntask = \"regression\"\nepochs = 30\nbatch_size = 16\nlr = 0.01\n\
             warmup_steps = 10\nseed = 3\noptimizer = {{ kind = \"sgd\", momentum = 0.9, \
             nesterov = true, weight_decay = 0.0001 }}\n"
        ),
    )
    .unwrap();
    let out = root.join(format!("run-{name}"));
    ok(&[
        "train",
        s(catalog),
        s(manifest),
        "--out",
        s(&out),
        "--config",
        s(&config),
        "--threads",
        "2",
    ]);
    let eval = root.join(format!("eval-{name}"));
    ok(&["eval", s(&out), "--out", s(&eval), "--split", "val"]);
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(eval.join("eval.json")).unwrap()).unwrap();
    let model_mae = report["mae"]
        .as_f64()
        .unwrap_or_else(|| panic!("{name}: {report}"));
    let m = Manifest::load(manifest).unwrap();
    let labels = [format!("{score}.score")];
    let cfg = data_config(&[labels[0].as_str()], &[]);
    let scores = |split: &str| {
        let ds = Dataset::open(catalog, &m, split, &cfg).unwrap();
        (0..ds.len())
            .filter_map(|i| {
                let (mut v, mut mask) = ([0.0f32], [0.0f32]);
                ds.target(i, &mut v, &mut mask);
                (mask[0] != 0.0).then_some(v[0] as f64)
            })
            .collect::<Vec<f64>>()
    };
    let train = scores("train");
    let mean = train.iter().sum::<f64>() / train.len() as f64;
    let val = scores("val");
    let mean_mae = val.iter().map(|v| (v - mean).abs()).sum::<f64>() / val.len() as f64;
    eprintln!("{name}: validation MAE {model_mae:.3}, mean predictor {mean_mae:.3}");
    (model_mae, mean_mae)
}

#[test]
fn each_input_of_a_fused_model_is_learned_alone() {
    let dir = tempdir();
    let root = dir.path();
    let (catalog, manifest) = fusion_catalog(root, 200);
    check_standardisation(&catalog, &manifest);
    let (features_only, mean_a) = mae_of(
        root,
        &catalog,
        &manifest,
        "pixels-shuffled",
        "healing_pixshuf",
        "features_pixshuf",
    );
    let (pixels_only, mean_b) = mae_of(
        root,
        &catalog,
        &manifest,
        "features-shuffled",
        "healing",
        "features_shuffled",
    );
    let (fused, mean_c) = mae_of(root, &catalog, &manifest, "fused", "healing", "features");
    assert!(
        fused <= 0.8 * mean_c,
        "both inputs: MAE {fused:.3} vs the mean predictor's {mean_c:.3}"
    );
    // eval against a manifest without the training split: metrics, no baselines (nothing to fit).
    let only_val = root.join("only-val.h5");
    ok(&[
        "catalog",
        "split",
        s(&catalog),
        "modality = 'MR'",
        "--out",
        s(&only_val),
        "--ratios",
        "val=1",
    ]);
    let out = root.join("eval-only-val");
    let run_dir = root.join("run-fused");
    ok(&[
        "eval",
        s(&run_dir),
        "--out",
        s(&out),
        "--split",
        "val",
        "--manifest",
        s(&only_val),
    ]);
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("eval.json")).unwrap()).unwrap();
    assert!(
        report["mae"].is_f64() && report.get("baselines").is_none(),
        "{report}"
    );
    assert!(
        features_only <= 0.8 * mean_a,
        "pixels shuffled: MAE {features_only:.3} from the features alone vs the mean predictor's {mean_a:.3}"
    );
    assert!(
        pixels_only <= 0.8 * mean_b,
        "features shuffled: MAE {pixels_only:.3} from the pixels alone vs the mean predictor's {mean_b:.3}"
    );
}

/// Catalog columns as tabular inputs: `catalog.NAME` reads a numeric series column,
/// `catalog.NAME=VALUE` is 1 where a text column has the value; both standardised like label columns
/// (checked against the catalog's own columns read here and the training split's mean and standard
/// deviation computed here), with missing cells (no slice thickness on an ultrasound image) as 0 and
/// an indicator of 1. A text column without a value, a numeric one with a value and an unknown column
/// are refused, naming the input.
#[test]
fn catalog_columns_are_tabular_inputs() {
    use medtrain::catalog::columns::{cell_text, Level};
    use medtrain::catalog::view::Catalog;
    let dir = tempdir();
    let p = |x: &str| dir.path().join(x);
    ok(&[
        "phantom",
        "--cohort",
        "achilles",
        "--patients",
        "8",
        "--out",
        s(&p("ph")),
    ]);
    ok(&[
        "pack",
        s(&p("ph/dicom")),
        "--out",
        s(&p("pack")),
        "--key",
        s(&p("k")),
        "--create-key",
    ]);
    ok(&["catalog", "build", s(&p("pack")), "--out", s(&p("catalog"))]);
    ok(&[
        "catalog",
        "labels",
        "import",
        s(&p("ph/truth/healing.csv")),
        "--out",
        s(&p("catalog")),
        "--name",
        "healing",
        "--key",
        s(&p("k")),
    ]);
    ok(&[
        "catalog",
        "split",
        s(&p("catalog")),
        "modality = 'US' or modality = 'MR'",
        "--out",
        s(&p("split.h5")),
        "--ratios",
        "train=0.5,val=0.5",
        "--seed",
        "3",
    ]);
    let (catalog, m) = (p("catalog"), Manifest::load(&p("split.h5")).unwrap());
    let tabular = ["catalog.modality=US", "catalog.rows", "catalog.slice_thickness"];
    let cfg = data_config(&["healing.score"], &tabular);
    let mut train = Dataset::open(&catalog, &m, "train", &cfg).unwrap();
    let stats = medtrain::data::targets::standardise(&mut train, None)
        .unwrap()
        .unwrap();
    let cat = Catalog::open(&catalog).unwrap();
    let modality = cat.tables.codes("series/modality").unwrap();
    let rows = cat.col_u32(Level::Series, "rows").unwrap();
    let thickness = cat.col_f64(Level::Series, "slice_thickness").unwrap();
    let raw = |row: usize| -> [Option<f64>; 3] {
        let t = thickness[row];
        [
            Some(f64::from(u8::from(cell_text(&modality[row]) == "US"))),
            Some(f64::from(rows[row])),
            (!t.is_nan()).then_some(t),
        ]
    };
    let samples: Vec<[Option<f64>; 3]> = (0..train.len())
        .map(|i| raw(train.meta(i).series_row as usize))
        .collect();
    let mut kinds = [0usize; 2];
    for c in 0..3 {
        let present: Vec<f64> = samples.iter().filter_map(|r| r[c]).collect();
        let mean = present.iter().sum::<f64>() / present.len() as f64;
        let sd = (present.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / present.len() as f64).sqrt();
        let sd = if sd > 0.0 { sd } else { 1.0 };
        assert!(
            (stats.mean[c] - mean).abs() < 1e-9 * (1.0 + mean.abs()),
            "{c}: {stats:?} vs {mean}"
        );
        assert!(
            (stats.std[c] - sd).abs() < 1e-9 * (1.0 + sd),
            "{c}: {stats:?} vs {sd}"
        );
        for (i, r) in samples.iter().enumerate() {
            let mut t = vec![0.0f32; 6];
            train.tabular(i, &mut t).unwrap();
            let (want, indicator) = r[c].map_or((0.0, 1.0), |v| (((v - mean) / sd) as f32, 0.0));
            assert!(
                (t[c] - want).abs() < 1e-5,
                "sample {i} input {c}: {} vs {want}",
                t[c]
            );
            assert_eq!(t[3 + c], indicator, "sample {i}: missing indicator of input {c}");
        }
    }
    for r in &samples {
        kinds[r[0].unwrap() as usize] += 1;
    }
    assert!(
        kinds[0] > 0 && kinds[1] > 0,
        "both modalities in the training split: {kinds:?}"
    );
    assert!(
        samples.iter().any(|r| r[2].is_none()),
        "some images without a slice thickness"
    );
    for (bad, says) in [
        ("catalog.body_part", "name a value"),
        ("catalog.rows=5", "is a number"),
        ("catalog.no_such_column", "no series column"),
    ] {
        let err = Dataset::open(&catalog, &m, "train", &data_config(&["healing.score"], &[bad]))
            .err()
            .unwrap_or_else(|| panic!("{bad} was accepted"))
            .to_string();
        assert!(err.contains(bad) && err.contains(says), "{bad}: {err}");
    }
}
