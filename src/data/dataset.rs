//! A split of a manifest as indexed samples: catalog rows resolved once at open (series geometry,
//! shard byte ranges, label columns), shards mapped once with `memmap2` (at open, or on first use with
//! [`Dataset::open_lazy`]) and shared by every sample.
//! The HDF5 library only confirms each pixel dataset's offset; pixels are read from the mapping.
//!
//! Samples: a slice-level manifest gives one sample per slice row; a series-level manifest one per
//! series (2D modes then cut the middle slice, n_slices / 2).

use super::config::{DataConfig, SampleMode};
use super::intensity::{plan, IntensityConfig, Luts, Norm, Pipeline, Plan, Recorded};
use super::targets::{resolve_tabular, resolve_targets, TabularStats, Target};
use super::transform::{resample, Augmentation, Grid, Mapped, Volume};
use super::DataError;
use crate::catalog::columns::{cell_text, Level};
use crate::catalog::split::Manifest;
use crate::catalog::view::Catalog;
use memmap2::Mmap;
use shard_file::open_shard;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

mod shard_file;

/// Where a lazily opened dataset finds a shard, asked once per shard before it is mapped: the catalog
/// shard id in, the file to map out. It may block (a shard still being staged) and its error ends
/// the read that needed the shard. Without one, a shard is read from its catalogued path (after
/// `shard_dir`).
pub type ShardSource = Arc<dyn Fn(u32) -> Result<PathBuf, DataError> + Send + Sync>;

/// Series columns that shard format 2 added (presentation); a catalog without them was built from
/// older packs.
const PRESENTATION_COLUMN: &str = "voi_lut_entries";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SampleMeta {
    pub series_row: u32,
    pub patient_row: u32,
    /// Catalog slice row of a slice-level sample (None for a series-level sample).
    pub slice_row: Option<u64>,
    /// Slice the sample is cut from or centred on (n_slices / 2 for a whole series).
    pub slice_index: u32,
    /// Index of the shard in `catalog.json`.
    pub shard: u32,
    pub series_key: String,
    pub patient_key: String,
}

/// Where each output voxel came from: pack voxel index coordinates (slice, row, col) =
/// affine · (z, y, x, 1) of the output grid (2D: z = 0; 2.5D neighbours are slice ± offset).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SampleTransform {
    pub series_row: u32,
    pub slice_index: u32,
    pub affine: [[f64; 4]; 3],
    /// Mirrors applied along (z, y, x).
    pub flips: [bool; 3],
}

/// One series used by the split, resolved from the catalog's series table.
pub(super) struct SeriesInfo {
    pub(super) row: u32,
    pub(super) patient_row: u32,
    pub(super) shard: u32,        // catalog shard index
    map: usize,                   // index into Dataset::shards
    offset: u64,                  // bytes into the shard
    length: u64,                  // bytes
    pub(super) shape: [usize; 3], // (slices, rows, cols)
    pub(super) spacing: [f64; 3], // mm (slice, row, col)
    pub(super) slice_start: u64,
    dataset: String,
    /// How its stored values become intensities, decided from the recorded columns at open.
    plan: Plan,
    /// LUT values read from the shard when it is mapped.
    luts: OnceLock<Luts>,
    /// Normalisation per image or for the series, fitted on first use.
    norms: OnceLock<Vec<Norm>>,
}

/// Consecutive samples of one series with consecutive slices.
pub(super) struct Segment {
    first: usize,           // first sample index
    pub(super) series: u32, // index into Dataset::series
    first_slice: u32,
    first_row: Option<u64>, // catalog slice row of the first sample (slice level)
}

/// One shard used by the split: its path (after `shard_dir`), the series it holds (indices into
/// `Dataset::series`) and its mapping, made at open or, for a lazily opened dataset, on first use.
struct ShardMap {
    path: PathBuf,
    series: Vec<usize>,
    map: OnceLock<Mmap>,
}

pub struct Dataset {
    pub(super) cfg: DataConfig,
    level: Level,
    pub(super) catalog: Catalog,
    pub(super) series: Vec<SeriesInfo>,
    segments: Vec<Segment>,
    len: usize,
    shards: Vec<ShardMap>,
    targets: Vec<Target>,
    /// Tabular inputs (`[data] tabular`) and the statistics that standardise them.
    pub(super) tabular: Vec<Target>,
    pub(super) tabular_stats: Option<TabularStats>,
    /// Output spacing (z, y, x) when configured.
    pub(super) spacing: Option<[f64; 3]>,
    source: Option<ShardSource>,
    /// Pixel labels (`[data] masks`), for segmentation.
    pub(super) masks: Option<super::masks::MaskSource>,
}

/// Output spacing (z, y, x) that fits a (rows, cols) image into (H, W) with its aspect kept: the
/// larger of the two scales, on both in-plane axes.
pub fn fit_spacing(shape: [usize; 3], spacing: [f64; 3], extent: [u32; 3]) -> [f64; 3] {
    let rows = shape[1] as f64 * spacing[1] / extent[1] as f64;
    let cols = shape[2] as f64 * spacing[2] / extent[2] as f64;
    let s = rows.max(cols);
    [spacing[0], s, s]
}

fn positive_or(v: f64, fallback: f64) -> f64 {
    if v.is_finite() && v > 0.0 {
        v
    } else {
        fallback
    }
}

impl Dataset {
    /// Opens the split and maps (and checks) every shard it uses now.
    pub fn open(
        catalog_dir: &Path,
        manifest: &Manifest,
        split: &str,
        cfg: &DataConfig,
    ) -> Result<Dataset, DataError> {
        let dataset = Dataset::open_lazy(catalog_dir, manifest, split, cfg)?;
        for k in 0..dataset.shards.len() {
            dataset.shard_map(k)?;
        }
        Ok(dataset)
    }

    /// Opens the split without touching its shard files: each shard is checked and mapped when a
    /// sample first needs it. A node that reads only its staged shards (shard-local sampling with
    /// `shard_dir`) never opens the others, and a staging plan needs no shard opened.
    pub fn open_lazy(
        catalog_dir: &Path,
        manifest: &Manifest,
        split: &str,
        cfg: &DataConfig,
    ) -> Result<Dataset, DataError> {
        Dataset::open_with(catalog_dir, manifest, split, cfg, Pixels::Stored)
    }

    /// Opens the split from the catalog's tables alone, for planning: a series without pixel data
    /// (the metadata-only shards `catalog synth` writes for archive-scale planning) counts with the
    /// bytes its table describes. Reading a sample of such a series fails.
    pub fn open_described(
        catalog_dir: &Path,
        manifest: &Manifest,
        split: &str,
        cfg: &DataConfig,
    ) -> Result<Dataset, DataError> {
        Dataset::open_with(catalog_dir, manifest, split, cfg, Pixels::Described)
    }

    fn open_with(
        catalog_dir: &Path,
        manifest: &Manifest,
        split: &str,
        cfg: &DataConfig,
        pixels: Pixels,
    ) -> Result<Dataset, DataError> {
        cfg.validate()?;
        let catalog = Catalog::open(catalog_dir)?;
        let part = manifest
            .splits
            .iter()
            .find(|p| p.name == split)
            .ok_or_else(|| DataError::Split {
                name: split.into(),
                available: manifest.splits.iter().map(|p| p.name.clone()).collect(),
            })?;
        let level = manifest.meta.level;
        if level == Level::Patient {
            return Err(DataError::Manifest(
                "samples are slices or series, not patients: re-run the split with --level slices|series"
                    .into(),
            ));
        }
        if level == Level::Slice && cfg.mode == SampleMode::Volume3d {
            return Err(DataError::Config {
                key: "data.mode",
                reason: "volume3d needs a series-level manifest (split --level series); \
                         use crop3d for slice samples"
                    .into(),
            });
        }
        let rows = catalog.rows(level) as u64;
        if let Some(bad) = part
            .runs_start
            .iter()
            .zip(&part.runs_length)
            .find(|&(&s, &n)| s + n as u64 > rows)
        {
            return Err(DataError::Manifest(format!(
                "split {split} names {} rows {}..{} but catalog {} has {rows}: \
                 was the manifest made from this catalog?",
                level.group(),
                bad.0,
                bad.0 + *bad.1 as u64,
                catalog_dir.display()
            )));
        }
        let mut b = Builder::new(&catalog, &cfg.intensity, pixels)?;
        match level {
            Level::Slice => {
                let series_row = catalog.col_u32(Level::Slice, "series_row")?;
                let slice_index = catalog.col_u32(Level::Slice, "slice_index")?;
                for row in part.rows() {
                    let r = row as usize;
                    b.add(series_row[r], slice_index[r], Some(row))?;
                }
            }
            Level::Series | Level::Patient => {
                for row in part.rows() {
                    let middle = b.n_slices[row as usize] / 2;
                    b.add(row as u32, middle, None)?;
                }
            }
        }
        let Builder {
            series,
            segments,
            len,
            ..
        } = b;
        let mut dataset = Dataset {
            cfg: cfg.clone(),
            level,
            targets: resolve_targets(&catalog, &cfg.labels)?,
            tabular: resolve_tabular(&catalog, &cfg.tabular)?,
            tabular_stats: None,
            spacing: cfg.spacing_mm.as_ref().map(|s| match s.as_slice() {
                [r, c] => [1.0, *r, *c],
                [z, r, c] => [*z, *r, *c],
                _ => [1.0; 3],
            }),
            catalog,
            series,
            segments,
            len,
            shards: Vec::new(),
            source: None,
            masks: None,
        };
        dataset.index_shards();
        if let Some(name) = &cfg.masks {
            let masks = super::masks::MaskSource::open(&dataset.catalog, name, &dataset.series)?;
            dataset.masks = Some(masks);
        }
        Ok(dataset)
    }

    /// Resolves each used shard's path (nothing is opened yet).
    fn index_shards(&mut self) {
        let mut used: Vec<u32> = self.series.iter().map(|s| s.shard).collect();
        used.sort_unstable();
        used.dedup();
        let mut index = HashMap::new();
        for &id in &used {
            let catalogued = PathBuf::from(&self.catalog.state.shards[id as usize].path);
            let path = match &self.cfg.shard_dir {
                Some(dir) => dir.join(catalogued.file_name().unwrap_or(catalogued.as_os_str())),
                None => catalogued,
            };
            index.insert(id, self.shards.len());
            self.shards.push(ShardMap {
                path,
                series: Vec::new(),
                map: OnceLock::new(),
            });
        }
        for (k, s) in self.series.iter_mut().enumerate() {
            s.map = index[&s.shard];
            self.shards[s.map].series.push(k);
        }
    }

    /// The mapping of shard `k` (index into `self.shards`), checked and mapped on first use. Two
    /// threads racing here both check the file; the first mapping stored wins.
    fn shard_map(&self, k: usize) -> Result<&Mmap, DataError> {
        let slot = &self.shards[k];
        if let Some(map) = slot.map.get() {
            return Ok(map);
        }
        let series: Vec<&SeriesInfo> = slot.series.iter().map(|&i| &self.series[i]).collect();
        let (map, luts) = match &self.source {
            Some(source) => open_shard(&source(self.series[slot.series[0]].shard)?, &series)?,
            None => open_shard(&slot.path, &series)?,
        };
        for (s, l) in series.iter().zip(luts) {
            let _ = s.luts.set(l);
        }
        Ok(slot.map.get_or_init(|| map))
    }

    /// Asks `source` for each shard not mapped yet instead of using its catalogued path (see
    /// [`ShardSource`]); meant for a dataset from [`Dataset::open_lazy`].
    pub fn set_shard_source(&mut self, source: ShardSource) {
        self.source = Some(source);
    }

    /// The file of catalog shard `id` as this dataset reads it (after `shard_dir`), if the split uses it.
    pub fn shard_path(&self, id: u32) -> Option<PathBuf> {
        self.shards
            .iter()
            .find(|s| self.series[s.series[0]].shard == id)
            .map(|s| s.path.clone())
    }

    /// Catalog shard ids of the shards mapped so far, ascending.
    pub fn mapped_shards(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self
            .shards
            .iter()
            .filter(|s| s.map.get().is_some())
            .map(|s| self.series[s.series[0]].shard)
            .collect();
        ids.sort_unstable();
        ids
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn config(&self) -> &DataConfig {
        &self.cfg
    }

    /// Level of the manifest's samples (slice or series).
    pub fn level(&self) -> Level {
        self.level
    }

    pub fn channels(&self) -> u32 {
        self.cfg.channels()
    }

    /// [D, H, W] of a sample ([1, H, W] in 2D).
    pub fn extent(&self) -> [u32; 3] {
        self.cfg.extent()
    }

    /// Floats per sample: channels × D × H × W.
    pub fn sample_len(&self) -> usize {
        self.channels() as usize * self.extent().iter().map(|&n| n as usize).product::<usize>()
    }

    pub fn num_targets(&self) -> usize {
        self.targets.len()
    }

    /// (segment, slice index, slice row) of sample `i`.
    pub(super) fn locate(&self, i: usize) -> (&Segment, u32, Option<u64>) {
        let at = self.segments.partition_point(|s| s.first <= i) - 1;
        let seg = &self.segments[at];
        let k = (i - seg.first) as u32;
        (seg, seg.first_slice + k, seg.first_row.map(|r| r + k as u64))
    }

    pub fn meta(&self, i: usize) -> SampleMeta {
        let (seg, slice_index, slice_row) = self.locate(i);
        let s = &self.series[seg.series as usize];
        let key = |level: Level, name: &str, row: u32| {
            self.catalog
                .col_keys(level, name)
                .ok()
                .and_then(|k| k.get(row as usize))
                .map(|k| cell_text(k).to_string())
                .unwrap_or_default()
        };
        SampleMeta {
            series_row: s.row,
            patient_row: s.patient_row,
            slice_row,
            slice_index,
            shard: s.shard,
            series_key: key(Level::Series, "series_key", s.row),
            patient_key: key(Level::Patient, "patient_key", s.patient_row),
        }
    }

    /// Catalog shard index of sample `i` (for a shard-local sampler).
    /// Catalog series row of sample `i` (as `meta(i).series_row`, without building the keys).
    pub fn series_row_of(&self, i: usize) -> u32 {
        let (seg, ..) = self.locate(i);
        self.series[seg.series as usize].row
    }

    pub fn shard_of(&self, i: usize) -> u32 {
        let (seg, ..) = self.locate(i);
        self.series[seg.series as usize].shard
    }

    /// Targets of sample `i` in config order; `mask` is 0 where the label is unknown or the row is
    /// not in the label set (and the target then 0).
    pub fn target(&self, i: usize, out: &mut [f32], mask: &mut [f32]) {
        let (seg, _, slice_row) = self.locate(i);
        let s = &self.series[seg.series as usize];
        for (t, (o, m)) in self.targets.iter().zip(out.iter_mut().zip(mask.iter_mut())) {
            let value = self.label(t, s, slice_row);
            *o = value.unwrap_or(0.0) as f32;
            *m = if value.is_some() { 1.0 } else { 0.0 };
        }
    }

    /// Class of sample `i` for balanced sampling: its first target rounded (None when unknown).
    pub fn class_of(&self, i: usize) -> Option<u32> {
        let t = self.targets.first()?;
        let (seg, _, slice_row) = self.locate(i);
        let v = self.label(t, &self.series[seg.series as usize], slice_row)?;
        (v >= 0.0 && v.is_finite()).then(|| v.round() as u32)
    }

    /// The shard files as opened (after `shard_dir`), only those this dataset's series use.
    pub fn shard_paths(&self) -> Vec<PathBuf> {
        self.shards.iter().map(|s| s.path.clone()).collect()
    }

    /// Loads sample `i` into `out` (len `sample_len`, layout (C, D, H, W)). `aug`: Some(seed)
    /// applies augmentation drawn from that seed only; None is the deterministic centre transform.
    pub fn load(&self, i: usize, aug: Option<u64>, out: &mut [f32]) -> Result<SampleTransform, DataError> {
        if i >= self.len || out.len() != self.sample_len() {
            return Err(DataError::Sample {
                index: i,
                len: self.len,
                buffer: out.len(),
                needed: self.sample_len(),
            });
        }
        let (seg, slice_index, slice_row) = self.locate(i);
        let s = &self.series[seg.series as usize];
        let vol = self.volume_of(s)?;
        let mode = self.cfg.mode;
        let centre_slice = match mode {
            SampleMode::Slice | SampleMode::Slice25d => Some(slice_index),
            SampleMode::Crop3d => slice_row.map(|_| slice_index),
            SampleMode::Volume3d => None,
        };
        let grid = Grid {
            mode,
            src_shape: s.shape,
            src_spacing: s.spacing,
            out_extent: self.extent(),
            out_spacing: match self.cfg.fit && !mode.is_3d() {
                true => Some(fit_spacing(s.shape, s.spacing, self.extent())),
                false => self.spacing,
            },
            centre_slice,
        };
        let mut augmentation = match aug {
            Some(seed) => Augmentation::draw(&self.cfg.augment, seed, mode.is_3d()),
            None => Augmentation::none(),
        };
        if let (Some(seed), true, SampleMode::Crop3d) = (aug, self.masks.is_some(), mode) {
            self.centre_on_foreground(seg.series as usize, seed, &grid, &mut augmentation)?;
        }
        let affine = grid.affine(&augmentation);
        resample(
            &vol,
            mode,
            &affine,
            self.extent(),
            self.cfg.context,
            &self.cfg.windows,
            &augmentation,
            out,
        );
        Ok(SampleTransform {
            series_row: s.row,
            slice_index,
            affine,
            flips: augmentation.flips,
        })
    }
}

impl Dataset {
    /// Series `s`'s stored values as the resampler reads them (its shard mapped on first use).
    pub(super) fn volume_of<'a>(&'a self, s: &'a SeriesInfo) -> Result<Volume<'a>, DataError> {
        let map = self.shard_map(s.map)?;
        let bytes = &map[s.offset as usize..(s.offset + s.length) as usize];
        let mapped = match &s.plan.pipeline {
            Pipeline::Hu => None,
            Pipeline::Normalised { per_image, .. } => {
                let luts = s.luts.get_or_init(Luts::default);
                let norms = s.norms.get_or_init(|| {
                    let image = s.shape[1] * s.shape[2];
                    if *per_image {
                        (0..s.shape[0])
                            .map(|k| s.plan.norm(bytes, luts, k * image, image))
                            .collect()
                    } else {
                        vec![s.plan.norm(bytes, luts, 0, s.shape[0] * image)]
                    }
                });
                Some(Mapped {
                    plan: &s.plan,
                    luts,
                    norms,
                })
            }
        };
        Ok(Volume {
            bytes,
            shape: s.shape,
            mapped,
        })
    }
}

/// A series' volume as stored in its pack, for outputs aligned with the series (overlays, maps).
#[derive(Clone, Debug)]
pub struct SeriesVolume {
    pub series_row: u32,
    /// (slices, rows, cols)
    pub shape: [usize; 3],
    /// mm (slice, row, col)
    pub spacing: [f64; 3],
    /// (slices, rows, cols): HU for CT; for other series, display units: the intensity the model
    /// reads (after the Modality and VOI LUTs, MONOCHROME1 inverted so denser is brighter, colour as
    /// luma) mapped from the normalisation's clip range (per image or per series) onto 0–1000.
    pub values: Vec<i16>,
    /// The window (center, width) of `values` when they are display units; None for HU.
    pub display_window: Option<[f32; 2]>,
}

/// The span of the display units of a non-HU [`SeriesVolume`].
pub const DISPLAY_UNITS: f32 = 1000.0;

impl Dataset {
    /// The catalog the dataset was opened from.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The whole pack volume of sample `i`'s series.
    pub fn series_volume(&self, i: usize) -> Result<SeriesVolume, DataError> {
        if i >= self.len {
            return Err(DataError::Sample {
                index: i,
                len: self.len,
                buffer: 0,
                needed: 0,
            });
        }
        let (seg, ..) = self.locate(i);
        let s = &self.series[seg.series as usize];
        let map = self.shard_map(s.map)?;
        let bytes = &map[s.offset as usize..(s.offset + s.length) as usize];
        let (values, display_window) = match &s.plan.pipeline {
            Pipeline::Hu => (
                bytes
                    .chunks_exact(2)
                    .map(|b| i16::from_le_bytes([b[0], b[1]]))
                    .collect(),
                None,
            ),
            Pipeline::Normalised { per_image, .. } => {
                let luts = s.luts.get_or_init(Luts::default);
                let image = s.shape[1] * s.shape[2];
                let (parts, voxels) = match per_image {
                    true => (s.shape[0], image),
                    false => (1, s.shape[0] * image),
                };
                let mut values = Vec::with_capacity(s.shape[0] * image);
                for k in 0..parts {
                    let norm = s.plan.norm(bytes, luts, k * voxels, voxels);
                    let span = (norm.high - norm.low).max(f64::MIN_POSITIVE);
                    values.extend((k * voxels..(k + 1) * voxels).map(|v| {
                        let x = s
                            .plan
                            .value(s.plan.raw(bytes, v), luts)
                            .clamp(norm.low, norm.high);
                        ((x - norm.low) / span * DISPLAY_UNITS as f64).round() as i16
                    }));
                }
                (values, Some([DISPLAY_UNITS / 2.0, DISPLAY_UNITS]))
            }
        };
        Ok(SeriesVolume {
            series_row: s.row,
            shape: s.shape,
            spacing: s.spacing,
            values,
            display_window,
        })
    }
}

/// Whether a series must have its pixel bytes in its shard (training, evaluation) or may be
/// described by its table alone (planning).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Pixels {
    Stored,
    Described,
}

/// Collects the used series and the sample segments while the manifest rows are walked.
struct Builder<'a> {
    cat: &'a Catalog,
    intensity: &'a IntensityConfig,
    pixels: Pixels,
    n_slices: &'a [u32],
    by_row: HashMap<u32, u32>,
    series: Vec<SeriesInfo>,
    segments: Vec<Segment>,
    len: usize,
}

impl<'a> Builder<'a> {
    fn new(
        cat: &'a Catalog,
        intensity: &'a IntensityConfig,
        pixels: Pixels,
    ) -> Result<Builder<'a>, DataError> {
        Ok(Builder {
            cat,
            intensity,
            pixels,
            n_slices: cat.col_u32(Level::Series, "n_slices")?,
            by_row: HashMap::new(),
            series: Vec::new(),
            segments: Vec::new(),
            len: 0,
        })
    }

    fn add(&mut self, series_row: u32, slice: u32, slice_row: Option<u64>) -> Result<(), DataError> {
        let idx = match self.by_row.get(&series_row) {
            Some(&i) => i,
            None => {
                let info = series_info(self.cat, series_row, self.intensity, self.pixels)?;
                let i = self.series.len() as u32;
                self.series.push(info);
                self.by_row.insert(series_row, i);
                i
            }
        };
        let extends = self.segments.last().is_some_and(|seg| {
            let k = (self.len - seg.first) as u32;
            seg.series == idx
                && seg.first_slice + k == slice
                && seg.first_row.map(|r| r + k as u64) == slice_row
                && slice_row.is_some()
        });
        if !extends {
            self.segments.push(Segment {
                first: self.len,
                series: idx,
                first_slice: slice,
                first_row: slice_row,
            });
        }
        self.len += 1;
        Ok(())
    }
}

/// Reads and checks one series row: its intensity plan from the recorded columns (refused with
/// the reason when none applies), bytes = voxels × samples × stored size. With `Pixels::Described`,
/// a series that has no pixel bytes (length 0) takes that size.
fn series_info(
    cat: &Catalog,
    row: u32,
    intensity: &IntensityConfig,
    pixels: Pixels,
) -> Result<SeriesInfo, DataError> {
    let r = row as usize;
    let key = cell_text(&cat.col_keys(Level::Series, "series_key")?[r]).to_string();
    if cat.col_u32(Level::Series, PRESENTATION_COLUMN).is_err() {
        return Err(DataError::Unsupported {
            series: key,
            reason: "the catalog was built from packs of an older shard format, which lack the \
                     presentation columns (VOI LUT, window function) intensities are decided from: \
                     repack with this version of medtrain (`medtrain pack`), then rebuild the catalog"
                .into(),
        });
    }
    let code = |name: &str| -> Result<String, DataError> {
        Ok(cell_text(&cat.tables.codes(&format!("series/{name}"))?[r]).to_string())
    };
    let f64col = |name| cat.col_f64(Level::Series, name).map(|c| c[r]);
    let recorded = Recorded {
        modality: code("modality")?,
        transform: code("transform")?,
        dtype: code("dtype")?,
        samples_per_pixel: cat.tables.u8s("series/samples_per_pixel")?[r],
        photometric: code("photometric")?,
        rescale_slope: f64col("rescale_slope")?,
        rescale_intercept: f64col("rescale_intercept")?,
        window_center: f64col("window_center")?,
        window_width: f64col("window_width")?,
        voi_function: code("voi_function")?,
        modality_lut_first: f64col("modality_lut_first")?,
        modality_lut_entries: cat.col_u32(Level::Series, "modality_lut_entries")?[r],
        voi_lut_first: f64col("voi_lut_first")?,
        voi_lut_entries: cat.col_u32(Level::Series, "voi_lut_entries")?[r],
    };
    let plan = plan(&recorded, intensity).map_err(|reason| DataError::Unsupported {
        series: key.clone(),
        reason,
    })?;
    let u32col = |name| cat.col_u32(Level::Series, name).map(|c| c[r]);
    let u64col = |name| cat.col_u64(Level::Series, name).map(|c| c[r]);
    let shape = [
        u32col("n_slices")? as usize,
        u32col("rows")? as usize,
        u32col("cols")? as usize,
    ];
    let voxels = shape.iter().map(|&n| n as u64).product::<u64>();
    let element = (plan.samples * plan.stored.bytes()) as u64;
    let length = match u64col("data_length")? {
        0 if pixels == Pixels::Described => voxels * element,
        stored => stored,
    };
    if voxels * element != length || voxels == 0 {
        return Err(DataError::Unsupported {
            series: key,
            reason: format!(
                "{shape:?} voxels of {} ({} sample(s)) do not fill its {length} pixel bytes",
                recorded.dtype, plan.samples
            ),
        });
    }
    let pixel = cat.col_f64(Level::Series, "pixel_spacing")?;
    let slice_spacing = cat.col_f64(Level::Series, "slice_spacing")?[r];
    let shard = u32col("shard")?;
    if shard as usize >= cat.state.shards.len() {
        return Err(DataError::Unsupported {
            series: key,
            reason: format!("shard index {shard} is not in the catalog's shard list"),
        });
    }
    Ok(SeriesInfo {
        row,
        patient_row: u32col("patient_row")?,
        shard,
        map: 0,
        offset: u64col("data_offset")?,
        length,
        shape,
        spacing: [
            positive_or(slice_spacing, 1.0),
            positive_or(pixel[2 * r], 1.0),
            positive_or(pixel[2 * r + 1], 1.0),
        ],
        slice_start: u64col("slice_start")?,
        dataset: cell_text(&cat.col_keys(Level::Series, "dataset")?[r]).to_string(),
        plan,
        luts: OnceLock::new(),
        norms: OnceLock::new(),
    })
}
