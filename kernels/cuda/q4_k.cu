// Q4_K: super-blocks of 256 weights, 144 bytes: f16 d, f16 dmin, 12 bytes of packed 6-bit scales
// and minimums for eight sub-blocks of 32, then 128 bytes of 4-bit values. Sub-blocks 2i and
// 2i + 1 share bytes 32i..32i+32 of the values (low and high nibbles);
// w = d * scale[j] * q - dmin * min[j].
#include "common.cuh"

struct BlockQ4_K {
    static constexpr int BS = 144;
    static constexpr int QK = 256;
    static constexpr int ITEMS = 8;
    static constexpr int CHUNK = 16;
    static constexpr bool FLOAT_X = false;

    static __device__ __forceinline__ float dot(const u8* blk, int j, const int x[8], float2 ds) {
        const float d = h2f(ld_u16(blk));
        const float dmin = h2f(ld_u16(blk + 2));
        int sc, mn;
        k4_scale_min(blk + 4, j, sc, mn);
        const u8* qs = blk + 16 + 32 * (j >> 1);
        const int shift = 4 * (j & 1);
        int s = 0;
#pragma unroll
        for (int i = 0; i < 8; ++i) s = dp4a((int)(ld_u32(qs + 4 * i) >> shift) & 0x0F0F0F0F, x[i], s);
        return d * (float)sc * ds.x * (float)s - dmin * (float)mn * ds.y;
    }

    static __device__ __forceinline__ void dequant(const u8* blk, int j, float out[32]) {
        const float d = h2f(ld_u16(blk));
        const float dmin = h2f(ld_u16(blk + 2));
        int sc, mn;
        k4_scale_min(blk + 4, j, sc, mn);
        const float a = d * (float)sc;
        const float b = dmin * (float)mn;
        const u8* qs = blk + 16 + 32 * (j >> 1);
        const int shift = 4 * (j & 1);
#pragma unroll
        for (int l = 0; l < 32; ++l) out[l] = a * (float)((qs[l] >> shift) & 0xF) - b;
    }
};

QUANT_KERNELS(q4_k, BlockQ4_K)
