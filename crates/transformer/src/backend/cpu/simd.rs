//! AVX2/FMA versions of the attention inner loops, chosen at run time, with the plain
//! versions of [`super::ops`] as their reference.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::{
    __m256, _mm_add_ps, _mm_add_ss, _mm_cvtss_f32, _mm_movehdup_ps, _mm_movehl_ps, _mm256_add_ps,
    _mm256_castps256_ps128, _mm256_extractf128_ps, _mm256_fmadd_ps, _mm256_loadu_ps,
    _mm256_set1_ps, _mm256_setzero_ps, _mm256_storeu_ps,
};

use super::ops;

fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Appends `scale · (q · k)` for each row `k` of `keys` (rows of `q.len()` values).
pub fn scores(q: &[f32], keys: &[f32], scale: f32, out: &mut Vec<f32>) {
    let hd = q.len();
    if hd == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        for k in keys.chunks_exact(hd) {
            // SAFETY: the CPU has AVX2 and FMA (checked above); `q` and `k` have `hd` values.
            out.push(unsafe { dot_avx2(q, k) } * scale);
        }
        return;
    }
    out.extend(keys.chunks_exact(hd).map(|k| ops::dot(q, k) * scale));
}

/// `o += Σ_t w[t] · values[t]` over rows of `o.len()` values.
pub fn weighted_sum(w: &[f32], values: &[f32], o: &mut [f32]) {
    let hd = o.len();
    if hd == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() && hd.is_multiple_of(32) && values.len() >= w.len() * hd {
        // SAFETY: the CPU has AVX2 and FMA (checked above); `values` holds `w.len()` rows of
        // `hd` values and `hd` is a multiple of 32.
        unsafe { weighted_sum_avx2(w, values, o) };
        return;
    }
    for (&w, v) in w.iter().zip(values.chunks_exact(hd)) {
        ops::axpy(w, v, o);
    }
}

/// Keeps 32 outputs in registers while walking every value row, 32 columns at a time.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn weighted_sum_avx2(w: &[f32], values: &[f32], o: &mut [f32]) {
    let hd = o.len();
    let pv = values.as_ptr();
    let po = o.as_mut_ptr();
    for c in (0..hd).step_by(32) {
        // SAFETY: `c + 32 <= hd` (hd is a multiple of 32), so every access stays in its row.
        unsafe {
            let mut acc = [
                _mm256_loadu_ps(po.add(c)),
                _mm256_loadu_ps(po.add(c + 8)),
                _mm256_loadu_ps(po.add(c + 16)),
                _mm256_loadu_ps(po.add(c + 24)),
            ];
            for (t, &wt) in w.iter().enumerate() {
                let row = pv.add(t * hd + c);
                let vw = _mm256_set1_ps(wt);
                for (j, a) in acc.iter_mut().enumerate() {
                    *a = _mm256_fmadd_ps(vw, _mm256_loadu_ps(row.add(8 * j)), *a);
                }
            }
            for (j, a) in acc.iter().enumerate() {
                _mm256_storeu_ps(po.add(c + 8 * j), *a);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn hsum(v: __m256) -> f32 {
    let lo = _mm256_castps256_ps128(v);
    let hi = _mm256_extractf128_ps::<1>(v);
    let s = _mm_add_ps(lo, hi);
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len();
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    // SAFETY (all loads): `i + 32 <= n` or `i + 8 <= n` bounds each load inside both slices.
    while i + 32 <= n {
        for (j, acc) in acc.iter_mut().enumerate() {
            let (x, y) = unsafe {
                (
                    _mm256_loadu_ps(pa.add(i + 8 * j)),
                    _mm256_loadu_ps(pb.add(i + 8 * j)),
                )
            };
            *acc = _mm256_fmadd_ps(x, y, *acc);
        }
        i += 32;
    }
    while i + 8 <= n {
        let (x, y) = unsafe { (_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i))) };
        acc[0] = _mm256_fmadd_ps(x, y, acc[0]);
        i += 8;
    }
    let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let mut total = hsum(sum);
    for k in i..n {
        total += a[k] * b[k];
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: f32) -> Vec<f32> {
        (0..n)
            .map(|i| ((i as f32 + seed) * 0.618).sin() * 3.0)
            .collect()
    }

    #[test]
    fn block_kernels_match_reference() {
        for hd in [32, 64, 96, 256] {
            let q = values(hd, 0.25);
            let rows = 13;
            let keys = values(rows * hd, 7.0);
            let mut fast = Vec::new();
            scores(&q, &keys, 0.125, &mut fast);
            let slow: Vec<f32> = keys
                .chunks_exact(hd)
                .map(|k| ops::dot(&q, k) * 0.125)
                .collect();
            for (f, s) in fast.iter().zip(&slow) {
                assert!((f - s).abs() <= 1e-4 * (1.0 + s.abs()), "hd={hd}");
            }
            let w = values(rows, 3.0);
            let (mut fast, mut slow) = (values(hd, 9.0), values(hd, 9.0));
            weighted_sum(&w, &keys, &mut fast);
            for (&wt, v) in w.iter().zip(keys.chunks_exact(hd)) {
                ops::axpy(wt, v, &mut slow);
            }
            for (f, s) in fast.iter().zip(&slow) {
                assert!((f - s).abs() <= 1e-4 * (1.0 + s.abs()), "hd={hd}");
            }
        }
    }
}
