//! Scalar reference dot products: a weight row against quantized activations
//! ([`ActRow`]) or against f32 values. Plain loops over the block layouts,
//! kept as the ground truth the SIMD kernels are tested against.
//!
//! Integer partial sums are exact (in terms of the activations' integer
//! values `Q`, which have one or two 8-bit planes); each 32-value activation block contributes
//! `d_w * d_a * Σ q_w q_a` plus the weight offset or minimum times the
//! activation block's sum.

use bytemuck::Pod;
use half::{bf16, f16};

use super::activations::ActRow;
use crate::blocks::{
    BlockIq4Nl, BlockIq4Xs, BlockQ2K, BlockQ3K, BlockQ4_0, BlockQ4_1, BlockQ4K, BlockQ5_0,
    BlockQ5_1, BlockQ5K, BlockQ6K, BlockQ8_0, IQ4_LEVELS, scale_min_k4, scale_q3k,
};

/// The blocks of a row, read without alignment requirements.
fn blocks<B: Pod>(row: &[u8]) -> impl Iterator<Item = B> + '_ {
    row.chunks_exact(size_of::<B>())
        .map(bytemuck::pod_read_unaligned::<B>)
}

/// `Σ w_k Q_{start+k}` over the activation values from `start`.
fn idot(w: impl IntoIterator<Item = i32>, act: ActRow<'_>, start: usize) -> i32 {
    w.into_iter().zip(start..).map(|(w, i)| w * act.q(i)).sum()
}

/// The 32 nibbles of a Q4-style block in element order.
fn nibbles(qs: &[u8; 16]) -> [i32; 32] {
    let mut q = [0i32; 32];
    for (j, &b) in qs.iter().enumerate() {
        q[j] = i32::from(b & 0x0F);
        q[j + 16] = i32::from(b >> 4);
    }
    q
}

fn fifth_bits(qs: &[u8; 16], qh: [u8; 4]) -> [i32; 32] {
    let qh = u32::from_le_bytes(qh);
    let mut q = nibbles(qs);
    for (j, q) in q.iter_mut().enumerate() {
        *q |= (((qh >> j) & 1) << 4) as i32;
    }
    q
}

/// Q4_0 weights against quantized activations.
pub fn q4_0(row: &[u8], act: ActRow<'_>) -> f32 {
    let mut sum = 0.0f32;
    for (b, blk) in blocks::<BlockQ4_0>(row).enumerate() {
        let q = nibbles(&blk.qs).map(|q| q - 8);
        let isum = idot(q, act, 32 * b);
        sum += blk.d.to_f32() * act.d[b] * isum as f32;
    }
    sum
}

/// Q4_1 weights against quantized activations.
pub fn q4_1(row: &[u8], act: ActRow<'_>) -> f32 {
    let mut sum = 0.0f32;
    for (b, blk) in blocks::<BlockQ4_1>(row).enumerate() {
        let isum = idot(nibbles(&blk.qs), act, 32 * b);
        sum += blk.d.to_f32() * act.d[b] * isum as f32 + blk.m.to_f32() * act.dsum[b];
    }
    sum
}

/// Q5_0 weights against quantized activations.
pub fn q5_0(row: &[u8], act: ActRow<'_>) -> f32 {
    let mut sum = 0.0f32;
    for (b, blk) in blocks::<BlockQ5_0>(row).enumerate() {
        let q = fifth_bits(&blk.qs, blk.qh).map(|q| q - 16);
        let isum = idot(q, act, 32 * b);
        sum += blk.d.to_f32() * act.d[b] * isum as f32;
    }
    sum
}

/// Q5_1 weights against quantized activations.
pub fn q5_1(row: &[u8], act: ActRow<'_>) -> f32 {
    let mut sum = 0.0f32;
    for (b, blk) in blocks::<BlockQ5_1>(row).enumerate() {
        let isum = idot(fifth_bits(&blk.qs, blk.qh), act, 32 * b);
        sum += blk.d.to_f32() * act.d[b] * isum as f32 + blk.m.to_f32() * act.dsum[b];
    }
    sum
}

/// Q8_0 weights against quantized activations.
pub fn q8_0(row: &[u8], act: ActRow<'_>) -> f32 {
    let mut sum = 0.0f32;
    for (b, blk) in blocks::<BlockQ8_0>(row).enumerate() {
        let isum = idot(blk.qs.map(i32::from), act, 32 * b);
        sum += blk.d.to_f32() * act.d[b] * isum as f32;
    }
    sum
}

/// IQ4_NL weights against quantized activations.
pub fn iq4_nl(row: &[u8], act: ActRow<'_>) -> f32 {
    let mut sum = 0.0f32;
    for (b, blk) in blocks::<BlockIq4Nl>(row).enumerate() {
        let q = nibbles(&blk.qs).map(|q| i32::from(IQ4_LEVELS[q as usize]));
        let isum = idot(q, act, 32 * b);
        sum += blk.d.to_f32() * act.d[b] * isum as f32;
    }
    sum
}

/// Q2_K weights against quantized activations.
pub fn q2_k(row: &[u8], act: ActRow<'_>) -> f32 {
    let mut sum = 0.0f32;
    for (s, blk) in blocks::<BlockQ2K>(row).enumerate() {
        let (d, dmin) = (blk.d.to_f32(), blk.dmin.to_f32());
        for i in 0..16 {
            let (n, j, half) = (i / 8, (i / 2) % 4, i % 2);
            let q = (0..16).map(|l| i32::from((blk.qs[32 * n + 16 * half + l] >> (2 * j)) & 3));
            let e = 256 * s + 16 * i;
            let isum = idot(q, act, e);
            let da = act.d[e / 32];
            let (sc, m) = (blk.scales[i] & 0x0F, blk.scales[i] >> 4);
            sum += d * f32::from(sc) * da * isum as f32;
            sum -= dmin * f32::from(m) * da * act.sum16(e / 16) as f32;
        }
    }
    sum
}

/// Q3_K weights against quantized activations.
pub fn q3_k(row: &[u8], act: ActRow<'_>) -> f32 {
    let mut sum = 0.0f32;
    for (s, blk) in blocks::<BlockQ3K>(row).enumerate() {
        let d = blk.d.to_f32();
        for i in 0..16 {
            let (n, j, half) = (i / 8, (i / 2) % 4, i % 2);
            let q = (0..16).map(|l| {
                let e = 16 * i + l;
                let low = i32::from((blk.qs[32 * n + 16 * half + l] >> (2 * j)) & 3);
                let high = blk.hmask[e % 32] & (1 << (e / 32)) != 0;
                if high { low } else { low - 4 }
            });
            let e = 256 * s + 16 * i;
            let isum = idot(q, act, e);
            let sc = i32::from(scale_q3k(i, &blk.scales)) - 32;
            sum += d * sc as f32 * act.d[e / 32] * isum as f32;
        }
    }
    sum
}

/// Q4_K weights against quantized activations.
pub fn q4_k(row: &[u8], act: ActRow<'_>) -> f32 {
    let mut sum = 0.0f32;
    for (s, blk) in blocks::<BlockQ4K>(row).enumerate() {
        let (d, dmin) = (blk.d.to_f32(), blk.dmin.to_f32());
        for j in 0..8 {
            let (n, shift) = (j / 2, 4 * (j % 2));
            let q = blk.qs[32 * n..32 * n + 32]
                .iter()
                .map(|&b| i32::from((b >> shift) & 0x0F));
            let b = 8 * s + j;
            let isum = idot(q, act, 32 * b);
            let (sc, m) = scale_min_k4(j, &blk.scales);
            sum += d * f32::from(sc) * act.d[b] * isum as f32 - dmin * f32::from(m) * act.dsum[b];
        }
    }
    sum
}

/// Q5_K weights against quantized activations.
pub fn q5_k(row: &[u8], act: ActRow<'_>) -> f32 {
    let mut sum = 0.0f32;
    for (s, blk) in blocks::<BlockQ5K>(row).enumerate() {
        let (d, dmin) = (blk.d.to_f32(), blk.dmin.to_f32());
        for j in 0..8 {
            let (n, shift) = (j / 2, 4 * (j % 2));
            let q = (0..32).map(|l| {
                let low = (blk.qs[32 * n + l] >> shift) & 0x0F;
                let high = (blk.qh[l] >> j) & 1;
                i32::from(low | (high << 4))
            });
            let b = 8 * s + j;
            let isum = idot(q, act, 32 * b);
            let (sc, m) = scale_min_k4(j, &blk.scales);
            sum += d * f32::from(sc) * act.d[b] * isum as f32 - dmin * f32::from(m) * act.dsum[b];
        }
    }
    sum
}

/// Q6_K weights against quantized activations.
pub fn q6_k(row: &[u8], act: ActRow<'_>) -> f32 {
    let mut sum = 0.0f32;
    for (s, blk) in blocks::<BlockQ6K>(row).enumerate() {
        let d = blk.d.to_f32();
        for i in 0..16 {
            let q = (0..16).map(|l| {
                let e = 16 * i + l;
                let (n, r) = (e / 128, e % 128);
                let (j, l) = (r / 32, r % 32);
                let byte = blk.ql[64 * n + 32 * (j % 2) + l];
                let low = if j < 2 { byte & 0x0F } else { byte >> 4 };
                let high = (blk.qh[32 * n + l] >> (2 * j)) & 3;
                i32::from(low | (high << 4)) - 32
            });
            let e = 256 * s + 16 * i;
            let isum = idot(q, act, e);
            sum += d * f32::from(blk.scales[i]) * act.d[e / 32] * isum as f32;
        }
    }
    sum
}

/// IQ4_XS weights against quantized activations.
pub fn iq4_xs(row: &[u8], act: ActRow<'_>) -> f32 {
    let mut sum = 0.0f32;
    for (s, blk) in blocks::<BlockIq4Xs>(row).enumerate() {
        let d = blk.d.to_f32();
        for j in 0..8 {
            let q =
                nibbles(&blk.qs.as_chunks::<16>().0[j]).map(|q| i32::from(IQ4_LEVELS[q as usize]));
            let b = 8 * s + j;
            let isum = idot(q, act, 32 * b);
            let ls = i32::from(blk.sub_scale(j)) - 32;
            sum += d * ls as f32 * act.d[b] * isum as f32;
        }
    }
    sum
}

/// f32 weights against f32 values.
pub fn f32_f32(row: &[u8], x: &[f32]) -> f32 {
    row.as_chunks::<4>()
        .0
        .iter()
        .zip(x)
        .map(|(w, &x)| f32::from_le_bytes(*w) * x)
        .sum()
}

/// f16 weights against f32 values.
pub fn f16_f32(row: &[u8], x: &[f32]) -> f32 {
    row.as_chunks::<2>()
        .0
        .iter()
        .zip(x)
        .map(|(w, &x)| f16::from_le_bytes(*w).to_f32() * x)
        .sum()
}

/// bf16 weights against f32 values.
pub fn bf16_f32(row: &[u8], x: &[f32]) -> f32 {
    row.as_chunks::<2>()
        .0
        .iter()
        .zip(x)
        .map(|(w, &x)| bf16::from_le_bytes(*w).to_f32() * x)
        .sum()
}
