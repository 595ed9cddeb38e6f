// IQ4_XS: super-blocks of 256 weights, 136 bytes: f16 d, u16 of high scale bits (bits 2j..2j+1
// for sub-block j), 4 bytes of low scale bits (sub-block j in byte j / 2, low nibble first), then
// for each of the eight sub-blocks of 32, 16 bytes of 4-bit indices laid out as IQ4_NL's;
// w = d * (scale - 32) * level[q] with the 6-bit scale and the levels of IQ4_NL.
//
// Blocks are 136 = 8 * 17 bytes and allocations 256-byte aligned, so every block (and its
// indices) is 8-byte aligned in global and in shared memory.
#include "common.cuh"

// Six-bit scale of sub-block j (0..7), still offset by 32.
__device__ __forceinline__ int iq4xs_scale(const u8* blk, int j) {
    const int low = (blk[4 + (j >> 1)] >> (4 * (j & 1))) & 0xF;
    const int high = (ld_u16(blk + 2) >> (2 * j)) & 3;
    return low | (high << 4);
}

struct BlockIQ4_XS {
    static constexpr int BS = 136;
    static constexpr int QK = 256;
    static constexpr int ITEMS = 8;
    static constexpr int CHUNK = 16;
    static constexpr bool FLOAT_X = false;

    static __device__ __forceinline__ float dot(const u8* blk, int j, const int x[8], float2 ds) {
        const float d = h2f(ld_u16(blk));
        const int sc = iq4xs_scale(blk, j) - 32;
        const u8* qs = blk + 8 + 16 * j;
        int s = 0;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const u32 q = ld_u32(qs + 4 * i);
            s = dp4a(iq4_levels4(q & 0x0F0F0F0Fu), x[i], s);
            s = dp4a(iq4_levels4((q >> 4) & 0x0F0F0F0Fu), x[i + 4], s);
        }
        return d * (float)sc * ds.x * (float)s;
    }

    static __device__ __forceinline__ void dequant(const u8* blk, int j, float out[32]) {
        const float dl = h2f(ld_u16(blk)) * (float)(iq4xs_scale(blk, j) - 32);
        const u8* qs = blk + 8 + 16 * j;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const u32 q = ld_u32(qs + 4 * i);
            const int lo = iq4_levels4(q & 0x0F0F0F0Fu);
            const int hi = iq4_levels4((q >> 4) & 0x0F0F0F0Fu);
#pragma unroll
            for (int k = 0; k < 4; ++k) {
                out[4 * i + k] = dl * (float)(i8)(lo >> (8 * k));
                out[16 + 4 * i + k] = dl * (float)(i8)(hi >> (8 * k));
            }
        }
    }
};

QUANT_KERNELS(iq4_xs, BlockIQ4_XS)
