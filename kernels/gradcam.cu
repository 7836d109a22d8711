// Grad-CAM on the GPU: the four steps of src/explain/cam.rs (the CPU reference and specification),
// one kernel each, plus the Grad-CAM++ channel weights, the LayerCAM sum and the per-map min/max the normalisation
// needs. Grid-stride loops, one output element per thread iteration, no shared memory and no atomics:
// every sum runs in a fixed order in double, as the CPU reference does, so results match it exactly.
//
// Layouts: activations and gradients (N, C, S) with S = D·H·W; weights (N, C); maps (N, S).
#include "mt.cuh"

// weights[p] = mean_s grads[p, s] over the planes p = (n, c).              grads (planes, spatial)
MT_KERNEL mt_gradcam_pool_weights(u64 planes, u64 spatial, const float* grads, float* weights) {
    for (u64 p = MT_TID; p < planes; p += MT_NTHREADS) {
        const float* g = grads + p * spatial;
        double acc = 0.0;
        for (u64 k = 0; k < spatial; ++k) acc += (double)g[k];
        weights[p] = (float)(acc / (double)spatial);
    }
}

// Grad-CAM++: weights[p] = sum_s alpha * relu(g), alpha = g^2 / (2 g^2 + (sum_s A) g^3), 0 where the
// denominator is 0.                                   acts, grads (planes, spatial); weights (planes)
MT_KERNEL mt_gradcam_pp_weights(u64 planes, u64 spatial, const float* acts, const float* grads, float* weights) {
    for (u64 p = MT_TID; p < planes; p += MT_NTHREADS) {
        const float* a = acts + p * spatial;
        const float* g = grads + p * spatial;
        double sum_a = 0.0;
        for (u64 k = 0; k < spatial; ++k) sum_a += (double)a[k];
        double w = 0.0;
        for (u64 k = 0; k < spatial; ++k) {
            const double gv = (double)g[k];
            const double g2 = gv * gv;
            const double denom = 2.0 * g2 + sum_a * g2 * gv;
            const double alpha = denom != 0.0 ? g2 / denom : 0.0;
            w += alpha * (gv > 0.0 ? gv : 0.0);
        }
        weights[p] = (float)w;
    }
}

// cam[n, s] = max(0, sum_c weights[n, c] * acts[n, c, s])     acts (n, c, spatial); cam (n, spatial)
MT_KERNEL mt_gradcam_weighted_sum(u64 n, u64 c, u64 spatial, const float* acts, const float* weights, float* cam) {
    const u64 total = n * spatial;
    for (u64 i = MT_TID; i < total; i += MT_NTHREADS) {
        const u64 m = i / spatial, k = i % spatial;
        double acc = 0.0;
        for (u64 ch = 0; ch < c; ++ch) {
            acc += (double)weights[m * c + ch] * (double)acts[(m * c + ch) * spatial + k];
        }
        cam[i] = acc > 0.0 ? (float)acc : 0.0f;
    }
}

// LayerCAM: cam[n, s] = max(0, sum_c max(0, grads[n, c, s]) * acts[n, c, s]), in double, channel order.
//                                                  acts, grads (n, c, spatial); cam (n, spatial)
MT_KERNEL mt_gradcam_layer_sum(u64 n, u64 c, u64 spatial, const float* acts, const float* grads, float* cam) {
    const u64 total = n * spatial;
    for (u64 i = MT_TID; i < total; i += MT_NTHREADS) {
        const u64 m = i / spatial, k = i % spatial;
        double acc = 0.0;
        for (u64 ch = 0; ch < c; ++ch) {
            const float g = grads[(m * c + ch) * spatial + k];
            acc += (double)(g > 0.0f ? g : 0.0f) * (double)acts[(m * c + ch) * spatial + k];
        }
        cam[i] = acc > 0.0 ? (float)acc : 0.0f;
    }
}

// The source index along one axis (float arithmetic as in the CPU reference, source_index in
// src/explain/cam.rs): src = scale * (dst + before) + after, clamped to [0, in_len - 1]; the two
// neighbours and the weight of the second. PyTorch's align_corners=False is scale = in/out,
// before = 0.5, after = -0.5; a receptive-field-centred grid is scale = 1/stride, before = -offset.
MT_HD void mt_gradcam_source(u64 dst, u64 in_len, float scale, float before, float after, u64* i0, u64* i1,
                             float* l) {
    float src = scale * ((float)dst + before) + after;
    const float last = (float)(in_len - 1);
    if (src < 0.0f) src = 0.0f;
    if (src > last) src = last;
    u64 a = (u64)src;
    if (a > in_len - 1) a = in_len - 1;
    *i0 = a;
    *i1 = a + 1 < in_len ? a + 1 : a;
    *l = src - (float)a;
}

// Trilinear (bilinear when both depths are 1) up-sampling; axis a reads the source through
// (scale, before, after) = (s*, b*, a*) for z, y, x.    cam (n, fd, fh, fw); out (n, td, th, tw)
MT_KERNEL mt_gradcam_upsample(u64 n, u64 fd, u64 fh, u64 fw, u64 td, u64 th, u64 tw, float sz, float bz, float az,
                              float sy, float by, float ay, float sx, float bx, float ax, const float* cam,
                              float* out) {
    const u64 fs = fd * fh * fw, ts = td * th * tw;
    const u64 total = n * ts;
    for (u64 i = MT_TID; i < total; i += MT_NTHREADS) {
        const u64 m = i / ts, r = i % ts;
        const u64 z = r / (th * tw), y = (r / tw) % th, x = r % tw;
        u64 z0, z1, y0, y1, x0, x1;
        float lz, ly, lx;
        mt_gradcam_source(z, fd, sz, bz, az, &z0, &z1, &lz);
        mt_gradcam_source(y, fh, sy, by, ay, &y0, &y1, &ly);
        mt_gradcam_source(x, fw, sx, bx, ax, &x0, &x1, &lx);
        const float* src = cam + m * fs;
        const float* s0 = src + z0 * fh * fw;
        const float* s1 = src + z1 * fh * fw;
        const float top0 = (1.0f - lx) * s0[y0 * fw + x0] + lx * s0[y0 * fw + x1];
        const float bottom0 = (1.0f - lx) * s0[y1 * fw + x0] + lx * s0[y1 * fw + x1];
        const float plane0 = (1.0f - ly) * top0 + ly * bottom0;
        const float top1 = (1.0f - lx) * s1[y0 * fw + x0] + lx * s1[y0 * fw + x1];
        const float bottom1 = (1.0f - lx) * s1[y1 * fw + x0] + lx * s1[y1 * fw + x1];
        const float plane1 = (1.0f - ly) * top1 + ly * bottom1;
        out[i] = (1.0f - lz) * plane0 + lz * plane1;
    }
}

// minmax[2m], minmax[2m+1] = min and max of map m, one thread per map.    maps (n, spatial); minmax (n, 2)
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

// maps = (maps - min) / (max - min) per map; a flat map (or a non-finite range) becomes 0.
MT_KERNEL mt_gradcam_normalise(u64 n, u64 spatial, const float* minmax, float* maps) {
    const u64 total = n * spatial;
    for (u64 i = MT_TID; i < total; i += MT_NTHREADS) {
        const u64 m = i / spatial;
        const float lo = minmax[2 * m];
        const float range = minmax[2 * m + 1] - lo;
        const int ok = range > 0.0f && range - range == 0.0f; // positive and finite
        maps[i] = ok ? (maps[i] - lo) / range : 0.0f;
    }
}
