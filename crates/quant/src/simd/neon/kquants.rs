//! The 256-element super-block formats: Q2_K … Q6_K and IQ4_XS.
//!
//! Each 32-value group is one integer dot product of signed quants; the
//! formats with 16-value sub-blocks (Q2_K, Q3_K, Q6_K) multiply each half's
//! product by its integer sub-scale first. The sum is converted to float
//! once per group and scaled by that group's factor (`d`, the 32-value
//! scale if any, and `d_a`); minimums enter through the activation sums.

#![allow(clippy::wildcard_imports)]

use std::arch::aarch64::*;

use super::{
    ActRow, block_dot, bytes_to_f32, f16_to_f32, half_dot, iq4_levels, load_i8x32, load_u8x32,
    minus, nibbles, row_entry_points, safe_dequant,
};
use crate::blocks::{
    BlockIq4Xs, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, scale_min_k4, scale_q3k,
};
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

impl SuperAct<'_> {
    /// The integer sum of the 16 values of sub-block `i`, over both planes.
    fn sum16(&self, i: usize) -> i32 {
        match self.sums16b {
            Some(s2) => 256 * i32::from(self.sums16[i]) + i32::from(s2[i]),
            None => i32::from(self.sums16[i]),
        }
    }
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

/// What one super-block of a weight row contributes besides its quants:
/// the float factor of each 32-value group, the integer sub-scale of each
/// 16-value half (unused by the 32-value formats), and a float term added
/// to the row's sum (the minimums).
struct Factors {
    group: [f32; 8],
    sub: [i32; 16],
    extra: f32,
}

/// `R` rows of super-blocks `B` against one activation row. `factors`
/// gives a super-block's [`Factors`] against its activations, `quants` the
/// signed quants of group `g` as two halves; with `SUB16` each half's
/// product is multiplied by its sub-scale. The activation loads are shared
/// by the rows; each row's result does not depend on `R`.
#[target_feature(enable = "neon")]
#[inline]
fn kquant_rows<B, const R: usize, const DP: bool, const TWO: bool, const SUB16: bool>(
    rows: [&[B]; R],
    act: ActRow<'_>,
    out: &mut [f32],
    factors: impl Fn(&B, &SuperAct<'_>) -> Factors,
    quants: impl Fn(&B, usize) -> [int8x16_t; 2],
) {
    let n = rows
        .iter()
        .map(|r| r.len())
        .fold(act.d.len() / 8, usize::min);
    let rows: [&[B]; R] = rows.map(|r| &r[..n]);
    let mut acc = [vdupq_n_f32(0.0); R];
    let mut extra = [0.0f32; R];
    for (s, a) in super_acts(act).enumerate().take(n) {
        let f: [Factors; R] = std::array::from_fn(|r| factors(&rows[r][s], &a));
        for (e, f) in extra.iter_mut().zip(&f) {
            *e += f.extra;
        }
        for g in 0..8 {
            let q = load_i8x32(&a.qs[g]);
            let q2 = match a.qs2 {
                Some(q2) if TWO => load_i8x32(&q2[g]),
                _ => q,
            };
            for r in 0..R {
                let w = quants(&rows[r][s], g);
                let p = if SUB16 {
                    let lo = half_dot::<DP, TWO>(w[0], q[0], q2[0]);
                    let hi = half_dot::<DP, TWO>(w[1], q[1], q2[1]);
                    vmlaq_n_s32(vmulq_n_s32(lo, f[r].sub[2 * g]), hi, f[r].sub[2 * g + 1])
                } else {
                    block_dot::<DP, TWO>(w, q, q2)
                };
                acc[r] = vfmaq_n_f32(acc[r], vcvtq_f32_s32(p), f[r].group[g]);
            }
        }
    }
    for ((y, acc), e) in out.iter_mut().zip(acc).zip(extra) {
        *y = vaddvq_f32(acc) + e;
    }
}

/// Two bits `2j..2j+2` of each byte.
#[target_feature(enable = "neon")]
#[inline]
fn crumbs(v: uint8x16_t, j: usize) -> uint8x16_t {
    vandq_u8(vshlq_u8(v, vdupq_n_s8(-2 * j as i8)), vdupq_n_u8(3))
}

/// `value` where bit `bit` of a byte of `v` is set, else 0.
#[target_feature(enable = "neon")]
#[inline]
fn select_bit(v: uint8x16_t, bit: usize, value: u8) -> uint8x16_t {
    vandq_u8(vtstq_u8(v, vdupq_n_u8(1 << bit)), vdupq_n_u8(value))
}

/// The low (`g` even) or high nibbles of the 32 bytes of group pair `g / 2`.
#[target_feature(enable = "neon")]
#[inline]
fn k4_nibbles(qs: &[u8; 128], g: usize) -> [uint8x16_t; 2] {
    let (chunks, _) = qs.as_chunks::<32>();
    load_u8x32(&chunks[g / 2]).map(|v| {
        if g.is_multiple_of(2) {
            vandq_u8(v, vdupq_n_u8(0x0F))
        } else {
            vshrq_n_u8::<4>(v)
        }
    })
}

#[target_feature(enable = "neon")]
#[inline]
fn q4_k_quants(b: &BlockQ4K, g: usize) -> [int8x16_t; 2] {
    k4_nibbles(&b.qs, g).map(|v| vreinterpretq_s8_u8(v))
}

#[target_feature(enable = "neon")]
#[inline]
fn q5_k_quants(b: &BlockQ5K, g: usize) -> [int8x16_t; 2] {
    let low = k4_nibbles(&b.qs, g);
    let qh = load_u8x32(&b.qh);
    [0, 1].map(|h| vreinterpretq_s8_u8(vorrq_u8(low[h], select_bit(qh[h], g, 16))))
}

/// The 6-bit quants of group `g`, minus 32.
#[target_feature(enable = "neon")]
#[inline]
fn q6_k_quants(b: &BlockQ6K, g: usize) -> [int8x16_t; 2] {
    let (n, j) = (g / 4, g % 4);
    let (ql, _) = b.ql.as_chunks::<32>();
    let (qh, _) = b.qh.as_chunks::<32>();
    let low = load_u8x32(&ql[2 * n + j % 2]);
    let high = load_u8x32(&qh[n]);
    [0, 1].map(|h| {
        let l = if j < 2 {
            vandq_u8(low[h], vdupq_n_u8(0x0F))
        } else {
            vshrq_n_u8::<4>(low[h])
        };
        minus(vorrq_u8(l, vshlq_n_u8::<4>(crumbs(high[h], j))), 32)
    })
}

#[target_feature(enable = "neon")]
#[inline]
fn q2_k_quants(b: &BlockQ2K, g: usize) -> [int8x16_t; 2] {
    let (qs, _) = b.qs.as_chunks::<32>();
    load_u8x32(&qs[g / 4]).map(|v| vreinterpretq_s8_u8(crumbs(v, g % 4)))
}

/// The 3-bit quants of group `g`, minus 4.
#[target_feature(enable = "neon")]
#[inline]
fn q3_k_quants(b: &BlockQ3K, g: usize) -> [int8x16_t; 2] {
    let (qs, _) = b.qs.as_chunks::<32>();
    let low = load_u8x32(&qs[g / 4]);
    let hm = load_u8x32(&b.hmask);
    [0, 1].map(|h| minus(vorrq_u8(crumbs(low[h], g % 4), select_bit(hm[h], g, 4)), 4))
}

#[target_feature(enable = "neon")]
#[inline]
fn iq4_xs_quants(b: &BlockIq4Xs, g: usize) -> [int8x16_t; 2] {
    let (qs, _) = b.qs.as_chunks::<16>();
    nibbles(&qs[g]).map(|v| iq4_levels(v))
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

/// Q4_K/Q5_K: `d·sc_g·d_a` per group, minus `dmin·Σ m_g·dsum_g`.
fn k4_factors(d: f32, dmin: f32, scales: &[u8; 12], a: &SuperAct<'_>) -> Factors {
    let (sc, m) = k4_scales(scales);
    let group = std::array::from_fn(|g| d * f32::from(sc[g]) * a.d[g]);
    let mins: f32 = m.iter().zip(a.dsum).map(|(&m, s)| f32::from(m) * s).sum();
    Factors {
        group,
        sub: [0; 16],
        extra: -dmin * mins,
    }
}

/// The 16-value formats: `d·d_a` per group, the given sub-scales, no extra term.
fn sub16_factors(d: f32, sub: [i32; 16], a: &SuperAct<'_>) -> Factors {
    Factors {
        group: a.d.map(|da| d * da),
        sub,
        extra: 0.0,
    }
}

#[target_feature(enable = "neon")]
#[inline]
fn q4_k_rows<const R: usize, const DP: bool, const TWO: bool>(
    rows: [&[BlockQ4K]; R],
    act: ActRow<'_>,
    out: &mut [f32],
) {
    kquant_rows::<_, R, DP, TWO, false>(
        rows,
        act,
        out,
        |b, a| k4_factors(f16_to_f32(b.d), f16_to_f32(b.dmin), &b.scales, a),
        |b, g| q4_k_quants(b, g),
    );
}

#[target_feature(enable = "neon")]
#[inline]
fn q5_k_rows<const R: usize, const DP: bool, const TWO: bool>(
    rows: [&[BlockQ5K]; R],
    act: ActRow<'_>,
    out: &mut [f32],
) {
    kquant_rows::<_, R, DP, TWO, false>(
        rows,
        act,
        out,
        |b, a| k4_factors(f16_to_f32(b.d), f16_to_f32(b.dmin), &b.scales, a),
        |b, g| q5_k_quants(b, g),
    );
}

#[target_feature(enable = "neon")]
#[inline]
fn q6_k_rows<const R: usize, const DP: bool, const TWO: bool>(
    rows: [&[BlockQ6K]; R],
    act: ActRow<'_>,
    out: &mut [f32],
) {
    kquant_rows::<_, R, DP, TWO, true>(
        rows,
        act,
        out,
        |b, a| sub16_factors(f16_to_f32(b.d), b.scales.map(i32::from), a),
        |b, g| q6_k_quants(b, g),
    );
}

/// Q2_K: the low nibbles of the scales are the sub-scales; the high ones
/// the minimums, subtracted as `dmin·Σ m_i·d_a·sum16_i`.
fn q2_k_factors(b: &BlockQ2K, a: &SuperAct<'_>, d: f32, dmin: f32) -> Factors {
    let mins: f32 = (0..16)
        .map(|i| f32::from(b.scales[i] >> 4) * a.d[i / 2] * a.sum16(i) as f32)
        .sum();
    Factors {
        extra: -dmin * mins,
        ..sub16_factors(d, b.scales.map(|s| i32::from(s & 0x0F)), a)
    }
}

#[target_feature(enable = "neon")]
#[inline]
fn q2_k_rows<const R: usize, const DP: bool, const TWO: bool>(
    rows: [&[BlockQ2K]; R],
    act: ActRow<'_>,
    out: &mut [f32],
) {
    kquant_rows::<_, R, DP, TWO, true>(
        rows,
        act,
        out,
        |b, a| q2_k_factors(b, a, f16_to_f32(b.d), f16_to_f32(b.dmin)),
        |b, g| q2_k_quants(b, g),
    );
}

/// The sixteen Q3_K sub-block scales, offset removed.
fn q3k_scales(scales: &[u8; 12]) -> [i32; 16] {
    std::array::from_fn(|i| i32::from(scale_q3k(i, scales)) - 32)
}

#[target_feature(enable = "neon")]
#[inline]
fn q3_k_rows<const R: usize, const DP: bool, const TWO: bool>(
    rows: [&[BlockQ3K]; R],
    act: ActRow<'_>,
    out: &mut [f32],
) {
    kquant_rows::<_, R, DP, TWO, true>(
        rows,
        act,
        out,
        |b, a| sub16_factors(f16_to_f32(b.d), q3k_scales(&b.scales), a),
        |b, g| q3_k_quants(b, g),
    );
}

/// IQ4_XS sub-block scales with the offset removed, as floats.
fn iq4xs_scales(blk: &BlockIq4Xs) -> [f32; 8] {
    std::array::from_fn(|j| f32::from(i16::from(blk.sub_scale(j)) - 32))
}

#[target_feature(enable = "neon")]
#[inline]
fn iq4_xs_rows<const R: usize, const DP: bool, const TWO: bool>(
    rows: [&[BlockIq4Xs]; R],
    act: ActRow<'_>,
    out: &mut [f32],
) {
    kquant_rows::<_, R, DP, TWO, false>(
        rows,
        act,
        out,
        |b, a| {
            let (d, ls) = (f16_to_f32(b.d), iq4xs_scales(b));
            Factors {
                group: std::array::from_fn(|g| d * ls[g] * a.d[g]),
                sub: [0; 16],
                extra: 0.0,
            }
        },
        |b, g| iq4_xs_quants(b, g),
    );
}

row_entry_points!(BlockQ2K, q2_k_rows, crate::dot::reference::q2_k =>
    dot_q2_k, dot_q2_k_rows, dot_q2_k_dp, dot_q2_k_rows_dp);
row_entry_points!(BlockQ3K, q3_k_rows, crate::dot::reference::q3_k =>
    dot_q3_k, dot_q3_k_rows, dot_q3_k_dp, dot_q3_k_rows_dp);
row_entry_points!(BlockQ4K, q4_k_rows, crate::dot::reference::q4_k =>
    dot_q4_k, dot_q4_k_rows, dot_q4_k_dp, dot_q4_k_rows_dp);
row_entry_points!(BlockQ5K, q5_k_rows, crate::dot::reference::q5_k =>
    dot_q5_k, dot_q5_k_rows, dot_q5_k_dp, dot_q5_k_rows_dp);
row_entry_points!(BlockQ6K, q6_k_rows, crate::dot::reference::q6_k =>
    dot_q6_k, dot_q6_k_rows, dot_q6_k_dp, dot_q6_k_rows_dp);
row_entry_points!(BlockIq4Xs, iq4_xs_rows, crate::dot::reference::iq4_xs =>
    dot_iq4_xs, dot_iq4_xs_rows, dot_iq4_xs_dp, dot_iq4_xs_rows_dp);

/// Decodes each super-block group by group: `quants` gives group `g`'s
/// signed quants, `scale(i)` the factor and subtrahend of 16-value half `i`
/// (0..16), applied as `factor·q - sub` (the scalar decoders' order; a zero
/// subtrahend leaves the product as it is).
#[target_feature(enable = "neon")]
#[inline]
fn kquant_dequant<B>(
    blocks: &[B],
    out: &mut [f32],
    quants: impl Fn(&B, usize) -> [int8x16_t; 2],
    scale: impl Fn(&B, usize) -> (f32, Option<f32>),
) {
    let (oc, _) = out.as_chunks_mut::<256>();
    for (blk, o) in blocks.iter().zip(oc) {
        let (groups, _) = o.as_chunks_mut::<32>();
        for (g, o) in groups.iter_mut().enumerate() {
            let (halves, _) = o.as_chunks_mut::<16>();
            for (h, (o, q)) in halves.iter_mut().zip(quants(blk, g)).enumerate() {
                match scale(blk, 2 * g + h) {
                    (f, Some(m)) => {
                        bytes_to_f32(q, o, |v| vsubq_f32(vmulq_n_f32(v, f), vdupq_n_f32(m)));
                    }
                    (f, None) => bytes_to_f32(q, o, |v| vmulq_n_f32(v, f)),
                }
            }
        }
    }
}

#[target_feature(enable = "neon")]
fn dequant_q2_k_impl(blocks: &[BlockQ2K], out: &mut [f32]) {
    kquant_dequant(
        blocks,
        out,
        |b, g| q2_k_quants(b, g),
        |b, i| {
            let sc = b.scales[i];
            let dl = f16_to_f32(b.d) * f32::from(sc & 0x0F);
            (dl, Some(f16_to_f32(b.dmin) * f32::from(sc >> 4)))
        },
    );
}

#[target_feature(enable = "neon")]
fn dequant_q3_k_impl(blocks: &[BlockQ3K], out: &mut [f32]) {
    kquant_dequant(
        blocks,
        out,
        |b, g| q3_k_quants(b, g),
        |b, i| {
            let sc = f32::from(i16::from(scale_q3k(i, &b.scales)) - 32);
            (f16_to_f32(b.d) * sc, None)
        },
    );
}

#[target_feature(enable = "neon")]
fn dequant_q4_k_impl(blocks: &[BlockQ4K], out: &mut [f32]) {
    kquant_dequant(
        blocks,
        out,
        |b, g| q4_k_quants(b, g),
        |b, i| {
            let (sc, m) = scale_min_k4(i / 2, &b.scales);
            (
                f16_to_f32(b.d) * f32::from(sc),
                Some(f16_to_f32(b.dmin) * f32::from(m)),
            )
        },
    );
}

#[target_feature(enable = "neon")]
fn dequant_q5_k_impl(blocks: &[BlockQ5K], out: &mut [f32]) {
    kquant_dequant(
        blocks,
        out,
        |b, g| q5_k_quants(b, g),
        |b, i| {
            let (sc, m) = scale_min_k4(i / 2, &b.scales);
            (
                f16_to_f32(b.d) * f32::from(sc),
                Some(f16_to_f32(b.dmin) * f32::from(m)),
            )
        },
    );
}

#[target_feature(enable = "neon")]
fn dequant_q6_k_impl(blocks: &[BlockQ6K], out: &mut [f32]) {
    kquant_dequant(
        blocks,
        out,
        |b, g| q6_k_quants(b, g),
        |b, i| (f16_to_f32(b.d) * f32::from(b.scales[i]), None),
    );
}

#[target_feature(enable = "neon")]
fn dequant_iq4_xs_impl(blocks: &[BlockIq4Xs], out: &mut [f32]) {
    kquant_dequant(
        blocks,
        out,
        |b, g| iq4_xs_quants(b, g),
        |b, i| {
            let ls = f32::from(i16::from(b.sub_scale(i / 2)) - 32);
            (f16_to_f32(b.d) * ls, None)
        },
    );
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
