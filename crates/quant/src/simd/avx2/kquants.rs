//! The 256-element super-block formats: Q2_K … Q6_K and IQ4_XS.
#![allow(clippy::wildcard_imports)]
//!
//! Each 32-value group is one integer dot product (sub-block scales of the
//! 16-value formats folded in by `madd`), converted to float once and scaled
//! by `d * d_a` of its activation block.

use std::arch::x86_64::*;

use super::{
    bytes_to_f32, dot_i8i8, dot_u8i8_scaled, f16_head_to_f32, f16_head_to_f32x4, f16_tail_to_f32,
    hsum_f32x8, iq4_values, lane, load_f32x8, load_i8x32, load_i16x16, load_u8x8, load_u8x16,
    load_u8x32, store_f32x8,
};
use crate::blocks::{
    BlockIq4Xs, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, scale_min_k4, scale_q3k,
};
use crate::dot::activations::ActRow;
use ferrolm_gguf::GgmlType;

/// The activations of one super-block: quants per 32-block (and of the
/// residual plane, if any), their scales and 16-sums.
struct SuperAct<'a> {
    qs: &'a [[i8; 32]; 8],
    qs2: Option<&'a [[i8; 32]; 8]>,
    d: &'a [f32; 8],
    dsum: &'a [f32; 8],
    sums16: &'a [i16; 16],
    sums16b: Option<&'a [i16; 16]>,
}

fn groups(qs: &[i8; 256]) -> &[[i8; 32]; 8] {
    qs.as_chunks::<32>().0.try_into().unwrap_or(&[[0; 32]; 8])
}

fn super_acts(act: ActRow<'_>) -> impl Iterator<Item = SuperAct<'_>> {
    let (qs, _) = act.qs.as_chunks::<256>();
    let (d, _) = act.d.as_chunks::<8>();
    let (dsum, _) = act.dsum.as_chunks::<8>();
    let (sums16, _) = act.sums16.as_chunks::<16>();
    let mut qs2 = act.qs2.as_chunks::<256>().0.iter();
    let mut sums16b = act.sums16b.as_chunks::<16>().0.iter();
    qs.iter()
        .zip(d)
        .zip(dsum)
        .zip(sums16)
        .map(move |(((qs, d), dsum), sums16)| SuperAct {
            qs: groups(qs),
            qs2: qs2.next().map(groups),
            d,
            dsum,
            sums16,
            sums16b: sums16b.next(),
        })
}

/// The integer dot product of 32 unsigned weights with activation group `g`,
/// each i16 pair sum multiplied by the matching lane of `scales`; with
/// `TWO`, over both planes (`256·p1 + p2`).
#[target_feature(enable = "avx2")]
#[inline]
fn group_dot<const TWO: bool>(u: __m256i, a: &SuperAct<'_>, g: usize, scales: __m256i) -> __m256i {
    let p = dot_u8i8_scaled(u, load_i8x32(&a.qs[g]), scales);
    match a.qs2 {
        Some(q2) if TWO => _mm256_add_epi32(
            _mm256_slli_epi32::<8>(p),
            dot_u8i8_scaled(u, load_i8x32(&q2[g]), scales),
        ),
        _ => p,
    }
}

/// As [`group_dot`] for signed weights, unscaled.
#[target_feature(enable = "avx2")]
#[inline]
fn group_dot_signed<const TWO: bool>(w: __m256i, a: &SuperAct<'_>, g: usize) -> __m256i {
    let p = dot_i8i8(w, load_i8x32(&a.qs[g]));
    match a.qs2 {
        Some(q2) if TWO => {
            _mm256_add_epi32(_mm256_slli_epi32::<8>(p), dot_i8i8(w, load_i8x32(&q2[g])))
        }
        _ => p,
    }
}

/// `Σ mult_k · sum16_k` in pairs (lane `g` covers groups `2g`, `2g+1`), over both planes with `TWO`.
#[target_feature(enable = "avx2")]
#[inline]
fn sums_dot<const TWO: bool>(mult: __m256i, a: &SuperAct<'_>) -> __m256i {
    let p = _mm256_madd_epi16(mult, load_i16x16(a.sums16));
    match a.sums16b {
        Some(s2) if TWO => _mm256_add_epi32(
            _mm256_slli_epi32::<8>(p),
            _mm256_madd_epi16(mult, load_i16x16(s2)),
        ),
        _ => p,
    }
}

/// `[s[2g] x8, s[2g+1] x8]` as i16: the scales of the two 16-value halves of group `g`.
#[target_feature(enable = "avx2")]
#[inline]
fn pair_scales(s: __m128i, g: usize) -> __m256i {
    let lo = (2 * g as i64) * 0x0101_0101_0101_0101;
    let mask = _mm_set_epi64x(lo + 0x0101_0101_0101_0101, lo);
    _mm256_cvtepi8_epi16(_mm_shuffle_epi8(s, mask))
}

/// Bytes equal to `bit` where `hm` has `bit` set, else 0... shifted to `value`.
#[target_feature(enable = "avx2")]
#[inline]
fn select_bit(hm: __m256i, bit: u8, value: i8) -> __m256i {
    let m = _mm256_set1_epi8(bit as i8);
    _mm256_and_si256(
        _mm256_cmpeq_epi8(_mm256_and_si256(hm, m), m),
        _mm256_set1_epi8(value),
    )
}

/// Two bits `2j..2j+2` of each byte.
#[target_feature(enable = "avx2")]
#[inline]
fn crumbs(q: __m256i, j: usize) -> __m256i {
    let shifted = _mm256_srl_epi16(q, _mm_cvtsi32_si128(2 * j as i32));
    _mm256_and_si256(shifted, _mm256_set1_epi8(3))
}

#[target_feature(enable = "avx2")]
#[inline]
fn low_nibbles(q: __m256i) -> __m256i {
    _mm256_and_si256(q, _mm256_set1_epi8(0x0F))
}

#[target_feature(enable = "avx2")]
#[inline]
fn high_nibbles(q: __m256i) -> __m256i {
    _mm256_and_si256(_mm256_srli_epi16::<4>(q), _mm256_set1_epi8(0x0F))
}

/// `v * d` per lane, stored so that each lane can be broadcast from memory.
#[target_feature(enable = "avx2")]
#[inline]
fn scaled(v: __m256, d: f32) -> [f32; 8] {
    let mut out = [0.0f32; 8];
    store_f32x8(&mut out, _mm256_mul_ps(v, _mm256_set1_ps(d)));
    out
}

#[target_feature(enable = "avx2,fma,f16c")]
fn dot_q2_k_impl<const TWO: bool>(blocks: &[BlockQ2K], act: ActRow<'_>) -> f32 {
    let mut acc = [_mm256_setzero_ps(); 2];
    let mut acc_min = _mm256_setzero_ps();
    for (blk, a) in blocks.iter().zip(super_acts(act)) {
        let tail = f16_tail_to_f32(bytemuck::bytes_of(blk));
        let (d, dmin) = (lane::<2>(tail), lane::<3>(tail));
        let da = load_f32x8(a.d);
        let raw = load_u8x16(&blk.scales);
        let sc = _mm_and_si128(raw, _mm_set1_epi8(0x0F));
        let mins =
            _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16::<4>(raw), _mm_set1_epi8(0x0F)));
        let msum = _mm256_cvtepi32_ps(sums_dot::<TWO>(mins, &a));
        acc_min = _mm256_fmadd_ps(_mm256_mul_ps(msum, da), _mm256_set1_ps(dmin), acc_min);
        let s = scaled(da, d);
        let (qs, _) = blk.qs.as_chunks::<32>();
        for (n, q) in qs.iter().enumerate() {
            let q = load_u8x32(q);
            for j in 0..4 {
                let g = 4 * n + j;
                let p = group_dot::<TWO>(crumbs(q, j), &a, g, pair_scales(sc, g));
                acc[j % 2] =
                    _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(s[g]), acc[j % 2]);
            }
        }
    }
    hsum_f32x8(_mm256_add_ps(acc[0], acc[1])) - hsum_f32x8(acc_min)
}

/// The sixteen Q3_K sub-block scales, offset removed.
fn q3k_scales(scales: &[u8; 12]) -> [u8; 16] {
    std::array::from_fn(|i| scale_q3k(i, scales).wrapping_sub(32))
}

#[target_feature(enable = "avx2,fma,f16c")]
fn dot_q3_k_impl<const TWO: bool>(blocks: &[BlockQ3K], act: ActRow<'_>) -> f32 {
    let mut acc = [_mm256_setzero_ps(); 2];
    let mut acc_off = _mm256_setzero_ps();
    for (blk, a) in blocks.iter().zip(super_acts(act)) {
        let d = lane::<3>(f16_tail_to_f32(bytemuck::bytes_of(blk)));
        let da = load_f32x8(a.d);
        let sc = load_u8x16(&q3k_scales(&blk.scales));
        let ssum = sums_dot::<TWO>(_mm256_cvtepi8_epi16(sc), &a);
        acc_off = _mm256_fmadd_ps(
            _mm256_mul_ps(_mm256_cvtepi32_ps(ssum), da),
            _mm256_set1_ps(d),
            acc_off,
        );
        let s = scaled(da, d);
        let hm = load_u8x32(&blk.hmask);
        let (qs, _) = blk.qs.as_chunks::<32>();
        for (n, q) in qs.iter().enumerate() {
            let q = load_u8x32(q);
            for j in 0..4 {
                let g = 4 * n + j;
                let high = select_bit(hm, 1 << g, 4);
                let quant = _mm256_or_si256(crumbs(q, j), high);
                let p = group_dot::<TWO>(quant, &a, g, pair_scales(sc, g));
                acc[j % 2] =
                    _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(s[g]), acc[j % 2]);
            }
        }
    }
    hsum_f32x8(_mm256_add_ps(acc[0], acc[1])) - 4.0 * hsum_f32x8(acc_off)
}

/// The eight Q4_K/Q5_K sub-block scales and minimums.
fn k4_scales(scales: &[u8; 12]) -> ([u8; 8], [u8; 8]) {
    let mut sc = [0u8; 8];
    let mut m = [0u8; 8];
    for j in 0..8 {
        (sc[j], m[j]) = scale_min_k4(j, scales);
    }
    (sc, m)
}

/// Per-32 scales `d * sc_j * d_a` and the minimum term `dmin * Σ m_j dsum_j` (as a vector).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn k4_factors(block: &[u8], scales: &[u8; 12], a: &SuperAct<'_>, acc_min: &mut __m256) -> [f32; 8] {
    let (sc, m) = k4_scales(scales);
    let to_f32 = |v: [u8; 8]| _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(load_u8x8(v)));
    let head = f16_head_to_f32x4(block);
    let mins = _mm256_mul_ps(to_f32(m), _mm256_set1_ps(lane::<1>(head)));
    *acc_min = _mm256_fmadd_ps(mins, load_f32x8(a.dsum), *acc_min);
    scaled(_mm256_mul_ps(to_f32(sc), load_f32x8(a.d)), lane::<0>(head))
}

#[target_feature(enable = "avx2,fma,f16c")]
fn dot_q4_k_impl<const TWO: bool>(blocks: &[BlockQ4K], act: ActRow<'_>) -> f32 {
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); 2];
    let mut acc_min = _mm256_setzero_ps();
    for (blk, a) in blocks.iter().zip(super_acts(act)) {
        let s = k4_factors(bytemuck::bytes_of(blk), &blk.scales, &a, &mut acc_min);
        let (qs, _) = blk.qs.as_chunks::<32>();
        for (n, q) in qs.iter().enumerate() {
            let q = load_u8x32(q);
            let p0 = group_dot::<TWO>(low_nibbles(q), &a, 2 * n, ones);
            let p1 = group_dot::<TWO>(high_nibbles(q), &a, 2 * n + 1, ones);
            acc[0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p0), _mm256_set1_ps(s[2 * n]), acc[0]);
            acc[1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p1), _mm256_set1_ps(s[2 * n + 1]), acc[1]);
        }
    }
    hsum_f32x8(_mm256_add_ps(acc[0], acc[1])) - hsum_f32x8(acc_min)
}

#[target_feature(enable = "avx2,fma,f16c")]
fn dot_q5_k_impl<const TWO: bool>(blocks: &[BlockQ5K], act: ActRow<'_>) -> f32 {
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); 2];
    let mut acc_min = _mm256_setzero_ps();
    for (blk, a) in blocks.iter().zip(super_acts(act)) {
        let s = k4_factors(bytemuck::bytes_of(blk), &blk.scales, &a, &mut acc_min);
        let qh = load_u8x32(&blk.qh);
        let (qs, _) = blk.qs.as_chunks::<32>();
        for (n, q) in qs.iter().enumerate() {
            let q = load_u8x32(q);
            let lo = _mm256_or_si256(low_nibbles(q), select_bit(qh, 1 << (2 * n), 16));
            let hi = _mm256_or_si256(high_nibbles(q), select_bit(qh, 2 << (2 * n), 16));
            let p0 = group_dot::<TWO>(lo, &a, 2 * n, ones);
            let p1 = group_dot::<TWO>(hi, &a, 2 * n + 1, ones);
            acc[0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p0), _mm256_set1_ps(s[2 * n]), acc[0]);
            acc[1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p1), _mm256_set1_ps(s[2 * n + 1]), acc[1]);
        }
    }
    hsum_f32x8(_mm256_add_ps(acc[0], acc[1])) - hsum_f32x8(acc_min)
}

/// The 6-bit quants of Q6_K group `j` (0..4) of a 128-value half.
#[target_feature(enable = "avx2")]
#[inline]
fn q6_quants(ql: &[__m256i; 2], qh: __m256i, j: usize) -> __m256i {
    let low = if j < 2 {
        low_nibbles(ql[j])
    } else {
        high_nibbles(ql[j - 2])
    };
    let high = _mm256_slli_epi16::<4>(crumbs(qh, j));
    _mm256_or_si256(low, high)
}

#[target_feature(enable = "avx2,fma,f16c")]
fn dot_q6_k_impl<const TWO: bool>(blocks: &[BlockQ6K], act: ActRow<'_>) -> f32 {
    let mut acc = [_mm256_setzero_ps(); 2];
    let mut acc_off = _mm256_setzero_ps();
    for (blk, a) in blocks.iter().zip(super_acts(act)) {
        let d = lane::<3>(f16_tail_to_f32(bytemuck::bytes_of(blk)));
        let da = load_f32x8(a.d);
        let sc = load_u8x16(&blk.scales.map(|v| v as u8));
        let ssum = sums_dot::<TWO>(_mm256_cvtepi8_epi16(sc), &a);
        acc_off = _mm256_fmadd_ps(
            _mm256_mul_ps(_mm256_cvtepi32_ps(ssum), da),
            _mm256_set1_ps(d),
            acc_off,
        );
        let s = scaled(da, d);
        let (ql, _) = blk.ql.as_chunks::<32>();
        let (qh, _) = blk.qh.as_chunks::<32>();
        for n in 0..2 {
            let low = [load_u8x32(&ql[2 * n]), load_u8x32(&ql[2 * n + 1])];
            let high = load_u8x32(&qh[n]);
            for j in 0..4 {
                let g = 4 * n + j;
                let quant = q6_quants(&low, high, j);
                let p = group_dot::<TWO>(quant, &a, g, pair_scales(sc, g));
                acc[j % 2] =
                    _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(s[g]), acc[j % 2]);
            }
        }
    }
    hsum_f32x8(_mm256_add_ps(acc[0], acc[1])) - 32.0 * hsum_f32x8(acc_off)
}

/// IQ4_XS sub-block scales with the offset removed, as floats.
fn iq4xs_scales(blk: &BlockIq4Xs) -> [f32; 8] {
    std::array::from_fn(|j| f32::from(i16::from(blk.sub_scale(j)) - 32))
}

#[target_feature(enable = "avx2,fma,f16c")]
fn dot_iq4_xs_impl<const TWO: bool>(blocks: &[BlockIq4Xs], act: ActRow<'_>) -> f32 {
    let mut acc = [_mm256_setzero_ps(); 2];
    for (blk, a) in blocks.iter().zip(super_acts(act)) {
        let ls = load_f32x8(&iq4xs_scales(blk));
        let s = scaled(
            _mm256_mul_ps(ls, load_f32x8(a.d)),
            f16_head_to_f32(bytemuck::bytes_of(blk)),
        );
        let (qs, _) = blk.qs.as_chunks::<16>();
        for (j, q) in qs.iter().enumerate() {
            let p = group_dot_signed::<TWO>(iq4_values(q), &a, j);
            acc[j % 2] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(s[j]), acc[j % 2]);
        }
    }
    hsum_f32x8(_mm256_add_ps(acc[0], acc[1]))
}

safe_dot!(
    dot_q2_k,
    dot_q2_k_impl,
    BlockQ2K,
    crate::dot::reference::q2_k
);
safe_dot!(
    dot_q3_k,
    dot_q3_k_impl,
    BlockQ3K,
    crate::dot::reference::q3_k
);
safe_dot!(
    dot_q4_k,
    dot_q4_k_impl,
    BlockQ4K,
    crate::dot::reference::q4_k
);
safe_dot!(
    dot_q5_k,
    dot_q5_k_impl,
    BlockQ5K,
    crate::dot::reference::q5_k
);
safe_dot!(
    dot_q6_k,
    dot_q6_k_impl,
    BlockQ6K,
    crate::dot::reference::q6_k
);
safe_dot!(
    dot_iq4_xs,
    dot_iq4_xs_impl,
    BlockIq4Xs,
    crate::dot::reference::iq4_xs
);

/// Decodes each super-block to 256 floats with `decode`, a group of 32 at a time.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn kquant_dequant<B>(blocks: &[B], out: &mut [f32], decode: impl Fn(&B, &mut [[f32; 32]; 8])) {
    let (oc, _) = out.as_chunks_mut::<256>();
    for (blk, o) in blocks.iter().zip(oc) {
        let (groups, _) = o.as_chunks_mut::<32>();
        if let Ok(groups) = <&mut [[f32; 32]; 8]>::try_from(groups) {
            decode(blk, groups);
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
fn dequant_q2_k_impl(blocks: &[BlockQ2K], out: &mut [f32]) {
    kquant_dequant(blocks, out, |blk, groups| {
        let tail = f16_tail_to_f32(bytemuck::bytes_of(blk));
        let (d, dmin) = (lane::<2>(tail), lane::<3>(tail));
        let (qs, _) = blk.qs.as_chunks::<32>();
        for (g, o) in groups.iter_mut().enumerate() {
            let (n, j) = (g / 4, g % 4);
            let sc = [blk.scales[2 * g], blk.scales[2 * g + 1]];
            let dl = sc.map(|s| _mm256_set1_ps(d * f32::from(s & 0x0F)));
            let ml = sc.map(|s| _mm256_set1_ps(dmin * f32::from(s >> 4)));
            let q = crumbs(load_u8x32(&qs[n]), j);
            bytes_to_f32(q, false, o, |k, v| {
                _mm256_sub_ps(_mm256_mul_ps(dl[k / 2], v), ml[k / 2])
            });
        }
    });
}

#[target_feature(enable = "avx2,fma,f16c")]
fn dequant_q3_k_impl(blocks: &[BlockQ3K], out: &mut [f32]) {
    kquant_dequant(blocks, out, |blk, groups| {
        let d = lane::<3>(f16_tail_to_f32(bytemuck::bytes_of(blk)));
        let hm = load_u8x32(&blk.hmask);
        let (qs, _) = blk.qs.as_chunks::<32>();
        for (g, o) in groups.iter_mut().enumerate() {
            let (n, j) = (g / 4, g % 4);
            let dl = [2 * g, 2 * g + 1]
                .map(|i| _mm256_set1_ps(d * f32::from(i16::from(scale_q3k(i, &blk.scales)) - 32)));
            let high = select_bit(hm, 1 << g, 4);
            let q = _mm256_or_si256(crumbs(load_u8x32(&qs[n]), j), high);
            let q = _mm256_sub_epi8(q, _mm256_set1_epi8(4));
            bytes_to_f32(q, true, o, |k, v| _mm256_mul_ps(dl[k / 2], v));
        }
    });
}

#[target_feature(enable = "avx2,fma,f16c")]
fn dequant_q4_k_impl(blocks: &[BlockQ4K], out: &mut [f32]) {
    kquant_dequant(blocks, out, |blk, groups| {
        let head = f16_head_to_f32x4(bytemuck::bytes_of(blk));
        let (d, dmin) = (lane::<0>(head), lane::<1>(head));
        let (qs, _) = blk.qs.as_chunks::<32>();
        for (g, o) in groups.iter_mut().enumerate() {
            let (sc, m) = scale_min_k4(g, &blk.scales);
            let (dl, ml) = (
                _mm256_set1_ps(d * f32::from(sc)),
                _mm256_set1_ps(dmin * f32::from(m)),
            );
            let q = load_u8x32(&qs[g / 2]);
            let q = if g % 2 == 0 {
                low_nibbles(q)
            } else {
                high_nibbles(q)
            };
            bytes_to_f32(q, false, o, |_, v| _mm256_sub_ps(_mm256_mul_ps(dl, v), ml));
        }
    });
}

#[target_feature(enable = "avx2,fma,f16c")]
fn dequant_q5_k_impl(blocks: &[BlockQ5K], out: &mut [f32]) {
    kquant_dequant(blocks, out, |blk, groups| {
        let head = f16_head_to_f32x4(bytemuck::bytes_of(blk));
        let (d, dmin) = (lane::<0>(head), lane::<1>(head));
        let qh = load_u8x32(&blk.qh);
        let (qs, _) = blk.qs.as_chunks::<32>();
        for (g, o) in groups.iter_mut().enumerate() {
            let (sc, m) = scale_min_k4(g, &blk.scales);
            let (dl, ml) = (
                _mm256_set1_ps(d * f32::from(sc)),
                _mm256_set1_ps(dmin * f32::from(m)),
            );
            let q = load_u8x32(&qs[g / 2]);
            let q = if g % 2 == 0 {
                low_nibbles(q)
            } else {
                high_nibbles(q)
            };
            let q = _mm256_or_si256(q, select_bit(qh, 1 << g, 16));
            bytes_to_f32(q, false, o, |_, v| _mm256_sub_ps(_mm256_mul_ps(dl, v), ml));
        }
    });
}

#[target_feature(enable = "avx2,fma,f16c")]
fn dequant_q6_k_impl(blocks: &[BlockQ6K], out: &mut [f32]) {
    kquant_dequant(blocks, out, |blk, groups| {
        let d = lane::<3>(f16_tail_to_f32(bytemuck::bytes_of(blk)));
        let (ql, _) = blk.ql.as_chunks::<32>();
        let (qh, _) = blk.qh.as_chunks::<32>();
        for (g, o) in groups.iter_mut().enumerate() {
            let (n, j) = (g / 4, g % 4);
            let dl = [2 * g, 2 * g + 1].map(|i| _mm256_set1_ps(d * f32::from(blk.scales[i])));
            let low = [load_u8x32(&ql[2 * n]), load_u8x32(&ql[2 * n + 1])];
            let q = q6_quants(&low, load_u8x32(&qh[n]), j);
            let q = _mm256_sub_epi8(q, _mm256_set1_epi8(32));
            bytes_to_f32(q, true, o, |k, v| _mm256_mul_ps(dl[k / 2], v));
        }
    });
}

#[target_feature(enable = "avx2,fma,f16c")]
fn dequant_iq4_xs_impl(blocks: &[BlockIq4Xs], out: &mut [f32]) {
    kquant_dequant(blocks, out, |blk, groups| {
        let d = f16_head_to_f32(bytemuck::bytes_of(blk));
        let ls = iq4xs_scales(blk);
        let (qs, _) = blk.qs.as_chunks::<16>();
        for ((o, q), ls) in groups.iter_mut().zip(qs).zip(ls) {
            let dl = _mm256_set1_ps(d * ls);
            bytes_to_f32(iq4_values(q), true, o, |_, v| _mm256_mul_ps(dl, v));
        }
    });
}

safe_dequant!(dequant_q2_k, dequant_q2_k_impl, BlockQ2K, GgmlType::Q2K);
safe_dequant!(dequant_q3_k, dequant_q3_k_impl, BlockQ3K, GgmlType::Q3K);
safe_dequant!(dequant_q4_k, dequant_q4_k_impl, BlockQ4K, GgmlType::Q4K);
safe_dequant!(dequant_q5_k, dequant_q5_k_impl, BlockQ5K, GgmlType::Q5K);
safe_dequant!(dequant_q6_k, dequant_q6_k_impl, BlockQ6K, GgmlType::Q6K);
safe_dequant!(
    dequant_iq4_xs,
    dequant_iq4_xs_impl,
    BlockIq4Xs,
    GgmlType::Iq4Xs
);
