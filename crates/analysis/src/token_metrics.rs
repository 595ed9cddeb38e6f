//! Per-token metrics of a next-token distribution, all in nats:
//!
//! - surprisal `−ln p(t)` of the token `t` that came next;
//! - entropy `H = −Σ p ln p`, the expected surprisal;
//! - varentropy `Σ p (−ln p − H)²`, the variance of the surprisal (high when the model
//!   hesitates between a few likely tokens and a long tail);
//! - top-k mass, the probability of the `k` most likely tokens;
//! - the rank of `t` (0 for the most likely token).

use std::sync::{Arc, Mutex, PoisonError};

use ferrolm_sampling::{Candidates, RowEdit, Sampler, SamplingError, exp_f32};
use serde::Serialize;

use crate::error::Result;
use crate::logits;

/// Metrics of one position's distribution and the token that followed it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct TokenMetrics {
    /// The token scored.
    pub token: u32,
    /// `−ln p(token)`, nats.
    pub surprisal: f64,
    /// Entropy of the distribution, nats.
    pub entropy: f64,
    /// Variance of the surprisal under the distribution, nats².
    pub varentropy: f64,
    /// Probability of the `top_k` most likely tokens.
    pub top_k_mass: f64,
    /// The `k` of `top_k_mass`.
    pub top_k: usize,
    /// Tokens more likely than `token` (0: it was the most likely).
    pub rank: usize,
}

/// The metrics of the softmax of `row` for the token `token`, with the mass of the `top_k`
/// most likely tokens. Errors when `token` is outside the row or no logit is finite.
pub fn token_metrics(row: &[f32], token: u32, top_k: usize) -> Result<TokenMetrics> {
    let x = logits::logit_of(row, token)?;
    let lse = logits::log_sum_exp(row)?;
    // ln p_i = x_i − lse; first moment, then the spread around it.
    let mut entropy = 0.0f64;
    let mut rank = 0usize;
    for &v in row {
        let lp = f64::from(v) - lse;
        let p = f64::from(exp_f32(lp as f32));
        if p > 0.0 {
            entropy -= p * lp;
        }
        rank += usize::from(v > x);
    }
    let mut varentropy = 0.0f64;
    for &v in row {
        let lp = f64::from(v) - lse;
        let p = f64::from(exp_f32(lp as f32));
        if p > 0.0 {
            let d = -lp - entropy;
            varentropy += p * d * d;
        }
    }
    let top_k_mass = top_k_logits(row, top_k)
        .iter()
        .map(|&v| f64::from(exp_f32((f64::from(v) - lse) as f32)))
        .sum::<f64>()
        .min(1.0);
    Ok(TokenMetrics {
        token,
        surprisal: lse - f64::from(x),
        entropy: entropy.max(0.0),
        varentropy: varentropy.max(0.0),
        top_k_mass,
        top_k,
        rank,
    })
}

/// The `k` largest entries of `row` (NaN ignored), largest first.
pub(crate) fn top_k_logits(row: &[f32], k: usize) -> Vec<f32> {
    let mut top: Vec<f32> = Vec::with_capacity(k + 1);
    if k == 0 {
        return top;
    }
    for &v in row {
        if v.is_nan() || (top.len() == k && v <= top[k - 1]) {
            continue;
        }
        let at = top.partition_point(|&t| t >= v);
        top.insert(at, v);
        top.truncate(k);
    }
    top
}

/// Collects [`TokenMetrics`] step by step during generation; a caller holds an
/// `Option<MetricsRecorder>` so that generation without metrics does no work.
#[derive(Clone, Debug, Default)]
pub struct MetricsRecorder {
    top_k: usize,
    metrics: Vec<TokenMetrics>,
}

impl MetricsRecorder {
    /// A recorder that reports the mass of the `top_k` most likely tokens.
    pub fn new(top_k: usize) -> Self {
        Self {
            top_k,
            metrics: Vec::new(),
        }
    }

    /// Records the metrics of `token` chosen from the distribution of `row`.
    pub fn record(&mut self, row: &[f32], token: u32) -> Result<&TokenMetrics> {
        let m = token_metrics(row, token, self.top_k)?;
        self.metrics.push(m);
        Ok(&self.metrics[self.metrics.len() - 1])
    }

    /// Everything recorded, in order.
    pub fn metrics(&self) -> &[TokenMetrics] {
        &self.metrics
    }

    /// Takes the recorded metrics, leaving the recorder empty.
    pub fn take(&mut self) -> Vec<TokenMetrics> {
        std::mem::take(&mut self.metrics)
    }
}

/// A sampler that changes nothing and records the [`TokenMetrics`] of every token the
/// chain chooses. Put it at the head of a chain, in front of the real one:
/// `SamplerChain::new().with(probe.clone()).with(chain)`; the outer chain then samples
/// exactly as `chain` would, and the probe sees the model's own distribution (before
/// penalties, temperature and truncation). A token is recorded when the chain accepts it,
/// so prompt tokens (accepted before any row was seen) and a final end-of-generation
/// token (never accepted) are not. A generation without metrics simply has no probe.
///
/// Clones share one record, so the caller keeps a clone to read it.
#[derive(Clone, Debug, Default)]
pub struct MetricsProbe {
    top_k: usize,
    shared: Arc<Mutex<ProbeState>>,
}

#[derive(Debug, Default)]
struct ProbeState {
    row: Vec<f32>,
    pending: bool,
    metrics: Vec<TokenMetrics>,
    error: Option<String>,
}

impl MetricsProbe {
    /// A probe reporting the mass of the `top_k` most likely tokens.
    pub fn new(top_k: usize) -> Self {
        Self {
            top_k,
            shared: Arc::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ProbeState> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the metrics recorded so far, in order.
    pub fn take(&self) -> Vec<TokenMetrics> {
        std::mem::take(&mut self.state().metrics)
    }

    /// Why a token could not be measured, if one could not (a row with no finite logit).
    pub fn error(&self) -> Option<String> {
        self.state().error.clone()
    }

    fn observe(&self, row: impl FnOnce(&mut Vec<f32>)) {
        let mut s = self.state();
        row(&mut s.row);
        s.pending = true;
    }
}

impl Sampler for MetricsProbe {
    fn name(&self) -> &'static str {
        "metrics"
    }

    fn apply(&mut self, candidates: &mut Candidates) -> Result<(), SamplingError> {
        // Inside a candidate phase only an untouched set is the model's distribution.
        if candidates.is_full_vocabulary() {
            self.observe(|row| {
                row.clear();
                row.extend(candidates.as_slice().iter().map(|c| c.logit));
            });
        }
        Ok(())
    }

    fn row_edit(&self) -> RowEdit {
        // `Edit` makes the chain hand this sampler the row; it is left unchanged.
        RowEdit::Edit
    }

    fn edit_row(&mut self, row: &mut [f32]) {
        self.observe(|copy| {
            copy.clear();
            copy.extend_from_slice(row);
        });
    }

    fn accept(&mut self, token: u32) {
        let mut s = self.state();
        if !std::mem::take(&mut s.pending) {
            return;
        }
        match token_metrics(&s.row, token, self.top_k) {
            Ok(m) => s.metrics.push(m),
            Err(e) => s.error = Some(e.to_string()),
        }
    }

    fn reset(&mut self) {
        let mut s = self.state();
        s.pending = false;
        s.metrics.clear();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn uniform_distribution() {
        let row = [0.25f32; 16];
        let m = token_metrics(&row, 3, 4).unwrap();
        assert!(close(m.surprisal, 16f64.ln(), 1e-6));
        assert!(close(m.entropy, 16f64.ln(), 1e-6));
        assert!(close(m.varentropy, 0.0, 1e-9));
        assert!(close(m.top_k_mass, 0.25, 1e-6));
        assert_eq!(m.rank, 0);
    }

    #[test]
    fn two_point_distribution_has_known_entropy_and_varentropy() {
        // p = (0.8, 0.2): H = −0.8 ln 0.8 − 0.2 ln 0.2; the surprisal takes −ln 0.8 or
        // −ln 0.2, so its variance is 0.8·0.2·(ln 0.8 − ln 0.2)² = 0.16 (ln 4)².
        let row = [0.8f32.ln(), 0.2f32.ln(), f32::NEG_INFINITY];
        let m = token_metrics(&row, 1, 1).unwrap();
        let h = -(0.8f64 * 0.8f64.ln() + 0.2 * 0.2f64.ln());
        assert!(close(m.entropy, h, 1e-6), "{}", m.entropy);
        assert!(
            close(m.varentropy, 0.16 * 4f64.ln().powi(2), 1e-6),
            "{}",
            m.varentropy
        );
        assert!(close(m.surprisal, -(0.2f64.ln()), 1e-6));
        assert!(close(m.top_k_mass, 0.8, 1e-6));
        assert_eq!(m.rank, 1);
    }

    #[test]
    fn one_hot_distribution_is_certain() {
        let row = [0.0f32, 100.0, 0.0, 0.0];
        let m = token_metrics(&row, 1, 2).unwrap();
        assert!(m.surprisal < 1e-9 && m.entropy < 1e-9 && m.varentropy < 1e-9);
        assert!(close(m.top_k_mass, 1.0, 1e-9));
    }

    #[test]
    fn metrics_do_not_depend_on_a_logit_shift() {
        let row: Vec<f32> = (0..50).map(|i| ((i * 7) % 13) as f32 * 0.5).collect();
        let shifted: Vec<f32> = row.iter().map(|x| x + 40.0).collect();
        let (a, b) = (
            token_metrics(&row, 9, 5).unwrap(),
            token_metrics(&shifted, 9, 5).unwrap(),
        );
        assert!(close(a.entropy, b.entropy, 1e-5));
        assert!(close(a.varentropy, b.varentropy, 1e-5));
        assert!(close(a.surprisal, b.surprisal, 1e-5));
    }

    #[test]
    fn top_k_keeps_the_largest_in_order() {
        assert_eq!(
            top_k_logits(&[1.0, 5.0, f32::NAN, 3.0, 4.0, 2.0], 3),
            [5.0, 4.0, 3.0]
        );
        assert_eq!(top_k_logits(&[1.0, 2.0], 5), [2.0, 1.0]);
        assert!(top_k_logits(&[1.0], 0).is_empty());
    }

    #[test]
    fn recorder_keeps_metrics_in_order() {
        let mut r = MetricsRecorder::new(2);
        r.record(&[0.0, 1.0], 0).unwrap();
        r.record(&[0.0, 1.0], 1).unwrap();
        assert!(r.record(&[0.0, 1.0], 2).is_err());
        let m = r.take();
        assert_eq!(m.len(), 2);
        assert!(m[0].surprisal > m[1].surprisal);
        assert!(r.metrics().is_empty());
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod probe_tests {
    use ferrolm_sampling::{Preset, SamplerChain, SamplingConfig};

    use super::*;

    #[test]
    fn probe_records_chosen_tokens_without_changing_the_choice() {
        let rows: Vec<Vec<f32>> = (0..6)
            .map(|t| {
                (0..40)
                    .map(|i| ((i * 7 + t * 3) % 11) as f32 * 0.4)
                    .collect()
            })
            .collect();
        let config = SamplingConfig {
            seed: 42,
            ..SamplingConfig::default()
        };
        let mut plain = config.build().unwrap();
        let probe = MetricsProbe::new(5);
        let mut probed = SamplerChain::new()
            .with(probe.clone())
            .with(config.build().unwrap());
        // Prompt tokens are accepted before any row: not recorded.
        for t in [3, 4] {
            plain.accept(t);
            probed.accept(t);
        }
        let mut chosen = vec![];
        for row in &rows {
            let (a, b) = (plain.sample(row).unwrap(), probed.sample(row).unwrap());
            assert_eq!(a, b);
            plain.accept(a);
            probed.accept(b);
            chosen.push(a);
        }
        let m = probe.take();
        assert_eq!(m.len(), rows.len());
        for ((m, row), &t) in m.iter().zip(&rows).zip(&chosen) {
            assert_eq!(m.token, t);
            assert_eq!(*m, token_metrics(row, t, 5).unwrap());
        }
        assert!(probe.take().is_empty());
        assert!(probe.error().is_none());
    }

    #[test]
    fn greedy_chain_with_a_probe_still_takes_the_argmax() {
        let probe = MetricsProbe::new(1);
        let mut chain = SamplerChain::new()
            .with(probe.clone())
            .with(SamplingConfig::preset(Preset::Greedy).build().unwrap());
        let t = chain.sample(&[0.0, 2.0, 1.0]).unwrap();
        assert_eq!(t, 1);
        chain.accept(t);
        let m = probe.take();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].rank, 0);
    }
}
