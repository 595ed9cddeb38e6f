//! The legacy 32-element formats: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1.
//!
//! Each block holds one f16 scale (plus an f16 minimum or sum for the `_1`
//! variants) and 32 quants. The quantizers reproduce ggml's reference
//! quantizers bit for bit, so a model written here matches one written by
//! llama.cpp without an importance matrix.

use bytemuck::{Pod, Zeroable};
use half::f16;

/// Elements per legacy block.
pub const QK: usize = 32;

/// Q4_0: `x = d * (q - 8)`, 4-bit quants, 4.5 bits per weight.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct BlockQ4_0 {
    /// Scale.
    pub d: f16,
    /// Element `j` in the low nibble of byte `j`, element `j + 16` in the high nibble.
    pub qs: [u8; QK / 2],
}
const _: () = assert!(size_of::<BlockQ4_0>() == 18);

/// Q4_1: `x = d * q + m`, 4-bit quants, 5 bits per weight.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct BlockQ4_1 {
    /// Scale.
    pub d: f16,
    /// Minimum (the value of quant 0).
    pub m: f16,
    /// Nibbles laid out as in [`BlockQ4_0`].
    pub qs: [u8; QK / 2],
}
const _: () = assert!(size_of::<BlockQ4_1>() == 20);

/// Q5_0: `x = d * (q - 16)`, 5-bit quants, 5.5 bits per weight.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct BlockQ5_0 {
    /// Scale.
    pub d: f16,
    /// Fifth bits: bit `j` of this little-endian u32 belongs to element `j`.
    pub qh: [u8; 4],
    /// Low four bits, laid out as in [`BlockQ4_0`].
    pub qs: [u8; QK / 2],
}
const _: () = assert!(size_of::<BlockQ5_0>() == 22);

/// Q5_1: `x = d * q + m`, 5-bit quants, 6 bits per weight.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct BlockQ5_1 {
    /// Scale.
    pub d: f16,
    /// Minimum.
    pub m: f16,
    /// Fifth bits, as in [`BlockQ5_0`].
    pub qh: [u8; 4],
    /// Low four bits, laid out as in [`BlockQ4_0`].
    pub qs: [u8; QK / 2],
}
const _: () = assert!(size_of::<BlockQ5_1>() == 24);

/// Q8_0: `x = d * q`, signed 8-bit quants, 8.5 bits per weight.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ8_0 {
    /// Scale.
    pub d: f16,
    /// Quants in element order.
    pub qs: [i8; QK],
}
const _: () = assert!(size_of::<BlockQ8_0>() == 34);

/// Q8_1: `x = d * q`, plus `s = d * sum(q)` so that dot products with
/// minimum-carrying formats (Q4_1, Q5_1) need no extra pass.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ8_1 {
    /// Scale.
    pub d: f16,
    /// `d * sum(qs)`.
    pub s: f16,
    /// Quants in element order.
    pub qs: [i8; QK],
}
const _: () = assert!(size_of::<BlockQ8_1>() == 36);

impl Default for BlockQ8_0 {
    fn default() -> Self {
        Self::zeroed()
    }
}

impl Default for BlockQ8_1 {
    fn default() -> Self {
        Self::zeroed()
    }
}

/// The value with the largest magnitude, sign kept (the first one on ties).
fn signed_absmax(src: &[f32]) -> f32 {
    let mut amax = 0.0f32;
    let mut max = 0.0f32;
    for &v in src {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    max
}

fn min_max(src: &[f32]) -> (f32, f32) {
    src.iter()
        .fold((f32::MAX, -f32::MAX), |(lo, hi), &v| (lo.min(v), hi.max(v)))
}

fn reciprocal_or_zero(d: f32) -> f32 {
    if d == 0.0 { 0.0 } else { 1.0 / d }
}

/// Truncation toward zero as C's float-to-integer cast does; the callers add
/// 0.5 first, so this rounds half up on the non-negative range they produce.
fn trunc_clamped(v: f32, max: u8) -> u8 {
    (v as i32).clamp(0, i32::from(max)) as u8
}

impl BlockQ4_0 {
    /// Decodes the 32 values.
    pub fn dequantize(&self, out: &mut [f32; QK]) {
        let d = self.d.to_f32();
        for (j, &byte) in self.qs.iter().enumerate() {
            out[j] = f32::from(i16::from(byte & 0x0F) - 8) * d;
            out[j + QK / 2] = f32::from(i16::from(byte >> 4) - 8) * d;
        }
    }

    /// Encodes 32 values: the scale maps the largest-magnitude value to -8.
    pub fn quantize(src: &[f32; QK]) -> Self {
        let max = signed_absmax(src);
        let d = max / -8.0;
        let id = reciprocal_or_zero(d);
        let mut qs = [0u8; QK / 2];
        for (j, q) in qs.iter_mut().enumerate() {
            let lo = trunc_clamped(src[j] * id + 8.5, 15);
            let hi = trunc_clamped(src[j + QK / 2] * id + 8.5, 15);
            *q = lo | (hi << 4);
        }
        Self {
            d: f16::from_f32(d),
            qs,
        }
    }
}

impl BlockQ4_1 {
    /// Decodes the 32 values.
    pub fn dequantize(&self, out: &mut [f32; QK]) {
        let d = self.d.to_f32();
        let m = self.m.to_f32();
        for (j, &byte) in self.qs.iter().enumerate() {
            out[j] = f32::from(byte & 0x0F) * d + m;
            out[j + QK / 2] = f32::from(byte >> 4) * d + m;
        }
    }

    /// Encodes 32 values over their `[min, max]` range.
    pub fn quantize(src: &[f32; QK]) -> Self {
        let (min, max) = min_max(src);
        let d = (max - min) / 15.0;
        let id = reciprocal_or_zero(d);
        let mut qs = [0u8; QK / 2];
        for (j, q) in qs.iter_mut().enumerate() {
            let lo = trunc_clamped((src[j] - min) * id + 0.5, 15);
            let hi = trunc_clamped((src[j + QK / 2] - min) * id + 0.5, 15);
            *q = lo | (hi << 4);
        }
        Self {
            d: f16::from_f32(d),
            m: f16::from_f32(min),
            qs,
        }
    }
}

/// Splits 5-bit quants into the nibble array and the packed fifth bits.
fn pack_5bit(q: &[u8; QK]) -> ([u8; QK / 2], [u8; 4]) {
    let mut qs = [0u8; QK / 2];
    let mut qh = 0u32;
    for j in 0..QK / 2 {
        let (lo, hi) = (q[j], q[j + QK / 2]);
        qs[j] = (lo & 0x0F) | ((hi & 0x0F) << 4);
        qh |= u32::from(lo >> 4) << j;
        qh |= u32::from(hi >> 4) << (j + QK / 2);
    }
    (qs, qh.to_le_bytes())
}

/// The 5-bit quants (0..=31) of a Q5 block in element order.
fn unpack_5bit(qs: &[u8; QK / 2], qh: [u8; 4]) -> [u8; QK] {
    let qh = u32::from_le_bytes(qh);
    let mut q = [0u8; QK];
    for j in 0..QK / 2 {
        let hi_lo = ((qh >> j) & 1) as u8;
        let hi_hi = ((qh >> (j + QK / 2)) & 1) as u8;
        q[j] = (qs[j] & 0x0F) | (hi_lo << 4);
        q[j + QK / 2] = (qs[j] >> 4) | (hi_hi << 4);
    }
    q
}

impl BlockQ5_0 {
    /// Decodes the 32 values.
    pub fn dequantize(&self, out: &mut [f32; QK]) {
        let d = self.d.to_f32();
        let q = unpack_5bit(&self.qs, self.qh);
        for (o, &q) in out.iter_mut().zip(&q) {
            *o = f32::from(i16::from(q) - 16) * d;
        }
    }

    /// Encodes 32 values: the scale maps the largest-magnitude value to -16.
    pub fn quantize(src: &[f32; QK]) -> Self {
        let max = signed_absmax(src);
        let d = max / -16.0;
        let id = reciprocal_or_zero(d);
        let q = src.map(|v| trunc_clamped(v * id + 16.5, 31));
        let (qs, qh) = pack_5bit(&q);
        Self {
            d: f16::from_f32(d),
            qh,
            qs,
        }
    }
}

impl BlockQ5_1 {
    /// Decodes the 32 values.
    pub fn dequantize(&self, out: &mut [f32; QK]) {
        let d = self.d.to_f32();
        let m = self.m.to_f32();
        let q = unpack_5bit(&self.qs, self.qh);
        for (o, &q) in out.iter_mut().zip(&q) {
            *o = f32::from(q) * d + m;
        }
    }

    /// Encodes 32 values over their `[min, max]` range.
    pub fn quantize(src: &[f32; QK]) -> Self {
        let (min, max) = min_max(src);
        let d = (max - min) / 31.0;
        let id = reciprocal_or_zero(d);
        let q = src.map(|v| trunc_clamped((v - min) * id + 0.5, 31));
        let (qs, qh) = pack_5bit(&q);
        Self {
            d: f16::from_f32(d),
            m: f16::from_f32(min),
            qh,
            qs,
        }
    }
}

/// Symmetric 8-bit quantization shared by Q8_0 and Q8_1: returns the f32
/// scale and the quants.
fn quantize_8bit(src: &[f32; QK]) -> (f32, [i8; QK]) {
    let amax = src.iter().fold(0.0f32, |a, v| a.max(v.abs()));
    let d = amax / 127.0;
    let id = reciprocal_or_zero(d);
    // `round` is C's roundf (half away from zero), as the reference uses.
    (d, src.map(|v| (v * id).round().clamp(-127.0, 127.0) as i8))
}

impl BlockQ8_0 {
    /// Decodes the 32 values.
    pub fn dequantize(&self, out: &mut [f32; QK]) {
        let d = self.d.to_f32();
        for (o, &q) in out.iter_mut().zip(&self.qs) {
            *o = f32::from(q) * d;
        }
    }

    /// Encodes 32 values: the scale maps the largest magnitude to 127.
    pub fn quantize(src: &[f32; QK]) -> Self {
        let (d, qs) = quantize_8bit(src);
        Self {
            d: f16::from_f32(d),
            qs,
        }
    }
}

impl BlockQ8_1 {
    /// Decodes the 32 values (`s` is redundant and not read).
    pub fn dequantize(&self, out: &mut [f32; QK]) {
        let d = self.d.to_f32();
        for (o, &q) in out.iter_mut().zip(&self.qs) {
            *o = f32::from(q) * d;
        }
    }

    /// Encodes 32 values as [`BlockQ8_0::quantize`] does and stores
    /// `d * sum(q)` (with the unrounded f32 scale) in `s`.
    pub fn quantize(src: &[f32; QK]) -> Self {
        let (d, qs) = quantize_8bit(src);
        let sum: i32 = qs.iter().map(|&q| i32::from(q)).sum();
        Self {
            d: f16::from_f32(d),
            s: f16::from_f32(sum as f32 * d),
            qs,
        }
    }
}
