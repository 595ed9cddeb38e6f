//! AVX-512F kernels, only reachable through [`super::Isa::Avx512`], which
//! is handed out after run-time detection.
#![allow(clippy::wildcard_imports)]

use std::arch::x86_64::*;

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
