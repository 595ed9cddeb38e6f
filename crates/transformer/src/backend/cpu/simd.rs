//! AVX2/FMA versions of the attention inner loops and of the gated
//! activations, chosen at run time, with the plain versions of
//! [`super::ops`] as their reference.

#[cfg(target_arch = "x86_64")]
#[allow(clippy::wildcard_imports)]
use std::arch::x86_64::*;

use super::ops;
use crate::backend::Glu;

/// `gate[i] = f(gate[i]) · up[i]` for the gate activation `f` of `act`
/// ([`ops::silu`] or [`ops::gelu_tanh`]), eight values at a time where the
/// CPU has AVX2 and FMA. The vector form computes both as `x / (1 + e^(-z))`
/// (with `z = x`, or `z = 2√(2/π)(x + 0.044715x³)`, since
/// `1 + tanh(z/2) = 2 / (1 + e^(-z))`), with an exponential accurate to
/// about 2 ulp: within a few ulp of the exact function, as the scalar
/// versions are.
pub fn glu(gate: &mut [f32], up: &[f32], act: Glu) {
    let n = gate.len().min(up.len());
    let (gate, up) = (&mut gate[..n], &up[..n]);
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA (checked above).
        done = unsafe { glu_avx2(gate, up, act) };
    }
    let f = match act {
        Glu::Silu => ops::silu,
        Glu::GeluTanh => ops::gelu_tanh,
    };
    for (g, u) in gate[done..].iter_mut().zip(&up[done..]) {
        *g = f(*g) * u;
    }
}

/// Replaces `scores` by their softmax, `e^(s - max) / Σ e^(s - max)`, the
/// exponentials eight at a time where the CPU has AVX2 and FMA.
pub fn softmax(scores: &mut [f32]) {
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut done = 0;
    let mut sum = 0.0f32;
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA (checked above).
        (done, sum) = unsafe { exp_shifted_avx2(scores, max) };
    }
    for s in &mut scores[done..] {
        *s = (*s - max).exp();
        sum += *s;
    }
    let inv = 1.0 / sum;
    for s in scores.iter_mut() {
        *s *= inv;
    }
}

/// `s = e^(s - max)` over whole vectors of `scores`; returns how many values
/// it did and their sum.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn exp_shifted_avx2(scores: &mut [f32], max: f32) -> (usize, f32) {
    let (chunks, _) = scores.as_chunks_mut::<8>();
    let m = _mm256_set1_ps(max);
    let mut acc = _mm256_setzero_ps();
    for c in chunks.iter_mut() {
        // SAFETY: `c` is 8 floats; the accesses have no alignment requirement.
        let e = exp_avx2(_mm256_sub_ps(unsafe { _mm256_loadu_ps(c.as_ptr()) }, m));
        acc = _mm256_add_ps(acc, e);
        // SAFETY: as above.
        unsafe { _mm256_storeu_ps(c.as_mut_ptr(), e) };
    }
    (8 * chunks.len(), hsum(acc))
}

/// `e^v` for `v` up to 88, zero below -87 (far below what the callers can
/// tell from zero): `2^n · p(r)` with `v = n ln 2 + r`,
/// `|r| ≤ ln 2 / 2`, `ln 2` split in two for an exact reduction, and a
/// degree-6 polynomial for `e^r`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn exp_avx2(v: __m256) -> __m256 {
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Below -87 the result is (flushed to) zero.
    let vanishes = _mm256_cmp_ps::<_CMP_LT_OQ>(v, _mm256_set1_ps(-87.0));
    let v = _mm256_min_ps(
        _mm256_max_ps(v, _mm256_set1_ps(-87.0)),
        _mm256_set1_ps(88.0),
    );
    let n = _mm256_round_ps::<0x08>(_mm256_mul_ps(v, _mm256_set1_ps(std::f32::consts::LOG2_E)));
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), v);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
    // Taylor coefficients 1/k! for k = 6 down to 0.
    let mut p = _mm256_set1_ps(1.0 / 720.0);
    for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
    }
    let bits = _mm256_slli_epi32::<23>(_mm256_add_epi32(
        _mm256_cvtps_epi32(n),
        _mm256_set1_epi32(127),
    ));
    _mm256_andnot_ps(vanishes, _mm256_mul_ps(p, _mm256_castsi256_ps(bits)))
}

/// [`glu`]'s vector part; returns how many values it did (a multiple of 8).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn glu_avx2(gate: &mut [f32], up: &[f32], act: Glu) -> usize {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    let (gc, _) = gate.as_chunks_mut::<8>();
    let (uc, _) = up.as_chunks::<8>();
    let one = _mm256_set1_ps(1.0);
    for (g, u) in gc.iter_mut().zip(uc) {
        // SAFETY: `g` and `u` are 8 floats each; the accesses have no alignment requirement.
        let (x, u_v) = unsafe { (_mm256_loadu_ps(g.as_ptr()), _mm256_loadu_ps(u.as_ptr())) };
        let minus_z = match act {
            Glu::Silu => _mm256_sub_ps(_mm256_setzero_ps(), x),
            Glu::GeluTanh => {
                let x2 = _mm256_mul_ps(x, x);
                let inner = _mm256_fmadd_ps(_mm256_set1_ps(0.044_715), x2, one);
                _mm256_mul_ps(
                    _mm256_mul_ps(_mm256_set1_ps(-2.0 * SQRT_2_OVER_PI), x),
                    inner,
                )
            }
        };
        let f = _mm256_div_ps(x, _mm256_add_ps(one, exp_avx2(minus_z)));
        // SAFETY: as above.
        unsafe { _mm256_storeu_ps(g.as_mut_ptr(), _mm256_mul_ps(f, u_v)) };
    }
    8 * gc.len().min(uc.len())
}

/// Whether the vector versions may run: the CPU has AVX2 and FMA, and the kernel set
/// was not forced down to scalar (see [`ferrolm_quant::KERNELS_ENV`]).
fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && ferrolm_quant::kernel_set() != "scalar"
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

/// The dot product [`scores`] takes: AVX2 where the CPU has it, else [`ops::dot`].
fn dot(q: &[f32], k: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA (checked above); `q` and `k` have equal lengths.
        return unsafe { dot_avx2(q, k) };
    }
    ops::dot(q, k)
}

/// [`scores`] for `G` queries (1 to 4) against the same keys, each key row read once for
/// all of them: `outs[g][t] = scale · (qs[g] · keys[t])`, bit for bit what [`scores`]
/// gives each query alone (so a batch of queries scores as one query at a time does).
pub fn scores_multi<const G: usize>(
    qs: [&[f32]; G],
    keys: &[f32],
    scale: f32,
    outs: &mut [&mut [f32]; G],
) {
    let hd = qs[0].len();
    if hd == 0 {
        return;
    }
    let rows = keys.len() / hd;
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma()
        && hd.is_multiple_of(8)
        && qs.iter().all(|q| q.len() == hd)
        && outs.iter().all(|o| o.len() >= rows)
    {
        // SAFETY: the CPU has AVX2 and FMA (checked above); every query has `hd` values, a
        // multiple of 8, and every output room for one score per key row.
        unsafe { scores_multi_avx2(qs, keys, scale, outs) };
        return;
    }
    for (t, k) in keys.chunks_exact(hd).enumerate() {
        for (q, o) in qs.iter().zip(outs.iter_mut()) {
            o[t] = dot(q, k) * scale;
        }
    }
}

/// [`dot_avx2`]'s arithmetic for `G` queries and two keys at a time: its four partial
/// sums (vector `j` of every 32 values, the 8-value tail into the first) are built one
/// after another, each over all the queries and both keys, then combined as it does.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn scores_multi_avx2<const G: usize>(
    qs: [&[f32]; G],
    keys: &[f32],
    scale: f32,
    outs: &mut [&mut [f32]; G],
) {
    let hd = qs[0].len();
    let rows = keys.len() / hd;
    let main = hd / 32 * 32;
    let pk = keys.as_ptr();
    let mut t = 0;
    while t < rows {
        let pair = t + 1 < rows;
        let k1_row = if pair { t + 1 } else { t };
        let mut parts = [[[_mm256_setzero_ps(); G]; 2]; 4];
        for (j, part) in parts.iter_mut().enumerate() {
            let mut acc = [[_mm256_setzero_ps(); G]; 2];
            let mut step = |c: usize| {
                // SAFETY: `c + 8 <= hd`, rows `t` and `k1_row` are inside `keys`, and each
                // query has `hd` values.
                unsafe {
                    let k0 = _mm256_loadu_ps(pk.add(t * hd + c));
                    let k1 = _mm256_loadu_ps(pk.add(k1_row * hd + c));
                    for g in 0..G {
                        let q = _mm256_loadu_ps(qs[g].as_ptr().add(c));
                        acc[0][g] = _mm256_fmadd_ps(q, k0, acc[0][g]);
                        acc[1][g] = _mm256_fmadd_ps(q, k1, acc[1][g]);
                    }
                }
            };
            for i in (0..main).step_by(32) {
                step(i + 8 * j);
            }
            if j == 0 {
                for c in (main..hd).step_by(8) {
                    step(c);
                }
            }
            *part = acc;
        }
        for g in 0..G {
            for (key, o) in [(0, t), (1, t + 1)] {
                if key == 1 && !pair {
                    continue;
                }
                let p = |j: usize| parts[j][key][g];
                let sum = _mm256_add_ps(_mm256_add_ps(p(0), p(1)), _mm256_add_ps(p(2), p(3)));
                outs[g][o] = hsum(sum) * scale;
            }
        }
        t += 2;
    }
}

/// [`weighted_sum`] for `G` weight rows (1 to 4) over the same values, each value row
/// read once for all of them: `os[g] += Σ_t ws[g][t] · values[t]`, bit for bit what
/// [`weighted_sum`] gives each row alone.
pub fn weighted_sum_multi<const G: usize>(
    ws: [&[f32]; G],
    values: &[f32],
    os: &mut [&mut [f32]; G],
) {
    let hd = os[0].len();
    if hd == 0 {
        return;
    }
    let rows = ws[0].len();
    // The same condition as `weighted_sum`'s vector path, so each output is bit for bit
    // what it gives (every value is `o + Σ_t w_t·v_t` in the order of `t`, fused).
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma()
        && hd.is_multiple_of(32)
        && values.len() >= rows * hd
        && ws.iter().all(|w| w.len() == rows)
        && os.iter().all(|o| o.len() == hd)
    {
        // SAFETY: the CPU has AVX2 and FMA (checked above); `values` holds `rows` rows of
        // `hd` values, `hd` a multiple of 16, and every output has `hd` values.
        unsafe { weighted_sum_multi_avx2(ws, values, os) };
        return;
    }
    for (w, o) in ws.iter().zip(os.iter_mut()) {
        weighted_sum(w, values, o);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn weighted_sum_multi_avx2<const G: usize>(
    ws: [&[f32]; G],
    values: &[f32],
    os: &mut [&mut [f32]; G],
) {
    let hd = os[0].len();
    let rows = ws[0].len();
    let pv = values.as_ptr();
    for c in (0..hd).step_by(16) {
        // SAFETY: `c + 16 <= hd` (hd is a multiple of 16), every output has `hd` values,
        // every weight row `rows` values and `values` `rows` rows of `hd`.
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); 2]; G];
            for g in 0..G {
                acc[g] = [
                    _mm256_loadu_ps(os[g].as_ptr().add(c)),
                    _mm256_loadu_ps(os[g].as_ptr().add(c + 8)),
                ];
            }
            for t in 0..rows {
                let v0 = _mm256_loadu_ps(pv.add(t * hd + c));
                let v1 = _mm256_loadu_ps(pv.add(t * hd + c + 8));
                for g in 0..G {
                    let w = _mm256_set1_ps(*ws[g].get_unchecked(t));
                    acc[g][0] = _mm256_fmadd_ps(w, v0, acc[g][0]);
                    acc[g][1] = _mm256_fmadd_ps(w, v1, acc[g][1]);
                }
            }
            for g in 0..G {
                _mm256_storeu_ps(os[g].as_mut_ptr().add(c), acc[g][0]);
                _mm256_storeu_ps(os[g].as_mut_ptr().add(c + 8), acc[g][1]);
            }
        }
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

    /// The exact activations, in f64.
    fn exact(x: f64, act: Glu) -> f64 {
        match act {
            Glu::Silu => x / (1.0 + (-x).exp()),
            Glu::GeluTanh => {
                let z = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044_715 * x * x * x);
                0.5 * x * (1.0 + z.tanh())
            }
        }
    }

    #[test]
    fn several_queries_at_once_equal_one_at_a_time_bit_for_bit() {
        fn check<const G: usize>(hd: usize, rows: usize) {
            let qs: Vec<Vec<f32>> = (0..G).map(|g| values(hd, g as f32 * 1.7)).collect();
            let keys = values(rows * hd, 7.0);
            let mut got = vec![vec![f32::NAN; rows]; G];
            {
                let mut outs: [&mut [f32]; G] = {
                    let mut it = got.iter_mut();
                    std::array::from_fn(|_| &mut it.next().expect("G rows")[..])
                };
                scores_multi(std::array::from_fn(|g| &qs[g][..]), &keys, 0.125, &mut outs);
            }
            for (q, got) in qs.iter().zip(&got) {
                let mut want = Vec::new();
                scores(q, &keys, 0.125, &mut want);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(got), bits(&want), "G={G} hd={hd}");
            }
            let ws: Vec<Vec<f32>> = (0..G).map(|g| values(rows, 3.0 + g as f32)).collect();
            let mut fast: Vec<Vec<f32>> = (0..G).map(|g| values(hd, 9.0 + g as f32)).collect();
            let slow: Vec<Vec<f32>> = fast
                .iter()
                .zip(&ws)
                .map(|(o, w)| {
                    let mut o = o.clone();
                    weighted_sum(w, &keys, &mut o);
                    o
                })
                .collect();
            {
                let mut os: [&mut [f32]; G] = {
                    let mut it = fast.iter_mut();
                    std::array::from_fn(|_| &mut it.next().expect("G rows")[..])
                };
                weighted_sum_multi(std::array::from_fn(|g| &ws[g][..]), &keys, &mut os);
            }
            // Bit for bit: a batch's queries attend exactly as one query at a time.
            assert_eq!(fast, slow, "G={G} hd={hd}");
        }
        for (hd, rows) in [
            (64, 1),
            (64, 13),
            (256, 8),
            (96, 5),
            (24, 3),
            (80, 4),
            (20, 2),
        ] {
            check::<1>(hd, rows);
            check::<2>(hd, rows);
            check::<3>(hd, rows);
            check::<4>(hd, rows);
        }
    }

    #[test]
    fn vector_softmax_is_within_a_few_ulp_of_the_exact_one() {
        for n in [1, 7, 8, 29, 300] {
            let scores: Vec<f32> = (0..n)
                .map(|i| ((i as f32 * 0.37).sin() * 12.0) - if i % 5 == 0 { 90.0 } else { 0.0 })
                .collect();
            let mut fast = scores.clone();
            softmax(&mut fast);
            let max = scores
                .iter()
                .copied()
                .fold(f64::NEG_INFINITY, |m, s| m.max(f64::from(s)));
            let e: Vec<f64> = scores.iter().map(|&s| (f64::from(s) - max).exp()).collect();
            let sum: f64 = e.iter().sum();
            for (i, ((&got, e), &s)) in fast.iter().zip(&e).zip(&scores).enumerate() {
                let want = e / sum;
                // A few ulp, plus what rounding `s - max` to f32 costs: |s - max| ulp.
                let ulps = 8.0 + (max - f64::from(s));
                assert!(
                    (f64::from(got) - want).abs() <= ulps * f64::from(f32::EPSILON) * want + 1e-38,
                    "n {n} [{i}]: {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn vector_activations_are_within_a_few_ulp_of_the_exact_ones_as_the_scalar_ones_are() {
        // A sweep through every magnitude that matters, both signs, plus a ragged tail.
        let mut xs: Vec<f32> = (0..20_001).map(|i| (i as f32 - 10_000.0) * 0.003).collect();
        xs.extend([
            -100.0, -88.0, -40.0, -1e-30, 0.0, 1e-30, 1e-7, 40.0, 88.0, 100.0, 3.0e4,
        ]);
        let up: Vec<f32> = (0..xs.len()).map(|i| 1.0 + (i % 7) as f32 * 0.25).collect();
        for act in [Glu::Silu, Glu::GeluTanh] {
            let mut fast = xs.clone();
            glu(&mut fast, &up, act);
            let scalar = match act {
                Glu::Silu => ops::silu,
                Glu::GeluTanh => ops::gelu_tanh,
            };
            for ((&x, &u), &got) in xs.iter().zip(&up).zip(&fast) {
                let want = exact(f64::from(x), act) * f64::from(u);
                let slow = f64::from(scalar(x) * u);
                // A few ulp of the result (or of x/1000 where it vanishes), plus
                // what rounding the argument z of the exponential costs: |z| ulp.
                let x64 = f64::from(x);
                let z = match act {
                    Glu::Silu => x64,
                    Glu::GeluTanh => {
                        2.0 * (2.0 / std::f64::consts::PI).sqrt() * (x64 + 0.044_715 * x64.powi(3))
                    }
                };
                let ulps = 6.0 + 2.0 * z.abs().min(100.0);
                let tol = ulps * f64::from(f32::EPSILON) * want.abs().max(1e-3 * x64.abs()) + 1e-37;
                assert!(
                    (f64::from(got) - want).abs() <= tol,
                    "{act:?} x={x}: vector {got}, exact {want}"
                );
                // The scalar GELU loses `1 + tanh` to cancellation: about an ulp of x.
                let eps = f64::from(f32::EPSILON);
                assert!(
                    (slow - want).abs() <= 64.0 * eps * want.abs() + eps * f64::from(x.abs() * u),
                    "{act:?} x={x}: scalar {slow}, exact {want}"
                );
            }
        }
    }

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
