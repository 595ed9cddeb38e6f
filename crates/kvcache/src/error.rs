use thiserror::Error;

use crate::SeqId;

/// Everything that can go wrong in the KV cache. Every failing operation
/// leaves the cache as it was.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KvCacheError {
    /// A shape parameter of the configuration is zero or the total size overflows.
    #[error("invalid KV cache configuration: {parameter} = {value} ({reason})")]
    InvalidConfig {
        /// The parameter's name.
        parameter: &'static str,
        /// The value given.
        value: usize,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// The sequence does not exist (never created, or freed).
    #[error("unknown sequence {seq}")]
    UnknownSequence {
        /// The sequence asked for.
        seq: SeqId,
    },

    /// Not enough free blocks for the operation.
    #[error("KV cache is full: {needed} more blocks needed, {free} free")]
    OutOfBlocks {
        /// Blocks the operation needs.
        needed: usize,
        /// Blocks free now.
        free: usize,
    },

    /// The sequence would grow beyond the per-sequence limit (the context size).
    #[error(
        "sequence {seq} is full: {len} tokens + {requested} requested exceeds the limit of {max}"
    )]
    ContextFull {
        /// The sequence.
        seq: SeqId,
        /// Its length now.
        len: usize,
        /// Tokens asked for.
        requested: usize,
        /// The per-sequence limit.
        max: usize,
    },

    /// A layer index is out of range.
    #[error("layer {layer} is out of range ({n_layers} layers)")]
    LayerOutOfRange {
        /// The layer asked for.
        layer: usize,
        /// Number of layers.
        n_layers: usize,
    },

    /// A KV head index is out of range.
    #[error("kv head {head} is out of range ({n_kv_heads} kv heads)")]
    HeadOutOfRange {
        /// The head asked for.
        head: usize,
        /// Number of KV heads.
        n_kv_heads: usize,
    },

    /// Positions outside the sequence's reserved length.
    #[error("positions {start}..{end} are outside sequence {seq} of length {len}")]
    PositionOutOfRange {
        /// The sequence.
        seq: SeqId,
        /// First position asked for.
        start: usize,
        /// One past the last position asked for.
        end: usize,
        /// The sequence's length.
        len: usize,
    },

    /// K or V data whose length is not a whole number of token rows, or K and V of different lengths.
    #[error(
        "{what} has {len} values, expected a multiple of {row} (n_kv_heads * head_dim) matching the other"
    )]
    ShapeMismatch {
        /// `"k"` or `"v"`.
        what: &'static str,
        /// Values given.
        len: usize,
        /// Values per token row.
        row: usize,
    },

    /// A block id outside the pool.
    #[error("block {block} is out of range ({n_blocks} blocks)")]
    BlockOutOfRange {
        /// The block asked for.
        block: u32,
        /// Blocks in the pool.
        n_blocks: usize,
    },
}
