//! The served model as callers see it, and the choices made from its file when it loads: the
//! context size and the pooling of embeddings.

use std::path::PathBuf;
use std::sync::Arc;

use ferrolm_gguf::Gguf;
use ferrolm_tokenizer::Tokenizer;
use ferrolm_transformer::Pooling;

use crate::EngineError;

/// What a caller needs to know about the model an engine runs.
#[derive(Debug)]
pub struct ModelInfo {
    /// The file it was loaded from.
    pub path: PathBuf,
    /// The backend it runs on (`cpu`, `cuda`).
    pub backend: &'static str,
    /// Positions per sequence, prompt and generated tokens together.
    pub n_ctx: usize,
    /// Rows of logits (may exceed the tokenizer's vocabulary); token ids must be below it.
    pub n_vocab: usize,
    /// Width of the hidden states, and so of its embeddings.
    pub d_model: usize,
    /// How embedding jobs pool the hidden states.
    pub pooling: Pooling,
    /// Its tokenizer, shared with the engine.
    pub tokenizer: Arc<Tokenizer>,
}

/// The context to run with when `asked` positions are asked for: at most the `n_ctx_train`
/// the model was trained with (with a warning when `asked` is more), and at least 2 (one
/// prompt token and one generated token), else an error.
pub fn context_size(asked: usize, n_ctx_train: usize) -> Result<usize, EngineError> {
    if asked < 2 {
        return Err(EngineError::ContextTooSmall { asked });
    }
    let n_ctx_train = n_ctx_train.max(2);
    if asked > n_ctx_train {
        tracing::warn!(
            "the context of {asked} tokens is longer than the {n_ctx_train} the model was trained \
             with; using {n_ctx_train}"
        );
    }
    Ok(asked.min(n_ctx_train))
}

/// The pooling a file asks for (`{arch}.pooling_type`), if any.
pub fn model_pooling(gguf: &Gguf<'_>) -> Option<Pooling> {
    let arch = gguf.architecture().ok()?;
    let value = gguf.get_u32(&format!("{arch}.pooling_type")).ok()?;
    Pooling::from_gguf(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_context_is_cut_to_the_trained_one_and_must_hold_two_tokens() {
        assert_eq!(context_size(4096, 8192).ok(), Some(4096));
        assert_eq!(context_size(100_000, 8192).ok(), Some(8192));
        assert_eq!(context_size(2, 0).ok(), Some(2));
        for asked in [0, 1] {
            assert!(matches!(
                context_size(asked, 8192),
                Err(EngineError::ContextTooSmall { asked: a }) if a == asked
            ));
        }
    }
}
