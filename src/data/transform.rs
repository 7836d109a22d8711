//! Per-sample geometry and intensity: one affine from the output grid to pack voxel index
//! coordinates (centre crop/resize with spacing, augmentation composed in), bilinear or trilinear
//! interpolation straight from the mapped int16 HU, then HU windows to f32.
//!
//! Coordinates are (z, y, x) on the output side and (slice, row, col) on the source side. With no
//! spacing change, no augmentation and the native size, the affine is exactly the identity.

use super::config::{AugmentConfig, SampleMode};
use super::intensity::{Luts, Norm, Plan};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// HU of everything outside the volume (air), before windowing.
pub const OUTSIDE_HU: f32 = -1024.0;

/// A series as mapped bytes (little-endian), (slices, rows, cols[, samples]): int16 HU, or any
/// stored type read through its intensity plan (`mapped`).
#[derive(Clone, Copy)]
pub struct Volume<'a> {
    pub bytes: &'a [u8],
    pub shape: [usize; 3],
    /// None: int16 HU.
    pub mapped: Option<Mapped<'a>>,
}

/// How a non-HU series' stored values become z-scored intensities, per voxel, from the mapping.
#[derive(Clone, Copy)]
pub struct Mapped<'a> {
    pub plan: &'a Plan,
    pub luts: &'a Luts,
    /// One per slice (per-image normalisation) or one for the series.
    pub norms: &'a [Norm],
}

impl Mapped<'_> {
    #[inline]
    fn norm(&self, k: usize) -> &Norm {
        &self.norms[if self.norms.len() == 1 { 0 } else { k }]
    }
}

impl Volume<'_> {
    /// HU at an integer voxel (air outside); for a mapped series its normalised intensity (the low
    /// clip outside) of channel `ch` (which only an RGB plan tells apart).
    #[inline(always)]
    pub fn hu(&self, k: i64, r: i64, c: i64, ch: usize) -> f32 {
        let [n, rows, cols] = self.shape;
        if let Some(m) = &self.mapped {
            let kk = k.clamp(0, n as i64 - 1) as usize;
            if k < 0 || r < 0 || c < 0 || k >= n as i64 || r >= rows as i64 || c >= cols as i64 {
                return m.norm(kk).outside();
            }
            let i = (kk * rows + r as usize) * cols + c as usize;
            return m
                .norm(kk)
                .apply(m.plan.value(m.plan.channel_raw(self.bytes, i, ch), m.luts));
        }
        if k < 0 || r < 0 || c < 0 || k >= n as i64 || r >= rows as i64 || c >= cols as i64 {
            return OUTSIDE_HU;
        }
        let i = 2 * ((k as usize * rows + r as usize) * cols + c as usize);
        i16::from_le_bytes([self.bytes[i], self.bytes[i + 1]]) as f32
    }

    /// Bilinear in the plane of slice `k` (an integer weight of 0 never reads its neighbour's
    /// value into the result, so integer points are exact).
    #[inline(always)]
    pub fn bilinear(&self, k: i64, y: f64, x: f64, ch: usize) -> f32 {
        let (y0, x0) = (y.floor(), x.floor());
        let (fy, fx) = ((y - y0) as f32, (x - x0) as f32);
        let (r, c) = (y0 as i64, x0 as i64);
        let top = lerp(self.hu(k, r, c, ch), self.hu(k, r, c + 1, ch), fx);
        let bottom = lerp(self.hu(k, r + 1, c, ch), self.hu(k, r + 1, c + 1, ch), fx);
        lerp(top, bottom, fy)
    }

    #[inline(always)]
    pub fn trilinear(&self, z: f64, y: f64, x: f64, ch: usize) -> f32 {
        let z0 = z.floor();
        let fz = (z - z0) as f32;
        let k = z0 as i64;
        lerp(self.bilinear(k, y, x, ch), self.bilinear(k + 1, y, x, ch), fz)
    }
}

#[inline]
fn lerp(a: f32, b: f32, t: f32) -> f32 {
    if t == 0.0 {
        a
    } else {
        a * (1.0 - t) + b * t
    }
}

/// HU window (center, width) to [0, 1].
#[inline]
pub fn hu_window(hu: f32, window: [f32; 2]) -> f32 {
    let low = window[0] - window[1] / 2.0;
    ((hu - low) / window[1]).clamp(0.0, 1.0)
}

/// The random part of one sample's transform, drawn from its seed only.
#[derive(Clone, Debug, PartialEq)]
pub struct Augmentation {
    /// Mirror (z, y, x) about the output centre.
    pub flips: [bool; 3],
    /// In-plane rotation, radians.
    pub rotate: f64,
    /// Zoom: the sampled region shrinks by this factor (content looks larger).
    pub zoom: f64,
    /// Shift of the sampled region, mm, (z, y, x).
    pub shift_mm: [f64; 3],
    /// v (1 + gain) + bias on windowed values.
    pub gain: f32,
    pub bias: f32,
    /// Crop centre as a fraction of the free range per axis (crop3d), in [0, 1].
    pub crop: [f64; 3],
}

impl Augmentation {
    /// No augmentation: the deterministic centre transform.
    pub fn none() -> Augmentation {
        Augmentation {
            flips: [false; 3],
            rotate: 0.0,
            zoom: 1.0,
            shift_mm: [0.0; 3],
            gain: 0.0,
            bias: 0.0,
            crop: [0.5; 3],
        }
    }

    /// Draws every parameter in a fixed order (whatever is enabled), so a seed means one transform.
    pub fn draw(cfg: &AugmentConfig, seed: u64, three_d: bool) -> Augmentation {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut sym = |range: f64| rng.gen_range(-1.0..=1.0) * range;
        let flip_lr = sym(1.0) < 0.0 && cfg.flip_lr;
        let flip_ud = sym(1.0) < 0.0 && cfg.flip_ud;
        let rotate = sym(cfg.rotate_deg).to_radians();
        let zoom = 1.0 + sym(cfg.scale);
        let shift = [
            sym(cfg.translate_mm),
            sym(cfg.translate_mm),
            sym(cfg.translate_mm),
        ];
        let gain = sym(cfg.intensity as f64) as f32;
        let bias = sym(cfg.intensity as f64) as f32;
        let crop = [0.5 + sym(0.5), 0.5 + sym(0.5), 0.5 + sym(0.5)];
        Augmentation {
            flips: [false, flip_ud, flip_lr],
            rotate,
            zoom,
            shift_mm: [if three_d { shift[0] } else { 0.0 }, shift[1], shift[2]],
            gain,
            bias,
            crop,
        }
    }

    #[inline]
    pub fn intensity(&self, v: f32) -> f32 {
        if self.gain == 0.0 && self.bias == 0.0 {
            v
        } else {
            (v * (1.0 + self.gain) + self.bias).clamp(0.0, 1.0)
        }
    }
}

/// What the affine is built from: the source series and the output grid.
#[derive(Clone, Debug)]
pub struct Grid {
    pub mode: SampleMode,
    pub src_shape: [usize; 3], // (slices, rows, cols)
    pub src_spacing: [f64; 3], // mm (slice, row, col)
    pub out_extent: [u32; 3],  // (D, H, W); D = 1 in 2D
    /// Output spacing in mm (z, y, x); None = the source's (z unused in 2D).
    pub out_spacing: Option<[f64; 3]>,
    /// Slice the sample is centred on (2D modes; crop3d of a slice-level sample).
    pub centre_slice: Option<u32>,
}

/// Output (z, y, x, 1) → source (slice, row, col).
pub type Affine = [[f64; 4]; 3];

impl Grid {
    /// Output spacing per axis in mm (z, y, x).
    fn out_spacing(&self) -> [f64; 3] {
        let s = self.src_spacing;
        match (self.mode, &self.out_spacing) {
            (SampleMode::Volume3d, _) => {
                let n = self.src_shape;
                let e = self.out_extent;
                // The native extent keeps the native spacing exactly (identity affine).
                [0, 1, 2].map(|a| {
                    if n[a] == e[a] as usize {
                        s[a]
                    } else {
                        s[a] * n[a] as f64 / e[a] as f64
                    }
                })
            }
            (_, Some(sp)) => *sp,
            (_, None) => s,
        }
    }

    /// The affine of one sample: output offsets from the grid centre in mm, flipped, rotated in
    /// plane, zoomed and shifted, divided by the source spacing, around the source centre.
    pub fn affine(&self, aug: &Augmentation) -> Affine {
        let two_d = !self.mode.is_3d();
        let out_sp = self.out_spacing();
        let src_sp = self.src_spacing;
        let c_out = self.out_extent.map(|n| (n as f64 - 1.0) / 2.0);
        let c_src = self.source_centre(aug, out_sp);
        // Linear part, mm → mm: zoom · rotation(y, x) · flips · diag(out spacing).
        let (sin, cos) = aug.rotate.sin_cos();
        let rot = [[1.0, 0.0, 0.0], [0.0, cos, -sin], [0.0, sin, cos]];
        let mut lin = [[0.0; 3]; 3];
        for (i, row) in lin.iter_mut().enumerate() {
            for (j, cell) in row.iter_mut().enumerate() {
                let flip = if aug.flips[j] { -1.0 } else { 1.0 };
                *cell = rot[i][j] / aug.zoom * flip * out_sp[j] / src_sp[i];
            }
        }
        let mut m = [[0.0; 4]; 3];
        for i in 0..3 {
            let mut t = c_src[i] + aug.shift_mm[i] / src_sp[i];
            for j in 0..3 {
                m[i][j] = lin[i][j];
                t -= lin[i][j] * c_out[j];
            }
            m[i][3] = t;
        }
        if two_d {
            m[0] = [0.0, 0.0, 0.0, c_src[0]];
        }
        m
    }

    /// Source point the output centre maps to (before the shift).
    fn source_centre(&self, aug: &Augmentation, out_sp: [f64; 3]) -> [f64; 3] {
        let mut c = self.src_shape.map(|n| (n as f64 - 1.0) / 2.0);
        if self.mode == SampleMode::Crop3d {
            // Random crop: the centre anywhere the crop still fits (the middle where it does not).
            for a in 0..3 {
                let half = (self.out_extent[a] as f64 - 1.0) / 2.0 * out_sp[a] / self.src_spacing[a];
                let free = self.src_shape[a] as f64 - 1.0 - 2.0 * half;
                if free > 0.0 {
                    c[a] = half + free * aug.crop[a];
                }
            }
        }
        if let Some(k) = self.centre_slice {
            c[0] = k as f64;
        }
        c
    }
}

/// Fills one sample (C, D, H, W) from `vol` through `m`. `windows` make the channels; in 2.5D
/// each of the `neighbours` slices (offsets −context..=context, clamped) comes first:
/// channel = neighbour × windows + window.
#[allow(clippy::too_many_arguments)]
pub fn resample(
    vol: &Volume,
    mode: SampleMode,
    m: &Affine,
    extent: [u32; 3],
    context: u32,
    windows: &[[f32; 2]],
    aug: &Augmentation,
    out: &mut [f32],
) {
    // One loop compiled twice: the RGB reads stay out of the CT and grey loop.
    match vol.mapped.is_some_and(|m| m.plan.rgb) {
        true => resample_as::<true>(vol, mode, m, extent, context, windows, aug, out),
        false => resample_as::<false>(vol, mode, m, extent, context, windows, aug, out),
    }
}

/// [`resample`]; `RGB`: window `wi` reads channel `wi` (validation makes it 3 windows), else every
/// window reads channel 0.
#[allow(clippy::too_many_arguments)]
fn resample_as<const RGB: bool>(
    vol: &Volume,
    mode: SampleMode,
    m: &Affine,
    extent: [u32; 3],
    context: u32,
    windows: &[[f32; 2]],
    aug: &Augmentation,
    out: &mut [f32],
) {
    let [d, h, w] = extent.map(|n| n as usize);
    let plane = d * h * w;
    let nw = windows.len();
    let offsets: Vec<i64> = match mode {
        SampleMode::Slice25d => (-(context as i64)..=context as i64).collect(),
        _ => vec![0],
    };
    let last = vol.shape[0] as i64 - 1;
    for (j, &off) in offsets.iter().enumerate() {
        let k = (m[0][3].round() as i64 + off).clamp(0, last.max(0));
        for z in 0..d {
            for y in 0..h {
                let (zf, yf) = (z as f64, y as f64);
                let base = [0, 1, 2].map(|i| m[i][0] * zf + m[i][1] * yf + m[i][3]);
                for x in 0..w {
                    let xf = x as f64;
                    let (sy, sx) = (base[1] + m[1][2] * xf, base[2] + m[2][2] * xf);
                    let read = |ch| match mode.is_3d() {
                        true => vol.trilinear(base[0] + m[0][2] * xf, sy, sx, ch),
                        false => vol.bilinear(k, sy, sx, ch),
                    };
                    let hu0 = read(0);
                    let at = (z * h + y) * w + x;
                    for (wi, &win) in windows.iter().enumerate() {
                        let hu = if RGB && wi > 0 { read(wi) } else { hu0 };
                        out[(j * nw + wi) * plane + at] = if vol.mapped.is_some() {
                            // Already z-scored: every channel holds it; jitter without a clamp.
                            if aug.gain == 0.0 && aug.bias == 0.0 {
                                hu
                            } else {
                                hu * (1.0 + aug.gain) + aug.bias
                            }
                        } else {
                            aug.intensity(hu_window(hu, win))
                        };
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn volume(shape: [usize; 3]) -> Vec<u8> {
        let n = shape.iter().product::<usize>();
        (0..n)
            .flat_map(|i| ((i as i16) * 7 - 500).to_le_bytes())
            .collect()
    }

    fn grid(mode: SampleMode, src: [usize; 3], out: [u32; 3]) -> Grid {
        Grid {
            mode,
            src_shape: src,
            src_spacing: [2.5, 0.7, 0.7],
            out_extent: out,
            out_spacing: None,
            centre_slice: (!mode.is_3d()).then_some(1),
        }
    }

    #[test]
    fn native_grid_is_the_identity() {
        let m = grid(SampleMode::Crop3d, [4, 5, 6], [4, 5, 6]).affine(&Augmentation::none());
        assert_eq!(m, [[1., 0., 0., 0.], [0., 1., 0., 0.], [0., 0., 1., 0.]]);
        let m = grid(SampleMode::Slice, [4, 5, 6], [1, 5, 6]).affine(&Augmentation::none());
        assert_eq!(m, [[0., 0., 0., 1.], [0., 1., 0., 0.], [0., 0., 1., 0.]]);
    }

    #[test]
    fn fitted_images_keep_their_aspect_and_pad() {
        // 200 × 100 px at 0.5 mm into 64 × 64: 100 mm tall → 100/64 mm per output pixel both ways.
        let sp = crate::data::dataset::fit_spacing([1, 200, 100], [1.0, 0.5, 0.5], [1, 64, 64]);
        assert_eq!(sp, [1.0, 100.0 / 64.0, 100.0 / 64.0]);
        let mut g = grid(SampleMode::Slice, [1, 200, 100], [1, 64, 64]);
        g.src_spacing = [1.0, 0.5, 0.5];
        g.out_spacing = Some(sp);
        g.centre_slice = Some(0);
        let m = g.affine(&Augmentation::none());
        // Rows span the image exactly (first and last output rows half a source pixel inside);
        // columns cover the middle half, the rest is padding.
        let row = |y: f64| m[1][1] * y + m[1][3];
        let col = |x: f64| m[2][2] * x + m[2][3];
        assert!((row(-0.5) + 0.5).abs() < 1e-9 && (row(63.5) - 199.5).abs() < 1e-9);
        assert!((col(15.5) + 0.5).abs() < 1e-9 && (col(47.5) - 99.5).abs() < 1e-9);
        assert_eq!(m[1][1], m[2][2]);
    }

    #[test]
    fn spacing_and_flips_map_onto_the_source_in_mm() {
        let mut g = grid(SampleMode::Slice, [3, 10, 10], [1, 5, 5]);
        g.out_spacing = Some([2.5, 1.4, 1.4]);
        let mut aug = Augmentation::none();
        aug.flips = [false, false, true];
        let m = g.affine(&aug);
        // Output centre (2, 2) → source centre (4.5, 4.5); one output column = −2 source columns.
        assert_eq!(m[1], [0.0, 2.0, 0.0, 0.5]);
        assert_eq!(m[2], [0.0, 0.0, -2.0, 8.5]);
        // Volume3d covers the whole extent: corners map half a voxel inside the source corners.
        let g = grid(SampleMode::Volume3d, [4, 8, 8], [2, 4, 4]);
        let m = g.affine(&Augmentation::none());
        assert_eq!(m[0][0], 2.0);
        assert_eq!(m[0][3], 0.5);
    }

    #[test]
    fn interpolation_is_exact_on_voxels_and_linear_between() {
        let bytes = volume([2, 3, 4]);
        let v = Volume {
            bytes: &bytes,
            shape: [2, 3, 4],
            mapped: None,
        };
        let at = |k: usize, r: usize, c: usize| ((k * 3 + r) * 4 + c) as f32 * 7.0 - 500.0;
        assert_eq!(v.bilinear(1, 2.0, 3.0, 0), at(1, 2, 3));
        assert_eq!(
            v.bilinear(0, 0.5, 1.5, 0),
            (at(0, 0, 1) + at(0, 0, 2) + at(0, 1, 1) + at(0, 1, 2)) / 4.0
        );
        assert_eq!(v.trilinear(0.5, 0.0, 0.0, 0), (at(0, 0, 0) + at(1, 0, 0)) / 2.0);
        assert_eq!(v.bilinear(0, -1.0, 0.0, 0), OUTSIDE_HU);
        assert_eq!(v.bilinear(0, 2.5, 0.0, 0), (at(0, 2, 0) + OUTSIDE_HU) / 2.0);
    }

    #[test]
    fn window_and_draws() {
        assert_eq!(hu_window(-600.0, [-600.0, 1500.0]), 0.5);
        assert_eq!(hu_window(-2000.0, [-600.0, 1500.0]), 0.0);
        assert_eq!(hu_window(1000.0, [-600.0, 1500.0]), 1.0);
        let cfg = AugmentConfig {
            flip_lr: true,
            rotate_deg: 10.0,
            ..AugmentConfig::default()
        };
        let a = Augmentation::draw(&cfg, 3, false);
        assert_eq!(a, Augmentation::draw(&cfg, 3, false));
        assert!(a.rotate.abs() <= 10f64.to_radians() && a.zoom == 1.0 && a.shift_mm == [0.0; 3]);
        let flips = (0..200)
            .filter(|&s| Augmentation::draw(&cfg, s, false).flips[2])
            .count();
        assert!((60..140).contains(&flips), "{flips} of 200 flipped");
        assert!((0..200).all(|s| !Augmentation::draw(&cfg, s, false).flips[1]));
    }
}
