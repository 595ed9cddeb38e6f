//! Transfer entropy between two discrete series, `TE(X→Y) = I(Y_{t+1}; X_t^(k) | Y_t^(k))`:
//! how much the last `k` values of `X` tell about the next value of `Y` beyond what the
//! last `k` values of `Y` already tell. In bits.
//!
//! Estimator: plug-in (maximum likelihood). Every time step `t` from `k − 1` to `n − 2`
//! gives one joint state `(y_{t+1}, y_t..y_{t−k+1}, x_t..x_{t−k+1})`; probabilities are the
//! state counts over the `n − k` samples, and
//!
//! ```text
//! TE = Σ p(y⁺, y⁻, x⁻) log₂ [ p(y⁺, y⁻, x⁻) p(y⁻) / (p(y⁻, x⁻) p(y⁺, y⁻)) ]
//! ```
//!
//! The plug-in estimate is biased upward on short series (it sees structure in noise), the
//! more so the more states there are (`bins^(2k+1)`); [`shuffled_baseline`] estimates that
//! bias by recomputing TE with `X`'s samples permuted, and the excess over it is the
//! evidence of flow.
//!
//! Continuous signals are first cut into equal-frequency bins by [`discretize`].

use std::collections::{BTreeMap, HashMap};

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::error::{AnalysisError, Result};

/// `TE(X→Y)` in bits with history length `k` (see the module documentation). `x` and `y`
/// are symbols of the same time steps.
pub fn transfer_entropy(x: &[u32], y: &[u32], k: usize) -> Result<f64> {
    if x.len() != y.len() {
        return Err(AnalysisError::InvalidInput {
            what: "transfer entropy",
            reason: format!("series of {} and {} samples", x.len(), y.len()),
        });
    }
    if k == 0 || x.len() <= k {
        return Err(AnalysisError::InvalidInput {
            what: "transfer entropy",
            reason: format!(
                "history {k} with {} samples (needs 1 ≤ k < samples)",
                x.len()
            ),
        });
    }
    // Ordered, so the sum runs in the same order every time.
    let mut joint: BTreeMap<(u32, &[u32], &[u32]), usize> = BTreeMap::new();
    let mut yx: HashMap<(&[u32], &[u32]), usize> = HashMap::new();
    let mut yy: HashMap<(u32, &[u32]), usize> = HashMap::new();
    let mut ypast: HashMap<&[u32], usize> = HashMap::new();
    for t in k - 1..x.len() - 1 {
        let (yp, xp) = (&y[t + 1 - k..=t], &x[t + 1 - k..=t]);
        let next = y[t + 1];
        *joint.entry((next, yp, xp)).or_default() += 1;
        *yx.entry((yp, xp)).or_default() += 1;
        *yy.entry((next, yp)).or_default() += 1;
        *ypast.entry(yp).or_default() += 1;
    }
    let n = (x.len() - k) as f64;
    let mut te = 0.0f64;
    for (&(next, yp, xp), &c) in &joint {
        let c = c as f64;
        let num = c * ypast[yp] as f64;
        let den = yx[&(yp, xp)] as f64 * yy[&(next, yp)] as f64;
        te += c / n * (num / den).log2();
    }
    Ok(te.max(0.0))
}

/// Shannon entropy of a symbol series' empirical distribution, bits.
pub fn entropy_bits(x: &[u32]) -> f64 {
    let mut counts: BTreeMap<u32, usize> = BTreeMap::new();
    for &s in x {
        *counts.entry(s).or_default() += 1;
    }
    let n = x.len() as f64;
    counts
        .values()
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.log2()
        })
        .sum()
}

/// Cuts `signal` into `bins` equal-frequency bins by rank (ties broken by position), so
/// every bin holds about `n / bins` samples. NaN sorts last.
pub fn discretize(signal: &[f64], bins: u32) -> Vec<u32> {
    let bins = bins.max(1) as usize;
    let mut order: Vec<usize> = (0..signal.len()).collect();
    order.sort_by(|&a, &b| signal[a].total_cmp(&signal[b]).then(a.cmp(&b)));
    let mut out = vec![0u32; signal.len()];
    for (rank, &i) in order.iter().enumerate() {
        out[i] = (rank * bins / signal.len()) as u32;
    }
    out
}

/// Mean and largest `TE(X'→Y)` over `rounds` random permutations `X'` of `x` (seeded, so
/// the figure is reproducible): the TE a series with no flow shows on this much data.
pub fn shuffled_baseline(
    x: &[u32],
    y: &[u32],
    k: usize,
    rounds: usize,
    seed: u64,
) -> Result<(f64, f64)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut shuffled = x.to_vec();
    let (mut sum, mut max) = (0.0f64, 0.0f64);
    for _ in 0..rounds {
        shuffled.shuffle(&mut rng);
        let te = transfer_entropy(&shuffled, y, k)?;
        sum += te;
        max = max.max(te);
    }
    Ok((sum / rounds.max(1) as f64, max))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn random_symbols(n: usize, alphabet: u32, seed: u64) -> Vec<u32> {
        use rand::Rng;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n).map(|_| rng.random_range(0..alphabet)).collect()
    }

    #[test]
    fn lagged_copy_carries_the_source_entropy() {
        let x = random_symbols(20_000, 4, 1);
        let mut y = vec![0u32; x.len()];
        y[1..].copy_from_slice(&x[..x.len() - 1]);
        let hx = entropy_bits(&x);
        assert!((hx - 2.0).abs() < 0.01, "{hx}");
        for k in [1, 2] {
            let fwd = transfer_entropy(&x, &y, k).unwrap();
            let back = transfer_entropy(&y, &x, k).unwrap();
            assert!(
                (fwd - hx).abs() < 0.02,
                "k={k}: TE(X→Y) = {fwd}, H(X) = {hx}"
            );
            assert!(back < 0.02, "k={k}: TE(Y→X) = {back}");
        }
    }

    #[test]
    fn independent_series_have_no_flow() {
        let x = random_symbols(20_000, 3, 2);
        let y = random_symbols(20_000, 3, 3);
        assert!(transfer_entropy(&x, &y, 1).unwrap() < 0.01);
        assert!(transfer_entropy(&y, &x, 1).unwrap() < 0.01);
    }

    #[test]
    fn own_history_is_not_transfer() {
        // Y repeats itself with period 2 and X is that same sequence: Y's own past already
        // predicts it, so X adds nothing.
        let y: Vec<u32> = (0..1000).map(|t| (t % 2) as u32).collect();
        assert!(transfer_entropy(&y.clone(), &y, 1).unwrap() < 1e-9);
    }

    #[test]
    fn baseline_is_small_for_independent_and_below_a_real_flow() {
        let x = random_symbols(400, 2, 4);
        let mut y = vec![0u32; x.len()];
        y[1..].copy_from_slice(&x[..x.len() - 1]);
        let (mean, max) = shuffled_baseline(&x, &y, 1, 20, 9).unwrap();
        assert!(mean < 0.05 && max < 0.1, "{mean} {max}");
        assert!(transfer_entropy(&x, &y, 1).unwrap() > 0.9);
        assert_eq!(shuffled_baseline(&x, &y, 1, 20, 9).unwrap(), (mean, max));
    }

    #[test]
    fn discretize_makes_equal_frequency_bins() {
        let s = [0.5, -1.0, 3.0, 2.0, 0.0, 10.0];
        assert_eq!(discretize(&s, 2), [0, 0, 1, 1, 0, 1]);
        assert_eq!(discretize(&s, 3), [1, 0, 2, 1, 0, 2]);
        assert_eq!(discretize(&s, 1), [0; 6]);
    }

    #[test]
    fn bad_inputs_are_errors() {
        assert!(transfer_entropy(&[0, 1], &[0], 1).is_err());
        assert!(transfer_entropy(&[0, 1], &[0, 1], 0).is_err());
        assert!(transfer_entropy(&[0, 1], &[0, 1], 2).is_err());
    }
}
