//! llama.cpp's chunked evaluation of a text, shared by perplexity and KL divergence.
//!
//! The token stream is cut into `floor(n / n_ctx)` chunks of `n_ctx` tokens (a partial
//! last chunk is dropped). Each chunk is run from an empty KV cache with its first token
//! replaced by BOS when the model adds one. Only the second half of a chunk is scored, so
//! every scored token has at least `n_ctx / 2` tokens of context: the logits at positions
//! `n_ctx/2 ..= n_ctx-2` predict the tokens at `n_ctx/2+1 ..= n_ctx-1`.

use std::ops::Range;

use ferrolm_transformer::{Backend, Batch, Model, State};

use crate::error::{AnalysisError, Result};

/// How a text is cut into chunks and which positions of a chunk are scored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkPlan {
    n_ctx: usize,
    bos: Option<u32>,
}

impl ChunkPlan {
    /// The smallest context size with at least one scored token per chunk.
    pub const MIN_CTX: usize = 4;

    /// Chunks of `n_ctx` tokens whose first token becomes `bos` when it is `Some`.
    pub fn new(n_ctx: usize, bos: Option<u32>) -> Result<Self> {
        if n_ctx < Self::MIN_CTX {
            return Err(AnalysisError::ContextTooSmall {
                n_ctx,
                min: Self::MIN_CTX,
            });
        }
        Ok(Self { n_ctx, bos })
    }

    /// Tokens per chunk.
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// Whole chunks in a text of `n_tokens` tokens.
    pub fn n_chunks(&self, n_tokens: usize) -> usize {
        n_tokens / self.n_ctx
    }

    /// Positions of a chunk whose logits are scored (each predicts the next position's token).
    pub fn scored(&self) -> Range<usize> {
        self.n_ctx / 2..self.n_ctx - 1
    }

    /// Tokens scored per chunk.
    pub fn scored_per_chunk(&self) -> usize {
        self.scored().len()
    }

    /// Chunk `i` of `tokens`, its first token replaced by BOS when the model adds one.
    /// Errors when the text has no chunk `i`.
    pub fn chunk(&self, tokens: &[u32], i: usize) -> Result<Vec<u32>> {
        let range = i * self.n_ctx..(i + 1) * self.n_ctx;
        let mut chunk = tokens
            .get(range)
            .ok_or(AnalysisError::TextTooShort {
                tokens: tokens.len(),
                n_ctx: self.n_ctx,
            })?
            .to_vec();
        if let Some(bos) = self.bos {
            chunk[0] = bos;
        }
        Ok(chunk)
    }

    /// Checks that `tokens` fills at least one chunk and returns the number of chunks.
    pub fn check_text(&self, n_tokens: usize) -> Result<usize> {
        match self.n_chunks(n_tokens) {
            0 => Err(AnalysisError::TextTooShort {
                tokens: n_tokens,
                n_ctx: self.n_ctx,
            }),
            n => Ok(n),
        }
    }
}

/// Logits of the scored positions of one batch of a chunk.
#[derive(Debug)]
pub struct ScoredRows<'s> {
    /// The first scored position these rows belong to (row `r` is position `first + r`).
    pub first: usize,
    /// `rows × vocab` logits, row after row.
    pub logits: &'s [f32],
    /// Vocabulary size (row width).
    pub vocab: usize,
}

impl ScoredRows<'_> {
    /// Scored rows in this batch.
    pub fn len(&self) -> usize {
        self.logits.len() / self.vocab.max(1)
    }

    /// Whether this batch scores nothing.
    pub fn is_empty(&self) -> bool {
        self.logits.is_empty()
    }

    /// The logits row of the `r`th scored position of this batch.
    pub fn row(&self, r: usize) -> &[f32] {
        &self.logits[r * self.vocab..(r + 1) * self.vocab]
    }
}

/// Runs chunks through one model, batch by batch, handing out the scored logits.
pub struct ChunkEvaluator<'m, 'w, B: Backend<'w>> {
    model: &'m Model<'w, B>,
    plan: ChunkPlan,
    batch: usize,
    kv: B::Kv,
    state: State<'w, B>,
    positions: Vec<u32>,
    seqs: Vec<u32>,
    outputs: Vec<usize>,
}

impl<'m, 'w, B: Backend<'w>> ChunkEvaluator<'m, 'w, B> {
    /// An evaluator for `plan`'s chunks that runs them in batches of up to `batch` tokens
    /// (0: the whole chunk at once, capped at 512).
    pub fn new(model: &'m Model<'w, B>, plan: ChunkPlan, batch: usize) -> Result<Self> {
        let n_ctx = plan.n_ctx();
        let batch = if batch == 0 {
            n_ctx.min(512)
        } else {
            batch.min(n_ctx)
        };
        let max_outputs = batch.min(plan.scored_per_chunk());
        Ok(Self {
            model,
            plan,
            batch,
            kv: model.kv_cache(n_ctx, 1)?,
            state: model.state(batch, max_outputs)?,
            positions: Vec::with_capacity(batch),
            seqs: vec![0; batch],
            outputs: Vec::with_capacity(batch),
        })
    }

    /// The chunk plan.
    pub fn plan(&self) -> ChunkPlan {
        self.plan
    }

    /// Token ranges of a chunk, one per batch, in order.
    pub fn batches(&self) -> impl Iterator<Item = Range<usize>> + use<'w, B> {
        let (n, b) = (self.plan.n_ctx(), self.batch);
        (0..n.div_ceil(b)).map(move |i| i * b..((i + 1) * b).min(n))
    }

    /// Runs `chunk[range]` (positions `range`), after the batches before it; a range
    /// starting at 0 begins from an empty cache. Returns the logits of the scored positions
    /// in `range`.
    pub fn run(&mut self, chunk: &[u32], range: Range<usize>) -> Result<ScoredRows<'_>> {
        let backend = self.model.backend();
        if range.start == 0 {
            backend.kv_clear(&mut self.kv);
        }
        let tokens = chunk
            .get(range.clone())
            .ok_or_else(|| AnalysisError::InvalidInput {
                what: "chunk evaluation",
                reason: format!("batch {range:?} of a chunk of {}", chunk.len()),
            })?;
        let scored = self.plan.scored();
        let first = range.start.max(scored.start);
        let last = range.end.min(scored.end);
        self.outputs.clear();
        self.outputs
            .extend((first..last.max(first)).map(|p| p - range.start));
        let any = !self.outputs.is_empty();
        if !any {
            // A batch must produce at least one row; this one is ignored.
            self.outputs.push(tokens.len() - 1);
        }
        self.positions.clear();
        self.positions.extend(range.clone().map(|p| p as u32));
        let batch = Batch {
            tokens,
            positions: &self.positions,
            seqs: &self.seqs[..tokens.len()],
            outputs: &self.outputs,
        };
        self.model.forward(&mut self.state, &mut self.kv, &batch)?;
        let logits = if any { self.state.logits() } else { &[] };
        Ok(ScoredRows {
            first,
            logits,
            vocab: self.model.config().vocab,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn plan_scores_the_second_half_but_the_last_position() {
        let plan = ChunkPlan::new(256, Some(1)).unwrap();
        assert_eq!(plan.scored(), 128..255);
        assert_eq!(plan.scored_per_chunk(), 127);
        assert_eq!(plan.n_chunks(7500), 29);
        let odd = ChunkPlan::new(5, None).unwrap();
        assert_eq!(odd.scored(), 2..4);
    }

    #[test]
    fn chunks_start_with_bos_when_the_model_adds_it() {
        let tokens: Vec<u32> = (10..30).collect();
        let plan = ChunkPlan::new(8, Some(2)).unwrap();
        assert_eq!(plan.check_text(tokens.len()).unwrap(), 2);
        assert_eq!(
            plan.chunk(&tokens, 1).unwrap(),
            [2, 19, 20, 21, 22, 23, 24, 25]
        );
        let plain = ChunkPlan::new(8, None).unwrap();
        assert_eq!(
            plain.chunk(&tokens, 0).unwrap(),
            (10..18).collect::<Vec<_>>()
        );
        assert!(plain.chunk(&tokens, 2).is_err());
    }

    #[test]
    fn too_small_contexts_and_texts_are_errors() {
        assert!(matches!(
            ChunkPlan::new(3, None),
            Err(AnalysisError::ContextTooSmall { n_ctx: 3, .. })
        ));
        let plan = ChunkPlan::new(16, None).unwrap();
        assert!(matches!(
            plan.check_text(15),
            Err(AnalysisError::TextTooShort {
                tokens: 15,
                n_ctx: 16
            })
        ));
    }
}
