//! Sliding-window inference of a fully convolutional network (a U-Net built for one patch extent)
//! over a whole volume, as MONAI's `sliding_window_inference` does it:
//!
//! - windows of the patch extent step by `floor(patch · (1 − overlap))` (at least 1) along each axis,
//!   the last one flush with the far edge; an axis as long as the patch takes one window;
//! - a volume shorter than the patch along an axis is padded with zeros (half before, half after)
//!   and the output cropped back;
//! - each window's output is weighted by a Gaussian centred on the patch (σ = 0.125 · patch along
//!   each axis, as MONAI's and nnU-Net's defaults) or uniformly, and the blend is the weighted mean;
//! - with `flips`, every combination of flips of the spatial axes is run and the outputs, flipped
//!   back, averaged (nnU-Net's mirroring test-time augmentation).
//!
//! Windows are run in batches of the network's batch size (the last batch padded with zeros).

use crate::backend::{Backend, Result};
use crate::nn::Net;

/// Patch extent is the network's; these choose how windows tile and blend.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Window {
    /// Fraction of a patch that neighbouring windows share (0 ≤ overlap < 1).
    pub overlap: f64,
    /// Gaussian importance weighting (else uniform).
    pub gaussian: bool,
    /// Average over flips of the spatial axes.
    pub flips: bool,
}

impl Default for Window {
    fn default() -> Self {
        Window {
            overlap: 0.5,
            gaussian: true,
            flips: false,
        }
    }
}

/// Window start positions along one axis of length `len` (≥ patch).
pub fn starts(len: usize, patch: usize, overlap: f64) -> Vec<usize> {
    if len <= patch {
        return vec![0];
    }
    let step = ((patch as f64 * (1.0 - overlap)).floor() as usize).max(1);
    let n = (len - patch).div_ceil(step) + 1;
    let mut out: Vec<usize> = (0..n).map(|i| (i * step).min(len - patch)).collect();
    out.dedup();
    out
}

/// The importance weight of every voxel of a patch, (d, h, w) row-major.
pub fn importance(patch: [usize; 3], gaussian: bool) -> Vec<f32> {
    let axis = |n: usize| -> Vec<f64> {
        if !gaussian {
            return vec![1.0; n];
        }
        let (c, sigma) = ((n / 2) as f64, 0.125 * n as f64);
        (0..n)
            .map(|i| (-((i as f64 - c).powi(2)) / (2.0 * sigma * sigma)).exp())
            .collect()
    };
    let (a, b, c) = (axis(patch[0]), axis(patch[1]), axis(patch[2]));
    let mut w = Vec::with_capacity(patch.iter().product());
    for x in &a {
        for y in &b {
            for z in &c {
                w.push(x * y * z);
            }
        }
    }
    // No voxel may weigh nothing (MONAI lifts zeros to the smallest non-zero weight).
    let floor = w
        .iter()
        .copied()
        .filter(|v| *v > 0.0)
        .fold(f64::INFINITY, f64::min);
    w.into_iter().map(|v| v.max(floor) as f32).collect()
}

/// Index of (c, z, y, x) in a (channels, dims) volume.
fn at(dims: [usize; 3], c: usize, z: usize, y: usize, x: usize) -> usize {
    ((c * dims[0] + z) * dims[1] + y) * dims[2] + x
}

/// The network's output blended over windows: (out channels, dims) from a (channels, dims) volume.
/// `patch` is the network's input extent (depth 1 for a 2D network, whose windows are then single
/// slices).
pub fn sliding_window<B: Backend>(
    b: &B,
    net: &mut Net<B>,
    volume: &[f32],
    channels: usize,
    dims: [usize; 3],
    patch: [usize; 3],
    w: &Window,
) -> Result<Vec<f32>> {
    let batch = net.input_len() / (channels * patch.iter().product::<usize>());
    let out_channels = b.len(net.output()) / (batch * patch.iter().product::<usize>());
    // Pad short axes with zeros, half before and half after.
    let before: [usize; 3] = std::array::from_fn(|a| patch[a].saturating_sub(dims[a]) / 2);
    let padded: [usize; 3] = std::array::from_fn(|a| dims[a].max(patch[a]));
    let mut vol = vec![0.0f32; channels * padded.iter().product::<usize>()];
    for c in 0..channels {
        for z in 0..dims[0] {
            for y in 0..dims[1] {
                let src = at(dims, c, z, y, 0);
                let dst = at(padded, c, z + before[0], y + before[1], before[2]);
                vol[dst..dst + dims[2]].copy_from_slice(&volume[src..src + dims[2]]);
            }
        }
    }
    let weights = importance(patch, w.gaussian);
    let mut sum = vec![0.0f64; out_channels * padded.iter().product::<usize>()];
    let mut norm = vec![0.0f64; padded.iter().product::<usize>()];
    let mut windows = Vec::new();
    for z in starts(padded[0], patch[0], w.overlap) {
        for y in starts(padded[1], patch[1], w.overlap) {
            for x in starts(padded[2], patch[2], w.overlap) {
                windows.push([z, y, x]);
            }
        }
    }
    let flip_sets: Vec<[bool; 3]> = if w.flips {
        (0..8u8)
            .map(|m| [m & 4 != 0, m & 2 != 0, m & 1 != 0])
            .filter(|f| !(f[0] && patch[0] == 1))
            .collect()
    } else {
        vec![[false; 3]]
    };
    let plen: usize = patch.iter().product();
    let mut input = vec![0.0f32; net.input_len()];
    for flips in &flip_sets {
        let coord = |i: usize, a: usize| if flips[a] { patch[a] - 1 - i } else { i };
        for group in windows.chunks(batch) {
            input.fill(0.0);
            for (s, o) in group.iter().enumerate() {
                for c in 0..channels {
                    for z in 0..patch[0] {
                        for y in 0..patch[1] {
                            for x in 0..patch[2] {
                                let v = vol[at(
                                    padded,
                                    c,
                                    o[0] + coord(z, 0),
                                    o[1] + coord(y, 1),
                                    o[2] + coord(x, 2),
                                )];
                                input[(s * channels + c) * plen + at(patch, 0, z, y, x)] = v;
                            }
                        }
                    }
                }
            }
            net.forward(b, &input, false)?;
            let out = b.download(b.view(net.output(), 0..b.len(net.output())))?;
            for (s, o) in group.iter().enumerate() {
                for z in 0..patch[0] {
                    for y in 0..patch[1] {
                        for x in 0..patch[2] {
                            let i = at(patch, 0, z, y, x);
                            let (vz, vy, vx) = (o[0] + coord(z, 0), o[1] + coord(y, 1), o[2] + coord(x, 2));
                            let wt = weights[at(patch, 0, coord(z, 0), coord(y, 1), coord(x, 2))] as f64;
                            norm[at(padded, 0, vz, vy, vx)] += wt;
                            for c in 0..out_channels {
                                sum[at(padded, c, vz, vy, vx)] +=
                                    wt * out[(s * out_channels + c) * plen + i] as f64;
                            }
                        }
                    }
                }
            }
        }
    }
    let mut result = vec![0.0f32; out_channels * dims.iter().product::<usize>()];
    for c in 0..out_channels {
        for z in 0..dims[0] {
            for y in 0..dims[1] {
                for x in 0..dims[2] {
                    let p = at(padded, 0, z + before[0], y + before[1], x + before[2]);
                    let q = at(padded, c, z + before[0], y + before[1], x + before[2]);
                    result[at(dims, c, z, y, x)] = (sum[q] / norm[p]) as f32;
                }
            }
        }
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_cover_the_axis_and_end_flush() {
        assert_eq!(starts(16, 16, 0.5), vec![0]);
        assert_eq!(starts(20, 16, 0.5), vec![0, 4]);
        assert_eq!(starts(40, 16, 0.5), vec![0, 8, 16, 24]);
        assert_eq!(starts(5, 16, 0.5), vec![0]);
        let w = importance([1, 8, 8], true);
        assert!(w.iter().all(|v| *v > 0.0));
        assert_eq!(w.iter().copied().fold(0.0f32, f32::max), w[(4 * 8) + 4]);
    }
}
