// Q6_K: super-blocks of 256 weights, 210 bytes: 128 bytes of low 4 bits (ql), 64 bytes of high
// 2 bits (qh), 16 int8 scales (one per 16 weights), f16 d; w = d * scale * (q - 32).
// In each half of 128 weights, weight l + 32 k (k = 0..3, l = 0..31) takes its low bits from
// ql[l + 32 (k & 1)] (low nibble for k < 2, high for k >= 2) and its high bits from bits
// 2k..2k+1 of qh[l].
#include "common.cuh"

struct BlockQ6_K {
    static constexpr int BS = 210;
    static constexpr int QK = 256;
    static constexpr int ITEMS = 8;
    static constexpr int CHUNK = 12;
    static constexpr bool FLOAT_X = false;

    static __device__ __forceinline__ float dot(const u8* blk, int j, const int x[8], float2 ds) {
        const int half = j >> 2;
        const int k = j & 3;
        const u8* ql = blk + 64 * half + 32 * (k & 1);
        const u8* qh = blk + 128 + 32 * half;
        const i8* sc = (const i8*)(blk + 192 + 8 * half + 2 * k);
        const float d = h2f(ld_u16(blk + 208));
        const int nshift = 4 * (k >> 1);
        const int hshift = 2 * k;
        u32 lw[8];
        u32 hw[8];
        ld_words<8>(ql, lw);
        ld_words<8>(qh, hw);
        int s0 = 0, s1 = 0;
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            const u32 lo = (lw[i] >> nshift) & 0x0F0F0F0Fu;
            const u32 hi = ((hw[i] >> hshift) & 0x03030303u) << 4;
            const int q = (int)__vsub4(lo | hi, 0x20202020u);  // bytes q - 32, in -32..31
            if (i < 4) s0 = dp4a(q, x[i], s0);
            else s1 = dp4a(q, x[i], s1);
        }
        return d * ds.x * (float)((int)sc[0] * s0 + (int)sc[1] * s1);
    }

    static __device__ __forceinline__ void dequant(const u8* blk, int j, float out[32]) {
        const int half = j >> 2;
        const int k = j & 3;
        const u8* ql = blk + 64 * half + 32 * (k & 1);
        const u8* qh = blk + 128 + 32 * half;
        const i8* sc = (const i8*)(blk + 192 + 8 * half + 2 * k);
        const float d = h2f(ld_u16(blk + 208));
        const int nshift = 4 * (k >> 1);
        const int hshift = 2 * k;
#pragma unroll
        for (int l = 0; l < 32; ++l) {
            const int q = ((ql[l] >> nshift) & 0xF) | (((qh[l] >> hshift) & 3) << 4);
            out[l] = d * (float)sc[l / 16] * (float)(q - 32);
        }
    }
};

QUANT_KERNELS(q6_k, BlockQ6_K)
