// Optimizer updates on flat buffers, PyTorch's formulas operation for operation in f32 (no FMA
// contraction), so the GPU step equals the CPU step. Mirrors src/backend/cpu/update.rs.
#include "mt.cuh"

// SGD (dampening 0): d = g + wd·p; if μ ≠ 0 { buf = μ·buf + d; d = nesterov ? d + μ·buf : buf }; p −= lr·d.
// param, grad, momentum: (n)
MT_KERNEL mt_sgd_step(u64 n, float lr, float momentum, float weight_decay, int nesterov, float* param,
                      const float* grad, float* momentum_buf) {
    for (u64 i = MT_TID; i < n; i += MT_NTHREADS) {
        float p = param[i];
        float d = grad[i] + weight_decay * p;
        if (momentum != 0.0f) {
            float m = momentum * momentum_buf[i] + d;
            momentum_buf[i] = m;
            d = nesterov ? d + momentum * m : m;
        }
        param[i] = p - lr * d;
    }
}

// AdamW (decoupled weight decay). The bias corrections are computed once on the host in f64 exactly as
// the CPU does: decay = 1 − lr·wd, step_size = lr / (1 − β1^t), bc2_sqrt = √(1 − β2^t) as f32.
// param, grad, m, v: (n)
MT_KERNEL mt_adamw_step(u64 n, float beta1, float beta2, float eps, float decay, float step_size,
                        float bc2_sqrt, float* param, const float* grad, float* m, float* v) {
    for (u64 i = MT_TID; i < n; i += MT_NTHREADS) {
        float g = grad[i];
        float p = param[i] * decay;
        float mi = beta1 * m[i] + (1.0f - beta1) * g;
        float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
        m[i] = mi;
        v[i] = vi;
        float denom = sqrtf(vi) / bc2_sqrt + eps;
        param[i] = p - step_size * mi / denom;
    }
}
