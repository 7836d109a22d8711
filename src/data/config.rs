//! The `[data]` section of an experiment config: how catalog rows become tensors (sampling mode,
//! output extent and spacing, HU windows, label targets, augmentation, staged shard directory).

use super::intensity::IntensityConfig;
use super::DataError;
use std::path::PathBuf;

/// Window of the default config: lung parenchyma and soft tissue in one ramp (center, width) HU.
pub const DEFAULT_WINDOW: [f32; 2] = [-600.0, 1500.0];
/// Output extent of the default config (2D, [H, W]).
pub const DEFAULT_SIZE: [u32; 2] = [128, 128];

/// How a sample is cut from a series.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SampleMode {
    /// One slice, 2D: channels = windows.
    #[default]
    Slice,
    /// A slice with `context` neighbours each side as channels (clamped at the series ends).
    Slice25d,
    /// A 3D crop of `size` voxels at the output spacing, centred on the series (or on the slice of
    /// a slice-level sample); random crop centre under augmentation.
    Crop3d,
    /// The whole volume resampled onto a `size` grid.
    Volume3d,
}

impl SampleMode {
    pub fn is_3d(self) -> bool {
        matches!(self, SampleMode::Crop3d | SampleMode::Volume3d)
    }
}

/// Random augmentation ranges; every draw is uniform in ±range (flips: probability 1/2).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AugmentConfig {
    /// Mirror columns (left-right).
    pub flip_lr: bool,
    /// Mirror rows (up-down).
    pub flip_ud: bool,
    /// In-plane rotation, degrees.
    pub rotate_deg: f64,
    /// Isotropic zoom, as a fraction (0.1 = ±10 %).
    pub scale: f64,
    /// Shift of the sampled region, mm, along each axis.
    pub translate_mm: f64,
    /// Jitter of the windowed value: v (1 + a) + b, a and b in ±intensity, clamped to [0, 1].
    pub intensity: f32,
}

impl AugmentConfig {
    pub fn is_off(&self) -> bool {
        !self.flip_lr
            && !self.flip_ud
            && self.rotate_deg == 0.0
            && self.scale == 0.0
            && self.translate_mm == 0.0
            && self.intensity == 0.0
    }
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    pub mode: SampleMode,
    /// slice25d: slices each side; channels = (2 context + 1) × windows.
    pub context: u32,
    /// Output extent: [H, W] in 2D modes, [D, H, W] in 3D modes.
    pub size: Vec<u32>,
    /// Output spacing in mm ([row, col] or [z, row, col]); None = the series' own spacing.
    pub spacing_mm: Option<Vec<f64>>,
    /// HU windows (center, width): value = (hu - (c - w/2)) / w clamped to [0, 1], one channel each.
    pub windows: Vec<[f32; 2]>,
    /// Targets as "label_set.column", in order.
    pub labels: Vec<String>,
    /// Tabular inputs fused late into the model's head, as "label_set.column" (numeric label
    /// columns, e.g. age or hand-crafted image features imported from a CSV). Standardised with the
    /// training split's mean and standard deviation; a missing value is 0 with a missing-indicator
    /// input of 1, so the model gets 2 inputs per column.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tabular: Vec<String>,
    pub augment: AugmentConfig,
    /// Read shards from this directory (same file names) instead of the catalogued paths.
    pub shard_dir: Option<PathBuf>,
    /// 2D modes: resize each image, aspect preserved, to fit `size` (isotropic in-plane spacing of
    /// max(rows × row spacing / H, cols × col spacing / W)), centred and padded; the sample's
    /// recorded affine holds the scale. Takes the place of `spacing_mm`.
    pub fit: bool,
    /// Normalisation of CR/DX and MR series (`[data.intensity]`); CT uses `windows`.
    pub intensity: IntensityConfig,
    /// Segmentation: the mask label set whose voxels are the targets (its newest version), read
    /// through every sample's transform with nearest-neighbour lookup.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub masks: Option<String>,
    /// Segmentation, crop3d: the fraction of training patches centred on a labelled voxel drawn at
    /// random (nnU-Net's foreground oversampling); the rest are placed uniformly. Default 1/3.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub foreground: Option<f64>,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            mode: SampleMode::Slice,
            context: 1,
            size: DEFAULT_SIZE.to_vec(),
            spacing_mm: None,
            windows: vec![DEFAULT_WINDOW],
            labels: Vec::new(),
            tabular: Vec::new(),
            augment: AugmentConfig::default(),
            shard_dir: None,
            intensity: IntensityConfig::default(),
            fit: false,
            masks: None,
            foreground: None,
        }
    }
}

fn bad(key: &'static str, reason: impl Into<String>) -> DataError {
    DataError::Config {
        key,
        reason: reason.into(),
    }
}

impl DataConfig {
    /// Number of spatial axes the mode's `size` and `spacing_mm` take.
    pub fn axes(&self) -> usize {
        if self.mode.is_3d() {
            3
        } else {
            2
        }
    }

    /// Checks every field; errors name the key (`data.<field>`).
    pub fn validate(&self) -> Result<(), DataError> {
        let axes = self.axes();
        if self.size.len() != axes || self.size.contains(&0) {
            return Err(bad(
                "data.size",
                format!(
                    "{:?}: mode {:?} takes {axes} positive extents ({})",
                    self.size,
                    self.mode,
                    if axes == 3 { "[D, H, W]" } else { "[H, W]" }
                ),
            ));
        }
        if let Some(sp) = &self.spacing_mm {
            if self.mode == SampleMode::Volume3d {
                return Err(bad(
                    "data.spacing_mm",
                    "volume3d resamples the whole volume onto `size`; use crop3d for a fixed spacing",
                ));
            }
            if sp.len() != axes || sp.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
                return Err(bad(
                    "data.spacing_mm",
                    format!(
                        "{sp:?}: mode {:?} takes {axes} positive spacings in mm",
                        self.mode
                    ),
                ));
            }
        }
        if self.windows.is_empty() {
            return Err(bad(
                "data.windows",
                "at least one [center, width] window is needed",
            ));
        }
        if let Some(w) = self
            .windows
            .iter()
            .find(|w| !(w[0].is_finite() && w[1].is_finite() && w[1] > 0.0))
        {
            return Err(bad(
                "data.windows",
                format!("{w:?}: center must be finite and width positive"),
            ));
        }
        if self.mode == SampleMode::Slice25d && self.context > 64 {
            return Err(bad(
                "data.context",
                format!("{} slices each side is too many", self.context),
            ));
        }
        for (key, names) in [("data.labels", &self.labels), ("data.tabular", &self.tabular)] {
            for (k, l) in names.iter().enumerate() {
                if l.split_once('.')
                    .is_none_or(|(s, c)| s.is_empty() || c.is_empty())
                {
                    return Err(bad(key, format!("{l:?} is not of the form \"set.column\"")));
                }
                if names[..k].contains(l) {
                    return Err(bad(key, format!("{l:?} is listed twice")));
                }
            }
        }
        if self.fit && (self.mode.is_3d() || self.spacing_mm.is_some()) {
            return Err(bad(
                "data.fit",
                "fits 2D images to `size` (modes slice, slice25d) and replaces spacing_mm; unset one",
            ));
        }
        if let Some((key, reason)) = self.intensity.problem() {
            return Err(bad(key, reason));
        }
        if self.intensity.rgb && self.windows.len() != 3 {
            return Err(bad(
                "data.intensity.rgb",
                format!(
                    "3 channels (R, G, B) need 3 `windows` (the channel count), not {}",
                    self.windows.len()
                ),
            ));
        }
        let a = &self.augment;
        let range = |key, v: f64, max: f64| {
            if v.is_finite() && (0.0..max).contains(&v) {
                Ok(())
            } else {
                Err(bad(key, format!("{v} is not within [0, {max})")))
            }
        };
        range("data.augment.rotate_deg", a.rotate_deg, 180.0)?;
        range("data.augment.scale", a.scale, 1.0)?;
        range("data.augment.translate_mm", a.translate_mm, 1e4)?;
        range("data.augment.intensity", a.intensity as f64, 1.0)?;
        Ok(())
    }

    /// Channels per sample.
    pub fn channels(&self) -> u32 {
        let windows = self.windows.len() as u32;
        match self.mode {
            SampleMode::Slice25d => (2 * self.context + 1) * windows,
            _ => windows,
        }
    }

    /// [D, H, W] of a sample (D = 1 in 2D modes).
    pub fn extent(&self) -> [u32; 3] {
        match self.size.as_slice() {
            [h, w] => [1, *h, *w],
            [d, h, w] => [*d, *h, *w],
            _ => [0, 0, 0],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_section_parses_with_defaults_and_names_bad_keys() {
        let cfg: DataConfig = toml::from_str(
            "mode = \"slice25d\"\ncontext = 2\nsize = [64, 48]\nwindows = [[-600, 1500], [40, 400]]\n\
             labels = [\"nodule_slices.nodule\"]\n[augment]\nflip_lr = true\nrotate_deg = 10\n",
        )
        .unwrap();
        assert_eq!(cfg.mode, SampleMode::Slice25d);
        assert_eq!(cfg.channels(), 10);
        assert_eq!(cfg.extent(), [1, 64, 48]);
        assert!(cfg.augment.flip_lr && !cfg.augment.flip_ud);
        cfg.validate().unwrap();
        assert_eq!(toml::from_str::<DataConfig>("").unwrap(), DataConfig::default());
        assert!(toml::from_str::<DataConfig>("sizes = [1, 2]").is_err());

        let mut c = DataConfig {
            mode: SampleMode::Crop3d,
            ..DataConfig::default()
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("data.size"), "{e}");
        c.size = vec![8, 32, 32];
        c.spacing_mm = Some(vec![1.0, 1.0]);
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("data.spacing_mm"), "{e}");
        c.spacing_mm = None;
        c.windows = vec![[0.0, 0.0]];
        assert!(c.validate().unwrap_err().to_string().contains("data.windows"));
        c.windows = vec![DEFAULT_WINDOW];
        c.augment.scale = 1.5;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("data.augment.scale"));
    }
}
