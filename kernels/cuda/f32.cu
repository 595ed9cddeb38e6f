// F32: plain f32 weights, taken 32 at a time (128 bytes) as if they were blocks, so they stream
// through the same windows as the block formats. Products with them use the f32 activations
// rather than their int8 form, as the CPU backend does for float weights: a mixture-of-experts
// router (always F32) then ranks the experts as the exact computation does.
//
// Rows are whole multiples of 128 bytes and allocations are 256-byte aligned, so every block
// is 16-byte aligned in global and in shared memory.
#include "common.cuh"

struct BlockF32 {
    static constexpr int BS = 128;
    static constexpr int QK = 32;
    static constexpr int ITEMS = 1;
    static constexpr int CHUNK = 16;
    static constexpr bool FLOAT_X = true;

    static __device__ __forceinline__ float dotf(const u8* blk, int, const float* __restrict__ x) {
        const float4* w = (const float4*)blk;
        const float4* xv = (const float4*)x;
        float s = 0.0f;
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            const float4 a = w[i];
            const float4 b = __ldg(xv + i);
            s += a.x * b.x + a.y * b.y + a.z * b.z + a.w * b.w;
        }
        return s;
    }

    static __device__ __forceinline__ void dequant(const u8* blk, int, float out[32]) {
        const float4* w = (const float4*)blk;
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            const float4 a = w[i];
            out[4 * i] = a.x;
            out[4 * i + 1] = a.y;
            out[4 * i + 2] = a.z;
            out[4 * i + 3] = a.w;
        }
    }
};

QUANT_KERNELS(f32, BlockF32)
