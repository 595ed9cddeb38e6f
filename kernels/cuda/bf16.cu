// BF16: plain bfloat16 weights (the top half of an f32), taken 32 at a time (64 bytes) as if
// they were blocks, so they stream through the same windows as the block formats. Products with
// them use the f32 activations rather than their int8 form, as the CPU backend does for float
// weights.
//
// Rows are whole multiples of 64 bytes and allocations are 256-byte aligned, so every block is
// 16-byte aligned in global and in shared memory.
#include "common.cuh"

__device__ __forceinline__ void bf16_pair(u32 w, float& lo, float& hi) {
    lo = __uint_as_float(w << 16);
    hi = __uint_as_float(w & 0xFFFF0000u);
}

struct BlockBF16 {
    static constexpr int BS = 64;
    static constexpr int QK = 32;
    static constexpr int ITEMS = 1;
    static constexpr int CHUNK = 32;
    static constexpr bool FLOAT_X = true;

    static __device__ __forceinline__ float dotf(const u8* blk, int, const float* __restrict__ x) {
        const uint4* w = (const uint4*)blk;
        const float4* xv = (const float4*)x;
        float s = 0.0f;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const uint4 r = w[i];
            const float4 b0 = __ldg(xv + 2 * i);
            const float4 b1 = __ldg(xv + 2 * i + 1);
            float a0, a1, a2, a3, a4, a5, a6, a7;
            bf16_pair(r.x, a0, a1);
            bf16_pair(r.y, a2, a3);
            bf16_pair(r.z, a4, a5);
            bf16_pair(r.w, a6, a7);
            s += a0 * b0.x + a1 * b0.y + a2 * b0.z + a3 * b0.w + a4 * b1.x + a5 * b1.y + a6 * b1.z + a7 * b1.w;
        }
        return s;
    }

    static __device__ __forceinline__ void dequant(const u8* blk, int, float out[32]) {
        const uint4* w = (const uint4*)blk;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const uint4 r = w[i];
            bf16_pair(r.x, out[8 * i], out[8 * i + 1]);
            bf16_pair(r.y, out[8 * i + 2], out[8 * i + 3]);
            bf16_pair(r.z, out[8 * i + 4], out[8 * i + 5]);
            bf16_pair(r.w, out[8 * i + 6], out[8 * i + 7]);
        }
    }
};

QUANT_KERNELS(bf16, BlockBF16)
