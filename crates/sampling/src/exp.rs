//! A portable single-precision `exp`.
//!
//! Built only from IEEE-754 additions and multiplications (Rust never contracts
//! them into fused operations), so it returns the same bits on every platform,
//! unlike the C library's `expf`. Sampling draws depend on these bits, which is
//! what makes a seed reproduce across machines. It is also branch-free, so the
//! softmax loops vectorize.

const LOG2E: f32 = std::f32::consts::LOG2_E;
// ln 2 split in two: LN2_HI has few significant bits, so `n * LN2_HI` is exact
// for every |n| <= 150 and the reduced argument keeps full precision.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
// 1.5 * 2^23: adding and subtracting it rounds an f32 of magnitude < 2^22 to the
// nearest integer (ties to even) without a library call.
const ROUND_MAGIC: f32 = 12_582_912.0;

/// `e^x` in single precision, within 4e-7 relative error of the exact value for
/// results in the normal range.
///
/// `exp(-inf) = 0` and `exp(+inf) = +inf`; arguments above about 88.72 overflow
/// to `+inf` and below about −103.9 underflow to 0. NaN is treated as −∞ (it
/// gives 0), the rule for NaN logits throughout this crate.
#[inline]
pub fn exp_f32(x: f32) -> f32 {
    // f32::max and f32::min return the other operand for NaN, so NaN lands on
    // -105 (clamp would keep it NaN).
    #[allow(clippy::manual_clamp)]
    let x = x.max(-105.0).min(89.0);
    let n = (x * LOG2E + ROUND_MAGIC) - ROUND_MAGIC;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    // Taylor series of e^r to degree 7; |r| <= ln2/2 keeps the truncation error
    // near 5e-9, far below an f32 ulp.
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    // 2^n as two normal powers of two, so results in the subnormal range and
    // n = 128 (overflow to +inf) come out right.
    let ni = n as i32;
    let a = ni >> 1;
    let b = ni - a;
    p * pow2(a) * pow2(b)
}

/// `2^k` for `k` in `-126..=127`.
#[inline]
fn pow2(k: i32) -> f32 {
    f32::from_bits(((k + 127) as u32) << 23)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::exp_f32;

    fn check(x: f32) {
        let got = exp_f32(x);
        let want = f64::from(x).exp();
        if want >= f64::from(f32::MIN_POSITIVE) && want <= f64::from(f32::MAX) {
            let rel = ((f64::from(got) - want) / want).abs();
            assert!(
                rel < 4e-7,
                "exp({x}) = {got}, exact {want}, relative error {rel}"
            );
        } else if want < f64::from(f32::MIN_POSITIVE) {
            let abs = (f64::from(got) - want).abs();
            assert!(
                abs <= 2.0 * 1.401_298_5e-45,
                "exp({x}) = {got}, exact {want}"
            );
        } else {
            assert_eq!(got, f32::INFINITY, "exp({x}) should overflow");
        }
    }

    #[test]
    fn matches_f64_reference_over_a_dense_sweep() {
        let mut x = -110.0_f32;
        while x < 95.0 {
            check(x);
            x += 0.000_731;
        }
    }

    #[test]
    fn matches_f64_reference_on_pseudo_random_arguments() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..200_000 {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let unit = (state >> 40) as f32 / (1u64 << 24) as f32;
            check(-100.0 + 190.0 * unit);
        }
    }

    #[test]
    fn special_values() {
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_f32(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp_f32(f32::NAN), 0.0);
        assert_eq!(exp_f32(-200.0), 0.0);
        assert_eq!(exp_f32(88.8), f32::INFINITY);
        assert!(exp_f32(88.7) < f32::INFINITY);
        assert!((exp_f32(1.0) - std::f32::consts::E).abs() <= f32::EPSILON * 3.0);
    }
}
