//! What a job can learn about each generated token: its log-probability, the most likely
//! alternatives, and `ferrolm-analysis`'s per-token metrics of the distribution it was drawn
//! from (entropy, surprisal, varentropy, rank). All of them come from the model's own
//! distribution (the softmax of the raw logits), before any sampling setting reshapes it.

use ferrolm_analysis::token_metrics;
use ferrolm_sampling::log_sum_exp;
use ferrolm_tokenizer::Tokenizer;

/// One generated token and what the job asked about it.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenOut {
    /// The token id.
    pub id: u32,
    /// Its text, control tokens rendered (bytes may be part of a UTF-8 character).
    pub piece: Vec<u8>,
    /// `ln p(token)`, when log-probabilities are wanted.
    pub logprob: Option<f32>,
    /// The most likely tokens with their pieces and log-probabilities, best first.
    pub top: Vec<(u32, Vec<u8>, f32)>,
    /// Per-token metrics, when they are wanted.
    pub metrics: Option<TokenMetrics>,
}

/// Per-token uncertainty, in nats.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenMetrics {
    /// Shannon entropy of the next-token distribution.
    pub entropy: f64,
    /// `-ln p(token)` of the chosen token.
    pub surprisal: f64,
    /// Variance of the surprisal under the distribution (nats²).
    pub varentropy: f64,
    /// Tokens more likely than the chosen one (0: it was the most likely).
    pub rank: usize,
}

impl TokenOut {
    /// A token with nothing more to report.
    pub fn plain(id: u32) -> Self {
        Self {
            id,
            piece: Vec::new(),
            logprob: None,
            top: Vec::new(),
            metrics: None,
        }
    }
}

/// Describes `token`, drawn from `logits`: `logprobs` alternatives with log-probabilities
/// (if `Some`), the per-token metrics (if `metrics`; absent when no logit is finite).
pub(crate) fn token_out(
    tokenizer: &Tokenizer,
    logits: &[f32],
    token: u32,
    logprobs: Option<usize>,
    metrics: bool,
) -> TokenOut {
    let lse = log_sum_exp(logits);
    let logprob_of = |t: u32| {
        logits
            .get(t as usize)
            .map_or(f32::NEG_INFINITY, |&x| x - lse)
    };
    let piece = |t: u32| tokenizer.token_to_piece(t, true).unwrap_or_default();
    let lp = logprob_of(token);
    TokenOut {
        id: token,
        piece: piece(token),
        logprob: logprobs.map(|_| lp),
        top: top_tokens(logits, logprobs.unwrap_or(0))
            .into_iter()
            .map(|t| (t, piece(t), logprob_of(t)))
            .collect(),
        metrics: metrics
            .then(|| token_metrics(logits, token, 1).ok())
            .flatten()
            .map(|m| TokenMetrics {
                entropy: m.entropy,
                surprisal: m.surprisal,
                varentropy: m.varentropy,
                rank: m.rank,
            }),
    }
}

/// The `n` largest logits' indices, largest first (the lower index first among equals; NaN
/// never chosen).
pub(crate) fn top_tokens(logits: &[f32], n: usize) -> Vec<u32> {
    let mut best: Vec<(f32, u32)> = Vec::with_capacity(n + 1);
    if n == 0 {
        return Vec::new();
    }
    for (i, &x) in logits.iter().enumerate() {
        if x.is_nan() || (best.len() == n && x <= best[n - 1].0) {
            continue;
        }
        let at = best.partition_point(|&(y, _)| y >= x);
        best.insert(at, (x, i as u32));
        best.truncate(n);
    }
    best.into_iter().map(|(_, i)| i).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_tokens_are_the_largest_in_order_with_ties_to_the_lower_index() {
        let logits = [0.5, 3.0, f32::NAN, 3.0, -1.0, 2.0];
        assert_eq!(top_tokens(&logits, 3), [1, 3, 5]);
        assert_eq!(top_tokens(&logits, 10), [1, 3, 5, 0, 4]);
        assert!(top_tokens(&logits, 0).is_empty());
    }

    #[test]
    fn top_tokens_match_a_full_sort() {
        let logits: Vec<f32> = (0..997u32)
            .map(|i| ((i * 7919) % 1013) as f32 * 0.01)
            .collect();
        let mut order: Vec<u32> = (0..997).collect();
        order.sort_by(|&a, &b| {
            logits[b as usize]
                .total_cmp(&logits[a as usize])
                .then(a.cmp(&b))
        });
        assert_eq!(top_tokens(&logits, 20), order[..20]);
    }
}
