//! AVX-512 kernels, only reachable through [`super::Isa::Avx512`], which
//! is handed out after run-time detection; the integer dot products also
//! need AVX-512 BW, VL and VNNI, checked by [`has_vnni`].
//!
//! The integer kernels multiply four weight rows per step (sharing the
//! activation loads) and prefetch the rows ahead: left to the hardware
//! prefetchers, a matrix-vector product larger than the caches streamed
//! its weights at about 60% of the memory bandwidth.
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

/// The features the integer kernels need beyond [`super::Isa::Avx512`].
pub(super) fn has_vnni() -> bool {
    std::is_x86_feature_detected!("avx512bw")
        && std::is_x86_feature_detected!("avx512vl")
        && std::is_x86_feature_detected!("avx512vnni")
}

/// The 32-value block formats the multi-row kernel reads, as const
/// parameters: each one's size, where its quants start, and how they turn
/// into unsigned bytes.
mod format {
    pub(super) const Q4_0: u8 = 0;
    pub(super) const Q4_1: u8 = 1;
    pub(super) const Q5_0: u8 = 2;
    pub(super) const Q5_1: u8 = 3;
    pub(super) const Q8_0: u8 = 4;
}

/// Bytes per block of format `F`.
const fn block_bytes(f: u8) -> usize {
    match f {
        format::Q4_0 => 18,
        format::Q4_1 => 20,
        format::Q5_0 => 22,
        format::Q5_1 => 24,
        _ => 34,
    }
}

/// The offset the unsigned quants of format `F` carry (`w = q - offset`);
/// Q8_0's signed quants are made unsigned by adding 128.
const fn quant_offset(f: u8) -> i8 {
    match f {
        format::Q4_0 => 8,
        format::Q5_0 => 16,
        format::Q8_0 => -128,
        _ => 0,
    }
}

/// Whether format `F` has an f16 minimum after its scale (`x = d·q + m`).
const fn has_min(f: u8) -> bool {
    matches!(f, format::Q4_1 | format::Q5_1)
}

/// Weight rows per step of the multi-row kernel: they share each activation
/// load and its offset correction.
const KERNEL_ROWS: usize = 4;
/// How far ahead of the rows being multiplied their successors are fetched.
const PREFETCH_BYTES: usize = 4096;

#[target_feature(enable = "avx2")]
#[inline]
fn load_i8x32(b: &[i8; 32]) -> __m256i {
    // SAFETY: `b` is 32 readable bytes; the load has no alignment requirement.
    unsafe { _mm256_loadu_si256(b.as_ptr().cast()) }
}

/// The 32 bytes of `b` from `at` on.
#[target_feature(enable = "avx2")]
#[inline]
fn load_bytes32<const N: usize>(b: &[u8; N], at: usize) -> __m256i {
    assert!(at + 32 <= N);
    // SAFETY: bytes `at..at + 32` of `b` are readable (checked above, at
    // compile time for constant `at`); the load has no alignment requirement.
    unsafe { _mm256_loadu_si256(b.as_ptr().add(at).cast()) }
}

/// The 16 bytes of `b` from `at` on.
#[target_feature(enable = "sse2")]
#[inline]
fn load_bytes16<const N: usize>(b: &[u8; N], at: usize) -> __m128i {
    assert!(at + 16 <= N);
    // SAFETY: bytes `at..at + 16` of `b` are readable (checked above).
    unsafe { _mm_loadu_si128(b.as_ptr().add(at).cast()) }
}

/// The quants of block `b` (and of `next` when present, else zeros) as 64
/// unsigned bytes in element order.
#[target_feature(enable = "avx512f,avx512bw,avx2")]
#[inline]
fn block_quants<const F: u8, const N: usize>(b: &[u8; N], next: Option<&[u8; N]>) -> __m512i {
    if F == format::Q8_0 {
        let lo = load_bytes32(b, 2);
        let w = match next {
            Some(n) => _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), load_bytes32(n, 2)),
            None => _mm512_zextsi256_si512(lo),
        };
        return _mm512_xor_si512(w, _mm512_set1_epi8(-128));
    }
    // Nibbles: element j in the low half of byte j, j + 16 in the high half.
    let qs_at = N - 16;
    let lo = load_bytes16(b, qs_at);
    let pair = match next {
        Some(n) => _mm256_inserti128_si256::<1>(_mm256_castsi128_si256(lo), load_bytes16(n, qs_at)),
        None => _mm256_zextsi128_si256(lo),
    };
    let spread = _mm512_permutexvar_epi64(
        _mm512_set_epi64(3, 2, 3, 2, 1, 0, 1, 0),
        _mm512_castsi256_si512(pair),
    );
    let shifted = _mm512_srlv_epi64(spread, _mm512_set_epi64(4, 4, 0, 0, 4, 4, 0, 0));
    let w = _mm512_and_si512(shifted, _mm512_set1_epi8(0x0F));
    if matches!(F, format::Q5_0 | format::Q5_1) {
        let qh_at = qs_at - 4;
        let high = |b: &[u8; N]| {
            u64::from(u32::from_le_bytes([
                b[qh_at],
                b[qh_at + 1],
                b[qh_at + 2],
                b[qh_at + 3],
            ]))
        };
        let bits = high(b) | next.map_or(0, |n| high(n) << 32);
        return _mm512_mask_add_epi8(w, bits, w, _mm512_set1_epi8(0x10));
    }
    w
}

/// Up to 16 f16 fields at byte `at` of consecutive blocks, as floats, zero
/// past the last block: gathered from the block stride.
#[target_feature(enable = "avx512f,avx512bw,f16c")]
#[inline]
fn gather_f16x16<const N: usize>(blocks: &[[u8; N]], at: usize) -> __m512 {
    assert!(at + 4 <= N);
    let count = blocks.len().min(16);
    let mask = ((1u32 << count) - 1) as __mmask16;
    let offsets = _mm512_mullo_epi32(
        _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
        _mm512_set1_epi32(N as i32),
    );
    // SAFETY: each active lane reads bytes `at..at + 4` of one of the first
    // `count` blocks, all inside `blocks` (`at + 4 <= N` checked above);
    // inactive lanes read nothing.
    let bits = unsafe {
        _mm512_mask_i32gather_epi32::<1>(
            _mm512_setzero_si512(),
            mask,
            offsets,
            blocks.as_ptr().cast::<u8>().add(at).cast(),
        )
    };
    _mm512_cvtph_ps(_mm512_cvtepi32_epi16(bits))
}

/// Up to 16 floats from `v[0]` on, zero past the end.
#[target_feature(enable = "avx512f")]
#[inline]
fn load_f32x16_masked(v: &[f32]) -> __m512 {
    let count = v.len().min(16);
    let mask = ((1u32 << count) - 1) as __mmask16;
    // SAFETY: the mask enables only the first `count` floats, all inside `v`.
    unsafe { _mm512_maskz_loadu_ps(mask, v.as_ptr()) }
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

/// `R` rows of format `F` (blocks of `N` bytes) against one activation row.
/// The quants are taken as unsigned bytes (`q = w + offset`) so that one
/// `vpdpbusd` multiplies them by the signed activations; the `offset·Σa`
/// this adds is the same for every row, so it is computed once per
/// activation load and starts each row's sum. Each row keeps a vector
/// accumulator, scaled per block by a lane permutation of 16 gathered
/// scales, and reduced once at the end.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn dot_rows_impl<const F: u8, const N: usize, const R: usize, const TWO: bool>(
    rows: [&[[u8; N]]; R],
    act: ActRow<'_>,
    out: &mut [f32],
) {
    let nb = act.d.len();
    let (aq, _) = act.qs.as_chunks::<32>();
    let (aq2, _) = act.qs2.as_chunks::<32>();
    let offset = _mm512_set1_epi8(quant_offset(F));
    let zero = _mm512_setzero_si512();
    let neg_corr = |a: __m512i| {
        if quant_offset(F) == 0 {
            zero
        } else {
            _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, offset, a))
        }
    };
    let mut acc = [_mm512_setzero_ps(); R];
    for c0 in (0..nb).step_by(16) {
        let m = (nb - c0).min(16);
        let ad = load_f32x16_masked(&act.d[c0..]);
        let s: [__m512; R] =
            std::array::from_fn(|r| _mm512_mul_ps(gather_f16x16(&rows[r][c0..c0 + m], 0), ad));
        if has_min(F) {
            let sums = load_f32x16_masked(&act.dsum[c0..]);
            for (acc, row) in acc.iter_mut().zip(rows) {
                *acc = _mm512_fmadd_ps(gather_f16x16(&row[c0..c0 + m], 2), sums, *acc);
            }
        }
        let mut lanes = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
        for j in (0..m).step_by(2) {
            let b = c0 + j;
            let pair = j + 1 < m;
            let a = load_act_pair(aq, b, pair);
            let corr = neg_corr(a);
            let (a2, corr2) = if TWO {
                let a2 = load_act_pair(aq2, b, pair);
                (a2, neg_corr(a2))
            } else {
                (zero, zero)
            };
            for r in 0..R {
                let ahead = rows[r].as_ptr().wrapping_byte_add(PREFETCH_BYTES + b * N);
                // A hint only: it never faults, whatever the address.
                _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
                if 2 * N > 64 {
                    // A pair of Q8_0 blocks is longer than a cache line.
                    _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_byte_add(64).cast());
                }
                let next = if pair { Some(&rows[r][b + 1]) } else { None };
                let w = block_quants::<F, N>(&rows[r][b], next);
                let mut dot = _mm512_dpbusd_epi32(corr, w, a);
                if TWO {
                    dot = _mm512_dpbusd_epi32(_mm512_slli_epi32::<8>(dot), w, a2);
                    dot = _mm512_add_epi32(dot, corr2);
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

fn run_rows<const F: u8, const N: usize, const R: usize>(
    rows: [&[[u8; N]]; R],
    act: ActRow<'_>,
    out: &mut [f32],
) {
    if act.qs2.is_empty() {
        // SAFETY: only called after AVX2, FMA, F16C and AVX-512 F/BW/VL/VNNI
        // were detected (see `super::dot_q8_rows_kernel`).
        unsafe { dot_rows_impl::<F, N, R, false>(rows, act, out) }
    } else {
        // SAFETY: as above.
        unsafe { dot_rows_impl::<F, N, R, true>(rows, act, out) }
    }
}

/// Consecutive rows of format `F` (`out.len()` of `row_bytes` each, in
/// `data`) against one quantized activation row, four rows a step.
fn dot_rows<const F: u8, const N: usize>(
    data: &[u8],
    row_bytes: usize,
    act: ActRow<'_>,
    out: &mut [f32],
) {
    let (blocks, _) = data.as_chunks::<N>();
    let mut rows = blocks.chunks_exact((row_bytes / N).max(1));
    for ys in out.chunks_mut(KERNEL_ROWS) {
        if ys.len() == KERNEL_ROWS {
            let group: [&[[u8; N]]; KERNEL_ROWS] =
                std::array::from_fn(|_| rows.next().unwrap_or(&[]));
            run_rows::<F, N, KERNEL_ROWS>(group, act, ys);
        } else {
            for y in ys.chunks_mut(1) {
                run_rows::<F, N, 1>([rows.next().unwrap_or(&[])], act, y);
            }
        }
    }
}

/// One row through [`dot_rows`]' one-row case, so both give the same result.
fn dot_row<const F: u8, const N: usize>(row: &[u8], act: ActRow<'_>) -> f32 {
    let (blocks, _) = row.as_chunks::<N>();
    let mut out = [0.0];
    run_rows::<F, N, 1>([blocks], act, &mut out);
    out[0]
}

macro_rules! vnni_kernels {
    ($($format:ident, $row:ident, $rows:ident;)*) => {$(
        #[doc = concat!(stringify!($format), " weights against one quantized activation row (AVX-512 VNNI).")]
        pub(super) fn $row(row: &[u8], act: ActRow<'_>) -> f32 {
            dot_row::<{ format::$format }, { block_bytes(format::$format) }>(row, act)
        }

        #[doc = concat!("Consecutive ", stringify!($format), " rows against one quantized activation row (AVX-512 VNNI), four rows a step.")]
        pub(super) fn $rows(data: &[u8], row_bytes: usize, act: ActRow<'_>, out: &mut [f32]) {
            dot_rows::<{ format::$format }, { block_bytes(format::$format) }>(data, row_bytes, act, out);
        }
    )*};
}

vnni_kernels! {
    Q4_0, dot_q4_0, dot_q4_0_rows;
    Q4_1, dot_q4_1, dot_q4_1_rows;
    Q5_0, dot_q5_0, dot_q5_0_rows;
    Q5_1, dot_q5_1, dot_q5_1_rows;
    Q8_0, dot_q8_0, dot_q8_0_rows;
}

/// Bytes of a Q4_K super-block: `d`, `dmin`, 12 bytes of packed 6-bit
/// scales and minimums, 128 bytes of nibbles.
const Q4_K_BYTES: usize = 144;
/// Bytes of a Q6_K super-block: 128 bytes of low nibbles, 64 of high
/// crumbs, 16 signed scales, `d`.
const Q6_K_BYTES: usize = 210;

/// An f16 field at byte `at` of `b`, as a float.
#[target_feature(enable = "f16c")]
#[inline]
fn f16_at<const N: usize>(b: &[u8; N], at: usize) -> f32 {
    let bits = u16::from_le_bytes([b[at], b[at + 1]]);
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits))))
}

/// The 64 bytes of `b` from `at` on.
#[target_feature(enable = "avx512f")]
#[inline]
fn load_bytes64<const N: usize>(b: &[u8; N], at: usize) -> __m512i {
    assert!(at + 64 <= N);
    // SAFETY: bytes `at..at + 64` of `b` are readable (checked above).
    unsafe { _mm512_loadu_si512(b.as_ptr().add(at).cast()) }
}

/// The 64 activation quants from `at` on.
#[target_feature(enable = "avx512f")]
#[inline]
fn load_act64(q: &[i8], at: usize) -> __m512i {
    let q: &[i8; 64] = q[at..at + 64].try_into().unwrap_or(&[0; 64]);
    // SAFETY: `q` is 64 readable bytes; the load has no alignment requirement.
    unsafe { _mm512_loadu_si512(q.as_ptr().cast()) }
}

/// The eight 6-bit scales (low 8 bytes) and minimums (high 8 bytes) of a
/// Q4_K/Q5_K super-block from their 12 packed bytes, four at a time.
fn k4_scales_mins(packed: &[u8]) -> [u8; 16] {
    let word =
        |i: usize| u32::from_le_bytes([packed[i], packed[i + 1], packed[i + 2], packed[i + 3]]);
    let (a, b, c) = (word(0), word(4), word(8));
    let sc_lo = a & 0x3F3F_3F3F;
    let m_lo = b & 0x3F3F_3F3F;
    let sc_hi = (c & 0x0F0F_0F0F) | ((a >> 2) & 0x3030_3030);
    let m_hi = ((c >> 4) & 0x0F0F_0F0F) | ((b >> 2) & 0x3030_3030);
    let mut out = [0u8; 16];
    for (chunk, v) in out.chunks_exact_mut(4).zip([sc_lo, sc_hi, m_lo, m_hi]) {
        chunk.copy_from_slice(&v.to_le_bytes());
    }
    out
}

/// `R` rows of Q4_K (`K6 = false`) or Q6_K (`K6 = true`) super-blocks of
/// `N` bytes against one activation row, 64 values per integer product.
/// Q4_K's minimums enter through the activation block sums; Q6_K's offset
/// of 32 through a shared `32·Σa` as in [`dot_rows_impl`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn dot_k_rows_impl<const K6: bool, const N: usize, const R: usize, const TWO: bool>(
    rows: [&[[u8; N]]; R],
    act: ActRow<'_>,
    out: &mut [f32],
) {
    let supers = act.d.len() / 8;
    let zero = _mm512_setzero_si512();
    let offset = _mm512_set1_epi8(32);
    let nibble = _mm512_set1_epi8(0x0F);
    let neg_corr = |a: __m512i| {
        if K6 {
            _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, offset, a))
        } else {
            zero
        }
    };
    let mut acc = [_mm512_setzero_ps(); R];
    for sb in 0..supers {
        let ad = load_f32x16_masked(&act.d[8 * sb..8 * sb + 8]);
        // Lane `i` of each row's scale vector scales the products of its
        // `i`-th group: 32 values for Q4_K, 16 for Q6_K.
        let s: [__m512; R] = std::array::from_fn(|r| {
            let b = &rows[r][sb];
            if K6 {
                let sc: &[u8; 16] = b[192..208].try_into().unwrap_or(&[0; 16]);
                let sc = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(load_bytes16(sc, 0)));
                let ad16 = _mm512_permutexvar_ps(
                    _mm512_set_epi32(7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0),
                    ad,
                );
                _mm512_mul_ps(_mm512_mul_ps(sc, ad16), _mm512_set1_ps(f16_at(b, 208)))
            } else {
                let sm = k4_scales_mins(&b[4..16]);
                let v = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(load_bytes16(&sm, 0)));
                let sc = _mm512_mul_ps(v, _mm512_set1_ps(f16_at(b, 0)));
                let mins = _mm512_mul_ps(
                    _mm512_shuffle_f32x4::<0b01_00_11_10>(v, v),
                    _mm512_set1_ps(-f16_at(b, 2)),
                );
                let sums = load_f32x16_masked(&act.dsum[8 * sb..8 * sb + 8]);
                acc[r] = _mm512_fmadd_ps(mins, sums, acc[r]);
                _mm512_mul_ps(sc, ad)
            }
        });
        for z in 0..4 {
            let at = 256 * sb + 64 * z;
            let a = load_act64(act.qs, at);
            let corr = neg_corr(a);
            let (a2, corr2) = if TWO {
                let a2 = load_act64(act.qs2, at);
                (a2, neg_corr(a2))
            } else {
                (zero, zero)
            };
            let lanes = if K6 {
                let k = 4 * z as i32;
                _mm512_set_epi32(
                    k + 3,
                    k + 3,
                    k + 3,
                    k + 3,
                    k + 2,
                    k + 2,
                    k + 2,
                    k + 2,
                    k + 1,
                    k + 1,
                    k + 1,
                    k + 1,
                    k,
                    k,
                    k,
                    k,
                )
            } else {
                let k = 2 * z as i32;
                _mm512_set_epi32(
                    k + 1,
                    k + 1,
                    k + 1,
                    k + 1,
                    k + 1,
                    k + 1,
                    k + 1,
                    k + 1,
                    k,
                    k,
                    k,
                    k,
                    k,
                    k,
                    k,
                    k,
                )
            };
            for r in 0..R {
                let b = &rows[r][sb];
                let ahead = rows[r]
                    .as_ptr()
                    .wrapping_byte_add(PREFETCH_BYTES + sb * N + 64 * z);
                // A hint only: it never faults, whatever the address.
                _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
                let w = if K6 {
                    // Half `z / 2`: nibbles of 64 low bytes, crumbs of 32 high bytes.
                    let low = load_bytes64(b, 64 * (z / 2));
                    let qh = load_bytes32(b, 128 + 32 * (z / 2));
                    let high = _mm512_inserti64x4::<1>(
                        _mm512_castsi256_si512(qh),
                        _mm256_srli_epi16::<2>(qh),
                    );
                    let (low, high) = if z % 2 == 0 {
                        (low, high)
                    } else {
                        (_mm512_srli_epi16::<4>(low), _mm512_srli_epi16::<4>(high))
                    };
                    let high = _mm512_and_si512(high, _mm512_set1_epi8(3));
                    _mm512_or_si512(_mm512_and_si512(low, nibble), _mm512_slli_epi16::<4>(high))
                } else {
                    let q = load_bytes32(b, 16 + 32 * z);
                    let both = _mm512_inserti64x4::<1>(
                        _mm512_castsi256_si512(q),
                        _mm256_srli_epi16::<4>(q),
                    );
                    _mm512_and_si512(both, nibble)
                };
                let mut dot = _mm512_dpbusd_epi32(corr, w, a);
                if TWO {
                    dot = _mm512_dpbusd_epi32(_mm512_slli_epi32::<8>(dot), w, a2);
                    dot = _mm512_add_epi32(dot, corr2);
                }
                let scale = _mm512_permutexvar_ps(lanes, s[r]);
                acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), scale, acc[r]);
            }
        }
    }
    for (y, acc) in out.iter_mut().zip(acc) {
        *y = _mm512_reduce_add_ps(acc);
    }
}

fn run_k_rows<const K6: bool, const N: usize, const R: usize>(
    rows: [&[[u8; N]]; R],
    act: ActRow<'_>,
    out: &mut [f32],
) {
    if act.qs2.is_empty() {
        // SAFETY: only called after AVX2, FMA, F16C and AVX-512 F/BW/VL/VNNI
        // were detected (see `super::dot_q8_rows_kernel`).
        unsafe { dot_k_rows_impl::<K6, N, R, false>(rows, act, out) }
    } else {
        // SAFETY: as above.
        unsafe { dot_k_rows_impl::<K6, N, R, true>(rows, act, out) }
    }
}

fn dot_k_rows<const K6: bool, const N: usize>(
    data: &[u8],
    row_bytes: usize,
    act: ActRow<'_>,
    out: &mut [f32],
) {
    let (blocks, _) = data.as_chunks::<N>();
    let mut rows = blocks.chunks_exact((row_bytes / N).max(1));
    for ys in out.chunks_mut(KERNEL_ROWS) {
        if ys.len() == KERNEL_ROWS {
            let group: [&[[u8; N]]; KERNEL_ROWS] =
                std::array::from_fn(|_| rows.next().unwrap_or(&[]));
            run_k_rows::<K6, N, KERNEL_ROWS>(group, act, ys);
        } else {
            for y in ys.chunks_mut(1) {
                run_k_rows::<K6, N, 1>([rows.next().unwrap_or(&[])], act, y);
            }
        }
    }
}

/// Q4_K weights against one quantized activation row (AVX-512 VNNI).
pub(super) fn dot_q4_k(row: &[u8], act: ActRow<'_>) -> f32 {
    let (blocks, _) = row.as_chunks::<Q4_K_BYTES>();
    let mut out = [0.0];
    run_k_rows::<false, Q4_K_BYTES, 1>([blocks], act, &mut out);
    out[0]
}

/// Consecutive Q4_K rows against one quantized activation row (AVX-512 VNNI).
pub(super) fn dot_q4_k_rows(data: &[u8], row_bytes: usize, act: ActRow<'_>, out: &mut [f32]) {
    dot_k_rows::<false, Q4_K_BYTES>(data, row_bytes, act, out);
}

/// Q6_K weights against one quantized activation row (AVX-512 VNNI).
pub(super) fn dot_q6_k(row: &[u8], act: ActRow<'_>) -> f32 {
    let (blocks, _) = row.as_chunks::<Q6_K_BYTES>();
    let mut out = [0.0];
    run_k_rows::<true, Q6_K_BYTES, 1>([blocks], act, &mut out);
    out[0]
}

/// Consecutive Q6_K rows against one quantized activation row (AVX-512 VNNI).
pub(super) fn dot_q6_k_rows(data: &[u8], row_bytes: usize, act: ActRow<'_>, out: &mut [f32]) {
    dot_k_rows::<true, Q6_K_BYTES>(data, row_bytes, act, out);
}
