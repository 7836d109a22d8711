//! TensorBoard event files (`<run>/tb/events.out.tfevents.<time>.<host>.<pid>.medtrain`), written by
//! rank 0: scalars, text, PNG images and the SessionLog START that tells TensorBoard to drop what a
//! killed run wrote past the step it resumed from. The messages are TensorBoard's own protobufs
//! (`tensorboard/compat/proto/event.proto`, `summary.proto`), declared here with `prost` for the fields
//! used; each record is framed as a TFRecord: length (u64 LE), masked CRC-32C of the length, data,
//! masked CRC-32C of the data.

use super::evaluate::EvalReport;
use super::run::TrainOptions;
use prost::Message;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// `tensorflow.Event`.
#[derive(Clone, PartialEq, Message)]
pub struct Event {
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    #[prost(int64, tag = "2")]
    pub step: i64,
    #[prost(oneof = "EventWhat", tags = "3, 5, 7")]
    pub what: Option<EventWhat>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum EventWhat {
    #[prost(string, tag = "3")]
    FileVersion(String),
    #[prost(message, tag = "5")]
    Summary(Summary),
    #[prost(message, tag = "7")]
    SessionLog(SessionLog),
}

/// `tensorflow.SessionLog`; status START = 1.
#[derive(Clone, PartialEq, Message)]
pub struct SessionLog {
    #[prost(int32, tag = "1")]
    pub status: i32,
    #[prost(string, tag = "2")]
    pub checkpoint_path: String,
    #[prost(string, tag = "3")]
    pub msg: String,
}

pub const SESSION_START: i32 = 1;

/// `tensorflow.Summary`.
#[derive(Clone, PartialEq, Message)]
pub struct Summary {
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<SummaryValue>,
}

/// `tensorflow.Summary.Value`.
#[derive(Clone, PartialEq, Message)]
pub struct SummaryValue {
    #[prost(string, tag = "1")]
    pub tag: String,
    #[prost(message, optional, tag = "9")]
    pub metadata: Option<SummaryMetadata>,
    #[prost(oneof = "ValueKind", tags = "2, 4, 8")]
    pub value: Option<ValueKind>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum ValueKind {
    #[prost(float, tag = "2")]
    SimpleValue(f32),
    #[prost(message, tag = "4")]
    Image(Image),
    #[prost(message, tag = "8")]
    Tensor(TensorProto),
}

/// `tensorflow.Summary.Image`: an encoded PNG.
#[derive(Clone, PartialEq, Message)]
pub struct Image {
    #[prost(int32, tag = "1")]
    pub height: i32,
    #[prost(int32, tag = "2")]
    pub width: i32,
    #[prost(int32, tag = "3")]
    pub colorspace: i32,
    #[prost(bytes = "vec", tag = "4")]
    pub encoded_image_string: Vec<u8>,
}

/// `tensorflow.SummaryMetadata` (the plugin that renders a tensor value).
#[derive(Clone, PartialEq, Message)]
pub struct SummaryMetadata {
    #[prost(message, optional, tag = "1")]
    pub plugin_data: Option<PluginData>,
}

#[derive(Clone, PartialEq, Message)]
pub struct PluginData {
    #[prost(string, tag = "1")]
    pub plugin_name: String,
}

/// `tensorflow.TensorProto`, for text summaries: a DT_STRING (7) scalar.
#[derive(Clone, PartialEq, Message)]
pub struct TensorProto {
    #[prost(int32, tag = "1")]
    pub dtype: i32,
    #[prost(message, optional, tag = "2")]
    pub tensor_shape: Option<TensorShape>,
    #[prost(bytes = "vec", repeated, tag = "8")]
    pub string_val: Vec<Vec<u8>>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TensorShape {}

const DT_STRING: i32 = 7;

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), bitwise over a 256-entry table.
pub fn crc32c(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    (c >> 1) ^ 0x82F6_3B78
                } else {
                    c >> 1
                };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    let mut crc = !0u32;
    for &b in data {
        crc = TABLE[((crc ^ b as u32) & 0xFF) as usize] ^ (crc >> 8);
    }
    !crc
}

/// TFRecord's masked CRC: rotate right by 15 and add a constant, so a CRC of data holding CRCs stays
/// strong.
pub fn masked_crc(data: &[u8]) -> u32 {
    let c = crc32c(data);
    (c.rotate_right(15)).wrapping_add(0xA282_EAD8)
}

/// One TFRecord holding `data`.
pub fn frame(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
    out
}

/// An open event file. Each call appends complete records and flushes them, so a live TensorBoard
/// sees the run as it goes and a kill loses at most the record being written (TensorBoard skips a
/// truncated last record).
pub struct EventWriter {
    file: File,
    path: PathBuf,
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl EventWriter {
    /// A new event file in `dir` (created if missing), starting with the file-version record.
    pub fn create(dir: &Path) -> std::io::Result<EventWriter> {
        std::fs::create_dir_all(dir)?;
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".into());
        // TensorBoard reads a directory's files in name order, so the name starts with the time; a
        // second file of this process in the same second takes the next second.
        let mut seconds = now() as u64;
        let (file, path) = loop {
            let path = dir.join(format!(
                "events.out.tfevents.{seconds:010}.{host}.{}.medtrain",
                std::process::id()
            ));
            match std::fs::OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(&path)
            {
                Ok(file) => break (file, path),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => seconds += 1,
                Err(e) => return Err(e),
            }
        };
        let mut w = EventWriter { file, path };
        w.write(Event {
            wall_time: now(),
            step: 0,
            what: Some(EventWhat::FileVersion("brain.Event:2".into())),
        })?;
        Ok(w)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write(&mut self, event: Event) -> std::io::Result<()> {
        self.file.write_all(&frame(&event.encode_to_vec()))?;
        self.file.flush()
    }

    fn summary(&mut self, step: u64, value: Vec<SummaryValue>) -> std::io::Result<()> {
        self.write(Event {
            wall_time: now(),
            step: step as i64,
            what: Some(EventWhat::Summary(Summary { value })),
        })
    }

    /// Scalars of one step (tag, value).
    pub fn scalars(&mut self, step: u64, values: &[(&str, f64)]) -> std::io::Result<()> {
        let value = values
            .iter()
            .map(|(tag, v)| SummaryValue {
                tag: tag.to_string(),
                metadata: None,
                value: Some(ValueKind::SimpleValue(*v as f32)),
            })
            .collect();
        self.summary(step, value)
    }

    /// A PNG image (already encoded) of `width` × `height` RGB pixels.
    pub fn image(
        &mut self,
        step: u64,
        tag: &str,
        png: Vec<u8>,
        width: u32,
        height: u32,
    ) -> std::io::Result<()> {
        let image = Image {
            height: height as i32,
            width: width as i32,
            colorspace: 3,
            encoded_image_string: png,
        };
        self.summary(
            step,
            vec![SummaryValue {
                tag: tag.into(),
                metadata: None,
                value: Some(ValueKind::Image(image)),
            }],
        )
    }

    /// Text (Markdown) for TensorBoard's text plugin, e.g. the run's settings.
    pub fn text(&mut self, step: u64, tag: &str, text: &str) -> std::io::Result<()> {
        let tensor = TensorProto {
            dtype: DT_STRING,
            tensor_shape: Some(TensorShape {}),
            string_val: vec![text.as_bytes().to_vec()],
        };
        self.summary(
            step,
            vec![SummaryValue {
                tag: tag.into(),
                metadata: Some(SummaryMetadata {
                    plugin_data: Some(PluginData {
                        plugin_name: "text".into(),
                    }),
                }),
                value: Some(ValueKind::Tensor(tensor)),
            }],
        )
    }

    /// The SessionLog START of a resumed run, at `first_step`, the first step it will log (one past
    /// its checkpoint's): TensorBoard then drops every event of that step or later written before it,
    /// i.e. what a killed run logged past the checkpoint it resumed from.
    pub fn session_start(&mut self, first_step: u64) -> std::io::Result<()> {
        let step = first_step;
        self.write(Event {
            wall_time: now(),
            step: step as i64,
            what: Some(EventWhat::SessionLog(SessionLog {
                status: SESSION_START,
                checkpoint_path: String::new(),
                msg: String::new(),
            })),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_published_check_values() {
        // RFC 3720 (iSCSI), appendix B.4: 32 bytes of zeros, of 0xFF, and ascending 0..31.
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xFFu8; 32]), 0x62A8_AB43);
        let ascending: Vec<u8> = (0..32).collect();
        assert_eq!(crc32c(&ascending), 0x46DD_794E);
        // The CRC catalogue's check value of CRC-32/ISCSI.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn records_are_framed_as_tfrecords() {
        let r = frame(b"abc");
        assert_eq!(&r[..8], &3u64.to_le_bytes());
        assert_eq!(&r[8..12], &masked_crc(&3u64.to_le_bytes()).to_le_bytes());
        assert_eq!(&r[12..15], b"abc");
        assert_eq!(&r[15..], &masked_crc(b"abc").to_le_bytes());
    }
}

/// Every number in a JSON value, with its path joined by `/` (`eval/auc/lo`), for logging a report
/// whose shape depends on the task as scalars.
pub fn numbers(prefix: &str, value: &serde_json::Value, out: &mut Vec<(String, f64)>) {
    match value {
        serde_json::Value::Number(n) => {
            if let Some(x) = n.as_f64() {
                out.push((prefix.to_string(), x));
            }
        }
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                numbers(&format!("{prefix}/{k}"), v, out);
            }
        }
        serde_json::Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                numbers(&format!("{prefix}/{i}"), v, out);
            }
        }
        _ => {}
    }
}

/// A training run's TensorBoard log (`<run>/tb/`), kept by rank 0 only. Writing is best effort: a
/// failure is logged once and the log is closed, training goes on.
pub struct RunBoard {
    writer: Option<EventWriter>,
    /// `steps.jsonl`: the same per-step figures as JSON lines, for plots and scripts. Unbuffered: each
    /// line is one write, so a killed run loses at most the line being written.
    steps: Option<std::fs::File>,
    /// Cumulative (data wait, allreduce wait, wall) seconds at the last logged step.
    last: (f64, f64, std::time::Instant),
    /// Images from an epoch's checkpoint, every `explain_every` epochs.
    images: Option<EpochImages>,
    explain_every: u64,
    val_split: String,
}

/// One image for TensorBoard: its tag and PNG bytes.
pub struct TbImage {
    pub tag: String,
    pub png: Vec<u8>,
    pub width: u32,
    pub height: u32,
}

/// Makes images of the model in a checkpoint directory, on a split of its manifest, at an epoch
/// (1-based). `train` calls it on rank 0 and never looks inside: `explain` provides the Grad-CAM
/// overlays (wired by the command line), so `train` does not import `explain`. The other ranks wait
/// at their next collective meanwhile, so it must take less than `[train] watchdog_s`.
pub type EpochImages = std::sync::Arc<dyn Fn(&Path, &str, u64) -> Result<Vec<TbImage>, String> + Send + Sync>;

/// One training step's figures.
pub struct StepFigures {
    /// 1-based epoch the step belongs to.
    pub epoch: u64,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub images_per_second: f64,
    /// Cumulative seconds waiting for data and for the allreduce, since the run started.
    pub data_wait_s: f64,
    pub allreduce_wait_s: f64,
}

impl RunBoard {
    /// Opens the log on rank 0. A resumed run (`first_step` > 1) starts with the SessionLog START that
    /// drops what a killed run logged past its checkpoint; a new run logs its settings as text.
    /// The log goes to [`log_dir`]; `<run>/steps.jsonl` keeps the lines of the steps before
    /// `first_step` and loses the rest.
    pub fn open(rank0: bool, opts: &TrainOptions, first_step: u64, settings: &str) -> RunBoard {
        let mut board = RunBoard {
            writer: None,
            steps: None,
            last: (0.0, 0.0, std::time::Instant::now()),
            images: opts.epoch_images.clone(),
            explain_every: opts.settings.train.explain_every as u64,
            val_split: opts.settings.train.val_split.clone(),
        };
        if !rank0 {
            return board;
        }
        let dir = &log_dir(&opts.out, opts.settings.train.tensorboard.as_deref());
        let steps_path = &opts.out.join("steps.jsonl");
        board.steps = match open_steps(steps_path, first_step) {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::warn!("{}: {e}; training goes on without it", steps_path.display());
                None
            }
        };
        board.writer = match EventWriter::create(dir) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(
                    "TensorBoard log {}: {e}; training goes on without it",
                    dir.display()
                );
                None
            }
        };
        board.record(|w| {
            if first_step > 1 {
                w.session_start(first_step)
            } else {
                w.text(0, "settings", &format!("```\n{settings}\n```"))
            }
        });
        board
    }

    fn record(&mut self, f: impl FnOnce(&mut EventWriter) -> std::io::Result<()>) {
        if let Some(w) = self.writer.as_mut() {
            if let Err(e) = f(w) {
                tracing::warn!(
                    "TensorBoard log {}: {e}; no more events are written",
                    w.path().display()
                );
                self.writer = None;
            }
        }
    }

    /// Scalars of a step: loss, learning rate, gradient norm, images/s, and the fractions of the time
    /// since the last step spent waiting for data and for the allreduce.
    pub fn step(&mut self, step: u64, f: &StepFigures) {
        if self.writer.is_none() && self.steps.is_none() {
            return;
        }
        let wall = self.last.2.elapsed().as_secs_f64().max(1e-9);
        let data = (f.data_wait_s - self.last.0) / wall;
        let reduce = (f.allreduce_wait_s - self.last.1) / wall;
        self.last = (f.data_wait_s, f.allreduce_wait_s, std::time::Instant::now());
        if let Some(w) = self.steps.as_mut() {
            let line = serde_json::json!({
                "step": step,
                "epoch": f.epoch,
                "loss": f.loss,
                "lr": f.lr,
                "grad_norm": f.grad_norm,
                "images_per_second": f.images_per_second,
                "data_wait_fraction": data.clamp(0.0, 1.0),
                "allreduce_wait_fraction": reduce.clamp(0.0, 1.0),
            });
            if let Err(e) = w.write_all(format!("{line}\n").as_bytes()) {
                tracing::warn!("steps.jsonl: {e}; no more steps are written");
                self.steps = None;
            }
        }
        self.record(|w| {
            w.scalars(
                step,
                &[
                    ("train/loss", f.loss),
                    ("train/lr", f.lr),
                    ("train/grad_norm", f.grad_norm),
                    ("train/images_per_second", f.images_per_second),
                    ("train/data_wait_fraction", data.clamp(0.0, 1.0)),
                    ("train/allreduce_wait_fraction", reduce.clamp(0.0, 1.0)),
                ],
            )
        });
    }

    /// Every number of an epoch's `metrics.jsonl` line (validation metrics with their interval
    /// bounds included), under `epoch/`; with the epoch's validation report, its ROC curve or
    /// Kaplan–Meier plot as images; with the epoch's `checkpoint`, every `explain_every` epochs the
    /// hook's images.
    pub fn epoch(
        &mut self,
        step: u64,
        line: &impl serde::Serialize,
        eval: Option<&EvalReport>,
        checkpoint: Option<&Path>,
    ) {
        let epoch = serde_json::to_value(line).ok().and_then(|v| v["epoch"].as_u64());
        if let (Some(hook), Some(dir), Some(epoch)) = (self.images.clone(), checkpoint, epoch) {
            if self.writer.is_some() && self.explain_every > 0 && epoch % self.explain_every == 0 {
                match hook(dir, &self.val_split, epoch) {
                    Ok(images) => {
                        for i in images {
                            self.record(|w| w.image(step, &i.tag, i.png, i.width, i.height));
                        }
                    }
                    Err(e) => tracing::warn!("TensorBoard images of epoch {epoch}: {e}"),
                }
            }
        }
        if self.writer.is_none() {
            return;
        }
        let mut values = Vec::new();
        numbers(
            "epoch",
            &serde_json::to_value(line).unwrap_or_default(),
            &mut values,
        );
        let pairs: Vec<(&str, f64)> = values.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        self.record(|w| w.scalars(step, &pairs));
        let charts = eval.map_or(vec![], |r| super::figures::epoch_charts(&r.plotted));
        for (tag, chart) in charts {
            let (width, height) = (640, 400);
            match chart.png(width, height) {
                Ok(png) => self.record(|w| w.image(step, tag, png, width, height)),
                Err(e) => tracing::warn!("TensorBoard image {tag}: {e}"),
            }
        }
    }
}

/// The directory of a run's TensorBoard events: `<shared>/<run directory name>/` under a shared log
/// directory (one TensorBoard "run" per training run), else `<run>/tb/`.
pub fn log_dir(run: &Path, shared: Option<&Path>) -> PathBuf {
    match (shared, run.file_name()) {
        (Some(dir), Some(name)) => dir.join(name),
        (Some(dir), None) => dir.join("run"),
        (None, _) => run.join("tb"),
    }
}

/// Opens `steps.jsonl` for appending. A resumed run first keeps only the complete lines of steps
/// before `first_step` (a killed run may have logged steps past its checkpoint, or half a line).
fn open_steps(path: &Path, first_step: u64) -> std::io::Result<std::fs::File> {
    if first_step <= 1 {
        return std::fs::File::create(path);
    }
    let old = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e),
    };
    let kept: String = old
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_some_and(|s| s < first_step)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    crate::fsx::write_atomic(path, kept.as_bytes())?;
    std::fs::OpenOptions::new().append(true).open(path)
}
