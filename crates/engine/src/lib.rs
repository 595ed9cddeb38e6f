//! Batched generation for many sequences at once, with no HTTP stack: the scheduler behind
//! `ferrolm serve`, for any Rust program.
//!
//! [`Engine::start`] makes a backend on a thread of its own, loads a GGUF model there and
//! keeps a KV cache of a fixed number of sequence slots. Work goes in through an
//! [`EngineHandle`] (cheap to clone, usable from threads or async tasks):
//!
//! - a [`GenerateJob`] (prompt tokens, a token limit, a sampler chain, stop strings) returns
//!   its [`Events`]: each token with the text it releases, then [`Event::Done`] with the
//!   [`Finish`] reason and the token counts, or [`Event::Failed`]. Dropping the `Events`
//!   cancels the job and frees its slot;
//! - inputs to embed return an [`EmbedReply`] of unit vectors of the model's width.
//!
//! Each step of the engine runs one batch: the last token of every sequence that is
//! generating, then chunks of the prompts of newly admitted jobs up to the batch budget
//! (continuous batching with chunked prefill). A freed slot keeps its tokens' keys and
//! values, and a later job whose prompt starts the same way takes that slot and runs only
//! the rest of its prompt (prefix reuse). [`EngineHandle::stats`] counts jobs, tokens and
//! prefix hits; two [`Histogram`]s time the first token and each token after it.
//!
//! ```no_run
//! use ferrolm_engine::{Engine, EngineOptions, Event, GenerateJob};
//! use ferrolm_sampling::{Greedy, SamplerChain};
//! use ferrolm_transformer::{CpuBackend, CpuOptions};
//!
//! let options = EngineOptions { n_ctx: 512, slots: 4, ..EngineOptions::default() };
//! let engine = Engine::start("SmolLM2-135M-Instruct.Q4_1.gguf", options, || {
//!     CpuBackend::new(CpuOptions::default())
//! })?;
//! let handle = engine.handle();
//! let prompt = handle.info().tokenizer.encode("The capital of France is", Default::default());
//! let mut job = GenerateJob::new(prompt, 16, SamplerChain::new().with(Greedy));
//! job.stop = vec![".".into()];
//! let mut events = handle.blocking_generate(job)?;
//! while let Some(event) = events.blocking_recv() {
//!     match event {
//!         Event::Token { text, .. } => print!("{text}"),
//!         Event::Done(done) => println!("\n{:?} after {} tokens", done.finish, done.completion_tokens),
//!         Event::Failed(failure) => eprintln!("{failure}"),
//!     }
//! }
//! println!("{:?}", handle.stats());
//! engine.join()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod engine;
mod error;
mod job;
mod model;
mod scheduler;
mod stats;
mod stop;
mod token;

pub use engine::{Engine, EngineHandle, EngineOptions};
pub use error::{EngineError, Failure};
pub use job::{Completion, Done, EmbedReply, Event, Events, Finish, GenerateJob};
pub use model::{ModelInfo, context_size, model_pooling};
pub use stats::{Histogram, Stats};
pub use token::{TokenMetrics, TokenOut};
