//! AVX-512 kernels, only reachable through [`super::Isa::Avx512`], which
//! is handed out after run-time detection; the integer dot products also
//! need AVX-512 BW, VL and VNNI, checked by [`has_vnni`].
#![allow(clippy::wildcard_imports)]

use std::arch::x86_64::*;

use crate::blocks::BlockQ8_0;
use crate::dot::activations::ActRow;

/// Activation rows per GEMM call (two vectors).
pub(super) const GEMM_LANES: usize = 32;
/// Weight rows per GEMM call.
pub(super) const GEMM_WROWS: usize = 12;

#[target_feature(enable = "avx512f")]
#[inline]
fn load_f32x16(v: &[f32; 16]) -> __m512 {
    // SAFETY: `v` is 16 readable floats; the load has no alignment requirement.
    unsafe { _mm512_loadu_ps(v.as_ptr()) }
}

#[target_feature(enable = "avx512f")]
#[inline]
fn store_f32x16(out: &mut [f32; 16], v: __m512) {
    // SAFETY: `out` is 16 writable floats; the store has no alignment requirement.
    unsafe { _mm512_storeu_ps(out.as_mut_ptr(), v) }
}

#[target_feature(enable = "avx512f")]
fn gemm_f32_impl(xp: &[f32], w: &[f32], cols: usize, out: &mut [f32]) {
    let (xc, _) = xp[..cols * GEMM_LANES].as_chunks::<16>();
    let wr: [&[f32]; GEMM_WROWS] = std::array::from_fn(|j| &w[j * cols..(j + 1) * cols]);
    let mut acc = [[_mm512_setzero_ps(); 2]; GEMM_WROWS];
    for k in 0..cols {
        let x = [load_f32x16(&xc[2 * k]), load_f32x16(&xc[2 * k + 1])];
        for (acc, w) in acc.iter_mut().zip(&wr) {
            let b = _mm512_set1_ps(w[k]);
            acc[0] = _mm512_fmadd_ps(b, x[0], acc[0]);
            acc[1] = _mm512_fmadd_ps(b, x[1], acc[1]);
        }
    }
    let (oc, _) = out[..GEMM_WROWS * GEMM_LANES].as_chunks_mut::<16>();
    for (j, acc) in acc.iter().enumerate() {
        store_f32x16(&mut oc[2 * j], acc[0]);
        store_f32x16(&mut oc[2 * j + 1], acc[1]);
    }
}

/// Twelve weight rows against 32 packed activation rows (see `super::F32Gemm`).
pub(super) fn gemm_f32(xp: &[f32], w: &[f32], cols: usize, out: &mut [f32]) {
    // SAFETY: only called after AVX-512F was detected (see `super::Isa`).
    unsafe { gemm_f32_impl(xp, w, cols, out) }
}

/// The features [`dot_q8_0`] needs beyond [`super::Isa::Avx512`].
pub(super) fn has_vnni() -> bool {
    std::is_x86_feature_detected!("avx512bw")
        && std::is_x86_feature_detected!("avx512vl")
        && std::is_x86_feature_detected!("avx512vnni")
}

#[target_feature(enable = "avx512f")]
#[inline]
fn load_i8x64(b: &[i8; 64]) -> __m512i {
    // SAFETY: `b` is 64 readable bytes; the load has no alignment requirement.
    unsafe { _mm512_loadu_si512(b.as_ptr().cast()) }
}

#[target_feature(enable = "avx2")]
#[inline]
fn load_i8x32(b: &[i8; 32]) -> __m256i {
    // SAFETY: `b` is 32 readable bytes; the load has no alignment requirement.
    unsafe { _mm256_loadu_si256(b.as_ptr().cast()) }
}

#[target_feature(enable = "sse2")]
#[inline]
fn load_f32x4(v: &[f32; 4]) -> __m128 {
    // SAFETY: `v` is 4 readable floats; the load has no alignment requirement.
    unsafe { _mm_loadu_ps(v.as_ptr()) }
}

/// `Σ w·a` over each four adjacent bytes of two signed vectors, added to
/// `acc`: `vpdpbusd` multiplies unsigned by signed, so it takes `|w|` and
/// `a` negated where `w` is negative (`|-128|` reads as unsigned 128).
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
fn dot_i8i8_512(acc: __m512i, w: __m512i, a: __m512i) -> __m512i {
    let neg = _mm512_movepi8_mask(w);
    let a = _mm512_mask_sub_epi8(a, neg, _mm512_setzero_si512(), a);
    _mm512_dpbusd_epi32(acc, _mm512_abs_epi8(w), a)
}

/// [`dot_i8i8_512`] on 32 bytes.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
fn dot_i8i8_256(w: __m256i, a: __m256i) -> __m256i {
    let neg = _mm256_movepi8_mask(w);
    let a = _mm256_mask_sub_epi8(a, neg, _mm256_setzero_si256(), a);
    _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_abs_epi8(w), a)
}

/// The four f16 block scales of `b`, as floats.
#[target_feature(enable = "avx2,f16c")]
#[inline]
fn q8_0_scales(b: &[BlockQ8_0; 4]) -> __m128 {
    let bits = b
        .iter()
        .rev()
        .fold(0u64, |acc, b| (acc << 16) | u64::from(b.d.to_bits()));
    _mm_cvtph_ps(_mm_cvtsi64_si128(bits.cast_signed()))
}

/// Q8_0 weights against quantized activations, four blocks per step: two
/// blocks per 512-bit integer product, their eight partial sums per block
/// scaled by a lane permutation of the four block scales.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn dot_q8_0_impl<const TWO: bool>(blocks: &[BlockQ8_0], act: ActRow<'_>) -> f32 {
    let n = blocks.len();
    let (groups, tail) = blocks.as_chunks::<4>();
    let (aq, _) = act.qs.as_chunks::<64>();
    let (aq2, _) = act.qs2.as_chunks::<64>();
    let (ad, _) = act.d.as_chunks::<4>();
    let pair_lanes = [
        _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0),
        _mm512_set_epi32(3, 3, 3, 3, 3, 3, 3, 3, 2, 2, 2, 2, 2, 2, 2, 2),
    ];
    let mut acc = [_mm512_setzero_ps(); 2];
    for (g, b) in groups.iter().enumerate() {
        let s = _mm_mul_ps(q8_0_scales(b), load_f32x4(&ad[g]));
        let s = _mm512_castps128_ps512(s);
        for (k, (acc, lanes)) in acc.iter_mut().zip(pair_lanes).enumerate() {
            let w = _mm512_inserti64x4::<1>(
                _mm512_castsi256_si512(load_i8x32(&b[2 * k].qs)),
                load_i8x32(&b[2 * k + 1].qs),
            );
            let p = 2 * g + k;
            let mut dot = dot_i8i8_512(_mm512_setzero_si512(), w, load_i8x64(&aq[p]));
            if TWO {
                dot = dot_i8i8_512(_mm512_slli_epi32::<8>(dot), w, load_i8x64(&aq2[p]));
            }
            let scale = _mm512_permutexvar_ps(lanes, s);
            *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), scale, *acc);
        }
    }
    let mut rest = _mm256_setzero_ps();
    let first = n - tail.len();
    let (aq, _) = act.qs.as_chunks::<32>();
    let (aq2, _) = act.qs2.as_chunks::<32>();
    for (i, b) in (first..n).zip(tail) {
        let w = load_i8x32(&b.qs);
        let mut dot = dot_i8i8_256(w, load_i8x32(&aq[i]));
        if TWO {
            dot = _mm256_add_epi32(
                _mm256_slli_epi32::<8>(dot),
                dot_i8i8_256(w, load_i8x32(&aq2[i])),
            );
        }
        let scale = _mm256_set1_ps(b.d.to_f32() * act.d[i]);
        rest = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), scale, rest);
    }
    let rest = _mm512_zextps256_ps512(rest);
    _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), rest))
}

/// Q8_0 weights against one quantized activation row (AVX-512 VNNI); rows
/// that are not 2-byte aligned go to the scalar reference.
pub(super) fn dot_q8_0(row: &[u8], act: ActRow<'_>) -> f32 {
    match bytemuck::try_cast_slice::<u8, BlockQ8_0>(row) {
        // SAFETY: only called after AVX2, FMA, F16C and AVX-512 F/BW/VL/VNNI
        // were detected (see `super::dot_q8_kernel`).
        Ok(blocks) if act.qs2.is_empty() => unsafe { dot_q8_0_impl::<false>(blocks, act) },
        // SAFETY: as above.
        Ok(blocks) => unsafe { dot_q8_0_impl::<true>(blocks, act) },
        Err(_) => crate::dot::reference::q8_0(row, act),
    }
}
