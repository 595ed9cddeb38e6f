// Q5_1: blocks of 32 weights, 24 bytes: f16 scale d, f16 minimum m, 32 high bits (u32,
// little-endian), then 16 bytes of low nibbles (order as Q4_0). Bit j of the high word is bit 4
// of weight j; w = d * q + m.
//
// Blocks are 24 bytes and allocations 256-byte aligned, so every block (and its high word and
// nibbles) is 8-byte aligned in global and in shared memory.
#include "common.cuh"

// Moves the low four bits of b to bit 4 of each of four bytes.
__device__ __forceinline__ int spread_bits4(u32 b) {
    return (int)(((b & 1u) << 4) | ((b & 2u) << 11) | ((b & 4u) << 18) | ((b & 8u) << 25));
}

struct BlockQ5_1 {
    static constexpr int BS = 24;
    static constexpr int QK = 32;
    static constexpr int ITEMS = 1;
    static constexpr int CHUNK = 96;
    static constexpr bool FLOAT_X = false;

    static __device__ __forceinline__ float dot(const u8* blk, int, const int x[8], float2 ds) {
        const float d = h2f(ld_u16(blk));
        const float m = h2f(ld_u16(blk + 2));
        const u32 qh = ld_u32(blk + 4);
        int s = 0;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int q = (int)ld_u32(blk + 8 + 4 * i);
            const int lo = (q & 0x0F0F0F0F) | spread_bits4(qh >> (4 * i));
            const int hi = ((q >> 4) & 0x0F0F0F0F) | spread_bits4(qh >> (4 * i + 16));
            s = dp4a(lo, x[i], s);
            s = dp4a(hi, x[i + 4], s);
        }
        // sum (d q + m) x = d sum q x + m sum x, and ds.y already holds d_x * sum x.
        return d * ds.x * (float)s + m * ds.y;
    }

    static __device__ __forceinline__ void dequant(const u8* blk, int, float out[32]) {
        const float d = h2f(ld_u16(blk));
        const float m = h2f(ld_u16(blk + 2));
        const u32 qh = ld_u32(blk + 4);
#pragma unroll
        for (int j = 0; j < 16; ++j) {
            const int q = blk[8 + j];
            const int lo = (q & 0xF) | (int)(((qh >> j) & 1u) << 4);
            const int hi = (q >> 4) | (int)(((qh >> (j + 16)) & 1u) << 4);
            out[j] = (float)lo * d + m;
            out[j + 16] = (float)hi * d + m;
        }
    }
};

QUANT_KERNELS(q5_1, BlockQ5_1)
