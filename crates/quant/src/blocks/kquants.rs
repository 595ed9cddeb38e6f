//! The K-quant super-block formats (256 elements): Q2_K, Q3_K, Q4_K, Q5_K,
//! Q6_K and the Q8_K activation format.
//!
//! A super-block holds one or two f16 super-scales and 16 or 8 sub-blocks
//! whose own scales (and minimums) are stored as small integers relative to
//! them. Decoding follows ggml's reference order of floating-point
//! operations, so results are bit-identical to it.

use bytemuck::{Pod, Zeroable};
use half::f16;

/// Elements per K-quant super-block.
pub const QK_K: usize = 256;
/// Bytes of packed 6-bit scales in Q3_K, Q4_K and Q5_K.
pub const K_SCALE_SIZE: usize = 12;

/// Q2_K: 16 sub-blocks of 16, 2-bit quants, `x = d*sc*q - dmin*m` with 4-bit `sc` and `m`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ2K {
    /// Per sub-block: scale in the low nibble, minimum in the high nibble.
    pub scales: [u8; QK_K / 16],
    /// Element `128n + 32j + l` is bits `2j..2j+2` of byte `32n + l`.
    pub qs: [u8; QK_K / 4],
    /// Super-scale of the sub-block scales.
    pub d: f16,
    /// Super-scale of the sub-block minimums.
    pub dmin: f16,
}
const _: () = assert!(size_of::<BlockQ2K>() == 84);

/// Q3_K: 16 sub-blocks of 16, 3-bit quants, `x = d*(sc-32)*(q-4)` with 6-bit `sc`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ3K {
    /// Third bits: element `e` is bit `e / 32` of byte `e % 32`; a clear bit subtracts 4.
    pub hmask: [u8; QK_K / 8],
    /// Low two bits, laid out as in [`BlockQ2K::qs`].
    pub qs: [u8; QK_K / 4],
    /// 16 six-bit scales: low nibbles in bytes 0..8, two high bits each in bytes 8..12.
    pub scales: [u8; K_SCALE_SIZE],
    /// Super-scale.
    pub d: f16,
}
const _: () = assert!(size_of::<BlockQ3K>() == 110);

/// Q4_K: 8 sub-blocks of 32, 4-bit quants, `x = d*sc*q - dmin*m` with 6-bit `sc` and `m`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ4K {
    /// Super-scale of the sub-block scales.
    pub d: f16,
    /// Super-scale of the sub-block minimums.
    pub dmin: f16,
    /// Eight 6-bit scales and eight 6-bit minimums, see [`scale_min_k4`].
    pub scales: [u8; K_SCALE_SIZE],
    /// Element `64n + l` in the low nibble of byte `32n + l`, element `64n + 32 + l` in its high nibble.
    pub qs: [u8; QK_K / 2],
}
const _: () = assert!(size_of::<BlockQ4K>() == 144);

/// Q5_K: as Q4_K with a fifth bit per quant.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ5K {
    /// Super-scale of the sub-block scales.
    pub d: f16,
    /// Super-scale of the sub-block minimums.
    pub dmin: f16,
    /// Packed as in [`BlockQ4K::scales`].
    pub scales: [u8; K_SCALE_SIZE],
    /// Fifth bits: element `64n + l` is bit `2n` of byte `l`, element `64n + 32 + l` bit `2n + 1`.
    pub qh: [u8; QK_K / 8],
    /// Low four bits, laid out as in [`BlockQ4K::qs`].
    pub qs: [u8; QK_K / 2],
}
const _: () = assert!(size_of::<BlockQ5K>() == 176);

/// Q6_K: 16 sub-blocks of 16, 6-bit quants, `x = d*sc*(q-32)` with signed 8-bit `sc`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ6K {
    /// Low four bits: for half `n`, elements `128n + l` / `+64` in byte `64n + l`
    /// (low/high nibble) and `128n + 32 + l` / `+96` in byte `64n + 32 + l`.
    pub ql: [u8; QK_K / 2],
    /// High two bits: element `128n + 32j + l` is bits `2j..2j+2` of byte `32n + l`.
    pub qh: [u8; QK_K / 4],
    /// Sub-block scales.
    pub scales: [i8; QK_K / 16],
    /// Super-scale.
    pub d: f16,
}
const _: () = assert!(size_of::<BlockQ6K>() == 210);

/// Q8_K: the activation format for K-quant dot products, `x = d * q`, with
/// the sums of each 16 quants precomputed.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ8K {
    /// Scale (f32, unlike the weight formats).
    pub d: f32,
    /// Quants in element order, within -127..=127.
    pub qs: [i8; QK_K],
    /// `bsums[i] = sum(qs[16i..16i+16])`.
    pub bsums: [i16; QK_K / 16],
}
const _: () = assert!(size_of::<BlockQ8K>() == 292);

macro_rules! zeroed_default {
    ($($t:ty),*) => {$(
        impl Default for $t {
            fn default() -> Self {
                Self::zeroed()
            }
        }
    )*};
}
zeroed_default!(BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K);

/// Scale and minimum of sub-block `j` (0..8) from the 12-byte packing of
/// Q4_K/Q5_K: sub-blocks 0..4 keep both in the low six bits of bytes `j` and
/// `j + 4`; sub-blocks 4..8 keep their low four bits in byte `j + 4` and their
/// high two bits in the top bits of bytes `j - 4` and `j`.
pub fn scale_min_k4(j: usize, scales: &[u8; K_SCALE_SIZE]) -> (u8, u8) {
    if j < 4 {
        (scales[j] & 63, scales[j + 4] & 63)
    } else {
        (
            (scales[j + 4] & 0x0F) | ((scales[j - 4] >> 6) << 4),
            (scales[j + 4] >> 4) | ((scales[j] >> 6) << 4),
        )
    }
}

/// Packs eight 6-bit scales and minimums into the layout [`scale_min_k4`] reads.
pub fn pack_scale_min_k4(sc: &[u8; 8], m: &[u8; 8]) -> [u8; K_SCALE_SIZE] {
    let mut out = [0u8; K_SCALE_SIZE];
    for j in 0..8 {
        let (ls, lm) = (sc[j] & 63, m[j] & 63);
        if j < 4 {
            out[j] |= ls;
            out[j + 4] |= lm;
        } else {
            out[j + 4] = (ls & 0x0F) | ((lm & 0x0F) << 4);
            out[j - 4] |= (ls >> 4) << 6;
            out[j] |= (lm >> 4) << 6;
        }
    }
    out
}

/// Six-bit scale `j` (0..16) of Q3_K, still offset by 32.
pub fn scale_q3k(j: usize, scales: &[u8; K_SCALE_SIZE]) -> u8 {
    let low = if j < 8 {
        scales[j] & 0x0F
    } else {
        scales[j - 8] >> 4
    };
    let high = (scales[8 + j % 4] >> (2 * (j / 4))) & 3;
    low | (high << 4)
}

/// Packs sixteen 6-bit scales (offset by 32) into the layout [`scale_q3k`] reads.
pub fn pack_scales_q3k(sc: &[u8; 16]) -> [u8; K_SCALE_SIZE] {
    let mut out = [0u8; K_SCALE_SIZE];
    for (j, &l) in sc.iter().enumerate() {
        let l = l & 63;
        if j < 8 {
            out[j] |= l & 0x0F;
        } else {
            out[j - 8] |= (l & 0x0F) << 4;
        }
        out[8 + j % 4] |= (l >> 4) << (2 * (j / 4));
    }
    out
}

impl BlockQ2K {
    /// Decodes the 256 values.
    pub fn dequantize(&self, out: &mut [f32; QK_K]) {
        let d = self.d.to_f32();
        let dmin = self.dmin.to_f32();
        for (i, out) in out.chunks_exact_mut(16).enumerate() {
            let sc = self.scales[i];
            let dl = d * f32::from(sc & 0x0F);
            let ml = dmin * f32::from(sc >> 4);
            let (n, j, half) = (i / 8, (i / 2) % 4, i % 2);
            for (l, o) in out.iter_mut().enumerate() {
                let q = (self.qs[32 * n + 16 * half + l] >> (2 * j)) & 3;
                *o = dl * f32::from(q) - ml;
            }
        }
    }
}

impl BlockQ3K {
    /// Decodes the 256 values.
    pub fn dequantize(&self, out: &mut [f32; QK_K]) {
        let d = self.d.to_f32();
        for (i, out) in out.chunks_exact_mut(16).enumerate() {
            let dl = d * f32::from(i16::from(scale_q3k(i, &self.scales)) - 32);
            let (n, j, half) = (i / 8, (i / 2) % 4, i % 2);
            for (l, o) in out.iter_mut().enumerate() {
                let e = 16 * i + l;
                let low = i16::from((self.qs[32 * n + 16 * half + l] >> (2 * j)) & 3);
                let high_set = self.hmask[e % 32] & (1 << (e / 32)) != 0;
                let q = if high_set { low } else { low - 4 };
                *o = dl * f32::from(q);
            }
        }
    }
}

impl BlockQ4K {
    /// Decodes the 256 values.
    pub fn dequantize(&self, out: &mut [f32; QK_K]) {
        let d = self.d.to_f32();
        let dmin = self.dmin.to_f32();
        for (n, out) in out.chunks_exact_mut(64).enumerate() {
            let (sc1, m1) = scale_min_k4(2 * n, &self.scales);
            let (sc2, m2) = scale_min_k4(2 * n + 1, &self.scales);
            let (d1, m1) = (d * f32::from(sc1), dmin * f32::from(m1));
            let (d2, m2) = (d * f32::from(sc2), dmin * f32::from(m2));
            let qs = &self.qs[32 * n..32 * n + 32];
            for (l, &q) in qs.iter().enumerate() {
                out[l] = d1 * f32::from(q & 0x0F) - m1;
                out[l + 32] = d2 * f32::from(q >> 4) - m2;
            }
        }
    }
}

impl BlockQ5K {
    /// Decodes the 256 values.
    pub fn dequantize(&self, out: &mut [f32; QK_K]) {
        let d = self.d.to_f32();
        let dmin = self.dmin.to_f32();
        for (n, out) in out.chunks_exact_mut(64).enumerate() {
            let (sc1, m1) = scale_min_k4(2 * n, &self.scales);
            let (sc2, m2) = scale_min_k4(2 * n + 1, &self.scales);
            let (d1, m1) = (d * f32::from(sc1), dmin * f32::from(m1));
            let (d2, m2) = (d * f32::from(sc2), dmin * f32::from(m2));
            let qs = &self.qs[32 * n..32 * n + 32];
            for (l, &q) in qs.iter().enumerate() {
                let h1 = ((self.qh[l] >> (2 * n)) & 1) << 4;
                let h2 = ((self.qh[l] >> (2 * n + 1)) & 1) << 4;
                out[l] = d1 * f32::from((q & 0x0F) | h1) - m1;
                out[l + 32] = d2 * f32::from((q >> 4) | h2) - m2;
            }
        }
    }
}

impl BlockQ6K {
    /// The 6-bit quant (0..64, offset by 32) of element `e`.
    fn quant(&self, e: usize) -> u8 {
        let (n, r) = (e / 128, e % 128);
        let (j, l) = (r / 32, r % 32);
        let byte = self.ql[64 * n + 32 * (j % 2) + l];
        let low = if j < 2 { byte & 0x0F } else { byte >> 4 };
        let high = (self.qh[32 * n + l] >> (2 * j)) & 3;
        low | (high << 4)
    }

    /// Decodes the 256 values.
    pub fn dequantize(&self, out: &mut [f32; QK_K]) {
        let d = self.d.to_f32();
        for (i, out) in out.chunks_exact_mut(16).enumerate() {
            let dl = d * f32::from(self.scales[i]);
            for (l, o) in out.iter_mut().enumerate() {
                *o = dl * f32::from(i16::from(self.quant(16 * i + l)) - 32);
            }
        }
    }
}

impl BlockQ8K {
    /// Decodes the 256 values.
    pub fn dequantize(&self, out: &mut [f32; QK_K]) {
        for (o, &q) in out.iter_mut().zip(&self.qs) {
            *o = self.d * f32::from(q);
        }
    }

    /// Encodes 256 values with one symmetric scale (largest magnitude to 127)
    /// and fills `bsums`.
    pub fn quantize(src: &[f32; QK_K]) -> Self {
        let amax = src.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        let mut block = Self::zeroed();
        if amax == 0.0 || !amax.is_finite() {
            return block;
        }
        let iscale = 127.0 / amax;
        for (q, &v) in block.qs.iter_mut().zip(src) {
            *q = (iscale * v).round_ties_even().clamp(-127.0, 127.0) as i8;
        }
        for (sum, qs) in block.bsums.iter_mut().zip(block.qs.chunks_exact(16)) {
            *sum = qs.iter().map(|&q| i16::from(q)).sum();
        }
        block.d = 1.0 / iscale;
        block
    }
}
