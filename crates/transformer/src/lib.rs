//! Transformer inference for GGUF language models.
//!
//! ```
//! assert!(!ferrolm_transformer::SUPPORTED_ARCHITECTURES.is_empty());
//! ```
#![deny(missing_docs)]

/// Architectures this crate runs.
pub const SUPPORTED_ARCHITECTURES: &[&str] = &["llama", "gemma3"];
