//! Numerically stable log-space helpers over a logits row.
//!
//! Every function shifts by the row's maximum before exponentiating, sums in
//! `f64`, and treats NaN as −∞ (a token that can never be chosen). A row whose
//! maximum is +∞ is the limit of growing logits: the +∞ entries share all the
//! probability equally.

use crate::SamplingError;
use crate::exp::{exp_f32, softmax_weight};

/// The largest logit, NaN ignored; −∞ for an empty or all-NaN row.
pub(crate) fn max_logit(values: &[f32]) -> f32 {
    // Eight independent running maxima vectorize; a single fold would not,
    // since the compiler may not reorder the comparisons.
    let mut lanes = [f32::NEG_INFINITY; 8];
    let mut chunks = values.chunks_exact(8);
    for chunk in &mut chunks {
        for (m, &v) in lanes.iter_mut().zip(chunk) {
            *m = if v > *m { v } else { *m };
        }
    }
    let tail = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
    lanes.iter().fold(tail, |m, &v| if v > m { v } else { m })
}

/// The position of the first largest logit (NaN ignored), or `None` if every
/// entry is NaN or −∞.
pub(crate) fn argmax(values: &[f32]) -> Option<usize> {
    // One pass with eight lanes, each remembering its first maximum; the
    // strict comparison keeps the earliest position within a lane.
    let mut best = [f32::NEG_INFINITY; 8];
    let mut at = [u32::MAX; 8];
    let mut chunks = values.chunks_exact(8);
    for (c, chunk) in (&mut chunks).enumerate() {
        for (lane, &v) in chunk.iter().enumerate() {
            let i = (c * 8 + lane) as u32;
            if v > best[lane] {
                best[lane] = v;
                at[lane] = i;
            }
        }
    }
    let mut winner = (f32::NEG_INFINITY, u32::MAX);
    let tail_start = values.len() - chunks.remainder().len();
    let tail = chunks
        .remainder()
        .iter()
        .enumerate()
        .map(|(j, &v)| (v, (tail_start + j) as u32));
    for (v, i) in best.into_iter().zip(at).chain(tail) {
        if v > winner.0 || (v == winner.0 && i < winner.1) {
            winner = (v, i);
        }
    }
    (winner.0 > f32::NEG_INFINITY).then_some(winner.1 as usize)
}

/// Σ e^(v − shift) over the row in `f64`, in a fixed order (four interleaved
/// partial sums), so the result is the same on every platform.
pub(crate) fn sum_exp_shifted(values: &[f32], shift: f32) -> f64 {
    let mut acc = [0.0_f64; 4];
    let mut chunks = values.chunks_exact(4);
    for chunk in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(chunk) {
            *a += f64::from(exp_f32(v - shift));
        }
    }
    let mut tail = 0.0_f64;
    for &v in chunks.remainder() {
        tail += f64::from(exp_f32(v - shift));
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// `ln Σ e^(x_i)`, computed without overflow.
///
/// Returns −∞ for an empty row or one with no finite or +∞ entry, and +∞ when
/// any entry is +∞.
pub fn log_sum_exp(logits: &[f32]) -> f32 {
    let m = max_logit(logits);
    if m.is_infinite() {
        return m;
    }
    (f64::from(m) + sum_exp_shifted(logits, m).ln()) as f32
}

/// Replaces a logits row by its softmax: probabilities that sum to 1.
///
/// Errors on an empty row and on a row where every entry is NaN or −∞.
pub fn softmax_in_place(values: &mut [f32]) -> Result<(), SamplingError> {
    let m = checked_max(values)?;
    if m == f32::INFINITY {
        let share = 1.0 / count_infinite(values) as f32;
        for v in values.iter_mut() {
            *v = if *v == f32::INFINITY { share } else { 0.0 };
        }
        return Ok(());
    }
    let mut acc = [0.0_f64; 4];
    let mut chunks = values.chunks_exact_mut(4);
    for chunk in &mut chunks {
        for (a, v) in acc.iter_mut().zip(chunk) {
            *v = softmax_weight(*v - m);
            *a += f64::from(*v);
        }
    }
    let mut tail = 0.0_f64;
    for v in chunks.into_remainder() {
        *v = softmax_weight(*v - m);
        tail += f64::from(*v);
    }
    let inv = (1.0 / ((acc[0] + acc[1]) + (acc[2] + acc[3]) + tail)) as f32;
    for v in values.iter_mut() {
        *v *= inv;
    }
    Ok(())
}

/// Replaces a logits row by its log-softmax: `x_i − ln Σ e^(x_j)`.
///
/// NaN entries become −∞. Errors like [`softmax_in_place`].
pub fn log_softmax_in_place(values: &mut [f32]) -> Result<(), SamplingError> {
    let m = checked_max(values)?;
    if m == f32::INFINITY {
        let log_share = -(count_infinite(values) as f32).ln();
        for v in values.iter_mut() {
            *v = if *v == f32::INFINITY {
                log_share
            } else {
                f32::NEG_INFINITY
            };
        }
        return Ok(());
    }
    let lse = (f64::from(m) + sum_exp_shifted(values, m).ln()) as f32;
    for v in values.iter_mut() {
        *v = if v.is_nan() {
            f32::NEG_INFINITY
        } else {
            *v - lse
        };
    }
    Ok(())
}

/// `ln p(token)` under the softmax of `logits`: the negative surprisal in nats.
pub fn log_prob(logits: &[f32], token: u32) -> Result<f32, SamplingError> {
    let m = checked_max(logits)?;
    let &x = logits
        .get(token as usize)
        .ok_or(SamplingError::TokenOutOfRange {
            token,
            n_vocab: logits.len(),
        })?;
    if m == f32::INFINITY {
        return Ok(if x == f32::INFINITY {
            -(count_infinite(logits) as f32).ln()
        } else {
            f32::NEG_INFINITY
        });
    }
    if x.is_nan() {
        return Ok(f32::NEG_INFINITY);
    }
    Ok((f64::from(x) - f64::from(m) - sum_exp_shifted(logits, m).ln()) as f32)
}

/// Shannon entropy of the softmax of `logits`, in nats.
///
/// Computed as `ln Z − Σ p_i (x_i − m)` with `m` the maximum and `Z = Σ e^(x_i − m)`,
/// so no `p ln p` term underflows. Errors like [`softmax_in_place`].
pub fn entropy(logits: &[f32]) -> Result<f32, SamplingError> {
    let m = checked_max(logits)?;
    if m == f32::INFINITY {
        return Ok((count_infinite(logits) as f32).ln());
    }
    let mut z = 0.0_f64;
    let mut weighted = 0.0_f64;
    for &x in logits {
        let w = exp_f32(x - m);
        if w > 0.0 {
            z += f64::from(w);
            weighted += f64::from(w) * f64::from(x - m);
        }
    }
    Ok((z.ln() - weighted / z).max(0.0) as f32)
}

fn checked_max(values: &[f32]) -> Result<f32, SamplingError> {
    if values.is_empty() {
        return Err(SamplingError::EmptyLogits);
    }
    let m = max_logit(values);
    if m == f32::NEG_INFINITY {
        return Err(SamplingError::NoSelectableToken {
            n_candidates: values.len(),
        });
    }
    Ok(m)
}

fn count_infinite(values: &[f32]) -> usize {
    values.iter().filter(|&&v| v == f32::INFINITY).count()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn reference_softmax(x: &[f32]) -> Vec<f64> {
        let m = x
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, |a, b| a.max(f64::from(b)));
        let w: Vec<f64> = x.iter().map(|&v| (f64::from(v) - m).exp()).collect();
        let s: f64 = w.iter().sum();
        w.iter().map(|v| v / s).collect()
    }

    #[test]
    fn softmax_matches_f64_reference() {
        let x = [1.0_f32, -2.5, 3.25, 0.0, 7.0, -30.0, 2.0];
        let want = reference_softmax(&x);
        let mut got = x;
        softmax_in_place(&mut got).unwrap();
        for (g, w) in got.iter().zip(&want) {
            assert!(
                (f64::from(*g) - w).abs() < 1e-6 * w.max(1e-30) + 1e-9,
                "{g} vs {w}"
            );
        }
    }

    #[test]
    fn large_logits_do_not_overflow() {
        let mut x = [1000.0_f32, 999.0, 998.0];
        softmax_in_place(&mut x).unwrap();
        let want = reference_softmax(&[0.0, -1.0, -2.0]);
        for (g, w) in x.iter().zip(&want) {
            assert!((f64::from(*g) - w).abs() < 1e-6);
        }
        assert!((log_sum_exp(&[1000.0, 1000.0]) - (1000.0 + std::f32::consts::LN_2)).abs() < 1e-3);
    }

    #[test]
    fn nan_is_minus_infinity_and_all_nan_is_an_error() {
        let mut x = [f32::NAN, 0.0, 0.0];
        softmax_in_place(&mut x).unwrap();
        assert_eq!(x, [0.0, 0.5, 0.5]);
        let mut y = [f32::NAN, f32::NAN];
        assert_eq!(
            softmax_in_place(&mut y),
            Err(SamplingError::NoSelectableToken { n_candidates: 2 })
        );
        let mut z = [f32::NEG_INFINITY, f32::NAN];
        assert!(log_softmax_in_place(&mut z).is_err());
        assert_eq!(softmax_in_place(&mut []), Err(SamplingError::EmptyLogits));
        assert_eq!(log_sum_exp(&[f32::NAN]), f32::NEG_INFINITY);
    }

    #[test]
    fn infinite_logits_share_the_mass() {
        let mut x = [f32::INFINITY, 3.0, f32::INFINITY, f32::NAN];
        softmax_in_place(&mut x).unwrap();
        assert_eq!(x, [0.5, 0.0, 0.5, 0.0]);
        let mut y = [f32::INFINITY, 3.0, f32::INFINITY, f32::NAN];
        log_softmax_in_place(&mut y).unwrap();
        assert_eq!(
            y,
            [
                -std::f32::consts::LN_2,
                f32::NEG_INFINITY,
                -std::f32::consts::LN_2,
                f32::NEG_INFINITY
            ]
        );
        assert_eq!(
            entropy(&[f32::INFINITY, 1.0, f32::INFINITY]).unwrap(),
            std::f32::consts::LN_2
        );
    }

    #[test]
    fn log_softmax_and_log_prob_agree_with_ln_of_softmax() {
        let x = [0.5_f32, -1.0, 2.0, 4.0, f32::NEG_INFINITY];
        let want = reference_softmax(&x);
        let mut got = x;
        log_softmax_in_place(&mut got).unwrap();
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            if *w == 0.0 {
                assert_eq!(*g, f32::NEG_INFINITY);
            } else {
                assert!((f64::from(*g) - w.ln()).abs() < 1e-5, "{g} vs {}", w.ln());
                let lp = log_prob(&x, i as u32).unwrap();
                assert!((f64::from(lp) - w.ln()).abs() < 1e-5);
            }
        }
        assert_eq!(
            log_prob(&x, 5),
            Err(SamplingError::TokenOutOfRange {
                token: 5,
                n_vocab: 5
            })
        );
    }

    #[test]
    fn argmax_finds_the_first_maximum() {
        let mut x: Vec<f32> = (0..1000).map(|i| ((i * 37) % 101) as f32).collect();
        // 37 * 30 = 1110 = 10 * 101 + 100: the first 100.
        assert_eq!(argmax(&x), Some(30));
        x[3] = 500.0;
        x[997] = 500.0;
        x[555] = f32::NAN;
        assert_eq!(argmax(&x), Some(3));
        x[998] = 501.0;
        assert_eq!(argmax(&x), Some(998));
        assert_eq!(argmax(&[f32::NAN, f32::NEG_INFINITY]), None);
        assert_eq!(argmax(&[f32::NEG_INFINITY, 2.0, 2.0]), Some(1));
    }

    #[test]
    fn entropy_of_known_distributions() {
        assert!((entropy(&[0.0; 8]).unwrap() - 8.0_f32.ln()).abs() < 1e-6);
        assert!(entropy(&[0.0, -200.0]).unwrap() < 1e-6);
        let x = [1.0_f32, 2.0, 0.5];
        let p = reference_softmax(&x);
        let want: f64 = -p.iter().map(|q| q * q.ln()).sum::<f64>();
        assert!((f64::from(entropy(&x).unwrap()) - want).abs() < 1e-6);
    }
}
