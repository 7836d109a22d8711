//! `kernels/gradcam.cu` compiled as host C++ (build.rs, through `kernels/mt.cuh`) and "launched" by
//! running every thread of a grid in turn, compared with the CPU reference in `cam.rs`: the kernels'
//! index arithmetic checked without a GPU. The launch sequence is the one a CUDA `GradCamOps` uses:
//! weights, weighted sum, up-sampling, then min/max and normalisation.

use super::cam::{CamShape, Method};
use crate::backend::params::AxisMap;
use crate::backend::Dims3;

mod ffi {
    extern "C" {
        pub fn mt_host_set_thread(tid: u64, nthreads: u64);
        pub fn mt_gradcam_pool_weights(planes: u64, spatial: u64, grads: *const f32, weights: *mut f32);
        pub fn mt_gradcam_pp_weights(
            planes: u64,
            spatial: u64,
            acts: *const f32,
            grads: *const f32,
            weights: *mut f32,
        );
        pub fn mt_gradcam_weighted_sum(
            n: u64,
            c: u64,
            spatial: u64,
            acts: *const f32,
            weights: *const f32,
            cam: *mut f32,
        );
        pub fn mt_gradcam_layer_sum(
            n: u64,
            c: u64,
            spatial: u64,
            acts: *const f32,
            grads: *const f32,
            cam: *mut f32,
        );
        #[allow(clippy::too_many_arguments)]
        pub fn mt_gradcam_upsample(
            n: u64,
            fd: u64,
            fh: u64,
            fw: u64,
            td: u64,
            th: u64,
            tw: u64,
            sz: f32,
            bz: f32,
            az: f32,
            sy: f32,
            by: f32,
            ay: f32,
            sx: f32,
            bx: f32,
            ax: f32,
            cam: *const f32,
            out: *mut f32,
        );
        pub fn mt_gradcam_minmax(n: u64, spatial: u64, maps: *const f32, minmax: *mut f32);
        pub fn mt_gradcam_normalise(n: u64, spatial: u64, minmax: *const f32, maps: *mut f32);
    }
}

/// Threads of an emulated launch: fewer than the test tensors' elements, so grid-stride loops run
/// more than one round.
const THREADS: u64 = 3 * 64;

fn launch(mut kernel: impl FnMut()) {
    for t in 0..THREADS {
        // SAFETY: sets two thread_local integers of the host library; no pointers involved.
        unsafe { ffi::mt_host_set_thread(t, THREADS) };
        kernel();
    }
}

/// The whole Grad-CAM pipeline through the emulated kernels: (weights, raw map, normalised map on
/// the input grid).
pub fn gradcam_emulated(
    s: &CamShape,
    acts: &[f32],
    grads: &[f32],
    method: Method,
    to: Dims3,
    axes: &[AxisMap; 3],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (planes, sp) = ((s.n * s.c) as u64, s.spatial() as u64);
    assert_eq!(acts.len(), s.len());
    assert_eq!(grads.len(), s.len());
    let mut weights = vec![0.0f32; s.n * s.c];
    let mut cam = vec![0.0f32; s.n * s.spatial()];
    let ts: usize = to.iter().map(|&d| d as usize).product();
    let mut out = vec![0.0f32; s.n * ts];
    let mut minmax = vec![0.0f32; 2 * s.n];
    let [fd, fh, fw] = s.dims.map(u64::from);
    let [td, th, tw] = to.map(u64::from);
    // SAFETY (every launch): the buffers were sized above from the same counts the kernels index by,
    // and the emulated threads run one after another on this thread.
    match method {
        Method::GradCam => launch(|| unsafe {
            ffi::mt_gradcam_pool_weights(planes, sp, grads.as_ptr(), weights.as_mut_ptr())
        }),
        Method::GradCamPlusPlus => launch(|| unsafe {
            ffi::mt_gradcam_pp_weights(planes, sp, acts.as_ptr(), grads.as_ptr(), weights.as_mut_ptr())
        }),
        Method::LayerCam => launch(|| unsafe {
            ffi::mt_gradcam_layer_sum(
                s.n as u64,
                s.c as u64,
                sp,
                acts.as_ptr(),
                grads.as_ptr(),
                cam.as_mut_ptr(),
            )
        }),
    }
    if method != Method::LayerCam {
        launch(|| unsafe {
            ffi::mt_gradcam_weighted_sum(
                s.n as u64,
                s.c as u64,
                sp,
                acts.as_ptr(),
                weights.as_ptr(),
                cam.as_mut_ptr(),
            )
        });
    }
    let [z, y, x] = *axes;
    launch(|| unsafe {
        ffi::mt_gradcam_upsample(
            s.n as u64,
            fd,
            fh,
            fw,
            td,
            th,
            tw,
            z.scale,
            z.before,
            z.after,
            y.scale,
            y.before,
            y.after,
            x.scale,
            x.before,
            x.after,
            cam.as_ptr(),
            out.as_mut_ptr(),
        )
    });
    launch(|| unsafe { ffi::mt_gradcam_minmax(s.n as u64, ts as u64, out.as_ptr(), minmax.as_mut_ptr()) });
    launch(|| unsafe { ffi::mt_gradcam_normalise(s.n as u64, ts as u64, minmax.as_ptr(), out.as_mut_ptr()) });
    (weights, cam, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::explain::cam;

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn reference(
        s: &CamShape,
        acts: &[f32],
        grads: &[f32],
        method: Method,
        to: Dims3,
        axes: &[AxisMap; 3],
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let mut w = vec![0.0f32; s.n * s.c];
        let mut m = vec![0.0f32; s.n * s.spatial()];
        match method {
            Method::GradCam => cam::pool_weights(s, grads, &mut w),
            Method::GradCamPlusPlus => cam::pp_weights(s, acts, grads, &mut w),
            Method::LayerCam => cam::layer_sum(s, acts, grads, &mut m),
        }
        if method != Method::LayerCam {
            cam::weighted_sum(s, acts, &w, &mut m);
        }
        let ts: usize = to.iter().map(|&d| d as usize).product();
        let mut up = vec![0.0f32; s.n * ts];
        cam::upsample(s.n, s.dims, to, axes, &m, &mut up);
        cam::normalise(s.n, ts, &mut up);
        (w, m, up)
    }

    #[test]
    fn emulated_gradcam_kernels_equal_the_cpu_reference() {
        // 2D (bilinear) and 3D (trilinear), up and down the grid, Grad-CAM and Grad-CAM++, with
        // PyTorch's align_corners=false grid and with receptive-field-centred grids whose sources
        // run off both ends (clamped).
        let cases: [(CamShape, Dims3); 3] = [
            (
                CamShape {
                    n: 3,
                    c: 5,
                    dims: [1, 4, 6],
                },
                [1, 13, 9],
            ),
            (
                CamShape {
                    n: 2,
                    c: 4,
                    dims: [3, 2, 5],
                },
                [7, 6, 4],
            ),
            (
                CamShape {
                    n: 2,
                    c: 3,
                    dims: [1, 9, 8],
                },
                [1, 4, 4],
            ),
        ];
        for (k, (s, to)) in cases.iter().enumerate() {
            let acts: Vec<f32> = values(s.len(), 100 + k as u64).iter().map(|v| v.abs()).collect();
            let grads = values(s.len(), 200 + k as u64);
            let centred = [
                AxisMap::centred(0.0, 1.0),
                AxisMap::centred(1.5, 2.0),
                AxisMap::centred(-3.0, 4.0),
            ];
            let centred = if s.dims[0] == 1 {
                [AxisMap::centred(0.0, 1.0), centred[1], centred[2]]
            } else {
                centred
            };
            for axes in [cam::interpolate_axes(s.dims, *to), centred] {
                for method in [Method::GradCam, Method::GradCamPlusPlus, Method::LayerCam] {
                    let want = reference(s, &acts, &grads, method, *to, &axes);
                    let got = gradcam_emulated(s, &acts, &grads, method, *to, &axes);
                    assert_eq!(got.0, want.0, "case {k} {method:?} {axes:?}: weights");
                    assert_eq!(got.1, want.1, "case {k} {method:?} {axes:?}: map");
                    assert_eq!(
                        got.2, want.2,
                        "case {k} {method:?} {axes:?}: up-sampled, normalised"
                    );
                    assert!(want.2.contains(&1.0), "case {k}: a non-trivial map");
                }
            }
        }
    }

    #[test]
    fn the_kernel_source_names_every_emulated_kernel() {
        for name in [
            "mt_gradcam_pool_weights",
            "mt_gradcam_pp_weights",
            "mt_gradcam_weighted_sum",
            "mt_gradcam_layer_sum",
            "mt_gradcam_upsample",
            "mt_gradcam_minmax",
            "mt_gradcam_normalise",
        ] {
            assert!(cam::GRADCAM_CU.contains(&format!("MT_KERNEL {name}(")), "{name}");
        }
    }
}
