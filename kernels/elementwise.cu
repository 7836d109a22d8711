// Elementwise kernels: fill, scale, residual add, gradient accumulation, leaky ReLU, dropout and channel
// concatenation. Grid-stride loops over n elements; every output element is written by exactly one
// thread. Mirrors src/backend/cpu/{elementwise,activation}.rs.
#include "mt.cuh"

// y (n) = value
MT_KERNEL mt_fill(u64 n, float* y, float value) {
    for (u64 i = MT_TID; i < n; i += MT_NTHREADS) y[i] = value;
}

// y (n) *= alpha
MT_KERNEL mt_scale(u64 n, float alpha, float* y) {
    for (u64 i = MT_TID; i < n; i += MT_NTHREADS) y[i] *= alpha;
}

// y (n) = a (n) + b (n)
MT_KERNEL mt_add(u64 n, const float* a, const float* b, float* y) {
    for (u64 i = MT_TID; i < n; i += MT_NTHREADS) y[i] = a[i] + b[i];
}

// y (n) += x (n)
MT_KERNEL mt_accumulate(u64 n, const float* x, float* y) {
    for (u64 i = MT_TID; i < n; i += MT_NTHREADS) y[i] += x[i];
}

// y (n) = x > 0 ? x : slope·x
MT_KERNEL mt_leaky_relu_forward(u64 n, float slope, const float* x, float* y) {
    for (u64 i = MT_TID; i < n; i += MT_NTHREADS) {
        float v = x[i];
        y[i] = v > 0.0f ? v : slope * v;
    }
}

// dx (n) = x > 0 ? dy : slope·dy (the derivative at 0 is `slope`, as in PyTorch)
MT_KERNEL mt_leaky_relu_backward(u64 n, float slope, const float* x, const float* dy, float* dx) {
    for (u64 i = MT_TID; i < n; i += MT_NTHREADS) dx[i] = x[i] > 0.0f ? dy[i] : slope * dy[i];
}

// y (n) = x (n) · factor(seed, i); forward and backward are the same mask, regenerated from the seed.
// threshold = prob·2³² and keep_scale = 1/(1−prob) come from the host (threshold 0, scale 1: identity).
MT_KERNEL mt_dropout(u64 n, u64 seed, u64 threshold, float keep_scale, const float* x, float* y) {
    for (u64 i = MT_TID; i < n; i += MT_NTHREADS) y[i] = x[i] * mt_dropout_factor(seed, i, threshold, keep_scale);
}

// (N, Ca, S) ⧺ (N, Cb, S) → y (N, Ca+Cb, S); one thread per element of y.
MT_KERNEL mt_concat_channels_forward(u64 n, u64 spatial, const float* a, u64 ca, const float* b, u64 cb,
                                     float* y) {
    u64 a_len = ca * spatial, b_len = cb * spatial, row = a_len + b_len;
    u64 total = n * row;
    for (u64 i = MT_TID; i < total; i += MT_NTHREADS) {
        u64 sample = i / row, r = i % row;
        y[i] = r < a_len ? a[sample * a_len + r] : b[sample * b_len + (r - a_len)];
    }
}

// dy (N, Ca+Cb, S) → da (N, Ca, S), db (N, Cb, S); one thread per element of dy.
MT_KERNEL mt_concat_channels_backward(u64 n, u64 spatial, const float* dy, u64 ca, u64 cb, float* da,
                                      float* db) {
    u64 a_len = ca * spatial, b_len = cb * spatial, row = a_len + b_len;
    u64 total = n * row;
    for (u64 i = MT_TID; i < total; i += MT_NTHREADS) {
        u64 sample = i / row, r = i % row;
        if (r < a_len) {
            da[sample * a_len + r] = dy[i];
        } else {
            db[sample * b_len + (r - a_len)] = dy[i];
        }
    }
}
