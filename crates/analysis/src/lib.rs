//! Model analysis for ferrolm.
//!
//! - [`perplexity`]: perplexity of a text by llama.cpp's protocol ([`chunks`] describes it).
//!
//! ```
//! use ferrolm_analysis::chunks::ChunkPlan;
//! use ferrolm_analysis::perplexity::NllStats;
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
//! # Ok::<(), ferrolm_analysis::AnalysisError>(())
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod analyzer;
pub mod attention;
pub mod chunks;
mod error;
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
    Drafter, ModelDrafter, NGramDrafter, SpeculativeDecoder, SpeculativeOptions, SpeculativeStats,
};
pub use token_metrics::{MetricsProbe, MetricsRecorder, TokenMetrics, token_metrics};
pub use transfer_entropy::transfer_entropy;
