// mt.cuh: the portable kernel dialect of medtrain. The same kernel source compiles under NVRTC (device)
// and as plain host C++ (kernels/host/emulate.cpp), so the index arithmetic of every kernel is tested
// against the CPU backend without a GPU. Keep this header stable: kernels/README.md documents it.
//
//   MT_KERNEL      a kernel entry point: `extern "C" __global__ void` on the device, `extern "C" void`
//                  on the host. Name every kernel `mt_<op>` (host symbols share the binary's namespace).
//   MT_HD          an inline helper callable from kernels on both sides (index arithmetic, hashes).
//   MT_TID         this thread's global index (u64).
//   MT_NTHREADS    threads in the launch (u64). Elementwise kernels use grid-stride loops:
//                    for (u64 i = MT_TID; i < n; i += MT_NTHREADS) { ... }
//   MT_NEG_INF     −∞ as a float (the start of a max fold).
//   MT_REDUCE_THREADS  threads of phase 1 of a deterministic reduction: launched with exactly this many
//                  threads, each writes one f64 partial; phase 2 is one thread summing them in order.
//                  No shared memory and no atomics anywhere, so host emulation is exact.
//
// Scalars are separate arguments (float, u64, int); never pass structs. Optional buffers are null
// pointers. Floating point follows IEEE without contraction on both sides (NVRTC --fmad=false, host
// -ffp-contract=off) so results match the Rust CPU reference operation for operation.
#ifndef MT_CUH
#define MT_CUH

typedef unsigned long long u64;
typedef long long i64;
typedef unsigned int u32;

#define MT_REDUCE_THREADS 1024ULL

#if defined(__CUDACC_RTC__) || defined(__CUDACC__)

#define MT_DEVICE 1
#define MT_KERNEL extern "C" __global__ void
#define MT_HD __host__ __device__ __forceinline__
#define MT_TID ((u64)blockIdx.x * (u64)blockDim.x + (u64)threadIdx.x)
#define MT_NTHREADS ((u64)gridDim.x * (u64)blockDim.x)
#define MT_NEG_INF (__int_as_float((int)0xff800000))

#else

#include <math.h>
#include <string.h>

#define MT_DEVICE 0
#define MT_KERNEL extern "C" void
#define MT_HD static inline

// The emulated launch position of the calling host thread, set by mt_host_set_thread before each
// emulated thread runs (kernels/host/emulate.cpp).
extern thread_local u64 mt_host_tid;
extern thread_local u64 mt_host_nthreads;
#define MT_TID (mt_host_tid)
#define MT_NTHREADS (mt_host_nthreads)
#define MT_NEG_INF (-INFINITY)

#endif

// ---- helpers shared by the kernels ----

MT_HD float mt_maxf(float a, float b) { return fmaxf(a, b); }

// splitmix64 finaliser: the dropout mask of element i depends only on (seed, i).
MT_HD u64 mt_mix64(u64 z) {
    z += 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

// Dropout keeps element i iff its 32-bit draw is at least `threshold` (= prob·2³², computed on the host).
MT_HD float mt_dropout_factor(u64 seed, u64 i, u64 threshold, float keep_scale) {
    u64 draw = mt_mix64(seed ^ (i * 0xD1B54A32D192ED03ULL)) >> 32;
    return draw < threshold ? 0.0f : keep_scale;
}

// A key whose signed order is the IEEE total order of f32 (Rust's f32::total_cmp).
MT_HD int mt_total_order_key(float x) {
#if MT_DEVICE
    int bits = __float_as_int(x);
#else
    int bits;
    memcpy(&bits, &x, sizeof bits);
#endif
    return bits ^ (int)(((unsigned)(bits >> 31)) >> 1);
}

#endif  // MT_CUH
