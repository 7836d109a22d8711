// Grad-CAM on the GPU: the four steps of src/explain/cam.rs (the CPU reference and specification),
// one kernel each, plus the Grad-CAM++ channel weights. Written in the portable dialect of mt.cuh so
// the same source also compiles as host C++ for checks without a GPU. Grid-stride loops, one output
// element per thread iteration, no shared memory and no atomics: every sum runs in a fixed order in
// double, as the CPU reference does, so results match it to rounding of the final float.
//
// Layouts: activations and gradients (N, C, D, H, W); weights (N, C); maps (N, D, H, W).
#include "mt.cuh"

// Mirrors `GradCamParams` in src/explain/cam.rs field for field.
struct GradCamParams {
    unsigned int n;       // batch
    unsigned int c;       // channels of the layer
    unsigned int dims[3]; // (D, H, W) of the layer
};

// Mirrors `UpsampleParams` in src/explain/cam.rs field for field.
struct UpsampleParams {
    unsigned int n;
    unsigned int from[3]; // (D, H, W) of the layer's map
    unsigned int to[3];   // (D, H, W) of the network input
};

MT_HD u64 gc_spatial(const unsigned int d[3]) { return (u64)d[0] * d[1] * d[2]; }

// weights[n, c] = mean_s grads[n, c, s]                                       grads (N, C, S)
MT_KERNEL mt_gradcam_pool_weights(GradCamParams p, const float* grads, float* weights) {
    const u64 s = gc_spatial(p.dims);
    const u64 total = (u64)p.n * p.c;
    for (u64 i = MT_TID; i < total; i += MT_NTHREADS) {
        const float* g = grads + i * s;
        double acc = 0.0;
        for (u64 k = 0; k < s; ++k) acc += (double)g[k];
        weights[i] = (float)(acc / (double)s);
    }
}

// Grad-CAM++: weights[n, c] = sum_s alpha * relu(g), alpha = g^2 / (2 g^2 + sum_s A * g^3), 0 where
// the denominator is 0.                                         acts, grads (N, C, S); weights (N, C)
MT_KERNEL mt_gradcam_pp_weights(GradCamParams p, const float* acts, const float* grads, float* weights) {
    const u64 s = gc_spatial(p.dims);
    const u64 total = (u64)p.n * p.c;
    for (u64 i = MT_TID; i < total; i += MT_NTHREADS) {
        const float* a = acts + i * s;
        const float* g = grads + i * s;
        double sum_a = 0.0;
        for (u64 k = 0; k < s; ++k) sum_a += (double)a[k];
        double w = 0.0;
        for (u64 k = 0; k < s; ++k) {
            const double gv = (double)g[k];
            const double g2 = gv * gv;
            const double denom = 2.0 * g2 + sum_a * g2 * gv;
            const double alpha = denom != 0.0 ? g2 / denom : 0.0;
            w += alpha * (gv > 0.0 ? gv : 0.0);
        }
        weights[i] = (float)w;
    }
}

// cam[n, s] = max(0, sum_c weights[n, c] * acts[n, c, s])          acts (N, C, S); cam (N, S)
MT_KERNEL mt_gradcam_weighted_sum(GradCamParams p, const float* acts, const float* weights, float* cam) {
    const u64 s = gc_spatial(p.dims);
    const u64 total = (u64)p.n * s;
    for (u64 i = MT_TID; i < total; i += MT_NTHREADS) {
        const u64 n = i / s, k = i % s;
        double acc = 0.0;
        for (u64 c = 0; c < p.c; ++c) {
            acc += (double)weights[n * p.c + c] * (double)acts[(n * p.c + c) * s + k];
        }
        cam[i] = acc > 0.0 ? (float)acc : 0.0f;
    }
}

// PyTorch's source index for align_corners=False (float arithmetic as in the CPU reference).
MT_HD void gc_source_index(u64 dst, unsigned int in_len, unsigned int out_len, u64* i0, u64* i1, float* l) {
    const float scale = (float)in_len / (float)out_len;
    float src = scale * ((float)dst + 0.5f) - 0.5f;
    if (src < 0.0f) src = 0.0f;
    u64 a = (u64)src;
    if (a > (u64)in_len - 1) a = (u64)in_len - 1;
    *i0 = a;
    *i1 = a + 1 < (u64)in_len ? a + 1 : a;
    *l = src - (float)a;
}

// Trilinear (bilinear when D = 1) up-sampling, align_corners=False.  cam (N, from); out (N, to)
MT_KERNEL mt_gradcam_upsample(UpsampleParams p, const float* cam, float* out) {
    const u64 fs = gc_spatial(p.from), ts = gc_spatial(p.to);
    const u64 total = (u64)p.n * ts;
    const u64 fh = p.from[1], fw = p.from[2];
    for (u64 i = MT_TID; i < total; i += MT_NTHREADS) {
        const u64 m = i / ts, r = i % ts;
        const u64 z = r / ((u64)p.to[1] * p.to[2]);
        const u64 y = (r / p.to[2]) % p.to[1];
        const u64 x = r % p.to[2];
        u64 z0, z1, y0, y1, x0, x1;
        float lz, ly, lx;
        gc_source_index(z, p.from[0], p.to[0], &z0, &z1, &lz);
        gc_source_index(y, p.from[1], p.to[1], &y0, &y1, &ly);
        gc_source_index(x, p.from[2], p.to[2], &x0, &x1, &lx);
        const float* src = cam + m * fs;
        float plane[2];
        const u64 zs[2] = {z0, z1};
        for (int j = 0; j < 2; ++j) {
            const float* sz = src + zs[j] * fh * fw;
            const float top = (1.0f - lx) * sz[y0 * fw + x0] + lx * sz[y0 * fw + x1];
            const float bottom = (1.0f - lx) * sz[y1 * fw + x0] + lx * sz[y1 * fw + x1];
            plane[j] = (1.0f - ly) * top + ly * bottom;
        }
        out[i] = (1.0f - lz) * plane[0] + lz * plane[1];
    }
}

// minmax[2m], minmax[2m+1] = min and max of map m (one thread per map).    maps (N, S); minmax (N, 2)
MT_KERNEL mt_gradcam_minmax(u64 n, u64 spatial, const float* maps, float* minmax) {
    for (u64 m = MT_TID; m < n; m += MT_NTHREADS) {
        const float* v = maps + m * spatial;
        float lo = v[0], hi = v[0];
        for (u64 k = 1; k < spatial; ++k) {
            lo = v[k] < lo ? v[k] : lo;
            hi = v[k] > hi ? v[k] : hi;
        }
        minmax[2 * m] = lo;
        minmax[2 * m + 1] = hi;
    }
}

// maps = (maps - min) / (max - min) per map; a flat (or non-finite range) map becomes 0.
MT_KERNEL mt_gradcam_normalise(u64 n, u64 spatial, const float* minmax, float* maps) {
    const u64 total = n * spatial;
    for (u64 i = MT_TID; i < total; i += MT_NTHREADS) {
        const u64 m = i / spatial;
        const float lo = minmax[2 * m], range = minmax[2 * m + 1] - lo;
        const bool ok = range > 0.0f && range - range == 0.0f; // finite and positive
        maps[i] = ok ? (maps[i] - lo) / range : 0.0f;
    }
}
