//! Checkpoints at the end of the training step: the weights and running statistics in safetensors with
//! torchvision's names and layouts (PyTorch loads them with `load_state_dict(strict=True)`), the
//! optimizer state, and what resuming needs (epoch, step, sampler position, seeds, config and manifest
//! hashes). Rank 0 writes a `.partial` directory, fsyncs it and renames it into place, so a crash leaves
//! the previous checkpoints intact; readers verify BLAKE3 hashes before trusting a checkpoint.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};

use crate::backend::{Backend, BackendError};
use crate::nn::graph::Op;
use crate::nn::{ModelConfig, NamedTable, Net};
use crate::optim::Optimizer;

/// `format` of state.json and of the safetensors metadata.
pub const FORMAT_NAME: &str = "medtrain-checkpoint";
/// Bumped when the layout of a checkpoint directory changes.
pub const FORMAT_VERSION: u32 = 1;
pub const MODEL_FILE: &str = "model.safetensors";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const STATE_FILE: &str = "state.json";
/// Checkpoint directories are `step-<global step, 10 digits>`, so names sort like steps.
const DIR_PREFIX: &str = "step-";
const STEP_DIGITS: usize = 10;
const PARTIAL_SUFFIX: &str = ".partial";
/// Checkpoints past the step a run resumed from are moved aside under this extension.
const ABANDONED_EXTENSION: &str = "abandoned";
/// PyTorch's per-batch-norm counter; we write it so strict loading succeeds and ignore it on reading.
const NUM_BATCHES_TRACKED: &str = "num_batches_tracked";
/// Metadata key holding the model config's JSON (`ModelConfig`) in model.safetensors.
const MODEL_CONFIG_KEY: &str = "model_config";
/// Metadata key holding the `OptimizerConfig` JSON in optimizer.safetensors.
const OPTIMIZER_CONFIG_KEY: &str = "optimizer_config";

/// Everything besides tensors that a resumed run needs to continue the same trajectory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    pub epoch: u64,
    /// Sampler position: batches of `epoch` already consumed.
    pub step_in_epoch: u64,
    pub global_step: u64,
    pub optimizer_step: u32,
    pub dropout_seed: u64,
    /// The run's base seed (init, sampling and augmentation streams derive from it).
    pub seed: u64,
    pub world_size: usize,
    pub config_hash: String,
    pub manifest_hash: String,
    pub model: ModelConfig,
    /// The training loop's own bookkeeping (metrics history, best score, ...).
    pub extra: serde_json::Value,
    /// The current epoch's training loss so far: Σ loss·samples and Σ samples, so a resumed epoch
    /// reports the loss of the whole epoch.
    #[serde(default)]
    pub epoch_loss: [f64; 2],
    /// Steps of the current epoch skipped for a non-finite loss or gradient so far.
    #[serde(default)]
    pub epoch_skipped: u64,
    /// Set in the checkpoint that ends an epoch, which is written before that epoch's evaluation and
    /// `metrics.jsonl` line: a run resumed from it does them first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_eval: Option<PendingEval>,
}

/// The end-of-epoch work a checkpoint was written before.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PendingEval {
    /// The epoch just completed (1-based, as in `metrics.jsonl`).
    pub epoch: u64,
    /// The learning rate of the epoch's last step.
    pub lr: f32,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(
        "{path}: cannot {action}: {source}{}",
        crate::remedy::io_remedy(
            source,
            "resume with --resume auto (the newest complete checkpoint is \
         kept; [train] keep_checkpoints bounds the space)"
        )
    )]
    Io {
        path: PathBuf,
        action: &'static str,
        source: std::io::Error,
    },
    #[error("{path}: corrupt or incomplete checkpoint: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("{path}: checkpoint does not fit this model: {reason}")]
    Mismatch { path: PathBuf, reason: String },
    #[error("{path}: cannot load weights: {reason}")]
    Weights { path: PathBuf, reason: String },
    #[error("{path}: device transfer failed: {source}")]
    Backend { path: PathBuf, source: BackendError },
}

type Result<T> = std::result::Result<T, CheckpointError>;

/// A verified checkpoint directory.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckpointInfo {
    pub dir: PathBuf,
    pub state: TrainState,
}

/// How `load_weights` treats tensors whose shapes differ from the model's.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Name prefixes (e.g. "fc.") whose tensors may be missing, extra or of another shape; such
    /// tensors keep the model's current values.
    pub skip_mismatched: Vec<String>,
}

/// What `load_weights` did with each name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoadReport {
    /// Model tensors set from the file (including averaged stems).
    pub loaded: Vec<String>,
    /// Stem weights averaged over the file's input channels.
    pub averaged: Vec<String>,
    /// Names under a `skip_mismatched` prefix that were missing, extra or of another shape.
    pub skipped: Vec<String>,
    /// File tensors without a counterpart by design (`num_batches_tracked`).
    pub ignored: Vec<String>,
}

/// state.json: the training state and the hashes of the tensor files it belongs with.
#[derive(Serialize, Deserialize)]
struct StateFile {
    format: String,
    version: u32,
    files: BTreeMap<String, FileRecord>,
    state: TrainState,
}

#[derive(Serialize, Deserialize)]
struct FileRecord {
    bytes: u64,
    blake3: String,
}

/// A host copy of one tensor, in the little-endian bytes safetensors stores.
struct HostTensor {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl HostTensor {
    fn f32(shape: &[usize], values: &[f32]) -> Self {
        Self {
            dtype: Dtype::F32,
            shape: shape.to_vec(),
            bytes: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }
    fn i64_scalar(value: i64) -> Self {
        Self {
            dtype: Dtype::I64,
            shape: Vec::new(),
            bytes: value.to_le_bytes().to_vec(),
        }
    }
}

fn io_err(path: &Path, action: &'static str) -> impl FnOnce(std::io::Error) -> CheckpointError {
    let path = path.to_path_buf();
    move |source| CheckpointError::Io { path, action, source }
}

fn backend_err(path: &Path) -> impl FnOnce(BackendError) -> CheckpointError {
    let path = path.to_path_buf();
    move |source| CheckpointError::Backend { path, source }
}

fn corrupt(path: &Path, reason: impl Into<String>) -> CheckpointError {
    CheckpointError::Corrupt {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn mismatch(path: &Path, reason: impl Into<String>) -> CheckpointError {
    CheckpointError::Mismatch {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn weights_err(path: &Path, reason: impl Into<String>) -> CheckpointError {
    CheckpointError::Weights {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// BLAKE3 (hex) of the canonical JSON of `value`: object keys sorted, no whitespace, so the hash
/// depends on the content only.
pub fn hash_json(value: &impl Serialize) -> String {
    let text = match serde_json::to_value(value) {
        Ok(v) => {
            let mut out = String::new();
            write_canonical(&v, &mut out);
            out
        }
        // Only maps with non-string keys fail here; hash the reason so the result stays a function of
        // the value's type rather than a panic.
        Err(e) => format!("unserialisable: {e}"),
    };
    blake3::hash(text.as_bytes()).to_hex().to_string()
}

fn write_canonical(v: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, x)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(x, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, x) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// The directory name of the checkpoint of `global_step`.
pub fn checkpoint_name(global_step: u64) -> String {
    format!("{DIR_PREFIX}{global_step:0STEP_DIGITS$}")
}

/// The step of a complete checkpoint directory name (`step-0000000100`); None for anything else,
/// including `.partial` directories.
fn parse_step(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(DIR_PREFIX)?;
    if digits.len() < STEP_DIGITS || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Complete checkpoint directories under `root`, oldest step first; empty when `root` does not exist.
fn list_checkpoints(root: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let entries = match fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(root, "list the checkpoint directory")(e)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err(root, "list the checkpoint directory"))?;
        let name = entry.file_name();
        if let Some(step) = name.to_str().and_then(parse_step) {
            if entry.path().is_dir() {
                found.push((step, entry.path()));
            }
        }
    }
    found.sort();
    Ok(found)
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = fs::File::create(path).map_err(io_err(path, "create"))?;
    file.write_all(bytes).map_err(io_err(path, "write"))?;
    file.sync_all().map_err(io_err(path, "fsync"))
}

fn download<B: Backend>(b: &B, buf: &B::Buf, len: usize, path: &Path) -> Result<Vec<f32>> {
    if b.len(buf) != len {
        return Err(corrupt(
            path,
            format!("a device buffer holds {} elements, its table {len}", b.len(buf)),
        ));
    }
    let mut host = vec![0.0f32; len];
    b.download_into(b.view(buf, 0..len), &mut host)
        .map_err(backend_err(path))?;
    Ok(host)
}

fn upload<B: Backend>(b: &B, host: &[f32], buf: &mut B::Buf, path: &Path) -> Result<()> {
    let len = host.len();
    if b.len(buf) != len {
        return Err(mismatch(
            path,
            format!(
                "a device buffer holds {} elements, the checkpoint {len}",
                b.len(buf)
            ),
        ));
    }
    b.upload_into(host, b.view_mut(buf, 0..len))
        .map_err(backend_err(path))
}

fn format_metadata(extra: [(&str, String); 1]) -> BTreeMap<String, String> {
    let mut meta = BTreeMap::from([
        ("format".to_string(), FORMAT_NAME.to_string()),
        ("format_version".to_string(), FORMAT_VERSION.to_string()),
    ]);
    meta.extend(extra.map(|(k, v)| (k.to_string(), v)));
    meta
}

fn dtype_name(dtype: Dtype) -> &'static str {
    match dtype {
        Dtype::F32 => "F32",
        Dtype::I64 => "I64",
        // HostTensor holds only the two above.
        _ => "F32",
    }
}

/// A safetensors file whose bytes are a function of its content alone: an 8-byte little-endian header
/// length, the JSON header (`__metadata__` first with its keys sorted, then the tensors in data order),
/// padded with spaces to a multiple of 8 bytes, then the data. Tensors are laid out as the
/// `safetensors` crate lays them out (descending dtype, then name); the crate itself writes the
/// metadata from a `HashMap`, whose order changes from run to run.
fn encode_safetensors(
    tensors: &[(String, HostTensor)],
    meta: &BTreeMap<String, String>,
    path: &Path,
) -> Result<Vec<u8>> {
    let mut order: Vec<&(String, HostTensor)> = tensors.iter().collect();
    order.sort_by(|(ln, l), (rn, r)| r.dtype.cmp(&l.dtype).then(ln.cmp(rn)));
    for pair in order.windows(2) {
        if pair[0].0 == pair[1].0 {
            return Err(corrupt(path, format!("tensor `{}` is named twice", pair[0].0)));
        }
    }
    let quote = |s: &str| serde_json::Value::String(s.to_string()).to_string();
    let mut header = String::from("{\"__metadata__\":{");
    for (i, (k, v)) in meta.iter().enumerate() {
        if i > 0 {
            header.push(',');
        }
        header.push_str(&quote(k));
        header.push(':');
        header.push_str(&quote(v));
    }
    header.push('}');
    let mut offset = 0usize;
    for (name, t) in &order {
        let want = t.shape.iter().product::<usize>() * t.dtype.size();
        if want != t.bytes.len() {
            return Err(corrupt(
                path,
                format!(
                    "tensor `{name}` holds {} bytes, its shape {:?} needs {want}",
                    t.bytes.len(),
                    t.shape
                ),
            ));
        }
        let shape: Vec<String> = t.shape.iter().map(|d| d.to_string()).collect();
        header.push_str(&format!(
            ",{}:{{\"dtype\":\"{}\",\"shape\":[{}],\"data_offsets\":[{},{}]}}",
            quote(name),
            dtype_name(t.dtype),
            shape.join(","),
            offset,
            offset + t.bytes.len()
        ));
        offset += t.bytes.len();
    }
    header.push('}');
    let mut header = header.into_bytes();
    header.resize(header.len().div_ceil(8) * 8, b' ');
    let mut out = Vec::with_capacity(8 + header.len() + offset);
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(&header);
    for (_, t) in &order {
        out.extend_from_slice(&t.bytes);
    }
    Ok(out)
}

fn to_json(value: &impl Serialize, path: &Path) -> Result<String> {
    serde_json::to_string(value).map_err(|e| corrupt(path, format!("cannot encode JSON: {e}")))
}

/// model.safetensors: every parameter and running statistic under its torchvision name, plus the
/// `num_batches_tracked` scalars PyTorch's strict loading expects (set to the global step).
fn model_file<B: Backend>(b: &B, net: &Net<B>, state: &TrainState, path: &Path) -> Result<Vec<u8>> {
    let params = download(b, &net.param, net.spec.params.len(), path)?;
    let stats = download(b, &net.state, net.spec.buffers.len(), path)?;
    let mut tensors: Vec<(String, HostTensor)> = Vec::new();
    for (table, host) in [(&net.spec.params, &params), (&net.spec.buffers, &stats)] {
        for e in table.entries() {
            tensors.push((e.name.clone(), HostTensor::f32(&e.shape, &host[e.range.clone()])));
        }
    }
    let batches = i64::try_from(state.global_step).unwrap_or(i64::MAX);
    for e in net.spec.buffers.entries() {
        if let Some(bn) = e.name.strip_suffix(".running_mean") {
            tensors.push((
                format!("{bn}.{NUM_BATCHES_TRACKED}"),
                HostTensor::i64_scalar(batches),
            ));
        }
    }
    let meta = format_metadata([(MODEL_CONFIG_KEY, to_json(&net.spec.config, path)?)]);
    encode_safetensors(&tensors, &meta, path)
}

/// optimizer.safetensors: each state buffer split by parameter, named `<state>.<param name>`.
fn optimizer_file<B: Backend>(b: &B, net: &Net<B>, opt: &Optimizer<B>, path: &Path) -> Result<Vec<u8>> {
    let mut tensors: Vec<(String, HostTensor)> = Vec::new();
    for (state_name, buf) in opt.state_buffers() {
        let host = download(b, buf, net.spec.params.len(), path)?;
        for e in net.spec.params.entries() {
            tensors.push((
                format!("{state_name}.{}", e.name),
                HostTensor::f32(&e.shape, &host[e.range.clone()]),
            ));
        }
    }
    let meta = format_metadata([(OPTIMIZER_CONFIG_KEY, to_json(&opt.config, path)?)]);
    encode_safetensors(&tensors, &meta, path)
}

/// Writes `<root>/step-<global_step:010>/` {model.safetensors, optimizer.safetensors, state.json} via a
/// `.partial` directory: files fsynced, state.json records the BLAKE3 of both safetensors files,
/// directory renamed into place, parent fsynced; then keeps only the newest `keep` complete checkpoints
/// (0 keeps all) and moves later steps of an abandoned trajectory aside (see `prune`). The recorded
/// dropout seed, optimizer step and model config are taken from `net` and `opt`, so they cannot disagree
/// with the tensors. Saving a step that exists replaces it.
pub fn save<B: Backend>(
    root: &Path,
    b: &B,
    net: &Net<B>,
    opt: &Optimizer<B>,
    state: &TrainState,
    keep: usize,
) -> Result<PathBuf> {
    save_with(root, b, net, opt, state, keep, || {})
}

/// `save`, with `between_files` run after the weights are written and before the state file: the
/// point where the fault tests' `kill-in-checkpoint` ends the process.
pub fn save_with<B: Backend>(
    root: &Path,
    b: &B,
    net: &Net<B>,
    opt: &Optimizer<B>,
    state: &TrainState,
    keep: usize,
    between_files: impl FnOnce(),
) -> Result<PathBuf> {
    let mut state = state.clone();
    state.dropout_seed = net.dropout_seed;
    state.optimizer_step = opt.step;
    state.model = net.spec.config.clone();

    fs::create_dir_all(root).map_err(io_err(root, "create the checkpoint directory"))?;
    let name = checkpoint_name(state.global_step);
    let final_dir = root.join(&name);
    let partial = root.join(format!("{name}{PARTIAL_SUFFIX}"));
    if partial.exists() {
        fs::remove_dir_all(&partial).map_err(io_err(&partial, "remove a leftover partial checkpoint"))?;
    }
    fs::create_dir(&partial).map_err(io_err(&partial, "create"))?;

    let model = model_file(b, net, &state, &partial.join(MODEL_FILE))?;
    let optimizer = optimizer_file(b, net, opt, &partial.join(OPTIMIZER_FILE))?;
    let mut files = BTreeMap::new();
    for (file, bytes) in [(MODEL_FILE, &model), (OPTIMIZER_FILE, &optimizer)] {
        write_synced(&partial.join(file), bytes)?;
        let record = FileRecord {
            bytes: bytes.len() as u64,
            blake3: blake3::hash(bytes).to_hex().to_string(),
        };
        files.insert(file.to_string(), record);
    }
    between_files();
    let state_path = partial.join(STATE_FILE);
    let record = StateFile {
        format: FORMAT_NAME.to_string(),
        version: FORMAT_VERSION,
        files,
        state,
    };
    let text = serde_json::to_vec_pretty(&record)
        .map_err(|e| corrupt(&state_path, format!("cannot encode JSON: {e}")))?;
    write_synced(&state_path, &text)?;

    if final_dir.exists() {
        fs::remove_dir_all(&final_dir)
            .map_err(io_err(&final_dir, "replace the checkpoint of the same step"))?;
    }
    crate::fsx::commit_dir(&partial, &final_dir).map_err(io_err(&partial, "rename into place"))?;
    prune(root, &final_dir, record.state.global_step, keep)?;
    Ok(final_dir)
}

/// Keeps the newest `keep` checkpoints (always `current`) and removes leftover `.partial` directories,
/// which only a crashed save leaves behind (rank 0 is the only writer). Checkpoints of a later step than
/// `current` belong to a trajectory the run left by resuming from an earlier one; they are renamed to
/// `<name>.abandoned`, so that `latest_valid` cannot jump back to them, but not deleted. A failed removal
/// is a warning: the new checkpoint is already safe.
fn prune(root: &Path, current: &Path, current_step: u64, keep: usize) -> Result<()> {
    let mut doomed: Vec<PathBuf> = Vec::new();
    let (mut older, later): (Vec<_>, Vec<_>) = list_checkpoints(root)?
        .into_iter()
        .filter(|(_, dir)| dir != current)
        .partition(|(step, _)| *step < current_step);
    for (_, dir) in later {
        let aside = dir.with_extension(ABANDONED_EXTENSION);
        tracing::warn!(
            "{} is newer than the checkpoint just written ({}); moving it to {}",
            dir.display(),
            current.display(),
            aside.display()
        );
        if let Err(e) = fs::rename(&dir, &aside) {
            tracing::warn!("cannot move {} aside: {e}", dir.display());
        }
    }
    if keep > 0 {
        let excess = older.len().saturating_sub(keep - 1);
        doomed.extend(older.drain(..excess).map(|(_, dir)| dir));
    }
    let entries = fs::read_dir(root).map_err(io_err(root, "list the checkpoint directory"))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let is_partial = name
            .to_str()
            .and_then(|n| n.strip_suffix(PARTIAL_SUFFIX))
            .is_some_and(|n| parse_step(n).is_some());
        if is_partial && entry.path().is_dir() {
            doomed.push(entry.path());
        }
    }
    for dir in doomed {
        if let Err(e) = fs::remove_dir_all(&dir) {
            tracing::warn!("cannot remove old checkpoint {}: {e}", dir.display());
        }
    }
    Ok(())
}

/// A checkpoint whose files were read and checked against state.json (the optimizer file only when
/// asked for).
struct Verified {
    state: TrainState,
    model: Vec<u8>,
    optimizer: Option<Vec<u8>>,
}

fn read_verified(dir: &Path, file: &str, files: &BTreeMap<String, FileRecord>) -> Result<Vec<u8>> {
    let state_path = dir.join(STATE_FILE);
    let path = dir.join(file);
    let record = files
        .get(file)
        .ok_or_else(|| corrupt(&state_path, format!("records no hash for {file}")))?;
    let bytes = fs::read(&path).map_err(io_err(&path, "read"))?;
    if bytes.len() as u64 != record.bytes {
        return Err(corrupt(
            &path,
            format!(
                "holds {} bytes but {STATE_FILE} records {} (truncated or replaced)",
                bytes.len(),
                record.bytes
            ),
        ));
    }
    let hash = blake3::hash(&bytes).to_hex().to_string();
    if hash != record.blake3 {
        return Err(corrupt(
            &path,
            format!(
                "BLAKE3 {hash} differs from {} recorded in {STATE_FILE} (damaged or altered)",
                record.blake3
            ),
        ));
    }
    SafeTensors::deserialize(&bytes).map_err(|e| corrupt(&path, format!("not a safetensors file: {e}")))?;
    Ok(bytes)
}

fn metadata_value(bytes: &[u8], key: &str, path: &Path) -> Result<String> {
    let (_, meta) = SafeTensors::read_metadata(bytes)
        .map_err(|e| corrupt(path, format!("not a safetensors file: {e}")))?;
    meta.metadata()
        .as_ref()
        .and_then(|m| m.get(key).cloned())
        .ok_or_else(|| corrupt(path, format!("its metadata lacks `{key}`")))
}

/// Verifies state.json and the model file, and the optimizer file too when `optimizer` is set.
fn verify(dir: &Path, optimizer: bool) -> Result<Verified> {
    let state_path = dir.join(STATE_FILE);
    let text = fs::read(&state_path).map_err(io_err(&state_path, "read"))?;
    let record: StateFile = serde_json::from_slice(&text)
        .map_err(|e| corrupt(&state_path, format!("not a checkpoint state file: {e}")))?;
    if record.format != FORMAT_NAME || record.version != FORMAT_VERSION {
        return Err(corrupt(
            &state_path,
            format!(
                "format {} version {}, this build reads {FORMAT_NAME} version {FORMAT_VERSION}: resume \
                 it with the medtrain release that wrote it, or start again in a new --out directory",
                record.format, record.version
            ),
        ));
    }
    let model = read_verified(dir, MODEL_FILE, &record.files)?;
    let optimizer = match optimizer {
        true => Some(read_verified(dir, OPTIMIZER_FILE, &record.files)?),
        false => None,
    };
    let model_path = dir.join(MODEL_FILE);
    let config_text = metadata_value(&model, MODEL_CONFIG_KEY, &model_path)?;
    let config: ModelConfig = serde_json::from_str(&config_text)
        .map_err(|e| corrupt(&model_path, format!("model config in the metadata: {e}")))?;
    if config != record.state.model {
        return Err(corrupt(
            &model_path,
            format!("its model config differs from the one in {STATE_FILE}"),
        ));
    }
    Ok(Verified {
        state: record.state,
        model,
        optimizer,
    })
}

/// Verifies one checkpoint directory: state.json parses, both tensor files have the recorded size and
/// BLAKE3 and parse as safetensors, and the model config agrees.
pub fn inspect(dir: &Path) -> Result<CheckpointInfo> {
    let verified = verify(dir, true)?;
    Ok(CheckpointInfo {
        dir: dir.to_path_buf(),
        state: verified.state,
    })
}

/// What inference needs of a checkpoint: state.json and the model file verified (size, BLAKE3, parse,
/// model config); the optimizer file is not read.
pub fn inspect_weights(dir: &Path) -> Result<CheckpointInfo> {
    let verified = verify(dir, false)?;
    Ok(CheckpointInfo {
        dir: dir.to_path_buf(),
        state: verified.state,
    })
}

/// Newest checkpoint under root that verifies (hashes match, files parse); broken ones are skipped with a
/// warning naming them and why. Ok(None) when there is none.
pub fn latest_valid(root: &Path) -> Result<Option<CheckpointInfo>> {
    latest_passing(root, inspect)
}

/// Like `latest_valid`, but checks only what `inspect_weights` checks (for eval, predict, explain).
pub fn latest_valid_weights(root: &Path) -> Result<Option<CheckpointInfo>> {
    latest_passing(root, inspect_weights)
}

fn latest_passing(root: &Path, check: fn(&Path) -> Result<CheckpointInfo>) -> Result<Option<CheckpointInfo>> {
    for (_, dir) in list_checkpoints(root)?.into_iter().rev() {
        match check(&dir) {
            Ok(info) => return Ok(Some(info)),
            Err(e) => tracing::warn!("skipping checkpoint {}: {e}", dir.display()),
        }
    }
    Ok(None)
}

/// The fields in which two model configs differ, for error messages.
fn config_difference(found: &ModelConfig, want: &ModelConfig) -> String {
    let (a, b) = (serde_json::to_value(found), serde_json::to_value(want));
    let fields = match (a, b) {
        (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) => a
            .iter()
            .filter(|(k, v)| b.get(*k) != Some(*v))
            .map(|(k, v)| {
                format!(
                    "{k} = {v} (this model: {})",
                    b.get(k).cloned().unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join(", "),
        _ => String::new(),
    };
    format!("it was written for another model config: {fields}")
}

fn f32_values(view: &TensorView<'_>) -> Vec<f32> {
    view.data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Reads every entry of `table` (named `<prefix><name>`) into one flat host buffer laid out like it.
fn read_table(st: &SafeTensors<'_>, table: &NamedTable, prefix: &str, path: &Path) -> Result<Vec<f32>> {
    let mut host = vec![0.0f32; table.len()];
    for e in table.entries() {
        let name = format!("{prefix}{}", e.name);
        let view = st
            .tensor(&name)
            .map_err(|_| mismatch(path, format!("has no tensor `{name}`, which this model needs")))?;
        if view.dtype() != Dtype::F32 || view.shape() != e.shape.as_slice() {
            return Err(mismatch(
                path,
                format!(
                    "`{name}` is {:?} {:?}, this model needs F32 {:?}",
                    view.dtype(),
                    view.shape(),
                    e.shape
                ),
            ));
        }
        host[e.range.clone()].copy_from_slice(&f32_values(&view));
    }
    Ok(host)
}

/// Refuses tensors the model does not have (`num_batches_tracked` excepted).
fn refuse_extra(st: &SafeTensors<'_>, known: &[&str], path: &Path) -> Result<()> {
    for name in st.names() {
        if !name.ends_with(&format!(".{NUM_BATCHES_TRACKED}")) && !known.contains(&name.as_str()) {
            return Err(mismatch(path, format!("holds `{name}`, which this model lacks")));
        }
    }
    Ok(())
}

fn deserialize<'a>(bytes: &'a [u8], path: &Path) -> Result<SafeTensors<'a>> {
    SafeTensors::deserialize(bytes).map_err(|e| corrupt(path, format!("not a safetensors file: {e}")))
}

/// The model file's parameters and running statistics, checked against `net`'s config, names and
/// shapes.
fn read_model<B: Backend>(dir: &Path, verified: &Verified, net: &Net<B>) -> Result<(Vec<f32>, Vec<f32>)> {
    let model_path = dir.join(MODEL_FILE);
    if verified.state.model != net.spec.config {
        return Err(mismatch(
            dir,
            config_difference(&verified.state.model, &net.spec.config),
        ));
    }
    let st = deserialize(&verified.model, &model_path)?;
    let params = read_table(&st, &net.spec.params, "", &model_path)?;
    let stats = read_table(&st, &net.spec.buffers, "", &model_path)?;
    let known: Vec<&str> = (net.spec.params.entries().iter())
        .chain(net.spec.buffers.entries())
        .map(|e| e.name.as_str())
        .collect();
    refuse_extra(&st, &known, &model_path)?;
    Ok((params, stats))
}

/// Loads weights, running statistics and dropout seed into an existing net, for inference: the
/// optimizer file is neither read nor needed, and no optimizer state is allocated. Refuses (with the
/// reason) a checkpoint whose model config, names or shapes differ; nothing is changed unless
/// everything fits.
pub fn restore_weights<B: Backend>(dir: &Path, b: &B, net: &mut Net<B>) -> Result<TrainState> {
    let verified = verify(dir, false)?;
    let (params, stats) = read_model(dir, &verified, net)?;
    let model_path = dir.join(MODEL_FILE);
    upload(b, &params, &mut net.param, &model_path)?;
    upload(b, &stats, &mut net.state, &model_path)?;
    net.dropout_seed = verified.state.dropout_seed;
    Ok(verified.state)
}

/// Loads weights, running stats, optimizer state and dropout seed into an existing net/optimizer; refuses
/// (with the reason) a checkpoint whose model config, names or shapes differ. Nothing is changed unless
/// everything fits.
pub fn restore<B: Backend>(
    dir: &Path,
    b: &B,
    net: &mut Net<B>,
    opt: &mut Optimizer<B>,
) -> Result<TrainState> {
    let verified = verify(dir, true)?;
    let model_path = dir.join(MODEL_FILE);
    let (params, stats) = read_model(dir, &verified, net)?;
    let optimizer = verified
        .optimizer
        .as_deref()
        .expect("verify(dir, true) reads the optimizer file");

    let opt_path = dir.join(OPTIMIZER_FILE);
    let saved_config = metadata_value(optimizer, OPTIMIZER_CONFIG_KEY, &opt_path)?;
    let current_config = to_json(&opt.config, &opt_path)?;
    let kind = |text: &str| {
        serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .map(|v| v["kind"].clone())
    };
    if kind(&saved_config) != kind(&current_config) {
        return Err(mismatch(
            &opt_path,
            format!("it holds the state of optimizer {saved_config}, this run uses {current_config}"),
        ));
    }
    if saved_config != current_config {
        tracing::warn!(
            "{}: optimizer hyperparameters changed from {saved_config} to {current_config}",
            opt_path.display()
        );
    }
    let ost = deserialize(optimizer, &opt_path)?;
    let buffers = opt
        .state_buffers()
        .iter()
        .map(|(name, _)| read_table(&ost, &net.spec.params, &format!("{name}."), &opt_path))
        .collect::<Result<Vec<_>>>()?;

    upload(b, &params, &mut net.param, &model_path)?;
    upload(b, &stats, &mut net.state, &model_path)?;
    for ((_, buf), host) in opt.state_buffers_mut().into_iter().zip(&buffers) {
        upload(b, host, buf, &opt_path)?;
    }
    opt.step = verified.state.optimizer_step;
    net.dropout_seed = verified.state.dropout_seed;
    Ok(verified.state)
}

/// Where a user lists the name prefixes that may differ.
const SKIP_HINT: &str = "LoadOptions::skip_mismatched";

/// The parameter index of the first convolution on the input image (the stem).
fn stem_weight(net_spec: &crate::nn::ModelSpec) -> Option<usize> {
    net_spec.graph.nodes.iter().find_map(|n| match &n.op {
        Op::Conv { weight, .. } if n.inputs[0] == 0 => Some(*weight),
        _ => None,
    })
}

/// A stem of `file` shape `[o, c, k...]` with c > 1 loads into a one-channel `[o, 1, k...]` model by
/// averaging over its input channels.
fn averages_into(file: &[usize], model: &[usize]) -> bool {
    file.len() == model.len()
        && file.len() >= 2
        && model[1] == 1
        && file[1] > 1
        && file[0] == model[0]
        && file[2..] == model[2..]
}

fn mean_over_input_channels(values: &[f32], file_shape: &[usize]) -> Vec<f32> {
    let (c_out, c_in) = (file_shape[0], file_shape[1]);
    let kernel: usize = file_shape[2..].iter().product();
    let mut out = vec![0.0f32; c_out * kernel];
    for o in 0..c_out {
        for k in 0..kernel {
            let sum: f32 = (0..c_in).map(|c| values[(o * c_in + c) * kernel + k]).sum();
            out[o * kernel + k] = sum / c_in as f32;
        }
    }
    out
}

/// Loads a safetensors state dict (ours or torchvision's) into `net` by name: params and running stats;
/// `num_batches_tracked` ignored; a 3-channel stem loaded into a 1-channel model is averaged over its
/// input channels; tensors of different shape (e.g. a 1000-class fc into a 1-output head) are skipped
/// only when `opts.skip_mismatched` lists their prefix (e.g. "fc."), else an error (so are missing and
/// extra tensors); returns the names loaded/skipped. Nothing is changed unless everything fits.
pub fn load_weights<B: Backend>(
    path: &Path,
    b: &B,
    net: &mut Net<B>,
    opts: &LoadOptions,
) -> Result<LoadReport> {
    let bytes = fs::read(path).map_err(io_err(path, "read"))?;
    let st = deserialize(&bytes, path)?;
    let may_skip = |name: &str| opts.skip_mismatched.iter().any(|p| name.starts_with(p.as_str()));
    let stem = stem_weight(&net.spec).map(|i| net.spec.params.entries()[i].name.clone());
    let mut report = LoadReport::default();
    let mut params = download(b, &net.param, net.spec.params.len(), path)?;
    let mut stats = download(b, &net.state, net.spec.buffers.len(), path)?;

    for (table, host) in [(&net.spec.params, &mut params), (&net.spec.buffers, &mut stats)] {
        for e in table.entries() {
            let Ok(view) = st.tensor(&e.name) else {
                if may_skip(&e.name) {
                    report.skipped.push(e.name.clone());
                    continue;
                }
                let name = &e.name;
                let reason =
                    format!("it has no tensor `{name}`; list its prefix in {SKIP_HINT} to keep ours");
                return Err(weights_err(path, reason));
            };
            if view.dtype() != Dtype::F32 {
                return Err(weights_err(
                    path,
                    format!(
                        "`{}` is {:?}; only F32 state dicts load (convert with .float())",
                        e.name,
                        view.dtype()
                    ),
                ));
            }
            let values = f32_values(&view);
            if view.shape() == e.shape.as_slice() {
                host[e.range.clone()].copy_from_slice(&values);
                report.loaded.push(e.name.clone());
            } else if stem.as_deref() == Some(e.name.as_str()) && averages_into(view.shape(), &e.shape) {
                host[e.range.clone()].copy_from_slice(&mean_over_input_channels(&values, view.shape()));
                report.loaded.push(e.name.clone());
                report.averaged.push(e.name.clone());
            } else if may_skip(&e.name) {
                report.skipped.push(e.name.clone());
            } else {
                return Err(weights_err(
                    path,
                    format!(
                        "`{}` has shape {:?}, this model needs {:?}; list its prefix in {SKIP_HINT}",
                        e.name,
                        view.shape(),
                        e.shape
                    ),
                ));
            }
        }
    }
    let mut extra: Vec<&String> = st.names();
    extra.sort();
    for name in extra {
        let known = net.spec.params.find(name).is_some() || net.spec.buffers.find(name).is_some();
        if known {
            continue;
        }
        if name.ends_with(&format!(".{NUM_BATCHES_TRACKED}")) {
            report.ignored.push(name.clone());
        } else if may_skip(name) {
            report.skipped.push(name.clone());
        } else {
            return Err(weights_err(
                path,
                format!("it holds `{name}`, which this model lacks (another depth or architecture?)"),
            ));
        }
    }
    upload(b, &params, &mut net.param, path)?;
    upload(b, &stats, &mut net.state, path)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_json_is_blake3_of_sorted_compact_json() {
        let value = serde_json::json!({"b": 1, "a": [1.5, "x", {"d": null, "c": true}]});
        let want = blake3::hash(br#"{"a":[1.5,"x",{"c":true,"d":null}],"b":1}"#)
            .to_hex()
            .to_string();
        assert_eq!(hash_json(&value), want);
    }

    #[test]
    fn step_names_round_trip_and_partial_is_not_a_checkpoint() {
        assert_eq!(checkpoint_name(42), "step-0000000042");
        assert_eq!(parse_step("step-0000000042"), Some(42));
        assert_eq!(parse_step("step-0000000042.partial"), None);
        assert_eq!(parse_step("step-42"), None);
        assert_eq!(parse_step("other"), None);
    }

    #[test]
    fn safetensors_bytes_are_fixed_by_content() {
        let tensors = vec![
            ("b.weight".to_string(), HostTensor::f32(&[2], &[1.0, -2.0])),
            ("a.num_batches_tracked".to_string(), HostTensor::i64_scalar(7)),
            ("a.weight".to_string(), HostTensor::f32(&[1, 1], &[0.5])),
        ];
        let path = Path::new("test.safetensors");
        let meta = format_metadata([(MODEL_CONFIG_KEY, "{\"x\":1}".to_string())]);
        let bytes = encode_safetensors(&tensors, &meta, path).unwrap();
        // The format written out by hand: I64 before F32, names sorted within a dtype, metadata keys
        // sorted, header padded with spaces to a multiple of 8.
        let header = concat!(
            r#"{"__metadata__":{"format":"medtrain-checkpoint","format_version":"1","model_config":"{\"x\":1}"},"#,
            r#""a.num_batches_tracked":{"dtype":"I64","shape":[],"data_offsets":[0,8]},"#,
            r#""a.weight":{"dtype":"F32","shape":[1,1],"data_offsets":[8,12]},"#,
            r#""b.weight":{"dtype":"F32","shape":[2],"data_offsets":[12,20]}}"#
        );
        let mut want = header.as_bytes().to_vec();
        want.resize(header.len().div_ceil(8) * 8, b' ');
        let mut file = (want.len() as u64).to_le_bytes().to_vec();
        file.extend_from_slice(&want);
        file.extend_from_slice(&7i64.to_le_bytes());
        for v in [0.5f32, 1.0, -2.0] {
            file.extend_from_slice(&v.to_le_bytes());
        }
        assert_eq!(String::from_utf8_lossy(&bytes), String::from_utf8_lossy(&file));
        assert_eq!(bytes, file);
        // The same content in another order, with the metadata built again, gives the same bytes.
        let mut reversed: Vec<(String, HostTensor)> = tensors
            .iter()
            .rev()
            .map(|(n, t)| {
                let t = HostTensor {
                    dtype: t.dtype,
                    shape: t.shape.clone(),
                    bytes: t.bytes.clone(),
                };
                (n.clone(), t)
            })
            .collect();
        reversed.rotate_left(1);
        let meta2 = format_metadata([(MODEL_CONFIG_KEY, "{\"x\":1}".to_string())]);
        assert_eq!(encode_safetensors(&reversed, &meta2, path).unwrap(), bytes);
        // And the safetensors crate reads it back.
        let st = SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(f32_values(&st.tensor("b.weight").unwrap()), vec![1.0, -2.0]);
        assert_eq!(
            metadata_value(&bytes, MODEL_CONFIG_KEY, path).unwrap(),
            "{\"x\":1}"
        );
        assert_eq!(metadata_value(&bytes, "format_version", path).unwrap(), "1");
    }

    #[test]
    fn stem_mean_over_input_channels() {
        // [o=2, c=3, k=2]
        let w: Vec<f32> = (0..12).map(|i| i as f32).collect();
        assert!(averages_into(&[2, 3, 2], &[2, 1, 2]));
        assert!(!averages_into(&[2, 3, 2], &[2, 2, 2]));
        assert_eq!(mean_over_input_channels(&w, &[2, 3, 2]), vec![2.0, 3.0, 8.0, 9.0]);
    }
}
