//! Tokenizers for GGUF language models that give exactly the token ids
//! llama.cpp gives.
//!
//! - [`Tokenizer::from_gguf`] reads `tokenizer.ggml.*` metadata: byte-level BPE
//!   (`gpt2`) with the pre-tokenizer `tokenizer.ggml.pre` names
//!   ([`PreTokenizer`]), or SentencePiece-style BPE over scores (`llama`) with
//!   `<0xNN>` byte fallback. Token types, BOS/EOS/EOT ids and the
//!   `add_bos`/`add_eos`/`add_space_prefix` flags follow llama.cpp's rules,
//!   defaults included.
//! - [`Tokenizer::encode`] with [`EncodeOptions`]: BOS/EOS as the model says,
//!   and special-token text turned into tokens on request.
//! - [`Tokenizer::decode`] and [`StreamingDecoder`], which only emits
//!   complete UTF-8 characters.
//! - [`BpeTrainer`] learns a byte-level BPE vocabulary from a corpus, and
//!   [`TokenizerConfig::add_to_gguf`] writes a vocabulary into a GGUF file.
//! - [`Tokenizer::chat_template`] renders `tokenizer.chat_template` (Jinja)
//!   or a built-in template for the model's family.
//!
//! # Example
//!
//! ```
//! use ferrolm_tokenizer::{BpeTrainer, DecodeOptions, EncodeOptions, StreamingDecoder, Tokenizer};
//!
//! let corpus = ["the cat sat on the mat", "the dog sat on the log", "a cat and a dog"];
//! let tokenizer = Tokenizer::from_config(BpeTrainer::new(30).train(corpus)?)?;
//!
//! let ids = tokenizer.encode("the cat sat", EncodeOptions::default());
//! assert!(ids.len() < "the cat sat".len());
//! assert_eq!(tokenizer.decode(&ids, DecodeOptions::default())?, "the cat sat");
//!
//! let mut stream = StreamingDecoder::new(&tokenizer, false);
//! let mut text = String::new();
//! for id in tokenizer.encode("héllo", EncodeOptions::default()) {
//!     text += &stream.push(id)?;
//! }
//! assert_eq!(text, "héllo");
//! # Ok::<(), ferrolm_tokenizer::TokenizerError>(())
//! ```
#![deny(missing_docs)]

mod bpe;
mod chat;
mod decode;
mod error;
mod metadata;
mod pretokenizer;
mod special;
mod spm;
mod table;
mod tokenizer;
mod train;
mod unicode;
mod vocab;

pub use chat::{ChatMessage, ChatTemplate};
pub use decode::{DecodeOptions, StreamingDecoder};
pub use error::TokenizerError;
pub use pretokenizer::{PreTokenizer, split_words};
pub use tokenizer::{EncodeOptions, Tokenizer};
pub use train::{BpeTrainer, TrainProgress};
pub use vocab::{SpecialTokenIds, TokenId, TokenType, TokenizerConfig, VocabKind};
