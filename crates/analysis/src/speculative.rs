//! Speculative decoding: a cheap drafter proposes a few tokens, the target model checks
//! them all in one forward pass, and a rejection rule keeps the output distributed exactly
//! as the target alone would produce it.
//!
//! For a drafted token `x` drawn from the drafter's distribution `q`, with `p` the target's
//! distribution at that position (the sampler chain's final candidate probabilities; a
//! point mass on the chosen token for greedy chains):
//! - accept `x` with probability `min(1, p(x) / q(x))`;
//! - otherwise draw the replacement from `max(0, p − q)`, renormalized, and drop the rest
//!   of the draft.
//!
//! When every drafted token is accepted, the target's distribution after the last one gives
//! one more token for free. A deterministic draft (n-gram lookup) has `q(x) = 1`. With a
//! greedy chain `p` is a point mass, so a draft survives exactly as long as it matches
//! the target's argmax and the output is plain greedy decoding's.
//!
//! The target's KV cache rolls back (truncates) the positions of rejected tokens; a draft
//! model's session, or the separate cache of a self-speculative drafter's first layers,
//! keeps the longest prefix it shares with the accepted sequence.

use std::fmt;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, Instant};

use ferrolm_gguf::GgufFile;
use ferrolm_sampling::SamplerChain;
use ferrolm_tokenizer::Tokenizer;
use ferrolm_transformer::{
    Backend, Batch, CpuBackend, CpuOptions, GenerateOptions, Generation, Model, Session, State,
    StopReason, stream_text,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::error::{AnalysisError, Result};

/// A probability distribution over a few tokens.
#[derive(Clone, Debug, PartialEq)]
pub enum TokenDistribution {
    /// All the mass on one token.
    Point(u32),
    /// `(token, probability)` pairs; tokens not listed have probability 0.
    Sparse(Vec<(u32, f32)>),
}

impl TokenDistribution {
    /// The probability of `token`.
    pub fn prob(&self, token: u32) -> f64 {
        match self {
            Self::Point(t) => f64::from(u8::from(*t == token)),
            Self::Sparse(v) => v
                .iter()
                .filter(|(t, _)| *t == token)
                .map(|&(_, p)| f64::from(p))
                .sum(),
        }
    }

    /// The distribution a sampler chain's last `sample` drew from: its candidates'
    /// probabilities when it computed them, else a point mass on the chosen token.
    pub fn of_chain(chain: &SamplerChain, chosen: u32) -> Self {
        let c = chain.candidates();
        if c.has_probabilities() {
            Self::Sparse(
                c.as_slice()
                    .iter()
                    .filter(|c| c.prob > 0.0)
                    .map(|c| (c.id, c.prob))
                    .collect(),
            )
        } else {
            Self::Point(chosen)
        }
    }
}

/// A drafted token and the distribution it was drawn from.
#[derive(Clone, Debug, PartialEq)]
pub struct Draft {
    /// The proposed token.
    pub token: u32,
    /// The drafter's distribution at that position.
    pub q: TokenDistribution,
}

/// Proposes tokens to continue a sequence.
pub trait Drafter {
    /// Appends up to `max` proposed tokens that continue `context` (the whole sequence so
    /// far) to `out`.
    fn draft(&mut self, context: &[u32], max: usize, out: &mut Vec<Draft>) -> Result<()>;
}

/// What the rejection rule decided for one drafted token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The drafted token stands.
    Accept,
    /// The draft is rejected from here on; this token takes its place.
    Replace(u32),
}

/// Applies the rejection rule to `draft` under the target distribution `p`.
pub fn verify(p: &TokenDistribution, draft: &Draft, rng: &mut impl Rng) -> Verdict {
    let (px, qx) = (p.prob(draft.token), draft.q.prob(draft.token));
    let u: f64 = rng.random();
    if qx > 0.0 && u * qx < px {
        return Verdict::Accept;
    }
    let residual: Vec<(u32, f64)> = match p {
        TokenDistribution::Point(t) => vec![(*t, 1.0)],
        TokenDistribution::Sparse(v) => v
            .iter()
            .map(|&(t, pt)| (t, (f64::from(pt) - draft.q.prob(t)).max(0.0)))
            .filter(|&(_, r)| r > 0.0)
            .collect(),
    };
    let total: f64 = residual.iter().map(|r| r.1).sum();
    if total <= 0.0 {
        // Only reachable through rounding (p ≤ q everywhere means p = q, where every draft
        // is accepted): fall back to the target's most likely token.
        return Verdict::Replace(most_likely(p));
    }
    let mut u = rng.random::<f64>() * total;
    for &(t, r) in &residual {
        if u < r {
            return Verdict::Replace(t);
        }
        u -= r;
    }
    Verdict::Replace(residual[residual.len() - 1].0)
}

fn most_likely(p: &TokenDistribution) -> u32 {
    match p {
        TokenDistribution::Point(t) => *t,
        TokenDistribution::Sparse(v) => {
            v.iter()
                .fold(
                    (0, f32::NEG_INFINITY),
                    |b, &(t, q)| if q > b.1 { (t, q) } else { b },
                )
                .0
        }
    }
}

/// Drafts by looking up the sequence's last `n` tokens earlier in the sequence (prompt and
/// output) and proposing what followed them, trying the longest `n` first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NGramDrafter {
    /// Longest suffix looked up.
    pub max_n: usize,
    /// Shortest suffix looked up.
    pub min_n: usize,
}

impl Default for NGramDrafter {
    fn default() -> Self {
        Self { max_n: 4, min_n: 2 }
    }
}

impl Drafter for NGramDrafter {
    fn draft(&mut self, context: &[u32], max: usize, out: &mut Vec<Draft>) -> Result<()> {
        let len = context.len();
        for n in (self.min_n.max(1)..=self.max_n).rev() {
            if n >= len {
                continue;
            }
            let suffix = &context[len - n..];
            // The most recent earlier occurrence, so recent repetitions win.
            if let Some(j) = (0..len - n).rev().find(|&j| &context[j..j + n] == suffix) {
                let follow = &context[j + n..len.min(j + n + max)];
                out.extend(follow.iter().map(|&t| Draft {
                    token: t,
                    q: TokenDistribution::Point(t),
                }));
                return Ok(());
            }
        }
        Ok(())
    }
}

/// Drafts with a smaller model of the same vocabulary, sampling each token with its own
/// sampler chain (a greedy chain makes point-mass drafts). The chain should have no
/// penalties: it never hears which tokens were accepted.
pub struct ModelDrafter<'m, 'w, B: Backend<'w>> {
    session: Session<'m, 'w, B>,
    chain: SamplerChain,
}

impl<'m, 'w, B: Backend<'w>> ModelDrafter<'m, 'w, B> {
    /// A drafter running `model` over up to `n_ctx` positions.
    pub fn new(model: &'m Model<'w, B>, n_ctx: usize, chain: SamplerChain) -> Result<Self> {
        Ok(Self {
            session: Session::new(model, n_ctx, 512)?,
            chain,
        })
    }
}

impl<'w, B: Backend<'w>> Drafter for ModelDrafter<'_, 'w, B> {
    fn draft(&mut self, context: &[u32], max: usize, out: &mut Vec<Draft>) -> Result<()> {
        let room = self.session.n_ctx().saturating_sub(context.len());
        let max = max.min(room);
        if max == 0 || context.is_empty() {
            return Ok(());
        }
        self.session.sync(context)?;
        for i in 0..max {
            let token = self
                .chain
                .sample(self.session.logits())
                .map_err(ferrolm_transformer::TransformerError::from)?;
            out.push(Draft {
                token,
                q: TokenDistribution::of_chain(&self.chain, token),
            });
            if i + 1 < max {
                self.session.feed(&[token])?;
            }
        }
        Ok(())
    }
}

/// Drafts with the target model's own first `N` layers and its output norm and head
/// (self-speculative, early exit), sampling each token with its own sampler chain. It keeps
/// a KV cache of those layers only, holding the longest prefix it shares with the context.
pub struct SelfDrafter<'m, 'w, B: Backend<'w>> {
    model: &'m Model<'w, B>,
    n_layers: usize,
    kv: B::Kv,
    state: State<'w, B>,
    tokens: Vec<u32>,
    n_ctx: usize,
    max_batch: usize,
    positions: Vec<u32>,
    seqs: Vec<u32>,
    chain: SamplerChain,
}

impl<'m, 'w, B: Backend<'w>> SelfDrafter<'m, 'w, B> {
    /// A drafter running the first `n_layers` of `model` (fewer than all of them) over up to
    /// `n_ctx` positions.
    pub fn new(
        model: &'m Model<'w, B>,
        n_layers: usize,
        n_ctx: usize,
        chain: SamplerChain,
    ) -> Result<Self> {
        let n_layer = model.config().n_layer;
        if n_layers == 0 || n_layers >= n_layer {
            return Err(AnalysisError::InvalidInput {
                what: "self-speculative drafting",
                reason: format!(
                    "self:{n_layers} with a model of {n_layer} layers (N must be 1 to {})",
                    n_layer.saturating_sub(1)
                ),
            });
        }
        let max_batch = n_ctx.clamp(1, 512);
        Ok(Self {
            model,
            n_layers,
            kv: model.kv_cache_layers(n_ctx, 1, n_layers)?,
            state: model.state(max_batch, 1)?,
            tokens: Vec::with_capacity(n_ctx),
            n_ctx,
            max_batch,
            positions: Vec::with_capacity(max_batch),
            seqs: vec![0; max_batch],
            chain,
        })
    }

    /// Runs `tokens` after those the cache holds; the early-exit logits after the last one
    /// are then in the state.
    fn feed(&mut self, tokens: &[u32]) -> Result<()> {
        for chunk in tokens.chunks(self.max_batch) {
            let start = self.tokens.len() as u32;
            self.positions.clear();
            self.positions.extend(start..start + chunk.len() as u32);
            let outputs = [chunk.len() - 1];
            let batch = Batch {
                tokens: chunk,
                positions: &self.positions,
                seqs: &self.seqs[..chunk.len()],
                outputs: &outputs,
            };
            self.model
                .forward_layers(&mut self.state, &mut self.kv, &batch, self.n_layers)?;
            self.tokens.extend_from_slice(chunk);
        }
        Ok(())
    }
}

impl<'w, B: Backend<'w>> Drafter for SelfDrafter<'_, 'w, B> {
    fn draft(&mut self, context: &[u32], max: usize, out: &mut Vec<Draft>) -> Result<()> {
        let room = self.n_ctx.saturating_sub(context.len());
        let max = max.min(room);
        if max == 0 || context.is_empty() {
            return Ok(());
        }
        // Keep the longest prefix shared with the context (rejected drafts roll back), but
        // always run the last context token so its logits are fresh.
        let common = self
            .tokens
            .iter()
            .zip(context)
            .take_while(|(a, b)| a == b)
            .count()
            .min(context.len() - 1);
        self.model.backend().kv_truncate(&mut self.kv, 0, common)?;
        self.tokens.truncate(common);
        self.feed(&context[common..])?;
        for i in 0..max {
            let token = self
                .chain
                .sample(self.state.logits())
                .map_err(ferrolm_transformer::TransformerError::from)?;
            out.push(Draft {
                token,
                q: TokenDistribution::of_chain(&self.chain, token),
            });
            if i + 1 < max {
                self.feed(&[token])?;
            }
        }
        Ok(())
    }
}

/// A drafter as the command line names it: `ngram`, `self:N` (the target's first `N`
/// layers and its output head) or `draft:PATH` (another model file).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SpecKind {
    /// [`NGramDrafter`].
    NGram,
    /// The target's first `N` layers.
    SelfLayers(usize),
    /// A draft model file.
    Draft(PathBuf),
}

impl FromStr for SpecKind {
    type Err = AnalysisError;

    fn from_str(s: &str) -> Result<Self> {
        let bad = |reason: &str| AnalysisError::InvalidInput {
            what: "speculative drafter",
            reason: format!("`{s}`: {reason} (use ngram, self:N or draft:PATH)"),
        };
        match s.split_once(':') {
            None if s == "ngram" => Ok(Self::NGram),
            Some(("self", n)) => match n.parse::<usize>() {
                Ok(n) if n > 0 => Ok(Self::SelfLayers(n)),
                _ => Err(bad("N must be a positive number of layers")),
            },
            Some(("draft", path)) if !path.is_empty() => Ok(Self::Draft(PathBuf::from(path))),
            _ => Err(bad("unknown drafter")),
        }
    }
}

/// The command-line name: `ngram`, `self:N` or `draft:PATH`.
impl fmt::Display for SpecKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NGram => f.write_str("ngram"),
            Self::SelfLayers(n) => write!(f, "self:{n}"),
            Self::Draft(path) => write!(f, "draft:{}", path.display()),
        }
    }
}

/// Drafting and acceptance counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SpeculativeStats {
    /// Tokens proposed and checked.
    pub drafted: usize,
    /// Proposed tokens the target accepted.
    pub accepted: usize,
    /// Target forward passes after the prompt.
    pub rounds: usize,
}

impl SpeculativeStats {
    /// `accepted / drafted` (0 when nothing was drafted).
    pub fn acceptance_rate(&self) -> f64 {
        if self.drafted == 0 {
            0.0
        } else {
            self.accepted as f64 / self.drafted as f64
        }
    }
}

/// Options of speculative decoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpeculativeOptions {
    /// Most tokens drafted per round. The target checks `draft_len + 1` positions at once.
    pub draft_len: usize,
    /// Seed of the acceptance draws.
    pub seed: u64,
}

impl Default for SpeculativeOptions {
    fn default() -> Self {
        Self {
            draft_len: 4,
            seed: 0,
        }
    }
}

/// Generates with a target model, checking drafts in batches.
pub struct SpeculativeDecoder<'m, 'w, B: Backend<'w>> {
    model: &'m Model<'w, B>,
    kv: B::Kv,
    state: State<'w, B>,
    n_ctx: usize,
    max_batch: usize,
    options: SpeculativeOptions,
    rng: ChaCha8Rng,
}

impl<'m, 'w, B: Backend<'w>> SpeculativeDecoder<'m, 'w, B> {
    /// A decoder over up to `n_ctx` positions that runs prompts in batches of `max_batch`
    /// (as [`Session`] does, so greedy results match it).
    pub fn new(
        model: &'m Model<'w, B>,
        n_ctx: usize,
        max_batch: usize,
        options: SpeculativeOptions,
    ) -> Result<Self> {
        let check = options.draft_len + 1;
        let max_batch = max_batch.clamp(check, n_ctx.max(check));
        Ok(Self {
            model,
            kv: model.kv_cache(n_ctx, 1)?,
            state: model.state(max_batch, check)?,
            n_ctx,
            max_batch,
            options,
            rng: ChaCha8Rng::seed_from_u64(options.seed),
        })
    }

    fn run(&mut self, tokens: &[u32], start: usize, outputs: &[usize]) -> Result<()> {
        let positions: Vec<u32> = (start as u32..(start + tokens.len()) as u32).collect();
        let seqs = vec![0; tokens.len()];
        let batch = Batch {
            tokens,
            positions: &positions,
            seqs: &seqs,
            outputs,
        };
        self.model.forward(&mut self.state, &mut self.kv, &batch)?;
        Ok(())
    }

    /// Generates a continuation of `prompt` as [`Session::generate`] does (same stopping
    /// rules and callback), drafting with `drafter`. Returns the generation and the
    /// drafting counts.
    pub fn generate(
        &mut self,
        prompt: &[u32],
        sampler: &mut SamplerChain,
        drafter: &mut dyn Drafter,
        options: GenerateOptions,
        is_end: impl Fn(u32) -> bool,
        mut on_token: impl FnMut(u32) -> Result<ControlFlow<()>>,
    ) -> Result<(Generation, SpeculativeStats)> {
        if prompt.is_empty() || prompt.len() > self.n_ctx {
            return Err(AnalysisError::InvalidInput {
                what: "speculative decoding",
                reason: format!(
                    "a prompt of {} tokens with a context of {}",
                    prompt.len(),
                    self.n_ctx
                ),
            });
        }
        let start = Instant::now();
        let backend = self.model.backend();
        backend.kv_clear(&mut self.kv);
        for chunk_start in (0..prompt.len()).step_by(self.max_batch) {
            let chunk = &prompt[chunk_start..(chunk_start + self.max_batch).min(prompt.len())];
            self.run(chunk, chunk_start, &[chunk.len() - 1])?;
        }
        for &t in prompt {
            sampler.accept(t);
        }
        let mut context = prompt.to_vec();
        let mut generation = Generation {
            ids: Vec::with_capacity(options.max_tokens),
            stop: StopReason::MaxTokens,
            prompt_tokens: prompt.len(),
            prompt_time: Duration::ZERO,
            decode_time: Duration::ZERO,
        };
        let mut stats = SpeculativeStats::default();
        if options.max_tokens == 0 {
            generation.prompt_time = start.elapsed();
            return Ok((generation, stats));
        }
        let vocab = self.model.config().vocab;
        let mut drafts = Vec::new();
        // The first token comes from the prompt's logits, as in plain decoding.
        let token = sampler
            .sample(self.state.logits())
            .map_err(ferrolm_transformer::TransformerError::from)?;
        generation.prompt_time = start.elapsed();
        let first_token_at = Instant::now();
        let mut flow = emit(
            token,
            &mut context,
            &mut generation,
            sampler,
            &is_end,
            &mut on_token,
        )?;
        // The cache holds every context token but the last, which the next pass runs
        // together with the draft.
        while flow.is_continue() && generation.ids.len() < options.max_tokens {
            let cur = context.len() - 1;
            if cur >= self.n_ctx {
                generation.stop = StopReason::ContextFull;
                break;
            }
            let room = (self.n_ctx - context.len())
                .min(options.max_tokens - generation.ids.len() - 1)
                .min(self.options.draft_len);
            drafts.clear();
            if room > 0 {
                drafter.draft(&context, room, &mut drafts)?;
                drafts.truncate(room);
            }
            let mut batch_tokens = vec![context[cur]];
            batch_tokens.extend(drafts.iter().map(|d| d.token));
            let outputs: Vec<usize> = (0..batch_tokens.len()).collect();
            self.run(&batch_tokens, cur, &outputs)?;
            stats.rounds += 1;
            stats.drafted += drafts.len();
            for i in 0..=drafts.len() {
                let logits = &self.state.logits()[i * vocab..(i + 1) * vocab];
                let chosen = sampler
                    .sample(logits)
                    .map_err(ferrolm_transformer::TransformerError::from)?;
                // Past the draft, the target's own choice is the free extra token.
                let verdict = match drafts.get(i) {
                    Some(d) => verify(
                        &TokenDistribution::of_chain(sampler, chosen),
                        d,
                        &mut self.rng,
                    ),
                    None => Verdict::Replace(chosen),
                };
                let token = match verdict {
                    Verdict::Accept => {
                        stats.accepted += 1;
                        drafts[i].token
                    }
                    Verdict::Replace(t) => t,
                };
                flow = emit(
                    token,
                    &mut context,
                    &mut generation,
                    sampler,
                    &is_end,
                    &mut on_token,
                )?;
                let stop = flow.is_break() || generation.ids.len() >= options.max_tokens;
                if stop || verdict != Verdict::Accept {
                    // Forget the positions of rejected drafts; the last token runs next.
                    let keep = (context.len() - 1).min(cur + batch_tokens.len());
                    backend.kv_truncate(&mut self.kv, 0, keep)?;
                    break;
                }
            }
        }
        generation.decode_time = first_token_at.elapsed();
        Ok((generation, stats))
    }
}

impl<'w, B: Backend<'w>> SpeculativeDecoder<'_, 'w, B> {
    /// [`SpeculativeDecoder::generate`] with the text of each token streamed to `on_text`
    /// through the tokenizer's streaming decoder (complete UTF-8 characters only), stopping
    /// at the tokenizer's end-of-generation tokens, as [`Session::generate_text`] does.
    pub fn generate_text(
        &mut self,
        tokenizer: &Tokenizer,
        prompt: &[u32],
        sampler: &mut SamplerChain,
        drafter: &mut dyn Drafter,
        options: GenerateOptions,
        on_text: impl FnMut(&str) -> Result<ControlFlow<()>>,
    ) -> Result<(Generation, SpeculativeStats)> {
        stream_text(tokenizer, on_text, |is_end, on_token| {
            self.generate(prompt, sampler, drafter, options, is_end, on_token)
        })
    }
}

/// Everything a speculative generation needs besides the target model.
pub struct SpeculativeRun<'a> {
    /// The drafter.
    pub kind: &'a SpecKind,
    /// Context size.
    pub n_ctx: usize,
    /// Largest prompt batch.
    pub max_batch: usize,
    /// Drafting and acceptance settings.
    pub options: SpeculativeOptions,
    /// The chain a draft model or the target's first layers sample with (no penalties: it
    /// never hears which tokens were accepted).
    pub draft_sampler: SamplerChain,
    /// The CPU backend a draft model runs on.
    pub draft_backend: CpuOptions,
}

/// Generates a continuation of `prompt` with speculative decoding, streaming its text:
/// [`generate_speculative`] with the tokenizer's streaming decoder and end-of-generation
/// tokens, as [`Session::generate_text`] does.
pub fn generate_text_speculative<'w, B: Backend<'w>>(
    target: &Model<'w, B>,
    tokenizer: &Tokenizer,
    prompt: &[u32],
    sampler: &mut SamplerChain,
    options: GenerateOptions,
    run: SpeculativeRun<'_>,
    on_text: impl FnMut(&str) -> Result<ControlFlow<()>>,
) -> Result<(Generation, SpeculativeStats)> {
    stream_text(tokenizer, on_text, |is_end, on_token| {
        generate_speculative(target, prompt, sampler, options, run, is_end, on_token)
    })
}

/// Generates a continuation of `prompt` with speculative decoding, with the stopping rules
/// and callback of [`SpeculativeDecoder::generate`]: builds the drafter `run.kind` names
/// (for `draft:PATH`, the model is loaded from the file on the CPU and must share the
/// target's vocabulary; `self:N` runs on the target's own backend) and runs a
/// [`SpeculativeDecoder`]. The drafter starts empty, so its own pass over the prompt falls
/// in the generation's decode time.
pub fn generate_speculative<'w, B: Backend<'w>>(
    target: &Model<'w, B>,
    prompt: &[u32],
    sampler: &mut SamplerChain,
    options: GenerateOptions,
    run: SpeculativeRun<'_>,
    is_end: impl Fn(u32) -> bool,
    on_token: impl FnMut(u32) -> Result<ControlFlow<()>>,
) -> Result<(Generation, SpeculativeStats)> {
    let mut decoder = SpeculativeDecoder::new(target, run.n_ctx, run.max_batch, run.options)?;
    match run.kind {
        SpecKind::NGram => decoder.generate(
            prompt,
            sampler,
            &mut NGramDrafter::default(),
            options,
            is_end,
            on_token,
        ),
        SpecKind::Draft(path) => {
            let file = GgufFile::open(path)?;
            let gguf = file.gguf()?;
            let draft = Model::load(&gguf, CpuBackend::new(run.draft_backend)?)?;
            let (vt, vd) = (target.config().vocab, draft.config().vocab);
            if vt != vd {
                return Err(AnalysisError::VocabularyMismatch {
                    base: vt,
                    model: vd,
                });
            }
            let mut drafter = ModelDrafter::new(&draft, run.n_ctx, run.draft_sampler)?;
            decoder.generate(prompt, sampler, &mut drafter, options, is_end, on_token)
        }
        SpecKind::SelfLayers(n) => {
            let mut drafter = SelfDrafter::new(target, *n, run.n_ctx, run.draft_sampler)?;
            decoder.generate(prompt, sampler, &mut drafter, options, is_end, on_token)
        }
    }
}

/// Hands `token` to the caller unless it ends the generation.
fn emit(
    token: u32,
    context: &mut Vec<u32>,
    generation: &mut Generation,
    sampler: &mut SamplerChain,
    is_end: &impl Fn(u32) -> bool,
    on_token: &mut impl FnMut(u32) -> Result<ControlFlow<()>>,
) -> Result<ControlFlow<()>> {
    if is_end(token) {
        generation.stop = StopReason::EndOfGeneration(token);
        return Ok(ControlFlow::Break(()));
    }
    sampler.accept(token);
    generation.ids.push(token);
    context.push(token);
    if on_token(token)?.is_break() {
        generation.stop = StopReason::Stopped;
        return Ok(ControlFlow::Break(()));
    }
    Ok(ControlFlow::Continue(()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sparse(v: &[(u32, f32)]) -> TokenDistribution {
        TokenDistribution::Sparse(v.to_vec())
    }

    /// Drafts from `q`, verifies against `p` many times, and returns the frequency of each
    /// output token among 0..4.
    fn output_frequencies(p: &TokenDistribution, q: &TokenDistribution, n: usize) -> [f64; 4] {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut counts = [0usize; 4];
        let cdf = |u: f64| {
            let mut acc = 0.0;
            for t in 0..4 {
                acc += q.prob(t);
                if u < acc {
                    return t;
                }
            }
            3
        };
        for _ in 0..n {
            let x = cdf(rng.random());
            let d = Draft {
                token: x,
                q: q.clone(),
            };
            let out = match verify(p, &d, &mut rng) {
                Verdict::Accept => x,
                Verdict::Replace(t) => t,
            };
            counts[out as usize] += 1;
        }
        counts.map(|c| c as f64 / n as f64)
    }

    #[test]
    fn rejection_rule_reproduces_the_target_distribution() {
        let p = sparse(&[(0, 0.5), (1, 0.3), (2, 0.2)]);
        let q = sparse(&[(0, 0.1), (1, 0.2), (2, 0.3), (3, 0.4)]);
        let f = output_frequencies(&p, &q, 200_000);
        for (t, want) in [0.5, 0.3, 0.2, 0.0].into_iter().enumerate() {
            assert!((f[t] - want).abs() < 0.005, "token {t}: {} vs {want}", f[t]);
        }
    }

    #[test]
    fn point_drafts_are_accepted_with_the_target_probability() {
        let p = sparse(&[(0, 0.25), (1, 0.75)]);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let d = Draft {
            token: 0,
            q: TokenDistribution::Point(0),
        };
        let n = 100_000;
        let (mut acc, mut repl1) = (0, 0);
        for _ in 0..n {
            match verify(&p, &d, &mut rng) {
                Verdict::Accept => acc += 1,
                Verdict::Replace(1) => repl1 += 1,
                Verdict::Replace(t) => panic!("replaced by {t}"),
            }
        }
        assert!((acc as f64 / n as f64 - 0.25).abs() < 0.005);
        assert_eq!(acc + repl1, n);
    }

    #[test]
    fn greedy_target_accepts_exactly_its_argmax() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let p = TokenDistribution::Point(5);
        for _ in 0..100 {
            let hit = Draft {
                token: 5,
                q: TokenDistribution::Point(5),
            };
            assert_eq!(verify(&p, &hit, &mut rng), Verdict::Accept);
            let miss = Draft {
                token: 4,
                q: sparse(&[(4, 0.9), (5, 0.1)]),
            };
            assert_eq!(verify(&p, &miss, &mut rng), Verdict::Replace(5));
        }
    }

    #[test]
    fn ngram_drafter_proposes_what_followed_the_longest_match() {
        let mut d = NGramDrafter::default();
        let mut out = vec![];
        // "1 2 3" appeared before, followed by "4 5 6".
        d.draft(&[9, 1, 2, 3, 4, 5, 6, 7, 1, 2, 3], 3, &mut out)
            .unwrap();
        let tokens: Vec<u32> = out.iter().map(|d| d.token).collect();
        assert_eq!(tokens, [4, 5, 6]);
        assert_eq!(out[0].q, TokenDistribution::Point(4));
        // The most recent occurrence wins; the proposal stops at the end of the context.
        out.clear();
        d.draft(&[1, 2, 8, 1, 2, 9, 1, 2], 5, &mut out).unwrap();
        assert_eq!(out.iter().map(|d| d.token).collect::<Vec<_>>(), [9, 1, 2]);
        out.clear();
        d.draft(&[1, 2, 3, 4], 3, &mut out).unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn drafter_names_parse() {
        assert_eq!("ngram".parse::<SpecKind>().unwrap(), SpecKind::NGram);
        assert_eq!(
            "self:6".parse::<SpecKind>().unwrap(),
            SpecKind::SelfLayers(6)
        );
        assert_eq!(
            "draft:/m/a:b.gguf".parse::<SpecKind>().unwrap(),
            SpecKind::Draft(PathBuf::from("/m/a:b.gguf"))
        );
        for name in ["ngram", "self:6", "draft:/m/a:b.gguf"] {
            assert_eq!(name.parse::<SpecKind>().unwrap().to_string(), name);
        }
        for bad in ["", "self:0", "self:x", "draft:", "lookup", "ngram:3"] {
            assert!(bad.parse::<SpecKind>().is_err(), "{bad}");
        }
    }

    #[test]
    fn distribution_probabilities() {
        assert_eq!(TokenDistribution::Point(3).prob(3), 1.0);
        assert_eq!(TokenDistribution::Point(3).prob(2), 0.0);
        assert!((sparse(&[(1, 0.25), (2, 0.75)]).prob(2) - 0.75).abs() < 1e-9);
        let s = SpeculativeStats {
            drafted: 8,
            accepted: 6,
            rounds: 3,
        };
        assert_eq!(s.acceptance_rate(), 0.75);
    }
}
