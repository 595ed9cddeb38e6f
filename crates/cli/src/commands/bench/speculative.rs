//! `ferrolm bench --spec KIND`: each repetition generates `n` tokens of a real prompt by
//! greedy decoding, once plainly ([`Session::generate`]) and once speculatively
//! ([`generate_speculative`]), checks the two agree token for token (greedy speculative
//! decoding is lossless), and times the decode steps of both. Neither stops at an
//! end-of-generation token, so both always produce `n` tokens.
//!
//! The speculative time includes the drafter's own work, a draft model's pass over the
//! prompt among it, since that is part of what speculation costs.

use std::fmt::Write as _;
use std::ops::ControlFlow;

use anyhow::{Result, bail};
use ferrolm_analysis::speculative::{
    SpecKind, SpeculativeOptions, SpeculativeRun, SpeculativeStats, generate_speculative,
};
use ferrolm_sampling::{SamplerChain, SamplingConfig};
use ferrolm_transformer::{Backend, CpuOptions, GenerateOptions, Generation, Model, Session};
use serde_json::{Value, json};

use super::{TestResult, round};

/// A speculative comparison: the drafter, the tokenized prompt and the test sizes.
pub struct SpecBench<'a> {
    pub kind: &'a SpecKind,
    pub prompt: Vec<u32>,
    pub n_gen: usize,
    pub repetitions: usize,
    pub batch_size: usize,
    pub draft_len: usize,
    /// Where a `draft:PATH` model runs.
    pub draft_backend: CpuOptions,
}

/// What the speculative row adds to the table and the JSON.
pub struct SpecSummary {
    kind: String,
    draft_len: usize,
    prompt_tokens: usize,
    /// Counts of one generation (greedy decoding makes every repetition alike).
    stats: SpeculativeStats,
    greedy_ts: f64,
    speculative_ts: f64,
}

impl SpecSummary {
    fn speedup(&self) -> f64 {
        self.speculative_ts / self.greedy_ts
    }

    pub fn to_json(&self) -> Value {
        json!({
            "kind": self.kind,
            "draft_len": self.draft_len,
            "prompt_tokens": self.prompt_tokens,
            "drafted": self.stats.drafted,
            "accepted": self.stats.accepted,
            "rounds": self.stats.rounds,
            "acceptance_rate": (self.stats.acceptance_rate() * 1e4).round() / 1e4,
            "greedy_avg_ts": round(self.greedy_ts),
            "speedup": (self.speedup() * 1e3).round() / 1e3,
            "identical": true,
        })
    }

    pub fn write_table(&self, out: &mut String, repetitions: usize) {
        out.push_str(
            "| drafter | prompt | greedy t/s | speculative t/s | speed-up | drafted | accepted | acceptance | target passes |\n",
        );
        out.push_str("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
        let s = &self.stats;
        let _ = writeln!(
            out,
            "| {} (draft {}) | {} t | {:.2} | {:.2} | {:.2}x | {} | {} | {:.1}% | {} |",
            self.kind,
            self.draft_len,
            self.prompt_tokens,
            self.greedy_ts,
            self.speculative_ts,
            self.speedup(),
            s.drafted,
            s.accepted,
            100.0 * s.acceptance_rate(),
            s.rounds,
        );
        let _ = writeln!(
            out,
            "\nspeculative and greedy tokens identical in all {repetitions} repetitions"
        );
    }
}

impl SpecBench<'_> {
    /// Runs the repetitions; returns the greedy row and the speculative row.
    pub fn measure<'w, B: Backend<'w>>(&self, model: &Model<'w, B>) -> Result<[TestResult; 2]> {
        let n_ctx = self.prompt.len() + self.n_gen;
        let n_ctx_train = model.config().n_ctx_train;
        if n_ctx > n_ctx_train {
            bail!(
                "the --spec prompt ({} tokens) and -n {} need {n_ctx} positions, more than the training context {n_ctx_train}",
                self.prompt.len(),
                self.n_gen
            );
        }
        let depth = self.prompt.len();
        let mut greedy = TestResult::new(
            format!("tg{} @ d{depth} greedy", self.n_gen),
            0,
            self.n_gen,
            depth,
        );
        let mut spec = TestResult::new(
            format!("tg{} @ d{depth} spec {}", self.n_gen, self.kind),
            0,
            self.n_gen,
            depth,
        );
        let mut stats = None;
        // Warm-up (not reported): touches the weights and the buffers once.
        self.greedy(model, n_ctx, 2)?;
        for rep in 1..=self.repetitions {
            let plain = self.greedy(model, n_ctx, self.n_gen)?;
            let (fast, s) = self.speculative(model, n_ctx)?;
            if let Some(i) = (0..self.n_gen).find(|&i| plain.ids.get(i) != fast.ids.get(i)) {
                bail!(
                    "--spec {} is not lossless: in repetition {rep}, generated token {i} is {:?} by greedy decoding but {:?} speculatively",
                    self.kind,
                    plain.ids.get(i),
                    fast.ids.get(i)
                );
            }
            greedy.samples.push(plain.decode_tokens_per_second());
            spec.samples.push(fast.decode_tokens_per_second());
            stats.get_or_insert(s);
        }
        spec.speculative = Some(SpecSummary {
            kind: self.kind.to_string(),
            draft_len: self.draft_len,
            prompt_tokens: depth,
            stats: stats.unwrap_or_default(),
            greedy_ts: greedy.mean(),
            speculative_ts: spec.mean(),
        });
        Ok([greedy, spec])
    }

    fn greedy<'w, B: Backend<'w>>(
        &self,
        model: &Model<'w, B>,
        n_ctx: usize,
        max_tokens: usize,
    ) -> Result<Generation> {
        let mut session = Session::new(model, n_ctx, self.batch_size)?;
        Ok(session.generate(
            &self.prompt,
            &mut greedy_chain()?,
            GenerateOptions { max_tokens },
            |_| false,
            |_| Ok(ControlFlow::Continue(())),
        )?)
    }

    fn speculative<'w, B: Backend<'w>>(
        &self,
        model: &Model<'w, B>,
        n_ctx: usize,
    ) -> Result<(Generation, SpeculativeStats)> {
        let run = SpeculativeRun {
            kind: self.kind,
            n_ctx,
            max_batch: self.batch_size,
            options: SpeculativeOptions {
                draft_len: self.draft_len,
                seed: 0,
            },
            draft_sampler: greedy_chain()?,
            draft_backend: self.draft_backend,
        };
        Ok(generate_speculative(
            model,
            &self.prompt,
            &mut greedy_chain()?,
            GenerateOptions {
                max_tokens: self.n_gen,
            },
            run,
            |_| false,
            |_| Ok(ControlFlow::Continue(())),
        )?)
    }
}

fn greedy_chain() -> Result<SamplerChain> {
    Ok(SamplingConfig {
        temperature: 0.0,
        ..SamplingConfig::default()
    }
    .build()?)
}
