//! Grad-CAM on the CUDA backend: `GradCamOps` through the `kernels/gradcam.cu` launches of the
//! backend's launch layer, on the backend's one stream. The kernels are the ones `emulate.rs` checks
//! against the CPU reference on the host.

use cudarc::driver::{CudaView, CudaViewMut};

use super::cam::{CamShape, GradCamOps};
use crate::backend::cuda::{kernels, CudaBackend};
use crate::backend::params::AxisMap;
use crate::backend::{check_len, Dims3, Result};

impl GradCamOps for CudaBackend {
    fn cam_pool_weights(
        &self,
        s: &CamShape,
        grads: CudaView<'_, f32>,
        weights: CudaViewMut<'_, f32>,
    ) -> Result<()> {
        check_len("cam_pool_weights", "grads", s.len(), grads.len())?;
        check_len("cam_pool_weights", "weights", s.n * s.c, weights.len())?;
        kernels::gradcam_pool_weights(self.kernels(), self.stream(), s.spatial(), grads, weights)
    }

    fn cam_pp_weights(
        &self,
        s: &CamShape,
        acts: CudaView<'_, f32>,
        grads: CudaView<'_, f32>,
        weights: CudaViewMut<'_, f32>,
    ) -> Result<()> {
        check_len("cam_pp_weights", "acts", s.len(), acts.len())?;
        check_len("cam_pp_weights", "grads", s.len(), grads.len())?;
        check_len("cam_pp_weights", "weights", s.n * s.c, weights.len())?;
        kernels::gradcam_pp_weights(self.kernels(), self.stream(), s.spatial(), acts, grads, weights)
    }

    fn cam_weighted_sum(
        &self,
        s: &CamShape,
        acts: CudaView<'_, f32>,
        weights: CudaView<'_, f32>,
        cam: CudaViewMut<'_, f32>,
    ) -> Result<()> {
        kernels::gradcam_weighted_sum(
            self.kernels(),
            self.stream(),
            s.n,
            s.c,
            s.spatial(),
            acts,
            weights,
            cam,
        )
    }

    fn cam_layer_sum(
        &self,
        s: &CamShape,
        acts: CudaView<'_, f32>,
        grads: CudaView<'_, f32>,
        cam: CudaViewMut<'_, f32>,
    ) -> Result<()> {
        kernels::gradcam_layer_sum(
            self.kernels(),
            self.stream(),
            s.n,
            s.c,
            s.spatial(),
            acts,
            grads,
            cam,
        )
    }

    fn cam_upsample(
        &self,
        n: usize,
        from: Dims3,
        to: Dims3,
        axes: &[AxisMap; 3],
        cam: CudaView<'_, f32>,
        out: CudaViewMut<'_, f32>,
    ) -> Result<()> {
        kernels::gradcam_upsample(self.kernels(), self.stream(), n, from, to, axes, cam, out)
    }

    fn cam_normalise(&self, n: usize, spatial: usize, maps: CudaViewMut<'_, f32>) -> Result<()> {
        kernels::gradcam_normalise(self.kernels(), self.stream(), n, spatial, maps)
    }
}
