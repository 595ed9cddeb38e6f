// Rotary position embedding, in place on x[token][head][head_dim]. The first n_rot dimensions
// of each head are rotated in pairs: adjacent (2i, 2i + 1) in the normal layout, (i, i + n_rot/2)
// in the NeoX layout. The position of each token comes from device memory so a captured graph
// can be replayed.
//
// Pair i at position p turns by theta_e = p * base^(-2i / n_rot) / factor[i] (factors optional:
// Llama 3, LongRoPE) scaled to theta_i = freq_scale * theta_e; YaRN (ext_factor != 0) mixes the
// two with the ramp r(i) = 1 - clamp((i - corr_lo) / max(corr_hi - corr_lo, 0.001), 0, 1):
// theta = theta_i (1 - r ext_factor) + theta_e r ext_factor. cos and sin are multiplied by mscale.
#include "common.cuh"

struct RopeScaling {
    float base;
    float freq_scale;
    float ext_factor;
    float corr_lo;
    float corr_hi;
    float mscale;
};

// Rotates pair i of head h (n_rot rotated dimensions) at position p.
__device__ __forceinline__ void rope_pair(float* h, int i, int p, int n_rot, int neox,
                                          const float* __restrict__ freq_factors, const RopeScaling& r) {
    const int half = n_rot / 2;
    float extrap = (float)p * powf(r.base, -2.0f * (float)i / (float)n_rot);
    if (freq_factors) extrap /= freq_factors[i];
    float theta = r.freq_scale * extrap;
    if (r.ext_factor != 0.0f) {
        const float y = ((float)i - r.corr_lo) / fmaxf(r.corr_hi - r.corr_lo, 0.001f);
        const float mix = (1.0f - fminf(fmaxf(y, 0.0f), 1.0f)) * r.ext_factor;
        theta = theta * (1.0f - mix) + extrap * mix;
    }
    float s, c;
    sincosf(theta, &s, &c);
    c *= r.mscale;
    s *= r.mscale;
    const int ia = neox ? i : 2 * i;
    const int ib = neox ? i + half : 2 * i + 1;
    const float a = h[ia];
    const float b = h[ib];
    h[ia] = a * c - b * s;
    h[ib] = a * s + b * c;
}

extern "C" __global__ void rope_f32(float* __restrict__ x, const i32* __restrict__ pos,
                                    const float* __restrict__ freq_factors, int ntok, int nheads,
                                    int head_dim, int n_rot, float base, float freq_scale,
                                    float ext_factor, float corr_lo, float corr_hi, float mscale,
                                    int neox) {
    const int half = n_rot / 2;
    const size_t tid = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (tid >= (size_t)ntok * nheads * half) return;
    const int i = (int)(tid % half);
    const size_t th = tid / half;  // token * nheads + head
    const int t = (int)(th / nheads);
    const RopeScaling r = {base, freq_scale, ext_factor, corr_lo, corr_hi, mscale};
    rope_pair(x + th * head_dim, i, pos[t], n_rot, neox, freq_factors, r);
}

// rope_f32 on queries q[token][nq][head_dim] and keys k[token][nk][head_dim] in one launch.
extern "C" __global__ void rope_qk_f32(float* __restrict__ q, float* __restrict__ k, const i32* __restrict__ pos,
                                       const float* __restrict__ freq_factors, int ntok, int nq, int nk,
                                       int head_dim, int n_rot, float base, float freq_scale,
                                       float ext_factor, float corr_lo, float corr_hi, float mscale,
                                       int neox) {
    const int half = n_rot / 2;
    const int nh = nq + nk;
    const size_t tid = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (tid >= (size_t)ntok * nh * half) return;
    const int i = (int)(tid % half);
    const size_t th = tid / half;  // token * (nq + nk) + head
    const int t = (int)(th / nh);
    const int hh = (int)(th % nh);
    float* h = hh < nq ? q + ((size_t)t * nq + hh) * head_dim : k + ((size_t)t * nk + (hh - nq)) * head_dim;
    const RopeScaling r = {base, freq_scale, ext_factor, corr_lo, corr_hi, mscale};
    rope_pair(h, i, pos[t], n_rot, neox, freq_factors, r);
}

// Largest head the fused per-head norm and rotation holds in shared memory.
#define QK_NORM_ROPE_MAX_HEAD 512

// Per-head RMSNorm then rotary embedding of queries q[token][nq][head_dim] and keys
// k[token][nk][head_dim] (Qwen 3's q/k norms): one block per (token, head). The block reads its
// head once, normalises it with q_norm or k_norm (head_dim weights each) as rmsnorm_f32 does,
// rotates it in shared memory as rope_f32 does, and writes it back once.
extern "C" __global__ void qk_norm_rope_f32(float* __restrict__ q, float* __restrict__ k,
                                            const float* __restrict__ q_norm,
                                            const float* __restrict__ k_norm, float eps,
                                            const i32* __restrict__ pos,
                                            const float* __restrict__ freq_factors, int nq, int nk,
                                            int head_dim, int n_rot, float base, float freq_scale,
                                            float ext_factor, float corr_lo, float corr_hi,
                                            float mscale, int neox) {
    __shared__ float hs[QK_NORM_ROPE_MAX_HEAD];
    __shared__ float scratch[32];
    const int nh = nq + nk;
    const int t = blockIdx.x / nh;
    const int hh = blockIdx.x % nh;
    float* h = hh < nq ? q + ((size_t)t * nq + hh) * head_dim : k + ((size_t)t * nk + (hh - nq)) * head_dim;
    const float* w = hh < nq ? q_norm : k_norm;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < head_dim; i += blockDim.x) {
        const float v = h[i];
        hs[i] = v;
        ss += v * v;
    }
    ss = block_sum(ss, scratch);
    const float r = rsqrtf(ss / (float)head_dim + eps);
    for (int i = threadIdx.x; i < head_dim; i += blockDim.x) hs[i] = hs[i] * r * w[i];
    __syncthreads();
    const RopeScaling rs = {base, freq_scale, ext_factor, corr_lo, corr_hi, mscale};
    for (int i = threadIdx.x; i < n_rot / 2; i += blockDim.x) rope_pair(hs, i, pos[t], n_rot, neox, freq_factors, rs);
    __syncthreads();
    for (int i = threadIdx.x; i < head_dim; i += blockDim.x) h[i] = hs[i];
}
