//! Model analysis for ferrolm: measurements of GGUF models run by `ferrolm-transformer`.
//!
//! - [`perplexity`]: perplexity of a text by llama.cpp's protocol ([`chunks`] describes the
//!   chunking and which positions are scored); it reproduces llama.cpp's figures.
//! - [`kl_divergence`]: how far one model's next-token distributions are from another's on
//!   a text, with both models run side by side chunk by chunk.
//! - [`token_metrics`]: surprisal, entropy, varentropy and top-k mass of each token, also
//!   during generation through a [`MetricsProbe`] at the head of a sampler chain.
//! - [`attention`]: attention entropy per head, collapse detection and attention received.
//! - [`transfer_entropy`]: information flow between discrete series.
//! - [`influence`]: the prompt tokens whose attention best predicts later surprisal, by
//!   transfer entropy.
//! - [`analyzer`]: one handle that runs a prompt once and computes the diagnostics its
//!   options switch on (each an `Option`), with a text report and JSON.
//! - [`speculative`]: draft-then-verify decoding that keeps the target's distribution exact.
//!
//! Every figure is checked on cases with known answers; the numerics run in `f64` where a
//! softmax over a large vocabulary would lose digits.
//!
//! ```
//! use ferrolm_analysis::chunks::ChunkPlan;
//! use ferrolm_analysis::perplexity::NllStats;
//! use ferrolm_analysis::token_metrics;
//!
//! // llama.cpp scores the second half of each 256-token chunk but its last position.
//! let plan = ChunkPlan::new(256, Some(1))?;
//! assert_eq!(plan.scored(), 128..255);
//!
//! let mut stats = NllStats::default();
//! for nll in [2.0, 3.0, 4.0] {
//!     stats.push(nll);
//! }
//! assert!((stats.ppl() - 3f64.exp()).abs() < 1e-9);
//!
//! // Four equally likely tokens: 2 bits of surprise (ln 4 nats), whichever comes.
//! let m = token_metrics(&[0.5; 4], 2, 1)?;
//! assert!((m.surprisal - 4f64.ln()).abs() < 1e-6 && (m.entropy - 4f64.ln()).abs() < 1e-6);
//! # Ok::<(), ferrolm_analysis::AnalysisError>(())
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod analyzer;
pub mod attention;
pub mod chunks;
mod error;
pub mod influence;
pub mod kl_divergence;
pub mod logits;
pub mod perplexity;
pub mod speculative;
pub mod token_metrics;
pub mod transfer_entropy;

pub use analyzer::{Analysis, AnalysisOptions, Analyzer, AttentionSource};
pub use attention::{AttentionHealth, HeadHealth, HeadStats, HealthThresholds, LayerAttention};
pub use error::{AnalysisError, Result};
pub use kl_divergence::{KlDivergence, kl_divergence};
pub use perplexity::{Perplexity, PerplexityOptions, perplexity, perplexity_of_text};
pub use speculative::{
    Drafter, ModelDrafter, NGramDrafter, SelfDrafter, SpecKind, SpeculativeDecoder,
    SpeculativeOptions, SpeculativeStats,
};
pub use token_metrics::{MetricsProbe, MetricsRecorder, TokenMetrics, token_metrics};
pub use transfer_entropy::transfer_entropy;
