// RMSNorm over rows of length n: y = x / sqrt(mean(x^2) + eps) * w. One block per row; w has n
// entries (per-head normalisation passes rows of head_dim).
#include "common.cuh"

// x and y may be the same buffer (in-place normalisation): each value is read before it is written,
// by the same thread, so they are not marked __restrict__.
extern "C" __global__ void rmsnorm_f32(const float* x, const float* __restrict__ w, float* y, int n,
                                       float eps) {
    __shared__ float scratch[32];
    const float* xr = x + (size_t)blockIdx.x * n;
    float* yr = y + (size_t)blockIdx.x * n;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) ss += xr[i] * xr[i];
    ss = block_sum(ss, scratch);
    const float r = rsqrtf(ss / (float)n + eps);
    for (int i = threadIdx.x; i < n; i += blockDim.x) yr[i] = xr[i] * r * w[i];
}
