// Attention over the paged KV cache.
//
// Cache layout, per layer and for K and V alike: f16 cache[block][kv_head][slot][head_dim], with
// block_size slots per block. block_table[s * max_blocks + i] is the physical block that holds
// the tokens i * block_size .. (i + 1) * block_size - 1 of sequence s.
//
// Queries come in a batch: query t belongs to sequence q_seq[t], sits at position pos[t] and
// sees the tokens 0..=pos[t] of its sequence, so one launch serves decode (one query per
// sequence) and prompt processing (one query per prompt token, causal through pos). With a
// sliding window w > 0 a query sees only its last w tokens. With softcap > 0 each scaled score s
// becomes softcap * tanh(s / softcap) before the softmax (Gemma 2). Block-table entries outside
// 0..n_blocks are skipped rather than followed.
//
// Decode splits each query's tokens over blockIdx.y (flash-decoding): every warp of every split
// keeps a running maximum, sum and weighted V sum, writes them as one partial, and attn_combine
// merges the partials. The G = n_heads / n_kv_heads query heads of one KV head are handled by
// the same warp, so each K and V row is loaded once for all of them.
#include "common.cuh"

#define ATT_WARPS 4

extern "C" __global__ void kv_append(const float* __restrict__ k, const float* __restrict__ v,
                                     u16* __restrict__ kc, u16* __restrict__ vc,
                                     const i32* __restrict__ block_table, const i32* __restrict__ q_seq,
                                     const i32* __restrict__ pos, int n_kv_heads, int head_dim,
                                     int block_size, int max_blocks, int n_blocks) {
    const int t = blockIdx.x;
    const int h = blockIdx.y;
    const int p = pos[t];
    if (p < 0 || p / block_size >= max_blocks) return;
    const int b = block_table[(size_t)q_seq[t] * max_blocks + p / block_size];
    if (b < 0 || b >= n_blocks) return;
    const size_t blk = (size_t)b;
    const size_t dst = ((blk * n_kv_heads + h) * block_size + p % block_size) * head_dim;
    const size_t src = ((size_t)t * n_kv_heads + h) * head_dim;
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        kc[dst + d] = f2h(k[src + d]);
        vc[dst + d] = f2h(v[src + d]);
    }
}

template <int DPL>
__device__ __forceinline__ void load_halves(const u16* p, float out[DPL]) {
    if constexpr (DPL == 8) {
        const uint4 r = *(const uint4*)p;
        const u32 w[4] = {r.x, r.y, r.z, r.w};
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            out[2 * i] = h2f((u16)(w[i] & 0xFFFF));
            out[2 * i + 1] = h2f((u16)(w[i] >> 16));
        }
    } else if constexpr (DPL == 4) {
        const uint2 r = *(const uint2*)p;
        out[0] = h2f((u16)(r.x & 0xFFFF));
        out[1] = h2f((u16)(r.x >> 16));
        out[2] = h2f((u16)(r.y & 0xFFFF));
        out[3] = h2f((u16)(r.y >> 16));
    } else {
        const u32 r = *(const u32*)p;
        out[0] = h2f((u16)(r & 0xFFFF));
        out[1] = h2f((u16)(r >> 16));
    }
}

// head_dim = 32 * DPL; lane l owns dimensions l * DPL .. l * DPL + DPL - 1; at most MAXG query
// heads per KV head.
template <int DPL, int MAXG>
__device__ __forceinline__ void attn_split_impl(
    const float* __restrict__ q, const u16* __restrict__ kc, const u16* __restrict__ vc,
    const i32* __restrict__ block_table, const i32* __restrict__ q_seq, const i32* __restrict__ pos,
    float* __restrict__ part_acc, float2* __restrict__ part_ml, int n_heads, int n_kv_heads,
    int block_size, int max_blocks, int n_blocks, float scale, int window, float softcap) {
    constexpr int D = 32 * DPL;
    const int kvh = blockIdx.x;
    const int split = blockIdx.y;
    const int n_splits = gridDim.y;
    const int qi = blockIdx.z;
    const int warp = threadIdx.x / WARP_SIZE;
    const int lane = threadIdx.x % WARP_SIZE;
    const int G = n_heads / n_kv_heads;

    const int len = min(pos[qi] + 1, max_blocks * block_size);
    const int start = window > 0 ? max(0, len - window) : 0;
    const long long span = len - start;
    const int s0 = start + (int)(span * split / n_splits);
    const int s1 = start + (int)(span * (split + 1) / n_splits);
    const i32* table = block_table + (size_t)q_seq[qi] * max_blocks;

    float qr[MAXG][DPL];
    float acc[MAXG][DPL];
    float m[MAXG];
    float l[MAXG];
#pragma unroll
    for (int g = 0; g < MAXG; ++g) {
        m[g] = -INFINITY;
        l[g] = 0.0f;
#pragma unroll
        for (int k = 0; k < DPL; ++k) {
            acc[g][k] = 0.0f;
            qr[g][k] = g < G ? q[((size_t)qi * n_heads + kvh * G + g) * D + lane * DPL + k] * scale : 0.0f;
        }
    }

    for (int t = s0 + warp; t < s1; t += ATT_WARPS) {
        const int b = table[t / block_size];
        if (b < 0 || b >= n_blocks) continue;
        const size_t blk = (size_t)b;
        const size_t off = ((blk * n_kv_heads + kvh) * block_size + t % block_size) * D + lane * DPL;
        float kv[DPL];
        float vv[DPL];
        load_halves<DPL>(kc + off, kv);
        load_halves<DPL>(vc + off, vv);
#pragma unroll
        for (int g = 0; g < MAXG; ++g) {
            if (g < G) {
                float s = 0.0f;
#pragma unroll
                for (int k = 0; k < DPL; ++k) s += qr[g][k] * kv[k];
                s = warp_sum(s);
                if (softcap > 0.0f) s = softcap * tanhf(s / softcap);
                const float mn = fmaxf(m[g], s);
                const float c = expf(m[g] - mn);
                const float p = expf(s - mn);
                m[g] = mn;
                l[g] = l[g] * c + p;
#pragma unroll
                for (int k = 0; k < DPL; ++k) acc[g][k] = acc[g][k] * c + p * vv[k];
            }
        }
    }

    const int nparts = n_splits * ATT_WARPS;
#pragma unroll
    for (int g = 0; g < MAXG; ++g) {
        if (g < G) {
            const size_t part = ((size_t)qi * n_heads + kvh * G + g) * nparts + split * ATT_WARPS + warp;
#pragma unroll
            for (int k = 0; k < DPL; ++k) part_acc[part * D + lane * DPL + k] = acc[g][k];
            if (lane == 0) part_ml[part] = make_float2(m[g], l[g]);
        }
    }
}

#define ATTN_SPLIT_KERNEL(D, DPL, MAXG)                                                              \
    extern "C" __global__ void __launch_bounds__(ATT_WARPS * WARP_SIZE) attn_split_d##D##_g##MAXG(    \
        const float* __restrict__ q, const u16* __restrict__ kc, const u16* __restrict__ vc,         \
        const i32* __restrict__ block_table, const i32* __restrict__ q_seq,                          \
        const i32* __restrict__ pos, float* __restrict__ part_acc, float2* __restrict__ part_ml,     \
        int n_heads, int n_kv_heads, int block_size, int max_blocks, int n_blocks, float scale,      \
        int window, float softcap) {                                                                 \
        attn_split_impl<DPL, MAXG>(q, kc, vc, block_table, q_seq, pos, part_acc, part_ml, n_heads,    \
                                   n_kv_heads, block_size, max_blocks, n_blocks, scale, window,     \
                                   softcap);                                                         \
    }

ATTN_SPLIT_KERNEL(64, 2, 4)
ATTN_SPLIT_KERNEL(64, 2, 8)
ATTN_SPLIT_KERNEL(128, 4, 4)
ATTN_SPLIT_KERNEL(128, 4, 8)
ATTN_SPLIT_KERNEL(256, 8, 4)
ATTN_SPLIT_KERNEL(256, 8, 8)

// Merges the partials of each (query, head): out = sum_p e^(m_p - M) acc_p / sum_p e^(m_p - M) l_p.
// One block per (head, query), one thread per dimension (blockDim.x = head_dim, a multiple of
// 32). With xq given, out is also quantized for the output projection as quantize_q8 would
// (every group of 32 lies inside one head, and its f32 values go to xf), which saves that launch.
extern "C" __global__ void attn_combine(const float* __restrict__ part_acc, const float2* __restrict__ part_ml,
                                        float* __restrict__ out, i8* __restrict__ xq,
                                        float2* __restrict__ xds, float* __restrict__ xf, int n_heads,
                                        int head_dim, int nparts) {
    const int h = blockIdx.x;
    const int qi = blockIdx.y;
    const int d = threadIdx.x;
    const size_t base = ((size_t)qi * n_heads + h) * nparts;
    float mx = -INFINITY;
    for (int p = 0; p < nparts; ++p) mx = fmaxf(mx, part_ml[base + p].x);
    float num = 0.0f;
    float den = 0.0f;
    if (mx > -INFINITY) {
        for (int p = 0; p < nparts; ++p) {
            const float2 ml = part_ml[base + p];
            if (ml.y > 0.0f) {
                const float w = expf(ml.x - mx);
                num += w * part_acc[(base + p) * head_dim + d];
                den += w * ml.y;
            }
        }
    }
    const float v = den > 0.0f ? num / den : 0.0f;
    const size_t i = ((size_t)qi * n_heads + h) * head_dim + d;
    out[i] = v;
    if (xq) {
        const size_t g0 = i - d % WARP_SIZE;
        quantize_group(v, d % WARP_SIZE, xq + g0, xds + i / WARP_SIZE, xf + g0);
    }
}
