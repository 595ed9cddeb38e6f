//! The error type of this crate.

use ferrolm_tokenizer::TokenizerError;
use ferrolm_transformer::TransformerError;

/// Everything that can go wrong while analysing a model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AnalysisError {
    /// Running the model failed.
    #[error(transparent)]
    Transformer(#[from] TransformerError),
    /// A model file could not be opened or read.
    #[error(transparent)]
    Gguf(#[from] ferrolm_gguf::GgufError),
    /// A kind of speculative drafting this build cannot run.
    #[error("{kind} drafting is not available: {reason}")]
    UnsupportedDrafter {
        /// The drafter asked for.
        kind: String,
        /// Why it cannot run.
        reason: String,
    },
    /// Tokenizing the text failed.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// The context size cannot be used for chunked evaluation.
    #[error("context size {n_ctx} is too small: chunked evaluation needs at least {min}")]
    ContextTooSmall {
        /// The context size asked for.
        n_ctx: usize,
        /// The smallest usable context size.
        min: usize,
    },
    /// The text is too short to fill one chunk of the context size.
    #[error("the text has {tokens} tokens; a context of {n_ctx} needs at least {n_ctx}")]
    TextTooShort {
        /// Tokens in the text.
        tokens: usize,
        /// The context size.
        n_ctx: usize,
    },
    /// Two models that must share a vocabulary do not.
    #[error("vocabularies differ: {base} tokens in the base model, {model} in the other")]
    VocabularyMismatch {
        /// Vocabulary size of the base (reference) model.
        base: usize,
        /// Vocabulary size of the compared model.
        model: usize,
    },
    /// A token id is not below the vocabulary size.
    #[error("token id {id} is out of range (vocabulary of {vocab})")]
    TokenOutOfRange {
        /// The offending id.
        id: u32,
        /// The vocabulary size.
        vocab: usize,
    },
    /// An input to a metric is unusable (empty, mismatched lengths, no finite value).
    #[error("invalid input to {what}: {reason}")]
    InvalidInput {
        /// The metric or operation.
        what: &'static str,
        /// What is wrong with the input.
        reason: String,
    },
}

/// Result alias of this crate.
pub type Result<T, E = AnalysisError> = std::result::Result<T, E>;
