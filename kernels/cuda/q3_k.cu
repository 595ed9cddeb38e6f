// Q3_K: super-blocks of 256 weights, 110 bytes: 32 bytes of third bits (hmask), 64 bytes of low
// 2 bits (qs), 12 bytes of packed 6-bit scales for sixteen sub-blocks of 16, f16 d.
// Weight l of item j (32 weights, sub-blocks 2j and 2j + 1; l = 0..31) takes its low bits from
// bits 2 (j % 4) .. +1 of qs[32 (j / 4) + l] and its third bit from bit j of hmask[l];
// w = d * (scale - 32) * (q - 4), where q = low | third << 2 (a clear third bit subtracts 4).
//
// Blocks are 110 bytes, so half of them start 2 bytes off a word: words are read with ld_words.
#include "common.cuh"

// Six-bit scale of sub-block i (0..15), still offset by 32: low four bits in the low (i < 8) or
// high (i >= 8) nibble of byte i % 8, high two bits at bit 2 (i / 4) of byte 8 + i % 4.
__device__ __forceinline__ int q3k_scale(const u8* sc, int i) {
    const int low = i < 8 ? sc[i] & 0xF : sc[i - 8] >> 4;
    const int high = (sc[8 + (i & 3)] >> (2 * (i >> 2))) & 3;
    return low | (high << 4);
}

struct BlockQ3_K {
    static constexpr int BS = 110;
    static constexpr int QK = 256;
    static constexpr int ITEMS = 8;
    static constexpr int CHUNK = 16;
    static constexpr bool FLOAT_X = false;

    static __device__ __forceinline__ float dot(const u8* blk, int j, const int x[8], float2 ds) {
        const float d = h2f(ld_u16(blk + 108));
        const int sc0 = q3k_scale(blk + 96, 2 * j) - 32;
        const int sc1 = q3k_scale(blk + 96, 2 * j + 1) - 32;
        const int shift = 2 * (j & 3);
        u32 hw[8];
        u32 qw[8];
        ld_words<8>(blk, hw);
        ld_words<8>(blk + 32 + 32 * (j >> 2), qw);
        int s0 = 0, s1 = 0;
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            const u32 lo = (qw[i] >> shift) & 0x03030303u;
            const u32 hi = ((hw[i] >> j) & 0x01010101u) << 2;
            const int q = (int)__vsub4(lo | hi, 0x04040404u);  // bytes q - 4, in -4..3
            if (i < 4) s0 = dp4a(q, x[i], s0);
            else s1 = dp4a(q, x[i], s1);
        }
        return d * ds.x * (float)(sc0 * s0 + sc1 * s1);
    }

    static __device__ __forceinline__ void dequant(const u8* blk, int j, float out[32]) {
        const float d = h2f(ld_u16(blk + 108));
        const float d0 = d * (float)(q3k_scale(blk + 96, 2 * j) - 32);
        const float d1 = d * (float)(q3k_scale(blk + 96, 2 * j + 1) - 32);
        const u8* qs = blk + 32 + 32 * (j >> 2);
        const int shift = 2 * (j & 3);
#pragma unroll
        for (int l = 0; l < 32; ++l) {
            const int low = (qs[l] >> shift) & 3;
            const int q = ((blk[l] >> j) & 1) ? low : low - 4;
            out[l] = (l < 16 ? d0 : d1) * (float)q;
        }
    }
};

QUANT_KERNELS(q3_k, BlockQ3_K)
