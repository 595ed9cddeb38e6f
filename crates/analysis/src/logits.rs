//! Numerics over one logits row: log-sum-exp, log-probabilities and the argmax, in `f64`
//! where it matters (a softmax over 262,144 entries loses digits in `f32`).

use ferrolm_sampling::exp_f32;

use crate::error::{AnalysisError, Result};

/// The largest finite-or-infinite entry (NaN ignored); −∞ for an empty row.
pub(crate) fn max(row: &[f32]) -> f32 {
    row.iter()
        .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m })
}

/// `ln Σ e^(x_i)` in `f64`: the row is shifted by its maximum, exponentiated in `f32`
/// (each term carries a relative error near 1e-7, which does not accumulate) and summed in
/// `f64`. Errors when no entry is finite.
pub fn log_sum_exp(row: &[f32]) -> Result<f64> {
    let m = max(row);
    if !m.is_finite() {
        return Err(AnalysisError::InvalidInput {
            what: "log-sum-exp",
            reason: if row.is_empty() {
                "empty logits row".into()
            } else {
                format!("largest logit is {m}")
            },
        });
    }
    let mut acc = [0.0f64; 4];
    let mut chunks = row.chunks_exact(4);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f64::from(exp_f32(v - m));
        }
    }
    let tail: f64 = chunks
        .remainder()
        .iter()
        .map(|&v| f64::from(exp_f32(v - m)))
        .sum();
    Ok(f64::from(m) + ((acc[0] + acc[1]) + (acc[2] + acc[3]) + tail).ln())
}

/// The index of the first largest entry (NaN ignored), or 0 for a row with none.
pub fn argmax(row: &[f32]) -> usize {
    let mut best = (0, f32::NEG_INFINITY);
    for (i, &v) in row.iter().enumerate() {
        if v > best.1 {
            best = (i, v);
        }
    }
    best.0
}

/// The logit of `token`, or an error when it is outside the row.
pub(crate) fn logit_of(row: &[f32], token: u32) -> Result<f32> {
    row.get(token as usize)
        .copied()
        .ok_or(AnalysisError::TokenOutOfRange {
            id: token,
            vocab: row.len(),
        })
}

/// Negative log-likelihood of `token` under the softmax of `row`, in nats.
pub fn nll(row: &[f32], token: u32) -> Result<f64> {
    let x = logit_of(row, token)?;
    Ok(log_sum_exp(row)? - f64::from(x))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn exact_lse(row: &[f32]) -> f64 {
        let m = row
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, |a, b| a.max(f64::from(b)));
        m + row
            .iter()
            .map(|&x| (f64::from(x) - m).exp())
            .sum::<f64>()
            .ln()
    }

    #[test]
    fn log_sum_exp_matches_f64_reference() {
        let row: Vec<f32> = (0..1001)
            .map(|i| ((i * 37 % 101) as f32) * 0.23 - 11.0)
            .collect();
        let got = log_sum_exp(&row).unwrap();
        assert!(
            (got - exact_lse(&row)).abs() < 1e-6,
            "{got} vs {}",
            exact_lse(&row)
        );
    }

    #[test]
    fn uniform_row_has_nll_ln_n() {
        let row = [3.5f32; 8];
        assert!((nll(&row, 5).unwrap() - 8f64.ln()).abs() < 1e-6);
    }

    #[test]
    fn bad_rows_are_errors() {
        assert!(log_sum_exp(&[]).is_err());
        assert!(log_sum_exp(&[f32::NEG_INFINITY, f32::NAN]).is_err());
        assert!(nll(&[0.0, 1.0], 2).is_err());
    }

    #[test]
    fn argmax_takes_the_first_maximum() {
        assert_eq!(argmax(&[1.0, 3.0, f32::NAN, 3.0, -2.0]), 1);
        assert_eq!(argmax(&[]), 0);
    }
}
