//! A composable sampler chain over language-model logits.
//!
//! A logits row becomes a [`Candidates`] set of `(token, logit, probability)`
//! triples. [`Sampler`]s transform it in turn — [`LogitBias`], [`Penalties`],
//! [`TopK`], [`TypicalP`], [`TopP`], [`MinP`], [`Temperature`],
//! [`EntropyGuided`] — and a selector ends the chain: [`Greedy`], or
//! [`Distribution`], a draw from a seeded ChaCha20 stream that gives the same
//! tokens on every run and platform. A [`SamplerChain`] is itself a sampler.
//! [`SamplingConfig`] maps the command line's flags (and the named
//! [`Preset`]s) onto a chain.
//!
//! Large vocabularies are never fully sorted: top-k is a single pass with a
//! rising threshold, top-p sorts a growing prefix only as far as it needs,
//! min-p is one comparison per token in log space, and the chain reuses one
//! candidate buffer from token to token. At the head of a chain, samplers that
//! change a few logits edit the row in place and the first truncating sampler
//! (or greedy selection) reads the row directly ([`Sampler::fill_from_row`]),
//! so the whole vocabulary is never copied into candidates: the standard chain
//! costs about 70 µs on a 262,144-entry row on a server core.
//!
//! Numerics are in log space: softmaxes are shifted by the maximum and summed
//! in `f64`; NaN logits count as −∞, and a row with nothing selectable is an
//! error rather than a random token.
//!
//! ```
//! use ferrolm_sampling::{Preset, SamplingConfig};
//!
//! let logits = [0.1_f32, 2.5, -1.0, 2.4, 0.0];
//! let mut greedy = SamplingConfig::preset(Preset::Greedy).build()?;
//! assert_eq!(greedy.sample(&logits)?, 1);
//!
//! let config = SamplingConfig { seed: 7, ..SamplingConfig::default() };
//! let mut chain = config.build()?;
//! let token = chain.sample(&logits)?;
//! chain.accept(token);
//! // The same seed replays the same tokens.
//! assert_eq!(config.build()?.sample(&logits)?, token);
//! # Ok::<(), ferrolm_sampling::SamplingError>(())
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod candidates;
mod config;
mod error;
mod exp;
mod sampler;
mod samplers;
mod softmax;

pub use candidates::{Candidate, Candidates, rank_order, ranks_before};
pub use config::{Preset, SamplingConfig};
pub use error::SamplingError;
pub use exp::exp_f32;
pub use sampler::{RowEdit, Sampler, SamplerChain};
pub use samplers::{
    Distribution, EntropyGuided, Greedy, LogitBias, MinP, Penalties, Temperature, TopK, TopP,
    TypicalP,
};
pub use softmax::{entropy, log_prob, log_softmax_in_place, log_sum_exp, softmax_in_place};
