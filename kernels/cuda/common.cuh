// Shared definitions for every ferrolm kernel module.
//
// Each module is compiled on its own by NVRTC with this header placed in front of it, so
// nothing here may rely on the CUDA toolkit's headers: half-precision conversions use inline
// PTX, and integer types are spelled out.

typedef unsigned char u8;
typedef signed char i8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef int i32;
typedef unsigned long long u64;

#define WARP_SIZE 32
#ifndef INFINITY
#define INFINITY __int_as_float(0x7f800000)
#endif
#define FULL_MASK 0xffffffffu

__device__ __forceinline__ float h2f(u16 h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

__device__ __forceinline__ u16 f2h(float f) {
    u16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = WARP_SIZE / 2; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = WARP_SIZE / 2; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, o));
    return v;
}

__device__ __forceinline__ float silu(float x) { return x / (1.0f + expf(-x)); }

// GELU, tanh approximation (the form Gemma uses).
__device__ __forceinline__ float gelu_tanh(float x) {
    const float k = 0.7978845608028654f;  // sqrt(2 / pi)
    return 0.5f * x * (1.0f + tanhf(k * (x + 0.044715f * x * x * x)));
}

// Quantizes one group of 32 activations held one per lane of a warp, as quantize_q8 does:
// d = max|v| / 127, q = round(v / d), ds = (d, d * sum q). The f32 values are kept beside the
// int8 ones in x_out (the products with float weights read them).
__device__ __forceinline__ void quantize_group(float v, int lane, i8* __restrict__ q_out,
                                               float2* __restrict__ ds_out, float* __restrict__ x_out) {
    const float amax = warp_max(fabsf(v));
    const float d = amax / 127.0f;
    const int q = amax == 0.0f ? 0 : (int)roundf(v / d);
    int sum = q;
#pragma unroll
    for (int o = WARP_SIZE / 2; o > 0; o >>= 1) sum += __shfl_xor_sync(FULL_MASK, sum, o);
    q_out[lane] = (i8)q;
    x_out[lane] = v;
    if (lane == 0) *ds_out = make_float2(d, d * (float)sum);
}

// Sum over a whole block whose size is a multiple of 32 (at most 1024). `scratch` holds 32 floats.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
    const int lane = threadIdx.x % WARP_SIZE;
    const int warp = threadIdx.x / WARP_SIZE;
    const int nwarps = blockDim.x / WARP_SIZE;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < nwarps ? scratch[lane] : 0.0f;
    return warp_sum(v);
}

// Little-endian loads from byte addresses aligned to 2 bytes (every GGUF block field is).
__device__ __forceinline__ u16 ld_u16(const u8* p) { return *(const u16*)p; }

__device__ __forceinline__ u32 ld_u32_a2(const u8* p) {
    const u16* q = (const u16*)p;
    return (u32)q[0] | ((u32)q[1] << 16);
}

__device__ __forceinline__ u32 ld_u32(const u8* p) { return *(const u32*)p; }

// N consecutive little-endian words starting at any byte address: N + 1 aligned 4-byte loads and
// a funnel shift per word, instead of two 2-byte loads per word (the blocks of Q4_0, Q5_0, Q8_0
// and Q6_K are 18, 22, 34 and 210 bytes, so half of them start 2 bytes off a word).
template <int N>
__device__ __forceinline__ void ld_words(const u8* p, u32 out[N]) {
    const u32* a = (const u32*)((size_t)p & ~(size_t)3);
    const u32 shift = 8 * (u32)((size_t)p & 3);
    u32 w[N + 1];
#pragma unroll
    for (int i = 0; i <= N; ++i) w[i] = a[i];
#pragma unroll
    for (int i = 0; i < N; ++i) out[i] = __funnelshift_r(w[i], w[i + 1], shift);
}

__device__ __forceinline__ int dp4a(int a, int b, int c) { return __dp4a(a, b, c); }

// Activations for the integer path: every 32 consecutive values share one scale.
// `xq` holds round(x / d) as int8, `xds[g] = (d, d * sum of the group's int8 values)`; `xf` holds
// the f32 values themselves, which products with float weights (F32, F16) use instead.
//
// Reads the 32 int8 activations of group `g` as eight packed words.
__device__ __forceinline__ void load_x_group(const i8* __restrict__ xq, int g, int out[8]) {
    const int4* p = (const int4*)(xq + (size_t)g * 32);
    const int4 a = __ldg(p);
    const int4 b = __ldg(p + 1);
    out[0] = a.x; out[1] = a.y; out[2] = a.z; out[3] = a.w;
    out[4] = b.x; out[5] = b.y; out[6] = b.z; out[7] = b.w;
}

// Quantized matrix-vector product, y[r] = sum_k W[r, k] * x[k] + bias[r] (+ residual[r]), and,
// when add_to is given, add_to[r] += sum_k W[r, k] * x[k] + bias[r] as well; for gridDim.y input
// vectors at once (x, y, residual and add_to each hold gridDim.y vectors back to back). bias
// and residual may be null.
//
// W is row-major in its GGUF block format. One warp owns one row. The row is streamed through a
// per-warp shared-memory window with 16-byte, fully coalesced global loads (one pass over every
// weight byte); the next window is loaded into registers while the current one is consumed.
// Inside a window each lane takes "items" of 32 weights and computes their integer dot product
// with the int8 activations through dp4a (or, for float weights, their f32 dot product with the
// f32 activations).
//
// A block type T provides:
//   BS     bytes per block,  QK  weights per block,  ITEMS = QK / 32,  CHUNK blocks per window
//   FLOAT_X  whether products take the f32 activations
//   float dot(const u8* blk, int item, const int x[8], float2 ds)     (FLOAT_X false)
//   float dotf(const u8* blk, int item, const float* x)               (FLOAT_X true)
//   void  dequant(const u8* blk, int item, float out[32])

#define MV_WARPS 4
#define MV_THREADS (MV_WARPS * WARP_SIZE)

template <class T>
struct MatvecWindow {
    static constexpr int BYTES = T::CHUNK * T::BS;
    // One extra word because a window's start is not always 16-byte aligned.
    static constexpr int WORDS = (BYTES + 15) / 16 + 1;
    static constexpr int WORDS_PER_LANE = (WORDS + WARP_SIZE - 1) / WARP_SIZE;
};

template <class T>
__device__ __forceinline__ void matvec_load_window(const u8* __restrict__ w, size_t start, size_t end,
                                                   int lane, uint4 regs[MatvecWindow<T>::WORDS_PER_LANE]) {
    const size_t aligned = start & ~(size_t)15;
    const int nwords = (int)((end - aligned + 15) / 16);
    const uint4* src = (const uint4*)(w + aligned);
#pragma unroll
    for (int k = 0; k < MatvecWindow<T>::WORDS_PER_LANE; ++k) {
        const int idx = k * WARP_SIZE + lane;
        if (idx < nwords) regs[k] = __ldg(src + idx);
    }
}

// The calling warp computes output `row` from row `wrow` of W (the same row, except in a stack of
// experts, where wrow = expert * rows + row). xq, xds, xf, residual, y and add_to are those of
// this warp's input vector; see matvec_impl.
template <class T>
__device__ __forceinline__ void matvec_row(const u8* __restrict__ w, const i8* __restrict__ xq,
                                           const float2* __restrict__ xds, const float* __restrict__ xf,
                                           const float* __restrict__ bias, const float* residual, float* y,
                                           float* add_to, int wrow, int row, int ncols) {
    typedef MatvecWindow<T> Win;
    __shared__ __align__(16) uint4 stage[MV_WARPS][Win::WORDS_PER_LANE * WARP_SIZE];

    const int warp = threadIdx.x / WARP_SIZE;
    const int lane = threadIdx.x % WARP_SIZE;

    const int nblocks = ncols / T::QK;
    const size_t row_start = (size_t)wrow * nblocks * T::BS;
    const int nchunks = (nblocks + T::CHUNK - 1) / T::CHUNK;
    uint4* my_stage = stage[warp];
    const u8* my_bytes = (const u8*)my_stage;

    uint4 regs[Win::WORDS_PER_LANE];
    {
        const int nb = min(T::CHUNK, nblocks);
        matvec_load_window<T>(w, row_start, row_start + (size_t)nb * T::BS, lane, regs);
    }

    float acc = 0.0f;
    for (int c = 0; c < nchunks; ++c) {
        const int b0 = c * T::CHUNK;
        const int nb = min(T::CHUNK, nblocks - b0);
        const size_t start = row_start + (size_t)b0 * T::BS;
        const int head = (int)(start & 15);

#pragma unroll
        for (int k = 0; k < Win::WORDS_PER_LANE; ++k) my_stage[k * WARP_SIZE + lane] = regs[k];
        __syncwarp();

        if (c + 1 < nchunks) {
            const int nb1 = min(T::CHUNK, nblocks - b0 - T::CHUNK);
            const size_t s1 = start + (size_t)T::CHUNK * T::BS;
            matvec_load_window<T>(w, s1, s1 + (size_t)nb1 * T::BS, lane, regs);
        }

        const int nitems = nb * T::ITEMS;
        for (int it = lane; it < nitems; it += WARP_SIZE) {
            const int b = it / T::ITEMS;
            const int j = it % T::ITEMS;
            const int g = (b0 + b) * T::ITEMS + j;
            const u8* blk = my_bytes + head + b * T::BS;
            if constexpr (T::FLOAT_X) {
                acc += T::dotf(blk, j, xf + (size_t)g * 32);
            } else {
                int x[8];
                load_x_group(xq, g, x);
                acc += T::dot(blk, j, x, __ldg(xds + g));
            }
        }
        __syncwarp();
    }

    acc = warp_sum(acc);
    if (lane == 0) {
        if (bias) acc += bias[wrow];
        y[row] = residual ? acc + residual[row] : acc;
        if (add_to) add_to[row] += acc;  // the residual connection fused into the product
    }
}

template <class T>
__device__ __forceinline__ void matvec_impl(const u8* __restrict__ w, const i8* __restrict__ xq,
                                            const float2* __restrict__ xds, const float* __restrict__ xf,
                                            const float* __restrict__ bias, const float* residual, float* y,
                                            float* add_to, int nrows, int ncols) {
    const int row = blockIdx.x * MV_WARPS + threadIdx.x / WARP_SIZE;
    if (row >= nrows) return;  // whole warps leave; only warp-level barriers follow
    // blockIdx.y picks one of several input vectors (a small batch), each with its own output.
    const size_t v = blockIdx.y;
    matvec_row<T>(w, xq + v * ncols, xds + v * (ncols / 32), xf + v * ncols, bias,
                  residual ? residual + v * nrows : nullptr, y + v * nrows,
                  add_to ? add_to + v * nrows : nullptr, row, row, ncols);
}

// Up to three products that share their input (a layer's query, key and value projections, or
// its gate and up projections) in one launch: y_m = W_m · x + b_m. The rows of the three matrices
// are numbered one after another and each warp takes one, so the launch costs what one matvec
// over rows0 + rows1 + rows2 rows costs. All matrices have the same type and `ncols` columns.
template <class T>
__device__ __forceinline__ void matvec3_impl(const u8* __restrict__ w0, const u8* __restrict__ w1,
                                             const u8* __restrict__ w2, const float* __restrict__ b0,
                                             const float* __restrict__ b1, const float* __restrict__ b2,
                                             const i8* __restrict__ xq, const float2* __restrict__ xds,
                                             const float* __restrict__ xf, float* y0, float* y1,
                                             float* y2, int rows0, int rows1, int rows2, int ncols) {
    int row = blockIdx.x * MV_WARPS + threadIdx.x / WARP_SIZE;
    const size_t v = blockIdx.y;
    xq += v * ncols;
    xds += v * (ncols / 32);
    xf += v * ncols;
    if (row < rows0) {
        matvec_row<T>(w0, xq, xds, xf, b0, nullptr, y0 + v * rows0, nullptr, row, row, ncols);
        return;
    }
    row -= rows0;
    if (row < rows1) {
        matvec_row<T>(w1, xq, xds, xf, b1, nullptr, y1 + v * rows1, nullptr, row, row, ncols);
        return;
    }
    row -= rows1;
    if (row < rows2) matvec_row<T>(w2, xq, xds, xf, b2, nullptr, y2 + v * rows2, nullptr, row, row, ncols);
}

// Products with the experts a router chose (a mixture-of-experts layer): W stacks n_expert
// matrices of nrows rows each. blockIdx.y is a slot s = t * k + j: token t's j-th choice, whose
// expert index is read from device memory (choice[t * 2k + j], as f32, written by moe_route), so
// a captured graph serves any routing and only the chosen experts' weights are read.
// y[s] = W_e · x[x_per_slot ? s : t]; an index outside 0..n_expert gives a row of zeros.
template <class T>
__device__ __forceinline__ void matvec_experts_impl(const u8* __restrict__ w, const float* __restrict__ choice,
                                                    const i8* __restrict__ xq, const float2* __restrict__ xds,
                                                    const float* __restrict__ xf, float* y, int nrows,
                                                    int ncols, int n_expert, int k, int x_per_slot) {
    const int row = blockIdx.x * MV_WARPS + threadIdx.x / WARP_SIZE;
    if (row >= nrows) return;
    const int s = blockIdx.y;
    const int t = s / k;
    const float id = choice[(size_t)t * 2 * k + s % k];
    float* ys = y + (size_t)s * nrows;
    if (!(id >= 0.0f && id < (float)n_expert)) {
        if (threadIdx.x % WARP_SIZE == 0) ys[row] = 0.0f;
        return;
    }
    const int e = (int)id;
    const size_t v = x_per_slot ? (size_t)s : (size_t)t;
    matvec_row<T>(w, xq + v * ncols, xds + v * (ncols / 32), xf + v * ncols, nullptr, nullptr, ys,
                  nullptr, e * nrows + row, row, ncols);
}

// Stores the 32 values of one item (64-byte aligned in f16, 128 in f32) with 16-byte stores:
// a thread's 32 scalar stores at a 64-byte stride from its neighbours touched one sector per lane
// per instruction; four or eight wide stores fill the same bytes in far fewer transactions.
__device__ __forceinline__ void store_item(float* o, const float v[32], float scale) {
    float4* p = (float4*)o;
#pragma unroll
    for (int k = 0; k < 8; ++k)
        p[k] = make_float4(v[4 * k] * scale, v[4 * k + 1] * scale, v[4 * k + 2] * scale, v[4 * k + 3] * scale);
}

__device__ __forceinline__ void store_item(u16* o, const float v[32], float scale) {
    uint4* p = (uint4*)o;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
        u32 w[4];
#pragma unroll
        for (int j = 0; j < 4; ++j)
            w[j] = (u32)f2h(v[8 * k + 2 * j] * scale) | ((u32)f2h(v[8 * k + 2 * j + 1] * scale) << 16);
        p[k] = make_uint4(w[0], w[1], w[2], w[3]);
    }
}

// Dequantizes rows of W: out[r, :] = scale * W[ids ? ids[r] : row0 + r, :], one thread per item
// of 32 weights (out must be 16-byte aligned; rows are whole items, so every item is). Used for the embedding lookup (ids from device memory) and for prefill, where
// slabs of rows are dequantized for a tensor-core GEMM.
template <class T, class Out>
__device__ __forceinline__ void get_rows_impl(const u8* __restrict__ w, const i32* __restrict__ ids, int row0,
                                              Out* __restrict__ out, int nrows, int ncols, float scale,
                                              int table_rows) {
    const int items_per_row = ncols / 32;
    const size_t tid = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (tid >= (size_t)nrows * items_per_row) return;
    const int r = (int)(tid / items_per_row);
    const int i = (int)(tid % items_per_row);
    const int src_row = ids ? ids[r] : row0 + r;
    Out* o = out + (size_t)r * ncols + (size_t)i * 32;
    float v[32];
    if (src_row < 0 || src_row >= table_rows) {  // an id outside the table reads as zeros
#pragma unroll
        for (int k = 0; k < 32; ++k) v[k] = 0.0f;
    } else {
        const int nblocks = ncols / T::QK;
        const u8* blk = w + ((size_t)src_row * nblocks + i / T::ITEMS) * T::BS;
        T::dequant(blk, i % T::ITEMS, v);
    }
    store_item(o, v, scale);
}

#define QUANT_KERNELS(name, T)                                                                        \
    extern "C" __global__ void __launch_bounds__(MV_THREADS)                                          \
        matvec_##name(const u8* __restrict__ w, const i8* __restrict__ xq, const float2* __restrict__ xds, \
                      const float* __restrict__ xf, const float* __restrict__ bias, const float* residual, \
                      float* y, float* add_to, int nrows, int ncols) {                                \
        matvec_impl<T>(w, xq, xds, xf, bias, residual, y, add_to, nrows, ncols);                      \
    }                                                                                                 \
    extern "C" __global__ void __launch_bounds__(MV_THREADS)                                          \
        matvec3_##name(const u8* __restrict__ w0, const u8* __restrict__ w1, const u8* __restrict__ w2, \
                       const float* __restrict__ b0, const float* __restrict__ b1,                    \
                       const float* __restrict__ b2, const i8* __restrict__ xq,                       \
                       const float2* __restrict__ xds, const float* __restrict__ xf, float* y0,       \
                       float* y1, float* y2, int rows0, int rows1, int rows2, int ncols) {            \
        matvec3_impl<T>(w0, w1, w2, b0, b1, b2, xq, xds, xf, y0, y1, y2, rows0, rows1, rows2, ncols); \
    }                                                                                                 \
    extern "C" __global__ void __launch_bounds__(MV_THREADS)                                          \
        matvec_experts_##name(const u8* __restrict__ w, const float* __restrict__ choice,             \
                              const i8* __restrict__ xq, const float2* __restrict__ xds,              \
                              const float* __restrict__ xf, float* y, int nrows, int ncols,           \
                              int n_expert, int k, int x_per_slot) {                                  \
        matvec_experts_impl<T>(w, choice, xq, xds, xf, y, nrows, ncols, n_expert, k, x_per_slot);     \
    }                                                                                                 \
    extern "C" __global__ void get_rows_##name##_f32(const u8* __restrict__ w, const i32* __restrict__ ids, \
                                                      int row0, float* __restrict__ out, int nrows,     \
                                                      int ncols, float scale, int table_rows) {         \
        get_rows_impl<T, float>(w, ids, row0, out, nrows, ncols, scale, table_rows);                    \
    }                                                                                                 \
    extern "C" __global__ void get_rows_##name##_f16(const u8* __restrict__ w, const i32* __restrict__ ids, \
                                                      int row0, u16* __restrict__ out, int nrows,       \
                                                      int ncols, float scale, int table_rows) {         \
        get_rows_impl<T, u16>(w, ids, row0, out, nrows, ncols, scale, table_rows);                      \
    }

// Shared by the K-quant and IQ4 block types.

// Scale and minimum of sub-block j (0..7) from the 12-byte packing Q4_K and Q5_K share.
__device__ __forceinline__ void k4_scale_min(const u8* sc, int j, int& s, int& m) {
    if (j < 4) {
        s = sc[j] & 63;
        m = sc[j + 4] & 63;
    } else {
        s = (sc[j + 4] & 0xF) | ((sc[j - 4] >> 6) << 4);
        m = (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4);
    }
}

// IQ4_NL's and IQ4_XS's non-linear levels -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25,
// 38, 53, 69, 89, 113 as int8, four per word, the first in the low byte of IQ4_LEVELS_0.
#define IQ4_LEVELS_0 0xBFAD9881u
#define IQ4_LEVELS_1 0xF6EADDCFu
#define IQ4_LEVELS_2 0x26190D01u
#define IQ4_LEVELS_3 0x71594535u

// The levels indexed by the four bytes of q (each 0..15), packed as four int8 values.
__device__ __forceinline__ int iq4_levels4(u32 q) {
    const u32 n = q | (q >> 4);
    const u32 idx = (n & 0xFFu) | ((n >> 8) & 0xFF00u);  // nibble k: byte k of q
    // The low 3 bits of a selector nibble pick a byte; its top bit (sign replication in prmt's
    // default mode) stays clear.
    const u32 lo = __byte_perm(IQ4_LEVELS_0, IQ4_LEVELS_1, idx & 0x7777u);  // from levels 0..7
    const u32 hi = __byte_perm(IQ4_LEVELS_2, IQ4_LEVELS_3, idx & 0x7777u);  // from levels 8..15
    // Byte k from hi (selector 4 + k) where index k is 8 or more, else from lo (selector k).
    return (int)__byte_perm(lo, hi, 0x3210u | ((idx >> 1) & 0x4444u));
}
