//! Weights repacked at load so that one SIMD pass multiplies eight rows.
//!
//! In the GGUF layout each row's blocks follow one another, so a kernel
//! that takes one row at a time converts one scale and reduces one vector
//! per row and block. [`Interleaved`] stores groups of eight rows block by
//! block instead: the eight scales of block `b` side by side, then the
//! eight rows' quants four values at a time, so that one 32-byte load holds
//! four quants of each row and the eight row sums stay in the eight lanes of
//! one vector from the first block to the last.
//!
//! A group-block (the eight rows' block `b`) is laid out as:
//!
//! - `d`: the eight f16 scales;
//! - `m`: the eight f16 minimums (Q4_1, Q5_1 only);
//! - `qh`: eight little-endian u32 of fifth bits (Q5_0, Q5_1 only): bit
//!   `4r + e` of word `c` is the fifth bit of row `r`'s element
//!   [`chunk_element`]`(c, e)`;
//! - the quants in 32-byte chunks, byte `4r + e` of chunk `c` for row `r`:
//!   for the nibble formats four chunks of packed bytes (chunk `c` holds
//!   the row's bytes `4c..4c + 4`: low nibbles elements `4c + e`, high
//!   nibbles elements `16 + 4c + e`), for Q8_0 eight chunks of quants
//!   (chunk `c` holds elements `4c..4c + 4`).
//!
//! The group-block is exactly eight GGUF blocks long, so the copy costs as
//! much memory as the rows it covers; rows past the last full group stay
//! in the GGUF layout only.
//!
//! The arithmetic, defined by [`group_reference`], is the integer dot of
//! each row's quants with the activation block, less the format's offset
//! times the activation block sum, times the row scale times the
//! activation scale, accumulated with one fused multiply-add per block (and
//! one more for the minimum): so a SIMD kernel that keeps a row in one lane
//! gives the reference's result bit for bit.

use ferrolm_gguf::GgmlType;
#[cfg(test)]
use half::f16;
use rayon::prelude::*;

use crate::QMatrix;
#[cfg(test)]
use crate::blocks::IQ4_LEVELS;
use crate::blocks::{K_SCALE_SIZE, scale_min_k4};
#[cfg(test)]
use crate::dot::activations::ActRow;
use crate::simd;

/// Rows per interleaved group.
pub const GROUP_ROWS: usize = 8;

/// Byte offset of the minimums in a group-block (after the scales).
pub(crate) const M_AT: usize = 2 * GROUP_ROWS;

/// The formats with an interleaved layout, as the kernels name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Iq4Nl,
    /// Super-blocks of 256 with eight 32-value sub-blocks: its own group layout (see
    /// [`q4k`]).
    Q4K,
    /// Super-blocks of 256 with sixteen 16-value sub-blocks: its own group layout (see
    /// [`q6k`]).
    Q6K,
}

impl Format {
    pub(crate) fn of(ty: GgmlType) -> Option<Self> {
        Some(match ty {
            GgmlType::Q4_0 => Self::Q4_0,
            GgmlType::Q4_1 => Self::Q4_1,
            GgmlType::Q5_0 => Self::Q5_0,
            GgmlType::Q5_1 => Self::Q5_1,
            GgmlType::Q8_0 => Self::Q8_0,
            GgmlType::Iq4Nl => Self::Iq4Nl,
            GgmlType::Q4K => Self::Q4K,
            GgmlType::Q6K => Self::Q6K,
            _ => return None,
        })
    }

    /// Bytes of one GGUF block.
    pub(crate) const fn block_bytes(self) -> usize {
        match self {
            Self::Q4_0 | Self::Iq4Nl => 18,
            Self::Q4_1 => 20,
            Self::Q5_0 => 22,
            Self::Q5_1 => 24,
            Self::Q8_0 => 34,
            Self::Q4K => 144,
            Self::Q6K => 210,
        }
    }

    /// Values per GGUF block.
    pub(crate) const fn block_elems(self) -> usize {
        match self {
            Self::Q4K | Self::Q6K => 256,
            _ => 32,
        }
    }

    /// Bytes of one group-block.
    pub(crate) const fn group_bytes(self) -> usize {
        match self {
            Self::Q4K => q4k::GROUP_BYTES,
            Self::Q6K => q6k::GROUP_BYTES,
            _ => GROUP_ROWS * self.block_bytes(),
        }
    }

    pub(crate) const fn has_min(self) -> bool {
        matches!(self, Self::Q4_1 | Self::Q5_1)
    }

    pub(crate) const fn has_fifth_bit(self) -> bool {
        matches!(self, Self::Q5_0 | Self::Q5_1)
    }

    /// The offset subtracted from the stored quants (`w = q - offset`).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) const fn offset(self) -> i32 {
        match self {
            Self::Q4_0 => 8,
            Self::Q5_0 => 16,
            _ => 0,
        }
    }

    /// Byte offset of the fifth-bit words in a group-block.
    pub(crate) const fn qh_at(self) -> usize {
        if self.has_min() {
            4 * GROUP_ROWS
        } else {
            2 * GROUP_ROWS
        }
    }

    /// Byte offset of the quant chunks in a group-block.
    pub(crate) const fn quants_at(self) -> usize {
        self.qh_at()
            + if self.has_fifth_bit() {
                4 * GROUP_ROWS
            } else {
                0
            }
    }

    /// Byte offset of the packed quants (`qs`) in a GGUF block.
    const fn qs_at_in_block(self) -> usize {
        match self {
            Self::Q4_0 | Self::Iq4Nl | Self::Q8_0 => 2,
            Self::Q4_1 => 4,
            Self::Q5_0 => 6,
            Self::Q5_1 => 8,
            Self::Q4K => 16,
            Self::Q6K => 0,
        }
    }
}

/// The Q4_K group-block of eight rows' super-blocks: the eight `d`, the eight `dmin`
/// (f16), the 6-bit sub-block scales and minimums unpacked to bytes (`SC + 8s + r`,
/// `M + 8s + r` for sub-block `s`, row `r`), then the quants: for each 64-value part `j`
/// eight 32-byte chunks, byte `4r + e` of chunk `c` holding the row's byte `32j + 4c + e`
/// (low nibble: element `64j + 4c + e`, of sub-block `2j`; high nibble: element
/// `64j + 32 + 4c + e`, of sub-block `2j + 1`). 32 bytes more than the eight
/// super-blocks, for the unpacked scales.
pub(crate) mod q4k {
    /// Byte offset of the `dmin` values.
    pub(crate) const DMIN: usize = 16;
    /// Byte offset of the sub-block scales.
    pub(crate) const SC: usize = 32;
    /// Byte offset of the sub-block minimums.
    pub(crate) const M: usize = 96;
    /// Byte offset of the quant chunks.
    pub(crate) const QS: usize = 160;
    /// Bytes of a group-block.
    pub(crate) const GROUP_BYTES: usize = QS + 1024;
}

/// The Q6_K group-block of eight rows' super-blocks: the eight `d` (f16), the signed
/// 16-value sub-block scales (`SC + 8i + r` for sub-block `i`, row `r`), then 32-byte
/// chunks whose byte `4r + e` is row `r`'s byte. Low-bit chunk `8(2n + p) + c` (at `QL`)
/// holds `ql[64n + 32p + 4c + e]`, high-bit chunk `8n + c` (at `QH`) holds
/// `qh[32n + 4c + e]`, for the 128-value half `n` and the part `p` of its `ql`. Exactly
/// eight super-blocks long.
pub(crate) mod q6k {
    /// Byte offset of the sub-block scales.
    pub(crate) const SC: usize = 16;
    /// Byte offset of the low-bit chunks.
    pub(crate) const QL: usize = 144;
    /// Byte offset of the high-bit chunks.
    pub(crate) const QH: usize = QL + 1024;
    /// Bytes of a group-block.
    pub(crate) const GROUP_BYTES: usize = QH + 512;
}

/// The element of a row whose fifth bit is bit `4r + e` of `qh` word `c`
/// (and whose nibble is byte `4r + e` of chunk `c % 4`, high half from `c = 4`).
pub(crate) const fn chunk_element(c: usize, e: usize) -> usize {
    4 * (c % 4) + e + 16 * (c / 4)
}

/// A matrix's full groups of eight rows in the interleaved layout (see the
/// module documentation), beside the GGUF bytes it was made from.
#[derive(Clone, Debug)]
pub struct Interleaved {
    ty: GgmlType,
    format: Format,
    rows: usize,
    cols: usize,
    data: Vec<u8>,
}

impl Interleaved {
    /// The interleaved copy of `m`'s full groups of eight rows, or `None`
    /// when its type has no interleaved kernel on this CPU or it has fewer
    /// than eight rows (then the GGUF layout is as fast).
    pub fn new(m: &QMatrix<'_>) -> Option<Self> {
        let format = Format::of(m.ty())?;
        simd::interleaved_kernel(format, simd::isa())?;
        Self::with_format(m, format)
    }

    /// The copy whatever the CPU (the scalar reference reads it too).
    pub(crate) fn with_format(m: &QMatrix<'_>, format: Format) -> Option<Self> {
        let groups = m.rows() / GROUP_ROWS;
        if groups == 0 {
            return None;
        }
        let nb = m.cols() / format.block_elems();
        let row_bytes = nb * format.block_bytes();
        let group_len = nb * format.group_bytes();
        let mut data = vec![0u8; groups * group_len];
        data.par_chunks_mut(group_len)
            .enumerate()
            .for_each(|(g, out)| {
                let src = &m.data()[g * GROUP_ROWS * row_bytes..][..GROUP_ROWS * row_bytes];
                for (b, gb) in out.chunks_exact_mut(format.group_bytes()).enumerate() {
                    let blocks: [&[u8]; GROUP_ROWS] = std::array::from_fn(|r| {
                        &src[r * row_bytes + b * format.block_bytes()..][..format.block_bytes()]
                    });
                    pack_group_block(format, blocks, gb);
                }
            });
        Some(Self {
            ty: m.ty(),
            format,
            rows: groups * GROUP_ROWS,
            cols: m.cols(),
            data,
        })
    }

    /// The element type of the rows.
    pub fn ty(&self) -> GgmlType {
        self.ty
    }

    /// Rows held: the matrix's rows rounded down to a multiple of eight.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Values per row.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes of the copy: the extra memory it costs.
    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    pub(crate) fn format(&self) -> Format {
        self.format
    }

    /// The bytes of groups `first..first + count`.
    pub(crate) fn groups(&self, first: usize, count: usize) -> &[u8] {
        let len = self.group_len();
        &self.data[first * len..(first + count) * len]
    }

    /// Bytes of one group of eight rows.
    pub(crate) fn group_len(&self) -> usize {
        self.cols / self.format.block_elems() * self.format.group_bytes()
    }

    /// Row `r`'s GGUF bytes, rebuilt from the copy.
    #[cfg(test)]
    pub(crate) fn unpack_row(&self, r: usize) -> Vec<u8> {
        let f = self.format;
        let group = self.groups(r / GROUP_ROWS, 1);
        let mut row = Vec::new();
        for gb in group.chunks_exact(f.group_bytes()) {
            let mut block = vec![0u8; f.block_bytes()];
            unpack_block(f, gb, r % GROUP_ROWS, &mut block);
            row.extend_from_slice(&block);
        }
        row
    }
}

/// Writes the group-block of eight GGUF blocks (one per row).
fn pack_group_block(f: Format, blocks: [&[u8]; GROUP_ROWS], gb: &mut [u8]) {
    if f == Format::Q6K {
        // GGUF Q6_K: ql[128], qh[64], scales[16], d.
        for (r, blk) in blocks.iter().enumerate() {
            gb[2 * r..2 * r + 2].copy_from_slice(&blk[208..210]);
            for i in 0..16 {
                gb[q6k::SC + 8 * i + r] = blk[192 + i];
            }
            for k in 0..32 {
                gb[q6k::QL + 32 * k + 4 * r..][..4].copy_from_slice(&blk[4 * k..][..4]);
            }
            for k in 0..16 {
                gb[q6k::QH + 32 * k + 4 * r..][..4].copy_from_slice(&blk[128 + 4 * k..][..4]);
            }
        }
        return;
    }
    if f == Format::Q4K {
        for (r, blk) in blocks.iter().enumerate() {
            gb[2 * r..2 * r + 2].copy_from_slice(&blk[..2]);
            gb[q4k::DMIN + 2 * r..][..2].copy_from_slice(&blk[2..4]);
            let scales: &[u8; K_SCALE_SIZE] = blk[4..16].try_into().expect("12 scale bytes");
            for s in 0..8 {
                let (sc, m) = scale_min_k4(s, scales);
                gb[q4k::SC + 8 * s + r] = sc;
                gb[q4k::M + 8 * s + r] = m;
            }
            for j in 0..4 {
                for c in 0..8 {
                    gb[q4k::QS + 256 * j + 32 * c + 4 * r..][..4]
                        .copy_from_slice(&blk[16 + 32 * j + 4 * c..][..4]);
                }
            }
        }
        return;
    }
    let qs_at = f.qs_at_in_block();
    for (r, blk) in blocks.iter().enumerate() {
        gb[2 * r..2 * r + 2].copy_from_slice(&blk[..2]);
        if f.has_min() {
            gb[M_AT + 2 * r..][..2].copy_from_slice(&blk[2..4]);
        }
        if f.has_fifth_bit() {
            let qh = u32::from_le_bytes([
                blk[qs_at - 4],
                blk[qs_at - 3],
                blk[qs_at - 2],
                blk[qs_at - 1],
            ]);
            for c in 0..8 {
                let at = f.qh_at() + 4 * c;
                let mut word = u32::from_le_bytes([gb[at], gb[at + 1], gb[at + 2], gb[at + 3]]);
                for e in 0..4 {
                    word |= ((qh >> chunk_element(c, e)) & 1) << (4 * r + e);
                }
                gb[at..at + 4].copy_from_slice(&word.to_le_bytes());
            }
        }
        let chunks = if f == Format::Q8_0 { 8 } else { 4 };
        for c in 0..chunks {
            gb[f.quants_at() + 32 * c + 4 * r..][..4].copy_from_slice(&blk[qs_at + 4 * c..][..4]);
        }
    }
}

/// Rebuilds row `r`'s GGUF block from a group-block.
#[cfg(test)]
fn unpack_block(f: Format, gb: &[u8], r: usize, block: &mut [u8]) {
    if f == Format::Q6K {
        block[208..210].copy_from_slice(&gb[2 * r..2 * r + 2]);
        for i in 0..16 {
            block[192 + i] = gb[q6k::SC + 8 * i + r];
        }
        for k in 0..32 {
            block[4 * k..][..4].copy_from_slice(&gb[q6k::QL + 32 * k + 4 * r..][..4]);
        }
        for k in 0..16 {
            block[128 + 4 * k..][..4].copy_from_slice(&gb[q6k::QH + 32 * k + 4 * r..][..4]);
        }
        return;
    }
    if f == Format::Q4K {
        block[..2].copy_from_slice(&gb[2 * r..2 * r + 2]);
        block[2..4].copy_from_slice(&gb[q4k::DMIN + 2 * r..][..2]);
        let sc: [u8; 8] = std::array::from_fn(|s| gb[q4k::SC + 8 * s + r]);
        let m: [u8; 8] = std::array::from_fn(|s| gb[q4k::M + 8 * s + r]);
        block[4..16].copy_from_slice(&crate::blocks::pack_scale_min_k4(&sc, &m));
        for j in 0..4 {
            for c in 0..8 {
                block[16 + 32 * j + 4 * c..][..4]
                    .copy_from_slice(&gb[q4k::QS + 256 * j + 32 * c + 4 * r..][..4]);
            }
        }
        return;
    }
    let qs_at = f.qs_at_in_block();
    block[..2].copy_from_slice(&gb[2 * r..2 * r + 2]);
    if f.has_min() {
        block[2..4].copy_from_slice(&gb[M_AT + 2 * r..][..2]);
    }
    if f.has_fifth_bit() {
        let mut qh = 0u32;
        for c in 0..8 {
            let at = f.qh_at() + 4 * c;
            let word = u32::from_le_bytes([gb[at], gb[at + 1], gb[at + 2], gb[at + 3]]);
            for e in 0..4 {
                qh |= ((word >> (4 * r + e)) & 1) << chunk_element(c, e);
            }
        }
        block[qs_at - 4..qs_at].copy_from_slice(&qh.to_le_bytes());
    }
    let chunks = if f == Format::Q8_0 { 8 } else { 4 };
    for c in 0..chunks {
        block[qs_at + 4 * c..][..4].copy_from_slice(&gb[f.quants_at() + 32 * c + 4 * r..][..4]);
    }
}

#[cfg(test)]
/// The stored quant of row `r`, element `i` of a group-block, as the
/// integer the kernels multiply (before the offset).
fn quant(f: Format, gb: &[u8], r: usize, i: usize) -> i32 {
    let q = f.quants_at();
    if f == Format::Q8_0 {
        return i32::from(gb[q + 32 * (i / 4) + 4 * r + i % 4] as i8);
    }
    let (half, k) = (i / 16, i % 16);
    let byte = gb[q + 32 * (k / 4) + 4 * r + k % 4];
    let nibble = if half == 0 { byte & 0x0F } else { byte >> 4 };
    if f == Format::Iq4Nl {
        return i32::from(IQ4_LEVELS[usize::from(nibble)]);
    }
    let mut v = i32::from(nibble);
    if f.has_fifth_bit() {
        let c = k / 4 + 4 * half;
        let at = f.qh_at() + 4 * c;
        let word = u32::from_le_bytes([gb[at], gb[at + 1], gb[at + 2], gb[at + 3]]);
        v |= (((word >> (4 * r + k % 4)) & 1) << 4) as i32;
    }
    v
}

#[cfg(test)]
fn f16_at(gb: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([gb[at], gb[at + 1]]).to_f32()
}

#[cfg(test)]
/// The scalar definition of the interleaved kernels: one group of eight
/// rows (`group`, all its group-blocks) against one activation row.
pub(crate) fn group_reference(f: Format, group: &[u8], act: ActRow<'_>, out: &mut [f32]) {
    if f == Format::Q4K {
        return q4k_reference(group, act, out);
    }
    if f == Format::Q6K {
        return q6k_reference(group, act, out);
    }
    let mut acc = [0.0f32; GROUP_ROWS];
    for (b, gb) in group.chunks_exact(f.group_bytes()).enumerate() {
        let sum = act.sum16(2 * b) + act.sum16(2 * b + 1);
        for (r, acc) in acc.iter_mut().enumerate() {
            let dot: i32 = (0..32)
                .map(|i| quant(f, gb, r, i) * act.q(32 * b + i))
                .sum();
            let t = dot - f.offset() * sum;
            *acc = (t as f32).mul_add(f16_at(gb, 2 * r) * act.d[b], *acc);
            if f.has_min() {
                *acc = f16_at(gb, M_AT + 2 * r).mul_add(act.dsum[b], *acc);
            }
        }
    }
    out[..GROUP_ROWS].copy_from_slice(&acc);
}

/// [`group_reference`] for Q4_K: per sub-block `s` (activation block `b`), the integer
/// dot `t` of the nibbles with the activations, then `acc += (t · sc) · (d · d_a)` and
/// `acc -= (dmin · m) · dsum`, each a fused multiply-add.
#[cfg(test)]
fn q4k_reference(group: &[u8], act: ActRow<'_>, out: &mut [f32]) {
    let mut acc = [0.0f32; GROUP_ROWS];
    for (sb, gb) in group.chunks_exact(q4k::GROUP_BYTES).enumerate() {
        for s in 0..8 {
            let b = 8 * sb + s;
            let (j, shift) = (s / 2, 4 * (s % 2));
            for (r, acc) in acc.iter_mut().enumerate() {
                let t: i32 = (0..32)
                    .map(|i| {
                        let byte = gb[q4k::QS + 256 * j + 32 * (i / 4) + 4 * r + i % 4];
                        i32::from((byte >> shift) & 0x0F) * act.q(32 * b + i)
                    })
                    .sum();
                let sc = f32::from(gb[q4k::SC + 8 * s + r]);
                let m = f32::from(gb[q4k::M + 8 * s + r]);
                *acc = ((t as f32) * sc).mul_add(f16_at(gb, 2 * r) * act.d[b], *acc);
                *acc = (-(f16_at(gb, q4k::DMIN + 2 * r) * m)).mul_add(act.dsum[b], *acc);
            }
        }
    }
    out[..GROUP_ROWS].copy_from_slice(&acc);
}

/// [`group_reference`] for Q6_K, in the kernel's order: per half `n` and low-bit part
/// `p`, the activation blocks `4n + p` (low nibbles) and `4n + 2 + p` (high nibbles);
/// for each, per 16-value half `h` the integer dot `t_h` of the 6-bit quants with the
/// activations less `32 · Σa`, then `T = t_1 · sc_1 + t_0 · sc_0` (fused) and
/// `acc += T · (d · d_a)` (fused).
#[cfg(test)]
fn q6k_reference(group: &[u8], act: ActRow<'_>, out: &mut [f32]) {
    let mut acc = [0.0f32; GROUP_ROWS];
    for (sb, gb) in group.chunks_exact(q6k::GROUP_BYTES).enumerate() {
        for n in 0..2 {
            for p in 0..2 {
                for (j, shift) in [(p, 0), (p + 2, 4)] {
                    let b = 8 * sb + 4 * n + j;
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let t: [f32; 2] = std::array::from_fn(|h| {
                            let dot: i32 = (0..16)
                                .map(|k| {
                                    let c = 4 * h + k / 4;
                                    let e = k % 4;
                                    let low = gb[q6k::QL + 32 * (8 * (2 * n + p) + c) + 4 * r + e];
                                    let high = gb[q6k::QH + 32 * (8 * n + c) + 4 * r + e];
                                    let q =
                                        ((low >> shift) & 0x0F) | (((high >> (2 * j)) & 3) << 4);
                                    i32::from(q) * act.q(32 * b + 16 * h + k)
                                })
                                .sum();
                            (dot - 32 * act.sum16(2 * b + h)) as f32
                        });
                        let i = 8 * n + 2 * j;
                        let sc = |h: usize| f32::from(gb[q6k::SC + 8 * (i + h) + r] as i8);
                        let total = t[1].mul_add(sc(1), t[0] * sc(0));
                        *acc = total.mul_add(f16_at(gb, 2 * r) * act.d[b], *acc);
                    }
                }
            }
        }
    }
    out[..GROUP_ROWS].copy_from_slice(&acc);
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::dot::tests::{random_activations, random_row};
    use crate::dot::{Planes, QuantizedActivations};
    use crate::simd::Isa;

    const FORMATS: [(GgmlType, Format); 8] = [
        (GgmlType::Q6K, Format::Q6K),
        (GgmlType::Q4K, Format::Q4K),
        (GgmlType::Q4_0, Format::Q4_0),
        (GgmlType::Q4_1, Format::Q4_1),
        (GgmlType::Q5_0, Format::Q5_0),
        (GgmlType::Q5_1, Format::Q5_1),
        (GgmlType::Q8_0, Format::Q8_0),
        (GgmlType::Iq4Nl, Format::Iq4Nl),
    ];

    fn random_matrix(ty: GgmlType, rows: usize, cols: usize, rng: &mut ChaCha8Rng) -> Vec<u8> {
        (0..rows)
            .flat_map(|_| random_row(ty, cols / ty.block_size(), rng))
            .collect()
    }

    fn activations(cols: usize, planes: Planes, rng: &mut ChaCha8Rng) -> QuantizedActivations {
        let mut acts = QuantizedActivations::new();
        acts.quantize_planes(&random_activations(cols, rng), cols, planes)
            .expect("activations");
        acts
    }

    #[test]
    fn the_copy_gives_back_every_row_byte_for_byte() {
        let mut rng = ChaCha8Rng::seed_from_u64(81);
        for (ty, f) in FORMATS {
            let (rows, cols) = (19, 3 * f.block_elems());
            let data = random_matrix(ty, rows, cols, &mut rng);
            let m = QMatrix::new(ty, rows, cols, &data).expect("matrix");
            let packed = Interleaved::with_format(&m, f).expect("copy");
            assert_eq!(packed.rows(), 16, "{ty:?}");
            // Eight GGUF blocks per group-block (Q4_K: plus its unpacked scales).
            let groups_bytes = 2 * (cols / f.block_elems()) * f.group_bytes();
            assert_eq!(packed.bytes(), groups_bytes, "{ty:?}");
            assert!(
                groups_bytes <= 16 * m.data().len() / rows * 103 / 100,
                "{ty:?}"
            );
            for r in 0..16 {
                assert_eq!(
                    packed.unpack_row(r),
                    m.row(r).expect("row"),
                    "{ty:?} row {r}"
                );
            }
        }
    }

    #[test]
    fn the_group_reference_equals_the_row_reference() {
        let mut rng = ChaCha8Rng::seed_from_u64(82);
        for (ty, f) in FORMATS {
            for planes in [Planes::One, Planes::Two] {
                let cols = 4 * f.block_elems().max(64);
                let data = random_matrix(ty, 8, cols, &mut rng);
                let m = QMatrix::new(ty, 8, cols, &data).expect("matrix");
                let packed = Interleaved::with_format(&m, f).expect("copy");
                let acts = activations(cols, planes, &mut rng);
                let act = acts.row(0).expect("row");
                let mut out = [0.0f32; 8];
                group_reference(f, packed.groups(0, 1), act, &mut out);
                let kernel = simd::dot_q8_kernel(ty, Isa::Scalar).expect("kernel");
                for (r, &got) in out.iter().enumerate() {
                    let want = kernel(m.row(r).expect("row"), act);
                    let scale = (0..cols)
                        .map(|i| act.value(i).abs())
                        .fold(0.0f32, f32::max)
                        .max(1.0);
                    assert!(
                        (got - want).abs() <= 1e-4 * scale * cols as f32,
                        "{ty:?} {planes:?} row {r}: {got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn every_level_s_kernel_equals_the_group_reference_bit_for_bit() {
        let mut rng = ChaCha8Rng::seed_from_u64(83);
        for isa in Isa::available() {
            for (ty, f) in FORMATS {
                let Some(kernel) = simd::interleaved_kernel(f, isa) else {
                    continue;
                };
                for planes in [Planes::One, Planes::Two] {
                    let widths = if f.block_elems() == 32 {
                        [32, 64, 640]
                    } else {
                        [256, 512, 768]
                    };
                    for cols in widths {
                        let data = random_matrix(ty, 16, cols, &mut rng);
                        let m = QMatrix::new(ty, 16, cols, &data).expect("matrix");
                        let packed = Interleaved::with_format(&m, f).expect("copy");
                        let acts = activations(cols, planes, &mut rng);
                        let act = acts.row(0).expect("row");
                        let mut want = [0.0f32; 16];
                        for (g, w) in want.chunks_exact_mut(8).enumerate() {
                            group_reference(f, packed.groups(g, 1), act, w);
                        }
                        let mut got = [f32::NAN; 17];
                        kernel(packed.groups(0, 2), packed.group_len(), act, &mut got[..16]);
                        assert_eq!(
                            got[..16].iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                            want.map(f32::to_bits).to_vec(),
                            "{isa:?} {ty:?} {planes:?} cols {cols}"
                        );
                        assert!(got[16].is_nan());
                    }
                }
            }
        }
    }
}
