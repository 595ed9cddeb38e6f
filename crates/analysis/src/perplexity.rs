//! Perplexity of a text under a model, by llama.cpp's protocol (see [`crate::chunks`]):
//! `PPL = exp(mean NLL)` over every scored token of every chunk, with llama.cpp's
//! standard error `PPL · sqrt(var(NLL) / (N − 1))`, the delta-method error of
//! `exp(mean)`.

use ferrolm_tokenizer::{EncodeOptions, Tokenizer};
use ferrolm_transformer::{Backend, Model};
use serde::Serialize;

use crate::chunks::{ChunkEvaluator, ChunkPlan};
use crate::error::Result;
use crate::logits;

/// Running sums of negative log-likelihoods (nats).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct NllStats {
    sum: f64,
    sum_sq: f64,
    count: usize,
}

impl NllStats {
    /// Adds one token's NLL.
    pub fn push(&mut self, nll: f64) {
        self.sum += nll;
        self.sum_sq += nll * nll;
        self.count += 1;
    }

    /// Tokens added.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Mean NLL in nats (0 when empty).
    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum / self.count as f64
        }
    }

    /// `exp(mean NLL)`.
    pub fn ppl(&self) -> f64 {
        self.mean().exp()
    }

    /// The standard error of [`NllStats::ppl`] as llama.cpp reports it:
    /// `ppl · sqrt((E[nll²] − E[nll]²) / (N − 1))`, 0 with fewer than two tokens.
    pub fn ppl_stderr(&self) -> f64 {
        if self.count < 2 {
            return 0.0;
        }
        let n = self.count as f64;
        let mean = self.sum / n;
        let var = self.sum_sq / n - mean * mean;
        if var > 0.0 {
            (var / (n - 1.0)).sqrt() * self.ppl()
        } else {
            0.0
        }
    }
}

/// Switches of a perplexity run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PerplexityOptions {
    /// Tokens per chunk (llama.cpp's `-c`).
    pub n_ctx: usize,
    /// Tokens per forward pass (0: the whole chunk, up to 512). The figure does not depend on it.
    pub batch: usize,
}

impl PerplexityOptions {
    /// Chunks of `n_ctx` tokens, each run in one batch.
    pub fn new(n_ctx: usize) -> Self {
        Self { n_ctx, batch: 0 }
    }
}

/// Progress after each chunk.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ChunkProgress {
    /// Chunks done.
    pub done: usize,
    /// Chunks in the text.
    pub total: usize,
    /// Perplexity over the chunks done so far.
    pub ppl: f64,
}

/// The result of a perplexity run.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Perplexity {
    /// `exp(mean NLL)`.
    pub ppl: f64,
    /// Chunks evaluated.
    pub chunks: usize,
    /// Tokens scored over all chunks.
    pub tokens_scored: usize,
    /// Standard error of `ppl`, as llama.cpp computes it.
    pub ppl_stderr: f64,
    /// Mean NLL in nats.
    pub mean_nll: f64,
    /// Tokens per chunk.
    pub n_ctx: usize,
}

impl Perplexity {
    fn from_stats(stats: &NllStats, chunks: usize, n_ctx: usize) -> Self {
        Self {
            ppl: stats.ppl(),
            chunks,
            tokens_scored: stats.count(),
            ppl_stderr: stats.ppl_stderr(),
            mean_nll: stats.mean(),
            n_ctx,
        }
    }
}

/// The tokens and BOS rule of llama.cpp's protocol for `text`: the whole text tokenized
/// with the model's BOS/EOS rules (special-token text left as text), and the BOS that
/// replaces each chunk's first token when the model adds one.
pub fn tokenize_text(tokenizer: &Tokenizer, text: &str) -> (Vec<u32>, Option<u32>) {
    let tokens = tokenizer.encode(
        text,
        EncodeOptions {
            add_special: true,
            parse_special: false,
        },
    );
    let bos = if tokenizer.add_bos() {
        tokenizer.bos()
    } else {
        None
    };
    (tokens, bos)
}

/// Perplexity of `tokens` under `model`, chunk by chunk; `on_chunk` hears after each.
pub fn perplexity<'w, B: Backend<'w>>(
    model: &Model<'w, B>,
    tokens: &[u32],
    bos: Option<u32>,
    options: PerplexityOptions,
    mut on_chunk: impl FnMut(ChunkProgress),
) -> Result<Perplexity> {
    let plan = ChunkPlan::new(options.n_ctx, bos)?;
    let total = plan.check_text(tokens.len())?;
    let mut eval = ChunkEvaluator::new(model, plan, options.batch)?;
    let batches: Vec<_> = eval.batches().collect();
    let mut stats = NllStats::default();
    for i in 0..total {
        let chunk = plan.chunk(tokens, i)?;
        for range in &batches {
            let rows = eval.run(&chunk, range.clone())?;
            for r in 0..rows.len() {
                stats.push(logits::nll(rows.row(r), chunk[rows.first + r + 1])?);
            }
        }
        on_chunk(ChunkProgress {
            done: i + 1,
            total,
            ppl: stats.ppl(),
        });
    }
    Ok(Perplexity::from_stats(&stats, total, plan.n_ctx()))
}

/// [`perplexity`] of a text: tokenized by [`tokenize_text`].
pub fn perplexity_of_text<'w, B: Backend<'w>>(
    model: &Model<'w, B>,
    tokenizer: &Tokenizer,
    text: &str,
    options: PerplexityOptions,
    on_chunk: impl FnMut(ChunkProgress),
) -> Result<Perplexity> {
    let (tokens, bos) = tokenize_text(tokenizer, text);
    perplexity(model, &tokens, bos, options, on_chunk)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn stats_give_exp_mean_and_llama_cpp_stderr() {
        let mut s = NllStats::default();
        for x in [1.0, 2.0, 3.0, 4.0] {
            s.push(x);
        }
        assert_eq!(s.count(), 4);
        assert!((s.mean() - 2.5).abs() < 1e-12);
        assert!((s.ppl() - 2.5f64.exp()).abs() < 1e-9);
        // population variance 1.25, divided by N-1 = 3.
        let want = (1.25f64 / 3.0).sqrt() * 2.5f64.exp();
        assert!((s.ppl_stderr() - want).abs() < 1e-9);
    }

    #[test]
    fn constant_nll_has_no_error() {
        let mut s = NllStats::default();
        assert_eq!(s.ppl_stderr(), 0.0);
        s.push(0.7);
        s.push(0.7);
        assert_eq!(s.ppl_stderr(), 0.0);
        assert!((s.ppl() - 0.7f64.exp()).abs() < 1e-12);
    }
}
