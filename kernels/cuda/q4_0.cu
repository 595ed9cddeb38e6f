// Q4_0: blocks of 32 weights, 18 bytes: f16 scale d, then 16 bytes of 4-bit values.
// Byte j holds weight j in its low nibble and weight j + 16 in its high nibble; w = d * (q - 8).
#include "common.cuh"

struct BlockQ4_0 {
    static constexpr int BS = 18;
    static constexpr int QK = 32;
    static constexpr int ITEMS = 1;
    static constexpr int CHUNK = 128;
    static constexpr bool FLOAT_X = false;

    static __device__ __forceinline__ float dot(const u8* blk, int, const int x[8], float2 ds) {
        const float d = h2f(ld_u16(blk));
        int s = 0;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int q = (int)ld_u32_a2(blk + 2 + 4 * i);
            s = dp4a(q & 0x0F0F0F0F, x[i], s);
            s = dp4a((q >> 4) & 0x0F0F0F0F, x[i + 4], s);
        }
        // sum (q - 8) x = sum q x - 8 sum x, and ds.y already holds d_x * sum x.
        return d * (ds.x * (float)s - 8.0f * ds.y);
    }

    static __device__ __forceinline__ void dequant(const u8* blk, int, float out[32]) {
        const float d = h2f(ld_u16(blk));
#pragma unroll
        for (int j = 0; j < 16; ++j) {
            const int q = blk[2 + j];
            out[j] = d * (float)((q & 0xF) - 8);
            out[j + 16] = d * (float)((q >> 4) - 8);
        }
    }
};

QUANT_KERNELS(q4_0, BlockQ4_0)
