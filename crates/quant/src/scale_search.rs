//! Scale searches shared by the K-quant quantizers: for a group of values,
//! find the scale (and minimum) whose quantized reconstruction has the least
//! weighted squared error, trying a range of candidate scales and solving the
//! least-squares problem for each candidate's integer assignment.

/// Groups whose largest magnitude is below this are stored as zeros.
pub const GROUP_MAX_EPS: f32 = 1e-15;

/// The largest group the K-quants search (longer groups work, on the heap).
pub const MAX_GROUP: usize = 32;

/// Round half to even, as ggml's `nearest_int`; saturates far outside `i32`.
pub fn nearest_int(v: f32) -> i32 {
    // Adding 1.5 * 2^23 leaves the rounded integer in the low mantissa bits
    // (exact for |v| < 2^22), which is much cheaper than a rounding call on
    // baseline x86-64.
    if v.abs() < 4_194_303.0 {
        ((v + 12_582_912.0).to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
    } else {
        v.round_ties_even() as i32
    }
}

/// The value with the largest magnitude, sign kept (first on ties), and that magnitude.
fn signed_absmax(x: &[f32]) -> (f32, f32) {
    let mut amax = 0.0f32;
    let mut max = 0.0f32;
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    (max, amax)
}

/// Symmetric quantization to integers in `-nmax..nmax`, stored in `levels`
/// offset by `nmax`. The weight of each value is its square, so large values
/// are fitted best. Tries 19 scales around `nmax / max` and keeps the one
/// maximizing `(Σ w x l)² / Σ w l²`, i.e. minimizing the weighted error at
/// the least-squares scale. Returns that scale.
pub fn symmetric_search(x: &[f32], nmax: i32, levels: &mut [u8]) -> f32 {
    let (max, amax) = signed_absmax(x);
    if amax < GROUP_MAX_EPS {
        levels.fill(0);
        return 0.0;
    }
    let nmaxf = nmax as f32;
    let assign = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-nmax, nmax - 1);
    let sums = |iscale: f32| {
        let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
        for &v in x {
            let l = assign(iscale, v) as f32;
            let w = v * v;
            sumlx += w * v * l;
            suml2 += w * l * l;
        }
        (sumlx, suml2)
    };
    let mut iscale = -nmaxf / max;
    let (sumlx, suml2) = sums(iscale);
    let mut scale = if suml2 > 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    let mut best_iscale = iscale;
    for step in -9..=9 {
        if step == 0 {
            continue;
        }
        iscale = -(nmaxf + 0.1 * step as f32) / max;
        let (sumlx, suml2) = sums(iscale);
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            scale = sumlx / suml2;
            best = scale * sumlx;
            best_iscale = iscale;
        }
    }
    for (l, &v) in levels.iter_mut().zip(x) {
        *l = (assign(best_iscale, v) + nmax) as u8;
    }
    scale
}

/// Symmetric quantization to integers in `-nmax..nmax` (offset by `nmax` in
/// `levels`) refined coordinate-wise: each integer is moved to the value that
/// would be optimal for the other integers' least-squares scale, as long as
/// the weighted error (weights `x²`) drops. Returns the least-squares scale.
pub fn symmetric_refine(x: &[f32], nmax: i32, levels: &mut [u8]) -> f32 {
    let (max, amax) = signed_absmax(x);
    if amax < GROUP_MAX_EPS {
        levels.fill(0);
        return 0.0;
    }
    let iscale = -(nmax as f32) / max;
    let mut storage = [0i32; MAX_GROUP];
    let mut heap = Vec::new();
    let l: &mut [i32] = if x.len() <= MAX_GROUP {
        &mut storage[..x.len()]
    } else {
        heap.resize(x.len(), 0);
        &mut heap
    };
    for (q, &v) in l.iter_mut().zip(x) {
        *q = nearest_int(iscale * v).clamp(-nmax, nmax - 1);
    }
    let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
    for (&v, &q) in x.iter().zip(l.iter()) {
        let w = v * v;
        sumlx += w * v * q as f32;
        suml2 += w * q as f32 * q as f32;
    }
    for _ in 0..5 {
        let mut changed = 0;
        for (i, &v) in x.iter().enumerate() {
            let w = v * v;
            let cur = l[i] as f32;
            let mut slx = sumlx - w * v * cur;
            if slx > 0.0 {
                let mut sl2 = suml2 - w * cur * cur;
                let new_l = nearest_int(v * sl2 / slx).clamp(-nmax, nmax - 1);
                if new_l != l[i] {
                    let nl = new_l as f32;
                    slx += w * v * nl;
                    sl2 += w * nl * nl;
                    if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                        l[i] = new_l;
                        sumlx = slx;
                        suml2 = sl2;
                        changed += 1;
                    }
                }
            }
        }
        if changed == 0 {
            break;
        }
    }
    for (out, q) in levels.iter_mut().zip(l.iter()) {
        *out = (q + nmax) as u8;
    }
    if suml2 > 0.0 { sumlx / suml2 } else { 0.0 }
}

/// How [`affine_search`] measures the error it minimizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorNorm {
    /// Weighted absolute error.
    Absolute,
    /// Weighted squared error.
    Squared,
}

/// The candidate scales [`affine_search`] tries: `(nmax + rmin + rdelta*i) / range` for `i` in `0..=steps`.
#[derive(Clone, Copy, Debug)]
pub struct AffineCandidates {
    /// Offset of the first candidate's level count from `nmax`.
    pub rmin: f32,
    /// Step between candidates' level counts.
    pub rdelta: f32,
    /// Number of steps after the first candidate.
    pub steps: u32,
}

/// Affine quantization `x ≈ scale * l - min_offset` with `l` in `0..=nmax`
/// and `min_offset >= 0` (the group minimum is clamped to at most zero).
/// For each candidate scale it assigns integers by rounding, then solves the
/// weighted least-squares problem for scale and minimum jointly, keeping the
/// candidate with the least weighted error. Returns `(scale, min_offset)`.
pub fn affine_search(
    x: &[f32],
    weights: &[f32],
    nmax: u8,
    candidates: AffineCandidates,
    norm: ErrorNorm,
    levels: &mut [u8],
) -> (f32, f32) {
    let n = x.len().min(weights.len()).min(levels.len());
    let (x, weights) = (&x[..n], &weights[..n]);
    let mut min = x.iter().copied().fold(f32::INFINITY, f32::min);
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum_w: f32 = weights.iter().sum();
    let sum_x: f32 = weights.iter().zip(x).map(|(w, v)| w * v).sum();
    if min > 0.0 {
        min = 0.0;
    }
    if n == 0 || max <= min {
        levels.fill(0);
        return (0.0, -min);
    }
    let nmaxf = f32::from(nmax);
    let assign =
        |iscale: f32, min: f32, v: f32| nearest_int(iscale * (v - min)).clamp(0, i32::from(nmax));
    let error = |scale: f32, min: f32, ls: &[u8]| -> f32 {
        x.iter()
            .zip(weights)
            .zip(ls)
            .map(|((&v, &w), &l)| {
                let diff = scale * f32::from(l) + min - v;
                match norm {
                    ErrorNorm::Absolute => w * diff.abs(),
                    ErrorNorm::Squared => w * diff * diff,
                }
            })
            .sum()
    };
    let iscale = nmaxf / (max - min);
    let mut scale = 1.0 / iscale;
    for (l, &v) in levels.iter_mut().zip(x) {
        *l = assign(iscale, min, v) as u8;
    }
    let mut best_error = error(scale, min, &levels[..n]);
    let mut aux_storage = [0u8; MAX_GROUP];
    let mut aux_heap = Vec::new();
    let aux: &mut [u8] = if n <= MAX_GROUP {
        &mut aux_storage[..n]
    } else {
        aux_heap.resize(n, 0);
        &mut aux_heap
    };
    // As in ggml, later candidates are placed relative to the best minimum found so far.
    for step in 0..=candidates.steps {
        let iscale = (candidates.rmin + candidates.rdelta * step as f32 + nmaxf) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for ((a, &v), &w) in aux.iter_mut().zip(x).zip(weights) {
            let l = assign(iscale, min, v);
            *a = l as u8;
            let l = l as f32;
            sum_l += w * l;
            sum_l2 += w * l * l;
            sum_xl += w * l * v;
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let cur = error(this_scale, this_min, aux);
            if cur < best_error {
                levels[..n].copy_from_slice(aux);
                best_error = cur;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reconstruct_sym(scale: f32, nmax: i32, levels: &[u8]) -> Vec<f32> {
        levels
            .iter()
            .map(|&l| scale * (i32::from(l) - nmax) as f32)
            .collect()
    }

    fn sq_error(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
    }

    #[test]
    fn nearest_int_rounds_half_to_even() {
        assert_eq!(
            [0.5, 1.5, 2.5, -0.5, -1.5, 2.4999].map(nearest_int),
            [0, 2, 2, 0, -2, 2]
        );
        assert_eq!(nearest_int(-3.5), -4);
        assert_eq!(nearest_int(1e9), 1_000_000_000);
    }

    #[test]
    fn symmetric_search_is_exact_on_values_of_the_grid() {
        let x: Vec<f32> = [-32, -5, 0, 3, 17, 31, -1, 8]
            .iter()
            .map(|&l| l as f32 * 0.25)
            .collect();
        let mut levels = [0u8; 8];
        let scale = symmetric_search(&x, 32, &mut levels);
        assert_eq!(sq_error(&reconstruct_sym(scale, 32, &levels), &x), 0.0);
    }

    #[test]
    fn symmetric_searches_beat_plain_rounding() {
        let x: Vec<f32> = (0..16).map(|i| ((i * 7 + 3) as f32 * 0.61).sin()).collect();
        let (max, _) = signed_absmax(&x);
        let plain_scale = max / -4.0;
        let plain: Vec<f32> = x
            .iter()
            .map(|&v| plain_scale * nearest_int(v / plain_scale).clamp(-4, 3) as f32)
            .collect();
        let weighted = |r: &[f32]| -> f32 {
            x.iter()
                .zip(r)
                .map(|(a, b)| a * a * (a - b) * (a - b))
                .sum()
        };
        let mut levels = [0u8; 16];
        let s = symmetric_refine(&x, 4, &mut levels);
        assert!(weighted(&reconstruct_sym(s, 4, &levels)) <= weighted(&plain));
        let s = symmetric_search(&x, 4, &mut levels);
        assert!(weighted(&reconstruct_sym(s, 4, &levels)) <= weighted(&plain));
    }

    #[test]
    fn affine_search_fits_an_affine_grid_exactly() {
        let x: Vec<f32> = [0u8, 3, 15, 7, 9, 1, 12, 4]
            .iter()
            .map(|&l| 0.5 * f32::from(l) - 2.0)
            .collect();
        let w = vec![1.0; 8];
        let mut levels = [0u8; 8];
        let candidates = AffineCandidates {
            rmin: -1.0,
            rdelta: 0.1,
            steps: 20,
        };
        let (scale, offset) =
            affine_search(&x, &w, 15, candidates, ErrorNorm::Squared, &mut levels);
        assert!((scale - 0.5).abs() < 1e-6 && (offset - 2.0).abs() < 1e-6);
        assert_eq!(levels, [0, 3, 15, 7, 9, 1, 12, 4]);
    }

    #[test]
    fn affine_search_never_stores_a_positive_minimum_and_beats_the_plain_grid() {
        let x = [1.0f32, 2.2, 2.9, 4.0, 3.1, 1.4, 2.6, 3.7];
        let w = [1.0f32; 8];
        let mut levels = [0u8; 8];
        let candidates = AffineCandidates {
            rmin: -0.5,
            rdelta: 0.1,
            steps: 15,
        };
        let (scale, offset) = affine_search(&x, &w, 3, candidates, ErrorNorm::Squared, &mut levels);
        assert!(offset >= 0.0);
        let err: f32 = x
            .iter()
            .zip(&levels)
            .map(|(v, &l)| (scale * f32::from(l) - offset - v).powi(2))
            .sum();
        // The starting grid: min clamped to 0, scale = max / nmax.
        let plain: f32 = x
            .iter()
            .map(|v| {
                let s = 4.0 / 3.0;
                (s * nearest_int(v / s).clamp(0, 3) as f32 - v).powi(2)
            })
            .sum();
        assert!(err < plain, "{err} vs {plain}");
    }
}
