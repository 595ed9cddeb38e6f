//! AVX2 + FMA + F16C kernels. Every function here is only reachable through
//! [`super::Isa::Avx2`], which is handed out after run-time detection; the
//! safe wrappers rely on that.
#![allow(clippy::wildcard_imports)]

use bytemuck::Pod;

/// Views a row as blocks, or `None` when it is not 2-byte aligned.
fn cast<B: Pod>(row: &[u8]) -> Option<&[B]> {
    bytemuck::try_cast_slice(row).ok()
}

/// A safe entry point for a dot-product kernel over blocks of `$block`,
/// falling back to the scalar reference for unaligned rows.
macro_rules! safe_dot {
    ($name:ident, $imp:ident, $block:ty, $reference:path) => {
        pub(in crate::simd) fn $name(row: &[u8], act: ActRow<'_>) -> f32 {
            match super::cast::<$block>(row) {
                // SAFETY: only called after AVX2, FMA and F16C were detected (see `crate::simd::Isa`).
                Some(blocks) if act.qs2.is_empty() => unsafe { $imp::<false>(blocks, act) },
                // SAFETY: as above.
                Some(blocks) => unsafe { $imp::<true>(blocks, act) },
                None => $reference(row, act),
            }
        }
    };
}

/// A safe entry point for a dequantization kernel over blocks of `$block`,
/// falling back to the scalar reference for unaligned rows.
macro_rules! safe_dequant {
    ($name:ident, $imp:ident, $block:ty, $ty:expr) => {
        pub(in crate::simd) fn $name(row: &[u8], out: &mut [f32]) {
            match super::cast::<$block>(row) {
                // SAFETY: only called after AVX2, FMA and F16C were detected (see `crate::simd::Isa`).
                Some(blocks) => unsafe { $imp(blocks, out) },
                None => crate::simd::dequantize_fallback($ty, row, out),
            }
        }
    };
}

mod interleaved;
mod kquants;
mod legacy;

pub(super) use interleaved::*;
pub(super) use kquants::*;
pub(super) use legacy::*;

use std::arch::x86_64::*;

use crate::blocks::IQ4_LEVELS;
use crate::dot::activations::{ACT_BLOCK, ActOut, RESIDUAL_STEPS};

#[target_feature(enable = "avx2")]
#[inline]
fn load_u8x16(b: &[u8; 16]) -> __m128i {
    // SAFETY: `b` is 16 readable bytes; the load has no alignment requirement.
    unsafe { _mm_loadu_si128(b.as_ptr().cast()) }
}

#[target_feature(enable = "avx2")]
#[inline]
fn load_u8x32(b: &[u8; 32]) -> __m256i {
    // SAFETY: `b` is 32 readable bytes; the load has no alignment requirement.
    unsafe { _mm256_loadu_si256(b.as_ptr().cast()) }
}

#[target_feature(enable = "avx2")]
#[inline]
fn load_i8x32(b: &[i8; 32]) -> __m256i {
    // SAFETY: `b` is 32 readable bytes; the load has no alignment requirement.
    unsafe { _mm256_loadu_si256(b.as_ptr().cast()) }
}

#[target_feature(enable = "avx2")]
#[inline]
fn load_f32x8(v: &[f32; 8]) -> __m256 {
    // SAFETY: `v` is 8 readable floats; the load has no alignment requirement.
    unsafe { _mm256_loadu_ps(v.as_ptr()) }
}

#[target_feature(enable = "avx2")]
#[inline]
fn load_i16x16(v: &[i16; 16]) -> __m256i {
    // SAFETY: `v` is 16 readable i16; the load has no alignment requirement.
    unsafe { _mm256_loadu_si256(v.as_ptr().cast()) }
}

#[target_feature(enable = "avx2")]
#[inline]
fn store_f32x8(out: &mut [f32; 8], v: __m256) {
    // SAFETY: `out` is 8 writable floats; the store has no alignment requirement.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), v) }
}

/// Loads 8 bytes into the low half of a vector.
#[target_feature(enable = "avx2")]
#[inline]
fn load_u8x8(b: [u8; 8]) -> __m128i {
    _mm_cvtsi64_si128(i64::from_le_bytes(b))
}

/// Converts the four f16 values in `bytes` to floats.
///
/// Written as assembly: through intrinsics LLVM narrows the load to the one
/// lane a caller uses and emits `vpinsrw` into whatever register is free,
/// which can be a loop accumulator, turning the loop into one long chain.
#[target_feature(enable = "avx2,f16c")]
#[inline]
fn f16x4_to_f32(bytes: &[u8; 8]) -> __m128 {
    let out: __m128;
    // SAFETY: reads the 8 bytes `bytes` refers to and writes one register;
    // `vcvtph2ps` exists where F16C was detected.
    unsafe {
        std::arch::asm!(
            "vcvtph2ps {out}, qword ptr [{src}]",
            src = in(reg) bytes.as_ptr(),
            out = out(xmm_reg) out,
            options(pure, readonly, nostack, preserves_flags),
        );
    }
    out
}

/// The first four f16 values of a block (its leading scales), as floats.
#[target_feature(enable = "avx2,f16c")]
#[inline]
fn f16_head_to_f32x4(block: &[u8]) -> __m128 {
    match block.first_chunk::<8>() {
        Some(head) => f16x4_to_f32(head),
        None => _mm_setzero_ps(),
    }
}

/// The f16 scale at the start of a block.
#[target_feature(enable = "avx2,f16c")]
#[inline]
fn f16_head_to_f32(block: &[u8]) -> f32 {
    _mm_cvtss_f32(f16_head_to_f32x4(block))
}

/// The last four f16 values of a block (its trailing scales), as floats.
#[target_feature(enable = "avx2,f16c")]
#[inline]
fn f16_tail_to_f32(block: &[u8]) -> __m128 {
    match block.last_chunk::<8>() {
        Some(tail) => f16x4_to_f32(tail),
        None => _mm_setzero_ps(),
    }
}

/// Lane `L` of `v`.
#[target_feature(enable = "avx2")]
#[inline]
fn lane<const L: i32>(v: __m128) -> f32 {
    _mm_cvtss_f32(_mm_permute_ps::<L>(v))
}

#[target_feature(enable = "avx2")]
#[inline]
fn hsum_f32x8(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

#[target_feature(enable = "avx2")]
#[inline]
fn hsum_i32x8(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01>(s));
    _mm_cvtsi128_si32(s)
}

/// Sums of four adjacent `u * s` products (u unsigned, s signed), as i32.
/// The pairwise i16 step cannot saturate while `u <= 127`.
#[target_feature(enable = "avx2")]
#[inline]
fn dot_u8i8(u: __m256i, s: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1))
}

/// As [`dot_u8i8`] with each i16 pair sum multiplied by the matching lane of `scales`.
#[target_feature(enable = "avx2")]
#[inline]
fn dot_u8i8_scaled(u: __m256i, s: __m256i, scales: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), scales)
}

/// Sums of four adjacent `w * a` products of two signed vectors, as i32.
#[target_feature(enable = "avx2")]
#[inline]
fn dot_i8i8(w: __m256i, a: __m256i) -> __m256i {
    dot_u8i8(_mm256_sign_epi8(w, w), _mm256_sign_epi8(a, w))
}

/// Spreads 16 packed bytes to 32 nibbles in element order: the low nibbles
/// of bytes 0..16, then the high nibbles.
#[target_feature(enable = "avx2")]
#[inline]
fn nibbles_32(qs: &[u8; 16]) -> __m256i {
    let both = _mm256_broadcastsi128_si256(load_u8x16(qs));
    let shifted = _mm256_srlv_epi64(both, _mm256_set_epi64x(4, 4, 0, 0));
    _mm256_and_si256(shifted, _mm256_set1_epi8(0x0F))
}

/// The IQ4 levels selected by 32 nibbles, as signed bytes in element order.
#[target_feature(enable = "avx2")]
#[inline]
fn iq4_values(qs: &[u8; 16]) -> __m256i {
    let table = _mm256_broadcastsi128_si256(load_u8x16(&IQ4_LEVELS.map(|v| v as u8)));
    _mm256_shuffle_epi8(table, nibbles_32(qs))
}

/// Expands 32 bits to 32 bytes: byte `j` is `0xFF` where bit `j` is set.
#[target_feature(enable = "avx2")]
#[inline]
fn bits_to_bytes(bits: u32) -> __m256i {
    let v = _mm256_set1_epi32(bits as i32);
    let spread = _mm256_shuffle_epi8(
        v,
        _mm256_set_epi64x(
            0x0303_0303_0303_0303,
            0x0202_0202_0202_0202,
            0x0101_0101_0101_0101,
            0,
        ),
    );
    let mask = _mm256_set1_epi64x(0x8040_2010_0804_0201_u64 as i64);
    _mm256_cmpeq_epi8(_mm256_and_si256(spread, mask), mask)
}

/// Converts 32 unsigned or signed bytes to floats and stores `f(k, x)` for
/// each group `k` (0..4) of 8, in order.
#[target_feature(enable = "avx2")]
#[inline]
fn bytes_to_f32(
    q: __m256i,
    signed: bool,
    out: &mut [f32; 32],
    f: impl Fn(usize, __m256) -> __m256,
) {
    let halves = [_mm256_castsi256_si128(q), _mm256_extracti128_si256::<1>(q)];
    let (outs, _) = out.as_chunks_mut::<8>();
    for (h, half) in halves.into_iter().enumerate() {
        let parts = [half, _mm_unpackhi_epi64(half, half)];
        for (p, part) in parts.into_iter().enumerate() {
            let wide = if signed {
                _mm256_cvtepi8_epi32(part)
            } else {
                _mm256_cvtepu8_epi32(part)
            };
            store_f32x8(&mut outs[2 * h + p], f(2 * h + p, _mm256_cvtepi32_ps(wide)));
        }
    }
}

/// Rounds to the nearest integer, ties to even, as `f32::round_ties_even`.
#[target_feature(enable = "avx2")]
#[inline]
fn round_even(v: __m256) -> __m256 {
    _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(v)
}

/// Packs four vectors of 8 integral floats (within ±127) to 32 bytes in
/// order, stores them, and returns the sums of each 16.
#[target_feature(enable = "avx2")]
#[inline]
fn store_quants(v: [__m256; 4], out: &mut [i8; 32]) -> [i16; 2] {
    let r = v.map(|v| _mm256_cvtps_epi32(v));
    let s0 = hsum_i32x8(_mm256_add_epi32(r[0], r[1]));
    let s1 = hsum_i32x8(_mm256_add_epi32(r[2], r[3]));
    let packed = _mm256_packs_epi16(
        _mm256_packs_epi32(r[0], r[1]),
        _mm256_packs_epi32(r[2], r[3]),
    );
    let ordered = _mm256_permutevar8x32_epi32(packed, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    // SAFETY: `out` is 32 writable bytes; the store has no alignment requirement.
    unsafe { _mm256_storeu_si256(out.as_mut_ptr().cast(), ordered) };
    [s0 as i16, s1 as i16]
}

/// Quantizes activations; see [`crate::dot::activations`] for the format.
/// The same operations as the scalar reference, so the results are identical.
#[target_feature(enable = "avx2,fma")]
fn quantize_activations_impl(x: &[f32], out: ActOut<'_>) {
    let two = !out.qs2.is_empty();
    let (xb, _) = x.as_chunks::<ACT_BLOCK>();
    let (qb, _) = out.qs.as_chunks_mut::<ACT_BLOCK>();
    let (qb2, _) = out.qs2.as_chunks_mut::<ACT_BLOCK>();
    let (sb, _) = out.sums16.as_chunks_mut::<2>();
    let (sb2, _) = out.sums16b.as_chunks_mut::<2>();
    let (mut qb2, mut sb2) = (qb2.iter_mut(), sb2.iter_mut());
    let sign = _mm256_set1_ps(-0.0);
    let limit = _mm256_set1_ps(127.0);
    for ((((x, q), d), ds), s) in xb.iter().zip(qb).zip(out.d).zip(out.dsum).zip(sb) {
        let (xs, _) = x.as_chunks::<8>();
        let v: [__m256; 4] = std::array::from_fn(|k| load_f32x8(&xs[k]));
        let m01 = _mm256_max_ps(_mm256_andnot_ps(sign, v[0]), _mm256_andnot_ps(sign, v[1]));
        let m23 = _mm256_max_ps(_mm256_andnot_ps(sign, v[2]), _mm256_andnot_ps(sign, v[3]));
        let m = _mm256_max_ps(m01, m23);
        let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        let amax = _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
        let scale = amax / 127.0;
        let id = _mm256_set1_ps(if amax == 0.0 { 0.0 } else { 127.0 / amax });
        let scaled = v.map(|v| _mm256_mul_ps(v, id));
        let rounded = scaled.map(|v| round_even(v));
        let clamp = |v: __m256| {
            _mm256_max_ps(
                _mm256_min_ps(v, limit),
                _mm256_sub_ps(_mm256_setzero_ps(), limit),
            )
        };
        let sums = store_quants(rounded.map(clamp), q);
        *s = sums;
        let total1 = i32::from(sums[0]) + i32::from(sums[1]);
        if let (true, Some(q2), Some(s2)) = (two, qb2.next(), sb2.next()) {
            let steps = _mm256_set1_ps(RESIDUAL_STEPS);
            let res: [__m256; 4] = std::array::from_fn(|k| {
                clamp(round_even(_mm256_mul_ps(
                    _mm256_sub_ps(scaled[k], rounded[k]),
                    steps,
                )))
            });
            let sums2 = store_quants(res, q2);
            *s2 = sums2;
            let d2 = scale / RESIDUAL_STEPS;
            *d = d2;
            *ds = d2 * (256 * total1 + i32::from(sums2[0]) + i32::from(sums2[1])) as f32;
        } else {
            *d = scale;
            *ds = scale * total1 as f32;
        }
    }
}

pub(super) fn quantize_activations(x: &[f32], out: ActOut<'_>) {
    // SAFETY: only called after AVX2 and FMA were detected (see `super::Isa`).
    unsafe { quantize_activations_impl(x, out) }
}

#[target_feature(enable = "avx2,fma")]
fn dot_f32_impl(w: &[f32], x: &[f32]) -> f32 {
    let (wc, wr) = w.as_chunks::<32>();
    let (xc, xr) = x.as_chunks::<32>();
    let mut acc = [_mm256_setzero_ps(); 4];
    for (w, x) in wc.iter().zip(xc) {
        let (w8, _) = w.as_chunks::<8>();
        let (x8, _) = x.as_chunks::<8>();
        for k in 0..4 {
            acc[k] = _mm256_fmadd_ps(load_f32x8(&w8[k]), load_f32x8(&x8[k]), acc[k]);
        }
    }
    let total = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    hsum_f32x8(total) + wr.iter().zip(xr).map(|(a, b)| a * b).sum::<f32>()
}

/// Dot product of two f32 slices of equal length.
pub(super) fn dot_f32(w: &[f32], x: &[f32]) -> f32 {
    // SAFETY: only called after AVX2 and FMA were detected (see `super::Isa`).
    unsafe { dot_f32_impl(w, x) }
}

#[target_feature(enable = "avx2,fma")]
fn dot_f32_bytes_impl(row: &[u8], x: &[f32]) -> f32 {
    let (wc, wr) = row.as_chunks::<32>();
    let (xc, xr) = x.as_chunks::<8>();
    let mut acc = [_mm256_setzero_ps(); 2];
    for (k, (w, x)) in wc.iter().zip(xc).enumerate() {
        let wv = _mm256_castsi256_ps(load_u8x32(w));
        acc[k % 2] = _mm256_fmadd_ps(wv, load_f32x8(x), acc[k % 2]);
    }
    let tail = wr
        .as_chunks::<4>()
        .0
        .iter()
        .zip(xr)
        .map(|(w, x)| f32::from_le_bytes(*w) * x)
        .sum::<f32>();
    hsum_f32x8(_mm256_add_ps(acc[0], acc[1])) + tail
}

/// f32 weights (raw little-endian bytes) against f32 values.
pub(super) fn dot_f32_bytes(row: &[u8], x: &[f32]) -> f32 {
    // SAFETY: only called after AVX2 and FMA were detected (see `super::Isa`).
    unsafe { dot_f32_bytes_impl(row, x) }
}

#[target_feature(enable = "avx2,fma,f16c")]
fn dot_f16_impl(row: &[u8], x: &[f32]) -> f32 {
    let (wc, wr) = row.as_chunks::<16>();
    let (xc, xr) = x.as_chunks::<8>();
    let mut acc = [_mm256_setzero_ps(); 2];
    for (k, (w, x)) in wc.iter().zip(xc).enumerate() {
        let wv = _mm256_cvtph_ps(load_u8x16(w));
        acc[k % 2] = _mm256_fmadd_ps(wv, load_f32x8(x), acc[k % 2]);
    }
    let tail = crate::dot::reference::f16_f32(wr, xr);
    hsum_f32x8(_mm256_add_ps(acc[0], acc[1])) + tail
}

/// f16 weights against f32 values.
pub(super) fn dot_f16(row: &[u8], x: &[f32]) -> f32 {
    // SAFETY: only called after AVX2, FMA and F16C were detected (see `super::Isa`).
    unsafe { dot_f16_impl(row, x) }
}

#[target_feature(enable = "avx2,fma")]
fn dot_bf16_impl(row: &[u8], x: &[f32]) -> f32 {
    let (wc, wr) = row.as_chunks::<16>();
    let (xc, xr) = x.as_chunks::<8>();
    let mut acc = [_mm256_setzero_ps(); 2];
    for (k, (w, x)) in wc.iter().zip(xc).enumerate() {
        let wv = _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(load_u8x16(
            w,
        ))));
        acc[k % 2] = _mm256_fmadd_ps(wv, load_f32x8(x), acc[k % 2]);
    }
    let tail = crate::dot::reference::bf16_f32(wr, xr);
    hsum_f32x8(_mm256_add_ps(acc[0], acc[1])) + tail
}

/// bf16 weights against f32 values.
pub(super) fn dot_bf16(row: &[u8], x: &[f32]) -> f32 {
    // SAFETY: only called after AVX2 and FMA were detected (see `super::Isa`).
    unsafe { dot_bf16_impl(row, x) }
}

#[target_feature(enable = "avx2,f16c")]
fn dequant_f16_impl(row: &[u8], out: &mut [f32]) {
    let (wc, wr) = row.as_chunks::<16>();
    let (oc, or) = out.as_chunks_mut::<8>();
    for (w, o) in wc.iter().zip(oc) {
        store_f32x8(o, _mm256_cvtph_ps(load_u8x16(w)));
    }
    for (w, o) in wr.as_chunks::<2>().0.iter().zip(or) {
        *o = half::f16::from_le_bytes(*w).to_f32();
    }
}

/// f16 to f32 conversion of a row.
pub(super) fn dequant_f16(row: &[u8], out: &mut [f32]) {
    // SAFETY: only called after AVX2 and F16C were detected (see `super::Isa`).
    unsafe { dequant_f16_impl(row, out) }
}

#[target_feature(enable = "avx2")]
fn dequant_bf16_impl(row: &[u8], out: &mut [f32]) {
    let (wc, wr) = row.as_chunks::<16>();
    let (oc, or) = out.as_chunks_mut::<8>();
    for (w, o) in wc.iter().zip(oc) {
        let v = _mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(load_u8x16(w)));
        store_f32x8(o, _mm256_castsi256_ps(v));
    }
    for (w, o) in wr.as_chunks::<2>().0.iter().zip(or) {
        *o = half::bf16::from_le_bytes(*w).to_f32();
    }
}

/// bf16 to f32 conversion of a row.
pub(super) fn dequant_bf16(row: &[u8], out: &mut [f32]) {
    // SAFETY: only called after AVX2 was detected (see `super::Isa`).
    unsafe { dequant_bf16_impl(row, out) }
}

/// Activation rows per GEMM call (two vectors).
pub(in crate::simd) const GEMM_LANES: usize = 16;
/// Weight rows per GEMM call.
pub(in crate::simd) const GEMM_WROWS: usize = 6;

#[target_feature(enable = "avx2,fma")]
fn gemm_f32_impl(xp: &[f32], w: &[f32], cols: usize, out: &mut [f32]) {
    let (xc, _) = xp[..cols * GEMM_LANES].as_chunks::<8>();
    let wr: [&[f32]; GEMM_WROWS] = std::array::from_fn(|j| &w[j * cols..(j + 1) * cols]);
    let mut acc = [[_mm256_setzero_ps(); 2]; GEMM_WROWS];
    for k in 0..cols {
        let x = [load_f32x8(&xc[2 * k]), load_f32x8(&xc[2 * k + 1])];
        for (acc, w) in acc.iter_mut().zip(&wr) {
            let b = _mm256_set1_ps(w[k]);
            acc[0] = _mm256_fmadd_ps(b, x[0], acc[0]);
            acc[1] = _mm256_fmadd_ps(b, x[1], acc[1]);
        }
    }
    let (oc, _) = out[..GEMM_WROWS * GEMM_LANES].as_chunks_mut::<8>();
    for (j, acc) in acc.iter().enumerate() {
        store_f32x8(&mut oc[2 * j], acc[0]);
        store_f32x8(&mut oc[2 * j + 1], acc[1]);
    }
}

/// Six weight rows against 16 packed activation rows (see `crate::simd::F32Gemm`).
pub(in crate::simd) fn gemm_f32(xp: &[f32], w: &[f32], cols: usize, out: &mut [f32]) {
    // SAFETY: only called after AVX2 and FMA were detected (see `super::Isa`).
    unsafe { gemm_f32_impl(xp, w, cols, out) }
}
