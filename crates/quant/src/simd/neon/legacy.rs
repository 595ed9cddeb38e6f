//! The 32-element formats: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and IQ4_NL.
//!
//! Every format's quants are made signed bytes (offsets subtracted), so one
//! signed dot product serves all; Q4_1/Q5_1's minimums enter through the
//! activation block sums.

#![allow(clippy::wildcard_imports)]

use std::arch::aarch64::*;

use super::{
    ActRow, bits_to_bytes, block_dot, bytes_to_f32, f16_to_f32, iq4_levels, load_i8x32, minus,
    nibbles, row_entry_points, safe_dequant,
};
use crate::blocks::{BlockIq4Nl, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0};
use ferrolm_gguf::GgmlType;

/// `R` rows of blocks `B` against one activation row: for each row,
/// `Σ d_w·d_a·Σ(w·Q_a) + m·dsum_a` over its blocks, where `terms` gives a
/// block's signed quants, `d_w` and minimum `m`; with `TWO` over both
/// activation planes. The activation loads are shared by the rows, and
/// each row has its own accumulators, so its result does not depend on `R`.
#[target_feature(enable = "neon")]
#[inline]
fn legacy_rows<B, const R: usize, const DP: bool, const TWO: bool>(
    rows: [&[B]; R],
    act: ActRow<'_>,
    out: &mut [f32],
    terms: impl Fn(&B) -> ([int8x16_t; 2], f32, f32),
) {
    let n = rows.iter().map(|r| r.len()).fold(act.d.len(), usize::min);
    let (aq, _) = act.qs.as_chunks::<32>();
    let (aq2, _) = act.qs2.as_chunks::<32>();
    let (aq, ad, ads) = (&aq[..n], &act.d[..n], &act.dsum[..n]);
    let aq2 = if TWO { &aq2[..n] } else { aq2 };
    let rows: [&[B]; R] = rows.map(|r| &r[..n]);
    let mut acc = [vdupq_n_f32(0.0); R];
    let mut off = [0.0f32; R];
    for i in 0..n {
        let a = load_i8x32(&aq[i]);
        let a2 = if TWO { load_i8x32(&aq2[i]) } else { a };
        for r in 0..R {
            let (w, d, m) = terms(&rows[r][i]);
            let p = vcvtq_f32_s32(block_dot::<DP, TWO>(w, a, a2));
            acc[r] = vfmaq_n_f32(acc[r], p, d * ad[i]);
            off[r] += m * ads[i];
        }
    }
    for ((y, acc), off) in out.iter_mut().zip(acc).zip(off) {
        *y = vaddvq_f32(acc) + off;
    }
}

/// The 5-bit quants of Q5_0/Q5_1 (nibbles plus the bits of `qh` as 16), unsigned.
#[target_feature(enable = "neon")]
#[inline]
fn fifth_bit_quants(qs: &[u8; 16], qh: [u8; 4]) -> [uint8x16_t; 2] {
    let [lo, hi] = nibbles(qs);
    let bits = u32::from_le_bytes(qh);
    let high = |b: u32| vandq_u8(bits_to_bytes(b as u16), vdupq_n_u8(0x10));
    [vorrq_u8(lo, high(bits)), vorrq_u8(hi, high(bits >> 16))]
}

/// Q4_0: nibbles minus 8.
#[target_feature(enable = "neon")]
#[inline]
fn q4_0_quants(b: &BlockQ4_0) -> [int8x16_t; 2] {
    nibbles(&b.qs).map(|v| minus(v, 8))
}

/// Q4_1: nibbles as they are.
#[target_feature(enable = "neon")]
#[inline]
fn q4_1_quants(b: &BlockQ4_1) -> [int8x16_t; 2] {
    nibbles(&b.qs).map(|v| vreinterpretq_s8_u8(v))
}

/// Q5_0: 5-bit quants minus 16.
#[target_feature(enable = "neon")]
#[inline]
fn q5_0_quants(b: &BlockQ5_0) -> [int8x16_t; 2] {
    fifth_bit_quants(&b.qs, b.qh).map(|v| minus(v, 16))
}

/// Q5_1: 5-bit quants as they are.
#[target_feature(enable = "neon")]
#[inline]
fn q5_1_quants(b: &BlockQ5_1) -> [int8x16_t; 2] {
    fifth_bit_quants(&b.qs, b.qh).map(|v| vreinterpretq_s8_u8(v))
}

/// IQ4_NL: the levels the nibbles select.
#[target_feature(enable = "neon")]
#[inline]
fn iq4_nl_quants(b: &BlockIq4Nl) -> [int8x16_t; 2] {
    nibbles(&b.qs).map(|v| iq4_levels(v))
}

#[target_feature(enable = "neon")]
#[inline]
fn q4_0_rows<const R: usize, const DP: bool, const TWO: bool>(
    rows: [&[BlockQ4_0]; R],
    act: ActRow<'_>,
    out: &mut [f32],
) {
    legacy_rows::<_, R, DP, TWO>(rows, act, out, |b| (q4_0_quants(b), f16_to_f32(b.d), 0.0));
}

#[target_feature(enable = "neon")]
#[inline]
fn q4_1_rows<const R: usize, const DP: bool, const TWO: bool>(
    rows: [&[BlockQ4_1]; R],
    act: ActRow<'_>,
    out: &mut [f32],
) {
    legacy_rows::<_, R, DP, TWO>(rows, act, out, |b| {
        (q4_1_quants(b), f16_to_f32(b.d), f16_to_f32(b.m))
    });
}

#[target_feature(enable = "neon")]
#[inline]
fn q5_0_rows<const R: usize, const DP: bool, const TWO: bool>(
    rows: [&[BlockQ5_0]; R],
    act: ActRow<'_>,
    out: &mut [f32],
) {
    legacy_rows::<_, R, DP, TWO>(rows, act, out, |b| (q5_0_quants(b), f16_to_f32(b.d), 0.0));
}

#[target_feature(enable = "neon")]
#[inline]
fn q5_1_rows<const R: usize, const DP: bool, const TWO: bool>(
    rows: [&[BlockQ5_1]; R],
    act: ActRow<'_>,
    out: &mut [f32],
) {
    legacy_rows::<_, R, DP, TWO>(rows, act, out, |b| {
        (q5_1_quants(b), f16_to_f32(b.d), f16_to_f32(b.m))
    });
}

#[target_feature(enable = "neon")]
#[inline]
fn q8_0_rows<const R: usize, const DP: bool, const TWO: bool>(
    rows: [&[BlockQ8_0]; R],
    act: ActRow<'_>,
    out: &mut [f32],
) {
    legacy_rows::<_, R, DP, TWO>(rows, act, out, |b| {
        (load_i8x32(&b.qs), f16_to_f32(b.d), 0.0)
    });
}

#[target_feature(enable = "neon")]
#[inline]
fn iq4_nl_rows<const R: usize, const DP: bool, const TWO: bool>(
    rows: [&[BlockIq4Nl]; R],
    act: ActRow<'_>,
    out: &mut [f32],
) {
    legacy_rows::<_, R, DP, TWO>(rows, act, out, |b| (iq4_nl_quants(b), f16_to_f32(b.d), 0.0));
}

row_entry_points!(BlockQ4_0, q4_0_rows, crate::dot::reference::q4_0 =>
    dot_q4_0, dot_q4_0_rows, dot_q4_0_dp, dot_q4_0_rows_dp);
row_entry_points!(BlockQ4_1, q4_1_rows, crate::dot::reference::q4_1 =>
    dot_q4_1, dot_q4_1_rows, dot_q4_1_dp, dot_q4_1_rows_dp);
row_entry_points!(BlockQ5_0, q5_0_rows, crate::dot::reference::q5_0 =>
    dot_q5_0, dot_q5_0_rows, dot_q5_0_dp, dot_q5_0_rows_dp);
row_entry_points!(BlockQ5_1, q5_1_rows, crate::dot::reference::q5_1 =>
    dot_q5_1, dot_q5_1_rows, dot_q5_1_dp, dot_q5_1_rows_dp);
row_entry_points!(BlockQ8_0, q8_0_rows, crate::dot::reference::q8_0 =>
    dot_q8_0, dot_q8_0_rows, dot_q8_0_dp, dot_q8_0_rows_dp);
row_entry_points!(BlockIq4Nl, iq4_nl_rows, crate::dot::reference::iq4_nl =>
    dot_iq4_nl, dot_iq4_nl_rows, dot_iq4_nl_dp, dot_iq4_nl_rows_dp);

/// Decodes each block's two halves of signed quants to floats as
/// `f(d, m, q)`, the scalar decoder's operations in its order.
#[target_feature(enable = "neon")]
#[inline]
fn legacy_dequant<B>(
    blocks: &[B],
    out: &mut [f32],
    quants: impl Fn(&B) -> ([int8x16_t; 2], f32, f32),
    f: impl Fn(float32x4_t, f32, f32) -> float32x4_t,
) {
    let (oc, _) = out.as_chunks_mut::<32>();
    for (blk, o) in blocks.iter().zip(oc) {
        let (q, d, m) = quants(blk);
        let (halves, _) = o.as_chunks_mut::<16>();
        for (o, q) in halves.iter_mut().zip(q) {
            bytes_to_f32(q, o, |v| f(v, d, m));
        }
    }
}

/// `q · d`.
#[target_feature(enable = "neon")]
#[inline]
fn scaled(q: float32x4_t, d: f32, _: f32) -> float32x4_t {
    vmulq_n_f32(q, d)
}

/// `q · d + m`, unfused as the scalar decoder.
#[target_feature(enable = "neon")]
#[inline]
fn scaled_plus_min(q: float32x4_t, d: f32, m: f32) -> float32x4_t {
    vaddq_f32(vmulq_n_f32(q, d), vdupq_n_f32(m))
}

#[target_feature(enable = "neon")]
fn dequant_q4_0_impl(blocks: &[BlockQ4_0], out: &mut [f32]) {
    legacy_dequant(
        blocks,
        out,
        |b| (q4_0_quants(b), f16_to_f32(b.d), 0.0),
        |q, d, m| scaled(q, d, m),
    );
}

#[target_feature(enable = "neon")]
fn dequant_q4_1_impl(blocks: &[BlockQ4_1], out: &mut [f32]) {
    legacy_dequant(
        blocks,
        out,
        |b| (q4_1_quants(b), f16_to_f32(b.d), f16_to_f32(b.m)),
        |q, d, m| scaled_plus_min(q, d, m),
    );
}

#[target_feature(enable = "neon")]
fn dequant_q5_0_impl(blocks: &[BlockQ5_0], out: &mut [f32]) {
    legacy_dequant(
        blocks,
        out,
        |b| (q5_0_quants(b), f16_to_f32(b.d), 0.0),
        |q, d, m| scaled(q, d, m),
    );
}

#[target_feature(enable = "neon")]
fn dequant_q5_1_impl(blocks: &[BlockQ5_1], out: &mut [f32]) {
    legacy_dequant(
        blocks,
        out,
        |b| (q5_1_quants(b), f16_to_f32(b.d), f16_to_f32(b.m)),
        |q, d, m| scaled_plus_min(q, d, m),
    );
}

#[target_feature(enable = "neon")]
fn dequant_q8_0_impl(blocks: &[BlockQ8_0], out: &mut [f32]) {
    legacy_dequant(
        blocks,
        out,
        |b| (load_i8x32(&b.qs), f16_to_f32(b.d), 0.0),
        |q, d, m| scaled(q, d, m),
    );
}

#[target_feature(enable = "neon")]
fn dequant_iq4_nl_impl(blocks: &[BlockIq4Nl], out: &mut [f32]) {
    legacy_dequant(
        blocks,
        out,
        |b| (iq4_nl_quants(b), f16_to_f32(b.d), 0.0),
        |q, d, m| scaled(q, d, m),
    );
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
