//! Transformer inference for GGUF language models: Llama 2/3.x, Mistral, Mixtral, Qwen 2/2.5,
//! Qwen 3, Qwen 3 MoE, Phi-3, Gemma 2 and Gemma 3.
//!
//! - [`ModelConfig`] reads an architecture's hyperparameters through the GGUF typed keys.
//! - [`Model`] holds the weights in a [`Backend`]'s form; [`CpuBackend`] borrows them from
//!   the memory-mapped file and multiplies through `ferrolm-quant`. Each model family is one
//!   [`ArchSpec`] in its own file of [`models`] (a row of [`ARCHITECTURES`]), and one block
//!   forward, written once against the [`Backend`] trait, runs them all.
//! - [`Model::forward`] runs a [`Batch`] of tokens of one or more sequences, appending their
//!   keys and values to the KV cache, and leaves the wanted logits in a preallocated
//!   [`State`].
//!
//! ```no_run
//! use ferrolm_gguf::GgufFile;
//! use ferrolm_transformer::{Batch, CpuBackend, CpuOptions, Model};
//!
//! let file = GgufFile::open("SmolLM2-135M-Instruct.Q4_1.gguf")?;
//! let gguf = file.gguf()?;
//! let model = Model::load(&gguf, CpuBackend::new(CpuOptions::default())?)?;
//! let mut kv = model.kv_cache(256, 1)?;
//! let mut state = model.state(64, 1)?;
//! let tokens = [504, 3575, 282, 4649, 314];
//! let batch = Batch { tokens: &tokens, positions: &[0, 1, 2, 3, 4], seqs: &[0; 5], outputs: &[4] };
//! model.forward(&mut state, &mut kv, &batch)?;
//! let next = state.logits().iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i);
//! assert_eq!(next, Some(7042)); // " Paris"
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

pub mod backend;
pub mod config;
pub mod embed;
mod error;
pub mod models;
mod names;
pub mod session;

/// The CUDA device runtime and kernel wrappers (feature `cuda`).
#[cfg(feature = "cuda")]
pub mod cuda;

pub use backend::cpu::{AttentionRow, CpuBackend, CpuOptions};
pub use backend::cuda::{CudaBackend, CudaOptions};
pub use backend::{AttentionParams, Backend, Batch, Glu, KvBlocks, KvLayout, MoeRouting, SeqId};
pub use config::{LayerConfig, ModelConfig, MoeConfig, Rope, RopeStyle};
pub use embed::{Pooling, embed};
pub use error::{Result, TransformerError};
pub use ferrolm_quant::Precision;
pub use models::{ARCHITECTURES, ArchSpec, Model, State, architecture_names};
pub use names::TensorName;
pub use session::{GenerateOptions, Generation, Session, StopReason, stream_text};
