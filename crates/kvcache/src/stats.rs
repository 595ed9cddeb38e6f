//! Memory statistics of a cache.

use crate::SeqId;

/// A snapshot of what a cache holds.
#[derive(Debug, Clone, PartialEq)]
pub struct KvStats {
    /// Each live sequence and its length in tokens, in creation order.
    pub sequences: Vec<(SeqId, usize)>,
    /// Sum of the sequences' lengths (a shared prefix counts once per sequence).
    pub tokens: usize,
    /// Filled token slots, a shared slot counted once.
    pub unique_tokens: usize,
    /// Tokens per block.
    pub block_tokens: usize,
    /// Blocks in the pool.
    pub blocks_total: usize,
    /// Blocks held by some sequence.
    pub blocks_used: usize,
    /// Blocks held by no sequence.
    pub blocks_free: usize,
    /// Blocks held by more than one sequence.
    pub blocks_shared: usize,
    /// Bytes of one block across all layers, K and V.
    pub bytes_per_block: usize,
    /// Bytes of the whole pool.
    pub bytes_allocated: usize,
    /// Bytes of the blocks in use.
    pub bytes_used: usize,
}

impl KvStats {
    /// Filled slots over the slots of the blocks in use (1 when no block is
    /// used): what the partly filled last blocks waste.
    pub fn utilization(&self) -> f64 {
        if self.blocks_used == 0 {
            return 1.0;
        }
        self.unique_tokens as f64 / (self.blocks_used * self.block_tokens) as f64
    }

    /// Blocks in use over all blocks.
    pub fn occupancy(&self) -> f64 {
        self.blocks_used as f64 / self.blocks_total as f64
    }
}
