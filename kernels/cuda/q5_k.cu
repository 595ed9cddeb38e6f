// Q5_K: super-blocks of 256 weights, 176 bytes: f16 d, f16 dmin, 12 bytes of packed 6-bit scales
// and minimums for eight sub-blocks of 32 (packed as in Q4_K), 32 bytes of fifth bits (qh), then
// 128 bytes of low 4 bits (laid out as Q4_K's). Weight l of sub-block j (l = 0..31) takes its low
// bits from byte 32 (j / 2) + l (low nibble for even j, high for odd) and its fifth bit from bit j
// of qh[l]; w = d * scale[j] * q - dmin * min[j].
//
// Blocks are 176 = 11 * 16 bytes and allocations 256-byte aligned, so every block is 16-byte
// aligned in global and in shared memory.
#include "common.cuh"

struct BlockQ5_K {
    static constexpr int BS = 176;
    static constexpr int QK = 256;
    static constexpr int ITEMS = 8;
    static constexpr int CHUNK = 12;
    static constexpr bool FLOAT_X = false;

    static __device__ __forceinline__ float dot(const u8* blk, int j, const int x[8], float2 ds) {
        const float d = h2f(ld_u16(blk));
        const float dmin = h2f(ld_u16(blk + 2));
        int sc, mn;
        k4_scale_min(blk + 4, j, sc, mn);
        const u8* qh = blk + 16;
        const u8* qs = blk + 48 + 32 * (j >> 1);
        const int shift = 4 * (j & 1);
        int s = 0;
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            const u32 lo = (ld_u32(qs + 4 * i) >> shift) & 0x0F0F0F0Fu;
            const u32 hi = ((ld_u32(qh + 4 * i) >> j) & 0x01010101u) << 4;
            s = dp4a((int)(lo | hi), x[i], s);
        }
        // The minimum is the same for all 32 weights, so its product is min * sum x = min * ds.y.
        return d * (float)sc * ds.x * (float)s - dmin * (float)mn * ds.y;
    }

    static __device__ __forceinline__ void dequant(const u8* blk, int j, float out[32]) {
        const float d = h2f(ld_u16(blk));
        const float dmin = h2f(ld_u16(blk + 2));
        int sc, mn;
        k4_scale_min(blk + 4, j, sc, mn);
        const float a = d * (float)sc;
        const float b = dmin * (float)mn;
        const u8* qh = blk + 16;
        const u8* qs = blk + 48 + 32 * (j >> 1);
        const int shift = 4 * (j & 1);
#pragma unroll
        for (int l = 0; l < 32; ++l) {
            const int q = ((qs[l] >> shift) & 0xF) | (((qh[l] >> j) & 1) << 4);
            out[l] = a * (float)q - b;
        }
    }
};

QUANT_KERNELS(q5_k, BlockQ5_K)
