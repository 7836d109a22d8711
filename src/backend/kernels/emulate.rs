//! Host emulation of the CUDA kernels: the same `kernels/*.cu` sources, compiled as C++ by build.rs,
//! "launched" by running every thread of a grid in turn on the calling OS thread. The methods mirror
//! the `Backend` trait over host slices, with the launch sequence of `backend::cuda::kernels`, so a
//! test comparing them with `CpuBackend` checks the kernels' index arithmetic without a GPU.

use std::ptr;

use super::{
    adamw_scalars, check_bce, check_cross_entropy, check_pool, check_regression, cross_entropy_status,
    dropout_mask_args, regression_args, scratch, REDUCE_THREADS,
};
use crate::backend::params::PoolParams;
use crate::backend::{
    check_len, AdamWHyper, BceParams, CrossEntropyParams, DropoutParams, RegressionLoss, Result, SgdHyper,
};

/// The host symbols of build.rs's static library (kernels/host/emulate.cpp).
mod ffi {
    extern "C" {
        pub fn mt_host_set_thread(tid: u64, nthreads: u64);

        pub fn mt_fill(n: u64, y: *mut f32, value: f32);
        pub fn mt_scale(n: u64, alpha: f32, y: *mut f32);
        pub fn mt_add(n: u64, a: *const f32, b: *const f32, y: *mut f32);
        pub fn mt_accumulate(n: u64, x: *const f32, y: *mut f32);
        pub fn mt_leaky_relu_forward(n: u64, slope: f32, x: *const f32, y: *mut f32);
        pub fn mt_leaky_relu_backward(n: u64, slope: f32, x: *const f32, dy: *const f32, dx: *mut f32);
        pub fn mt_dropout(n: u64, seed: u64, threshold: u64, keep_scale: f32, x: *const f32, y: *mut f32);
        pub fn mt_concat_channels_forward(
            n: u64,
            spatial: u64,
            a: *const f32,
            ca: u64,
            b: *const f32,
            cb: u64,
            y: *mut f32,
        );
        pub fn mt_concat_channels_backward(
            n: u64,
            spatial: u64,
            dy: *const f32,
            ca: u64,
            cb: u64,
            da: *mut f32,
            db: *mut f32,
        );

        pub fn mt_global_avg_pool_forward(planes: u64, spatial: u64, x: *const f32, y: *mut f32);
        pub fn mt_global_avg_pool_backward(planes: u64, spatial: u64, dy: *const f32, dx: *mut f32);
        pub fn mt_max_pool_forward(
            planes: u64,
            d: u64,
            h: u64,
            w: u64,
            kd: u64,
            kh: u64,
            kw: u64,
            sd: u64,
            sh: u64,
            sw: u64,
            pd: u64,
            ph: u64,
            pw: u64,
            x: *const f32,
            y: *mut f32,
        );
        pub fn mt_max_pool_backward(
            planes: u64,
            d: u64,
            h: u64,
            w: u64,
            kd: u64,
            kh: u64,
            kw: u64,
            sd: u64,
            sh: u64,
            sw: u64,
            pd: u64,
            ph: u64,
            pw: u64,
            x: *const f32,
            dy: *const f32,
            dx: *mut f32,
        );
        pub fn mt_avg_pool_forward(
            planes: u64,
            d: u64,
            h: u64,
            w: u64,
            kd: u64,
            kh: u64,
            kw: u64,
            sd: u64,
            sh: u64,
            sw: u64,
            pd: u64,
            ph: u64,
            pw: u64,
            x: *const f32,
            y: *mut f32,
        );
        pub fn mt_avg_pool_backward(
            planes: u64,
            d: u64,
            h: u64,
            w: u64,
            kd: u64,
            kh: u64,
            kw: u64,
            sd: u64,
            sh: u64,
            sw: u64,
            pd: u64,
            ph: u64,
            pw: u64,
            dy: *const f32,
            dx: *mut f32,
        );
        pub fn mt_sum_squares_partial(n: u64, x: *const f32, partials: *mut f64);
        pub fn mt_sum_partials(count: u64, partials: *const f64, out: *mut f64);

        pub fn mt_cross_entropy_rows(
            n: u64,
            classes: u64,
            label_smoothing: f32,
            logits: *const f32,
            targets: *const f32,
            class_weights: *const f32,
            dlogits: *mut f32,
            rows: *mut f64,
        );
        pub fn mt_cross_entropy_finish(
            n: u64,
            classes: u64,
            label_smoothing: f32,
            logits: *const f32,
            targets: *const f32,
            class_weights: *const f32,
            rows: *const f64,
            out: *mut f64,
        );
        pub fn mt_scale_by_device_scalar(n: u64, scalar: *const f64, d: *mut f32);
        pub fn mt_bce_elements(
            total: u64,
            labels: u64,
            logits: *const f32,
            targets: *const f32,
            mask: *const f32,
            pos_weight: *const f32,
            terms: *mut f64,
            grads: *mut f64,
        );
        pub fn mt_masked_mean_finish(total: u64, mask: *const f32, terms: *const f64, out: *mut f64);
        pub fn mt_scale_f64_by_device_scalar(n: u64, src: *const f64, scalar: *const f64, dst: *mut f32);
        pub fn mt_regression_elements(
            n: u64,
            huber: i32,
            delta: f32,
            pred: *const f32,
            target: *const f32,
            mask: *const f32,
            terms: *mut f64,
            grads: *mut f64,
        );
        pub fn mt_cox_loss(
            n: u64,
            risk: *const f32,
            time: *const f32,
            event: *const f32,
            drisk: *mut f32,
            order: *mut f64,
            group_start: *mut f64,
            group_sum: *mut f64,
            out: *mut f64,
        );

        pub fn mt_sgd_step(
            n: u64,
            lr: f32,
            momentum: f32,
            weight_decay: f32,
            nesterov: i32,
            param: *mut f32,
            grad: *const f32,
            momentum_buf: *mut f32,
        );
        pub fn mt_adamw_step(
            n: u64,
            beta1: f32,
            beta2: f32,
            eps: f32,
            decay: f32,
            step_size: f32,
            bc2_sqrt: f32,
            param: *mut f32,
            grad: *const f32,
            m: *mut f32,
            v: *mut f32,
        );
    }
}

/// The emulated grid of an elementwise launch. The default (2 blocks × 256) is smaller than the test
/// tensors, so every grid-stride loop runs more than one round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostGrid {
    pub blocks: u32,
    pub block_threads: u32,
}

impl Default for HostGrid {
    fn default() -> Self {
        HostGrid {
            blocks: 2,
            block_threads: 256,
        }
    }
}

impl HostGrid {
    pub fn threads(&self) -> u64 {
        self.blocks as u64 * self.block_threads as u64
    }
}

/// Runs `kernel` once per thread of a `threads`-thread launch, each seeing its own MT_TID.
fn launch(threads: u64, mut kernel: impl FnMut()) {
    for t in 0..threads {
        // SAFETY: sets two thread_local integers of the host library; no pointers involved.
        unsafe { ffi::mt_host_set_thread(t, threads) };
        kernel();
    }
}

/// A launch of one thread (finish kernels).
fn launch_single(kernel: impl FnMut()) {
    launch(1, kernel)
}

fn opt_ptr(x: Option<&[f32]>) -> *const f32 {
    x.map_or(ptr::null(), <[f32]>::as_ptr)
}

/// The kernels on the host, with the Backend trait's signatures over slices.
#[derive(Clone, Copy, Debug, Default)]
pub struct Emulator {
    pub grid: HostGrid,
}

// SAFETY (every launch below): the pointers come from slices whose lengths were checked against the
// element counts passed alongside them, the way the kernels index them; the launches run sequentially
// on this thread, so no two emulated threads touch memory at the same time.
impl Emulator {
    pub fn new(grid: HostGrid) -> Self {
        Emulator { grid }
    }

    fn threads(&self) -> u64 {
        self.grid.threads()
    }

    pub fn fill(&self, y: &mut [f32], value: f32) -> Result<()> {
        let n = y.len() as u64;
        launch(self.threads(), || unsafe {
            ffi::mt_fill(n, y.as_mut_ptr(), value)
        });
        Ok(())
    }

    pub fn scale(&self, alpha: f32, y: &mut [f32]) -> Result<()> {
        let n = y.len() as u64;
        launch(self.threads(), || unsafe {
            ffi::mt_scale(n, alpha, y.as_mut_ptr())
        });
        Ok(())
    }

    pub fn add(&self, a: &[f32], b: &[f32], y: &mut [f32]) -> Result<()> {
        check_len("add", "b", a.len(), b.len())?;
        check_len("add", "y", a.len(), y.len())?;
        let n = a.len() as u64;
        launch(self.threads(), || unsafe {
            ffi::mt_add(n, a.as_ptr(), b.as_ptr(), y.as_mut_ptr())
        });
        Ok(())
    }

    pub fn accumulate(&self, x: &[f32], y: &mut [f32]) -> Result<()> {
        check_len("accumulate", "y", x.len(), y.len())?;
        let n = x.len() as u64;
        launch(self.threads(), || unsafe {
            ffi::mt_accumulate(n, x.as_ptr(), y.as_mut_ptr())
        });
        Ok(())
    }

    pub fn leaky_relu_forward(&self, slope: f32, x: &[f32], y: &mut [f32]) -> Result<()> {
        check_len("leaky_relu", "y", x.len(), y.len())?;
        let n = x.len() as u64;
        launch(self.threads(), || unsafe {
            ffi::mt_leaky_relu_forward(n, slope, x.as_ptr(), y.as_mut_ptr())
        });
        Ok(())
    }

    pub fn leaky_relu_backward(&self, slope: f32, x: &[f32], dy: &[f32], dx: &mut [f32]) -> Result<()> {
        check_len("leaky_relu backward", "dy", x.len(), dy.len())?;
        check_len("leaky_relu backward", "dx", x.len(), dx.len())?;
        let n = x.len() as u64;
        launch(self.threads(), || unsafe {
            ffi::mt_leaky_relu_backward(n, slope, x.as_ptr(), dy.as_ptr(), dx.as_mut_ptr())
        });
        Ok(())
    }

    fn dropout(&self, p: &DropoutParams, x: &[f32], y: &mut [f32]) -> Result<()> {
        check_len("dropout", "output", x.len(), y.len())?;
        let (threshold, keep) = dropout_mask_args(p);
        let n = x.len() as u64;
        launch(self.threads(), || unsafe {
            ffi::mt_dropout(n, p.seed, threshold, keep, x.as_ptr(), y.as_mut_ptr())
        });
        Ok(())
    }

    pub fn dropout_forward(&self, p: &DropoutParams, x: &[f32], y: &mut [f32]) -> Result<()> {
        self.dropout(p, x, y)
    }

    pub fn dropout_backward(&self, p: &DropoutParams, dy: &[f32], dx: &mut [f32]) -> Result<()> {
        self.dropout(p, dy, dx)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn concat_channels_forward(
        &self,
        n: usize,
        spatial: usize,
        a: &[f32],
        ca: usize,
        b: &[f32],
        cb: usize,
        y: &mut [f32],
    ) -> Result<()> {
        check_len("concat", "a", n * ca * spatial, a.len())?;
        check_len("concat", "b", n * cb * spatial, b.len())?;
        check_len("concat", "y", n * (ca + cb) * spatial, y.len())?;
        let [n, s, ca, cb] = [n, spatial, ca, cb].map(|v| v as u64);
        launch(self.threads(), || unsafe {
            ffi::mt_concat_channels_forward(n, s, a.as_ptr(), ca, b.as_ptr(), cb, y.as_mut_ptr())
        });
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub fn concat_channels_backward(
        &self,
        n: usize,
        spatial: usize,
        dy: &[f32],
        ca: usize,
        cb: usize,
        da: &mut [f32],
        db: &mut [f32],
    ) -> Result<()> {
        check_len("concat backward", "dy", n * (ca + cb) * spatial, dy.len())?;
        check_len("concat backward", "da", n * ca * spatial, da.len())?;
        check_len("concat backward", "db", n * cb * spatial, db.len())?;
        let [n, s, ca, cb] = [n, spatial, ca, cb].map(|v| v as u64);
        launch(self.threads(), || unsafe {
            ffi::mt_concat_channels_backward(n, s, dy.as_ptr(), ca, cb, da.as_mut_ptr(), db.as_mut_ptr())
        });
        Ok(())
    }

    pub fn global_avg_pool_forward(&self, spatial: usize, x: &[f32], y: &mut [f32]) -> Result<()> {
        check_len("global avg pool", "x", y.len() * spatial, x.len())?;
        let (planes, s) = (y.len() as u64, spatial as u64);
        launch(self.threads(), || unsafe {
            ffi::mt_global_avg_pool_forward(planes, s, x.as_ptr(), y.as_mut_ptr())
        });
        Ok(())
    }

    pub fn global_avg_pool_backward(&self, spatial: usize, dy: &[f32], dx: &mut [f32]) -> Result<()> {
        check_len("global avg pool backward", "dx", dy.len() * spatial, dx.len())?;
        let (planes, s) = (dy.len() as u64, spatial as u64);
        launch(self.threads(), || unsafe {
            ffi::mt_global_avg_pool_backward(planes, s, dy.as_ptr(), dx.as_mut_ptr())
        });
        Ok(())
    }

    pub fn max_pool_forward(&self, p: &PoolParams, x: &[f32], y: &mut [f32]) -> Result<()> {
        let [pl, d, h, w, kd, kh, kw, sd, sh, sw, pd, ph, pw] = check_pool("max pool", p, x.len(), y.len())?;
        launch(self.threads(), || unsafe {
            ffi::mt_max_pool_forward(
                pl,
                d,
                h,
                w,
                kd,
                kh,
                kw,
                sd,
                sh,
                sw,
                pd,
                ph,
                pw,
                x.as_ptr(),
                y.as_mut_ptr(),
            )
        });
        Ok(())
    }

    pub fn max_pool_backward(&self, p: &PoolParams, x: &[f32], dy: &[f32], dx: &mut [f32]) -> Result<()> {
        let [pl, d, h, w, kd, kh, kw, sd, sh, sw, pd, ph, pw] =
            check_pool("max pool backward", p, x.len(), dy.len())?;
        check_len("max pool backward", "dx", p.input_len(), dx.len())?;
        launch(self.threads(), || unsafe {
            ffi::mt_max_pool_backward(
                pl,
                d,
                h,
                w,
                kd,
                kh,
                kw,
                sd,
                sh,
                sw,
                pd,
                ph,
                pw,
                x.as_ptr(),
                dy.as_ptr(),
                dx.as_mut_ptr(),
            )
        });
        Ok(())
    }

    pub fn avg_pool_forward(&self, p: &PoolParams, x: &[f32], y: &mut [f32]) -> Result<()> {
        let [pl, d, h, w, kd, kh, kw, sd, sh, sw, pd, ph, pw] = check_pool("avg pool", p, x.len(), y.len())?;
        launch(self.threads(), || unsafe {
            ffi::mt_avg_pool_forward(
                pl,
                d,
                h,
                w,
                kd,
                kh,
                kw,
                sd,
                sh,
                sw,
                pd,
                ph,
                pw,
                x.as_ptr(),
                y.as_mut_ptr(),
            )
        });
        Ok(())
    }

    pub fn avg_pool_backward(&self, p: &PoolParams, dy: &[f32], dx: &mut [f32]) -> Result<()> {
        let [pl, d, h, w, kd, kh, kw, sd, sh, sw, pd, ph, pw] =
            check_pool("avg pool backward", p, dx.len(), dy.len())?;
        launch(self.threads(), || unsafe {
            ffi::mt_avg_pool_backward(
                pl,
                d,
                h,
                w,
                kd,
                kh,
                kw,
                sd,
                sh,
                sw,
                pd,
                ph,
                pw,
                dy.as_ptr(),
                dx.as_mut_ptr(),
            )
        });
        Ok(())
    }

    pub fn cross_entropy(
        &self,
        p: &CrossEntropyParams,
        logits: &[f32],
        targets: &[f32],
        class_weights: Option<&[f32]>,
        dlogits: &mut [f32],
    ) -> Result<f32> {
        let (n, classes) = (p.n as usize, p.classes as usize);
        check_cross_entropy(
            p,
            logits.len(),
            targets.len(),
            class_weights.map(<[f32]>::len),
            dlogits.len(),
        )?;
        let mut rows = vec![0.0f64; scratch::cross_entropy(n)];
        let mut out = [0.0f64; scratch::OUT];
        let (n64, c64, eps, w) = (
            n as u64,
            classes as u64,
            p.label_smoothing,
            opt_ptr(class_weights),
        );
        launch(self.threads(), || unsafe {
            ffi::mt_cross_entropy_rows(
                n64,
                c64,
                eps,
                logits.as_ptr(),
                targets.as_ptr(),
                w,
                dlogits.as_mut_ptr(),
                rows.as_mut_ptr(),
            )
        });
        launch_single(|| unsafe {
            ffi::mt_cross_entropy_finish(
                n64,
                c64,
                eps,
                logits.as_ptr(),
                targets.as_ptr(),
                w,
                rows.as_ptr(),
                out.as_mut_ptr(),
            )
        });
        cross_entropy_status(&out, classes)?;
        let len = dlogits.len() as u64;
        launch(self.threads(), || unsafe {
            ffi::mt_scale_by_device_scalar(len, out[1..].as_ptr(), dlogits.as_mut_ptr())
        });
        Ok(out[0] as f32)
    }

    pub fn bce_with_logits(
        &self,
        p: &BceParams,
        logits: &[f32],
        targets: &[f32],
        mask: Option<&[f32]>,
        pos_weight: Option<&[f32]>,
        dlogits: &mut [f32],
    ) -> Result<f32> {
        check_bce(
            p,
            [logits.len(), targets.len(), dlogits.len()],
            mask.map(<[f32]>::len),
            pos_weight.map(<[f32]>::len),
        )?;
        let total = p.n as usize * p.labels as usize;
        let mut terms = vec![0.0f64; scratch::bce(total)];
        let mut out = [0.0f64; scratch::OUT];
        let (t64, labels) = (total as u64, p.labels as u64);
        let (mask, pw) = (opt_ptr(mask), opt_ptr(pos_weight));
        let (terms, grads) = terms.split_at_mut(total);
        launch(self.threads(), || unsafe {
            ffi::mt_bce_elements(
                t64,
                labels,
                logits.as_ptr(),
                targets.as_ptr(),
                mask,
                pw,
                terms.as_mut_ptr(),
                grads.as_mut_ptr(),
            )
        });
        launch_single(|| unsafe { ffi::mt_masked_mean_finish(t64, mask, terms.as_ptr(), out.as_mut_ptr()) });
        launch(self.threads(), || unsafe {
            ffi::mt_scale_f64_by_device_scalar(t64, grads.as_ptr(), out[1..].as_ptr(), dlogits.as_mut_ptr())
        });
        Ok(out[0] as f32)
    }

    pub fn regression_loss(
        &self,
        kind: RegressionLoss,
        pred: &[f32],
        target: &[f32],
        mask: Option<&[f32]>,
        dpred: &mut [f32],
    ) -> Result<f32> {
        check_regression(pred.len(), target.len(), mask.map(<[f32]>::len), dpred.len())?;
        let n = pred.len();
        let mut work = vec![0.0f64; scratch::regression(n)];
        let mut out = [0.0f64; scratch::OUT];
        let (huber, delta) = regression_args(kind);
        let (n64, mask) = (n as u64, opt_ptr(mask));
        let (terms, grads) = work.split_at_mut(n);
        launch(self.threads(), || unsafe {
            ffi::mt_regression_elements(
                n64,
                huber,
                delta,
                pred.as_ptr(),
                target.as_ptr(),
                mask,
                terms.as_mut_ptr(),
                grads.as_mut_ptr(),
            )
        });
        launch_single(|| unsafe { ffi::mt_masked_mean_finish(n64, mask, terms.as_ptr(), out.as_mut_ptr()) });
        launch(self.threads(), || unsafe {
            ffi::mt_scale_f64_by_device_scalar(n64, grads.as_ptr(), out[1..].as_ptr(), dpred.as_mut_ptr())
        });
        Ok(out[0] as f32)
    }

    pub fn cox_loss(&self, risk: &[f32], time: &[f32], event: &[f32], drisk: &mut [f32]) -> Result<f32> {
        let n = risk.len();
        check_len("cox loss", "time", n, time.len())?;
        check_len("cox loss", "event", n, event.len())?;
        check_len("cox loss", "drisk", n, drisk.len())?;
        let mut work = vec![0.0f64; scratch::cox(n)];
        let mut out = [0.0f64; scratch::OUT];
        let (order, rest) = work.split_at_mut(n);
        let (group_start, group_sum) = rest.split_at_mut(n);
        launch_single(|| unsafe {
            ffi::mt_cox_loss(
                n as u64,
                risk.as_ptr(),
                time.as_ptr(),
                event.as_ptr(),
                drisk.as_mut_ptr(),
                order.as_mut_ptr(),
                group_start.as_mut_ptr(),
                group_sum.as_mut_ptr(),
                out.as_mut_ptr(),
            )
        });
        Ok(out[0] as f32)
    }

    pub fn sgd_step(
        &self,
        h: &SgdHyper,
        param: &mut [f32],
        grad: &[f32],
        momentum: &mut [f32],
    ) -> Result<()> {
        check_len("sgd", "grad", param.len(), grad.len())?;
        check_len("sgd", "momentum", param.len(), momentum.len())?;
        let n = param.len() as u64;
        launch(self.threads(), || unsafe {
            ffi::mt_sgd_step(
                n,
                h.lr,
                h.momentum,
                h.weight_decay,
                h.nesterov as i32,
                param.as_mut_ptr(),
                grad.as_ptr(),
                momentum.as_mut_ptr(),
            )
        });
        Ok(())
    }

    pub fn adamw_step(
        &self,
        h: &AdamWHyper,
        param: &mut [f32],
        grad: &[f32],
        m: &mut [f32],
        v: &mut [f32],
    ) -> Result<()> {
        check_len("adamw", "grad", param.len(), grad.len())?;
        check_len("adamw", "m", param.len(), m.len())?;
        check_len("adamw", "v", param.len(), v.len())?;
        let s = adamw_scalars(h);
        let n = param.len() as u64;
        launch(self.threads(), || unsafe {
            ffi::mt_adamw_step(
                n,
                h.beta1,
                h.beta2,
                h.eps,
                s.decay,
                s.step_size,
                s.bc2_sqrt,
                param.as_mut_ptr(),
                grad.as_ptr(),
                m.as_mut_ptr(),
                v.as_mut_ptr(),
            )
        });
        Ok(())
    }

    /// Phase 1 always runs with exactly REDUCE_THREADS threads, whatever the elementwise grid.
    pub fn sum_squares(&self, x: &[f32]) -> Result<f64> {
        let mut partials = vec![0.0f64; scratch::sum_squares()];
        let mut out = [0.0f64; 1];
        let n = x.len() as u64;
        launch(REDUCE_THREADS as u64, || unsafe {
            ffi::mt_sum_squares_partial(n, x.as_ptr(), partials.as_mut_ptr())
        });
        launch_single(|| unsafe {
            ffi::mt_sum_partials(REDUCE_THREADS as u64, partials.as_ptr(), out.as_mut_ptr())
        });
        Ok(out[0])
    }
}
