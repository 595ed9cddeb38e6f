// Q8_0: blocks of 32 weights, 34 bytes: f16 scale d, then 32 int8 values; w = d * q.
#include "common.cuh"

struct BlockQ8_0 {
    static constexpr int BS = 34;
    static constexpr int QK = 32;
    static constexpr int ITEMS = 1;
    static constexpr int CHUNK = 64;
    static constexpr bool FLOAT_X = false;

    static __device__ __forceinline__ float dot(const u8* blk, int, const int x[8], float2 ds) {
        const float d = h2f(ld_u16(blk));
        u32 q[8];
        ld_words<8>(blk + 2, q);
        int s = 0;
#pragma unroll
        for (int i = 0; i < 8; ++i) s = dp4a((int)q[i], x[i], s);
        return d * ds.x * (float)s;
    }

    static __device__ __forceinline__ void dequant(const u8* blk, int, float out[32]) {
        const float d = h2f(ld_u16(blk));
#pragma unroll
        for (int j = 0; j < 32; ++j) out[j] = d * (float)(i8)blk[2 + j];
    }
};

QUANT_KERNELS(q8_0, BlockQ8_0)
