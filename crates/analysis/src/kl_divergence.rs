//! KL divergence between two models' next-token distributions over a text, as llama.cpp's
//! `--kl-divergence` reports it, but with both models run side by side chunk by chunk
//! (no saved base logits). Chunks and scored positions follow [`crate::chunks`].
//!
//! For each scored position, with `P` the base model's distribution, `Q` the other's and
//! `t` the token that came next:
//! - `KLD = Σ P ln(P/Q)` in nats;
//! - `Δp = Q(t) − P(t)`;
//! - "same top" when both distributions have the same most likely token;
//! - each model's NLL of `t`, giving each perplexity and their ratio.
//!
//! Percentiles interpolate linearly between the two nearest order statistics.

use ferrolm_transformer::{Backend, Model};
use serde::Serialize;

use ferrolm_sampling::exp_f32;

use crate::chunks::{ChunkEvaluator, ChunkPlan};
use crate::error::{AnalysisError, Result};
use crate::logits;
use crate::perplexity::{NllStats, PerplexityOptions};

/// What one scored position contributes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PositionKl {
    /// `KL(P ‖ Q)` in nats.
    pub kld: f64,
    /// `Q(t) − P(t)`.
    pub delta_p: f64,
    /// Whether both distributions rank the same token first.
    pub same_top: bool,
    /// `−ln P(t)`.
    pub nll_base: f64,
    /// `−ln Q(t)`.
    pub nll_model: f64,
}

/// Compares the base logits `p` and the other model's logits `q` at one position whose next
/// token is `token`.
pub fn position_kl(p: &[f32], q: &[f32], token: u32) -> Result<PositionKl> {
    if p.len() != q.len() {
        return Err(AnalysisError::VocabularyMismatch {
            base: p.len(),
            model: q.len(),
        });
    }
    let (lse_p, lse_q) = (logits::log_sum_exp(p)?, logits::log_sum_exp(q)?);
    let shift = lse_p - lse_q;
    let mut kld = 0.0f64;
    for (&a, &b) in p.iter().zip(q) {
        let lp = f64::from(a) - lse_p;
        let pa = f64::from(exp_f32(lp as f32));
        if pa > 0.0 {
            // ln P − ln Q = (a − b) − (lse_p − lse_q); exactly 0 for identical rows.
            kld += pa * ((f64::from(a) - f64::from(b)) - shift);
        }
    }
    let (xp, xq) = (logits::logit_of(p, token)?, logits::logit_of(q, token)?);
    let (nll_base, nll_model) = (lse_p - f64::from(xp), lse_q - f64::from(xq));
    Ok(PositionKl {
        kld,
        delta_p: (-nll_model).exp() - (-nll_base).exp(),
        same_top: logits::argmax(p) == logits::argmax(q),
        nll_base,
        nll_model,
    })
}

/// Order statistics of a sample.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Quantiles {
    /// Largest value.
    pub max: f64,
    /// 99.9th percentile.
    pub p99_9: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 75th percentile.
    pub p75: f64,
    /// Median.
    pub median: f64,
    /// 25th percentile.
    pub p25: f64,
    /// 10th percentile.
    pub p10: f64,
    /// 5th percentile.
    pub p5: f64,
    /// 1st percentile.
    pub p1: f64,
    /// 0.1th percentile.
    pub p0_1: f64,
    /// Smallest value.
    pub min: f64,
}

/// The `q`-quantile (`0 ≤ q ≤ 1`) of sorted values, interpolating linearly between the
/// nearest ranks; 0 for an empty slice.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    match sorted.len() {
        0 => 0.0,
        n => {
            let at = q.clamp(0.0, 1.0) * (n - 1) as f64;
            let (lo, frac) = (at.floor() as usize, at.fract());
            let hi = (lo + 1).min(n - 1);
            sorted[lo] + (sorted[hi] - sorted[lo]) * frac
        }
    }
}

impl Quantiles {
    /// Quantiles of `values` (in any order).
    pub fn of(values: &[f64]) -> Self {
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let q = |f| quantile(&v, f);
        Self {
            max: q(1.0),
            p99_9: q(0.999),
            p99: q(0.99),
            p95: q(0.95),
            p90: q(0.90),
            p75: q(0.75),
            median: q(0.5),
            p25: q(0.25),
            p10: q(0.10),
            p5: q(0.05),
            p1: q(0.01),
            p0_1: q(0.001),
            min: q(0.0),
        }
    }
}

fn mean_and_stderr(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    if values.is_empty() {
        return (0.0, 0.0);
    }
    let mean = values.iter().sum::<f64>() / n;
    if values.len() < 2 {
        return (mean, 0.0);
    }
    let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (n - 1.0);
    (mean, (var / n).sqrt())
}

fn correlation(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len() as f64;
    if x.len() < 2 {
        return 0.0;
    }
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    if sxx > 0.0 && syy > 0.0 {
        sxy / (sxx * syy).sqrt()
    } else {
        0.0
    }
}

/// Accumulates [`PositionKl`]s and summarizes them.
#[derive(Clone, Debug, Default)]
pub struct KlStats {
    kld: Vec<f64>,
    delta_p: Vec<f64>,
    nll_base: Vec<f64>,
    nll_model: Vec<f64>,
    same_top: usize,
}

impl KlStats {
    /// Adds one position.
    pub fn push(&mut self, p: &PositionKl) {
        self.kld.push(p.kld);
        self.delta_p.push(p.delta_p);
        self.nll_base.push(p.nll_base);
        self.nll_model.push(p.nll_model);
        self.same_top += usize::from(p.same_top);
    }

    /// Positions added.
    pub fn count(&self) -> usize {
        self.kld.len()
    }

    /// Mean KLD so far.
    pub fn mean_kld(&self) -> f64 {
        mean_and_stderr(&self.kld).0
    }

    /// The summary, for `chunks` chunks of `n_ctx` tokens.
    pub fn summary(&self, chunks: usize, n_ctx: usize) -> KlDivergence {
        let n = self.count();
        let stats = |v: &[f64]| {
            let mut s = NllStats::default();
            for &x in v {
                s.push(x);
            }
            s
        };
        let (base, model) = (stats(&self.nll_base), stats(&self.nll_model));
        let ln_ratio: Vec<f64> = self
            .nll_model
            .iter()
            .zip(&self.nll_base)
            .map(|(m, b)| m - b)
            .collect();
        let (ln_ratio_mean, ln_ratio_stderr) = mean_and_stderr(&ln_ratio);
        let (mean_kld, mean_kld_stderr) = mean_and_stderr(&self.kld);
        let (mean_dp, mean_dp_stderr) = mean_and_stderr(&self.delta_p);
        let rms_dp = if n == 0 {
            0.0
        } else {
            (self.delta_p.iter().map(|d| d * d).sum::<f64>() / n as f64).sqrt()
        };
        let same = if n == 0 {
            0.0
        } else {
            self.same_top as f64 / n as f64
        };
        let same_stderr = if n < 2 {
            0.0
        } else {
            (same * (1.0 - same) / (n - 1) as f64).sqrt()
        };
        let kld_q = Quantiles::of(&self.kld);
        KlDivergence {
            chunks,
            tokens_scored: n,
            n_ctx,
            ppl_base: base.ppl(),
            ppl_base_stderr: base.ppl_stderr(),
            ppl_model: model.ppl(),
            ppl_model_stderr: model.ppl_stderr(),
            ppl_ratio: ln_ratio_mean.exp(),
            ln_ppl_ratio: ln_ratio_mean,
            ln_ppl_ratio_stderr: ln_ratio_stderr,
            nll_correlation: correlation(&self.nll_base, &self.nll_model),
            mean_kld,
            mean_kld_stderr,
            median_kld: kld_q.median,
            kld: kld_q,
            mean_dp_percent: 100.0 * mean_dp,
            mean_dp_stderr_percent: 100.0 * mean_dp_stderr,
            rms_dp_percent: 100.0 * rms_dp,
            dp_percent: {
                let pct: Vec<f64> = self.delta_p.iter().map(|d| 100.0 * d).collect();
                Quantiles::of(&pct)
            },
            same_top_p_percent: 100.0 * same,
            same_top_p_stderr_percent: 100.0 * same_stderr,
        }
    }
}

/// The summary of a KL-divergence run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KlDivergence {
    /// Chunks evaluated.
    pub chunks: usize,
    /// Positions scored.
    pub tokens_scored: usize,
    /// Tokens per chunk.
    pub n_ctx: usize,
    /// Perplexity of the base model.
    pub ppl_base: f64,
    /// Its standard error.
    pub ppl_base_stderr: f64,
    /// Perplexity of the compared model.
    pub ppl_model: f64,
    /// Its standard error.
    pub ppl_model_stderr: f64,
    /// `PPL(model) / PPL(base)`, the exponential of the mean NLL difference.
    pub ppl_ratio: f64,
    /// Mean of `ln PPL(model) − ln PPL(base)` per token.
    pub ln_ppl_ratio: f64,
    /// Its standard error.
    pub ln_ppl_ratio_stderr: f64,
    /// Pearson correlation of the two models' per-token NLLs.
    pub nll_correlation: f64,
    /// Mean KL divergence, nats.
    pub mean_kld: f64,
    /// Its standard error.
    pub mean_kld_stderr: f64,
    /// Median KL divergence.
    pub median_kld: f64,
    /// Quantiles of the KL divergence.
    pub kld: Quantiles,
    /// Mean `Δp`, percent.
    pub mean_dp_percent: f64,
    /// Its standard error, percent.
    pub mean_dp_stderr_percent: f64,
    /// Root mean square of `Δp`, percent.
    pub rms_dp_percent: f64,
    /// Quantiles of `Δp`, percent.
    pub dp_percent: Quantiles,
    /// Positions where both models rank the same token first, percent.
    pub same_top_p_percent: f64,
    /// Its standard error, percent.
    pub same_top_p_stderr_percent: f64,
}

/// Progress after each chunk.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KlProgress {
    /// Chunks done.
    pub done: usize,
    /// Chunks in the text.
    pub total: usize,
    /// Mean KLD over the chunks done so far.
    pub mean_kld: f64,
}

/// KL divergence of `model` from `base` over `tokens` (tokenized for both: they must share
/// a vocabulary), chunk by chunk; `on_chunk` hears after each.
pub fn kl_divergence<'a, 'b, A: Backend<'a>, B: Backend<'b>>(
    base: &Model<'a, A>,
    model: &Model<'b, B>,
    tokens: &[u32],
    bos: Option<u32>,
    options: PerplexityOptions,
    mut on_chunk: impl FnMut(KlProgress),
) -> Result<KlDivergence> {
    let (vb, vm) = (base.config().vocab, model.config().vocab);
    if vb != vm {
        return Err(AnalysisError::VocabularyMismatch {
            base: vb,
            model: vm,
        });
    }
    let plan = ChunkPlan::new(options.n_ctx, bos)?;
    let total = plan.check_text(tokens.len())?;
    let mut eval_base = ChunkEvaluator::new(base, plan, options.batch)?;
    let mut eval_model = ChunkEvaluator::new(model, plan, options.batch)?;
    let batches: Vec<_> = eval_base.batches().collect();
    let mut stats = KlStats::default();
    for i in 0..total {
        let chunk = plan.chunk(tokens, i)?;
        for range in &batches {
            let p = eval_base.run(&chunk, range.clone())?;
            let q = eval_model.run(&chunk, range.clone())?;
            for r in 0..p.len() {
                let next = chunk[p.first + r + 1];
                stats.push(&position_kl(p.row(r), q.row(r), next)?);
            }
        }
        on_chunk(KlProgress {
            done: i + 1,
            total,
            mean_kld: stats.mean_kld(),
        });
    }
    Ok(stats.summary(total, plan.n_ctx()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn identical_rows_have_zero_divergence() {
        let row: Vec<f32> = (0..300)
            .map(|i| ((i * 31) % 17) as f32 * 0.7 - 3.0)
            .collect();
        let k = position_kl(&row, &row, 5).unwrap();
        assert_eq!(k.kld, 0.0);
        assert_eq!(k.delta_p, 0.0);
        assert!(k.same_top);
        assert_eq!(k.nll_base, k.nll_model);
    }

    #[test]
    fn two_point_divergence_matches_the_formula() {
        // P = (0.9, 0.1), Q = (0.6, 0.4): KL = 0.9 ln 1.5 + 0.1 ln 0.25.
        let p = [0.9f32.ln(), 0.1f32.ln()];
        let q = [0.6f32.ln() + 3.0, 0.4f32.ln() + 3.0];
        let k = position_kl(&p, &q, 1).unwrap();
        let want = 0.9 * 1.5f64.ln() + 0.1 * 0.25f64.ln();
        assert!((k.kld - want).abs() < 1e-6, "{} vs {want}", k.kld);
        assert!((k.delta_p - 0.3).abs() < 1e-6);
        assert!(k.same_top);
        assert!((k.nll_model - (-(0.4f64.ln()))).abs() < 1e-6);
        let flipped = position_kl(&p, &[0.3f32.ln(), 0.7f32.ln()], 0).unwrap();
        assert!(!flipped.same_top);
    }

    #[test]
    fn mismatched_rows_are_errors() {
        assert!(matches!(
            position_kl(&[0.0; 3], &[0.0; 4], 0),
            Err(AnalysisError::VocabularyMismatch { base: 3, model: 4 })
        ));
        assert!(position_kl(&[0.0; 3], &[0.0; 3], 3).is_err());
    }

    #[test]
    fn quantiles_interpolate_between_ranks() {
        let v: Vec<f64> = (0..=10).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 5.0);
        assert!((quantile(&v, 0.95) - 9.5).abs() < 1e-12);
        assert_eq!(quantile(&[], 0.5), 0.0);
        let q = Quantiles::of(&[4.0, 1.0, 3.0, 2.0]);
        assert_eq!((q.min, q.median, q.max), (1.0, 2.5, 4.0));
    }

    #[test]
    fn summary_of_known_positions() {
        let mut s = KlStats::default();
        for (kld, dp, same) in [
            (0.1, 0.1, true),
            (0.3, -0.1, false),
            (0.2, 0.0, true),
            (0.0, 0.0, true),
        ] {
            s.push(&PositionKl {
                kld,
                delta_p: dp,
                same_top: same,
                nll_base: 1.0,
                nll_model: 1.0 + kld,
            });
        }
        let k = s.summary(1, 8);
        assert!((k.mean_kld - 0.15).abs() < 1e-12);
        assert!((k.median_kld - 0.15).abs() < 1e-12);
        assert!((k.same_top_p_percent - 75.0).abs() < 1e-9);
        assert!((k.rms_dp_percent - 100.0 * (0.02f64 / 4.0).sqrt()).abs() < 1e-9);
        assert!((k.ppl_base - 1f64.exp()).abs() < 1e-12);
        assert!((k.ppl_ratio - 0.15f64.exp()).abs() < 1e-12);
        assert!(
            (k.nll_correlation - 0.0).abs() < 1e-12,
            "base NLL is constant"
        );
    }
}
