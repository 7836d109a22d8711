//! The config-file reference (`docs/src/config.md`), generated from the config structs so that it
//! cannot drift from them:
//!
//! - the keys of each table are the field names serde accepts, read from the struct's `Deserialize`
//!   implementation itself ([`struct_fields`]);
//! - the defaults are the struct's `Default` value, serialised;
//! - the allowed values of an enum-valued key are the variant names its `Deserialize` accepts;
//! - only the type and the description of each key are written by hand, in [`SECTIONS`]. [`problems`]
//!   lists every accepted key without a description and every description of a key that does not
//!   exist; a test requires it to be empty, and another that the committed page equals
//!   [`render::render`].

use serde::Serialize;

mod probe;
pub mod render;

pub use probe::{enum_variants, struct_fields};

/// The command that rewrites `docs/src/config.md` from [`render`].
pub const REGENERATE: &str = "MEDTRAIN_UPDATE_DOCS=1 cargo test --locked --test integration -- docs::";

/// One key of a table: its type and what it does.
pub struct Key {
    pub name: &'static str,
    pub ty: &'static str,
    pub doc: &'static str,
    /// The variant names of the key's enum type, when it has one.
    pub choices: Option<fn() -> &'static [&'static str]>,
    /// Shown as the default where the struct has no `Default` (a required key, or an optional one
    /// whose absence means something the description says).
    pub default_note: Option<&'static str>,
}

/// One table of the config file.
pub struct Section {
    /// As written in the file: `[train]`, `[data.augment]`, `[[catalog.labels.column]]`.
    pub header: &'static str,
    /// Which commands read it, and anything true of the whole table.
    pub about: &'static str,
    /// The field names serde accepts, from [`struct_fields`].
    pub fields: fn() -> &'static [&'static str],
    /// The `Default` value as a TOML table; `None` for tables without defaults (arrays of tables).
    pub defaults: Option<fn() -> toml::Value>,
    pub keys: &'static [Key],
}

fn defaults_of<T: Default + Serialize>() -> toml::Value {
    toml::Value::try_from(T::default()).expect("a config default serialises to TOML")
}

use crate::catalog::cli::{ColumnConfig, EventConfig, LabelsConfig};
use crate::config::{Config, PackConfig};
use crate::data::sampler::{SamplerConfig, SamplerMode};
use crate::data::{AugmentConfig, DataConfig, IntensityConfig, SampleMode};
use crate::phantom::PhantomConfig;
use crate::settings::{Aggregate, EvalSettings, ModelSettings, OnNonfinite, Task, TrainSettings};
use crate::stage::cli::StageConfig;

const fn key(name: &'static str, ty: &'static str, doc: &'static str) -> Key {
    Key {
        name,
        ty,
        doc,
        choices: None,
        default_note: None,
    }
}

const fn choice(
    name: &'static str,
    ty: &'static str,
    doc: &'static str,
    choices: fn() -> &'static [&'static str],
) -> Key {
    Key {
        name,
        ty,
        doc,
        choices: Some(choices),
        default_note: None,
    }
}

const fn noted(name: &'static str, ty: &'static str, doc: &'static str, note: &'static str) -> Key {
    Key {
        name,
        ty,
        doc,
        choices: None,
        default_note: Some(note),
    }
}

/// Every table of the config file, in the order of the page.
pub static SECTIONS: &[Section] = &[
    Section {
        header: "[phantom]",
        about: "Read by `phantom`. Its flags `--seed`, `--patients`, `--size`, `--slices` and \
                `--no-radiographs` override these.",
        fields: struct_fields::<PhantomConfig>,
        defaults: Some(defaults_of::<PhantomConfig>),
        keys: &[
            key(
                "seed",
                "integer",
                "Random seed: the cohort is a pure function of its settings.",
            ),
            key(
                "patients",
                "integer",
                "Number of patients (1 to 1,000,000). The default leaves 40 or more held-out patients \
                 for a validation split.",
            ),
            key(
                "size",
                "integer",
                "Rows = columns of every CT slice (16 to 1024).",
            ),
            key("slices", "integer", "Slices per CT series (1 to 2000)."),
            key(
                "slice_thickness_mm",
                "float",
                "Slice thickness in mm, also the slice spacing (contiguous slices); at most 20.",
            ),
            key(
                "radiographs",
                "boolean",
                "Write one CR or DX chest radiograph per patient.",
            ),
        ],
    },
    Section {
        header: "[pack]",
        about: "Read by `pack` (files and `--from` an archive); `catalog labels import --config` reads \
                `key` from here too. Flags override it.",
        fields: struct_fields::<PackConfig>,
        defaults: Some(defaults_of::<PackConfig>),
        keys: &[
            noted(
                "shard_size",
                "string",
                "Target pixel bytes per shard: bytes or a size with a unit (`512MiB`, `2GiB`, `1.5GB`). \
                 Flag: `--shard-size`.",
                "`2GiB`",
            ),
            key(
                "key",
                "path",
                "Site key file (hex, mode 0600) for the pseudonyms and date offsets. Flag: `--key`.",
            ),
            key(
                "ca_file",
                "path",
                "`pack --from`: PEM file with the archive's CA certificate(s); unset: the bundled web \
                 PKI roots. Flag: `--ca-file`.",
            ),
            key(
                "auth_file",
                "path",
                "`pack --from`: credentials file holding one line, `user:password` or `bearer TOKEN`. \
                 Flag: `--auth-file`.",
            ),
        ],
    },
    Section {
        header: "[catalog.labels]",
        about: "Read by `catalog labels import --config FILE`; its flags override it (list flags add \
                to the lists). Other keys under `[catalog]` are not read.",
        fields: struct_fields::<LabelsConfig>,
        defaults: Some(defaults_of::<LabelsConfig>),
        keys: &[
            noted(
                "patient_column",
                "string",
                "CSV header of the patient ID column. Flag: `--patient-column`.",
                "`PatientID`",
            ),
            noted(
                "series_column",
                "string",
                "CSV header of the SeriesInstanceUID column. Flag: `--series-column`.",
                "`SeriesInstanceUID`",
            ),
            noted(
                "sop_column",
                "string",
                "CSV header of the SOPInstanceUID column. Flag: `--sop-column`.",
                "`SOPInstanceUID`",
            ),
            noted(
                "instance_column",
                "string",
                "CSV header of the InstanceNumber column (single values or ranges like `40-47`). \
                 Flag: `--instance-column`.",
                "`InstanceNumber`",
            ),
            noted(
                "by_position",
                "boolean",
                "The instance column holds 1-based ordinals in ascending slice position, not \
                 InstanceNumber. Flag: `--by-position`.",
                "`false`",
            ),
            key(
                "ignore",
                "array of strings",
                "CSV columns that are not labels. Flag: `--ignore` (repeatable).",
            ),
            key(
                "column",
                "array of tables",
                "The label columns to import, one [`[[catalog.labels.column]]`](#cataloglabelscolumn) \
                 table each; none (and no `--label` flag): every non-key column, types inferred.",
            ),
            key(
                "event_within",
                "array of tables",
                "Derived labels \"event within N days\", one \
                 [`[[catalog.labels.event_within]]`](#cataloglabelsevent_within) table each.",
            ),
        ],
    },
    Section {
        header: "[[catalog.labels.column]]",
        about: "One label column of `catalog labels import` (the flag form is \
                `--label NAME=COLUMN[:type]`).",
        fields: struct_fields::<ColumnConfig>,
        defaults: None,
        keys: &[
            noted(
                "name",
                "string",
                "Name of the label column in the catalog.",
                "required",
            ),
            noted("column", "string", "CSV header of the column.", "`name`"),
            noted(
                "type",
                "string",
                "Value type: `bool`, `int`, `float` or `category`.",
                "inferred from the values",
            ),
        ],
    },
    Section {
        header: "[[catalog.labels.event_within]]",
        about: "One derived label of `catalog labels import` (the flag form is \
                `--event-within NAME=EVENT,TIME,DAYS`): true when the event happened within `days`, \
                false when follow-up without the event lasted longer, unknown when follow-up was \
                censored earlier.",
        fields: struct_fields::<EventConfig>,
        defaults: None,
        keys: &[
            noted("name", "string", "Name of the derived label.", "required"),
            noted(
                "event",
                "string",
                "CSV header of the event column (e.g. death).",
                "required",
            ),
            noted(
                "time",
                "string",
                "CSV header of the time-to-event or follow-up column, days.",
                "required",
            ),
            noted("days", "float", "The horizon, days.", "required"),
        ],
    },
    Section {
        header: "[model]",
        about: "Read by `train` and `plan`; stored in every checkpoint, so `eval`, `predict` and \
                `explain` take it from there. A ResNet of BasicBlocks, 2D or 3D by `[data] mode`.",
        fields: struct_fields::<ModelSettings>,
        defaults: Some(defaults_of::<ModelSettings>),
        keys: &[
            key(
                "architecture",
                "string",
                "`\"resnet\"` (binary, regression and survival tasks) or `\"unet\"` (`task = \
                 \"segmentation\"`: `widths` are its levels, top first, each halving the patch; \
                 `blocks` and the stem keys are not used).",
            ),
            key(
                "widths",
                "array of integers",
                "Channels of each stage (stage i > 0 halves the resolution); one per stage, positive.",
            ),
            key(
                "blocks",
                "array of integers",
                "BasicBlocks per stage; as many entries as `widths`, positive.",
            ),
            key("stem_kernel", "integer", "Kernel size of the stem convolution."),
            key("stem_stride", "integer", "Stride of the stem convolution."),
            key(
                "stem_pool",
                "boolean",
                "Max pooling after the stem (as in torchvision's ResNets).",
            ),
            key(
                "init",
                "path",
                "Start from weights in a safetensors state dict, ours or torchvision's (3→1 stem).",
            ),
            key(
                "skip_mismatched",
                "array of strings",
                "Parameter name prefixes whose shape may differ from `init` (kept as initialised).",
            ),
        ],
    },
    Section {
        header: "[data]",
        about: "Read by `train`, `stage` and `plan`; stored in every checkpoint. How catalog rows become \
                samples: mode, extent, spacing, intensities, labels, augmentation.",
        fields: struct_fields::<DataConfig>,
        defaults: Some(defaults_of::<DataConfig>),
        keys: &[
            choice(
                "mode",
                "string",
                "How a sample is cut from a series: `slice` (one slice, 2D), `slice25d` (a slice with \
                 `context` neighbours each side as channels, clamped at the series ends), `crop3d` (a \
                 3D crop of `size` voxels at the output spacing, centred on the series or on the \
                 sample's slice; random centre under augmentation) or `volume3d` (the whole volume \
                 resampled onto `size`).",
                enum_variants::<SampleMode>,
            ),
            key(
                "context",
                "integer",
                "`slice25d`: slices each side (at most 64); channels = (2 context + 1) × windows.",
            ),
            key(
                "size",
                "array of integers",
                "Output extent: `[H, W]` in 2D modes, `[D, H, W]` in 3D modes.",
            ),
            key(
                "spacing_mm",
                "array of floats",
                "Output spacing in mm (`[row, col]` or `[z, row, col]`); unset: the series' own \
                 spacing. Not with `volume3d` or `fit`.",
            ),
            key(
                "windows",
                "array of [center, width]",
                "CT windows in HU, one channel each: value = (HU − (c − w/2)) / w, clamped to [0, 1]. \
                 For radiographs and MR only their number counts (each channel holds the normalised \
                 image).",
            ),
            key(
                "labels",
                "array of strings",
                "Targets as `\"label_set.column\"`, in order; at least one (two, time and event, for \
                 `task = \"survival\"`).",
            ),
            key(
                "tabular",
                "array of strings",
                "Tabular inputs fused late, as `\"label_set.column\"` (numeric label columns: age, \
                 hand-crafted image features imported from a CSV), `\"catalog.NAME\"` (a numeric series \
                 column: `catalog.slice_thickness`) or `\"catalog.NAME=VALUE\"` (1 where a text series \
                 column has the value: `catalog.body_part=ANKLE`). Standardised with the training \
                 split's mean and standard deviation (kept in the checkpoint); a missing value is 0 \
                 with a missing-indicator input of 1. The head is one linear layer over [pooled CNN \
                 features, values, indicators]. Unset: images only.",
            ),
            key(
                "augment",
                "table",
                "Random augmentation: see [`[data.augment]`](#dataaugment).",
            ),
            key(
                "shard_dir",
                "path",
                "Read shards from this directory (same file names) instead of the catalogued paths: \
                 the directory `stage` prints. Flag: `train --shard-dir`.",
            ),
            key(
                "fit",
                "boolean",
                "2D modes: resize each image, aspect preserved, to fit `size` (isotropic in-plane \
                 spacing of max(rows × row spacing / H, cols × col spacing / W)), centred and padded; \
                 the sample's recorded affine holds the scale. Takes the place of `spacing_mm`.",
            ),
            key(
                "intensity",
                "table",
                "CR/DX and MR normalisation: [`[data.intensity]`](#dataintensity); CT: `windows`.",
            ),
            key(
                "masks",
                "string",
                "Segmentation: the mask label set (`catalog labels masks`) whose voxels are the \
                 targets, read through each sample's transform by nearest neighbour. Every series of \
                 the split needs a mask. Modes `crop3d` (patches) or `slice` (a slice-level split).",
            ),
            key(
                "foreground",
                "float",
                "Segmentation with `crop3d`: the fraction of training patches centred on a foreground \
                 voxel drawn at random (nnU-Net's oversampling; as far as the patch fits); the rest \
                 are placed uniformly. Default 1/3.",
            ),
        ],
    },
    Section {
        header: "[data.augment]",
        about: "Random augmentation ranges, applied through one affine per sample and seeded per \
                (seed, epoch, sample); every draw is uniform in ± range, flips with probability 1/2.",
        fields: struct_fields::<AugmentConfig>,
        defaults: Some(defaults_of::<AugmentConfig>),
        keys: &[
            key("flip_lr", "boolean", "Mirror columns (left-right)."),
            key("flip_ud", "boolean", "Mirror rows (up-down)."),
            key("rotate_deg", "float", "In-plane rotation, degrees (below 180)."),
            key(
                "scale",
                "float",
                "Isotropic zoom as a fraction (0.1 = ±10 %; below 1).",
            ),
            key(
                "translate_mm",
                "float",
                "Shift of the sampled region along each axis, mm.",
            ),
            key(
                "intensity",
                "float",
                "Jitter of the windowed value: v (1 + a) + b with a, b in ± intensity, clamped to \
                 [0, 1] (below 1).",
            ),
        ],
    },
    Section {
        header: "[data.intensity]",
        about: "Normalisation of non-CT series. CR/DX: stored values → Modality LUT or rescale → VOI LUT \
                (the table, else the first window) → MONOCHROME1 inverted → clip and z-score per image. \
                MR: rescale → clip and z-score per series. US: cropped by `pack` to the tissue region, RGB \
                as luma → clip and z-score per image (each frame of a cine loop).",
        fields: struct_fields::<IntensityConfig>,
        defaults: Some(defaults_of::<IntensityConfig>),
        keys: &[
            key(
                "radiograph_percentiles",
                "[low, high]",
                "CR/DX: per-image clip to these percentiles, then z-score (0 ≤ low < high ≤ 100).",
            ),
            key(
                "mr_percentiles",
                "[low, high]",
                "MR: per-series clip to these percentiles, then z-score (0 ≤ low < high ≤ 100).",
            ),
            key(
                "us_percentiles",
                "[low, high]",
                "US: per-image (per-frame) clip to these percentiles, then z-score (0 ≤ low < high ≤ 100).",
            ),
            key(
                "rgb",
                "bool",
                "RGB (and YBR, decoded to RGB) images as 3 channels R, G, B instead of their luma, each \
                 clipped and z-scored with the image's luma statistics, for a 3-channel stem (e.g. \
                 ImageNet weights through `[model] init`); grey images fill the 3 channels alike. \
                 Needs 3 `windows` (the channel count).",
            ),
        ],
    },
    Section {
        header: "[sampler]",
        about: "Read by `train`, `stage` and `plan`: which samples each rank trains on, step by step. A \
                pure function of seed, epoch and world layout, so a resumed run picks up mid-epoch.",
        fields: struct_fields::<SamplerConfig>,
        defaults: Some(defaults_of::<SamplerConfig>),
        keys: &[
            choice(
                "mode",
                "string",
                "`global`: one permutation per epoch, any rank may read any shard. `shard-local`: \
                 shards dealt to nodes, each node reads only its own (use it with `stage`).",
                enum_variants::<SamplerMode>,
            ),
            key(
                "window_shards",
                "integer",
                "`shard-local`: shards whose samples are shuffled together on a node; at least 1.",
            ),
            key(
                "rotate_every",
                "integer",
                "`shard-local`: re-deal shards to nodes every this many epochs; 0 keeps the first deal \
                 for the whole run, so staged shards stay valid.",
            ),
            key(
                "balance",
                "boolean",
                "Oversample minority classes: each class drawn about equally often per epoch.",
            ),
            key(
                "drop_last",
                "boolean",
                "Drop the last incomplete step instead of padding it with repeated samples.",
            ),
        ],
    },
    Section {
        header: "[train]",
        about: "Read by `train` (and `stage`, `plan`); stored in every checkpoint. Flags override \
                `epochs`, `batch_size`, `lr`, `seed`, `max_steps`, `threads`, `device`, `tensorboard`.",
        fields: struct_fields::<TrainSettings>,
        defaults: Some(defaults_of::<TrainSettings>),
        keys: &[
            key(
                "catalog",
                "path",
                "Catalog directory, when the command line does not give it.",
            ),
            key(
                "manifest",
                "path",
                "Manifest file, when the command line does not give it.",
            ),
            key("train_split", "string", "Split of the manifest trained on."),
            key("val_split", "string", "Split of the manifest validated on."),
            choice(
                "task",
                "string",
                "`binary`: one logit per label (BCE); AUC, accuracy, sensitivity, specificity. \
                 `regression`: a score (MSE); MAE. `survival`: a risk score (Cox partial likelihood \
                 over the global batch), labels `[time, event]`; C-index. `segmentation`: a foreground \
                 logit per voxel against `[data] masks` (a U-Net, `seg_loss`), trained on patches; \
                 Dice, IoU, HD95 and mean surface distance per case from sliding-window inference.",
                enum_variants::<Task>,
            ),
            key(
                "epochs",
                "integer",
                "Epochs to train; at least 1. Flag: `--epochs`.",
            ),
            key(
                "batch_size",
                "integer",
                "Samples per rank per micro-batch. Flag: `--batch-size`.",
            ),
            key(
                "micro_batches",
                "integer",
                "Micro-batches accumulated per optimizer step: global batch = batch_size × \
                 micro_batches × ranks.",
            ),
            key(
                "optimizer",
                "inline table",
                "`{ kind = \"adamw\", beta1, beta2, eps, weight_decay }` or `{ kind = \"sgd\", \
                 momentum, nesterov, weight_decay }`; every key of the chosen kind is required.",
            ),
            key("lr", "float", "Peak learning rate; positive. Flag: `--lr`."),
            key("warmup_steps", "integer", "Optimizer steps of linear warm-up."),
            key(
                "schedule",
                "string",
                "`\"cosine\"` (to `min_lr` at the last step) or `\"constant\"`.",
            ),
            key(
                "min_lr",
                "float",
                "Learning rate at the last step of the cosine schedule.",
            ),
            key(
                "grad_clip",
                "float",
                "Clip the global gradient norm to this value; unset: no clipping.",
            ),
            key(
                "pos_weight",
                "float",
                "Weight of positive examples in the binary loss (rare findings); unset: 1.",
            ),
            key(
                "seg_loss",
                "string",
                "Segmentation loss on sigmoid probabilities, as MONAI defines it: `\"dice_ce\"` (Dice \
                 plus binary cross-entropy; the default), `\"dice\"` or `\"focal\"` (γ = 2, α = 0.25).",
            ),
            key(
                "seed",
                "integer",
                "Seed of the initial weights, the sampler, augmentation and dropout. Flag: `--seed`.",
            ),
            key(
                "checkpoint_every",
                "integer",
                "Optimizer steps between checkpoints; 0: at the end of each epoch only.",
            ),
            key(
                "keep_checkpoints",
                "integer",
                "Newest checkpoints kept; at least 1.",
            ),
            key(
                "eval_every",
                "integer",
                "Epochs between validations; 0: only after the last epoch.",
            ),
            key(
                "bucket_mb",
                "float",
                "Gradient allreduce bucket size, MB; positive.",
            ),
            key("prefetch", "integer", "Batches prepared ahead by the loader."),
            key(
                "threads",
                "integer",
                "Threads per rank; unset: the node's cores / its ranks. Flag: `--threads`.",
            ),
            key(
                "max_steps",
                "integer",
                "Stop after this many optimizer steps in total (tests, benchmarks); a checkpoint is \
                 written there. Flag: `--max-steps`.",
            ),
            key(
                "tensorboard",
                "path",
                "TensorBoard events go to `<this>/<run directory name>/`, unset: `<run>/tb/`.",
            ),
            key(
                "explain_every",
                "integer",
                "Every this many epochs (0: never), Grad-CAM overlays of the first validation series \
                 (at most 4; the last layer, on the CPU) go to TensorBoard as images and to \
                 `<run>/explain-epochs/epoch-N/`.",
            ),
            key(
                "device",
                "string",
                "`\"auto\"` (CUDA when its libraries load and a GPU is visible, else the CPU), \
                 `\"cpu\"` or `\"cuda\"`. Flag: `--device`.",
            ),
            key(
                "watchdog_s",
                "integer",
                "Seconds a rank may stay in one phase of the loop (data, forward/backward, allreduce, \
                 optimizer, checkpoint, evaluation) before its watchdog ends the job with MPI_Abort; 0 \
                 turns it off. Keep it above the longest validation pass and checkpoint write.",
            ),
            choice(
                "on_nonfinite",
                "string",
                "A non-finite loss or gradient: `stop` the run (naming the step and the first layer; no \
                 checkpoint of those weights) or `skip` the step (no optimizer update; counted as \
                 `skipped_steps`).",
                enum_variants::<OnNonfinite>,
            ),
        ],
    },
    Section {
        header: "[eval]",
        about: "Read by `train` (validation), `eval`, `predict` and `explain`; the last three take it \
                from `--config`, else from the checkpoint.",
        fields: struct_fields::<EvalSettings>,
        defaults: Some(defaults_of::<EvalSettings>),
        keys: &[
            choice(
                "aggregate",
                "string or table",
                "Sample scores → series and patient scores: `\"max\"`, `\"mean\"` or `{ topk = k }` \
                 (mean of the k highest; k = 0 is read as 1).",
                enum_variants::<Aggregate>,
            ),
            key(
                "bootstrap",
                "integer",
                "Bootstrap resamples (over patients; over cases for segmentation) for the confidence intervals.",
            ),
            key(
                "ci_level",
                "float",
                "Confidence level of the intervals, between 0 and 1.",
            ),
            key(
                "threshold",
                "float",
                "Decision threshold on the probability for accuracy, sensitivity and specificity; for \
                 segmentation, the probability above which voxels form detection candidates and \
                 `predict`'s masks.",
            ),
            key("baseline", "boolean", "Report a trivial baseline beside the model: the brightest lung voxel of \
                 each CT series (binary and survival tasks); for survival on other images their dense fraction."),
            key("horizon", "number", "Survival: horizon (time label's units; default 1826 days, 5 years) of the \
                 AUC of an event within it; patients censored before it are left out."),
            key("overlap", "float", "Segmentation: the fraction of a patch that neighbouring sliding \
                 windows share, in [0, 1)."),
            key("gaussian", "boolean", "Segmentation: blend overlapping windows with a Gaussian weight \
                 (σ = patch / 8), else uniformly."),
            key("flip_tta", "boolean", "Segmentation: average the prediction over every combination \
                 of flips of the spatial axes (2^axes passes)."),
        ],
    },
    Section {
        header: "[stage]",
        about: "Read by `stage` and by `train --stage-async`. Flags override it.",
        fields: struct_fields::<StageConfig>,
        defaults: Some(defaults_of::<StageConfig>),
        keys: &[
            key(
                "local_dir",
                "path",
                "Node-local root directory; unset: `$SLURM_TMPDIR`, else `$TMPDIR`. Flag: `--local`.",
            ),
            key(
                "bandwidth_mbps",
                "float",
                "Copy bandwidth limit per node in MB/s (10^6 bytes), shared by the node's ranks; unset: \
                 no limit. Flag: `--bandwidth-mbps`.",
            ),
            noted(
                "reserve_bytes",
                "integer or string",
                "Bytes to leave free on the local disk: a number of bytes or a size like `\"10GiB\"`. \
                 Flag: `--reserve`.",
                "`0`",
            ),
        ],
    },
];

/// The top-level table a section belongs to (`[[catalog.labels.column]]` → `catalog`).
fn top_level(header: &str) -> &str {
    let name = header.trim_matches(|c| c == '[' || c == ']');
    name.split('.').next().unwrap_or(name)
}

/// Every key serde accepts without a description, every description of a key serde does not accept,
/// and every top-level table of [`Config`] without a section. Empty when the reference is complete.
pub fn problems() -> Vec<String> {
    let mut out = Vec::new();
    for top in struct_fields::<Config>() {
        if !SECTIONS.iter().any(|s| top_level(s.header) == *top) {
            out.push(format!("config table [{top}] has no section in the reference"));
        }
    }
    for s in SECTIONS {
        let fields = (s.fields)();
        for f in fields {
            match s.keys.iter().find(|k| k.name == *f) {
                None => out.push(format!("{} {f}: no description", s.header)),
                Some(k) if k.doc.trim().is_empty() || k.ty.trim().is_empty() => {
                    out.push(format!("{} {f}: empty description or type", s.header))
                }
                Some(_) => {}
            }
        }
        for k in s.keys {
            if !fields.contains(&k.name) {
                out.push(format!(
                    "{} {}: described, but the config struct has no such key",
                    s.header, k.name
                ));
            }
        }
    }
    out
}
