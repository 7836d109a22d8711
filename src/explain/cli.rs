//! `medtrain explain <checkpoint> <split | MANIFEST:SPLIT | series key> --out DIR`: Grad-CAM maps of
//! a trained model for the series of a split, mapped back into pack geometry, written as overlays,
//! montages, HDF5 maps and `report.md`; with `--evaluate`, explanation quality against ground-truth
//! lesions per layer (best layer chosen on the validation split, reported on the given split).
//! A single process on the backend `--device` chooses (Grad-CAM kernels on CUDA, `cuda.rs`).

use super::cam::{GradCamOps, Method, Upsample};
use super::colormap::Colormap;
use super::layers::{grad_cam_layers, select_layers, CamLayer, CamRequest};
use super::mapback::map_to_pack;
use super::overlay::{self, SliceView};
use super::quality::{self, mean, median, LayerQuality, SanityCheck, SeriesQuality};
use super::truth::{lesion_mask, series_geometry, LesionTruth};
use crate::backend::cpu::CpuBackend;
use crate::backend::Backend;
use crate::catalog::split::Manifest;
use crate::checkpoint::CheckpointInfo;
use crate::data::{Dataset, SeriesVolume};
use crate::deid::SiteKey;
use crate::exit::{usage, Failure, EXIT_OK};
use crate::nn::Net;
use crate::runtime::{open_gpu, resolve_device, Device};
use crate::settings::{Settings, Task};
use crate::train::cli::{
    checkpoint_settings, find_checkpoint, load_net, recorded_path, sample_scores_only, with_tabular,
};
mod epochs;
mod figures;

use clap::Args;
pub use epochs::epoch_images;
use figures::{print_outcome, report_header, write, write_series, Explained};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Steps of the deletion and insertion curves.
pub const DEFAULT_STEPS: usize = 8;
/// Pointing-game margin: a maximum this close (mm) to a lesion voxel counts as a hit.
pub const DEFAULT_MARGIN_MM: f64 = 5.0;
/// Series scored for the randomisation sanity check (it re-runs Grad-CAM once per stage).
const SANITY_SERIES: usize = 4;
/// Slices in a montage.
const MONTAGE_SLICES: usize = 8;
/// The value deleted voxels take (every channel): the bottom of the HU window (air).
const DELETION_BASELINE: f32 = 0.0;

#[derive(Args, Debug)]
pub struct ExplainArgs {
    /// A run or checkpoint directory, then what to explain: a split of the checkpoint's manifest
    /// (default "test"), MANIFEST:SPLIT, or a series key.
    #[arg(required = true, num_args = 1..=2)]
    pub inputs: Vec<PathBuf>,
    /// Where overlays, montages, maps.h5, report.md (and quality.json) go.
    #[arg(long)]
    pub out: PathBuf,
    /// Settings for [eval]; the model and data settings come from the checkpoint.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Override the catalog and manifest recorded in the checkpoint.
    #[arg(long)]
    pub catalog: Option<PathBuf>,
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    /// Layers: names (layer4.1.conv2, layer3.0 for a block's output, relu12), node indices, "last"
    /// (default), "blocks" (the stem and every residual block output) or "all"; repeat or separate
    /// with commas.
    #[arg(long)]
    pub layer: Vec<String>,
    /// Output explained: an output index, a label name of the model, or "risk" (survival models).
    #[arg(long, default_value = "0")]
    pub target: String,
    /// gradcam | gradcam++ | layercam; several (repeat or separate with commas) make every pair of
    /// method and layer a candidate, and --evaluate chooses the pair on the validation split.
    #[arg(long)]
    pub method: Vec<String>,
    /// How layer maps are laid over the input: centred (each cell on the centre of its receptive
    /// field) or interpolate (PyTorch's F.interpolate, align_corners=False, as hook-based Grad-CAM
    /// libraries do; shifted by (stride − 1)/2 input pixels after strided convolutions).
    #[arg(long, default_value = "centred")]
    pub upsample: String,
    /// CT window of the overlays: lung, mediastinum, or WIDTH,LEVEL in HU.
    #[arg(long, default_value = "lung")]
    pub window: String,
    /// Fraction of each series' map maximum below which the overlay shows the slice in grey.
    #[arg(long, default_value_t = overlay::DEFAULT_THRESHOLD)]
    pub threshold: f32,
    /// Draw contour lines at 0.5 and 0.8 of the map maximum.
    #[arg(long)]
    pub contours: bool,
    /// Colour map of the heat: viridis, inferno or jet.
    #[arg(long, value_enum, default_value_t = Colormap::Viridis)]
    pub colormap: Colormap,
    /// Explain at most this many series (with --evaluate: of those with lesions, per split).
    #[arg(long)]
    pub max_series: Option<usize>,
    /// Score the maps against ground-truth lesions per layer (needs --truth and --key).
    #[arg(long)]
    pub evaluate: bool,
    /// Ground-truth lesions (the phantom's truth/lesions.csv).
    #[arg(long)]
    pub truth: Option<PathBuf>,
    /// The site key the packs were made with (to match the truth's UIDs to pseudonymised series).
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// Split the best layer is chosen on.
    #[arg(long, default_value = "val")]
    pub val_split: String,
    /// Pointing-game margin in mm.
    #[arg(long, default_value_t = DEFAULT_MARGIN_MM)]
    pub margin_mm: f64,
    /// Steps of the deletion/insertion curves.
    #[arg(long, default_value_t = DEFAULT_STEPS)]
    pub steps: usize,
    /// auto | cpu | cuda
    #[arg(long, default_value = "auto")]
    pub device: String,
    #[arg(long)]
    pub json: bool,
    /// Print nothing on stdout (explain run inside training, for TensorBoard).
    #[arg(skip)]
    pub silent: bool,
}

fn job(e: impl std::fmt::Display) -> Failure {
    Failure::Job(e.to_string())
}

/// What the explain run works on, resolved from the arguments.
struct Plan {
    ck: CheckpointInfo,
    settings: Settings,
    catalog: PathBuf,
    manifest: Manifest,
    split: String,
    series_filter: Option<String>,
    output: usize,
    target_name: String,
    methods: Vec<Method>,
    upsample: Upsample,
    window: [f32; 2],
    /// Colour map, threshold and contours of the overlays (the maximum is set per series).
    style: overlay::Style,
}

fn resolve_target(text: &str, s: &Settings) -> Result<(usize, String), Failure> {
    let outputs = s.num_outputs() as usize;
    if let Ok(i) = text.parse::<usize>() {
        if i < outputs {
            let name = s
                .data
                .labels
                .get(i)
                .cloned()
                .unwrap_or_else(|| format!("output{i}"));
            return Ok((i, name));
        }
        return Err(usage(format!("--target {i}: the model has {outputs} output(s)")));
    }
    if text == "risk" {
        return match s.train.task {
            Task::Survival => Ok((0, "risk".into())),
            _ => Err(usage("--target risk: the model is not a survival (risk) model")),
        };
    }
    s.data
        .labels
        .iter()
        .position(|l| l == text || l.rsplit('.').next() == Some(text))
        .map(|i| (i, s.data.labels[i].clone()))
        .ok_or_else(|| {
            usage(format!(
                "--target {text:?}: not an output index, \"risk\" or one of the labels {:?}",
                s.data.labels
            ))
        })
}

fn plan(args: &ExplainArgs) -> Result<Plan, Failure> {
    let ck = find_checkpoint(&args.inputs[0])?;
    let mut settings = checkpoint_settings(&ck, args.config.as_deref())?;
    sample_scores_only(&settings, "explain")?;
    settings.data.augment = Default::default();
    let catalog = args
        .catalog
        .clone()
        .or_else(|| recorded_path(&ck.state, "catalog"))
        .ok_or_else(|| usage("explain: give --catalog"))?;
    let what = args
        .inputs
        .get(1)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|| "test".into());
    let (manifest_path, split_or_series) = match what.rsplit_once(':') {
        Some((path, split)) if Path::new(path).is_file() => (PathBuf::from(path), split.to_string()),
        _ => (
            args.manifest
                .clone()
                .or_else(|| recorded_path(&ck.state, "manifest"))
                .ok_or_else(|| usage("explain: give --manifest or MANIFEST:SPLIT"))?,
            what.clone(),
        ),
    };
    let manifest = Manifest::load(&manifest_path).map_err(usage)?;
    let names: Vec<String> = manifest.splits.iter().map(|p| p.name.clone()).collect();
    let (split, series_filter) = if names.contains(&split_or_series) {
        (split_or_series, None)
    } else {
        // A series key: explain it from whichever split holds it.
        let split =
            find_series_split(&catalog, &manifest, &split_or_series, &settings)?.ok_or_else(|| {
                usage(format!(
                    "{split_or_series:?} is neither a split of {} ({}) nor a series key in it",
                    manifest_path.display(),
                    names.join(", ")
                ))
            })?;
        (split, Some(split_or_series))
    };
    let (output, target_name) = resolve_target(&args.target, &settings)?;
    let mut methods: Vec<Method> = Vec::new();
    for m in args.method.iter().flat_map(|m| m.split(',')).map(str::trim) {
        let method = Method::parse(m)
            .ok_or_else(|| usage(format!("--method {m:?}: use gradcam, gradcam++ or layercam")))?;
        if !methods.contains(&method) {
            methods.push(method);
        }
    }
    if methods.is_empty() {
        methods.push(Method::GradCam);
    }
    let upsample = Upsample::parse(&args.upsample).ok_or_else(|| {
        usage(format!(
            "--upsample {:?}: use centred or interpolate",
            args.upsample
        ))
    })?;
    let window = overlay::parse_window(&args.window).ok_or_else(|| {
        usage(format!(
            "--window {:?}: use lung, mediastinum or WIDTH,LEVEL (HU, width > 0)",
            args.window
        ))
    })?;
    if !(0.0..1.0).contains(&args.threshold) {
        return Err(usage(format!(
            "--threshold {}: use a fraction of the map maximum in [0, 1)",
            args.threshold
        )));
    }
    let style = overlay::Style {
        colormap: args.colormap,
        threshold: args.threshold,
        map_max: 1.0,
        contours: args.contours,
    };
    if args.evaluate && (args.truth.is_none() || args.key.is_none()) {
        return Err(usage("--evaluate needs --truth LESIONS.csv and --key SITE.key"));
    }
    if args.steps == 0 {
        return Err(usage("--steps must be at least 1"));
    }
    Ok(Plan {
        ck,
        settings,
        catalog,
        manifest,
        split,
        series_filter,
        output,
        target_name,
        methods,
        upsample,
        window,
        style,
    })
}

fn find_series_split(
    catalog: &Path,
    manifest: &Manifest,
    key: &str,
    s: &Settings,
) -> Result<Option<String>, Failure> {
    for part in &manifest.splits {
        let ds = Dataset::open_lazy(catalog, manifest, &part.name, &s.data).map_err(usage)?;
        if (0..ds.len()).any(|i| ds.meta(i).series_key == key) {
            return Ok(Some(part.name.clone()));
        }
    }
    Ok(None)
}

/// The samples of one series, in sample order.
struct SeriesSamples {
    series_row: u32,
    key: String,
    samples: Vec<usize>,
}

fn group_series(ds: &Dataset, filter: Option<&str>) -> Vec<SeriesSamples> {
    let mut groups: Vec<SeriesSamples> = Vec::new();
    for i in 0..ds.len() {
        let m = ds.meta(i);
        if filter.is_some_and(|f| f != m.series_key) {
            continue;
        }
        match groups.last_mut() {
            Some(g) if g.series_row == m.series_row => g.samples.push(i),
            _ => groups.push(SeriesSamples {
                series_row: m.series_row,
                key: m.series_key,
                samples: vec![i],
            }),
        }
    }
    groups
}

/// One series explained at one or more layers (one forward/backward pass per batch of samples).
struct SeriesMaps {
    volume: SeriesVolume,
    /// Score (probability for binary tasks, raw output otherwise) per sample.
    scores: Vec<f64>,
    /// Per layer, in the order asked for.
    layers: Vec<LayerMap>,
}

/// One layer's map of a series.
struct LayerMap {
    /// (slices, rows, cols), normalised to [0, 1] over the series; 0 where no sample reached.
    map: Vec<f32>,
    /// The sample whose map (on its input grid, before normalisation) holds the series' largest
    /// value, with that map: deletion and insertion run on it.
    peak_sample: usize,
    peak_input_map: Vec<f32>,
}

impl SeriesMaps {
    fn score(&self) -> f64 {
        self.scores.iter().copied().fold(f64::NEG_INFINITY, f64::max)
    }
}

struct Ctx<'a, B: GradCamOps> {
    b: &'a B,
    ds: &'a Dataset,
    net: Net<B>,
    batch: usize,
    outputs: usize,
    req: CamRequest,
    probability: bool,
}

impl<B: GradCamOps> Ctx<'_, B> {
    fn to_score(&self, logit: f32) -> f64 {
        if self.probability {
            1.0 / (1.0 + (-(logit as f64)).exp())
        } else {
            logit as f64
        }
    }

    /// Scores of whole inputs (each one sample long), in batches.
    fn score_inputs(&mut self, inputs: &[Vec<f32>]) -> Result<Vec<f64>, Failure> {
        let b = self.b;
        let len = self.ds.sample_len();
        let mut scores = Vec::with_capacity(inputs.len());
        for chunk in inputs.chunks(self.batch) {
            let mut x = vec![0.0f32; self.batch * len];
            for (row, slot) in x.chunks_exact_mut(len).enumerate() {
                slot.copy_from_slice(&chunk[row.min(chunk.len() - 1)]);
            }
            self.net.forward(b, &x, false).map_err(job)?;
            let out = b
                .download(b.view(self.net.output(), 0..self.batch * self.outputs))
                .map_err(job)?;
            for row in 0..chunk.len() {
                scores.push(self.to_score(out[row * self.outputs + self.req.output]));
            }
        }
        Ok(scores)
    }

    /// The model's tabular input for a batch of `samples` (rows past the end repeat the last).
    fn set_tabular(&mut self, samples: &[usize]) -> Result<(), Failure> {
        let k = self.ds.tabular_len();
        let mut t = vec![0.0f32; self.batch * k];
        if k > 0 {
            for (row, slot) in t.chunks_exact_mut(k).enumerate() {
                self.ds
                    .tabular(samples[row.min(samples.len() - 1)], slot)
                    .map_err(job)?;
            }
        }
        self.net.set_tabular(self.b, &t).map_err(job)
    }

    /// The network input of one sample (as the explain pass saw it); the tabular input follows it.
    fn sample_input(&mut self, sample: usize) -> Result<Vec<f32>, Failure> {
        self.set_tabular(&[sample])?;
        let mut x = vec![0.0f32; self.ds.sample_len()];
        self.ds.load(sample, None, &mut x).map_err(job)?;
        Ok(x)
    }

    fn explain_series(
        &mut self,
        g: &SeriesSamples,
        layers: &[CamLayer],
        method: Method,
    ) -> Result<SeriesMaps, Failure> {
        let b = self.b;
        let len = self.ds.sample_len();
        let volume = self.ds.series_volume(g.samples[0]).map_err(job)?;
        let extent = self.ds.extent().map(|e| e as usize);
        let in_sp: usize = extent.iter().product();
        let mut maps: Vec<LayerMap> = layers
            .iter()
            .map(|_| LayerMap {
                map: vec![0.0f32; volume.values.len()],
                peak_sample: g.samples[0],
                peak_input_map: Vec::new(),
            })
            .collect();
        let mut peaks = vec![f32::NEG_INFINITY; layers.len()];
        let mut scores = Vec::with_capacity(g.samples.len());
        for chunk in g.samples.chunks(self.batch) {
            let mut x = vec![0.0f32; self.batch * len];
            let mut ts = Vec::with_capacity(chunk.len());
            for (row, slot) in x.chunks_exact_mut(len).enumerate() {
                let t = self
                    .ds
                    .load(chunk[row.min(chunk.len() - 1)], None, slot)
                    .map_err(job)?;
                if row < chunk.len() {
                    ts.push(t);
                }
            }
            self.set_tabular(chunk)?;
            let req = CamRequest {
                method,
                normalise: false,
                ..self.req
            };
            let cams = grad_cam_layers(b, &mut self.net, &x, layers, &req).map_err(job)?;
            for row in 0..ts.len() {
                scores.push(self.to_score(cams[0].outputs[row * self.outputs + self.req.output]));
            }
            for ((cam, lm), peak) in cams.iter().zip(&mut maps).zip(&mut peaks) {
                for (row, t) in ts.iter().enumerate() {
                    let m = &cam.maps[row * in_sp..(row + 1) * in_sp];
                    map_to_pack(m, extent, t, volume.shape, &mut lm.map);
                    let top = m.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    if top > *peak {
                        *peak = top;
                        lm.peak_sample = chunk[row];
                        lm.peak_input_map = m.to_vec();
                    }
                }
            }
        }
        for lm in &mut maps {
            let n = lm.map.len();
            crate::explain::cam::normalise(1, n, &mut lm.map);
        }
        Ok(SeriesMaps {
            volume,
            scores,
            layers: maps,
        })
    }
}

/// Quality of layer `layer` of a series' maps against its lesion mask.
fn series_quality<B: GradCamOps>(
    ctx: &mut Ctx<'_, B>,
    sm: &SeriesMaps,
    layer: usize,
    key: &str,
    mask: &[bool],
    margin_mm: f64,
    steps: usize,
) -> Result<SeriesQuality, Failure> {
    let lm = &sm.layers[layer];
    let peak = quality::peak(
        &lm.map,
        mask,
        sm.volume.shape.map(|e| e as u32),
        sm.volume.spacing,
    );
    let hit = peak.and_then(|p| p.distance_mm).map(|d| d <= margin_mm);
    tracing::debug!(series = key, layer, ?peak, "pointing game");
    let energy = quality::energy_inside(&lm.map, mask);
    // Deletion/insertion on the sample holding the series' peak (largest map on its input grid).
    let input = ctx.sample_input(lm.peak_sample)?;
    let [del, ins] = quality::perturbation_inputs(&input, &lm.peak_input_map, DELETION_BASELINE, steps);
    let del_scores = ctx.score_inputs(&del)?;
    let ins_scores = ctx.score_inputs(&ins)?;
    Ok(SeriesQuality {
        series_key: key.to_string(),
        score: sm.score(),
        hit,
        peak,
        energy_inside: energy,
        deletion_auc: quality::trapezoid_mean(&del_scores),
        insertion_auc: quality::trapezoid_mean(&ins_scores),
    })
}

fn summarise(cand: &Candidate, rows: &[SeriesQuality]) -> LayerQuality {
    let layer = &cand.layer;
    let judged: Vec<bool> = rows.iter().filter_map(|r| r.hit).collect();
    LayerQuality {
        method: cand.method.name().into(),
        layer: layer.name.clone(),
        node: layer.node,
        cell_px: layer.centres[1][1].max(layer.centres[2][1]),
        series: judged.len(),
        hits: judged.iter().filter(|&&h| h).count(),
        hit_rate: mean(judged.iter().map(|&h| if h { 1.0 } else { 0.0 })),
        hit_rate_ci: quality::wilson_interval(judged.iter().filter(|&&h| h).count(), judged.len()),
        median_distance_mm: median(
            rows.iter()
                .filter_map(|r| r.peak.and_then(|p| p.distance_mm))
                .collect(),
        ),
        energy_inside: mean(rows.iter().filter_map(|r| r.energy_inside)),
        deletion_auc: mean(rows.iter().map(|r| r.deletion_auc)),
        insertion_auc: mean(rows.iter().map(|r| r.insertion_auc)),
    }
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |v| format!("{v:.3}"))
}

/// The per-layer table in Markdown (also printed).
pub fn quality_table(split: &str, rows: &[LayerQuality]) -> String {
    let mut s = String::from(
        "| split | method | layer | node | cell (px) | series | pointing hits | hit rate [95% CI] | median peak-to-lesion mm | energy in lesion | deletion AUC | insertion AUC |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|\n"
    );
    for r in rows {
        s += &format!(
            "| {split} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.method,
            r.layer,
            r.node,
            r.cell_px,
            r.series,
            r.hits,
            match (r.hit_rate, r.hit_rate_ci) {
                (Some(h), Some([lo, hi])) => format!("{h:.3} [{lo:.2}, {hi:.2}]"),
                _ => "n/a".into(),
            },
            r.median_distance_mm.map_or("n/a".into(), |v| format!("{v:.1}")),
            fmt_opt(r.energy_inside),
            fmt_opt(r.deletion_auc),
            fmt_opt(r.insertion_auc)
        );
    }
    s
}

/// Best layer: highest hit rate, then the smallest median distance from map peak to lesion, then
/// the highest energy inside, then the deeper layer.
fn best_layer(rows: &[LayerQuality]) -> Option<usize> {
    (0..rows.len()).max_by(|&a, &b| {
        let key = |r: &LayerQuality| {
            (
                r.hit_rate.unwrap_or(-1.0),
                -r.median_distance_mm.unwrap_or(f64::INFINITY),
                r.energy_inside.unwrap_or(-1.0),
                r.node,
            )
        };
        let (ka, kb) = (key(&rows[a]), key(&rows[b]));
        ka.0.total_cmp(&kb.0)
            .then(ka.1.total_cmp(&kb.1))
            .then(ka.2.total_cmp(&kb.2))
            .then(ka.3.cmp(&kb.3))
    })
}

fn open_split(p: &Plan, split: &str) -> Result<Dataset, Failure> {
    let ds = Dataset::open(&p.catalog, &p.manifest, split, &p.settings.data).map_err(usage)?;
    with_tabular(ds, &p.ck.state)
}

fn new_ctx<'a, B: GradCamOps>(b: &'a B, p: &Plan, ds: &'a Dataset) -> Result<Ctx<'a, B>, Failure> {
    Ok(Ctx {
        b,
        ds,
        net: load_net(b, &p.ck, &p.settings, ds)?,
        batch: p.settings.train.batch_size as usize,
        outputs: p.settings.num_outputs() as usize,
        req: CamRequest {
            output: p.output,
            method: p.methods[0],
            upsample: p.upsample,
            normalise: false,
        },
        probability: p.settings.train.task == Task::Binary,
    })
}

/// Series with lesions first (when judged), limited to `max`.
fn choose_series(
    ds: &Dataset,
    filter: Option<&str>,
    truth: Option<&LesionTruth>,
    only_lesions: bool,
    max: Option<usize>,
) -> Vec<SeriesSamples> {
    let mut groups = group_series(ds, filter);
    if let Some(t) = truth {
        let has = |g: &SeriesSamples| !t.of_series(ds.catalog(), g.series_row).is_empty();
        if only_lesions {
            groups.retain(has);
        } else {
            groups.sort_by_key(|g| !has(g));
        }
    }
    if let Some(m) = max {
        groups.truncate(m);
    }
    groups
}

fn masks_for(
    ds: &Dataset,
    truth: &LesionTruth,
    g: &SeriesSamples,
    shape: [usize; 3],
) -> Result<Vec<bool>, Failure> {
    let lesions = truth.of_series(ds.catalog(), g.series_row);
    let geom = series_geometry(ds.catalog(), g.series_row).map_err(job)?;
    Ok(lesion_mask(shape, &geom, &lesions))
}

/// Every candidate's quality over the chosen series of one split.
fn evaluate_split<B: GradCamOps>(
    b: &B,
    p: &Plan,
    args: &ExplainArgs,
    truth: &LesionTruth,
    split: &str,
    cands: &[Candidate],
) -> Result<Vec<LayerQuality>, Failure> {
    let ds = open_split(p, split)?;
    let mut ctx = new_ctx(b, p, &ds)?;
    let groups = choose_series(
        &ds,
        p.series_filter.as_deref(),
        Some(truth),
        true,
        args.max_series,
    );
    let mut rows: Vec<Vec<SeriesQuality>> = vec![Vec::with_capacity(groups.len()); cands.len()];
    let mut shown =
        crate::logging::Progress::new(&format!("explain: {split} series scored"), groups.len() as u64);
    for g in &groups {
        shown.inc(1);
        let mut mask = None;
        for (first, method, chunk) in passes(cands, layers_per_pass(&ds, g)) {
            let sm = ctx.explain_series(g, &chunk, method)?;
            if mask.is_none() {
                mask = Some(masks_for(&ds, truth, g, sm.volume.shape)?);
            }
            let mask = mask.as_deref().expect("set above");
            for k in 0..chunk.len() {
                rows[first + k].push(series_quality(
                    &mut ctx,
                    &sm,
                    k,
                    &g.key,
                    mask,
                    args.margin_mm,
                    args.steps,
                )?);
            }
        }
    }
    shown.finish();
    let mut table = Vec::with_capacity(cands.len());
    for (cand, rows) in cands.iter().zip(&rows) {
        let q = summarise(cand, rows);
        tracing::info!(split, method = cand.method.name(), layer = %cand.layer.name, hit_rate = ?q.hit_rate, "explain quality");
        table.push(q);
    }
    Ok(table)
}

/// One map a run may make: a method at a layer.
#[derive(Clone, Debug)]
struct Candidate {
    method: Method,
    layer: CamLayer,
}

/// Every method at every layer, method by method.
fn candidates(methods: &[Method], layers: &[CamLayer]) -> Vec<Candidate> {
    methods
        .iter()
        .flat_map(|&method| {
            layers.iter().map(move |l| Candidate {
                method,
                layer: l.clone(),
            })
        })
        .collect()
}

/// The passes over a series that make `cands`' maps: runs of one method, at most `per_pass` layers
/// each, as (index of the run's first candidate, method, layers).
fn passes(cands: &[Candidate], per_pass: usize) -> Vec<(usize, Method, Vec<CamLayer>)> {
    let mut out: Vec<(usize, Method, Vec<CamLayer>)> = Vec::new();
    for (i, c) in cands.iter().enumerate() {
        match out.last_mut() {
            Some((_, m, layers)) if *m == c.method && layers.len() < per_pass => layers.push(c.layer.clone()),
            _ => out.push((i, c.method, vec![c.layer.clone()])),
        }
    }
    out
}

/// Pack-grid maps held at once while one series is explained at several layers.
const MAP_BUDGET_BYTES: usize = 1 << 30;

/// How many layers one pass over a series computes, so that their maps (f32 on the pack grid)
/// stay within [`MAP_BUDGET_BYTES`]: every layer at once for small volumes, fewer for large ones.
fn layers_per_pass(ds: &Dataset, g: &SeriesSamples) -> usize {
    let cat = ds.catalog();
    let r = g.series_row as usize;
    let dim = |name: &str| {
        cat.col_u32(crate::catalog::columns::Level::Series, name)
            .ok()
            .and_then(|c| c.get(r).copied())
            .unwrap_or(1)
            .max(1) as usize
    };
    let bytes = 4 * dim("n_slices") * dim("rows") * dim("cols");
    (MAP_BUDGET_BYTES / bytes).max(1)
}

/// Parameter groups from the top of the network down (fc, then the last stage, ...): each stage of
/// the sanity check re-initialises one more group.
fn randomisation_groups<B: Backend>(net: &Net<B>) -> Vec<Vec<std::ops::Range<usize>>> {
    let mut groups: Vec<(String, Vec<std::ops::Range<usize>>)> = Vec::new();
    for e in net.spec.params.entries() {
        let top = e.name.split('.').next().unwrap_or("").to_string();
        let top = if top == "conv1" || top == "bn1" {
            "stem".to_string()
        } else {
            top
        };
        match groups.last_mut() {
            Some((name, ranges)) if *name == top => ranges.push(e.range.clone()),
            _ => groups.push((top, vec![e.range.clone()])),
        }
    }
    groups.into_iter().rev().map(|(_, r)| r).collect()
}

/// The cascading randomisation check at one layer over up to `SANITY_SERIES` series.
fn sanity<B: GradCamOps>(
    b: &B,
    p: &Plan,
    ds: &Dataset,
    groups: &[SeriesSamples],
    cand: &Candidate,
) -> Result<SanityCheck, Failure> {
    let mut ctx = new_ctx(b, p, ds)?;
    let n = ctx.net.spec.params.len();
    let trained = b.download(b.view(&ctx.net.param, 0..n)).map_err(job)?;
    let mut random = vec![0.0f32; n];
    crate::nn::init::init_params(
        &ctx.net.spec.params,
        &mut random,
        p.settings.train.seed ^ 0x5A17_C4EC,
    );
    let stages = randomisation_groups(&ctx.net);
    let chosen: Vec<&SeriesSamples> = groups.iter().take(SANITY_SERIES).collect();
    let mut maps: Vec<Vec<Vec<f32>>> = Vec::with_capacity(stages.len() + 1);
    let mut params = trained.clone();
    for stage in 0..=stages.len() {
        if stage > 0 {
            for r in &stages[stage - 1] {
                params[r.clone()].copy_from_slice(&random[r.clone()]);
            }
        }
        b.upload_into(&params, b.view_mut(&mut ctx.net.param, 0..n))
            .map_err(job)?;
        let mut stage_maps = Vec::with_capacity(chosen.len());
        for g in &chosen {
            let mut sm = ctx.explain_series(g, std::slice::from_ref(&cand.layer), cand.method)?;
            stage_maps.push(sm.layers.swap_remove(0).map);
        }
        maps.push(stage_maps);
    }
    Ok(quality::sanity_check(&maps))
}

#[derive(Serialize)]
struct QualityJson {
    /// The method of the best candidate; `methods` were all tried.
    method: String,
    methods: Vec<String>,
    target: String,
    margin_mm: f64,
    steps: usize,
    validation_split: String,
    split: String,
    validation: Vec<LayerQuality>,
    test: Vec<LayerQuality>,
    best_layer: String,
    best: LayerQuality,
    sanity: SanityCheck,
}

pub fn run_explain(args: ExplainArgs) -> Result<i32, Failure> {
    let device = resolve_device(&args.device)?;
    let p = plan(&args)?;
    match device {
        Device::Cpu => explain_on(&CpuBackend, &args, &p),
        Device::Cuda { auto } => match open_gpu(auto, 0, 0, 1, |ok| ok)? {
            Some(b) => explain_on(&b, &args, &p),
            None => explain_on(&CpuBackend, &args, &p),
        },
    }
}

/// The explain run on one backend.
fn explain_on<B: GradCamOps>(b: &B, args: &ExplainArgs, p: &Plan) -> Result<i32, Failure> {
    std::fs::create_dir_all(&args.out).map_err(|e| job(format!("{}: {e}", args.out.display())))?;
    let truth = match (&args.truth, &args.key) {
        (Some(t), Some(k)) => {
            let key = SiteKey::load(k).map_err(usage)?;
            Some(LesionTruth::load(t, &key).map_err(usage)?)
        }
        (Some(_), None) => return Err(usage("--truth needs --key (the site key of the packs)")),
        _ => None,
    };
    let ds = open_split(p, &p.split)?;
    let spec = load_net(b, &p.ck, &p.settings, &ds)?.spec;
    let layers = select_layers(&spec, &args.layer).map_err(usage)?;
    let mut cands = candidates(&p.methods, &layers);
    let mut quality_json = None;
    if args.evaluate {
        let truth = truth.as_ref().expect("checked in plan");
        let val = evaluate_split(b, p, args, truth, &args.val_split, &cands)?;
        let best = best_layer(&val).ok_or_else(|| job("no layer to evaluate"))?;
        let test = evaluate_split(b, p, args, truth, &p.split, &cands)?;
        let groups = choose_series(
            &ds,
            p.series_filter.as_deref(),
            Some(truth),
            true,
            args.max_series,
        );
        let check = sanity(b, p, &ds, &groups, &cands[best])?;
        let table = format!(
            "{}{}",
            quality_table(&args.val_split, &val),
            quality_table(&p.split, &test)[..]
                .lines()
                .skip(2)
                .map(|l| format!("{l}\n"))
                .collect::<String>()
        );
        let summary = QualityJson {
            method: cands[best].method.name().into(),
            methods: p.methods.iter().map(|m| m.name().to_string()).collect(),
            target: p.target_name.clone(),
            margin_mm: args.margin_mm,
            steps: args.steps,
            validation_split: args.val_split.clone(),
            split: p.split.clone(),
            best_layer: cands[best].layer.name.clone(),
            best: test[best].clone(),
            validation: val,
            test,
            sanity: check,
        };
        write(&args.out.join("quality.md"), table.as_bytes())?;
        let json = serde_json::to_string_pretty(&summary).expect("serialisable");
        write(&args.out.join("quality.json"), json.as_bytes())?;
        cands = vec![cands[best].clone()];
        quality_json = Some((summary, table));
    }
    // Overlays, montages and maps of the chosen series at the chosen layer(s).
    let groups = choose_series(
        &ds,
        p.series_filter.as_deref(),
        truth.as_ref(),
        false,
        args.max_series,
    );
    if groups.is_empty() {
        return Err(usage(format!("split {} has no series to explain", p.split)));
    }
    let h5_path = args.out.join("maps.h5");
    let h5 = hdf5::File::create(&h5_path).map_err(|e| job(format!("{}: {e}", h5_path.display())))?;
    let mut ctx = new_ctx(b, p, &ds)?;
    let mut report = report_header(p);
    let mut sections: Vec<String> = cands
        .iter()
        .map(|c| {
            format!(
                "## {} at layer {} (node {})\n\n",
                c.method.name(),
                c.layer.name,
                c.layer.node
            )
        })
        .collect();
    let mut shown = crate::logging::Progress::new("explain: series written", groups.len() as u64);
    for g in &groups {
        shown.inc(1);
        let mut mask = None;
        for (first, method, chunk) in passes(&cands, layers_per_pass(&ds, g)) {
            let sm = ctx.explain_series(g, &chunk, method)?;
            if let (Some(t), None) = (&truth, &mask) {
                mask = Some(masks_for(&ds, t, g, sm.volume.shape)?);
            }
            for (k, layer) in chunk.iter().enumerate() {
                let quality = |m| series_quality(&mut ctx, &sm, k, &g.key, m, args.margin_mm, args.steps);
                let q = mask.as_deref().map(quality).transpose()?;
                let e = Explained {
                    g,
                    sm: &sm,
                    index: k,
                    layer,
                    method,
                    mask: mask.as_deref(),
                    quality: q.as_ref(),
                };
                sections[first + k] += &write_series(&args.out, &h5, &ds, p, &e)?;
            }
        }
    }
    shown.finish();
    for section in sections {
        report += &section;
        report += "\n";
    }
    if let Some((summary, table)) = &quality_json {
        report += &format!(
            "## Explanation quality\n\nPointing game margin {} mm; deletion/insertion with {} steps; best method \
             and layer chosen on split {}: **{} at {}**, reported on split {} (hit rate {}).\n\n{}\n\
             Randomisation sanity check (Spearman correlation with the trained model's maps, top layers \
             randomised first): {:?} → {}\n",
            summary.margin_mm,
            summary.steps,
            summary.validation_split,
            summary.method,
            summary.best_layer,
            summary.split,
            fmt_opt(summary.best.hit_rate),
            table,
            summary
                .sanity
                .correlations
                .iter()
                .map(|c| (c * 1000.0).round() / 1000.0)
                .collect::<Vec<_>>(),
            if summary.sanity.passed { "passed" } else { "FAILED" }
        );
    }
    write(&args.out.join("report.md"), report.as_bytes())?;
    if !args.silent {
        print_outcome(args, quality_json.as_ref(), groups.len(), &cands);
    }
    Ok(EXIT_OK)
}
