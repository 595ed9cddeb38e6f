// Q4_1: blocks of 32 weights, 20 bytes: f16 scale d, f16 minimum m, 16 bytes of 4-bit values
// (nibble order as Q4_0); w = d * q + m.
#include "common.cuh"

struct BlockQ4_1 {
    static constexpr int BS = 20;
    static constexpr int QK = 32;
    static constexpr int ITEMS = 1;
    static constexpr int CHUNK = 128;
    static constexpr bool FLOAT_X = false;

    static __device__ __forceinline__ float dot(const u8* blk, int, const int x[8], float2 ds) {
        const float d = h2f(ld_u16(blk));
        const float m = h2f(ld_u16(blk + 2));
        int s = 0;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int q = (int)ld_u32(blk + 4 + 4 * i);
            s = dp4a(q & 0x0F0F0F0F, x[i], s);
            s = dp4a((q >> 4) & 0x0F0F0F0F, x[i + 4], s);
        }
        return d * ds.x * (float)s + m * ds.y;
    }

    static __device__ __forceinline__ void dequant(const u8* blk, int, float out[32]) {
        const float d = h2f(ld_u16(blk));
        const float m = h2f(ld_u16(blk + 2));
#pragma unroll
        for (int j = 0; j < 16; ++j) {
            const int q = blk[4 + j];
            out[j] = d * (float)(q & 0xF) + m;
            out[j + 16] = d * (float)(q >> 4) + m;
        }
    }
};

QUANT_KERNELS(q4_1, BlockQ4_1)
