//! The generation loop: a [`Session`] owns one sequence's KV cache and activations, takes
//! prompts (prefilled in batches), and decodes token by token with a sampler chain,
//! streaming each token to a callback.

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use ferrolm_sampling::SamplerChain;
use ferrolm_tokenizer::{StreamingDecoder, Tokenizer};

use crate::backend::{Backend, Batch};
use crate::error::{Result, TransformerError};
use crate::models::{Model, State};

/// Limits of one generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GenerateOptions {
    /// Most tokens to generate.
    pub max_tokens: usize,
}

/// Why a generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The model produced an end-of-generation token (EOS, EOT, end of turn); it is not
    /// part of the generated ids.
    EndOfGeneration(u32),
    /// `max_tokens` were generated.
    MaxTokens,
    /// The context window is full.
    ContextFull,
    /// The callback asked to stop.
    Stopped,
}

/// What a generation produced and how long it took.
#[derive(Clone, Debug, PartialEq)]
pub struct Generation {
    /// Generated token ids, in order (without a final end-of-generation token).
    pub ids: Vec<u32>,
    /// Why it ended.
    pub stop: StopReason,
    /// Prompt tokens that had to be run (those not already in the cache).
    pub prompt_tokens: usize,
    /// Time spent running the prompt, up to the first sampled token.
    pub prompt_time: Duration,
    /// Time spent on the decode steps after the first token.
    pub decode_time: Duration,
}

impl Generation {
    /// Prompt tokens per second.
    pub fn prompt_tokens_per_second(&self) -> f64 {
        per_second(self.prompt_tokens, self.prompt_time)
    }

    /// Generated tokens per second over the decode steps (the first token comes from the prompt).
    pub fn decode_tokens_per_second(&self) -> f64 {
        per_second(self.ids.len().saturating_sub(1), self.decode_time)
    }
}

fn per_second(n: usize, t: Duration) -> f64 {
    if t.is_zero() {
        0.0
    } else {
        n as f64 / t.as_secs_f64()
    }
}

/// One sequence being generated: its tokens, KV cache and run state. Feeding more tokens
/// continues the sequence, so a chat only runs each new turn.
pub struct Session<'m, 'w, B: Backend<'w>> {
    model: &'m Model<'w, B>,
    kv: B::Kv,
    state: State<'w, B>,
    tokens: Vec<u32>,
    n_ctx: usize,
    max_batch: usize,
    positions: Vec<u32>,
    seqs: Vec<u32>,
}

impl<'m, 'w, B: Backend<'w>> Session<'m, 'w, B> {
    /// A session of up to `n_ctx` positions that runs prompts in batches of `max_batch`.
    pub fn new(model: &'m Model<'w, B>, n_ctx: usize, max_batch: usize) -> Result<Self> {
        if n_ctx == 0 {
            return Err(TransformerError::InvalidConfig {
                key: "context size".into(),
                reason: "must be positive".into(),
            });
        }
        let max_batch = max_batch.clamp(1, n_ctx);
        Ok(Self {
            model,
            kv: model.kv_cache(n_ctx, 1)?,
            state: model.state(max_batch, 1)?,
            tokens: Vec::with_capacity(n_ctx),
            n_ctx,
            max_batch,
            positions: Vec::with_capacity(max_batch),
            seqs: vec![0; max_batch],
        })
    }

    /// The model.
    pub fn model(&self) -> &'m Model<'w, B> {
        self.model
    }

    /// Tokens held in the cache, in order.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// The context size.
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// The KV cache.
    pub fn kv(&self) -> &B::Kv {
        &self.kv
    }

    /// Forgets every token.
    pub fn reset(&mut self) {
        self.model.backend().kv_clear(&mut self.kv);
        self.tokens.clear();
    }

    /// Keeps only the first `len` tokens (for instance the part of a new prompt that the
    /// cache already holds).
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        self.model.backend().kv_truncate(&mut self.kv, 0, len)?;
        self.tokens.truncate(len);
        Ok(())
    }

    /// Makes the cache hold exactly `tokens`, keeping the longest prefix it already holds
    /// and running only the rest. Returns the logits after the last token and how many
    /// tokens were run. At least the last token is always run, so its logits are fresh.
    pub fn sync(&mut self, tokens: &[u32]) -> Result<usize> {
        self.sync_reading(tokens, Readback::Logits, None)
    }

    fn sync_reading(
        &mut self,
        tokens: &[u32],
        readback: Readback,
        sampler: Option<&mut SamplerChain>,
    ) -> Result<usize> {
        let common = self
            .tokens
            .iter()
            .zip(tokens)
            .take_while(|(a, b)| a == b)
            .count();
        let keep = common.min(tokens.len().saturating_sub(1));
        self.truncate(keep)?;
        self.feed_reading(&tokens[keep..], readback, sampler)?;
        Ok(tokens.len() - keep)
    }

    /// Runs `tokens` after those already held, in batches; the logits after the last one
    /// are then in [`Session::logits`].
    pub fn feed(&mut self, tokens: &[u32]) -> Result<()> {
        self.feed_reading(tokens, Readback::Logits, None)
    }

    /// Runs `tokens`, reading back after the last batch what `readback` says (for
    /// [`Readback::MaskedArgmax`], among the tokens `sampler`'s masks allow; earlier batches
    /// of a masked run read only their argmax).
    fn feed_reading(
        &mut self,
        tokens: &[u32],
        readback: Readback,
        mut sampler: Option<&mut SamplerChain>,
    ) -> Result<()> {
        if tokens.is_empty() {
            return Ok(());
        }
        let needed = self.tokens.len() + tokens.len();
        if needed > self.n_ctx {
            return Err(TransformerError::ContextFull {
                needed,
                n_ctx: self.n_ctx,
            });
        }
        let n_chunks = tokens.len().div_ceil(self.max_batch);
        let vocab = self.model.config().vocab;
        for (i, chunk) in tokens.chunks(self.max_batch).enumerate() {
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
            match readback {
                Readback::Logits => self.model.forward(&mut self.state, &mut self.kv, &batch)?,
                Readback::MaskedArgmax if i + 1 == n_chunks => {
                    let Some(chain) = sampler.as_deref_mut() else {
                        return Err(TransformerError::InvalidBatch {
                            reason: "a masked argmax without its sampler".into(),
                        });
                    };
                    self.model.forward_argmax_masked(
                        &mut self.state,
                        &mut self.kv,
                        &batch,
                        |m| Ok(chain.allowed(vocab, m)?),
                    )?;
                }
                Readback::Argmax | Readback::MaskedArgmax => {
                    self.model
                        .forward_argmax(&mut self.state, &mut self.kv, &batch)?;
                }
            }
            self.tokens.extend_from_slice(chunk);
        }
        Ok(())
    }

    /// Logits after the last token run. A [`Session::generate`] with a plain greedy chain
    /// reads back only the chosen token ids, so after one these are the logits of the last
    /// batch that read logits ([`Session::sync`] and [`Session::feed`] always do).
    pub fn logits(&self) -> &[f32] {
        self.state.logits()
    }

    /// Runs `prompt` (reusing what the cache already holds of it) and then samples and runs
    /// one token per step until `is_end(token)`, `max_tokens`, a full context, or
    /// `on_token` returning [`ControlFlow::Break`]. Each accepted token is passed to
    /// `on_token` before it is run.
    pub fn generate(
        &mut self,
        prompt: &[u32],
        sampler: &mut SamplerChain,
        options: GenerateOptions,
        is_end: impl Fn(u32) -> bool,
        mut on_token: impl FnMut(u32) -> Result<ControlFlow<()>>,
    ) -> Result<Generation> {
        if prompt.is_empty() {
            return Err(TransformerError::InvalidBatch {
                reason: "the prompt has no tokens".into(),
            });
        }
        // A plain greedy chain only needs the best token, which the backend finds where the
        // logits are (a GPU then copies back a token id, not a row of the vocabulary).
        // Greedy under a grammar likewise: the mask is made while the step runs and goes to
        // where the logits are.
        let readback = if sampler.is_greedy() {
            Readback::Argmax
        } else if sampler.is_masked_greedy() {
            Readback::MaskedArgmax
        } else {
            Readback::Logits
        };
        let start = Instant::now();
        // The prompt is accepted first, so a mask made during its last batch knows it.
        for &t in prompt {
            sampler.accept(t);
        }
        let prompt_tokens = self.sync_reading(prompt, readback, Some(&mut *sampler))?;
        let mut generation = Generation {
            // No more tokens than the context holds, whatever the limit asked for.
            ids: Vec::with_capacity(options.max_tokens.min(self.n_ctx)),
            stop: StopReason::MaxTokens,
            prompt_tokens,
            prompt_time: start.elapsed(),
            decode_time: Duration::ZERO,
        };
        let mut first_token_at = None;
        while generation.ids.len() < options.max_tokens {
            let token = match readback {
                Readback::Logits => sampler.sample(self.logits())?,
                Readback::Argmax | Readback::MaskedArgmax => self.state.argmax()[0],
            };
            if first_token_at.is_none() {
                generation.prompt_time = start.elapsed();
                first_token_at = Some(Instant::now());
            }
            if is_end(token) {
                generation.stop = StopReason::EndOfGeneration(token);
                break;
            }
            sampler.accept(token);
            generation.ids.push(token);
            if on_token(token)?.is_break() {
                generation.stop = StopReason::Stopped;
                break;
            }
            if generation.ids.len() == options.max_tokens {
                break;
            }
            if self.tokens.len() >= self.n_ctx {
                generation.stop = StopReason::ContextFull;
                break;
            }
            self.feed_reading(&[token], readback, Some(&mut *sampler))?;
        }
        generation.decode_time = first_token_at.map_or(Duration::ZERO, |t| t.elapsed());
        Ok(generation)
    }

    /// [`Session::generate`] with the text of each token streamed to `on_text` through the
    /// tokenizer's streaming decoder (complete UTF-8 characters only), stopping at the
    /// tokenizer's end-of-generation tokens.
    pub fn generate_text(
        &mut self,
        tokenizer: &Tokenizer,
        prompt: &[u32],
        sampler: &mut SamplerChain,
        options: GenerateOptions,
        on_text: impl FnMut(&str) -> Result<ControlFlow<()>>,
    ) -> Result<Generation> {
        stream_text(tokenizer, on_text, |is_end, on_token| {
            self.generate(prompt, sampler, options, is_end, on_token)
        })
    }
}

/// Runs `generate` (a generation loop that takes an end-of-generation test and a per-token
/// callback) with the tokenizer's end-of-generation tokens and a callback that streams each
/// token's text to `on_text` through the tokenizer's streaming decoder (complete UTF-8
/// characters only), then passes on what the decoder still holds: the text form of every
/// token-level generation loop ([`Session::generate_text`] and the speculative ones).
///
/// # Errors
/// What `generate` or `on_text` return, and a token the tokenizer cannot decode.
pub fn stream_text<R, E: From<ferrolm_tokenizer::TokenizerError>>(
    tokenizer: &Tokenizer,
    mut on_text: impl FnMut(&str) -> std::result::Result<ControlFlow<()>, E>,
    generate: impl FnOnce(
        &dyn Fn(u32) -> bool,
        &mut dyn FnMut(u32) -> std::result::Result<ControlFlow<()>, E>,
    ) -> std::result::Result<R, E>,
) -> std::result::Result<R, E> {
    let mut decoder = StreamingDecoder::new(tokenizer, false);
    let result = generate(&|t| tokenizer.is_eog(t), &mut |t| {
        let text = decoder.push(t)?;
        if text.is_empty() {
            Ok(ControlFlow::Continue(()))
        } else {
            on_text(&text)
        }
    })?;
    let rest = decoder.finish();
    if !rest.is_empty() {
        let _ = on_text(&rest)?;
    }
    Ok(result)
}

/// What a batch reads back after its forward pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Readback {
    /// The logits of the last token (for [`Session::logits`]).
    Logits,
    /// Only the index of the largest of them (for a plain greedy chain).
    Argmax,
    /// Only the index of the largest of those the chain's masks allow (greedy under a
    /// grammar).
    MaskedArgmax,
}
