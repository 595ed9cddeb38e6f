//! Activations quantized for the integer dot products.
//!
//! One format serves every weight type: blocks of 32 values with an f32
//! scale, the quants, and precomputed sums. The scale is per 32 values (not
//! per 256 as ggml's Q8_K) and kept in f32 (not f16 as ggml's Q8_0/Q8_1), so
//! the activations lose less than ggml's do; weight offsets and minimums are
//! applied through the sums instead of per element.
//!
//! With [`Planes::Two`] a second 8-bit plane holds the rounding residual of
//! the first in steps of 1/256, so each value is the 16-bit integer
//! `256·q1 + q2` times the block scale: the dot products stay in 8-bit SIMD
//! arithmetic (one more multiply per block) and the activations are within
//! 1/65000 of their largest value instead of 1/254.

use crate::QuantError;
use crate::simd;

/// Values per activation block.
pub const ACT_BLOCK: usize = 32;

/// How many 8-bit planes represent each activation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Planes {
    /// 8-bit activations, as llama.cpp multiplies with.
    #[default]
    One,
    /// About 16-bit activations: the 8-bit value plus an 8-bit residual.
    Two,
}

/// One or more activation rows quantized to 8 bits (or two 8-bit planes),
/// reusable across calls and across every matrix that takes the same input.
///
/// Row `r`, block `b` holds `qs[32b..32b+32]` in `-127..=127` (and, with two
/// planes, `qs2` likewise) with `x ≈ d[b] * Q` where `Q = q` (one plane) or
/// `Q = 256·q + q2` (two planes), `dsum[b] = d[b] * ΣQ`, and `sums16`
/// (`sums16b`) the integer sums of each 16 quants of the first (second)
/// plane. Buffers grow on demand and are never shrunk, so a reused value
/// allocates nothing in the steady state.
#[derive(Clone, Debug, Default)]
pub struct QuantizedActivations {
    rows: usize,
    cols: usize,
    planes: Planes,
    qs: Vec<i8>,
    qs2: Vec<i8>,
    d: Vec<f32>,
    dsum: Vec<f32>,
    sums16: Vec<i16>,
    sums16b: Vec<i16>,
}

/// A borrowed view of one quantized activation row.
#[derive(Clone, Copy, Debug)]
pub struct ActRow<'a> {
    pub(crate) qs: &'a [i8],
    /// The residual plane; empty with one plane.
    pub(crate) qs2: &'a [i8],
    pub(crate) d: &'a [f32],
    pub(crate) dsum: &'a [f32],
    pub(crate) sums16: &'a [i16],
    /// Sums of the residual plane; empty with one plane.
    pub(crate) sums16b: &'a [i16],
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

    /// How many planes the row has.
    pub fn planes(&self) -> Planes {
        if self.qs2.is_empty() {
            Planes::One
        } else {
            Planes::Two
        }
    }

    /// The integer value `Q` of element `i` (`x ≈ d * Q`).
    pub(crate) fn q(&self, i: usize) -> i32 {
        match self.qs2.get(i) {
            Some(&q2) => 256 * i32::from(self.qs[i]) + i32::from(q2),
            None => i32::from(self.qs[i]),
        }
    }

    /// The integer sum of `Q` over the 16 values of group `k`.
    pub(crate) fn sum16(&self, k: usize) -> i32 {
        match self.sums16b.get(k) {
            Some(&s2) => 256 * i32::from(self.sums16[k]) + i32::from(s2),
            None => i32::from(self.sums16[k]),
        }
    }

    /// The dequantized value of element `i`.
    pub fn value(&self, i: usize) -> f32 {
        self.d[i / ACT_BLOCK] * self.q(i) as f32
    }
}

impl QuantizedActivations {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Quantizes `x`, `x.len() / cols` rows of `cols` values each, to one
    /// 8-bit plane, replacing the previous contents. `cols` must be a
    /// multiple of 32.
    ///
    /// Non-finite inputs give unspecified (but memory-safe) quants.
    pub fn quantize(&mut self, x: &[f32], cols: usize) -> Result<(), QuantError> {
        self.quantize_planes(x, cols, Planes::One)
    }

    /// As [`QuantizedActivations::quantize`], with `planes` 8-bit planes.
    pub fn quantize_planes(
        &mut self,
        x: &[f32],
        cols: usize,
        planes: Planes,
    ) -> Result<(), QuantError> {
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
        self.planes = planes;
        let second = match planes {
            Planes::One => 0,
            Planes::Two => x.len(),
        };
        self.qs2.resize(second, 0);
        self.sums16b.resize(second / 16, 0);
        let out = ActOut {
            qs: &mut self.qs,
            qs2: &mut self.qs2,
            d: &mut self.d,
            dsum: &mut self.dsum,
            sums16: &mut self.sums16,
            sums16b: &mut self.sums16b,
        };
        simd::quantize_activations(x, out);
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

    /// Planes per value.
    pub fn planes(&self) -> Planes {
        self.planes
    }

    /// Row `r`, or `None` past the end.
    pub fn row(&self, r: usize) -> Option<ActRow<'_>> {
        if r >= self.rows {
            return None;
        }
        let (c, b) = (self.cols, self.cols / ACT_BLOCK);
        let (qs2, sums16b) = match self.planes {
            Planes::One => (&[][..], &[][..]),
            Planes::Two => (
                &self.qs2[r * c..(r + 1) * c],
                &self.sums16b[2 * r * b..2 * (r + 1) * b],
            ),
        };
        Some(ActRow {
            qs: &self.qs[r * c..(r + 1) * c],
            qs2,
            d: &self.d[r * b..(r + 1) * b],
            dsum: &self.dsum[r * b..(r + 1) * b],
            sums16: &self.sums16[2 * r * b..2 * (r + 1) * b],
            sums16b,
        })
    }
}

/// Output buffers of the activation quantizer for whole rows; `qs2` and
/// `sums16b` are empty for one plane.
pub(crate) struct ActOut<'a> {
    pub(crate) qs: &'a mut [i8],
    pub(crate) qs2: &'a mut [i8],
    pub(crate) d: &'a mut [f32],
    pub(crate) dsum: &'a mut [f32],
    pub(crate) sums16: &'a mut [i16],
    pub(crate) sums16b: &'a mut [i16],
}

/// The residual plane's steps per step of the first plane.
pub(crate) const RESIDUAL_STEPS: f32 = 256.0;

/// Scalar reference of the activation quantizer for one block: the largest
/// magnitude maps to 127, values round half to even; with `q2` the residual
/// `x/d - q` is rounded to steps of 1/256 (clamped to ±127). Returns the
/// block scale (of `Q`), `d * ΣQ`, and the 16-sums of each plane.
pub(crate) fn quantize_block_reference(
    x: &[f32; ACT_BLOCK],
    qs: &mut [i8; ACT_BLOCK],
    q2: Option<&mut [i8; ACT_BLOCK]>,
) -> (f32, f32, [i16; 2], [i16; 2]) {
    let amax = x.iter().fold(0.0f32, |a, v| a.max(v.abs()));
    let d = amax / 127.0;
    let id = if amax == 0.0 { 0.0 } else { 127.0 / amax };
    for (q, &v) in qs.iter_mut().zip(x) {
        *q = (v * id).round_ties_even().clamp(-127.0, 127.0) as i8;
    }
    let sums = |q: &[i8; ACT_BLOCK]| -> [i16; 2] {
        [
            q[..16].iter().map(|&q| i16::from(q)).sum(),
            q[16..].iter().map(|&q| i16::from(q)).sum(),
        ]
    };
    let s1 = sums(qs);
    match q2 {
        None => (d, d * f32::from(s1[0] + s1[1]), s1, [0; 2]),
        Some(q2) => {
            for (r, &v) in q2.iter_mut().zip(x) {
                let scaled = v * id;
                let residual = scaled - scaled.round_ties_even();
                *r = (residual * RESIDUAL_STEPS)
                    .round_ties_even()
                    .clamp(-127.0, 127.0) as i8;
            }
            let s2 = sums(q2);
            let d = d / RESIDUAL_STEPS;
            let total = 256 * i32::from(s1[0] + s1[1]) + i32::from(s2[0] + s2[1]);
            (d, d * total as f32, s1, s2)
        }
    }
}

/// Scalar activation quantizer over whole rows, the reference for the SIMD one.
pub(crate) fn quantize_reference(x: &[f32], out: ActOut<'_>) {
    let two = !out.qs2.is_empty();
    let (xb, _) = x.as_chunks::<ACT_BLOCK>();
    let (qb, _) = out.qs.as_chunks_mut::<ACT_BLOCK>();
    let (qb2, _) = out.qs2.as_chunks_mut::<ACT_BLOCK>();
    let (sb, _) = out.sums16.as_chunks_mut::<2>();
    let (sb2, _) = out.sums16b.as_chunks_mut::<2>();
    let mut qb2 = qb2.iter_mut();
    let mut sb2 = sb2.iter_mut();
    for ((((x, q), d), ds), s) in xb.iter().zip(qb).zip(out.d).zip(out.dsum).zip(sb) {
        let q2 = if two { qb2.next() } else { None };
        let (scale, scaled_sum, sums, sums2) = quantize_block_reference(x, q, q2);
        *d = scale;
        *ds = scaled_sum;
        *s = sums;
        if let Some(s2) = sb2.next() {
            *s2 = sums2;
        }
    }
}
