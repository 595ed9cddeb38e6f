//! The sampler trait and the chain that is itself a sampler.

use std::fmt;

use crate::{Candidates, SamplingError};

/// One step of sampling: it narrows or reshapes the candidate set, or selects
/// a token from it.
///
/// Samplers that keep state (penalty history, a random number generator) learn
/// about the tokens that enter the context through [`Sampler::accept`].
pub trait Sampler: Send + fmt::Debug {
    /// A short name for logs, such as `"top-k"`.
    fn name(&self) -> &'static str;

    /// Transforms the candidates, or selects one of them with [`Candidates::select`].
    fn apply(&mut self, candidates: &mut Candidates) -> Result<(), SamplingError>;

    /// Records a token that entered the context (prompt tokens and generated ones).
    fn accept(&mut self, token: u32) {
        let _ = token;
    }

    /// Forgets every accepted token and restarts any random stream from its seed.
    fn reset(&mut self) {}

    /// Whether this sampler, at the head of a chain, can work on the plain
    /// logits row through [`Sampler::edit_row`] instead of [`Sampler::apply`].
    /// Samplers that change a few logits by token id (logit bias, penalties)
    /// do; the default is [`RowEdit::Unsupported`].
    fn row_edit(&self) -> RowEdit {
        RowEdit::Unsupported
    }

    /// Changes logits in a full row indexed by token id (NaN already replaced
    /// by −∞); called only when [`Sampler::row_edit`] says [`RowEdit::Edit`].
    /// It must have the effect `apply` would have on a freshly filled set.
    fn edit_row(&mut self, row: &mut [f32]) {
        let _ = row;
    }

    /// Whether this sampler only forbids tokens (a grammar's constraint), so that it can
    /// give its allowed set as a mask ([`Sampler::restrict`]) instead of editing logits.
    fn is_mask(&self) -> bool {
        false
    }

    /// For a sampler whose [`Sampler::is_mask`] is true: clears in `allowed` the bit of every
    /// token it forbids now (token `k` is bit `k % 32` of word `k / 32`). It must forbid what
    /// [`Sampler::apply`] would remove from a freshly filled set.
    fn restrict(&mut self, allowed: &mut [u32]) -> Result<(), SamplingError> {
        let _ = allowed;
        Ok(())
    }

    /// Builds `candidates` from a full logits row and applies this sampler:
    /// by default [`Candidates::fill`] then [`Sampler::apply`]. Samplers that
    /// keep few tokens override it to skip materializing the whole vocabulary;
    /// a chain calls it for its first sampler that does not edit the row.
    fn fill_from_row(
        &mut self,
        row: &[f32],
        candidates: &mut Candidates,
    ) -> Result<(), SamplingError> {
        candidates.fill(row)?;
        self.apply(candidates)
    }
}

/// What a sampler can do to the plain logits row at the head of a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowEdit {
    /// It needs the candidate set.
    Unsupported,
    /// It would change nothing now (for instance, no history yet).
    Nothing,
    /// It changes some logits, through [`Sampler::edit_row`].
    Edit,
}

/// An ordered list of samplers applied one after another; it is itself a
/// [`Sampler`], and its last member is normally a selector ([`crate::Greedy`]
/// or [`crate::Distribution`]).
///
/// [`SamplerChain::sample`] is the per-token entry point: it fills the chain's
/// own candidate buffer from a logits row, so drawing a token allocates nothing
/// once the buffer has grown to the vocabulary size.
#[derive(Debug, Default)]
pub struct SamplerChain {
    samplers: Vec<Box<dyn Sampler>>,
    candidates: Candidates,
    // A copy of the logits row, made only when a head sampler edits it.
    row: Vec<f32>,
}

impl SamplerChain {
    /// An empty chain.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a sampler, builder style.
    #[must_use]
    pub fn with(mut self, sampler: impl Sampler + 'static) -> Self {
        self.push(sampler);
        self
    }

    /// Appends a sampler.
    pub fn push(&mut self, sampler: impl Sampler + 'static) {
        self.samplers.push(Box::new(sampler));
    }

    /// Puts `sampler` before every other, builder style (a grammar's constraint, say).
    #[must_use]
    pub fn with_head(mut self, sampler: impl Sampler + 'static) -> Self {
        self.samplers.insert(0, Box::new(sampler));
        self
    }

    /// Appends a boxed sampler.
    pub fn push_boxed(&mut self, sampler: Box<dyn Sampler>) {
        self.samplers.push(sampler);
    }

    /// Whether the chain is plain greedy selection and nothing else: it always chooses the
    /// token with the largest logit (lowest id on ties, NaN and −∞ never), so a caller may
    /// find that token where the logits are (on a GPU, say) instead of passing them here.
    pub fn is_greedy(&self) -> bool {
        matches!(self.samplers.as_slice(), [only] if only.name() == "greedy")
    }

    /// Whether the chain is greedy selection after samplers that only forbid tokens
    /// ([`Sampler::is_mask`], such as a grammar): it chooses the largest logit among the
    /// tokens [`SamplerChain::allowed`] lets through, so a caller may find that token where
    /// the logits are, given the mask.
    pub fn is_masked_greedy(&self) -> bool {
        match self.samplers.split_last() {
            Some((last, masks)) => {
                last.name() == "greedy" && !masks.is_empty() && masks.iter().all(|s| s.is_mask())
            }
            None => false,
        }
    }

    /// The tokens of a vocabulary of `n_vocab` that the chain's masks allow now, as bits
    /// (token `k` is bit `k % 32` of word `k / 32`) written to `allowed`, for a chain that
    /// [`SamplerChain::is_masked_greedy`].
    pub fn allowed(&mut self, n_vocab: usize, allowed: &mut Vec<u32>) -> Result<(), SamplingError> {
        allowed.clear();
        allowed.resize(n_vocab.div_ceil(32), u32::MAX);
        if !n_vocab.is_multiple_of(32)
            && let Some(last) = allowed.last_mut()
        {
            *last = (1u32 << (n_vocab % 32)) - 1;
        }
        if let Some((_, masks)) = self.samplers.split_last_mut() {
            for s in masks.iter_mut().filter(|s| s.is_mask()) {
                s.restrict(allowed)?;
            }
        }
        Ok(())
    }

    /// Number of samplers in the chain.
    pub fn len(&self) -> usize {
        self.samplers.len()
    }

    /// Whether the chain has no sampler.
    pub fn is_empty(&self) -> bool {
        self.samplers.is_empty()
    }

    /// Chooses the next token from a row of logits (one per vocabulary entry).
    ///
    /// Does not record the token: call [`SamplerChain::accept`] for each token
    /// that enters the context (a speculative decoder may reject it).
    pub fn sample(&mut self, logits: &[f32]) -> Result<u32, SamplingError> {
        run_from_row(
            &mut self.samplers,
            &mut self.row,
            logits,
            &mut self.candidates,
        )?;
        self.candidates.selected().ok_or(SamplingError::NoSelection)
    }

    /// The candidate set as the last [`SamplerChain::sample`] left it: the
    /// survivors of every sampler, for logging or returning log-probabilities.
    pub fn candidates(&self) -> &Candidates {
        &self.candidates
    }
}

impl Sampler for SamplerChain {
    fn name(&self) -> &'static str {
        "chain"
    }

    fn apply(&mut self, candidates: &mut Candidates) -> Result<(), SamplingError> {
        for sampler in &mut self.samplers {
            sampler.apply(candidates)?;
        }
        Ok(())
    }

    fn accept(&mut self, token: u32) {
        for sampler in &mut self.samplers {
            sampler.accept(token);
        }
    }

    fn reset(&mut self) {
        for sampler in &mut self.samplers {
            sampler.reset();
        }
    }

    fn fill_from_row(
        &mut self,
        row: &[f32],
        candidates: &mut Candidates,
    ) -> Result<(), SamplingError> {
        run_from_row(&mut self.samplers, &mut self.row, row, candidates)
    }
}

/// Runs `samplers` on a logits row: the head samplers that edit the row work
/// on a copy of it, the next one builds the candidate set from the row (so
/// top-k, min-p and greedy never materialize the whole vocabulary), and the
/// rest apply to the candidates. The result is the same as filling the set
/// and applying every sampler in turn.
fn run_from_row(
    samplers: &mut [Box<dyn Sampler>],
    scratch: &mut Vec<f32>,
    logits: &[f32],
    candidates: &mut Candidates,
) -> Result<(), SamplingError> {
    let head = samplers
        .iter()
        .take_while(|s| s.row_edit() != RowEdit::Unsupported)
        .count();
    let mut row = logits;
    if samplers[..head]
        .iter()
        .any(|s| s.row_edit() == RowEdit::Edit)
    {
        scratch.clear();
        scratch.extend(
            logits
                .iter()
                .map(|&l| if l.is_nan() { f32::NEG_INFINITY } else { l }),
        );
        for sampler in &mut samplers[..head] {
            if sampler.row_edit() == RowEdit::Edit {
                sampler.edit_row(scratch);
            }
        }
        row = scratch;
    }
    let Some((first, rest)) = samplers[head..].split_first_mut() else {
        return candidates.fill(row);
    };
    first.fill_from_row(row, candidates)?;
    for sampler in rest {
        sampler.apply(candidates)?;
    }
    Ok(())
}

impl SamplerChain {
    /// Records a token that entered the context, in every member.
    pub fn accept(&mut self, token: u32) {
        Sampler::accept(self, token);
    }

    /// Resets every member (history and random streams).
    pub fn reset(&mut self) {
        Sampler::reset(self);
    }
}

impl fmt::Display for SamplerChain {
    /// The members' names joined by arrows, such as `top-k -> top-p -> dist`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.samplers.iter().enumerate() {
            if i > 0 {
                f.write_str(" -> ")?;
            }
            f.write_str(s.name())?;
        }
        Ok(())
    }
}
