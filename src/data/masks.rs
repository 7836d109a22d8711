//! Pixel labels of a segmentation dataset (`[data] masks`): the mask shards of one mask label set,
//! opened on first use, and each sample's target read through the sample's own affine with
//! nearest-neighbour lookup, so a patch's mask follows its crop, zoom, rotation and flips exactly
//! (on the pack's grid, without resampling, the target is the stored mask voxel for voxel).
//!
//! A voxel is foreground when its label value is not 0, or, for a set whose values are readers' bits
//! (LIDC), when at least the set's agreement level of readers outlined it. Every series of the split
//! must have a mask: an unlabelled series is not background.

use super::dataset::{Dataset, SampleTransform, SeriesInfo};
use super::patches::{draw_foreground, Foreground};
use super::transform::{Affine, Augmentation, Grid};
use super::DataError;
use crate::catalog::columns::{cell_text, Level};
use crate::catalog::view::Catalog;
use crate::pack::masks::{MaskShard, MaskView};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;

/// Default fraction of foreground-centred training patches (nnU-Net's 1/3).
pub const DEFAULT_FOREGROUND: f64 = 1.0 / 3.0;

/// Where each series' mask is, and what has been read of it.
pub(super) struct MaskSource {
    name: String,
    files: Vec<PathBuf>,
    opened: Vec<OnceLock<Result<MaskShard, String>>>,
    /// Per dataset series: (mask shard index, series key).
    series: Vec<(usize, String)>,
    agree: Option<u32>,
    foreground: Vec<OnceLock<Foreground>>,
}

impl MaskSource {
    /// The newest version of mask set `name`, resolved for `series` (the dataset's, in order).
    pub(super) fn open(
        catalog: &Catalog,
        name: &str,
        series: &[SeriesInfo],
    ) -> Result<MaskSource, DataError> {
        let label = |reason: String| DataError::Label {
            name: name.to_string(),
            reason,
        };
        let set = catalog.label_set(name, None).ok_or_else(|| {
            label("no such label set in the catalog (`catalog labels masks` imports one)".into())
        })?;
        let masks =
            set.meta.masks.as_ref().ok_or_else(|| {
                label("is not a mask label set: its rows are values, not pixel labels".into())
            })?;
        let dir = catalog.dir.join(&masks.dir);
        let by_pack: HashMap<&str, usize> = masks
            .shards
            .iter()
            .enumerate()
            .map(|(k, m)| (m.shard.as_str(), k))
            .collect();
        let keys = catalog.col_keys(Level::Series, "series_key")?;
        let mut resolved = Vec::with_capacity(series.len());
        let mut missing = Vec::new();
        for s in series {
            let pack = PathBuf::from(&catalog.state.shards[s.shard as usize].path);
            let file = pack
                .file_name()
                .map(|f| f.to_string_lossy().to_string())
                .unwrap_or_default();
            let key = cell_text(&keys[s.row as usize]).to_string();
            match by_pack.get(file.as_str()) {
                Some(&k) => resolved.push((k, key)),
                None => missing.push(key),
            }
        }
        let src = MaskSource {
            name: name.to_string(),
            files: masks.shards.iter().map(|m| dir.join(&m.file)).collect(),
            opened: masks.shards.iter().map(|_| OnceLock::new()).collect(),
            foreground: series.iter().map(|_| OnceLock::new()).collect(),
            series: resolved,
            agree: masks.readers_agree,
        };
        // A series whose pack shard has a mask shard may still have no volume in it.
        let mut held: HashMap<usize, std::collections::HashSet<&str>> = HashMap::new();
        for (m, key) in &src.series {
            if !held.contains_key(m) {
                let keys = src
                    .shard(*m)?
                    .entries
                    .iter()
                    .map(|e| e.series_key.as_str())
                    .collect();
                held.insert(*m, keys);
            }
            if !held[m].contains(key.as_str()) {
                missing.push(key.clone());
            }
        }
        if let Some(first) = missing.first() {
            return Err(label(format!(
                "{} series of the split have no mask (the first: {first}); an unlabelled series is \
                 not background: split on the series the set covers",
                missing.len()
            )));
        }
        Ok(src)
    }

    /// Mask shard `m`, opened (and checked) on first use.
    fn shard(&self, m: usize) -> Result<&MaskShard, DataError> {
        self.opened[m]
            .get_or_init(|| MaskShard::open(&self.files[m]).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| DataError::Label {
                name: self.name.clone(),
                reason: e.clone(),
            })
    }

    /// Series `k`'s mask, checked against the series' shape.
    fn view(&self, k: usize, shape: [usize; 3]) -> Result<MaskView<'_>, DataError> {
        let (m, key) = &self.series[k];
        let shard = self.shard(*m)?;
        let bad = |reason: String| DataError::Label {
            name: self.name.clone(),
            reason,
        };
        let (view, dims) = shard.volume(key).ok_or_else(|| {
            bad(format!(
                "series {key} has no mask in {}",
                self.files[*m].display()
            ))
        })?;
        if dims != shape {
            return Err(bad(format!(
                "series {key}: mask of {dims:?} voxels, the series has {shape:?}"
            )));
        }
        Ok(view)
    }

    fn is_foreground(&self, v: u16) -> bool {
        match self.agree {
            Some(k) => v.count_ones() >= k,
            None => v != 0,
        }
    }
}

impl Dataset {
    /// Whether the dataset has pixel labels (`[data] masks`).
    pub fn has_masks(&self) -> bool {
        self.masks.is_some()
    }

    fn mask_source(&self) -> Result<&MaskSource, DataError> {
        self.masks.as_ref().ok_or_else(|| DataError::Config {
            key: "data.masks",
            reason: "this dataset has no mask label set".into(),
        })
    }

    /// The foreground voxels of series `k` (index into the dataset's series), read once.
    fn foreground_of(&self, k: usize) -> Result<&Foreground, DataError> {
        let src = self.mask_source()?;
        if let Some(fg) = src.foreground[k].get() {
            return Ok(fg);
        }
        let view = src.view(k, self.series[k].shape)?;
        let fg = Foreground::of((0..view.len()).map(|i| src.is_foreground(view.get(i)) as u16));
        Ok(src.foreground[k].get_or_init(|| fg))
    }

    /// Foreground oversampling of a crop3d training patch: with probability `[data] foreground`
    /// (drawn from the sample's augmentation seed), centres the crop on a foreground voxel of the
    /// series, as far as the crop still fits inside it.
    pub(super) fn centre_on_foreground(
        &self,
        k: usize,
        seed: u64,
        grid: &Grid,
        aug: &mut Augmentation,
    ) -> Result<(), DataError> {
        let fraction = self.cfg.foreground.unwrap_or(DEFAULT_FOREGROUND);
        let fg = self.foreground_of(k)?;
        let (_, voxel) = draw_foreground(seed, 0, 0, fg, fraction);
        let Some(v) = voxel else { return Ok(()) };
        let [_, rows, cols] = grid.src_shape;
        let at = [v / (rows * cols), v / cols % rows, v % cols];
        let out_sp = grid.out_spacing.unwrap_or(grid.src_spacing);
        for a in 0..3 {
            let half = (grid.out_extent[a] as f64 - 1.0) / 2.0 * out_sp[a] / grid.src_spacing[a];
            let free = grid.src_shape[a] as f64 - 1.0 - 2.0 * half;
            if free > 0.0 {
                aug.crop[a] = ((at[a] as f64 - half) / free).clamp(0.0, 1.0);
            }
        }
        Ok(())
    }

    /// The mask of sample `i` on its output grid (D, H, W): 1 where the voxel that `t`'s affine maps
    /// each output voxel to (rounded to the nearest) is foreground, 0 elsewhere and outside the
    /// series.
    pub fn mask_target(&self, i: usize, t: &SampleTransform, out: &mut [f32]) -> Result<(), DataError> {
        let (seg, ..) = self.locate(i);
        self.mask_on(
            seg.series as usize,
            &t.affine,
            self.extent(),
            !self.cfg.mode.is_3d(),
            out,
        )
    }

    /// [`Dataset::mask_target`] for series `k` through any affine and extent; `two_d`: the slice is
    /// the affine's constant first row.
    pub(super) fn mask_on(
        &self,
        k: usize,
        m: &Affine,
        extent: [u32; 3],
        two_d: bool,
        out: &mut [f32],
    ) -> Result<(), DataError> {
        let src = self.mask_source()?;
        let shape = self.series[k].shape;
        let view = src.view(k, shape)?;
        let [d, h, w] = extent.map(|n| n as usize);
        debug_assert_eq!(out.len(), d * h * w);
        let inside = |v: f64, n: usize| {
            let r = v.round();
            (r >= 0.0 && r < n as f64).then_some(r as usize)
        };
        for z in 0..d {
            for y in 0..h {
                let (zf, yf) = (z as f64, y as f64);
                let base = [0, 1, 2].map(|i| m[i][0] * zf + m[i][1] * yf + m[i][3]);
                for x in 0..w {
                    let xf = x as f64;
                    let sz = if two_d { m[0][3] } else { base[0] + m[0][2] * xf };
                    let at = match (
                        inside(sz, shape[0]),
                        inside(base[1] + m[1][2] * xf, shape[1]),
                        inside(base[2] + m[2][2] * xf, shape[2]),
                    ) {
                        (Some(k), Some(r), Some(c)) => Some((k * shape[1] + r) * shape[2] + c),
                        _ => None,
                    };
                    out[(z * h + y) * w + x] =
                        at.is_some_and(|v| src.is_foreground(view.get(v))) as u8 as f32;
                }
            }
        }
        Ok(())
    }
}

/// A whole series on the model's grid (the configured output spacing, the whole series covered),
/// with its mask on the same grid (all background when the dataset has no masks): what
/// sliding-window inference and per-case metrics read.
pub struct Case {
    pub series_row: u32,
    pub patient_row: u32,
    pub series_key: String,
    /// (channels, D, H, W)
    pub input: Vec<f32>,
    /// (D, H, W)
    pub truth: Vec<bool>,
    pub dims: [usize; 3],
    /// mm (z, y, x)
    pub spacing: [f64; 3],
    /// The series' pack grid (slices, rows, cols).
    pub shape: [usize; 3],
    /// How the model grid was cut from the pack grid: one transform of the whole grid (3D modes), or
    /// one per slice of the model grid (2D modes, each of extent (1, H, W)).
    pub transforms: Vec<super::SampleTransform>,
}

impl Dataset {
    /// The mask of sample `i`'s series on the pack's own grid (slices, rows, cols).
    pub fn native_mask(&self, i: usize) -> Result<Vec<bool>, DataError> {
        let k = self.locate(i).0.series as usize;
        let shape = self.series[k].shape;
        let src = self.mask_source()?;
        let view = src.view(k, shape)?;
        Ok((0..view.len()).map(|v| src.is_foreground(view.get(v))).collect())
    }

    /// One sample of each series in the split, in order: the cases of a segmentation evaluation.
    pub fn case_samples(&self) -> Vec<usize> {
        let mut seen = std::collections::HashSet::new();
        (0..self.len())
            .filter(|&i| seen.insert(self.locate(i).0.series))
            .collect()
    }

    /// The case of sample `i`'s series. 3D modes resample the whole volume onto the output spacing in
    /// one grid; 2D modes take every slice at the output's in-plane spacing.
    pub fn case(&self, i: usize) -> Result<Case, DataError> {
        let (seg, ..) = self.locate(i);
        let k = seg.series as usize;
        let s = &self.series[k];
        let vol = self.volume_of(s)?;
        let three_d = self.cfg.mode.is_3d();
        let out_sp = match (self.cfg.fit && !three_d, self.spacing) {
            (true, _) => super::dataset::fit_spacing(s.shape, s.spacing, self.extent()),
            (false, Some(sp)) if three_d => sp,
            (false, Some(sp)) => [s.spacing[0], sp[1], sp[2]],
            (false, None) => s.spacing,
        };
        let dims: [usize; 3] =
            std::array::from_fn(|a| ((s.shape[a] as f64 * s.spacing[a] / out_sp[a]).round() as usize).max(1));
        let plane: usize = dims.iter().product();
        let channels = self.channels() as usize;
        let mut input = vec![0.0f32; channels * plane];
        let mut truth = vec![0.0f32; plane];
        let aug = Augmentation::none();
        let (grids, extent) = match three_d {
            true => (vec![(None, 0)], dims.map(|n| n as u32)),
            false => (
                (0..dims[0]).map(|z| (Some(z as u32), z)).collect(),
                [1, dims[1] as u32, dims[2] as u32],
            ),
        };
        let layer = (extent[1] * extent[2] * extent[0]) as usize;
        let mut buf = vec![0.0f32; channels * layer];
        let mut transforms = Vec::with_capacity(grids.len());
        for (centre_slice, z) in grids {
            let grid = Grid {
                mode: if three_d {
                    super::SampleMode::Crop3d
                } else {
                    super::SampleMode::Slice
                },
                src_shape: s.shape,
                src_spacing: s.spacing,
                out_extent: extent,
                out_spacing: Some(out_sp),
                centre_slice,
            };
            let affine = grid.affine(&aug);
            transforms.push(super::SampleTransform {
                series_row: s.row,
                slice_index: centre_slice.unwrap_or(s.shape[0] as u32 / 2),
                affine,
                flips: [false; 3],
            });
            super::transform::resample(
                &vol,
                grid.mode,
                &affine,
                extent,
                0,
                &self.cfg.windows,
                &aug,
                &mut buf,
            );
            for c in 0..channels {
                let at = c * plane + z * layer;
                input[at..at + layer].copy_from_slice(&buf[c * layer..(c + 1) * layer]);
            }
            if self.masks.is_some() {
                self.mask_on(
                    k,
                    &affine,
                    extent,
                    !three_d,
                    &mut truth[z * layer..(z + 1) * layer],
                )?;
            }
        }
        let meta = self.meta(i);
        Ok(Case {
            series_row: s.row,
            patient_row: meta.patient_row,
            series_key: meta.series_key,
            input,
            truth: truth.into_iter().map(|v| v != 0.0).collect(),
            dims,
            spacing: out_sp,
            shape: s.shape,
            transforms,
        })
    }
}
