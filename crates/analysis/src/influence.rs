//! Which prompt tokens most influence the tokens after them, by transfer entropy.
//!
//! For a source position `s`, two series run over the later positions `t ≥ max(s, 1)`:
//! `x_t`, the attention that query `t` pays to key `s` (the mean weight over every layer
//! and head), and `y_t`, the surprisal of token `t` given the tokens before it. Query `t`
//! predicts token `t + 1`, so `TE(X→Y)` (see [`crate::transfer_entropy`]) says how much the
//! attention paid to `s` tells about how surprising the next token turns out to be, beyond
//! what the recent surprisals already tell. Both series are cut into equal-frequency bins.
//!
//! Each figure comes with a shuffled-source baseline: the TE of the same series with the
//! attention values permuted, which shows what the plug-in estimator finds in noise on that
//! many samples. The series of a token is as long as the prompt after it, so late tokens
//! have few samples and a high TE by chance; tokens are therefore ranked by their margin
//! over the largest shuffled TE (positive: above every shuffle), and tokens with fewer than
//! [`InfluenceOptions::min_samples`] samples are not ranked. The estimate is statistical,
//! not causal: it finds tokens whose attention moves together with the model's surprise.

use serde::Serialize;

use crate::analyzer::TransferEntropyOptions;
use crate::attention::LayerAttention;
use crate::error::Result;
use crate::token_metrics::TokenMetrics;
use crate::transfer_entropy::{discretize, shuffled_baseline, transfer_entropy};

/// Options of the token influence ranking.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct InfluenceOptions {
    /// How many tokens to report, most influential first.
    pub top: usize,
    /// Fewest samples (time steps) a token's series needs to be ranked.
    pub min_samples: usize,
    /// History length, bins, shuffles and seed of the estimate.
    pub estimate: TransferEntropyOptions,
}

impl Default for InfluenceOptions {
    fn default() -> Self {
        Self {
            top: 10,
            min_samples: 8,
            estimate: TransferEntropyOptions::default(),
        }
    }
}

/// The influence of one prompt token on the tokens after it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TokenInfluence {
    /// The token's position in the prompt.
    pub position: usize,
    /// The token id.
    pub token: u32,
    /// `TE(attention to the token → surprisal)`, bits.
    pub te_bits: f64,
    /// Mean TE with the attention series shuffled, bits.
    pub baseline_bits: f64,
    /// Largest TE with the attention series shuffled, bits.
    pub baseline_max_bits: f64,
    /// `te_bits − baseline_bits`.
    pub excess_bits: f64,
    /// `te_bits − baseline_max_bits`, by which tokens are ranked: positive when the TE is
    /// above that of every shuffle.
    pub margin_bits: f64,
    /// Time steps in the token's series.
    pub samples: usize,
}

/// The mean attention weight (over every layer and head) that each query pays to each
/// key: `(n_query, n_key)`, row-major, 0 where the key is not visible.
pub fn mean_attention(layers: &[LayerAttention]) -> (usize, usize, Vec<f64>) {
    let n_query = layers
        .iter()
        .map(LayerAttention::n_query)
        .min()
        .unwrap_or(0);
    let n_key = layers.iter().map(LayerAttention::n_key).max().unwrap_or(0);
    let mut mean = vec![0.0f64; n_query * n_key];
    let heads: usize = layers.iter().map(LayerAttention::n_head).sum();
    for layer in layers {
        for h in 0..layer.n_head() {
            for q in 0..n_query {
                for (k, &w) in layer.visible(q).zip(layer.row(h, q)) {
                    mean[q * n_key + k] += f64::from(w);
                }
            }
        }
    }
    if heads > 0 {
        for m in &mut mean {
            *m /= heads as f64;
        }
    }
    (n_query, n_key, mean)
}

/// Ranks the prompt's tokens by the influence the module documentation defines.
/// `metrics[t]` is the metrics of token `t + 1`; `tokens` are the prompt's ids.
pub fn token_influence(
    tokens: &[u32],
    metrics: &[TokenMetrics],
    layers: &[LayerAttention],
    o: &InfluenceOptions,
) -> Result<Vec<TokenInfluence>> {
    let (n_query, n_key, attention) = mean_attention(layers);
    // Positions 1..n with a surprisal, and a query row each.
    let n = tokens.len().min(metrics.len() + 1).min(n_query);
    let e = &o.estimate;
    let mut ranked = Vec::new();
    for s in 0..n.min(n_key) {
        let first = s.max(1);
        let samples = n.saturating_sub(first).saturating_sub(e.history);
        if samples < o.min_samples.max(1) {
            continue;
        }
        let x: Vec<f64> = (first..n).map(|t| attention[t * n_key + s]).collect();
        let y: Vec<f64> = (first..n).map(|t| metrics[t - 1].surprisal).collect();
        let (x, y) = (discretize(&x, e.bins), discretize(&y, e.bins));
        let te = transfer_entropy(&x, &y, e.history)?;
        let (baseline, baseline_max) = shuffled_baseline(&x, &y, e.history, e.shuffles, e.seed)?;
        ranked.push(TokenInfluence {
            position: s,
            token: tokens[s],
            te_bits: te,
            baseline_bits: baseline,
            baseline_max_bits: baseline_max,
            excess_bits: te - baseline,
            margin_bits: te - baseline_max,
            samples,
        });
    }
    ranked.sort_by(|a, b| {
        b.margin_bits
            .total_cmp(&a.margin_bits)
            .then(a.position.cmp(&b.position))
    });
    ranked.truncate(o.top);
    Ok(ranked)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn metric(surprisal: f64) -> TokenMetrics {
        TokenMetrics {
            token: 0,
            surprisal,
            entropy: 0.0,
            varentropy: 0.0,
            top_k_mass: 1.0,
            top_k: 1,
            rank: 0,
        }
    }

    /// A xorshift stream in `0..1`.
    fn noise(seed: u32) -> impl FnMut() -> f64 {
        let mut x = seed;
        move || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            f64::from(x % 10_000) / 10_000.0
        }
    }

    #[test]
    fn mean_attention_averages_heads_and_layers() {
        let mut a = LayerAttention::causal(2, 2).unwrap();
        a.set_row(0, 0, &[1.0]).unwrap();
        a.set_row(1, 0, &[1.0]).unwrap();
        a.set_row(0, 1, &[0.2, 0.8]).unwrap();
        a.set_row(1, 1, &[0.6, 0.4]).unwrap();
        let mut b = LayerAttention::causal(1, 2).unwrap();
        b.set_row(0, 0, &[1.0]).unwrap();
        b.set_row(0, 1, &[1.0, 0.0]).unwrap();
        let (nq, nk, m) = mean_attention(&[a, b]);
        assert_eq!((nq, nk), (2, 2));
        let want = [1.0, 0.0, 1.8 / 3.0, 1.2 / 3.0];
        for (g, w) in m.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{m:?}");
        }
    }

    #[test]
    fn the_token_whose_attention_predicts_surprise_ranks_first() {
        // 200 positions. Every query gives each key a random weight, except that the weight
        // on key 3 at query t decides whether token t + 1 is surprising.
        let n = 200;
        let mut rand = noise(0x2545f491);
        let mut layer = LayerAttention::causal(1, n).unwrap();
        let mut surprisal = Vec::with_capacity(n - 1);
        for q in 0..n {
            let mut row: Vec<f32> = (0..=q).map(|_| rand() as f32).collect();
            let next = if q >= 3 {
                let high = rand() < 0.5;
                row[3] = if high { 5.0 } else { 0.01 };
                if high { 6.0 + rand() } else { rand() }
            } else {
                rand() * 7.0
            };
            if q + 1 < n {
                surprisal.push(next);
            }
            layer.set_row(0, q, &row).unwrap();
        }
        let tokens: Vec<u32> = (0..n as u32).map(|t| 1000 + t).collect();
        let metrics: Vec<TokenMetrics> = surprisal.iter().map(|&s| metric(s)).collect();
        let o = InfluenceOptions {
            top: 5,
            ..InfluenceOptions::default()
        };
        let ranked = token_influence(&tokens, &metrics, &[layer], &o).unwrap();
        assert_eq!(ranked.len(), 5);
        let best = &ranked[0];
        assert_eq!((best.position, best.token), (3, 1003), "{ranked:?}");
        assert_eq!(best.samples, n - 3 - 1);
        // High or low attention decides high or low surprisal: close to one bit, less what
        // the median split loses where the highs are not exactly half.
        assert!(best.te_bits > 0.75 && best.margin_bits > 0.7, "{best:?}");
        // Noise stays within what the shuffles reach, short series included.
        assert!(ranked[1].margin_bits < 0.1, "{ranked:?}");
        assert!(
            ranked
                .windows(2)
                .all(|w| w[0].margin_bits >= w[1].margin_bits)
        );
    }

    #[test]
    fn tokens_with_too_short_a_series_are_not_ranked() {
        let n = 12;
        let layer = LayerAttention::causal(1, n).unwrap();
        let tokens: Vec<u32> = (0..n as u32).collect();
        let metrics: Vec<TokenMetrics> = (0..n - 1).map(|t| metric(t as f64)).collect();
        let o = InfluenceOptions {
            top: 100,
            ..InfluenceOptions::default()
        };
        let ranked = token_influence(&tokens, &metrics, &[layer], &o).unwrap();
        // Position s has n − max(s, 1) − 1 samples: at least 8 for s ≤ 3.
        let mut positions: Vec<usize> = ranked.iter().map(|r| r.position).collect();
        positions.sort_unstable();
        assert_eq!(positions, [0, 1, 2, 3]);
        assert!(ranked.iter().all(|r| r.samples >= 8));
    }
}
