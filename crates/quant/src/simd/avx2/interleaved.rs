//! Groups of eight interleaved rows (see [`crate::interleave`]) against one
//! quantized activation row: lane `r` of every vector belongs to row `r`,
//! so a block costs one scale conversion and no horizontal sum for all
//! eight rows, and four activation values are broadcast once for them.

use std::arch::x86_64::*;

use super::bits_to_bytes;
use crate::blocks::IQ4_LEVELS;
use crate::dot::activations::ActRow;
use crate::interleave::{Format, GROUP_ROWS, M_AT, q4k, q6k};

/// The formats as const parameters.
mod code {
    pub(super) const Q4_0: u8 = 0;
    pub(super) const Q4_1: u8 = 1;
    pub(super) const Q5_0: u8 = 2;
    pub(super) const Q5_1: u8 = 3;
    pub(super) const Q8_0: u8 = 4;
    pub(super) const IQ4_NL: u8 = 5;
}

/// The format of a const parameter (Q4_K has its own kernel).
const fn format(f: u8) -> Format {
    match f {
        code::Q4_0 => Format::Q4_0,
        code::Q4_1 => Format::Q4_1,
        code::Q5_0 => Format::Q5_0,
        code::Q5_1 => Format::Q5_1,
        code::Q8_0 => Format::Q8_0,
        _ => Format::Iq4Nl,
    }
}

/// How far ahead of the group-block being multiplied the weights are fetched.
const PREFETCH_BYTES: usize = 1024;

/// The 32 bytes of `b` from `at` on.
#[target_feature(enable = "avx2")]
#[inline]
fn load32(b: &[u8], at: usize) -> __m256i {
    let bytes: &[u8; 32] = b[at..at + 32].try_into().expect("32 bytes");
    // SAFETY: `bytes` is 32 readable bytes; the load has no alignment requirement.
    unsafe { _mm256_loadu_si256(bytes.as_ptr().cast()) }
}

/// Eight f16 values at `at` of `b`, as floats.
#[target_feature(enable = "avx2,f16c")]
#[inline]
fn f16x8(b: &[u8], at: usize) -> __m256 {
    let bytes: &[u8; 16] = b[at..at + 16].try_into().expect("16 bytes");
    // SAFETY: `bytes` is 16 readable bytes; the load has no alignment requirement.
    _mm256_cvtph_ps(unsafe { _mm_loadu_si128(bytes.as_ptr().cast()) })
}

/// The little-endian u32 at `at` of `b`.
#[inline]
fn u32_at(b: &[u8], at: usize) -> u32 {
    let w: [u8; 4] = b[at..at + 4].try_into().expect("4 bytes");
    u32::from_le_bytes(w)
}

/// Four activation quants (group `g` of block `b`) in every 32-bit lane.
#[target_feature(enable = "avx2")]
#[inline]
fn act4(q: &[i8], b: usize, g: usize) -> __m256i {
    let at = 32 * b + 4 * g;
    let w: [i8; 4] = q[at..at + 4].try_into().expect("4 quants");
    _mm256_set1_epi32(i32::from_le_bytes(w.map(|v| v as u8)))
}

/// Sums of four adjacent products of two signed byte vectors, as i32.
#[target_feature(enable = "avx2")]
#[inline]
fn dot_signed(w: __m256i, a: __m256i) -> __m256i {
    let pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(a, w));
    _mm256_madd_epi16(pairs, _mm256_set1_epi16(1))
}

/// The integer dots of the eight rows with activation block `b` of plane `q`.
#[target_feature(enable = "avx2")]
#[inline]
fn block_dot<const F: u8>(gb: &[u8], q: &[i8], b: usize) -> __m256i {
    let f = format(F);
    let at = f.quants_at();
    let ones = _mm256_set1_epi16(1);
    if F == code::Q8_0 {
        let mut sum = _mm256_setzero_si256();
        for c in 0..8 {
            sum = _mm256_add_epi32(sum, dot_signed(load32(gb, at + 32 * c), act4(q, b, c)));
        }
        return sum;
    }
    let low = _mm256_set1_epi8(0x0F);
    let nibbles = |c: usize| {
        let packed = load32(gb, at + 32 * c);
        (
            _mm256_and_si256(packed, low),
            _mm256_and_si256(_mm256_srli_epi16::<4>(packed), low),
        )
    };
    if F == code::IQ4_NL {
        let levels: [u8; 16] = IQ4_LEVELS.map(|v| v as u8);
        // SAFETY: `levels` is 16 readable bytes; the load has no alignment requirement.
        let table = _mm256_broadcastsi128_si256(unsafe { _mm_loadu_si128(levels.as_ptr().cast()) });
        let mut sum = _mm256_setzero_si256();
        for c in 0..4 {
            let (lo, hi) = nibbles(c);
            let lo = _mm256_shuffle_epi8(table, lo);
            let hi = _mm256_shuffle_epi8(table, hi);
            sum = _mm256_add_epi32(sum, dot_signed(lo, act4(q, b, c)));
            sum = _mm256_add_epi32(sum, dot_signed(hi, act4(q, b, c + 4)));
        }
        return sum;
    }
    if f.has_fifth_bit() {
        // Four chunks of pair sums of 31 · 128 · 2 stay inside i16.
        let fifth = _mm256_set1_epi8(0x10);
        let high = |c: usize| _mm256_and_si256(bits_to_bytes(u32_at(gb, f.qh_at() + 4 * c)), fifth);
        let mut lo_sum = _mm256_setzero_si256();
        let mut hi_sum = _mm256_setzero_si256();
        for c in 0..4 {
            let (lo, hi) = nibbles(c);
            let lo = _mm256_or_si256(lo, high(c));
            let hi = _mm256_or_si256(hi, high(c + 4));
            lo_sum = _mm256_add_epi16(lo_sum, _mm256_maddubs_epi16(lo, act4(q, b, c)));
            hi_sum = _mm256_add_epi16(hi_sum, _mm256_maddubs_epi16(hi, act4(q, b, c + 4)));
        }
        return _mm256_add_epi32(
            _mm256_madd_epi16(lo_sum, ones),
            _mm256_madd_epi16(hi_sum, ones),
        );
    }
    // Eight chunks of pair sums of 15 · 128 · 2 stay inside i16.
    let mut sum = _mm256_setzero_si256();
    for c in 0..4 {
        let (lo, hi) = nibbles(c);
        sum = _mm256_add_epi16(sum, _mm256_maddubs_epi16(lo, act4(q, b, c)));
        sum = _mm256_add_epi16(sum, _mm256_maddubs_epi16(hi, act4(q, b, c + 4)));
    }
    _mm256_madd_epi16(sum, ones)
}

/// Runs `block` over the group-blocks (`gbytes` each) of every group of eight rows in
/// `data` (`group_len` bytes each), prefetching ahead, and stores each group's eight
/// row sums: `block(group_block, index, acc)` returns the updated sums.
#[target_feature(enable = "avx2")]
#[inline]
fn each_group(
    data: &[u8],
    group_len: usize,
    gbytes: usize,
    out: &mut [f32],
    mut block: impl FnMut(&[u8], usize, __m256) -> __m256,
) {
    for (group, ys) in data
        .chunks_exact(group_len)
        .zip(out.chunks_exact_mut(GROUP_ROWS))
    {
        let mut acc = _mm256_setzero_ps();
        for (b, gb) in group.chunks_exact(gbytes).enumerate() {
            let ahead = gb.as_ptr().wrapping_add(PREFETCH_BYTES);
            for line in (0..gbytes).step_by(64) {
                // A hint only: it never faults, whatever the address.
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(line).cast());
            }
            acc = block(gb, b, acc);
        }
        let ys: &mut [f32; GROUP_ROWS] = ys.try_into().expect("a group of rows");
        // SAFETY: `ys` is 8 writable floats; the store has no alignment requirement.
        unsafe { _mm256_storeu_ps(ys.as_mut_ptr(), acc) };
    }
}

/// Groups of eight rows (`out.len() / 8` groups of `group_len` bytes in
/// `data`) of format `F` against one activation row.
#[target_feature(enable = "avx2,fma,f16c")]
fn groups_impl<const F: u8, const TWO: bool>(
    data: &[u8],
    group_len: usize,
    act: ActRow<'_>,
    out: &mut [f32],
) {
    let f = format(F);
    each_group(data, group_len, f.group_bytes(), out, |gb, b, mut acc| {
        let mut dot = block_dot::<F>(gb, act.qs, b);
        if TWO {
            dot = _mm256_add_epi32(_mm256_slli_epi32::<8>(dot), block_dot::<F>(gb, act.qs2, b));
        }
        if f.offset() != 0 {
            let sum = act.sum16(2 * b) + act.sum16(2 * b + 1);
            dot = _mm256_sub_epi32(dot, _mm256_set1_epi32(f.offset() * sum));
        }
        let scale = _mm256_mul_ps(f16x8(gb, 0), _mm256_set1_ps(act.d[b]));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), scale, acc);
        if f.has_min() {
            acc = _mm256_fmadd_ps(f16x8(gb, M_AT), _mm256_set1_ps(act.dsum[b]), acc);
        }
        acc
    });
}

/// Eight unsigned bytes at `at` of `b`, as floats.
#[target_feature(enable = "avx2")]
#[inline]
fn u8x8_to_f32(b: &[u8], at: usize) -> __m256 {
    let w: [u8; 8] = b[at..at + 8].try_into().expect("8 bytes");
    _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(i64::from_le_bytes(
        w,
    ))))
}

/// The integer dots of the eight rows' sub-blocks `2j` and `2j + 1` of a Q4_K
/// group-block with activation blocks `first` and `first + 1` of plane `q`.
#[target_feature(enable = "avx2")]
#[inline]
fn q4k_part_dots(gb: &[u8], q: &[i8], j: usize, first: usize) -> (__m256i, __m256i) {
    let low = _mm256_set1_epi8(0x0F);
    let ones = _mm256_set1_epi16(1);
    // Eight chunks of pair sums of 15 · 128 · 2 stay inside i16.
    let mut lo_sum = _mm256_setzero_si256();
    let mut hi_sum = _mm256_setzero_si256();
    for c in 0..8 {
        let packed = load32(gb, q4k::QS + 256 * j + 32 * c);
        let lo = _mm256_and_si256(packed, low);
        let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(packed), low);
        lo_sum = _mm256_add_epi16(lo_sum, _mm256_maddubs_epi16(lo, act4(q, first, c)));
        hi_sum = _mm256_add_epi16(hi_sum, _mm256_maddubs_epi16(hi, act4(q, first + 1, c)));
    }
    (
        _mm256_madd_epi16(lo_sum, ones),
        _mm256_madd_epi16(hi_sum, ones),
    )
}

/// Interleaved Q4_K groups (see [`q4k`]) against one activation row: per sub-block the
/// integer dot, times the row's 6-bit scale and `d · d_a`, less `dmin · m · dsum`.
#[target_feature(enable = "avx2,fma,f16c")]
fn groups_q4k_impl<const TWO: bool>(
    data: &[u8],
    group_len: usize,
    act: ActRow<'_>,
    out: &mut [f32],
) {
    each_group(data, group_len, q4k::GROUP_BYTES, out, |gb, sb, mut acc| {
        let d = f16x8(gb, 0);
        let dmin = f16x8(gb, q4k::DMIN);
        for j in 0..4 {
            let first = 8 * sb + 2 * j;
            let (mut lo, mut hi) = q4k_part_dots(gb, act.qs, j, first);
            if TWO {
                let (lo2, hi2) = q4k_part_dots(gb, act.qs2, j, first);
                lo = _mm256_add_epi32(_mm256_slli_epi32::<8>(lo), lo2);
                hi = _mm256_add_epi32(_mm256_slli_epi32::<8>(hi), hi2);
            }
            for (half, dot) in [(0, lo), (1, hi)] {
                let s = 2 * j + half;
                let b = first + half;
                let sc = u8x8_to_f32(gb, q4k::SC + 8 * s);
                let m = u8x8_to_f32(gb, q4k::M + 8 * s);
                let t = _mm256_mul_ps(_mm256_cvtepi32_ps(dot), sc);
                acc = _mm256_fmadd_ps(t, _mm256_mul_ps(d, _mm256_set1_ps(act.d[b])), acc);
                acc = _mm256_fnmadd_ps(_mm256_mul_ps(dmin, m), _mm256_set1_ps(act.dsum[b]), acc);
            }
        }
        acc
    });
}

/// Eight signed bytes at `at` of `b`, as floats.
#[target_feature(enable = "avx2")]
#[inline]
fn i8x8_to_f32(b: &[u8], at: usize) -> __m256 {
    let w: [u8; 8] = b[at..at + 8].try_into().expect("8 bytes");
    _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_cvtsi64_si128(i64::from_le_bytes(
        w,
    ))))
}

/// The integer dots, per 16-value half, of the eight rows' 6-bit quants of activation
/// blocks `lo` (low nibbles of part `p`) and `lo + 2` (high nibbles) of half `n` of a
/// Q6_K group-block with plane `q`: `[[lo half 0, lo half 1], [hi half 0, hi half 1]]`.
#[target_feature(enable = "avx2")]
#[inline]
fn q6k_dots(gb: &[u8], q: &[i8], n: usize, p: usize, lo: usize) -> [[__m256i; 2]; 2] {
    let low = _mm256_set1_epi8(0x0F);
    let two = _mm256_set1_epi8(0x03);
    let ones = _mm256_set1_epi16(1);
    let mut dots = [[_mm256_setzero_si256(); 2]; 2];
    for c in 0..8 {
        let ql = load32(gb, q6k::QL + 32 * (8 * (2 * n + p) + c));
        let qh = load32(gb, q6k::QH + 32 * (8 * n + c));
        let high = |shift: i32| {
            let bits = match shift {
                0 => qh,
                2 => _mm256_srli_epi16::<2>(qh),
                4 => _mm256_srli_epi16::<4>(qh),
                _ => _mm256_srli_epi16::<6>(qh),
            };
            _mm256_slli_epi16::<4>(_mm256_and_si256(bits, two))
        };
        let q_lo = _mm256_or_si256(_mm256_and_si256(ql, low), high(2 * p as i32));
        let q_hi = _mm256_or_si256(
            _mm256_and_si256(_mm256_srli_epi16::<4>(ql), low),
            high(2 * p as i32 + 4),
        );
        for (k, quants) in [q_lo, q_hi].into_iter().enumerate() {
            let pairs = _mm256_maddubs_epi16(quants, act4(q, lo + 2 * k, c));
            dots[k][c / 4] = _mm256_add_epi32(dots[k][c / 4], _mm256_madd_epi16(pairs, ones));
        }
    }
    dots
}

/// Interleaved Q6_K groups (see [`q6k`]) against one activation row, in the order and
/// with the roundings of its scalar definition.
#[target_feature(enable = "avx2,fma,f16c")]
fn groups_q6k_impl<const TWO: bool>(
    data: &[u8],
    group_len: usize,
    act: ActRow<'_>,
    out: &mut [f32],
) {
    each_group(data, group_len, q6k::GROUP_BYTES, out, |gb, sb, mut acc| {
        let d = f16x8(gb, 0);
        for n in 0..2 {
            for p in 0..2 {
                let lo = 8 * sb + 4 * n + p;
                let mut dots = q6k_dots(gb, act.qs, n, p, lo);
                if TWO {
                    let dots2 = q6k_dots(gb, act.qs2, n, p, lo);
                    for (d1, d2) in dots.iter_mut().flatten().zip(dots2.iter().flatten()) {
                        *d1 = _mm256_add_epi32(_mm256_slli_epi32::<8>(*d1), *d2);
                    }
                }
                for (k, halves) in dots.iter().enumerate() {
                    let (b, j) = (lo + 2 * k, p + 2 * k);
                    let t: [__m256; 2] = std::array::from_fn(|h| {
                        let sum = act.sum16(2 * b + h);
                        _mm256_cvtepi32_ps(_mm256_sub_epi32(halves[h], _mm256_set1_epi32(32 * sum)))
                    });
                    let i = 8 * n + 2 * j;
                    let sc0 = i8x8_to_f32(gb, q6k::SC + 8 * i);
                    let sc1 = i8x8_to_f32(gb, q6k::SC + 8 * (i + 1));
                    let total = _mm256_fmadd_ps(t[1], sc1, _mm256_mul_ps(t[0], sc0));
                    acc = _mm256_fmadd_ps(total, _mm256_mul_ps(d, _mm256_set1_ps(act.d[b])), acc);
                }
            }
        }
        acc
    });
}

macro_rules! group_kernels {
    ($($name:ident, $imp:ident $(::<$code:ident>)?, $what:literal;)*) => {$(
        #[doc = concat!("Interleaved ", $what, " groups against one quantized activation row (AVX2).")]
        pub(in crate::simd) fn $name(data: &[u8], group_len: usize, act: ActRow<'_>, out: &mut [f32]) {
            if act.qs2.is_empty() {
                // SAFETY: only reachable after AVX2, FMA and F16C were
                // detected (see `crate::simd::interleaved_kernel`).
                unsafe { $imp::<$({ code::$code },)? false>(data, group_len, act, out) }
            } else {
                // SAFETY: as above.
                unsafe { $imp::<$({ code::$code },)? true>(data, group_len, act, out) }
            }
        }
    )*};
}

group_kernels! {
    groups_q4_0, groups_impl::<Q4_0>, "Q4_0";
    groups_q4_1, groups_impl::<Q4_1>, "Q4_1";
    groups_q5_0, groups_impl::<Q5_0>, "Q5_0";
    groups_q5_1, groups_impl::<Q5_1>, "Q5_1";
    groups_q8_0, groups_impl::<Q8_0>, "Q8_0";
    groups_iq4_nl, groups_impl::<IQ4_NL>, "IQ4_NL";
    groups_q4_k, groups_q4k_impl, "Q4_K";
    groups_q6_k, groups_q6k_impl, "Q6_K";
}
