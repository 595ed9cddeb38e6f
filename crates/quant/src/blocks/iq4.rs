//! The non-linear 4-bit formats IQ4_NL (blocks of 32) and IQ4_XS (super-blocks
//! of 256): each 4-bit index selects one of 16 fixed levels, spaced more
//! densely near zero than a uniform grid, which is then scaled.

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::kquants::QK_K;

/// Elements per IQ4_NL block.
pub const QK4_NL: usize = 32;

/// The 16 levels an IQ4 index selects.
pub const IQ4_LEVELS: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// IQ4_NL: `x = d * IQ4_LEVELS[q]`, 4.5 bits per weight.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct BlockIq4Nl {
    /// Scale.
    pub d: f16,
    /// Element `j` in the low nibble of byte `j`, element `j + 16` in the high nibble.
    pub qs: [u8; QK4_NL / 2],
}
const _: () = assert!(size_of::<BlockIq4Nl>() == 18);

/// IQ4_XS: 8 sub-blocks of 32, `x = d * (ls - 32) * IQ4_LEVELS[q]` with a 6-bit
/// `ls` per sub-block, 4.25 bits per weight.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockIq4Xs {
    /// Super-scale.
    pub d: f16,
    /// High two bits of the sub-block scales: bits `2i..2i+2` for sub-block `i`.
    pub scales_h: u16,
    /// Low four bits of the sub-block scales: sub-block `i` in byte `i / 2`, low nibble first.
    pub scales_l: [u8; QK_K / 64],
    /// Per sub-block `i`, 16 bytes at `16i` laid out as in [`BlockIq4Nl::qs`].
    pub qs: [u8; QK_K / 2],
}
const _: () = assert!(size_of::<BlockIq4Xs>() == 136);

impl Default for BlockIq4Xs {
    fn default() -> Self {
        Self::zeroed()
    }
}

fn level(q: u8) -> f32 {
    f32::from(IQ4_LEVELS[usize::from(q & 0x0F)])
}

/// Decodes 32 elements stored as 16 nibble pairs with scale `d`.
fn decode_nibbles(d: f32, qs: &[u8], out: &mut [f32]) {
    for (j, &byte) in qs.iter().enumerate() {
        out[j] = d * level(byte & 0x0F);
        out[j + 16] = d * level(byte >> 4);
    }
}

impl BlockIq4Nl {
    /// Decodes the 32 values.
    pub fn dequantize(&self, out: &mut [f32; QK4_NL]) {
        decode_nibbles(self.d.to_f32(), &self.qs, out);
    }
}

impl BlockIq4Xs {
    /// Six-bit scale of sub-block `i` (0..8), still offset by 32.
    pub fn sub_scale(&self, i: usize) -> u8 {
        let low = (self.scales_l[i / 2] >> (4 * (i % 2))) & 0x0F;
        let high = ((self.scales_h >> (2 * i)) & 3) as u8;
        low | (high << 4)
    }

    /// Decodes the 256 values.
    pub fn dequantize(&self, out: &mut [f32; QK_K]) {
        let d = self.d.to_f32();
        for (i, out) in out.chunks_exact_mut(32).enumerate() {
            let dl = d * f32::from(i16::from(self.sub_scale(i)) - 32);
            decode_nibbles(dl, &self.qs[16 * i..16 * i + 16], out);
        }
    }
}

/// Midpoints between consecutive levels: a value above `MIDPOINTS[i]` is
/// nearer to level `i + 1` than to level `i`.
const MIDPOINTS: [f32; 15] = {
    let mut m = [0.0f32; 15];
    let mut i = 0;
    while i < 15 {
        m[i] = (IQ4_LEVELS[i] as i16 + IQ4_LEVELS[i + 1] as i16) as f32 * 0.5;
        i += 1;
    }
    m
};

/// Index of the level nearest to `v` (the lower one on ties).
fn nearest_level(v: f32) -> u8 {
    MIDPOINTS.partition_point(|&m| v > m) as u8
}

/// Squared error of `x` against `d * IQ4_LEVELS[idx]`, with the indices
/// chosen nearest to `x / d` (written to `idx`).
fn fit_levels(x: &[f32], d: f32, idx: &mut [u8]) -> f32 {
    let id = if d == 0.0 { 0.0 } else { 1.0 / d };
    let mut err = 0.0f32;
    for (&v, i) in x.iter().zip(idx.iter_mut()) {
        *i = nearest_level(v * id);
        let diff = d * level(*i) - v;
        err += diff * diff;
    }
    err
}

/// The least-squares scale of one group of 32: tries inverse scales that map
/// the largest magnitude near either end of the level table, assigns the
/// nearest levels, solves for the scale those levels fit best, and keeps the
/// candidate with the smallest squared error.
fn best_group_scale(x: &[f32]) -> f32 {
    let mut amax = 0.0f32;
    let mut max = 0.0f32;
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < 1e-15 {
        return 0.0;
    }
    let sum_x2: f32 = x.iter().map(|v| v * v).sum();
    let mut best_scale = max / f32::from(IQ4_LEVELS[0]);
    let mut best_err = f32::INFINITY;
    let mut idx = [0u8; QK4_NL];
    for end in [IQ4_LEVELS[0], IQ4_LEVELS[15]] {
        for step in -7i8..=7 {
            let id = (f32::from(end) + f32::from(step)) / max;
            let (mut sxl, mut sll) = (0.0f32, 0.0f32);
            for (&v, i) in x.iter().zip(idx.iter_mut()) {
                *i = nearest_level(v * id);
                let l = level(*i);
                sxl += v * l;
                sll += l * l;
            }
            if sll > 0.0 {
                let err = sum_x2 - sxl * sxl / sll;
                if err < best_err {
                    best_err = err;
                    best_scale = sxl / sll;
                }
            }
        }
    }
    best_scale
}

fn pack_nibbles(idx: &[u8; 32]) -> [u8; 16] {
    let mut qs = [0u8; 16];
    for (j, q) in qs.iter_mut().enumerate() {
        *q = idx[j] | (idx[j + 16] << 4);
    }
    qs
}

impl BlockIq4Nl {
    /// Encodes 32 values: least-squares scale search over the level table.
    pub fn quantize(src: &[f32; QK4_NL]) -> Self {
        let d = f16::from_f32(best_group_scale(src));
        let mut idx = [0u8; QK4_NL];
        fit_levels(src, d.to_f32(), &mut idx);
        Self {
            d,
            qs: pack_nibbles(&idx),
        }
    }
}

impl BlockIq4Xs {
    /// Encodes 256 values: a least-squares scale per group of 32, stored as a
    /// 6-bit multiple of the super-scale; each group then also tries the
    /// neighbouring multiples and keeps the one with the smallest error.
    pub fn quantize(src: &[f32; QK_K]) -> Self {
        let mut scales = [0.0f32; 8];
        let (mut max_scale, mut amax) = (0.0f32, 0.0f32);
        for (s, x) in scales.iter_mut().zip(src.chunks_exact(32)) {
            *s = best_group_scale(x);
            if s.abs() > amax {
                amax = s.abs();
                max_scale = *s;
            }
        }
        let mut block = Self::zeroed();
        if amax == 0.0 {
            return block;
        }
        block.d = f16::from_f32(-max_scale / 32.0);
        let d = block.d.to_f32();
        let id = if d == 0.0 { 0.0 } else { 1.0 / d };
        let mut idx = [0u8; 32];
        let mut trial = [0u8; 32];
        for (i, x) in src.chunks_exact(32).enumerate() {
            let start = (scales[i] * id).round_ties_even().clamp(-32.0, 31.0) as i32;
            let mut best = start;
            let mut best_err = fit_levels(x, d * start as f32, &mut idx);
            for ls in [start - 1, start + 1] {
                if (-32..=31).contains(&ls) {
                    let err = fit_levels(x, d * ls as f32, &mut trial);
                    if err < best_err {
                        best_err = err;
                        best = ls;
                        idx = trial;
                    }
                }
            }
            let ls = (best + 32) as u8;
            block.scales_l[i / 2] |= (ls & 0x0F) << (4 * (i % 2));
            block.scales_h |= u16::from(ls >> 4) << (2 * i);
            block.qs[16 * i..16 * i + 16].copy_from_slice(&pack_nibbles(&idx));
        }
        block
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_level_agrees_with_a_linear_scan() {
        for i in -1400..=1300 {
            let v = i as f32 * 0.1;
            let scan = (0..16)
                .min_by(|&a, &b| {
                    let da = (v - f32::from(IQ4_LEVELS[a])).abs();
                    let db = (v - f32::from(IQ4_LEVELS[b])).abs();
                    da.total_cmp(&db)
                })
                .map(|i| i as u8);
            assert_eq!(Some(nearest_level(v)), scan, "{v}");
        }
    }

    #[test]
    fn values_on_the_level_grid_round_trip_exactly() {
        let mut src = [0.0f32; QK4_NL];
        for (j, v) in src.iter_mut().enumerate() {
            *v = 0.5 * f32::from(IQ4_LEVELS[(j * 7) % 16]);
        }
        src[0] = -63.5;
        let mut out = [0.0f32; QK4_NL];
        BlockIq4Nl::quantize(&src).dequantize(&mut out);
        assert_eq!(out, src);
    }
}
