// Quantizes f32 activations for the integer matvec path: every 32 consecutive values share one
// scale d = max|x| / 127, q = round(x / d), and xds[g] = (d, d * sum q). One warp per group.
#include "common.cuh"

extern "C" __global__ void quantize_q8(const float* __restrict__ x, i8* __restrict__ xq,
                                       float2* __restrict__ xds, int n) {
    const int g = (int)((blockIdx.x * (size_t)blockDim.x + threadIdx.x) / WARP_SIZE);
    const int lane = threadIdx.x % WARP_SIZE;
    if (g >= n / 32) return;
    const float v = x[(size_t)g * 32 + lane];
    const float amax = warp_max(fabsf(v));
    const float d = amax / 127.0f;
    const int q = amax == 0.0f ? 0 : (int)roundf(v / d);
    int sum = q;
#pragma unroll
    for (int o = WARP_SIZE / 2; o > 0; o >>= 1) sum += __shfl_xor_sync(FULL_MASK, sum, o);
    xq[(size_t)g * 32 + lane] = (i8)q;
    if (lane == 0) xds[g] = make_float2(d, d * (float)sum);
}
