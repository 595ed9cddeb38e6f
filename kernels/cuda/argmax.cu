// Index of the largest value of each row (the lowest index on ties; NaN and -inf never win, and a
// row of nothing else gives -1), so a greedy decode step copies back one token id. One block per
// row. With `allowed` (one bit per column, bit k % 32 of word k / 32, the same for every row),
// only the columns whose bit is set compete: a grammar's token mask copied up instead of the
// logits copied down.
#include "common.cuh"

__device__ __forceinline__ void argmax_merge(float& v, int& i, float ov, int oi) {
    if (oi >= 0 && (i < 0 || ov > v || (ov == v && oi < i))) {
        v = ov;
        i = oi;
    }
}

extern "C" __global__ void argmax_f32(const float* __restrict__ x, int n, const u32* __restrict__ allowed,
                                      i32* __restrict__ out) {
    __shared__ float sv[32];
    __shared__ int si[32];
    const float* xr = x + (size_t)blockIdx.x * n;
    float best = 0.0f;
    int bi = -1;
    auto consider = [&](float v, int k) {
        if (v == v && v > -INFINITY && (bi < 0 || v > best) &&
            (!allowed || ((__ldg(allowed + (k >> 5)) >> (k & 31)) & 1u))) {
            best = v;
            bi = k;
        }
    };
    // 16-byte loads, several in flight per thread: a vocabulary row of 128k values is read in a
    // few dependent rounds instead of a hundred. Each thread sees its indices in increasing
    // order, so with strict comparisons it keeps the lowest index of equal values.
    const int n4 = ((size_t)xr % 16 == 0) ? n / 4 : 0;
    const float4* x4 = (const float4*)xr;
#pragma unroll 4
    for (int k = threadIdx.x; k < n4; k += blockDim.x) {
        const float4 v = x4[k];
        consider(v.x, 4 * k);
        consider(v.y, 4 * k + 1);
        consider(v.z, 4 * k + 2);
        consider(v.w, 4 * k + 3);
    }
    for (int k = 4 * n4 + threadIdx.x; k < n; k += blockDim.x) consider(xr[k], k);
#pragma unroll
    for (int o = WARP_SIZE / 2; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(FULL_MASK, best, o);
        const int oi = __shfl_xor_sync(FULL_MASK, bi, o);
        argmax_merge(best, bi, ov, oi);
    }
    const int lane = threadIdx.x % WARP_SIZE;
    const int warp = threadIdx.x / WARP_SIZE;
    if (lane == 0) {
        sv[warp] = best;
        si[warp] = bi;
    }
    __syncthreads();
    if (warp == 0) {
        const int nwarps = blockDim.x / WARP_SIZE;
        best = lane < nwarps ? sv[lane] : 0.0f;
        bi = lane < nwarps ? si[lane] : -1;
#pragma unroll
        for (int o = WARP_SIZE / 2; o > 0; o >>= 1) {
            const float ov = __shfl_xor_sync(FULL_MASK, best, o);
            const int oi = __shfl_xor_sync(FULL_MASK, bi, o);
            argmax_merge(best, bi, ov, oi);
        }
        if (lane == 0) out[blockIdx.x] = bi;
    }
}
