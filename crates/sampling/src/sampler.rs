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

    /// Appends a boxed sampler.
    pub fn push_boxed(&mut self, sampler: Box<dyn Sampler>) {
        self.samplers.push(sampler);
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
        self.candidates.fill(logits)?;
        for sampler in &mut self.samplers {
            sampler.apply(&mut self.candidates)?;
        }
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
