//! Grad-CAM overlays during training, for TensorBoard (`[train] explain_every`): `train` calls the
//! hook made here with an epoch's checkpoint, so it never imports `explain`.

use super::*;
use crate::train::tensorboard::{EpochImages, TbImage};

/// Series explained per epoch.
const SERIES: usize = 4;

/// The hook: `explain` on the first [`SERIES`] series of the split, at the last layer with Grad-CAM,
/// on the CPU (the GPU, if any, is training), into `<run>/explain-epochs/epoch-N/`; the overlays
/// (not the montages) come back as images tagged `gradcam/<file name>`.
pub fn epoch_images() -> EpochImages {
    std::sync::Arc::new(|checkpoint: &Path, split: &str, epoch: u64| {
        let run = checkpoint
            .parent()
            .and_then(Path::parent)
            .ok_or_else(|| format!("{}: not inside a run directory", checkpoint.display()))?;
        let out = run.join("explain-epochs").join(format!("epoch-{epoch}"));
        let args = ExplainArgs {
            inputs: vec![checkpoint.to_path_buf(), PathBuf::from(split)],
            out: out.clone(),
            config: None,
            catalog: None,
            manifest: None,
            layer: vec![],
            target: "0".into(),
            method: vec![],
            upsample: "centred".into(),
            window: "lung".into(),
            threshold: overlay::DEFAULT_THRESHOLD,
            contours: false,
            colormap: Colormap::Viridis,
            max_series: Some(SERIES),
            evaluate: false,
            truth: None,
            key: None,
            val_split: split.into(),
            margin_mm: DEFAULT_MARGIN_MM,
            steps: DEFAULT_STEPS,
            device: "cpu".into(),
            json: false,
            silent: true,
        };
        let text = |f: Failure| match f {
            Failure::Usage(m) | Failure::Job(m) => m,
        };
        let p = plan(&args).map_err(text)?;
        explain_on(&CpuBackend, &args, &p).map_err(text)?;
        let mut names: Vec<PathBuf> = std::fs::read_dir(&out)
            .map_err(|e| format!("{}: {e}", out.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                let name = p
                    .file_name()
                    .map_or(String::new(), |n| n.to_string_lossy().into_owned());
                name.ends_with(".png") && !name.ends_with("-montage.png")
            })
            .collect();
        names.sort();
        names
            .iter()
            .map(|path| {
                let png = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
                let (width, height) =
                    png_size(&png).ok_or_else(|| format!("{}: not a PNG", path.display()))?;
                let stem = path
                    .file_stem()
                    .map_or(String::new(), |s| s.to_string_lossy().into_owned());
                Ok(TbImage {
                    tag: format!("gradcam/{stem}"),
                    png,
                    width,
                    height,
                })
            })
            .collect()
    })
}

/// Width and height from a PNG's IHDR chunk.
fn png_size(png: &[u8]) -> Option<(u32, u32)> {
    if png.len() < 24 || &png[..8] != b"\x89PNG\r\n\x1a\n" || &png[12..16] != b"IHDR" {
        return None;
    }
    let be = |b: &[u8]| -> Option<u32> { Some(u32::from_be_bytes(b.try_into().ok()?)) };
    Some((be(&png[16..20])?, be(&png[20..24])?))
}
