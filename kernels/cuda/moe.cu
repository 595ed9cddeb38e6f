// Mixture-of-experts routing and combination, on the device so that a decode step stays inside
// its captured graph: the router's choice is written to device memory, read by the expert
// products (matvec_experts_<type>) and by moe_combine, and never copied to the host.
//
// choice[t] (2k values) holds token t's k chosen experts (indices as f32), then their weights.
#include "common.cuh"

// Largest number of experts a layer may have (config::MAX_EXPERTS).
#define MOE_MAX_EXPERTS 256

// Smallest sum the chosen weights are divided by when renormalized.
#define MOE_MIN_WEIGHT_SUM 6.103515625e-5f

__device__ __forceinline__ double warp_sum_f64(double v) {
#pragma unroll
    for (int o = WARP_SIZE / 2; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

// One warp (blockDim.x = 32) per token t: the softmax of its n_expert router logits, the k largest
// probabilities (the lowest index first among equal ones), renormalized to sum 1 when norm != 0
// (the sum clamped below at MOE_MIN_WEIGHT_SUM) and multiplied by scale. The arithmetic follows the
// CPU backend's order: exp(l - max) in f32, their sum in f64, probabilities times the f32 inverse
// of the sum, and the chosen weights summed one after another.
extern "C" __global__ void moe_route(const float* __restrict__ logits, float* __restrict__ choice,
                                     int n_expert, int k, int norm, float scale) {
    __shared__ float probs[MOE_MAX_EXPERTS];
    const int lane = threadIdx.x;
    const float* l = logits + (size_t)blockIdx.x * n_expert;
    float* c = choice + (size_t)blockIdx.x * 2 * k;

    float mx = -INFINITY;
    for (int e = lane; e < n_expert; e += WARP_SIZE) mx = fmaxf(mx, l[e]);
    mx = warp_max(mx);
    double sum = 0.0;
    for (int e = lane; e < n_expert; e += WARP_SIZE) {
        const float p = expf(l[e] - mx);
        probs[e] = p;
        sum += (double)p;
    }
    const float inv = (float)(1.0 / warp_sum_f64(sum));
    for (int e = lane; e < n_expert; e += WARP_SIZE) probs[e] *= inv;
    __syncwarp();

    // Taken experts are marked -1, below every probability.
    for (int j = 0; j < k; ++j) {
        float best = -1.0f;
        int bi = -1;
        for (int e = lane; e < n_expert; e += WARP_SIZE) {
            const float p = probs[e];
            if (p >= 0.0f && (bi < 0 || p > best)) {
                best = p;
                bi = e;
            }
        }
#pragma unroll
        for (int o = WARP_SIZE / 2; o > 0; o >>= 1) {
            const float ob = __shfl_xor_sync(FULL_MASK, best, o);
            const int oi = __shfl_xor_sync(FULL_MASK, bi, o);
            if (oi >= 0 && (bi < 0 || ob > best || (ob == best && oi < bi))) {
                best = ob;
                bi = oi;
            }
        }
        if (lane == 0) {
            // Only NaN logits leave nothing to choose: expert 0 with weight 0, as a marker.
            c[j] = (float)max(bi, 0);
            c[k + j] = bi < 0 ? 0.0f : best;
            if (bi >= 0) probs[bi] = -1.0f;
        }
        __syncwarp();
    }

    if (lane == 0) {
        if (norm) {
            float total = 0.0f;
            for (int j = 0; j < k; ++j) total += c[k + j];
            const float r = 1.0f / fmaxf(total, MOE_MIN_WEIGHT_SUM);
            for (int j = 0; j < k; ++j) c[k + j] *= r;
        }
        if (scale != 1.0f)
            for (int j = 0; j < k; ++j) c[k + j] *= scale;
    }
}

// out[t, :] = sum_j weight[t][j] * y[t * k + j, :] for the gridDim.y tokens, d values each.
extern "C" __global__ void moe_combine(const float* __restrict__ choice, const float* __restrict__ y,
                                       float* __restrict__ out, int d, int k) {
    const int t = blockIdx.y;
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= d) return;
    const float* w = choice + (size_t)t * 2 * k + k;
    const float* yt = y + (size_t)t * k * d + i;
    float acc = 0.0f;
    for (int j = 0; j < k; ++j) acc += w[j] * yt[(size_t)j * d];
    out[(size_t)t * d + i] = acc;
}
