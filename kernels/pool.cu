// Max and average pooling over (N, C, D, H, W), matching the CPU reference (src/backend/cpu/pool.rs)
// bit for bit: windows are clipped to the input (padding is never a candidate for max; it counts in
// the average's divisor), max picks the FIRST maximum in (z, y, x) order, and backward gathers (one
// thread per input element, the output windows that contain it visited in increasing order), so there
// are no atomics and every sum has the CPU's order. cuDNN's pooling is not used: its tie rule for max
// is unspecified, and its backward reads x and y, which the backend's avg_pool_backward does not get.
//
// Every kernel takes the same geometry: `planes` = N·C, input extents (d, h, w), window (kd, kh, kw),
// stride (sd, sh, sw) and padding (pd, ph, pw). The launch layer checks that every window overlaps the
// input (pad < kernel) before launching.
#include "mt.cuh"

// Output extent of one axis (PyTorch's floor rule).
MT_HD i64 mt_pool_out_extent(i64 in, i64 k, i64 s, i64 pad) { return (in + 2 * pad - k) / s + 1; }

// Input range [lo, hi) of output position o along one axis, clipped to the input.
MT_HD void mt_pool_window(i64 o, i64 k, i64 s, i64 pad, i64 in, i64* lo, i64* hi) {
    i64 start = o * s - pad;
    *lo = start < 0 ? 0 : start;
    i64 end = start + k;
    *hi = end < in ? end : in;
}

// First and last output position along one axis whose window contains input index i (first > last:
// none).
MT_HD void mt_pool_outputs_of(i64 i, i64 k, i64 s, i64 pad, i64 out, i64* first, i64* last) {
    i64 lo = i + pad - k + 1;  // o·s ≥ lo
    *first = lo <= 0 ? 0 : (lo + s - 1) / s;
    i64 l = (i + pad) / s;
    *last = l < out - 1 ? l : out - 1;
}

// Index within the plane of the first maximum of output (oz, oy, ox)'s window.
MT_HD i64 mt_pool_argmax(const float* xp, i64 d, i64 h, i64 w, i64 kd, i64 kh, i64 kw, i64 sd, i64 sh,
                         i64 sw, i64 pd, i64 ph, i64 pw, i64 oz, i64 oy, i64 ox) {
    i64 z0, z1, y0, y1, x0, x1;
    mt_pool_window(oz, kd, sd, pd, d, &z0, &z1);
    mt_pool_window(oy, kh, sh, ph, h, &y0, &y1);
    mt_pool_window(ox, kw, sw, pw, w, &x0, &x1);
    i64 best = (z0 * h + y0) * w + x0;
    for (i64 z = z0; z < z1; ++z)
        for (i64 y = y0; y < y1; ++y)
            for (i64 x = x0; x < x1; ++x) {
                i64 i = (z * h + y) * w + x;
                if (xp[i] > xp[best]) best = i;
            }
    return best;
}

// y[plane, o] = max over o's clipped window (a fold from −∞, as the CPU's).
MT_KERNEL mt_max_pool_forward(u64 planes, u64 d, u64 h, u64 w, u64 kd, u64 kh, u64 kw, u64 sd, u64 sh,
                              u64 sw, u64 pd, u64 ph, u64 pw, const float* x, float* y) {
    const i64 od = mt_pool_out_extent(d, kd, sd, pd), oh = mt_pool_out_extent(h, kh, sh, ph),
              ow = mt_pool_out_extent(w, kw, sw, pw);
    const u64 so = (u64)(od * oh * ow), si = d * h * w, total = so * planes;
    for (u64 t = MT_TID; t < total; t += MT_NTHREADS) {
        const u64 plane = t / so;
        const i64 o = (i64)(t % so);
        const i64 ox = o % ow, oy = (o / ow) % oh, oz = o / (ow * oh);
        const float* xp = x + plane * si;
        i64 z0, z1, y0, y1, x0, x1;
        mt_pool_window(oz, kd, sd, pd, d, &z0, &z1);
        mt_pool_window(oy, kh, sh, ph, h, &y0, &y1);
        mt_pool_window(ox, kw, sw, pw, w, &x0, &x1);
        float m = MT_NEG_INF;
        for (i64 z = z0; z < z1; ++z)
            for (i64 yy = y0; yy < y1; ++yy)
                for (i64 xx = x0; xx < x1; ++xx) m = mt_maxf(m, xp[(z * (i64)h + yy) * (i64)w + xx]);
        y[t] = m;
    }
}

// dx[plane, i] = Σ dy[o] over the outputs whose first maximum is i, in increasing o.
MT_KERNEL mt_max_pool_backward(u64 planes, u64 d, u64 h, u64 w, u64 kd, u64 kh, u64 kw, u64 sd, u64 sh,
                               u64 sw, u64 pd, u64 ph, u64 pw, const float* x, const float* dy, float* dx) {
    const i64 od = mt_pool_out_extent(d, kd, sd, pd), oh = mt_pool_out_extent(h, kh, sh, ph),
              ow = mt_pool_out_extent(w, kw, sw, pw);
    const u64 so = (u64)(od * oh * ow), si = d * h * w, total = si * planes;
    for (u64 t = MT_TID; t < total; t += MT_NTHREADS) {
        const u64 plane = t / si;
        const i64 i = (i64)(t % si);
        const i64 ix = i % (i64)w, iy = (i / (i64)w) % (i64)h, iz = i / ((i64)w * (i64)h);
        const float* xp = x + plane * si;
        const float* dyp = dy + plane * so;
        i64 z0, z1, y0, y1, x0, x1;
        mt_pool_outputs_of(iz, kd, sd, pd, od, &z0, &z1);
        mt_pool_outputs_of(iy, kh, sh, ph, oh, &y0, &y1);
        mt_pool_outputs_of(ix, kw, sw, pw, ow, &x0, &x1);
        float g = 0.0f;
        for (i64 z = z0; z <= z1; ++z)
            for (i64 yy = y0; yy <= y1; ++yy)
                for (i64 xx = x0; xx <= x1; ++xx)
                    if (mt_pool_argmax(xp, d, h, w, kd, kh, kw, sd, sh, sw, pd, ph, pw, z, yy, xx) == i)
                        g += dyp[(z * oh + yy) * ow + xx];
        dx[t] = g;
    }
}

// y[plane, o] = (Σ over o's clipped window, from −0 like Rust's f32 sum) · 1/(kd·kh·kw).
MT_KERNEL mt_avg_pool_forward(u64 planes, u64 d, u64 h, u64 w, u64 kd, u64 kh, u64 kw, u64 sd, u64 sh,
                              u64 sw, u64 pd, u64 ph, u64 pw, const float* x, float* y) {
    const i64 od = mt_pool_out_extent(d, kd, sd, pd), oh = mt_pool_out_extent(h, kh, sh, ph),
              ow = mt_pool_out_extent(w, kw, sw, pw);
    const u64 so = (u64)(od * oh * ow), si = d * h * w, total = so * planes;
    // The CPU's divisor: the product of the window extents as f32, in (d, h, w) order.
    const float inv = 1.0f / ((float)kd * (float)kh * (float)kw);
    for (u64 t = MT_TID; t < total; t += MT_NTHREADS) {
        const u64 plane = t / so;
        const i64 o = (i64)(t % so);
        const i64 ox = o % ow, oy = (o / ow) % oh, oz = o / (ow * oh);
        const float* xp = x + plane * si;
        i64 z0, z1, y0, y1, x0, x1;
        mt_pool_window(oz, kd, sd, pd, d, &z0, &z1);
        mt_pool_window(oy, kh, sh, ph, h, &y0, &y1);
        mt_pool_window(ox, kw, sw, pw, w, &x0, &x1);
        float s = -0.0f;
        for (i64 z = z0; z < z1; ++z)
            for (i64 yy = y0; yy < y1; ++yy)
                for (i64 xx = x0; xx < x1; ++xx) s += xp[(z * (i64)h + yy) * (i64)w + xx];
        y[t] = s * inv;
    }
}

// dx[plane, i] = Σ dy[o]·inv over the outputs whose window contains i, in increasing o.
MT_KERNEL mt_avg_pool_backward(u64 planes, u64 d, u64 h, u64 w, u64 kd, u64 kh, u64 kw, u64 sd, u64 sh,
                               u64 sw, u64 pd, u64 ph, u64 pw, const float* dy, float* dx) {
    const i64 od = mt_pool_out_extent(d, kd, sd, pd), oh = mt_pool_out_extent(h, kh, sh, ph),
              ow = mt_pool_out_extent(w, kw, sw, pw);
    const u64 so = (u64)(od * oh * ow), si = d * h * w, total = si * planes;
    const float inv = 1.0f / ((float)kd * (float)kh * (float)kw);
    for (u64 t = MT_TID; t < total; t += MT_NTHREADS) {
        const u64 plane = t / si;
        const i64 i = (i64)(t % si);
        const i64 ix = i % (i64)w, iy = (i / (i64)w) % (i64)h, iz = i / ((i64)w * (i64)h);
        const float* dyp = dy + plane * so;
        i64 z0, z1, y0, y1, x0, x1;
        mt_pool_outputs_of(iz, kd, sd, pd, od, &z0, &z1);
        mt_pool_outputs_of(iy, kh, sh, ph, oh, &y0, &y1);
        mt_pool_outputs_of(ix, kw, sw, pw, ow, &x0, &x1);
        float g = 0.0f;
        for (i64 z = z0; z <= z1; ++z)
            for (i64 yy = y0; yy <= y1; ++yy)
                for (i64 xx = x0; xx <= x1; ++xx) g += dyp[(z * oh + yy) * ow + xx] * inv;
        dx[t] = g;
    }
}
