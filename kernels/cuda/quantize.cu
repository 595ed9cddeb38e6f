// Quantizes f32 activations for the integer matvec path: every 32 consecutive values share one
// scale d = max|x| / 127, q = round(x / d), and xds[g] = (d, d * sum q); the f32 values are
// copied beside them into xf (products with float weights read those). One warp per group.
#include "common.cuh"

extern "C" __global__ void quantize_q8(const float* __restrict__ x, i8* __restrict__ xq,
                                       float2* __restrict__ xds, float* __restrict__ xf, int n) {
    const int g = (int)((blockIdx.x * (size_t)blockDim.x + threadIdx.x) / WARP_SIZE);
    const int lane = threadIdx.x % WARP_SIZE;
    if (g >= n / 32) return;
    const size_t i = (size_t)g * 32;
    quantize_group(x[i + lane], lane, xq + i, xds + g, xf + i);
}
