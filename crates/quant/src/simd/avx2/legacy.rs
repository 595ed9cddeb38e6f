//! The 32-element formats: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and IQ4_NL.
#![allow(clippy::wildcard_imports)]

use std::arch::x86_64::*;

use super::{
    bits_to_bytes, bytes_to_f32, dot_i8i8, dot_u8i8, f16_head_to_f32, f16_head_to_f32x4,
    hsum_f32x8, iq4_values, load_i8x32, nibbles_32,
};
use crate::blocks::{BlockIq4Nl, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0};
use crate::dot::activations::ActRow;
use ferrolm_gguf::GgmlType;

/// Sums, over blocks, `d_w * d_a * Σ(q_w Q_a) + c * dsum_a` where `terms`
/// gives a block's weight quants (unsigned, or signed with `SIGNED`), `d_w`
/// and offset coefficient `c`; with `TWO` over both activation planes.
/// Two accumulators keep the FMA latency chains apart.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn legacy_dot<B, const SIGNED: bool, const TWO: bool>(
    blocks: &[B],
    act: ActRow<'_>,
    terms: impl Fn(&B) -> (__m256i, f32, f32),
) -> f32 {
    let n = blocks.len();
    let (aq, _) = act.qs.as_chunks::<32>();
    let (aq2, _) = act.qs2.as_chunks::<32>();
    let (aq, ad, ads) = (&aq[..n], &act.d[..n], &act.dsum[..n]);
    let aq2 = if TWO { &aq2[..n] } else { aq2 };
    let int_dot = |w: __m256i, a: &[i8; 32]| {
        if SIGNED {
            dot_i8i8(w, load_i8x32(a))
        } else {
            dot_u8i8(w, load_i8x32(a))
        }
    };
    let mut acc = [_mm256_setzero_ps(); 2];
    let mut off = [0.0f32; 2];
    let step = |i: usize, acc: &mut __m256, off: &mut f32| {
        let (w, dw, c) = terms(&blocks[i]);
        let mut p = int_dot(w, &aq[i]);
        if TWO {
            p = _mm256_add_epi32(_mm256_slli_epi32::<8>(p), int_dot(w, &aq2[i]));
        }
        *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(dw * ad[i]), *acc);
        *off += c * ads[i];
    };
    let mut i = 0;
    while i + 2 <= n {
        let [a0, a1] = &mut acc;
        let [o0, o1] = &mut off;
        step(i, a0, o0);
        step(i + 1, a1, o1);
        i += 2;
    }
    if i < n {
        step(i, &mut acc[0], &mut off[0]);
    }
    hsum_f32x8(_mm256_add_ps(acc[0], acc[1])) + (off[0] + off[1])
}

/// Decodes each block to 32 floats with `decode`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn legacy_dequant<B>(blocks: &[B], out: &mut [f32], decode: impl Fn(&B, &mut [f32; 32])) {
    let (oc, _) = out.as_chunks_mut::<32>();
    for (blk, o) in blocks.iter().zip(oc) {
        decode(blk, o);
    }
}

#[target_feature(enable = "avx2")]
#[inline]
fn fifth_bit_quants(qs: &[u8; 16], qh: [u8; 4]) -> __m256i {
    let high = _mm256_and_si256(
        bits_to_bytes(u32::from_le_bytes(qh)),
        _mm256_set1_epi8(0x10),
    );
    _mm256_or_si256(nibbles_32(qs), high)
}

#[target_feature(enable = "avx2,fma,f16c")]
fn dot_q4_0_impl<const TWO: bool>(blocks: &[BlockQ4_0], act: ActRow<'_>) -> f32 {
    legacy_dot::<_, false, TWO>(blocks, act, |b| {
        let d = f16_head_to_f32(bytemuck::bytes_of(b));
        (nibbles_32(&b.qs), d, -8.0 * d)
    })
}

#[target_feature(enable = "avx2,fma,f16c")]
fn dot_q4_1_impl<const TWO: bool>(blocks: &[BlockQ4_1], act: ActRow<'_>) -> f32 {
    legacy_dot::<_, false, TWO>(blocks, act, |b| {
        let dm = f16_head_to_f32x4(bytemuck::bytes_of(b));
        let (d, m) = (_mm_cvtss_f32(dm), _mm_cvtss_f32(_mm_movehdup_ps(dm)));
        (nibbles_32(&b.qs), d, m)
    })
}

#[target_feature(enable = "avx2,fma,f16c")]
fn dot_q5_0_impl<const TWO: bool>(blocks: &[BlockQ5_0], act: ActRow<'_>) -> f32 {
    legacy_dot::<_, false, TWO>(blocks, act, |b| {
        let d = f16_head_to_f32(bytemuck::bytes_of(b));
        (fifth_bit_quants(&b.qs, b.qh), d, -16.0 * d)
    })
}

#[target_feature(enable = "avx2,fma,f16c")]
fn dot_q5_1_impl<const TWO: bool>(blocks: &[BlockQ5_1], act: ActRow<'_>) -> f32 {
    legacy_dot::<_, false, TWO>(blocks, act, |b| {
        let dm = f16_head_to_f32x4(bytemuck::bytes_of(b));
        let (d, m) = (_mm_cvtss_f32(dm), _mm_cvtss_f32(_mm_movehdup_ps(dm)));
        (fifth_bit_quants(&b.qs, b.qh), d, m)
    })
}

#[target_feature(enable = "avx2,fma,f16c")]
fn dot_q8_0_impl<const TWO: bool>(blocks: &[BlockQ8_0], act: ActRow<'_>) -> f32 {
    legacy_dot::<_, true, TWO>(blocks, act, |b| {
        (
            load_i8x32(&b.qs),
            f16_head_to_f32(bytemuck::bytes_of(b)),
            0.0,
        )
    })
}

#[target_feature(enable = "avx2,fma,f16c")]
fn dot_iq4_nl_impl<const TWO: bool>(blocks: &[BlockIq4Nl], act: ActRow<'_>) -> f32 {
    legacy_dot::<_, true, TWO>(blocks, act, |b| {
        (
            iq4_values(&b.qs),
            f16_head_to_f32(bytemuck::bytes_of(b)),
            0.0,
        )
    })
}

safe_dot!(
    dot_q4_0,
    dot_q4_0_impl,
    BlockQ4_0,
    crate::dot::reference::q4_0
);
safe_dot!(
    dot_q4_1,
    dot_q4_1_impl,
    BlockQ4_1,
    crate::dot::reference::q4_1
);
safe_dot!(
    dot_q5_0,
    dot_q5_0_impl,
    BlockQ5_0,
    crate::dot::reference::q5_0
);
safe_dot!(
    dot_q5_1,
    dot_q5_1_impl,
    BlockQ5_1,
    crate::dot::reference::q5_1
);
safe_dot!(
    dot_q8_0,
    dot_q8_0_impl,
    BlockQ8_0,
    crate::dot::reference::q8_0
);
safe_dot!(
    dot_iq4_nl,
    dot_iq4_nl_impl,
    BlockIq4Nl,
    crate::dot::reference::iq4_nl
);

#[target_feature(enable = "avx2,fma,f16c")]
fn dequant_q4_0_impl(blocks: &[BlockQ4_0], out: &mut [f32]) {
    legacy_dequant(blocks, out, |b, o| {
        let d = _mm256_set1_ps(f16_head_to_f32(bytemuck::bytes_of(b)));
        let q = _mm256_sub_epi8(nibbles_32(&b.qs), _mm256_set1_epi8(8));
        bytes_to_f32(q, true, o, |_, v| _mm256_mul_ps(v, d));
    });
}

#[target_feature(enable = "avx2,fma,f16c")]
fn dequant_q4_1_impl(blocks: &[BlockQ4_1], out: &mut [f32]) {
    legacy_dequant(blocks, out, |b, o| {
        let d = _mm256_set1_ps(f16_head_to_f32(bytemuck::bytes_of(b)));
        let m = _mm256_set1_ps(_mm_cvtss_f32(_mm_movehdup_ps(f16_head_to_f32x4(
            bytemuck::bytes_of(b),
        ))));
        bytes_to_f32(nibbles_32(&b.qs), false, o, |_, v| {
            _mm256_add_ps(_mm256_mul_ps(v, d), m)
        });
    });
}

#[target_feature(enable = "avx2,fma,f16c")]
fn dequant_q5_0_impl(blocks: &[BlockQ5_0], out: &mut [f32]) {
    legacy_dequant(blocks, out, |b, o| {
        let d = _mm256_set1_ps(f16_head_to_f32(bytemuck::bytes_of(b)));
        let q = _mm256_sub_epi8(fifth_bit_quants(&b.qs, b.qh), _mm256_set1_epi8(16));
        bytes_to_f32(q, true, o, |_, v| _mm256_mul_ps(v, d));
    });
}

#[target_feature(enable = "avx2,fma,f16c")]
fn dequant_q5_1_impl(blocks: &[BlockQ5_1], out: &mut [f32]) {
    legacy_dequant(blocks, out, |b, o| {
        let d = _mm256_set1_ps(f16_head_to_f32(bytemuck::bytes_of(b)));
        let m = _mm256_set1_ps(_mm_cvtss_f32(_mm_movehdup_ps(f16_head_to_f32x4(
            bytemuck::bytes_of(b),
        ))));
        let q = fifth_bit_quants(&b.qs, b.qh);
        bytes_to_f32(q, false, o, |_, v| _mm256_add_ps(_mm256_mul_ps(v, d), m));
    });
}

#[target_feature(enable = "avx2,fma,f16c")]
fn dequant_q8_0_impl(blocks: &[BlockQ8_0], out: &mut [f32]) {
    legacy_dequant(blocks, out, |b, o| {
        let d = _mm256_set1_ps(f16_head_to_f32(bytemuck::bytes_of(b)));
        bytes_to_f32(load_i8x32(&b.qs), true, o, |_, v| _mm256_mul_ps(v, d));
    });
}

#[target_feature(enable = "avx2,fma,f16c")]
fn dequant_iq4_nl_impl(blocks: &[BlockIq4Nl], out: &mut [f32]) {
    legacy_dequant(blocks, out, |b, o| {
        let d = _mm256_set1_ps(f16_head_to_f32(bytemuck::bytes_of(b)));
        bytes_to_f32(iq4_values(&b.qs), true, o, |_, v| _mm256_mul_ps(d, v));
    });
}

safe_dequant!(dequant_q4_0, dequant_q4_0_impl, BlockQ4_0, GgmlType::Q4_0);
safe_dequant!(dequant_q4_1, dequant_q4_1_impl, BlockQ4_1, GgmlType::Q4_1);
safe_dequant!(dequant_q5_0, dequant_q5_0_impl, BlockQ5_0, GgmlType::Q5_0);
safe_dequant!(dequant_q5_1, dequant_q5_1_impl, BlockQ5_1, GgmlType::Q5_1);
safe_dequant!(dequant_q8_0, dequant_q8_0_impl, BlockQ8_0, GgmlType::Q8_0);
safe_dequant!(
    dequant_iq4_nl,
    dequant_iq4_nl_impl,
    BlockIq4Nl,
    GgmlType::Iq4Nl
);
