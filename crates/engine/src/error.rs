//! What can go wrong starting the engine or handing it work ([`EngineError`]), and how a job
//! that was running can end without completing ([`Failure`]).

use std::path::PathBuf;

use ferrolm_gguf::GgufError;
use ferrolm_tokenizer::TokenizerError;
use ferrolm_transformer::TransformerError;

/// Everything that can go wrong starting the engine, submitting to it or joining it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The backend factory failed; its error, unchanged.
    #[error(transparent)]
    Backend(Box<dyn std::error::Error + Send + Sync>),
    /// The model file could not be opened (missing, unreadable, not GGUF).
    #[error("cannot open the model")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: GgufError,
    },
    /// The model file's header or metadata is invalid.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: GgufError,
    },
    /// The file's vocabulary could not be read.
    #[error("cannot read the tokenizer of {}", path.display())]
    Tokenizer {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: TokenizerError,
    },
    /// The model could not be built on the backend.
    #[error("cannot load {}", path.display())]
    Load {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: TransformerError,
    },
    /// The KV cache or the run state could not be allocated.
    #[error(transparent)]
    Model(#[from] TransformerError),
    /// A context too small for one prompt token and one generated token.
    #[error("a context of {asked} tokens holds no prompt and reply")]
    ContextTooSmall {
        /// The context size asked for.
        asked: usize,
    },
    /// The engine thread could not be spawned.
    #[error("cannot start the engine thread")]
    Thread(#[source] std::io::Error),
    /// The engine thread ended while loading the model, or has ended and takes no more work.
    #[error("the engine has stopped")]
    Stopped,
    /// The engine thread panicked.
    #[error("the engine thread panicked")]
    Panicked,
    /// Every slot is busy and the queue of waiting jobs is full; the job was not taken.
    #[error("the engine's queue is full ({queued} jobs waiting)")]
    QueueFull {
        /// Jobs waiting for a slot.
        queued: usize,
    },
    /// A generation prompt or an input to embed has no tokens.
    #[error("the input has no tokens")]
    NoTokens,
    /// A prompt leaves no room in the context for a generated token, or an input to embed is
    /// longer than the context.
    #[error("the input is {tokens} tokens; the context is {n_ctx} tokens")]
    TooLong {
        /// Tokens in the input.
        tokens: usize,
        /// The context size.
        n_ctx: usize,
    },
    /// A token id is not below the model's vocabulary size.
    #[error("token id {id} is outside the vocabulary of {n_vocab} tokens")]
    TokenOutOfRange {
        /// The offending id.
        id: u32,
        /// Rows of the model's logits.
        n_vocab: usize,
    },
}

/// Why a job that the engine took ended without completing. Every job of a batch that fails
/// hears the same failure, so it is a message, not the lower crate's error value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Failure {
    /// A forward pass failed.
    #[error("the model failed: {0}")]
    Model(String),
    /// The sampler chain could not choose a token.
    #[error("sampling failed: {0}")]
    Sampling(String),
    /// A sampled token could not be turned into text.
    #[error("cannot decode token {token}: {message}")]
    Decode {
        /// The token.
        token: u32,
        /// Why.
        message: String,
    },
    /// Embedding an input failed.
    #[error("embedding failed: {0}")]
    Embedding(String),
    /// The engine stopped before the job was complete.
    #[error("the engine stopped before the job was complete")]
    Stopped,
}
