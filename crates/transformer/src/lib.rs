//! Transformer inference for GGUF language models.
//!
//! ```
//! assert!(!ferrolm_transformer::SUPPORTED_ARCHITECTURES.is_empty());
//! ```
#![deny(missing_docs)]

/// The CUDA device runtime and kernel wrappers (feature `cuda`).
#[cfg(feature = "cuda")]
pub mod cuda;

/// Architectures this crate runs.
pub const SUPPORTED_ARCHITECTURES: &[&str] = &["llama", "gemma3"];
