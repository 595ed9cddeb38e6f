//! AVX-512 kernels, only reachable through [`super::Isa::Avx512`], which
//! is handed out after run-time detection; the integer dot products also
//! need AVX-512 BW, VL and VNNI, checked by [`has_vnni`].
#![allow(clippy::wildcard_imports)]

use std::arch::x86_64::*;

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

/// The features [`dot_q8_0`] and [`dot_q8_0_rows`] need beyond [`super::Isa::Avx512`].
pub(super) fn has_vnni() -> bool {
    std::is_x86_feature_detected!("avx512bw")
        && std::is_x86_feature_detected!("avx512vl")
        && std::is_x86_feature_detected!("avx512vnni")
}

#[target_feature(enable = "avx2")]
#[inline]
fn load_i8x32(b: &[i8; 32]) -> __m256i {
    // SAFETY: `b` is 32 readable bytes; the load has no alignment requirement.
    unsafe { _mm256_loadu_si256(b.as_ptr().cast()) }
}

/// Bytes of a Q8_0 block: an f16 scale, then 32 quants.
const Q8_0_BYTES: usize = 34;
/// Weight rows per step of [`dot_q8_0_rows`]: they share each activation
/// load and its offset correction.
const Q8_0_ROWS: usize = 4;
/// How far ahead of the rows being multiplied their successors are fetched.
const PREFETCH_BYTES: usize = 2048;

/// The 32 quants of a Q8_0 block.
#[target_feature(enable = "avx2")]
#[inline]
fn q8_0_quants(b: &[u8; Q8_0_BYTES]) -> __m256i {
    // SAFETY: bytes 2..34 of `b` are readable; the load has no alignment requirement.
    unsafe { _mm256_loadu_si256(b.as_ptr().add(2).cast()) }
}

/// The scales of up to 16 consecutive Q8_0 blocks as floats, zero past
/// the last block, gathered from the 34-byte stride.
#[target_feature(enable = "avx512f,avx512bw,f16c")]
#[inline]
fn q8_0_scales16(blocks: &[[u8; Q8_0_BYTES]]) -> __m512 {
    let count = blocks.len().min(16);
    let mask = ((1u32 << count) - 1) as __mmask16;
    let stride = Q8_0_BYTES as i32;
    let offsets = _mm512_mullo_epi32(
        _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
        _mm512_set1_epi32(stride),
    );
    // SAFETY: each active lane reads the first 4 bytes of one of the first
    // `count` blocks, all inside `blocks`; inactive lanes read nothing.
    let bits = unsafe {
        _mm512_mask_i32gather_epi32::<1>(
            _mm512_setzero_si512(),
            mask,
            offsets,
            blocks.as_ptr().cast(),
        )
    };
    _mm512_cvtph_ps(_mm512_cvtepi32_epi16(bits))
}

/// Up to 16 activation block scales starting at `d[0]`, zero past the end.
#[target_feature(enable = "avx512f")]
#[inline]
fn act_scales16(d: &[f32]) -> __m512 {
    let count = d.len().min(16);
    let mask = ((1u32 << count) - 1) as __mmask16;
    // SAFETY: the mask enables only the first `count` floats, all inside `d`.
    unsafe { _mm512_maskz_loadu_ps(mask, d.as_ptr()) }
}

/// Activation blocks `b` and `b + 1` (or `b` and zeros when `!pair`).
#[target_feature(enable = "avx512f,avx2")]
#[inline]
fn load_act_pair(q: &[[i8; 32]], b: usize, pair: bool) -> __m512i {
    let lo = load_i8x32(&q[b]);
    if pair {
        _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), load_i8x32(&q[b + 1]))
    } else {
        _mm512_zextsi256_si512(lo)
    }
}

/// `R` Q8_0 rows against one activation row. The weights are made
/// unsigned (`w + 128`) so that one `vpdpbusd` multiplies them by the signed
/// activations; the `128·Σa` this adds is the same for every row and is
/// taken off once per activation load. Each row keeps a vector accumulator
/// that is reduced once at the end.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn dot_q8_0_rows_impl<const R: usize, const TWO: bool>(
    rows: [&[[u8; Q8_0_BYTES]]; R],
    act: ActRow<'_>,
    out: &mut [f32],
) {
    let nb = act.d.len();
    let (aq, _) = act.qs.as_chunks::<32>();
    let (aq2, _) = act.qs2.as_chunks::<32>();
    let bias = _mm512_set1_epi8(-128);
    let zero = _mm512_setzero_si512();
    let mut acc = [_mm512_setzero_ps(); R];
    for c0 in (0..nb).step_by(16) {
        let m = (nb - c0).min(16);
        let ad = act_scales16(&act.d[c0..]);
        let s: [__m512; R] =
            std::array::from_fn(|r| _mm512_mul_ps(q8_0_scales16(&rows[r][c0..c0 + m]), ad));
        let mut lanes = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
        for j in (0..m).step_by(2) {
            let b = c0 + j;
            let pair = j + 1 < m;
            let a = load_act_pair(aq, b, pair);
            let a2 = if TWO {
                load_act_pair(aq2, b, pair)
            } else {
                zero
            };
            let neg_corr = _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, bias, a));
            let neg_corr2 = if TWO {
                _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, bias, a2))
            } else {
                zero
            };
            for r in 0..R {
                let ahead = rows[r]
                    .as_ptr()
                    .wrapping_byte_add(PREFETCH_BYTES + b * Q8_0_BYTES);
                // A hint only: it never faults, whatever the address.
                _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
                let lo = q8_0_quants(&rows[r][b]);
                let w = if pair {
                    _mm512_inserti64x4::<1>(
                        _mm512_castsi256_si512(lo),
                        q8_0_quants(&rows[r][b + 1]),
                    )
                } else {
                    _mm512_zextsi256_si512(lo)
                };
                let w = _mm512_xor_si512(w, bias);
                let mut dot = _mm512_dpbusd_epi32(neg_corr, w, a);
                if TWO {
                    dot = _mm512_dpbusd_epi32(_mm512_slli_epi32::<8>(dot), w, a2);
                    dot = _mm512_add_epi32(dot, neg_corr2);
                }
                let scale = _mm512_permutexvar_ps(lanes, s[r]);
                acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), scale, acc[r]);
            }
            lanes = _mm512_add_epi32(lanes, _mm512_set1_epi32(2));
        }
    }
    for (y, acc) in out.iter_mut().zip(acc) {
        *y = _mm512_reduce_add_ps(acc);
    }
}

/// Q8_0 weights against one quantized activation row (AVX-512 VNNI): the
/// one-row case of [`dot_q8_0_rows`], so both give the same result.
pub(super) fn dot_q8_0(row: &[u8], act: ActRow<'_>) -> f32 {
    let (blocks, _) = row.as_chunks::<Q8_0_BYTES>();
    let mut out = [0.0];
    run_q8_0_rows([blocks], act, &mut out);
    out[0]
}

/// Consecutive Q8_0 rows (`out.len()` of `row_bytes` each, in `data`)
/// against one quantized activation row (AVX-512 VNNI), four rows a step.
pub(super) fn dot_q8_0_rows(data: &[u8], row_bytes: usize, act: ActRow<'_>, out: &mut [f32]) {
    let nb = row_bytes / Q8_0_BYTES;
    let (blocks, _) = data.as_chunks::<Q8_0_BYTES>();
    let mut rows = blocks.chunks_exact(nb.max(1));
    let groups = out.chunks_mut(Q8_0_ROWS);
    for ys in groups {
        if ys.len() == Q8_0_ROWS {
            let four: [&[[u8; Q8_0_BYTES]]; Q8_0_ROWS] =
                std::array::from_fn(|_| rows.next().unwrap_or(&[]));
            run_q8_0_rows(four, act, ys);
        } else {
            for y in ys.chunks_mut(1) {
                run_q8_0_rows([rows.next().unwrap_or(&[])], act, y);
            }
        }
    }
}

fn run_q8_0_rows<const R: usize>(rows: [&[[u8; Q8_0_BYTES]]; R], act: ActRow<'_>, out: &mut [f32]) {
    if act.qs2.is_empty() {
        // SAFETY: only called after AVX2, FMA, F16C and AVX-512 F/BW/VL/VNNI
        // were detected (see `super::dot_q8_rows_kernel`).
        unsafe { dot_q8_0_rows_impl::<R, false>(rows, act, out) }
    } else {
        // SAFETY: as above.
        unsafe { dot_q8_0_rows_impl::<R, true>(rows, act, out) }
    }
}
