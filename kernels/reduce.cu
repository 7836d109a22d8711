// Reductions without shared memory or atomics, so every launch gives the same bits and the host
// emulation is exact: global average pooling (one thread per plane, sequential f64 sum) and the
// two-phase Σx² (MT_REDUCE_THREADS partials, then one thread adding them in order).
// Mirrors src/backend/cpu/{pool,update}.rs.
#include "mt.cuh"

// x (planes, spatial) → y (planes): the plane's mean, summed in f64 in index order.
MT_KERNEL mt_global_avg_pool_forward(u64 planes, u64 spatial, const float* x, float* y) {
    for (u64 p = MT_TID; p < planes; p += MT_NTHREADS) {
        const float* plane = x + p * spatial;
        double sum = 0.0;
        for (u64 j = 0; j < spatial; ++j) sum += (double)plane[j];
        y[p] = (float)(sum / (double)spatial);
    }
}

// dy (planes) → dx (planes, spatial) = dy / spatial; one thread per element of dx.
MT_KERNEL mt_global_avg_pool_backward(u64 planes, u64 spatial, const float* dy, float* dx) {
    float inv = 1.0f / (float)spatial;
    u64 total = planes * spatial;
    for (u64 i = MT_TID; i < total; i += MT_NTHREADS) dx[i] = dy[i / spatial] * inv;
}

// Phase 1 of Σx²: launched with exactly MT_REDUCE_THREADS threads; partials (MT_REDUCE_THREADS) f64.
// Thread t sums x[t], x[t + T], x[t + 2T], … in order.
MT_KERNEL mt_sum_squares_partial(u64 n, const float* x, double* partials) {
    u64 t = MT_TID;
    if (t >= MT_REDUCE_THREADS) return;
    double sum = 0.0;
    for (u64 i = t; i < n; i += MT_REDUCE_THREADS) {
        double v = (double)x[i];
        sum += v * v;
    }
    partials[t] = sum;
}

// Phase 2: one thread adds `count` partials in order into out[0].
MT_KERNEL mt_sum_partials(u64 count, const double* partials, double* out) {
    if (MT_TID != 0) return;
    double sum = 0.0;
    for (u64 t = 0; t < count; ++t) sum += partials[t];
    out[0] = sum;
}
