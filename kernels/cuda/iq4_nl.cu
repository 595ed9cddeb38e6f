// IQ4_NL: blocks of 32 weights, 18 bytes: f16 scale d, then 16 bytes of 4-bit indices (nibble
// order as Q4_0) into a fixed table of 16 non-linear levels; w = d * level[q].
//
// The levels are int8 values, so the dot product looks up four of them at once with byte
// permutes and multiplies them with the int8 activations through dp4a.
#include "common.cuh"

struct BlockIQ4_NL {
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
            const u32 q = ld_u32_a2(blk + 2 + 4 * i);
            s = dp4a(iq4_levels4(q & 0x0F0F0F0Fu), x[i], s);
            s = dp4a(iq4_levels4((q >> 4) & 0x0F0F0F0Fu), x[i + 4], s);
        }
        return d * ds.x * (float)s;
    }

    static __device__ __forceinline__ void dequant(const u8* blk, int, float out[32]) {
        const float d = h2f(ld_u16(blk));
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const u32 q = ld_u32_a2(blk + 2 + 4 * i);
            const int lo = iq4_levels4(q & 0x0F0F0F0Fu);
            const int hi = iq4_levels4((q >> 4) & 0x0F0F0F0Fu);
#pragma unroll
            for (int k = 0; k < 4; ++k) {
                out[4 * i + k] = d * (float)(i8)(lo >> (8 * k));
                out[16 + 4 * i + k] = d * (float)(i8)(hi >> (8 * k));
            }
        }
    }
};

QUANT_KERNELS(iq4_nl, BlockIQ4_NL)
