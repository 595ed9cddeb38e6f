//! Element-wise and row-wise primitives of the CPU forward pass, each with its shape contract.

use crate::config::{Rope, RopeStyle};

/// `x[..] = x / rms(x) * w` over one run of `w.len()` values.
pub fn rms_norm(x: &mut [f32], w: &[f32], eps: f32) {
    let scale = rms_scale(x, eps);
    for (x, w) in x.iter_mut().zip(w) {
        *x = *x * scale * w;
    }
}

/// `out = x / rms(x) * w`; `x`, `out` and `w` have the same length.
pub fn rms_norm_into(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let scale = rms_scale(x, eps);
    for ((o, x), w) in out.iter_mut().zip(x).zip(w) {
        *o = x * scale * w;
    }
}

/// `1 / sqrt(mean(x²) + eps)`, the sum taken in f64 so long rows lose nothing.
fn rms_scale(x: &[f32], eps: f32) -> f32 {
    let sum: f64 = x.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
    let mean = sum / x.len().max(1) as f64;
    (1.0 / (mean + f64::from(eps)).sqrt()) as f32
}

/// Fills `cos`/`sin` (`rope.n_rot / 2` each) with the rotation of each dimension pair at `pos`
/// (see [`Rope`]): `factors`, when given, divide the pairs' frequencies.
pub fn rope_angles(
    pos: u32,
    rope: &Rope,
    factors: Option<&[f32]>,
    cos: &mut [f32],
    sin: &mut [f32],
) {
    let n_rot = rope.n_rot as f64;
    let p = f64::from(pos);
    let freq_scale = f64::from(rope.freq_scale);
    let mscale = f64::from(rope.mscale);
    for (i, (c, s)) in cos.iter_mut().zip(sin.iter_mut()).enumerate() {
        let factor = factors.map_or(1.0, |f| f64::from(f[i]));
        let extrap = p * f64::from(rope.base).powf(-2.0 * i as f64 / n_rot) / factor;
        let interp = freq_scale * extrap;
        let theta = if rope.ext_factor == 0.0 {
            interp
        } else {
            let mix = yarn_ramp(rope.corr_dims, i) * f64::from(rope.ext_factor);
            interp * (1.0 - mix) + extrap * mix
        };
        let (sn, cs) = theta.sin_cos();
        *c = (cs * mscale) as f32;
        *s = (sn * mscale) as f32;
    }
}

/// YaRN's ramp for pair `i`: 1 below `corr_dims[0]` (keep the uninterpolated angle), 0 above
/// `corr_dims[1]`, linear between.
fn yarn_ramp(corr_dims: [f32; 2], i: usize) -> f64 {
    let (lo, hi) = (f64::from(corr_dims[0]), f64::from(corr_dims[1]));
    let y = (i as f64 - lo) / (hi - lo).max(0.001);
    1.0 - y.clamp(0.0, 1.0)
}

/// `cap · tanh(x / cap)`: soft-capping of attention scores and logits.
pub fn softcap(x: f32, cap: f32) -> f32 {
    cap * (x / cap).tanh()
}

/// Rotates the first `n_rot` values of one head by the precomputed angles.
pub fn rope_head(head: &mut [f32], style: RopeStyle, cos: &[f32], sin: &[f32]) {
    match style {
        RopeStyle::Adjacent => {
            for ((pair, c), s) in head.chunks_exact_mut(2).zip(cos).zip(sin) {
                let (x0, x1) = (pair[0], pair[1]);
                pair[0] = x0 * c - x1 * s;
                pair[1] = x0 * s + x1 * c;
            }
        }
        RopeStyle::Halves => {
            let half = cos.len();
            let (lo, hi) = head[..2 * half].split_at_mut(half);
            for (((a, b), c), s) in lo.iter_mut().zip(hi.iter_mut()).zip(cos).zip(sin) {
                let (x0, x1) = (*a, *b);
                *a = x0 * c - x1 * s;
                *b = x0 * s + x1 * c;
            }
        }
    }
}

/// `x · sigmoid(x)`.
pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// GELU, tanh approximation: `0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³)))`.
pub fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + 0.044_715 * x * x)).tanh())
}

/// `a · b` over equal-length slices, eight partial sums so the compiler can vectorize it.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, ra) = a.as_chunks::<8>();
    let (cb, rb) = b.as_chunks::<8>();
    for (x, y) in ca.iter().zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut tail = 0.0;
    for (x, y) in ra.iter().zip(rb) {
        tail += x * y;
    }
    acc.iter().sum::<f32>() + tail
}

/// `y += a · x`.
pub fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rms_norm_gives_unit_rms_times_weight() {
        let mut x = vec![3.0f32, -4.0, 0.0, 5.0];
        let w = [1.0f32, 2.0, 3.0, 0.5];
        rms_norm(&mut x, &w, 0.0);
        let rms = (50.0f32 / 4.0).sqrt();
        assert!((x[0] - 3.0 / rms).abs() < 1e-6);
        assert!((x[1] + 8.0 / rms).abs() < 1e-6);
        assert!((x[3] - 2.5 / rms).abs() < 1e-6);
    }

    #[test]
    fn rope_adjacent_and_halves_rotate_different_pairs() {
        let rope = Rope::plain(10000.0, 4, RopeStyle::Adjacent);
        let (mut cos, mut sin) = ([0.0; 2], [0.0; 2]);
        rope_angles(3, &rope, None, &mut cos, &mut sin);
        assert!((cos[0] - 3.0f32.cos()).abs() < 1e-6);
        assert!((sin[1] - (3.0f64 * 0.01).sin() as f32).abs() < 1e-6);
        let mut a = [1.0f32, 0.0, 1.0, 0.0];
        rope_head(&mut a, RopeStyle::Adjacent, &cos, &sin);
        assert!((a[1] - 3.0f32.sin()).abs() < 1e-6);
        let mut b = [1.0f32, 0.0, 0.0, 0.0];
        rope_head(&mut b, RopeStyle::Halves, &cos, &sin);
        assert!((b[2] - 3.0f32.sin()).abs() < 1e-6 && b[1] == 0.0);
    }

    #[test]
    fn rope_factors_divide_each_pairs_frequency() {
        let rope = Rope::plain(100.0, 4, RopeStyle::Halves);
        let (mut cos, mut sin) = ([0.0; 2], [0.0; 2]);
        rope_angles(7, &rope, Some(&[2.0, 4.0]), &mut cos, &mut sin);
        assert!((sin[0] - (7.0f64 / 2.0).sin() as f32).abs() < 1e-6);
        assert!((sin[1] - (7.0f64 * 0.1 / 4.0).sin() as f32).abs() < 1e-6);
    }

    #[test]
    fn yarn_keeps_fast_pairs_and_interpolates_slow_ones() {
        // Pair 0 is below the ramp (extrapolated: the plain angle), pair 3 above it
        // (interpolated: the angle times freq_scale); every value is scaled by mscale.
        let rope = Rope {
            freq_scale: 0.25,
            ext_factor: 1.0,
            corr_dims: [1.0, 2.0],
            mscale: 1.5,
            ..Rope::plain(10.0, 8, RopeStyle::Halves)
        };
        let (mut cos, mut sin) = ([0.0; 4], [0.0; 4]);
        rope_angles(5, &rope, None, &mut cos, &mut sin);
        assert!((sin[0] - 1.5 * 5.0f32.sin()).abs() < 1e-5);
        let slow = 5.0f64 * 10f64.powf(-6.0 / 8.0) * 0.25;
        assert!((cos[3] - (1.5 * slow.cos()) as f32).abs() < 1e-5);
        // Halfway up the ramp the two angles are mixed equally.
        let (e, i) = (
            5.0 * 10f64.powf(-4.0 / 8.0),
            0.25 * 5.0 * 10f64.powf(-4.0 / 8.0),
        );
        let rope_mid = Rope {
            corr_dims: [1.0, 3.0],
            ..rope
        };
        rope_angles(5, &rope_mid, None, &mut cos, &mut sin);
        assert!((sin[2] - (1.5 * (0.5 * e + 0.5 * i).sin()) as f32).abs() < 1e-5);
    }

    #[test]
    fn softcap_bounds_values_and_keeps_small_ones() {
        assert!((softcap(0.01, 30.0) - 0.01).abs() < 1e-6);
        assert!(softcap(1e4, 5.0) <= 5.0 && softcap(1e4, 5.0) > 4.999);
        assert!((softcap(-5.0, 5.0) + 5.0 * 1.0f32.tanh()).abs() < 1e-6);
    }

    #[test]
    fn activations_match_their_formulas() {
        assert!((silu(1.0) - 0.731_058_6).abs() < 1e-6);
        assert!((gelu_tanh(1.0) - 0.841_192).abs() < 1e-5);
        assert!((gelu_tanh(-3.0) + 0.003_637_4).abs() < 1e-5);
    }

    #[test]
    fn dot_and_axpy_match_plain_loops() {
        let a: Vec<f32> = (0..37).map(|i| (i as f32 * 0.3).sin()).collect();
        let b: Vec<f32> = (0..37).map(|i| (i as f32 * 0.7).cos()).collect();
        let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - plain).abs() < 1e-5);
        let mut y = b.clone();
        axpy(2.0, &a, &mut y);
        assert!((y[5] - (b[5] + 2.0 * a[5])).abs() < 1e-6);
    }
}
