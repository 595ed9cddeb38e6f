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

/// `e^x` in single precision, within 4e-7 relative error of the exact value
/// wherever that is a normal number.
///
/// Results below the normal range flush to 0 (`x < −87.33`): subnormal
/// arithmetic is about a hundred times slower on common CPUs, and a softmax
/// over a large vocabulary meets such arguments all the time.
/// `exp(-inf) = 0` and `exp(+inf) = +inf`; arguments above about 88.72
/// overflow to `+inf`. NaN is treated as −∞ (it gives 0), the rule for NaN
/// logits throughout this crate.
#[inline]
pub fn exp_f32(x: f32) -> f32 {
    // f32::max and f32::min return the other operand for NaN, so NaN lands on
    // the floor (clamp would keep it NaN).
    #[allow(clippy::manual_clamp)]
    let clamped = x.max(MIN_NORMAL_ARG).min(89.0);
    let shifted = clamped * LOG2E + ROUND_MAGIC;
    let n = shifted - ROUND_MAGIC;
    let r = (clamped - n * LN2_HI) - n * LN2_LO;
    // Taylor series of e^r to degree 7; |r| <= ln2/2 keeps the truncation error
    // near 5e-9, far below an f32 ulp.
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    // `shifted` and ROUND_MAGIC share an exponent whose ulp is 1, so their bit
    // patterns differ by exactly n (no saturating float-to-int conversion).
    let n = shifted.to_bits() as i32 - ROUND_MAGIC.to_bits() as i32;
    // n is in -126..=128: 2^n as two powers of two that are always normal, so
    // finite results with n = 128 come out right and larger ones overflow to +inf.
    let a = n >> 1;
    let y = p * pow2(a) * pow2(n - a);
    if clamped > MIN_NORMAL_ARG { y } else { 0.0 }
}

/// `2^k` for `k` in `-126..=127`.
#[inline]
fn pow2(k: i32) -> f32 {
    f32::from_bits(((k + 127) as u32) << 23)
}

/// Below this, `e^x` is not a normal f32 (ln of `f32::MIN_POSITIVE` is −87.336).
const MIN_NORMAL_ARG: f32 = -87.33;

/// Shifted logits below this get softmax weight 0. A weight `e^d` is later
/// divided by a sum of at most 2³² terms each at most 1; from −64 up the
/// quotient stays a normal number, so no softmax ever computes a subnormal.
/// The flushed tokens are less likely than the best one by a factor of e⁶⁴ ≈ 6e27.
pub(crate) const WEIGHT_FLOOR: f32 = -64.0;

/// `e^d` for a logit shifted by the maximum (`d <= 0`), 0 below [`WEIGHT_FLOOR`] and for NaN.
#[inline]
pub(crate) fn softmax_weight(d: f32) -> f32 {
    if d >= WEIGHT_FLOOR { exp_f32(d) } else { 0.0 }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::{MIN_NORMAL_ARG, WEIGHT_FLOOR, exp_f32, softmax_weight};

    fn check(x: f32) {
        let got = exp_f32(x);
        let want = f64::from(x).exp();
        if x <= MIN_NORMAL_ARG {
            assert_eq!(got, 0.0, "exp({x}) should flush to 0");
        } else if want >= f64::from(f32::MIN_POSITIVE) && want <= f64::from(f32::MAX) {
            let rel = ((f64::from(got) - want) / want).abs();
            assert!(
                rel < 4e-7,
                "exp({x}) = {got}, exact {want}, relative error {rel}"
            );
        } else if want < f64::from(f32::MIN_POSITIVE) {
            assert_eq!(got, 0.0, "exp({x}) should flush to 0");
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
        assert_eq!(exp_f32(-87.4), 0.0);
        assert!(exp_f32(-87.3) >= f32::MIN_POSITIVE);
        assert_eq!(softmax_weight(WEIGHT_FLOOR - 0.01), 0.0);
        assert_eq!(softmax_weight(f32::NAN), 0.0);
        assert_eq!(softmax_weight(-1.0), exp_f32(-1.0));
        // The smallest weight divided by the largest possible sum is still normal.
        assert!(softmax_weight(WEIGHT_FLOOR) / 4_294_967_296.0 >= f32::MIN_POSITIVE);
        assert_eq!(exp_f32(88.8), f32::INFINITY);
        assert!(exp_f32(88.7) < f32::INFINITY);
        assert!((exp_f32(1.0) - std::f32::consts::E).abs() <= f32::EPSILON * 3.0);
    }
}
