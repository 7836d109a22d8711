//! Intensities per modality, decided at open from what `pack` recorded for each series (modality,
//! stored type, photometric interpretation, modality rescale or LUT, VOI LUT or window), never
//! guessed from the pixels:
//!
//! - CT: Hounsfield units stored by pack (`hu-linear`, `hu-lut`), windowed to [0, 1] (as before).
//! - CR/DX: stored values → Modality LUT or rescale → VOI LUT (the table if recorded, else the
//!   window, PS3.3 C.11.2.1.2) → MONOCHROME1 inverted so that denser is brighter → per image,
//!   clipped to the configured percentiles and z-scored.
//! - MR: stored values → rescale → per series, clipped to the configured percentiles and z-scored.
//! - US: stored values (cropped by pack to the tissue region of the Sequence of Ultrasound Regions,
//!   whose physical deltas are the pixel spacing) → per image (each frame of a cine loop is one
//!   image), clipped to the configured percentiles and z-scored.
//!
//! Everything else (PALETTE COLOR, a float image without rescale, other modalities) is
//! refused with the reason before training starts. Three-sample pixels are read as luma.

/// Default percentile clip before z-scoring.
pub const DEFAULT_PERCENTILES: [f64; 2] = [0.5, 99.5];
/// Radiograph modalities (projection X-ray).
pub const RADIOGRAPH_MODALITIES: &[&str] = &["CR", "DX"];

/// `[data.intensity]`: the normalisation of non-CT series.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IntensityConfig {
    /// CR/DX: per-image clip to these percentiles (low, high), then z-score.
    pub radiograph_percentiles: [f64; 2],
    /// MR: per-series clip to these percentiles (low, high), then z-score.
    pub mr_percentiles: [f64; 2],
    /// US: per-image (per frame) clip to these percentiles (low, high), then z-score.
    pub us_percentiles: [f64; 2],
    /// RGB (and YBR, decoded to RGB) images as 3 channels R, G, B instead of their luma, each
    /// clipped and z-scored with the image's luma statistics; grey images fill the 3 channels
    /// alike. Needs 3 `windows` (the channel count).
    pub rgb: bool,
}

impl Default for IntensityConfig {
    fn default() -> Self {
        IntensityConfig {
            radiograph_percentiles: DEFAULT_PERCENTILES,
            mr_percentiles: DEFAULT_PERCENTILES,
            us_percentiles: DEFAULT_PERCENTILES,
            rgb: false,
        }
    }
}

impl IntensityConfig {
    /// The first bad key and why.
    pub fn problem(&self) -> Option<(&'static str, String)> {
        for (key, p) in [
            (
                "data.intensity.radiograph_percentiles",
                self.radiograph_percentiles,
            ),
            ("data.intensity.mr_percentiles", self.mr_percentiles),
            ("data.intensity.us_percentiles", self.us_percentiles),
        ] {
            if !(p[0].is_finite() && p[1].is_finite() && 0.0 <= p[0] && p[0] < p[1] && p[1] <= 100.0) {
                return Some((key, format!("{p:?}: expected 0 <= low < high <= 100")));
            }
        }
        None
    }
}

/// Stored pixel type of a series' dataset (little-endian).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stored {
    U8,
    U16,
    I16,
    F32,
}

impl Stored {
    pub fn parse(dtype: &str) -> Option<Stored> {
        match dtype {
            "u8" => Some(Stored::U8),
            "u16" => Some(Stored::U16),
            "i16" => Some(Stored::I16),
            "f32" => Some(Stored::F32),
            _ => None,
        }
    }

    pub fn bytes(self) -> usize {
        match self {
            Stored::U8 => 1,
            Stored::U16 | Stored::I16 => 2,
            Stored::F32 => 4,
        }
    }

    /// Element `i` of `bytes`.
    #[inline]
    pub fn read(self, bytes: &[u8], i: usize) -> f64 {
        match self {
            Stored::U8 => bytes[i] as f64,
            Stored::U16 => u16::from_le_bytes([bytes[2 * i], bytes[2 * i + 1]]) as f64,
            Stored::I16 => i16::from_le_bytes([bytes[2 * i], bytes[2 * i + 1]]) as f64,
            Stored::F32 => {
                let b = &bytes[4 * i..4 * i + 4];
                f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64
            }
        }
    }
}

/// VOILUTFunction of a window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum WindowFunction {
    Linear,
    LinearExact,
    Sigmoid,
}

/// The VOI transform of a radiograph.
#[derive(Clone, Debug, PartialEq)]
pub enum Voi {
    None,
    /// Window to [0, 1].
    Window {
        center: f64,
        width: f64,
        function: WindowFunction,
    },
    /// The recorded VOI LUT (values read from the shard at open).
    Table {
        first_mapped: f64,
        entries: u32,
    },
}

/// How a series' stored values become the network's input.
#[derive(Clone, Debug, PartialEq)]
pub enum Pipeline {
    /// CT: stored int16 HU, windowed (the HU path).
    Hu,
    /// Everything through `value`, then clipped and z-scored per image (`per_image`) or series.
    Normalised {
        modality: ModalityKind,
        voi: Voi,
        invert: bool,
        percentiles: [f64; 2],
        per_image: bool,
    },
}

/// The modality transform as recorded: a table's values come from the shard.
#[derive(Clone, Debug, PartialEq)]
pub enum ModalityKind {
    Rescale { slope: f64, intercept: f64 },
    Table { first_mapped: f64, entries: u32 },
}

/// What `pack` recorded about one series (catalog `series/` columns).
#[derive(Clone, Debug, Default)]
pub struct Recorded {
    pub modality: String,
    pub transform: String,
    pub dtype: String,
    pub samples_per_pixel: u8,
    pub photometric: String,
    pub rescale_slope: f64,
    pub rescale_intercept: f64,
    pub window_center: f64,
    pub window_width: f64,
    pub voi_function: String,
    pub modality_lut_first: f64,
    pub modality_lut_entries: u32,
    pub voi_lut_first: f64,
    pub voi_lut_entries: u32,
}

/// A series' intensity plan: how to read its bytes and what to do with the values.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub stored: Stored,
    pub samples: usize,
    /// Three samples read as channels (`[data.intensity] rgb`), not as their luma.
    pub rgb: bool,
    pub pipeline: Pipeline,
}

/// Decides the plan of one series from what pack recorded; Err names the reason it cannot train.
pub fn plan(r: &Recorded, cfg: &IntensityConfig) -> Result<Plan, String> {
    let what = format!(
        "modality {}, intensity transform '{}' ({}, {} sample(s) per pixel, {})",
        r.modality, r.transform, r.dtype, r.samples_per_pixel, r.photometric
    );
    if r.transform == "hu-linear" || r.transform == "hu-lut" {
        if r.dtype != "i16" || r.samples_per_pixel != 1 {
            return Err(format!("{what}: Hounsfield units are single-channel int16"));
        }
        return Ok(Plan {
            stored: Stored::I16,
            samples: 1,
            rgb: false,
            pipeline: Pipeline::Hu,
        });
    }
    if r.transform != "none" {
        return Err(format!("{what}: unknown intensity transform"));
    }
    let radiograph = RADIOGRAPH_MODALITIES.contains(&r.modality.as_str());
    let percentiles = match r.modality.as_str() {
        "MR" => cfg.mr_percentiles,
        _ if radiograph => cfg.radiograph_percentiles,
        "US" => cfg.us_percentiles,
        "CT" => return Err(format!("{what}: CT packed without Hounsfield units; re-pack it")),
        _ => {
            return Err(format!(
                "{what}: no intensity pipeline for this modality (CT, CR, DX, MR and US train); filter \
                 the split on modality"
            ))
        }
    };
    let stored =
        Stored::parse(&r.dtype).ok_or_else(|| format!("{what}: stored type not read by training"))?;
    if r.photometric == "PALETTE COLOR" {
        return Err(format!(
            "{what}: PALETTE COLOR pixels are indices, not intensities"
        ));
    }
    let samples = match r.samples_per_pixel {
        1 if r.photometric.starts_with("MONOCHROME") => 1,
        3 if r.photometric == "RGB" => 3,
        n => {
            return Err(format!(
                "{what}: {n} sample(s) per pixel as {} is not read by training",
                r.photometric
            ))
        }
    };
    let modality = if r.modality_lut_entries > 0 {
        ModalityKind::Table {
            first_mapped: r.modality_lut_first,
            entries: r.modality_lut_entries,
        }
    } else if r.rescale_slope.is_finite() && r.rescale_intercept.is_finite() {
        ModalityKind::Rescale {
            slope: r.rescale_slope,
            intercept: r.rescale_intercept,
        }
    } else {
        return Err(format!("{what}: no usable modality rescale recorded"));
    };
    let identity = modality
        == ModalityKind::Rescale {
            slope: 1.0,
            intercept: 0.0,
        };
    if stored == Stored::F32 && identity {
        return Err(format!(
            "{what}: a float image with no rescale has no defined intensity scale"
        ));
    }
    let voi = if !radiograph {
        Voi::None
    } else if r.voi_lut_entries > 0 {
        Voi::Table {
            first_mapped: r.voi_lut_first,
            entries: r.voi_lut_entries,
        }
    } else if r.window_center.is_finite() && r.window_width.is_finite() {
        let function = match r.voi_function.as_str() {
            "" | "LINEAR" => WindowFunction::Linear,
            "LINEAR_EXACT" => WindowFunction::LinearExact,
            "SIGMOID" => WindowFunction::Sigmoid,
            f => return Err(format!("{what}: VOILUTFunction {f} is not defined by DICOM")),
        };
        let valid = match function {
            WindowFunction::Linear => r.window_width >= 1.0,
            _ => r.window_width > 0.0,
        };
        if !valid {
            return Err(format!(
                "{what}: window width {} is not valid for {}",
                r.window_width, r.voi_function
            ));
        }
        Voi::Window {
            center: r.window_center,
            width: r.window_width,
            function,
        }
    } else {
        Voi::None
    };
    Ok(Plan {
        stored,
        samples,
        rgb: cfg.rgb && samples == 3,
        pipeline: Pipeline::Normalised {
            modality,
            voi,
            invert: r.photometric == "MONOCHROME1",
            percentiles,
            per_image: radiograph || r.modality == "US",
        },
    })
}

/// LUT values of a series, read from its shard (empty where it records none).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Luts {
    pub modality: Vec<f64>,
    pub voi: Vec<f64>,
}

fn table(first_mapped: f64, values: &[f64], x: f64) -> f64 {
    let index = (x - first_mapped).clamp(0.0, (values.len().max(1) - 1) as f64);
    values.get(index as usize).copied().unwrap_or(f64::NAN)
}

/// PS3.3 C.11.2.1.2 (LINEAR), C.11.2.1.3.2 (LINEAR_EXACT) and C.11.2.1.3.1 (SIGMOID), to [0, 1].
pub fn window(x: f64, center: f64, width: f64, function: WindowFunction) -> f64 {
    let (c, w) = match function {
        WindowFunction::Linear => (center - 0.5, width - 1.0),
        WindowFunction::LinearExact => (center, width),
        WindowFunction::Sigmoid => return 1.0 / (1.0 + (-4.0 * (x - center) / width).exp()),
    };
    if x <= c - w / 2.0 {
        0.0
    } else if x > c + w / 2.0 {
        1.0
    } else {
        (x - c) / w + 0.5
    }
}

impl Plan {
    /// The stored value of voxel `i` (luma of three samples: ITU-R BT.601 weights).
    #[inline]
    pub fn raw(&self, bytes: &[u8], i: usize) -> f64 {
        if self.samples == 3 {
            let j = 3 * i;
            0.299 * self.stored.read(bytes, j)
                + 0.587 * self.stored.read(bytes, j + 1)
                + 0.114 * self.stored.read(bytes, j + 2)
        } else {
            self.stored.read(bytes, i)
        }
    }

    /// The stored value of channel `ch` of voxel `i`: sample `ch` of an RGB plan read as channels,
    /// else the voxel's value (luma of three samples) for every channel.
    #[inline]
    pub fn channel_raw(&self, bytes: &[u8], i: usize, ch: usize) -> f64 {
        if self.rgb {
            self.stored.read(bytes, 3 * i + ch)
        } else {
            self.raw(bytes, i)
        }
    }

    /// Stored value → intensity before clipping and z-scoring (the HU themselves for CT).
    #[inline]
    pub fn value(&self, raw: f64, luts: &Luts) -> f64 {
        let Pipeline::Normalised {
            modality,
            voi,
            invert,
            ..
        } = &self.pipeline
        else {
            return raw;
        };
        let m = match modality {
            ModalityKind::Rescale { slope, intercept } => raw * slope + intercept,
            ModalityKind::Table { first_mapped, .. } => table(*first_mapped, &luts.modality, raw),
        };
        let v = match voi {
            Voi::None => m,
            Voi::Window {
                center,
                width,
                function,
            } => window(m, *center, *width, *function),
            Voi::Table { first_mapped, .. } => table(*first_mapped, &luts.voi, m),
        };
        if *invert {
            -v
        } else {
            v
        }
    }

    /// Checks the LUT values read from the shard against the recorded entry counts.
    pub fn check_luts(&self, luts: &Luts) -> Result<(), String> {
        if let Pipeline::Normalised { modality, voi, .. } = &self.pipeline {
            if let ModalityKind::Table { entries, .. } = modality {
                if luts.modality.len() != *entries as usize {
                    return Err(format!(
                        "Modality LUT has {} values, the table records {entries}",
                        luts.modality.len()
                    ));
                }
            }
            if let Voi::Table { entries, .. } = voi {
                if luts.voi.len() != *entries as usize {
                    return Err(format!(
                        "VOI LUT has {} values, the table records {entries}",
                        luts.voi.len()
                    ));
                }
            }
        }
        Ok(())
    }

    /// Which LUT datasets the series needs ("modality", "voi").
    pub fn lut_names(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        if let Pipeline::Normalised { modality, voi, .. } = &self.pipeline {
            if matches!(modality, ModalityKind::Table { .. }) {
                names.push("modality");
            }
            if matches!(voi, Voi::Table { .. }) {
                names.push("voi");
            }
        }
        names
    }

    /// Normalisation of `voxels` consecutive voxels starting at voxel `first` of `bytes`.
    pub fn norm(&self, bytes: &[u8], luts: &Luts, first: usize, voxels: usize) -> Norm {
        let Pipeline::Normalised { percentiles, .. } = &self.pipeline else {
            return Norm::IDENTITY;
        };
        let mut v: Vec<f64> = (first..first + voxels)
            .map(|i| self.value(self.raw(bytes, i), luts))
            .collect();
        Norm::fit(&mut v, *percentiles)
    }
}

/// Clip range and z-score of one image or series: z = (clamp(v, low, high) − mean) / std, mean and
/// (population) std over the clipped values.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Norm {
    pub low: f64,
    pub high: f64,
    pub mean: f64,
    pub std: f64,
}

impl Norm {
    pub const IDENTITY: Norm = Norm {
        low: f64::NEG_INFINITY,
        high: f64::INFINITY,
        mean: 0.0,
        std: 1.0,
    };

    /// Fits `values` (reordered): percentiles by linear interpolation between order statistics
    /// (numpy's default), then mean and std of the clipped values. A constant image has std 1.
    pub fn fit(values: &mut [f64], percentiles: [f64; 2]) -> Norm {
        if values.is_empty() {
            return Norm::IDENTITY;
        }
        values.sort_unstable_by(f64::total_cmp);
        let at = |p: f64| {
            let x = p / 100.0 * (values.len() - 1) as f64;
            let (i, f) = (x.floor() as usize, x - x.floor());
            let j = (i + 1).min(values.len() - 1);
            values[i] + (values[j] - values[i]) * f
        };
        let (low, high) = (at(percentiles[0]), at(percentiles[1]));
        let n = values.len() as f64;
        let mean = values.iter().map(|v| v.clamp(low, high)).sum::<f64>() / n;
        let var = values
            .iter()
            .map(|v| (v.clamp(low, high) - mean).powi(2))
            .sum::<f64>()
            / n;
        let std = if var > 0.0 { var.sqrt() } else { 1.0 };
        Norm { low, high, mean, std }
    }

    #[inline]
    pub fn apply(&self, v: f64) -> f32 {
        ((v.clamp(self.low, self.high) - self.mean) / self.std) as f32
    }

    /// The value of a point outside the image: the low clip (background).
    pub fn outside(&self) -> f32 {
        if self.low.is_finite() {
            self.apply(self.low)
        } else {
            0.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorded(modality: &str, dtype: &str, photometric: &str) -> Recorded {
        Recorded {
            modality: modality.into(),
            transform: "none".into(),
            dtype: dtype.into(),
            samples_per_pixel: 1,
            photometric: photometric.into(),
            rescale_slope: 1.0,
            rescale_intercept: 0.0,
            window_center: f64::NAN,
            window_width: f64::NAN,
            voi_function: "LINEAR".into(),
            modality_lut_first: f64::NAN,
            modality_lut_entries: 0,
            voi_lut_first: f64::NAN,
            voi_lut_entries: 0,
        }
    }

    #[test]
    fn plans_follow_the_recorded_columns() {
        let cfg = IntensityConfig::default();
        let p = plan(&recorded("DX", "u16", "MONOCHROME1"), &cfg).unwrap();
        assert!(matches!(
            p.pipeline,
            Pipeline::Normalised {
                invert: true,
                per_image: true,
                ..
            }
        ));
        let p = plan(&recorded("MR", "i16", "MONOCHROME2"), &cfg).unwrap();
        assert!(matches!(
            p.pipeline,
            Pipeline::Normalised {
                per_image: false,
                voi: Voi::None,
                ..
            }
        ));
        let rgb = Recorded {
            samples_per_pixel: 3,
            ..recorded("US", "u8", "RGB")
        };
        let us = plan(&rgb, &cfg).unwrap();
        assert_eq!(us.samples, 3);
        assert!(matches!(
            us.pipeline,
            Pipeline::Normalised {
                per_image: true,
                voi: Voi::None,
                invert: false,
                ..
            }
        ));
        for (r, why) in [
            (recorded("CR", "u8", "PALETTE COLOR"), "PALETTE COLOR"),
            (
                recorded("MR", "f32", "MONOCHROME2"),
                "float image with no rescale",
            ),
            (recorded("CT", "u16", "MONOCHROME2"), "without Hounsfield"),
            (recorded("NM", "u16", "MONOCHROME2"), "no intensity pipeline"),
        ] {
            let e = plan(&r, &cfg).unwrap_err();
            assert!(e.contains(why), "{e}");
        }
        let mut ct = recorded("CT", "i16", "MONOCHROME2");
        ct.transform = "hu-lut".into();
        assert_eq!(plan(&ct, &cfg).unwrap().pipeline, Pipeline::Hu);
    }

    #[test]
    fn linear_window_follows_ps3_3() {
        // c = 2048, w = 4096: the ramp runs from 0 at x ≤ 0 to 1 above 4095.
        let f = |x| window(x, 2048.0, 4096.0, WindowFunction::Linear);
        assert_eq!(f(-1.0), 0.0);
        assert_eq!(f(4096.0), 1.0);
        assert!((f(2047.5) - 0.5).abs() < 1e-12);
        assert_eq!(window(10.0, 10.0, 4.0, WindowFunction::LinearExact), 0.5);
    }

    #[test]
    fn percentiles_match_numpy_linear_interpolation() {
        let mut v: Vec<f64> = (0..11).map(|i| (10 - i) as f64).collect();
        let n = Norm::fit(&mut v, [10.0, 95.0]);
        assert_eq!((n.low, n.high), (1.0, 9.5));
        let mut c = vec![3.0; 4];
        let n = Norm::fit(&mut c, DEFAULT_PERCENTILES);
        assert_eq!((n.mean, n.std, n.apply(3.0)), (3.0, 1.0, 0.0));
    }
}
