//! AVX-512F kernels, only reachable through [`super::Isa::Avx512`], which
//! is handed out after run-time detection.
#![allow(clippy::wildcard_imports)]

use std::arch::x86_64::*;

/// Activation rows per tile.
const X: usize = 4;
/// Weight rows per tile.
const W: usize = 6;

#[target_feature(enable = "avx512f")]
#[inline]
fn load_f32x16(v: &[f32; 16]) -> __m512 {
    // SAFETY: `v` is 16 readable floats; the load has no alignment requirement.
    unsafe { _mm512_loadu_ps(v.as_ptr()) }
}

#[target_feature(enable = "avx512f")]
fn dots_f32_tile_impl(x: [&[f32]; X], w: [&[f32]; W]) -> [[f32; W]; X] {
    let len = x.iter().chain(&w).map(|s| s.len()).min().unwrap_or(0);
    let xc = x.map(|x| x[..len].as_chunks::<16>().0);
    let wc = w.map(|w| w[..len].as_chunks::<16>().0);
    let mut acc = [[_mm512_setzero_ps(); W]; X];
    for k in 0..len / 16 {
        let wv: [__m512; W] = std::array::from_fn(|j| load_f32x16(&wc[j][k]));
        for (acc, x) in acc.iter_mut().zip(&xc) {
            let xv = load_f32x16(&x[k]);
            for (a, w) in acc.iter_mut().zip(&wv) {
                *a = _mm512_fmadd_ps(xv, *w, *a);
            }
        }
    }
    let tail = len / 16 * 16;
    let mut out = [[0.0f32; W]; X];
    for (i, row) in out.iter_mut().enumerate() {
        for (j, o) in row.iter_mut().enumerate() {
            let rest: f32 = x[i][tail..len]
                .iter()
                .zip(&w[j][tail..len])
                .map(|(a, b)| a * b)
                .sum();
            *o = _mm512_reduce_add_ps(acc[i][j]) + rest;
        }
    }
    out
}

/// Four activation rows against six weight rows, all in f32.
pub(super) fn dots_f32_tile(x: [&[f32]; X], w: [&[f32]; W]) -> [[f32; W]; X] {
    // SAFETY: only called after AVX-512F was detected (see `super::Isa`).
    unsafe { dots_f32_tile_impl(x, w) }
}
