// Rotary position embedding, in place on x[token][head][head_dim]. The first n_rot dimensions
// of each head are rotated in pairs: adjacent (2i, 2i + 1) in the normal layout, (i, i + n_rot/2)
// in the NeoX layout. Pair i turns by pos * freq_scale * base^(-2i / n_rot) / factor[i]; the
// position of each token comes from device memory so a captured graph can be replayed.
#include "common.cuh"

extern "C" __global__ void rope_f32(float* __restrict__ x, const i32* __restrict__ pos,
                                    const float* __restrict__ freq_factors, int ntok, int nheads,
                                    int head_dim, int n_rot, float base, float freq_scale, int neox) {
    const int half = n_rot / 2;
    const size_t tid = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (tid >= (size_t)ntok * nheads * half) return;
    const int i = (int)(tid % half);
    const size_t th = tid / half;  // token * nheads + head
    const int t = (int)(th / nheads);
    float* h = x + th * head_dim;
    float theta = (float)pos[t] * freq_scale * powf(base, -2.0f * (float)i / (float)n_rot);
    if (freq_factors) theta /= freq_factors[i];
    float s, c;
    sincosf(theta, &s, &c);
    const int ia = neox ? i : 2 * i;
    const int ib = neox ? i + half : 2 * i + 1;
    const float a = h[ia];
    const float b = h[ib];
    h[ia] = a * c - b * s;
    h[ib] = a * s + b * c;
}
