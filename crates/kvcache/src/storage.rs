//! Host memory for the blocks of a cache.

use crate::{BlockCopy, KvCacheConfig, KvCacheError, KvElement, KvKind};

/// The host array that holds every block, in the layout documented on
/// [`KvCacheConfig`]. It has no notion of sequences: a [`crate::BlockLedger`]
/// says which blocks mean what.
#[derive(Debug, Clone)]
pub struct HostKvStorage<T: KvElement> {
    config: KvCacheConfig,
    data: Vec<T>,
}

impl<T: KvElement> HostKvStorage<T> {
    /// Allocates (zeroed) storage for every block of `config`.
    pub fn new(config: &KvCacheConfig) -> Result<Self, KvCacheError> {
        let n = config.total_elements().ok_or(KvCacheError::InvalidConfig {
            parameter: "n_blocks",
            value: config.n_blocks(),
            reason: "the storage size overflows",
        })?;
        Ok(Self {
            config: *config,
            data: vec![T::default(); n],
        })
    }

    /// The shape this storage was made for.
    pub fn config(&self) -> &KvCacheConfig {
        &self.config
    }

    /// The whole array (for uploading it, or reading it with the documented offsets).
    pub fn as_slice(&self) -> &[T] {
        &self.data
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.data.len() * size_of::<T>()
    }

    /// The `[block_tokens][head_dim]` slice of one block for one layer, kind and head.
    pub fn head_block(
        &self,
        layer: usize,
        kind: KvKind,
        block: u32,
        head: usize,
    ) -> Result<&[T], KvCacheError> {
        let range = self.head_block_range(layer, kind, block, head)?;
        Ok(&self.data[range])
    }

    /// Mutable [`Self::head_block`].
    pub fn head_block_mut(
        &mut self,
        layer: usize,
        kind: KvKind,
        block: u32,
        head: usize,
    ) -> Result<&mut [T], KvCacheError> {
        let range = self.head_block_range(layer, kind, block, head)?;
        Ok(&mut self.data[range])
    }

    /// Performs a copy-on-write the ledger asked for: the first `n_tokens`
    /// slots of `src` go to `dst`, in every layer, K and V, every head.
    pub fn copy_block(&mut self, copy: BlockCopy) -> Result<(), KvCacheError> {
        let c = self.config;
        for block in [copy.src, copy.dst] {
            if block as usize >= c.n_blocks() {
                return Err(KvCacheError::BlockOutOfRange {
                    block,
                    n_blocks: c.n_blocks(),
                });
            }
        }
        let n = copy.n_tokens.min(c.block_tokens()) * c.head_dim();
        for layer in 0..c.n_layers() {
            for kind in [KvKind::K, KvKind::V] {
                for head in 0..c.n_kv_heads() {
                    let src = c.head_block_offset(layer, kind, copy.src, head);
                    let dst = c.head_block_offset(layer, kind, copy.dst, head);
                    self.data.copy_within(src..src + n, dst);
                }
            }
        }
        Ok(())
    }

    /// Internal access for the cache, which has validated the indices.
    pub(crate) fn data(&self) -> &[T] {
        &self.data
    }

    pub(crate) fn data_mut(&mut self) -> &mut [T] {
        &mut self.data
    }

    fn head_block_range(
        &self,
        layer: usize,
        kind: KvKind,
        block: u32,
        head: usize,
    ) -> Result<std::ops::Range<usize>, KvCacheError> {
        let c = &self.config;
        if layer >= c.n_layers() {
            return Err(KvCacheError::LayerOutOfRange {
                layer,
                n_layers: c.n_layers(),
            });
        }
        if head >= c.n_kv_heads() {
            return Err(KvCacheError::HeadOutOfRange {
                head,
                n_kv_heads: c.n_kv_heads(),
            });
        }
        if block as usize >= c.n_blocks() {
            return Err(KvCacheError::BlockOutOfRange {
                block,
                n_blocks: c.n_blocks(),
            });
        }
        let start = c.head_block_offset(layer, kind, block, head);
        Ok(start..start + c.head_block_len())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn copy_block_copies_leading_slots_of_every_layer_kind_and_head() {
        let config = KvCacheConfig::new(2, 2, 3, 4, 3).unwrap();
        let mut s = HostKvStorage::<f32>::new(&config).unwrap();
        for layer in 0..2 {
            for kind in [KvKind::K, KvKind::V] {
                for head in 0..2 {
                    let blk = s.head_block_mut(layer, kind, 0, head).unwrap();
                    for (i, v) in blk.iter_mut().enumerate() {
                        *v = (layer * 1000 + kind as usize * 100 + head * 10) as f32
                            + i as f32 * 0.5;
                    }
                }
            }
        }
        s.copy_block(BlockCopy {
            src: 0,
            dst: 2,
            n_tokens: 3,
        })
        .unwrap();
        for layer in 0..2 {
            for kind in [KvKind::K, KvKind::V] {
                for head in 0..2 {
                    let src = s.head_block(layer, kind, 0, head).unwrap().to_vec();
                    let dst = s.head_block(layer, kind, 2, head).unwrap();
                    assert_eq!(dst[..9], src[..9]);
                    assert!(dst[9..].iter().all(|&v| v == 0.0));
                }
            }
        }
        assert!(
            s.copy_block(BlockCopy {
                src: 0,
                dst: 3,
                n_tokens: 1
            })
            .is_err()
        );
        assert_eq!(s.bytes(), 2 * 2 * 3 * 2 * 4 * 3 * 4);
    }
}
