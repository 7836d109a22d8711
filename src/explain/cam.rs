//! Grad-CAM and Grad-CAM++ on the CPU: the reference every device implementation is checked against.
//! Four steps per map: gradients pooled to channel weights, weighted channel sum with ReLU, up-sampling
//! to the input grid (trilinear, each layer cell placed at the centre of its receptive field, or as
//! PyTorch's `F.interpolate(align_corners = false)` places it; see [`Upsample`]), and min-max
//! normalisation per map. Layouts: activations and gradients (N, C, D, H, W); maps (N, D, H, W).

use crate::backend::cpu::CpuBackend;
use crate::backend::params::AxisMap;
use crate::backend::{check_len, Backend, Dims3, Result};

/// Shape of one layer's activation: batch, channels and spatial extents (D, H, W; 2D has D = 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CamShape {
    pub n: usize,
    pub c: usize,
    pub dims: Dims3,
}

impl CamShape {
    pub fn spatial(&self) -> usize {
        self.dims.iter().map(|&d| d as usize).product()
    }
    pub fn len(&self) -> usize {
        self.n * self.c * self.spatial()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The CUDA source of the Grad-CAM kernels (compiled at run time by NVRTC with `mt.cuh`).
pub const GRADCAM_CU: &str = include_str!("../../kernels/gradcam.cu");

/// How channel weights are made from the gradients.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// w_c = mean over space of ∂y/∂A_c (Selvaraju et al.).
    GradCam,
    /// w_c = Σ_s α_cs ReLU(g_cs), α = g² / (2g² + Σ_s A_cs · g³) (Chattopadhay et al., closed form
    /// under the exponential-output assumption; α = 0 where the denominator is 0).
    #[serde(rename = "gradcam++")]
    GradCamPlusPlus,
    /// No channel weights: cam_s = ReLU(Σ_c ReLU(g_cs) · A_cs), each position weighted by its own
    /// positive gradient (Jiang et al., LayerCAM, 2021). Made for maps from shallow as well as deep
    /// layers: a channel that fires on the lesion's surroundings but whose gradient is positive only
    /// at the lesion no longer spreads its activation over the whole image.
    #[serde(rename = "layercam")]
    LayerCam,
}

impl Method {
    pub fn parse(text: &str) -> Option<Method> {
        match text {
            "gradcam" | "grad-cam" => Some(Method::GradCam),
            "gradcam++" | "grad-cam++" | "gradcampp" => Some(Method::GradCamPlusPlus),
            "layercam" => Some(Method::LayerCam),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Method::GradCam => "gradcam",
            Method::GradCamPlusPlus => "gradcam++",
            Method::LayerCam => "layercam",
        }
    }
    /// The name in file names (no `+`).
    pub fn file_name(self) -> &'static str {
        match self {
            Method::GradCam => "gradcam",
            Method::GradCamPlusPlus => "gradcampp",
            Method::LayerCam => "layercam",
        }
    }
}

/// How a layer's grid is laid over the input grid when its map is up-sampled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Upsample {
    /// Cell i of the layer sits at the centre of its receptive field in the input, offset + stride·i
    /// per axis, from the kernels, strides, paddings and dilations of the layers above it
    /// ([`crate::explain::layers::CamLayer::centres`]). The map lands where the features were seen.
    Centred,
    /// PyTorch's `F.interpolate(align_corners = False)`, what hook-based Grad-CAM libraries use: it
    /// assumes cell i covers input [i·s, (i+1)·s), so after 3×3 convolutions of stride 2 and padding
    /// 1 (cell i centred on input s·i) the map lands (s − 1)/2 input pixels toward +row/+col of the
    /// features it came from (1.5 pixels at a total stride of 4).
    Interpolate,
}

impl Upsample {
    pub fn parse(text: &str) -> Option<Upsample> {
        match text {
            "centred" | "centered" => Some(Upsample::Centred),
            "interpolate" => Some(Upsample::Interpolate),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Upsample::Centred => "centred",
            Upsample::Interpolate => "interpolate",
        }
    }
}

/// `align_corners = false` on all three axes, from grid `from` to grid `to`.
pub fn interpolate_axes(from: Dims3, to: Dims3) -> [AxisMap; 3] {
    std::array::from_fn(|a| AxisMap::interpolate(from[a] as usize, to[a] as usize))
}

/// The device seam of Grad-CAM: the same four steps (plus the Grad-CAM++ weights) on any backend.
/// `kernels/gradcam.cu` implements them for CUDA with the same arguments.
pub trait GradCamOps: Backend {
    /// grads (N, C, S) → weights (N, C): mean over S.
    fn cam_pool_weights(&self, s: &CamShape, grads: Self::View<'_>, weights: Self::ViewMut<'_>)
        -> Result<()>;
    /// acts, grads (N, C, S) → Grad-CAM++ weights (N, C).
    fn cam_pp_weights(
        &self,
        s: &CamShape,
        acts: Self::View<'_>,
        grads: Self::View<'_>,
        weights: Self::ViewMut<'_>,
    ) -> Result<()>;
    /// acts (N, C, S), weights (N, C) → cam (N, S) = ReLU(Σ_c w_c A_c).
    fn cam_weighted_sum(
        &self,
        s: &CamShape,
        acts: Self::View<'_>,
        weights: Self::View<'_>,
        cam: Self::ViewMut<'_>,
    ) -> Result<()>;
    /// acts, grads (N, C, S) → cam (N, S) = ReLU(Σ_c ReLU(grads) · acts) (LayerCAM).
    fn cam_layer_sum(
        &self,
        s: &CamShape,
        acts: Self::View<'_>,
        grads: Self::View<'_>,
        cam: Self::ViewMut<'_>,
    ) -> Result<()>;
    /// cam (N, from) → out (N, to), trilinear (bilinear when both depths are 1), each output axis
    /// reading the source grid through its [`AxisMap`] (z, y, x).
    fn cam_upsample(
        &self,
        n: usize,
        from: Dims3,
        to: Dims3,
        axes: &[AxisMap; 3],
        cam: Self::View<'_>,
        out: Self::ViewMut<'_>,
    ) -> Result<()>;
    /// Each of the `n` maps of `spatial` values → (v − min) / (max − min); a flat map becomes 0.
    fn cam_normalise(&self, n: usize, spatial: usize, maps: Self::ViewMut<'_>) -> Result<()>;
}

fn volume(d: Dims3) -> usize {
    d.iter().map(|&e| e as usize).product()
}

/// Gradient pooling: weights[n, c] = mean_s grads[n, c, s].
pub fn pool_weights(s: &CamShape, grads: &[f32], weights: &mut [f32]) {
    let sp = s.spatial();
    for (w, g) in weights.iter_mut().zip(grads.chunks_exact(sp)) {
        *w = (g.iter().map(|&v| v as f64).sum::<f64>() / sp as f64) as f32;
    }
}

/// Grad-CAM++ weights in closed form (see [`Method::GradCamPlusPlus`]).
pub fn pp_weights(s: &CamShape, acts: &[f32], grads: &[f32], weights: &mut [f32]) {
    let sp = s.spatial();
    for ((w, a), g) in weights
        .iter_mut()
        .zip(acts.chunks_exact(sp))
        .zip(grads.chunks_exact(sp))
    {
        let sum_a: f64 = a.iter().map(|&v| v as f64).sum();
        let mut total = 0.0f64;
        for &gv in g {
            let g = gv as f64;
            let g2 = g * g;
            let denom = 2.0 * g2 + sum_a * g2 * g;
            let alpha = if denom != 0.0 { g2 / denom } else { 0.0 };
            total += alpha * g.max(0.0);
        }
        *w = total as f32;
    }
}

/// cam[n, s] = max(0, Σ_c weights[n, c] · acts[n, c, s]).
pub fn weighted_sum(s: &CamShape, acts: &[f32], weights: &[f32], cam: &mut [f32]) {
    let sp = s.spatial();
    for n in 0..s.n {
        let out = &mut cam[n * sp..(n + 1) * sp];
        let mut acc = vec![0.0f64; sp];
        for c in 0..s.c {
            let w = weights[n * s.c + c] as f64;
            let a = &acts[(n * s.c + c) * sp..(n * s.c + c + 1) * sp];
            acc.iter_mut().zip(a).for_each(|(o, &v)| *o += w * v as f64);
        }
        out.iter_mut()
            .zip(&acc)
            .for_each(|(o, &v)| *o = v.max(0.0) as f32);
    }
}

/// LayerCAM: cam[n, s] = max(0, Σ_c max(0, grads[n, c, s]) · acts[n, c, s]), summed in f64 in
/// channel order.
pub fn layer_sum(s: &CamShape, acts: &[f32], grads: &[f32], cam: &mut [f32]) {
    let sp = s.spatial();
    for n in 0..s.n {
        let mut acc = vec![0.0f64; sp];
        for c in 0..s.c {
            let r = (n * s.c + c) * sp..(n * s.c + c + 1) * sp;
            for ((o, &a), &g) in acc.iter_mut().zip(&acts[r.clone()]).zip(&grads[r]) {
                *o += (g.max(0.0) as f64) * a as f64;
            }
        }
        cam[n * sp..(n + 1) * sp]
            .iter_mut()
            .zip(&acc)
            .for_each(|(o, &v)| *o = v.max(0.0) as f32);
    }
}

/// The source index along one axis (as PyTorch computes it for `align_corners = false`): the two
/// neighbours and the weight of the second, the source clamped to [0, in_len − 1].
pub fn source_index(dst: usize, in_len: usize, m: AxisMap) -> (usize, usize, f32) {
    let src = (m.scale * (dst as f32 + m.before) + m.after).clamp(0.0, (in_len - 1) as f32);
    let i0 = (src as usize).min(in_len - 1);
    let i1 = if i0 + 1 < in_len { i0 + 1 } else { i0 };
    (i0, i1, src - i0 as f32)
}

/// Trilinear up-sampling of `n` maps from `from` to `to` (D, H, W), axes mapped by `axes` (z, y, x).
pub fn upsample(n: usize, from: Dims3, to: Dims3, axes: &[AxisMap; 3], cam: &[f32], out: &mut [f32]) {
    let (fs, ts) = (volume(from), volume(to));
    let [fd, fh, fw] = from.map(|e| e as usize);
    let [td, th, tw] = to.map(|e| e as usize);
    let zs: Vec<_> = (0..td).map(|z| source_index(z, fd, axes[0])).collect();
    let ys: Vec<_> = (0..th).map(|y| source_index(y, fh, axes[1])).collect();
    let xs: Vec<_> = (0..tw).map(|x| source_index(x, fw, axes[2])).collect();
    for m in 0..n {
        let src = &cam[m * fs..(m + 1) * fs];
        let dst = &mut out[m * ts..(m + 1) * ts];
        let at = |z: usize, y: usize, x: usize| src[(z * fh + y) * fw + x];
        for (z, &(z0, z1, lz)) in zs.iter().enumerate() {
            for (y, &(y0, y1, ly)) in ys.iter().enumerate() {
                for (x, &(x0, x1, lx)) in xs.iter().enumerate() {
                    let plane = |zz: usize| {
                        let top = (1.0 - lx) * at(zz, y0, x0) + lx * at(zz, y0, x1);
                        let bottom = (1.0 - lx) * at(zz, y1, x0) + lx * at(zz, y1, x1);
                        (1.0 - ly) * top + ly * bottom
                    };
                    dst[(z * th + y) * tw + x] = (1.0 - lz) * plane(z0) + lz * plane(z1);
                }
            }
        }
    }
}

/// Min-max normalisation of each map to [0, 1]; a constant map becomes all zeros.
pub fn normalise(n: usize, spatial: usize, maps: &mut [f32]) {
    for map in maps.chunks_exact_mut(spatial).take(n) {
        let (lo, hi) = map
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
                (lo.min(v), hi.max(v))
            });
        let range = hi - lo;
        if range > 0.0 && range.is_finite() {
            map.iter_mut().for_each(|v| *v = (*v - lo) / range);
        } else {
            map.fill(0.0);
        }
    }
}

impl GradCamOps for CpuBackend {
    fn cam_pool_weights(&self, s: &CamShape, grads: &[f32], weights: &mut [f32]) -> Result<()> {
        check_len("cam_pool_weights", "grads", s.len(), grads.len())?;
        check_len("cam_pool_weights", "weights", s.n * s.c, weights.len())?;
        pool_weights(s, grads, weights);
        Ok(())
    }
    fn cam_pp_weights(&self, s: &CamShape, acts: &[f32], grads: &[f32], weights: &mut [f32]) -> Result<()> {
        check_len("cam_pp_weights", "acts", s.len(), acts.len())?;
        check_len("cam_pp_weights", "grads", s.len(), grads.len())?;
        check_len("cam_pp_weights", "weights", s.n * s.c, weights.len())?;
        pp_weights(s, acts, grads, weights);
        Ok(())
    }
    fn cam_weighted_sum(&self, s: &CamShape, acts: &[f32], weights: &[f32], cam: &mut [f32]) -> Result<()> {
        check_len("cam_weighted_sum", "acts", s.len(), acts.len())?;
        check_len("cam_weighted_sum", "weights", s.n * s.c, weights.len())?;
        check_len("cam_weighted_sum", "cam", s.n * s.spatial(), cam.len())?;
        weighted_sum(s, acts, weights, cam);
        Ok(())
    }
    fn cam_layer_sum(&self, s: &CamShape, acts: &[f32], grads: &[f32], cam: &mut [f32]) -> Result<()> {
        check_len("cam_layer_sum", "acts", s.len(), acts.len())?;
        check_len("cam_layer_sum", "grads", s.len(), grads.len())?;
        check_len("cam_layer_sum", "cam", s.n * s.spatial(), cam.len())?;
        layer_sum(s, acts, grads, cam);
        Ok(())
    }
    fn cam_upsample(
        &self,
        n: usize,
        from: Dims3,
        to: Dims3,
        axes: &[AxisMap; 3],
        cam: &[f32],
        out: &mut [f32],
    ) -> Result<()> {
        check_len("cam_upsample", "cam", n * volume(from), cam.len())?;
        check_len("cam_upsample", "out", n * volume(to), out.len())?;
        if from.contains(&0) {
            return Err(crate::backend::BackendError::Params {
                op: "cam_upsample",
                reason: format!("empty source grid {from:?}"),
            });
        }
        upsample(n, from, to, axes, cam, out);
        Ok(())
    }
    fn cam_normalise(&self, n: usize, spatial: usize, maps: &mut [f32]) -> Result<()> {
        check_len("cam_normalise", "maps", n * spatial, maps.len())?;
        normalise(n, spatial, maps);
        Ok(())
    }
}
