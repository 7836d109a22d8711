//! The typed experiment settings of `train`, `eval` and `predict` (and of `stage` and `plan`, which
//! must agree with `train` on them): the `[model]`, `[data]`, `[sampler]`, `[train]` and `[eval]`
//! tables of a config file, each with defaults, unknown keys rejected with their name, and values
//! checked before any work starts.

use crate::config::Config;
use crate::data::sampler::{Layout, Sampler, SamplerConfig, SamplerError};
use crate::data::{DataConfig, Dataset, SampleMode};
use crate::nn::ResNetConfig;
use crate::optim::OptimizerConfig;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// How slice scores become one series or patient score. TOML: `"max"`, `"mean"` or `{ topk = 3 }`
/// (mean of the k highest; k = 0 is read as 1).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Aggregate {
    Max,
    Mean,
    TopK(u32),
}

/// What the model predicts, which decides its outputs, loss and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// One logit per label (BCE); AUC, accuracy.
    Binary,
    /// A score (MSE); MAE.
    Regression,
    /// A risk score (Cox partial likelihood over the global batch); labels are [time, event]; C-index.
    Survival,
    /// A foreground logit per voxel against a mask label set (`[data] masks`), trained on patches
    /// with a Dice-family loss (`[train] seg_loss`); Dice, IoU, HD95 and mean surface distance per
    /// case from sliding-window inference over whole series.
    Segmentation,
}

/// Segmentation loss on per-voxel logits (`[train] seg_loss`; see `train::segloss`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SegLoss {
    Dice,
    DiceCe,
    Focal,
}

fn is_resnet(a: &str) -> bool {
    a == RESNET
}

/// `[model] architecture` of a classifier, regressor or risk model (the default).
pub const RESNET: &str = "resnet";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSettings {
    /// "resnet" (a classifier, regressor or risk model) or "unet" (segmentation: `widths` are its
    /// levels, top first; `blocks` and the stem keys are not used).
    #[serde(skip_serializing_if = "is_resnet")]
    pub architecture: String,
    /// Channels of each stage (stage i > 0 halves the resolution).
    pub widths: Vec<u32>,
    /// BasicBlocks per stage.
    pub blocks: Vec<u32>,
    pub stem_kernel: u32,
    pub stem_stride: u32,
    pub stem_pool: bool,
    /// Start from these weights (a safetensors state dict: ours or torchvision's).
    pub init: Option<PathBuf>,
    /// Name prefixes whose shape may differ from `init` and are then left at their initial values.
    pub skip_mismatched: Vec<String>,
}

impl Default for ModelSettings {
    fn default() -> Self {
        ModelSettings {
            architecture: RESNET.into(),
            widths: vec![8, 16, 32],
            blocks: vec![1, 1, 1],
            stem_kernel: 3,
            stem_stride: 1,
            stem_pool: false,
            init: None,
            skip_mismatched: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainSettings {
    /// Catalog directory and manifest file (the command line may give them instead).
    pub catalog: Option<PathBuf>,
    pub manifest: Option<PathBuf>,
    pub train_split: String,
    pub val_split: String,
    pub task: Task,
    pub epochs: u32,
    /// Samples per rank per micro-batch.
    pub batch_size: u32,
    /// Micro-batches accumulated per optimizer step (global batch = batch_size × micro_batches × ranks).
    pub micro_batches: u32,
    pub optimizer: OptimizerConfig,
    pub lr: f32,
    pub warmup_steps: u32,
    /// "cosine" (to `min_lr` at the last step) or "constant".
    pub schedule: String,
    pub min_lr: f32,
    pub grad_clip: Option<f32>,
    /// Weight of positive examples in the binary loss (rare findings).
    pub pos_weight: Option<f32>,
    /// Segmentation loss: "dice_ce" (the default), "dice" or "focal".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seg_loss: Option<SegLoss>,
    pub seed: u64,
    /// Optimizer steps between checkpoints (0: at the end of each epoch only).
    pub checkpoint_every: u32,
    pub keep_checkpoints: usize,
    /// Epochs between validations (0: only after the last epoch).
    pub eval_every: u32,
    /// Gradient allreduce bucket size, MB.
    pub bucket_mb: f64,
    /// Batches prepared ahead by the loader.
    pub prefetch: usize,
    /// Compute threads per rank (default: the node's cores divided by its ranks).
    pub threads: Option<usize>,
    /// Stop after this many optimizer steps in total (tests, benchmarks).
    pub max_steps: Option<u64>,
    /// Every this many epochs, Grad-CAM overlays of a few validation series are logged to TensorBoard
    /// (0: never).
    pub explain_every: u32,
    /// Where TensorBoard events go: `<this>/<run directory name>/` (a project-wide log directory);
    /// unset: `<run>/tb/`.
    pub tensorboard: Option<std::path::PathBuf>,
    /// "auto" or "cpu" (the CUDA backend plugs in here).
    pub device: String,
    /// Seconds a rank may stay in one phase of the loop (data, forward/backward, allreduce, optimizer,
    /// checkpoint, evaluation) before its watchdog ends the job with MPI_Abort; 0 turns it off. Must
    /// exceed the longest validation pass and checkpoint write.
    pub watchdog_s: u64,
    /// A non-finite loss or gradient: "stop" the run (no checkpoint from those weights) or "skip" the
    /// step (no optimizer update; counted in the metrics).
    pub on_nonfinite: OnNonfinite,
}

/// What a step with a non-finite loss or gradient does (`[train] on_nonfinite`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnNonfinite {
    Stop,
    Skip,
}

impl Default for TrainSettings {
    fn default() -> Self {
        TrainSettings {
            catalog: None,
            manifest: None,
            train_split: "train".into(),
            val_split: "val".into(),
            task: Task::Binary,
            epochs: 10,
            batch_size: 16,
            micro_batches: 1,
            optimizer: OptimizerConfig::AdamW {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 1e-4,
            },
            lr: 2e-3,
            warmup_steps: 20,
            schedule: "cosine".into(),
            min_lr: 1e-5,
            grad_clip: Some(5.0),
            pos_weight: None,
            seg_loss: None,
            seed: 2026,
            checkpoint_every: 0,
            keep_checkpoints: 3,
            eval_every: 1,
            bucket_mb: 25.0,
            prefetch: 4,
            threads: None,
            tensorboard: None,
            explain_every: 0,
            max_steps: None,
            device: "auto".into(),
            watchdog_s: 600,
            on_nonfinite: OnNonfinite::Stop,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalSettings {
    /// Sample scores → series and patient scores.
    pub aggregate: Aggregate,
    /// Bootstrap resamples (over patients) for confidence intervals.
    pub bootstrap: u32,
    pub ci_level: f64,
    /// Decision threshold on the probability for accuracy, sensitivity and specificity; for
    /// segmentation, the probability above which voxels form detection candidates and `predict`'s
    /// masks.
    pub threshold: f64,
    /// Report the brightest-lung-voxel baseline beside a binary CT model, and the trivial image
    /// baselines beside a risk model.
    pub baseline: bool,
    /// Survival: the horizon, in the time label's units, of the AUC of an event within it.
    pub horizon: f64,
    /// Segmentation: the fraction of a patch that neighbouring sliding windows share.
    pub overlap: f64,
    /// Segmentation: blend windows with a Gaussian weight (else uniformly).
    pub gaussian: bool,
    /// Segmentation: average the prediction over flips of every spatial axis (test-time
    /// augmentation; 2^axes passes).
    pub flip_tta: bool,
}

impl Default for EvalSettings {
    fn default() -> Self {
        EvalSettings {
            aggregate: Aggregate::Max,
            bootstrap: 1000,
            ci_level: 0.95,
            threshold: 0.5,
            baseline: true,
            horizon: 1826.0,
            overlap: 0.5,
            gaussian: true,
            flip_tta: false,
        }
    }
}

/// Everything a run needs besides its inputs; stored in every checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub model: ModelSettings,
    pub data: DataConfig,
    pub sampler: SamplerConfig,
    pub train: TrainSettings,
    pub eval: EvalSettings,
}

fn table<T: serde::de::DeserializeOwned + Default>(
    value: &Option<toml::Value>,
    name: &str,
) -> Result<T, String> {
    match value {
        Some(v) => v.clone().try_into().map_err(|e| format!("config [{name}]: {e}")),
        None => Ok(T::default()),
    }
}

impl Settings {
    /// The sampler of the training split, built from the settings alone: the one construction shared
    /// by `train`, the staging plan (`stage`) and `plan`, so they never disagree on which shards a node
    /// reads.
    pub fn train_sampler(&self, train_ds: &Dataset, layout: Layout) -> Result<Sampler, SamplerError> {
        let t = &self.train;
        let per_rank = t.batch_size as usize * t.micro_batches as usize;
        Sampler::for_dataset(&self.sampler, t.seed, train_ds, layout, per_rank)
    }

    pub fn from_config(config: &Config) -> Result<Settings, String> {
        let s = Settings {
            model: table(&config.model, "model")?,
            data: table(&config.data, "data")?,
            sampler: table(&config.sampler, "sampler")?,
            train: table(&config.train, "train")?,
            eval: table(&config.eval, "eval")?,
        };
        s.validate()?;
        Ok(s)
    }

    pub fn validate(&self) -> Result<(), String> {
        let t = &self.train;
        let m = &self.model;
        let bad = |key: &str, why: &str| Err(format!("config {key}: {why}"));
        let unet = match m.architecture.as_str() {
            RESNET => false,
            crate::nn::unet::UNET => true,
            _ => return bad("[model] architecture", "use \"resnet\" or \"unet\""),
        };
        let segmentation = t.task == Task::Segmentation;
        if unet != segmentation {
            return bad(
                "[model] architecture",
                "a segmentation task takes architecture = \"unet\", and a U-Net only a segmentation task",
            );
        }
        if segmentation {
            return self.validate_segmentation();
        }
        if self.data.masks.is_some() {
            return bad(
                "[data] masks",
                "pixel labels are the targets of task = \"segmentation\" only",
            );
        }
        if m.widths.is_empty() || m.widths.len() != m.blocks.len() {
            return bad(
                "[model] widths/blocks",
                "need one width and one block count per stage",
            );
        }
        if m.widths.iter().any(|&w| w == 0) || m.blocks.iter().any(|&b| b == 0) {
            return bad("[model] widths/blocks", "must be positive");
        }
        if m.stem_kernel == 0 || m.stem_stride == 0 {
            return bad("[model] stem_kernel/stem_stride", "must be positive");
        }
        if t.task == Task::Survival && self.data.labels.len() != 2 {
            return bad(
                "[data] labels",
                "a survival task needs exactly two labels: time and event",
            );
        }
        if self.data.labels.is_empty() {
            return bad(
                "[data] labels",
                "name at least one label column, e.g. [\"nodule_slices.nodule\"]",
            );
        }
        self.validate_common()
    }

    /// A segmentation run: a mask set and a U-Net whose levels divide the patch.
    fn validate_segmentation(&self) -> Result<(), String> {
        let bad = |key: &str, why: String| Err(format!("config {key}: {why}"));
        let d = &self.data;
        if d.masks.is_none() {
            return bad(
                "[data] masks",
                "a segmentation task needs the mask label set to learn, e.g. masks = \"lidc\"".into(),
            );
        }
        if !d.labels.is_empty() || !d.tabular.is_empty() {
            return bad(
                "[data] labels/tabular",
                "a segmentation task learns the masks only; remove labels and tabular".into(),
            );
        }
        if d.mode == SampleMode::Volume3d || d.mode == SampleMode::Slice25d {
            return bad(
                "[data] mode",
                format!(
                    "{:?}: segmentation trains on \"crop3d\" patches or \"slice\" images",
                    d.mode
                ),
            );
        }
        if let Some(f) = d.foreground {
            if !(0.0..=1.0).contains(&f) {
                return bad("[data] foreground", format!("{f} is not a fraction in [0, 1]"));
            }
        }
        let e = &self.eval;
        if !(0.0..1.0).contains(&e.overlap) {
            return bad("[eval] overlap", format!("{} is not within [0, 1)", e.overlap));
        }
        crate::nn::UNetConfig::new(self.spatial_dims(), 1, 1, self.model.widths.clone())
            .check(d.extent())
            .or_else(|why| bad("[model] widths / [data] size", why))?;
        self.validate_common()
    }

    fn validate_common(&self) -> Result<(), String> {
        let t = &self.train;
        let bad = |key: &str, why: &str| Err(format!("config {key}: {why}"));
        if t.epochs == 0 {
            return bad("[train] epochs", "must be at least 1");
        }
        if t.batch_size == 0 || t.micro_batches == 0 {
            return bad("[train] batch_size/micro_batches", "must be at least 1");
        }
        if !(t.lr > 0.0 && t.lr.is_finite()) {
            return bad("[train] lr", "must be a positive number");
        }
        if !matches!(t.schedule.as_str(), "cosine" | "constant") {
            return bad("[train] schedule", "use \"cosine\" or \"constant\"");
        }
        if !(t.bucket_mb > 0.0 && t.bucket_mb.is_finite()) {
            return bad("[train] bucket_mb", "must be positive");
        }
        if !matches!(t.device.as_str(), "auto" | "cpu" | "cuda") {
            return bad("[train] device", "use auto, cpu or cuda");
        }
        if t.keep_checkpoints == 0 {
            return bad("[train] keep_checkpoints", "must be at least 1");
        }
        if t.threads == Some(0) {
            return bad("[train] threads", "must be at least 1");
        }
        if !(0.0 < self.eval.ci_level && self.eval.ci_level < 1.0) {
            return bad("[eval] ci_level", "must be between 0 and 1");
        }
        Ok(())
    }

    /// Model outputs for the task.
    pub fn num_outputs(&self) -> u32 {
        match self.train.task {
            Task::Binary => self.data.labels.len() as u32,
            Task::Regression => self.data.labels.len() as u32,
            Task::Survival => 1,
            Task::Segmentation => 1,
        }
    }

    /// The model the settings describe, for samples of `in_channels` channels.
    pub fn model(&self, in_channels: u32) -> crate::nn::ModelConfig {
        match self.train.task {
            Task::Segmentation => crate::nn::UNetConfig::new(
                self.spatial_dims(),
                in_channels,
                self.num_outputs(),
                self.model.widths.clone(),
            )
            .into(),
            _ => self.resnet(in_channels).into(),
        }
    }

    /// The segmentation loss (`[train] seg_loss`, Dice + CE unless set).
    pub fn seg_loss(&self) -> SegLoss {
        self.train.seg_loss.unwrap_or(SegLoss::DiceCe)
    }

    pub fn spatial_dims(&self) -> u32 {
        match self.data.mode {
            SampleMode::Slice | SampleMode::Slice25d => 2,
            SampleMode::Crop3d | SampleMode::Volume3d => 3,
        }
    }

    pub fn resnet(&self, in_channels: u32) -> ResNetConfig {
        ResNetConfig {
            spatial_dims: self.spatial_dims(),
            in_channels,
            num_outputs: self.num_outputs(),
            widths: self.model.widths.clone(),
            blocks: self.model.blocks.clone(),
            stem_kernel: self.model.stem_kernel,
            stem_stride: self.model.stem_stride,
            stem_pool: self.model.stem_pool,
            tabular: 2 * self.data.tabular.len() as u32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every shipped config parses, validates, and builds a model and a sample shape.
    #[test]
    fn shipped_configs_are_valid() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) != Some("toml") {
                continue;
            }
            let config = Config::load(Some(&path)).unwrap_or_else(|e| panic!("{e}"));
            if config.train.is_none() {
                continue;
            }
            let s = Settings::from_config(&config).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            s.data
                .validate()
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let cfg = s.model(1);
            assert_eq!(cfg.spatial_dims() as usize, s.data.axes(), "{}", path.display());
            seen += 1;
        }
        assert!(
            seen >= 5,
            "expected the smoke config and four templates, found {seen}"
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let config: Config = toml::from_str("[train]\nepoch = 3\n").unwrap();
        let e = Settings::from_config(&config).unwrap_err();
        assert!(e.contains("epoch"), "{e}");
        let config: Config = toml::from_str("[train]\nlr = -1.0\n[data]\nlabels = [\"a.b\"]\n").unwrap();
        let e = Settings::from_config(&config).unwrap_err();
        assert!(e.contains("lr"), "{e}");
        let config: Config =
            toml::from_str("[train]\ntask = \"survival\"\n[data]\nlabels = [\"a.b\"]\n").unwrap();
        let e = Settings::from_config(&config).unwrap_err();
        assert!(e.contains("two labels"), "{e}");
    }

    #[test]
    fn segmentation_takes_a_unet_masks_and_a_patch_its_levels_divide() {
        let parse = |text: &str| Settings::from_config(&toml::from_str::<Config>(text).unwrap());
        let ok = "[model]\narchitecture = \"unet\"\nwidths = [8, 16, 32]\n[data]\nmode = \"crop3d\"\n\
                  size = [8, 32, 32]\nmasks = \"lidc\"\n[train]\ntask = \"segmentation\"\n";
        let s = parse(ok).unwrap();
        assert!(matches!(s.model(1), crate::nn::ModelConfig::UNet(_)));
        assert_eq!(s.seg_loss(), SegLoss::DiceCe);
        for (text, key) in [
            (ok.replace("masks = \"lidc\"\n", ""), "[data] masks"),
            (
                ok.replace("architecture = \"unet\"\n", ""),
                "[model] architecture",
            ),
            (
                ok.replace("size = [8, 32, 32]", "size = [8, 30, 32]"),
                "multiple of 4",
            ),
            (ok.replace("crop3d", "volume3d"), "[data] mode"),
            (format!("{ok}[eval]\noverlap = 1.0\n"), "[eval] overlap"),
            (
                ok.replace("task = \"segmentation\"", "task = \"binary\""),
                "[model] architecture",
            ),
        ] {
            let e = parse(&text).unwrap_err();
            assert!(e.contains(key), "{key}: {e}");
        }
        // Masks on a classifier are refused, not ignored.
        let e = parse("[data]\nlabels = [\"a.b\"]\nmasks = \"lidc\"\n").unwrap_err();
        assert!(e.contains("[data] masks"), "{e}");
    }
}
