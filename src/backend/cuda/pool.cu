// Max and average pooling over (N, C, D, H, W), matching the CPU reference bit for bit: windows are
// clipped to the input (padding is never a candidate for max; it counts in the average's divisor),
// max picks the FIRST maximum in (z, y, x) order, and backward gathers (one thread per input element,
// output windows visited in increasing order), so no atomics and the CPU's summation order.
// cuDNN's pooling is not used: its tie rule for max is unspecified, and its backward reads x and y,
// which the backend's avg_pool_backward does not receive.

struct PoolParams {
    unsigned int n, c;
    unsigned int in_dims[3];
    unsigned int kernel[3];
    unsigned int stride[3];
    unsigned int pad[3];
};

__device__ __forceinline__ unsigned int out_extent(const PoolParams& p, int a) {
    return (p.in_dims[a] + 2 * p.pad[a] - p.kernel[a]) / p.stride[a] + 1;
}

// Input range [lo, hi) of output position o along axis a, clipped to the input.
__device__ __forceinline__ void window(const PoolParams& p, int a, int o, int* lo, int* hi) {
    int start = o * (int)p.stride[a] - (int)p.pad[a];
    *lo = max(start, 0);
    *hi = min(start + (int)p.kernel[a], (int)p.in_dims[a]);
}

// Index within the plane of the first maximum of output o's window.
__device__ int argmax_of(const PoolParams& p, const float* xp, int oz, int oy, int ox) {
    int z0, z1, y0, y1, x0, x1;
    window(p, 0, oz, &z0, &z1);
    window(p, 1, oy, &y0, &y1);
    window(p, 2, ox, &x0, &x1);
    const int h = p.in_dims[1], w = p.in_dims[2];
    int best = (z0 * h + y0) * w + x0;
    for (int z = z0; z < z1; ++z)
        for (int y = y0; y < y1; ++y)
            for (int x = x0; x < x1; ++x) {
                int i = (z * h + y) * w + x;
                if (xp[i] > xp[best]) best = i;
            }
    return best;
}

extern "C" __global__ void max_pool_forward(PoolParams p, const float* x, float* y) {
    const unsigned int od = out_extent(p, 0), oh = out_extent(p, 1), ow = out_extent(p, 2);
    const unsigned long long so = (unsigned long long)od * oh * ow;
    const unsigned long long si = (unsigned long long)p.in_dims[0] * p.in_dims[1] * p.in_dims[2];
    const unsigned long long total = so * p.n * p.c;
    for (unsigned long long t = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; t < total;
         t += (unsigned long long)gridDim.x * blockDim.x) {
        unsigned long long plane = t / so, o = t % so;
        int ox = o % ow, oy = (o / ow) % oh, oz = o / ((unsigned long long)ow * oh);
        const float* xp = x + plane * si;
        int z0, z1, y0, y1, x0, x1;
        window(p, 0, oz, &z0, &z1);
        window(p, 1, oy, &y0, &y1);
        window(p, 2, ox, &x0, &x1);
        const int h = p.in_dims[1], w = p.in_dims[2];
        float m = __int_as_float(0xff800000);  // -inf
        for (int z = z0; z < z1; ++z)
            for (int yy = y0; yy < y1; ++yy)
                for (int xx = x0; xx < x1; ++xx) m = fmaxf(m, xp[(z * h + yy) * w + xx]);
        y[t] = m;
    }
}

// First and last output index along axis a whose window contains input index i.
__device__ __forceinline__ void outputs_of(const PoolParams& p, int a, int i, int* first, int* last) {
    int s = p.stride[a], k = p.kernel[a], pad = p.pad[a];
    int lo = i + pad - k + 1;  // o·s ≥ lo
    *first = lo <= 0 ? 0 : (lo + s - 1) / s;
    *last = min((i + pad) / s, (int)out_extent(p, a) - 1);
}

extern "C" __global__ void max_pool_backward(PoolParams p, const float* x, const float* dy, float* dx) {
    const unsigned int od = out_extent(p, 0), oh = out_extent(p, 1), ow = out_extent(p, 2);
    const unsigned long long so = (unsigned long long)od * oh * ow;
    const unsigned long long si = (unsigned long long)p.in_dims[0] * p.in_dims[1] * p.in_dims[2];
    const unsigned long long total = si * p.n * p.c;
    const int h = p.in_dims[1], w = p.in_dims[2];
    for (unsigned long long t = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; t < total;
         t += (unsigned long long)gridDim.x * blockDim.x) {
        unsigned long long plane = t / si;
        int i = t % si;
        int ix = i % w, iy = (i / w) % h, iz = i / (w * h);
        const float* xp = x + plane * si;
        const float* dyp = dy + plane * so;
        int z0, z1, y0, y1, x0, x1;
        outputs_of(p, 0, iz, &z0, &z1);
        outputs_of(p, 1, iy, &y0, &y1);
        outputs_of(p, 2, ix, &x0, &x1);
        float g = 0.0f;
        for (int z = z0; z <= z1; ++z)
            for (int yy = y0; yy <= y1; ++yy)
                for (int xx = x0; xx <= x1; ++xx)
                    if (argmax_of(p, xp, z, yy, xx) == i) g += dyp[(z * oh + yy) * ow + xx];
        dx[t] = g;
    }
}

extern "C" __global__ void avg_pool_forward(PoolParams p, const float* x, float* y) {
    const unsigned int od = out_extent(p, 0), oh = out_extent(p, 1), ow = out_extent(p, 2);
    const unsigned long long so = (unsigned long long)od * oh * ow;
    const unsigned long long si = (unsigned long long)p.in_dims[0] * p.in_dims[1] * p.in_dims[2];
    const unsigned long long total = so * p.n * p.c;
    const float inv = 1.0f / (float)(p.kernel[0] * p.kernel[1] * p.kernel[2]);
    for (unsigned long long t = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; t < total;
         t += (unsigned long long)gridDim.x * blockDim.x) {
        unsigned long long plane = t / so, o = t % so;
        int ox = o % ow, oy = (o / ow) % oh, oz = o / ((unsigned long long)ow * oh);
        const float* xp = x + plane * si;
        int z0, z1, y0, y1, x0, x1;
        window(p, 0, oz, &z0, &z1);
        window(p, 1, oy, &y0, &y1);
        window(p, 2, ox, &x0, &x1);
        const int h = p.in_dims[1], w = p.in_dims[2];
        float s = 0.0f;
        for (int z = z0; z < z1; ++z)
            for (int yy = y0; yy < y1; ++yy)
                for (int xx = x0; xx < x1; ++xx) s += xp[(z * h + yy) * w + xx];
        y[t] = s * inv;
    }
}

extern "C" __global__ void avg_pool_backward(PoolParams p, const float* dy, float* dx) {
    const unsigned int od = out_extent(p, 0), oh = out_extent(p, 1), ow = out_extent(p, 2);
    const unsigned long long so = (unsigned long long)od * oh * ow;
    const unsigned long long si = (unsigned long long)p.in_dims[0] * p.in_dims[1] * p.in_dims[2];
    const unsigned long long total = si * p.n * p.c;
    const float inv = 1.0f / (float)(p.kernel[0] * p.kernel[1] * p.kernel[2]);
    const int h = p.in_dims[1], w = p.in_dims[2];
    for (unsigned long long t = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; t < total;
         t += (unsigned long long)gridDim.x * blockDim.x) {
        unsigned long long plane = t / si;
        int i = t % si;
        int ix = i % w, iy = (i / w) % h, iz = i / (w * h);
        const float* dyp = dy + plane * so;
        int z0, z1, y0, y1, x0, x1;
        outputs_of(p, 0, iz, &z0, &z1);
        outputs_of(p, 1, iy, &y0, &y1);
        outputs_of(p, 2, ix, &x0, &x1);
        float g = 0.0f;
        for (int z = z0; z <= z1; ++z)
            for (int yy = y0; yy <= y1; ++yy)
                for (int xx = x0; xx <= x1; ++xx) g += dyp[(z * oh + yy) * ow + xx] * inv;
        dx[t] = g;
    }
}
