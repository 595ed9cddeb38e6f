// Pairs of decode-step operations fused into one launch each, so a token step issues fewer
// kernels: RMSNorm with the int8 quantization of its output, and the gated activation with the
// quantization of its output. Each computes exactly what its two unfused kernels compute, and
// keeps the f32 values beside the int8 ones (xf) as quantize_q8 does. (The rotary embedding of
// queries and keys together is rope_qk_f32, in rope.cu.)
#include "common.cuh"

// y = x / sqrt(mean(x^2) + eps) * w for each of the gridDim.y rows of n (a multiple of 32), and
// y quantized into xq / xds as quantize_q8 would. Every block of a row sums the squares of the
// whole row (a re-read from L2, in the same order in every block, so all get the same scale) and
// then normalizes and quantizes one group of 32 per warp: groups run side by side instead of
// one after another in a single block. x must not be y.
extern "C" __global__ void rmsnorm_q8(const float* __restrict__ x, const float* __restrict__ w,
                                      float* __restrict__ y, i8* __restrict__ xq,
                                      float2* __restrict__ xds, float* __restrict__ xf, int n, float eps) {
    __shared__ float scratch[32];
    const size_t row = blockIdx.y;
    const float* xr = x + row * n;
    float* yr = y + row * n;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) ss += xr[i] * xr[i];
    ss = block_sum(ss, scratch);
    const float r = rsqrtf(ss / (float)n + eps);
    const int lane = threadIdx.x % WARP_SIZE;
    const int g = blockIdx.x * (blockDim.x / WARP_SIZE) + threadIdx.x / WARP_SIZE;
    if (g < n / 32) {
        const int i = g * 32 + lane;
        const float v = xr[i] * r * w[i];
        yr[i] = v;
        quantize_group(v, lane, xq + row * n + g * 32, xds + row * (n / 32) + g, xf + row * n + g * 32);
    }
}

// gate = act(gate) * up over n values (a multiple of 32; SiLU, or GELU-tanh when gelu != 0),
// then the result quantized into xq / xds. One warp per group of 32.
extern "C" __global__ void glu_q8(float* gate, const float* __restrict__ up, i8* __restrict__ xq,
                                  float2* __restrict__ xds, float* __restrict__ xf, int n, int gelu) {
    const int g = (int)((blockIdx.x * (size_t)blockDim.x + threadIdx.x) / WARP_SIZE);
    const int lane = threadIdx.x % WARP_SIZE;
    if (g >= n / 32) return;
    const size_t i = (size_t)g * 32 + lane;
    const float a = gate[i];
    const float v = (gelu ? gelu_tanh(a) : silu(a)) * up[i];
    gate[i] = v;
    quantize_group(v, lane, xq + (size_t)g * 32, xds + g, xf + (size_t)g * 32);
}
