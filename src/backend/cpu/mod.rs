//! The CPU reference backend: the specification every other backend is tested against. Storage is a
//! host `Vec<f32>`; views are plain slices. Work runs on rayon's global pool (or the pool installed by
//! the caller), and every result is bitwise independent of that pool's size.

pub mod activation;
pub mod batchnorm;
pub mod conv;
pub mod elementwise;
pub mod gemm;
pub mod linear;
pub mod loss;
pub mod pool;
pub mod update;
pub mod window;

use std::ops::Range;

use super::params::{BatchNormParams, ConvParams, LinearParams, PoolParams};
use super::{
    check_len, AdamWHyper, Backend, BceParams, CrossEntropyParams, DType, DropoutParams, RegressionLoss,
    Result, SgdHyper,
};

#[derive(Clone, Copy, Debug, Default)]
pub struct CpuBackend;

impl Backend for CpuBackend {
    type Buf = Vec<f32>;
    type View<'a> = &'a [f32];
    type ViewMut<'a> = &'a mut [f32];

    fn name(&self) -> &'static str {
        "cpu"
    }
    fn dtype(&self) -> DType {
        DType::F32
    }

    fn zeros(&self, len: usize) -> Result<Vec<f32>> {
        Ok(vec![0.0; len])
    }
    fn len(&self, buf: &Vec<f32>) -> usize {
        buf.len()
    }
    fn upload(&self, host: &[f32]) -> Result<Vec<f32>> {
        Ok(host.to_vec())
    }
    fn download(&self, x: &[f32]) -> Result<Vec<f32>> {
        Ok(x.to_vec())
    }
    fn download_into(&self, x: &[f32], out: &mut [f32]) -> Result<()> {
        check_len("download_into", "out", x.len(), out.len())?;
        out.copy_from_slice(x);
        Ok(())
    }
    fn upload_into(&self, host: &[f32], y: &mut [f32]) -> Result<()> {
        check_len("upload_into", "y", host.len(), y.len())?;
        y.copy_from_slice(host);
        Ok(())
    }
    fn view<'a>(&self, buf: &'a Vec<f32>, range: Range<usize>) -> &'a [f32] {
        &buf[range]
    }
    fn view_mut<'a>(&self, buf: &'a mut Vec<f32>, range: Range<usize>) -> &'a mut [f32] {
        &mut buf[range]
    }
    fn split_at_mut<'a>(&self, v: &'a mut [f32], mid: usize) -> (&'a mut [f32], &'a mut [f32])
    where
        Self: 'a,
    {
        v.split_at_mut(mid)
    }
    fn fill(&self, y: &mut [f32], value: f32) -> Result<()> {
        y.fill(value);
        Ok(())
    }
    fn copy(&self, x: &[f32], y: &mut [f32]) -> Result<()> {
        check_len("copy", "y", x.len(), y.len())?;
        y.copy_from_slice(x);
        Ok(())
    }

    fn conv_forward(
        &self,
        p: &ConvParams,
        x: &[f32],
        w: &[f32],
        bias: Option<&[f32]>,
        y: &mut [f32],
    ) -> Result<()> {
        conv::forward(p, x, w, bias, y)
    }
    fn conv_backward(
        &self,
        p: &ConvParams,
        x: &[f32],
        w: &[f32],
        dy: &[f32],
        dx: Option<&mut [f32]>,
        dw: &mut [f32],
        dbias: Option<&mut [f32]>,
    ) -> Result<()> {
        conv::backward(p, x, w, dy, dx, dw, dbias)
    }

    fn batchnorm_forward_train(
        &self,
        p: &BatchNormParams,
        x: &[f32],
        gamma: &[f32],
        beta: &[f32],
        y: &mut [f32],
        saved_mean: &mut [f32],
        saved_invstd: &mut [f32],
        running_mean: &mut [f32],
        running_var: &mut [f32],
    ) -> Result<()> {
        batchnorm::forward_train(
            p,
            x,
            gamma,
            beta,
            y,
            saved_mean,
            saved_invstd,
            running_mean,
            running_var,
        )
    }
    fn batchnorm_forward_infer(
        &self,
        p: &BatchNormParams,
        x: &[f32],
        gamma: &[f32],
        beta: &[f32],
        running_mean: &[f32],
        running_var: &[f32],
        y: &mut [f32],
    ) -> Result<()> {
        batchnorm::forward_infer(p, x, gamma, beta, running_mean, running_var, y)
    }
    fn batchnorm_backward(
        &self,
        p: &BatchNormParams,
        x: &[f32],
        gamma: &[f32],
        saved_mean: &[f32],
        saved_invstd: &[f32],
        dy: &[f32],
        dx: &mut [f32],
        dgamma: &mut [f32],
        dbeta: &mut [f32],
    ) -> Result<()> {
        batchnorm::backward(p, x, gamma, saved_mean, saved_invstd, dy, dx, dgamma, dbeta)
    }

    fn leaky_relu_forward(&self, slope: f32, x: &[f32], y: &mut [f32]) -> Result<()> {
        activation::leaky_relu_forward(slope, x, y)
    }
    fn leaky_relu_backward(&self, slope: f32, x: &[f32], dy: &[f32], dx: &mut [f32]) -> Result<()> {
        activation::leaky_relu_backward(slope, x, dy, dx)
    }

    fn max_pool_forward(&self, p: &PoolParams, x: &[f32], y: &mut [f32]) -> Result<()> {
        pool::max_forward(p, x, y)
    }
    fn max_pool_backward(&self, p: &PoolParams, x: &[f32], dy: &[f32], dx: &mut [f32]) -> Result<()> {
        pool::max_backward(p, x, dy, dx)
    }
    fn avg_pool_forward(&self, p: &PoolParams, x: &[f32], y: &mut [f32]) -> Result<()> {
        pool::avg_forward(p, x, y)
    }
    fn avg_pool_backward(&self, p: &PoolParams, dy: &[f32], dx: &mut [f32]) -> Result<()> {
        pool::avg_backward(p, dy, dx)
    }
    fn global_avg_pool_forward(&self, spatial: usize, x: &[f32], y: &mut [f32]) -> Result<()> {
        pool::global_avg_forward(spatial, x, y)
    }
    fn global_avg_pool_backward(&self, spatial: usize, dy: &[f32], dx: &mut [f32]) -> Result<()> {
        pool::global_avg_backward(spatial, dy, dx)
    }

    fn linear_forward(
        &self,
        p: &LinearParams,
        x: &[f32],
        w: &[f32],
        bias: Option<&[f32]>,
        y: &mut [f32],
    ) -> Result<()> {
        linear::forward(p, x, w, bias, y)
    }
    fn linear_backward(
        &self,
        p: &LinearParams,
        x: &[f32],
        w: &[f32],
        dy: &[f32],
        dx: Option<&mut [f32]>,
        dw: &mut [f32],
        dbias: Option<&mut [f32]>,
    ) -> Result<()> {
        linear::backward(p, x, w, dy, dx, dw, dbias)
    }

    fn dropout_forward(&self, p: &DropoutParams, x: &[f32], y: &mut [f32]) -> Result<()> {
        elementwise::dropout_forward(p, x, y)
    }
    fn dropout_backward(&self, p: &DropoutParams, dy: &[f32], dx: &mut [f32]) -> Result<()> {
        elementwise::dropout_backward(p, dy, dx)
    }
    fn add(&self, a: &[f32], b: &[f32], y: &mut [f32]) -> Result<()> {
        elementwise::add(a, b, y)
    }
    fn accumulate(&self, x: &[f32], y: &mut [f32]) -> Result<()> {
        elementwise::accumulate(x, y)
    }
    fn concat_channels_forward(
        &self,
        n: usize,
        spatial: usize,
        a: &[f32],
        ca: usize,
        b: &[f32],
        cb: usize,
        y: &mut [f32],
    ) -> Result<()> {
        elementwise::concat_forward(n, spatial, a, ca, b, cb, y)
    }
    fn concat_channels_backward(
        &self,
        n: usize,
        spatial: usize,
        dy: &[f32],
        ca: usize,
        cb: usize,
        da: &mut [f32],
        db: &mut [f32],
    ) -> Result<()> {
        elementwise::concat_backward(n, spatial, dy, ca, cb, da, db)
    }

    fn cross_entropy(
        &self,
        p: &CrossEntropyParams,
        logits: &[f32],
        targets: &[f32],
        class_weights: Option<&[f32]>,
        dlogits: &mut [f32],
    ) -> Result<f32> {
        loss::cross_entropy(p, logits, targets, class_weights, dlogits)
    }
    fn bce_with_logits(
        &self,
        p: &BceParams,
        logits: &[f32],
        targets: &[f32],
        mask: Option<&[f32]>,
        pos_weight: Option<&[f32]>,
        dlogits: &mut [f32],
    ) -> Result<f32> {
        loss::bce_with_logits(p, logits, targets, mask, pos_weight, dlogits)
    }
    fn regression_loss(
        &self,
        kind: RegressionLoss,
        pred: &[f32],
        target: &[f32],
        mask: Option<&[f32]>,
        dpred: &mut [f32],
    ) -> Result<f32> {
        loss::regression(kind, pred, target, mask, dpred)
    }
    fn cox_loss(&self, risk: &[f32], time: &[f32], event: &[f32], drisk: &mut [f32]) -> Result<f32> {
        loss::cox(risk, time, event, drisk)
    }

    fn sgd_step(&self, h: &SgdHyper, param: &mut [f32], grad: &[f32], momentum: &mut [f32]) -> Result<()> {
        update::sgd(h, param, grad, momentum)
    }
    fn adamw_step(
        &self,
        h: &AdamWHyper,
        param: &mut [f32],
        grad: &[f32],
        m: &mut [f32],
        v: &mut [f32],
    ) -> Result<()> {
        update::adamw(h, param, grad, m, v)
    }
    fn sum_squares(&self, x: &[f32]) -> Result<f64> {
        Ok(update::sum_squares(x))
    }
    fn scale(&self, alpha: f32, y: &mut [f32]) -> Result<()> {
        elementwise::scale(alpha, y);
        Ok(())
    }
}
