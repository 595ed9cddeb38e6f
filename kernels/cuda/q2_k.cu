// Q2_K: super-blocks of 256 weights, 84 bytes: 16 bytes of sub-block scales and minimums (one
// byte per sub-block of 16: scale in the low nibble, minimum in the high one), 64 bytes of 2-bit
// values (qs), f16 d, f16 dmin. Weight l of item j (32 weights, sub-blocks 2j and 2j + 1;
// l = 0..31) is bits 2 (j % 4) .. +1 of qs[32 (j / 4) + l]; w = d * scale * q - dmin * min.
//
// Blocks are 84 = 4 * 21 bytes and allocations 256-byte aligned, so every block (and its 2-bit
// values) is 4-byte aligned in global and in shared memory.
#include "common.cuh"

struct BlockQ2_K {
    static constexpr int BS = 84;
    static constexpr int QK = 256;
    static constexpr int ITEMS = 8;
    static constexpr int CHUNK = 24;
    static constexpr bool FLOAT_X = false;

    static __device__ __forceinline__ float dot(const u8* blk, int j, const int x[8], float2 ds) {
        const float d = h2f(ld_u16(blk + 80));
        const float dmin = h2f(ld_u16(blk + 82));
        const int b0 = blk[2 * j];
        const int b1 = blk[2 * j + 1];
        const u8* qs = blk + 16 + 32 * (j >> 2);
        const int shift = 2 * (j & 3);
        int s0 = 0, s1 = 0, x0 = 0;
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            const int q = (int)((ld_u32(qs + 4 * i) >> shift) & 0x03030303u);
            if (i < 4) {
                s0 = dp4a(q, x[i], s0);
                x0 = dp4a(0x01010101, x[i], x0);
            } else {
                s1 = dp4a(q, x[i], s1);
            }
        }
        // The two sub-blocks have minimums m0 and m1: m0 X0 + m1 X1 = (m0 - m1) X0 + m1 X, where
        // X0 is the sum of the first 16 int8 activations, X that of all 32 (ds.y = d_x * X).
        const int sq = (b0 & 0xF) * s0 + (b1 & 0xF) * s1;
        const int m0 = b0 >> 4;
        const int m1 = b1 >> 4;
        return ds.x * (d * (float)sq - dmin * (float)((m0 - m1) * x0)) - dmin * (float)m1 * ds.y;
    }

    static __device__ __forceinline__ void dequant(const u8* blk, int j, float out[32]) {
        const float d = h2f(ld_u16(blk + 80));
        const float dmin = h2f(ld_u16(blk + 82));
        const int b0 = blk[2 * j];
        const int b1 = blk[2 * j + 1];
        const float a0 = d * (float)(b0 & 0xF);
        const float a1 = d * (float)(b1 & 0xF);
        const float m0 = dmin * (float)(b0 >> 4);
        const float m1 = dmin * (float)(b1 >> 4);
        const u8* qs = blk + 16 + 32 * (j >> 2);
        const int shift = 2 * (j & 3);
#pragma unroll
        for (int l = 0; l < 32; ++l) {
            const float q = (float)((qs[l] >> shift) & 3);
            out[l] = l < 16 ? a0 * q - m0 : a1 * q - m1;
        }
    }
};

QUANT_KERNELS(q2_k, BlockQ2_K)
