//! Activations quantized to 8 bits for the integer dot products.
//!
//! One format serves every weight type: blocks of 32 values with an f32
//! scale, the quants, and precomputed sums. The scale is per 32 values (not
//! per 256 as ggml's Q8_K) and kept in f32 (not f16 as ggml's Q8_0/Q8_1), so
//! the activations lose less than ggml's do; weight offsets and minimums are
//! applied through the sums instead of per element.

use crate::QuantError;
use crate::simd;

/// Values per activation block.
pub const ACT_BLOCK: usize = 32;

/// One or more activation rows quantized to 8 bits, reusable across calls
/// and across every matrix that takes the same input.
///
/// Row `r`, block `b` holds `qs[32b..32b+32]` in `-127..=127` with
/// `x ≈ d[b] * q`, `dsum[b] = d[b] * Σq`, and `sums16` the integer sums of
/// each 16 quants. Buffers grow on demand and are never shrunk, so a reused
/// value allocates nothing in the steady state.
#[derive(Clone, Debug, Default)]
pub struct QuantizedActivations {
    rows: usize,
    cols: usize,
    qs: Vec<i8>,
    d: Vec<f32>,
    dsum: Vec<f32>,
    sums16: Vec<i16>,
}

/// A borrowed view of one quantized activation row.
#[derive(Clone, Copy, Debug)]
pub struct ActRow<'a> {
    pub(crate) qs: &'a [i8],
    pub(crate) d: &'a [f32],
    pub(crate) dsum: &'a [f32],
    pub(crate) sums16: &'a [i16],
}

impl ActRow<'_> {
    /// Elements in the row.
    pub fn len(&self) -> usize {
        self.qs.len()
    }

    /// Whether the row has no elements.
    pub fn is_empty(&self) -> bool {
        self.qs.is_empty()
    }

    /// The dequantized value of element `i`.
    pub fn value(&self, i: usize) -> f32 {
        self.d[i / ACT_BLOCK] * f32::from(self.qs[i])
    }
}

impl QuantizedActivations {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Quantizes `x`, `x.len() / cols` rows of `cols` values each, replacing
    /// the previous contents. `cols` must be a multiple of 32.
    ///
    /// Non-finite inputs give unspecified (but memory-safe) quants.
    pub fn quantize(&mut self, x: &[f32], cols: usize) -> Result<(), QuantError> {
        if cols == 0 || !cols.is_multiple_of(ACT_BLOCK) {
            return Err(QuantError::LengthMismatch {
                what: "activation row (a multiple of 32)",
                expected: cols.next_multiple_of(ACT_BLOCK).max(ACT_BLOCK),
                got: cols,
            });
        }
        if !x.len().is_multiple_of(cols) {
            return Err(QuantError::LengthMismatch {
                what: "activations",
                expected: x.len().next_multiple_of(cols),
                got: x.len(),
            });
        }
        self.rows = x.len() / cols;
        self.cols = cols;
        let blocks = x.len() / ACT_BLOCK;
        self.qs.resize(x.len(), 0);
        self.d.resize(blocks, 0.0);
        self.dsum.resize(blocks, 0.0);
        self.sums16.resize(2 * blocks, 0);
        simd::quantize_activations(
            x,
            &mut self.qs,
            &mut self.d,
            &mut self.dsum,
            &mut self.sums16,
        );
        Ok(())
    }

    /// Rows held.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Values per row.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Row `r`, or `None` past the end.
    pub fn row(&self, r: usize) -> Option<ActRow<'_>> {
        if r >= self.rows {
            return None;
        }
        let (c, b) = (self.cols, self.cols / ACT_BLOCK);
        Some(ActRow {
            qs: &self.qs[r * c..(r + 1) * c],
            d: &self.d[r * b..(r + 1) * b],
            dsum: &self.dsum[r * b..(r + 1) * b],
            sums16: &self.sums16[2 * r * b..2 * (r + 1) * b],
        })
    }
}

/// Scalar reference of the activation quantizer: per block of 32, the
/// largest magnitude maps to 127 and values round half to even.
pub(crate) fn quantize_block_reference(
    x: &[f32; ACT_BLOCK],
    qs: &mut [i8; ACT_BLOCK],
) -> (f32, f32, [i16; 2]) {
    let amax = x.iter().fold(0.0f32, |a, v| a.max(v.abs()));
    let d = amax / 127.0;
    let id = if amax == 0.0 { 0.0 } else { 127.0 / amax };
    for (q, &v) in qs.iter_mut().zip(x) {
        *q = (v * id).round_ties_even().clamp(-127.0, 127.0) as i8;
    }
    let s0: i16 = qs[..16].iter().map(|&q| i16::from(q)).sum();
    let s1: i16 = qs[16..].iter().map(|&q| i16::from(q)).sum();
    (d, d * f32::from(s0 + s1), [s0, s1])
}

/// Scalar activation quantizer over whole rows, the reference for the SIMD one.
pub(crate) fn quantize_reference(
    x: &[f32],
    qs: &mut [i8],
    d: &mut [f32],
    dsum: &mut [f32],
    sums16: &mut [i16],
) {
    let (xb, _) = x.as_chunks::<ACT_BLOCK>();
    let (qb, _) = qs.as_chunks_mut::<ACT_BLOCK>();
    let (sb, _) = sums16.as_chunks_mut::<2>();
    for ((((x, q), d), ds), s) in xb.iter().zip(qb).zip(d).zip(dsum).zip(sb) {
        let (scale, scaled_sum, sums) = quantize_block_reference(x, q);
        *d = scale;
        *ds = scaled_sum;
        *s = sums;
    }
}
