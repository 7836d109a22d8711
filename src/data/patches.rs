//! Patch positions for segmentation training, with foreground oversampling as nnU-Net does it: a
//! fraction of patches is centred on a labelled voxel drawn at random, the rest placed uniformly.
//! A position is a pure function of (seed, epoch, sample index), so it does not depend on which rank
//! draws the sample, and a resumed run draws the same patches.

use rand::Rng;

/// ChaCha8 stream of patch positions (the sampler's streams are 1 to 3).
const STREAM_PATCH: u64 = 4;

/// Where the labelled voxels of a volume are, for centring patches on them.
#[derive(Clone, Debug, Default)]
pub struct Foreground {
    /// Flat indices (slice, row, column order) of the labelled voxels, ascending.
    pub voxels: Vec<u32>,
}

impl Foreground {
    pub fn of(mask: impl Iterator<Item = u16>) -> Foreground {
        Foreground {
            voxels: mask
                .enumerate()
                .filter(|(_, v)| *v != 0)
                .map(|(i, _)| i as u32)
                .collect(),
        }
    }
}

/// With probability `fg_fraction`, and when the volume has labelled voxels, one of them drawn at
/// random (its flat index) for `sample` in `epoch`; otherwise None. Returns the generator too, for
/// whatever the caller draws next.
pub fn draw_foreground(
    seed: u64,
    epoch: u64,
    sample: u64,
    fg: &Foreground,
    fg_fraction: f64,
) -> (rand_chacha::ChaCha8Rng, Option<usize>) {
    let mut rng = super::sampler::rng(seed, STREAM_PATCH, epoch, sample);
    let centred = rng.gen_bool(fg_fraction.clamp(0.0, 1.0)) && !fg.voxels.is_empty();
    let voxel = centred.then(|| fg.voxels[rng.gen_range(0..fg.voxels.len())] as usize);
    (rng, voxel)
}

/// The first voxel (slice, row, column) of the patch of `sample` in `epoch`, for a volume of extent
/// `dims` (a patch longer than the volume along an axis starts at 0; the loader pads it). With
/// probability `fg_fraction`, and when the volume has labelled voxels, the patch is centred on one of
/// them (clamped into the volume); otherwise its start is uniform.
pub fn patch_origin(
    seed: u64,
    epoch: u64,
    sample: u64,
    dims: [usize; 3],
    patch: [usize; 3],
    fg: &Foreground,
    fg_fraction: f64,
) -> [usize; 3] {
    let (mut rng, voxel) = draw_foreground(seed, epoch, sample, fg, fg_fraction);
    let room: [usize; 3] = std::array::from_fn(|a| dims[a].saturating_sub(patch[a]));
    match voxel {
        Some(v) => {
            let at = [v / (dims[1] * dims[2]), v / dims[2] % dims[1], v % dims[2]];
            std::array::from_fn(|a| at[a].saturating_sub(patch[a] / 2).min(room[a]))
        }
        None => std::array::from_fn(|a| rng.gen_range(0..=room[a])),
    }
}

/// Copies the patch at `origin` out of a (channels, dims) volume into `out` ((channels, patch)),
/// zero where the patch runs past the volume.
pub fn crop<T: Copy + Default>(
    volume: &[T],
    channels: usize,
    dims: [usize; 3],
    origin: [usize; 3],
    patch: [usize; 3],
    out: &mut [T],
) {
    assert_eq!(
        out.len(),
        channels * patch.iter().product::<usize>(),
        "patch buffer"
    );
    out.fill(T::default());
    for c in 0..channels {
        for z in 0..patch[0].min(dims[0].saturating_sub(origin[0])) {
            for y in 0..patch[1].min(dims[1].saturating_sub(origin[1])) {
                let w = patch[2].min(dims[2].saturating_sub(origin[2]));
                let src = ((c * dims[0] + origin[0] + z) * dims[1] + origin[1] + y) * dims[2] + origin[2];
                let dst = ((c * patch[0] + z) * patch[1] + y) * patch[2];
                out[dst..dst + w].copy_from_slice(&volume[src..src + w]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_reproducible_and_oversample_the_foreground() {
        let dims = [20, 40, 40];
        let patch = [8, 16, 16];
        // One labelled voxel in a corner: only centred patches contain it.
        let fg = Foreground {
            voxels: vec![((18 * 40) + 38) * 40 + 37],
        };
        let draws = 2000u64;
        let hits = (0..draws)
            .filter(|&s| {
                let o = patch_origin(9, 3, s, dims, patch, &fg, 0.33);
                assert_eq!(o, patch_origin(9, 3, s, dims, patch, &fg, 0.33));
                assert!((0..3).all(|a| o[a] + patch[a] <= dims[a]));
                o[0] + patch[0] > 18 && o[1] + patch[1] > 38 && o[2] + patch[2] > 37
            })
            .count() as f64;
        // Centred: 33 %; a uniform patch contains the corner voxel with probability 1/13·1/25·1/25.
        let uniform = 1.0 / (13.0 * 25.0 * 25.0);
        let want = draws as f64 * (0.33 + 0.67 * uniform);
        assert!(
            (hits - want).abs() < 4.0 * (want * 0.67).sqrt(),
            "{hits} vs {want}"
        );
        assert_ne!(
            patch_origin(9, 3, 1, dims, patch, &fg, 0.33),
            patch_origin(9, 4, 1, dims, patch, &fg, 0.0)
        );
    }

    #[test]
    fn a_crop_past_the_edge_is_zero_padded() {
        let vol: Vec<u16> = (0..2 * 3 * 4).map(|v| v as u16 + 1).collect();
        let mut out = vec![0u16; 2 * 2 * 2];
        crop(&vol, 1, [2, 3, 4], [1, 2, 3], [2, 2, 2], &mut out);
        assert_eq!(out, vec![24, 0, 0, 0, 0, 0, 0, 0]);
    }
}
