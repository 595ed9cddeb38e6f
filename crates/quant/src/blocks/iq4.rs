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
