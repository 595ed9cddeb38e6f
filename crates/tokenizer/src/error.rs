//! The crate's error type.

use crate::TokenId;

/// Everything that can go wrong while loading a vocabulary, decoding tokens,
/// training or rendering a chat template.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenizerError {
    /// The file's metadata could not be read.
    #[error(transparent)]
    Gguf(#[from] ferrolm_gguf::GgufError),

    /// `tokenizer.ggml.model` is `no_vocab` (or `none`): the file carries no vocabulary.
    #[error("the model has no vocabulary (tokenizer.ggml.model = \"{model}\")")]
    NoVocabulary {
        /// The value of `tokenizer.ggml.model`.
        model: String,
    },

    /// `tokenizer.ggml.model` names a tokenizer this crate does not implement.
    #[error("unsupported tokenizer model \"{model}\" (supported: gpt2, llama)")]
    UnsupportedModel {
        /// The value of `tokenizer.ggml.model`.
        model: String,
    },

    /// `tokenizer.ggml.pre` names a pre-tokenizer this crate does not know.
    #[error("unknown pre-tokenizer \"{pre}\" for tokenizer model \"{model}\"")]
    UnknownPreTokenizer {
        /// The value of `tokenizer.ggml.pre`.
        pre: String,
        /// The value of `tokenizer.ggml.model`.
        model: String,
    },

    /// A required metadata key is absent.
    #[error("missing metadata key {key}")]
    MissingKey {
        /// The key.
        key: &'static str,
    },

    /// A metadata key holds a value of another type.
    #[error("metadata key {key} should be {expected}")]
    WrongType {
        /// The key.
        key: &'static str,
        /// What the key should hold.
        expected: &'static str,
    },

    /// A per-token array is shorter than the token list.
    #[error("metadata array {key} has {got} entries for {expected} tokens")]
    LengthMismatch {
        /// The key of the short array.
        key: &'static str,
        /// The number of tokens.
        expected: usize,
        /// The array's length.
        got: usize,
    },

    /// The token list is empty.
    #[error("the vocabulary has no tokens")]
    EmptyVocabulary,

    /// Two tokens have the same text.
    #[error("duplicate token {text:?}: ids {first} and {second}")]
    DuplicateToken {
        /// The text both tokens have.
        text: String,
        /// The first id.
        first: TokenId,
        /// The second id.
        second: TokenId,
    },

    /// `add_bos`/`add_eos` is on but the model has no such token.
    #[error("{flag} is true but the vocabulary has no {token} token")]
    MissingSpecialToken {
        /// The metadata key of the flag.
        flag: &'static str,
        /// Which token is missing ("BOS", "EOS").
        token: &'static str,
    },

    /// A token id is not in the vocabulary.
    #[error("token id {id} is out of range (vocabulary of {n_vocab} tokens)")]
    TokenOutOfRange {
        /// The id.
        id: TokenId,
        /// The vocabulary size.
        n_vocab: usize,
    },

    /// BPE training was asked for something it cannot do.
    #[error("BPE training: {reason}")]
    Training {
        /// What was wrong.
        reason: String,
    },

    /// The model has no chat template and none is built in for its family.
    #[error("no chat template: {reason}")]
    NoChatTemplate {
        /// Why none could be chosen.
        reason: String,
    },

    /// A chat template failed to compile or render.
    #[error("chat template: {message}")]
    Template {
        /// The template engine's message.
        message: String,
    },
}

impl From<minijinja::Error> for TokenizerError {
    fn from(e: minijinja::Error) -> Self {
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        TokenizerError::Template { message }
    }
}
