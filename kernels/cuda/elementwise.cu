// Element-wise operations on f32 vectors of n values. The output may be the first input (in-place
// updates such as the residual add), so those two are not marked __restrict__.
#include "common.cuh"

#define ELEMENTWISE_INDEX                                            \
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;  \
    if (i >= (size_t)n) return;

extern "C" __global__ void add_f32(const float* a, const float* __restrict__ b, float* y, int n) {
    ELEMENTWISE_INDEX
    y[i] = a[i] + b[i];
}

extern "C" __global__ void mul_f32(const float* a, const float* __restrict__ b, float* y, int n) {
    ELEMENTWISE_INDEX
    y[i] = a[i] * b[i];
}

extern "C" __global__ void scale_f32(const float* __restrict__ a, float s, float* __restrict__ y, int n) {
    ELEMENTWISE_INDEX
    y[i] = a[i] * s;
}

// Gated activations of the feed-forward block: y = act(gate) * up.
extern "C" __global__ void swiglu_f32(const float* gate, const float* __restrict__ up, float* y, int n) {
    ELEMENTWISE_INDEX
    y[i] = silu(gate[i]) * up[i];
}

extern "C" __global__ void geglu_f32(const float* gate, const float* __restrict__ up, float* y, int n) {
    ELEMENTWISE_INDEX
    y[i] = gelu_tanh(gate[i]) * up[i];
}

// f32 to f16 (bit patterns), rounding to nearest: activations for a tensor-core GEMM.
extern "C" __global__ void convert_f32_f16(const float* __restrict__ x, u16* __restrict__ y, int n) {
    ELEMENTWISE_INDEX
    y[i] = f2h(x[i]);
}

// Gathers rows: out[r, :] = x[idx[r], :] for the gridDim.y rows of out, each of `cols` values.
extern "C" __global__ void copy_rows_f32(const float* __restrict__ x, const i32* __restrict__ idx,
                                         float* __restrict__ out, int cols) {
    const int r = blockIdx.y;
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= cols) return;
    out[(size_t)r * cols + c] = x[(size_t)idx[r] * cols + c];
}

// Soft-capping in place: x = cap * tanh(x / cap) (Gemma 2's final logits).
extern "C" __global__ void softcap_f32(float* x, float cap, int n) {
    ELEMENTWISE_INDEX
    x[i] = cap * tanhf(x[i] / cap);
}

// A matrix's bias added to every row of a product: y[r, c] += bias[c] over n values in rows of cols.
extern "C" __global__ void add_bias_f32(float* y, const float* __restrict__ bias, int cols, int n) {
    ELEMENTWISE_INDEX
    y[i] += bias[i % cols];
}

// copy_rows_f32 for f16 values (bit patterns): out[r, :] = x[idx[r], :] for the gridDim.y rows.
extern "C" __global__ void copy_rows_f16(const u16* __restrict__ x, const i32* __restrict__ idx,
                                         u16* __restrict__ out, int cols) {
    const int r = blockIdx.y;
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= cols) return;
    out[(size_t)r * cols + c] = x[(size_t)idx[r] * cols + c];
}

// Scatters rows: out[idx[r], :] = x[r, :] for the gridDim.y rows of x, each of `cols` values.
extern "C" __global__ void scatter_rows_f32(const float* __restrict__ x, const i32* __restrict__ idx,
                                            float* __restrict__ out, int cols) {
    const int r = blockIdx.y;
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= cols) return;
    out[(size_t)idx[r] * cols + c] = x[(size_t)r * cols + c];
}
