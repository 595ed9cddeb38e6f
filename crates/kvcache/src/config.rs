//! Shape of a cache and its memory layout.

use crate::KvCacheError;

/// Which half of a layer's cache: keys or values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KvKind {
    /// Keys.
    K = 0,
    /// Values.
    V = 1,
}

/// The shape of a paged KV cache: model dimensions and the block pool.
///
/// # Memory layout
///
/// Storage is one array per cache of
/// `n_layers × 2 × n_blocks × n_kv_heads × block_tokens × head_dim` elements.
/// Element `(layer l, kind c, block b, kv head h, slot t, dim d)`, with `c = 0`
/// for K and `1` for V, is at
///
/// ```text
/// ((((l·2 + c)·n_blocks + b)·n_kv_heads + h)·block_tokens + t)·head_dim + d
/// ```
///
/// So each layer has a K pool and then a V pool, each `n_blocks` blocks of
/// `[n_kv_heads][block_tokens][head_dim]`. Token `p` of a sequence lives in
/// block `table[p / block_tokens]`, slot `p % block_tokens`. For one KV head,
/// a block's keys are one contiguous `[block_tokens][head_dim]` slice: decode
/// attention walks a head's tokens block by block with unit stride, and a GPU
/// kernel reads the same layout from the pool's base address and the block
/// table. Slots past a sequence's length hold stale values and are never read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvCacheConfig {
    n_layers: usize,
    n_kv_heads: usize,
    head_dim: usize,
    block_tokens: usize,
    n_blocks: usize,
    max_sequence_tokens: usize,
}

impl KvCacheConfig {
    /// A pool of `n_blocks` blocks of `block_tokens` tokens each, for a model
    /// with `n_layers` layers of `n_kv_heads` KV heads of `head_dim` values.
    /// A sequence may use the whole pool; see [`Self::with_max_sequence_tokens`].
    pub fn new(
        n_layers: usize,
        n_kv_heads: usize,
        head_dim: usize,
        block_tokens: usize,
        n_blocks: usize,
    ) -> Result<Self, KvCacheError> {
        for (parameter, value) in [
            ("n_layers", n_layers),
            ("n_kv_heads", n_kv_heads),
            ("head_dim", head_dim),
            ("block_tokens", block_tokens),
            ("n_blocks", n_blocks),
        ] {
            if value == 0 {
                return Err(KvCacheError::InvalidConfig {
                    parameter,
                    value,
                    reason: "must be at least 1",
                });
            }
        }
        if u32::try_from(n_blocks).is_err() {
            return Err(KvCacheError::InvalidConfig {
                parameter: "n_blocks",
                value: n_blocks,
                reason: "block ids are u32",
            });
        }
        let config = Self {
            n_layers,
            n_kv_heads,
            head_dim,
            block_tokens,
            n_blocks,
            max_sequence_tokens: 0,
        };
        let capacity = block_tokens
            .checked_mul(n_blocks)
            .ok_or(KvCacheError::InvalidConfig {
                parameter: "n_blocks",
                value: n_blocks,
                reason: "block_tokens * n_blocks overflows",
            })?;
        config.total_elements().ok_or(KvCacheError::InvalidConfig {
            parameter: "n_blocks",
            value: n_blocks,
            reason: "the storage size overflows",
        })?;
        Ok(Self {
            max_sequence_tokens: capacity,
            ..config
        })
    }

    /// The smallest pool holding `tokens` tokens (rounded up to whole blocks).
    pub fn for_tokens(
        n_layers: usize,
        n_kv_heads: usize,
        head_dim: usize,
        block_tokens: usize,
        tokens: usize,
    ) -> Result<Self, KvCacheError> {
        if block_tokens == 0 {
            return Err(KvCacheError::InvalidConfig {
                parameter: "block_tokens",
                value: 0,
                reason: "must be at least 1",
            });
        }
        Self::new(
            n_layers,
            n_kv_heads,
            head_dim,
            block_tokens,
            tokens.div_ceil(block_tokens),
        )
    }

    /// Limits every sequence to `max` tokens (the context size); growing past
    /// it is [`KvCacheError::ContextFull`]. The limit may exceed the pool.
    #[must_use]
    pub fn with_max_sequence_tokens(mut self, max: usize) -> Self {
        self.max_sequence_tokens = max;
        self
    }

    /// Number of layers.
    pub fn n_layers(&self) -> usize {
        self.n_layers
    }

    /// KV heads per layer.
    pub fn n_kv_heads(&self) -> usize {
        self.n_kv_heads
    }

    /// Values per head and token.
    pub fn head_dim(&self) -> usize {
        self.head_dim
    }

    /// Tokens per block.
    pub fn block_tokens(&self) -> usize {
        self.block_tokens
    }

    /// Blocks in the pool.
    pub fn n_blocks(&self) -> usize {
        self.n_blocks
    }

    /// Tokens a sequence may hold.
    pub fn max_sequence_tokens(&self) -> usize {
        self.max_sequence_tokens
    }

    /// Values in one token's K (or V) row for one layer: `n_kv_heads × head_dim`.
    pub fn row_len(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }

    /// Elements of one block for one layer, kind and head: `block_tokens × head_dim`.
    pub fn head_block_len(&self) -> usize {
        self.block_tokens * self.head_dim
    }

    /// Elements of one block for one layer and kind: `n_kv_heads × block_tokens × head_dim`.
    pub fn block_len(&self) -> usize {
        self.n_kv_heads * self.head_block_len()
    }

    /// Elements one block holds across all layers, K and V.
    pub fn block_elements(&self) -> usize {
        self.n_layers * 2 * self.block_len()
    }

    /// Elements of the whole storage (see the layout above), if it fits in `usize`.
    pub fn total_elements(&self) -> Option<usize> {
        self.n_layers
            .checked_mul(2)?
            .checked_mul(self.n_blocks)?
            .checked_mul(self.n_kv_heads)?
            .checked_mul(self.block_tokens)?
            .checked_mul(self.head_dim)
    }

    /// Offset of the first element of `(layer, kind, block, head)`: the start of
    /// a `[block_tokens][head_dim]` slice. Indices are not checked.
    pub fn head_block_offset(&self, layer: usize, kind: KvKind, block: u32, head: usize) -> usize {
        (((layer * 2 + kind as usize) * self.n_blocks + block as usize) * self.n_kv_heads + head)
            * self.head_block_len()
    }

    /// Offset of element `(layer, kind, block, head, slot, dim)`. Indices are not checked.
    pub fn element_offset(
        &self,
        layer: usize,
        kind: KvKind,
        block: u32,
        head: usize,
        slot: usize,
        dim: usize,
    ) -> usize {
        self.head_block_offset(layer, kind, block, head) + slot * self.head_dim + dim
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn offsets_follow_the_documented_formula() {
        let c = KvCacheConfig::new(3, 2, 4, 5, 7).unwrap();
        let mut expected = 0;
        for layer in 0..3 {
            for kind in [KvKind::K, KvKind::V] {
                for block in 0..7 {
                    for head in 0..2 {
                        for slot in 0..5 {
                            for dim in 0..4 {
                                assert_eq!(
                                    c.element_offset(layer, kind, block, head, slot, dim),
                                    expected
                                );
                                expected += 1;
                            }
                        }
                    }
                }
            }
        }
        assert_eq!(Some(expected), c.total_elements());
        assert_eq!(c.block_elements() * 7, expected);
    }

    #[test]
    fn rejects_zero_and_overflowing_shapes() {
        assert!(matches!(
            KvCacheConfig::new(1, 0, 4, 4, 4),
            Err(KvCacheError::InvalidConfig {
                parameter: "n_kv_heads",
                ..
            })
        ));
        assert!(KvCacheConfig::new(usize::MAX / 2, 4, 64, 16, 1 << 20).is_err());
        let c = KvCacheConfig::for_tokens(2, 2, 8, 16, 100).unwrap();
        assert_eq!(c.n_blocks(), 7);
        assert_eq!(c.max_sequence_tokens(), 112);
        assert_eq!(c.with_max_sequence_tokens(100).max_sequence_tokens(), 100);
    }
}
