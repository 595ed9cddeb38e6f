//! A paged key/value cache for transformer inference.
//!
//! Keys and values live in a pool of fixed-size blocks of tokens. Each
//! sequence owns a block table (position `p` is in block `table[p / block_tokens]`),
//! so sequences grow without moving data, roll back by dropping blocks, and
//! share prefixes: [`PagedKvCache::fork`] shares every block, and a shared
//! block is copied the first time either sequence writes into it.
//!
//! The bookkeeping ([`BlockLedger`]) is separate from the storage
//! ([`HostKvStorage`]): a GPU backend drives device memory from the same
//! ledger, performing the [`BlockCopy`]s it hands out. The storage layout —
//! per layer a K pool then a V pool, each block `[n_kv_heads][block_tokens][head_dim]` —
//! is documented on [`KvCacheConfig`]; for one KV head a block's keys are one
//! contiguous slice, which is what decode attention reads. Elements are `f32`
//! or [`half::f16`] ([`KvElement`]). Running out of blocks or context is an
//! error ([`KvCacheError`]), never a panic, and leaves the cache unchanged.
//!
//! [`Slots`] numbers a fixed set of sequences over either store and places batches of tokens
//! in them: position checks, a full context, and a failed batch undone whole.
//!
//! ```
//! use ferrolm_kvcache::{KvCacheConfig, PagedKvCache};
//!
//! // 2 layers, 1 KV head of dimension 4, blocks of 16 tokens, 8 blocks.
//! let config = KvCacheConfig::new(2, 1, 4, 16, 8)?;
//! let mut cache = PagedKvCache::<f32>::new(config)?;
//! let seq = cache.create_sequence();
//!
//! // Prefill three tokens: reserve positions, then write each layer's rows.
//! let positions = cache.append(seq, 3)?;
//! let k: Vec<f32> = (0..12).map(|i| i as f32).collect();
//! let v = vec![1.0_f32; 12];
//! for layer in 0..2 {
//!     cache.write(seq, layer, positions.start, &k, &v)?;
//! }
//!
//! // Attention reads a head's keys block by block.
//! let mut seen = 0;
//! for block in cache.head_blocks(seq, 0, 0)? {
//!     assert_eq!(block.keys.len(), block.n_tokens * 4);
//!     seen += block.n_tokens;
//! }
//! assert_eq!(seen, 3);
//!
//! // A fork shares the prefix; a rollback drops the last token.
//! let other = cache.fork(seq)?;
//! cache.truncate(seq, 2)?;
//! assert_eq!((cache.len(seq)?, cache.len(other)?), (2, 3));
//! assert_eq!(cache.stats().blocks_used, 1);
//! # Ok::<(), ferrolm_kvcache::KvCacheError>(())
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod cache;
mod config;
mod element;
mod error;
mod ledger;
mod slots;
mod stats;
mod storage;

pub use cache::{HeadBlocks, KvBlockRef, PagedKvCache};
pub use config::{KvCacheConfig, KvKind};
pub use element::{KvDtype, KvElement};
pub use error::KvCacheError;
pub use half;
pub use ledger::{Appended, BlockCopy, BlockLedger, SeqId};
pub use slots::{KvStore, PendingCopies, SlotError, Slots};
pub use stats::KvStats;
pub use storage::HostKvStorage;
