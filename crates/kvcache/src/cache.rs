//! The host KV cache: a ledger and the storage it governs.

use std::ops::Range;

use crate::{
    BlockCopy, BlockLedger, HostKvStorage, KvCacheConfig, KvCacheError, KvElement, KvKind, KvStats,
    SeqId,
};

/// A paged KV cache in host memory.
///
/// The per-token flow of a forward pass for sequence `s`:
///
/// 1. [`PagedKvCache::append`] reserves positions for the new tokens (taking
///    blocks, copying a shared partial block), failing cleanly when the pool
///    or the sequence's limit is exhausted;
/// 2. for each layer, [`PagedKvCache::write`] stores the new tokens' K and V
///    rows, and attention reads positions `0..len` of each KV head block by
///    block through [`PagedKvCache::head_blocks`];
/// 3. a rejected speculative token is rolled back with [`PagedKvCache::truncate`].
///
/// [`PagedKvCache::fork`] starts a sequence that shares another's prefix
/// without copying it.
#[derive(Debug, Clone)]
pub struct PagedKvCache<T: KvElement> {
    config: KvCacheConfig,
    ledger: BlockLedger,
    storage: HostKvStorage<T>,
    copies: Vec<BlockCopy>,
}

impl<T: KvElement> PagedKvCache<T> {
    /// An empty cache with every block allocated up front.
    pub fn new(config: KvCacheConfig) -> Result<Self, KvCacheError> {
        Ok(Self {
            ledger: BlockLedger::new(&config),
            storage: HostKvStorage::new(&config)?,
            config,
            copies: Vec::new(),
        })
    }

    /// The cache's shape.
    pub fn config(&self) -> &KvCacheConfig {
        &self.config
    }

    /// The bookkeeping (block tables, reference counts).
    pub fn ledger(&self) -> &BlockLedger {
        &self.ledger
    }

    /// The storage, in the layout documented on [`KvCacheConfig`].
    pub fn storage(&self) -> &HostKvStorage<T> {
        &self.storage
    }

    /// Starts an empty sequence.
    pub fn create_sequence(&mut self) -> SeqId {
        self.ledger.create()
    }

    /// Reserves `n_tokens` new positions at the end of `seq` and returns them;
    /// write every layer's K and V for them before reading them.
    pub fn append(&mut self, seq: SeqId, n_tokens: usize) -> Result<Range<usize>, KvCacheError> {
        let appended = self.ledger.append(seq, n_tokens)?;
        if let Some(copy) = appended.copy {
            self.storage.copy_block(copy)?;
        }
        Ok(appended.positions)
    }

    /// Stores K and V rows of `layer` for positions `first_pos..first_pos + n`
    /// of `seq`, which must be reserved. `k` and `v` are `[n][n_kv_heads][head_dim]`
    /// row-major, as the K and V projections produce them.
    ///
    /// Overwriting positions shared with a forked sequence copies their
    /// blocks first, so the other sequence is unaffected.
    pub fn write(
        &mut self,
        seq: SeqId,
        layer: usize,
        first_pos: usize,
        k: &[f32],
        v: &[f32],
    ) -> Result<(), KvCacheError> {
        let c = self.config;
        if layer >= c.n_layers() {
            return Err(KvCacheError::LayerOutOfRange {
                layer,
                n_layers: c.n_layers(),
            });
        }
        let row = c.row_len();
        if !k.len().is_multiple_of(row) {
            return Err(KvCacheError::ShapeMismatch {
                what: "k",
                len: k.len(),
                row,
            });
        }
        if v.len() != k.len() {
            return Err(KvCacheError::ShapeMismatch {
                what: "v",
                len: v.len(),
                row,
            });
        }
        let n = k.len() / row;
        let end = first_pos.saturating_add(n);
        self.copies.clear();
        let table = self
            .ledger
            .make_private(seq, first_pos..end, &mut self.copies)?;
        for &copy in &self.copies {
            self.storage.copy_block(copy)?;
        }
        let data = self.storage.data_mut();
        let (bt, hd) = (c.block_tokens(), c.head_dim());
        for (t, (k_row, v_row)) in k.chunks_exact(row).zip(v.chunks_exact(row)).enumerate() {
            let pos = first_pos + t;
            let block = table[pos / bt];
            let slot = pos % bt;
            for head in 0..c.n_kv_heads() {
                let src = head * hd..(head + 1) * hd;
                let at = c.element_offset(layer, KvKind::K, block, head, slot, 0);
                T::store(&mut data[at..at + hd], &k_row[src.clone()]);
                let at = c.element_offset(layer, KvKind::V, block, head, slot, 0);
                T::store(&mut data[at..at + hd], &v_row[src]);
            }
        }
        Ok(())
    }

    /// Shortens `seq` to `n_tokens` (no-op if it is not longer).
    pub fn truncate(&mut self, seq: SeqId, n_tokens: usize) -> Result<(), KvCacheError> {
        self.ledger.truncate(seq, n_tokens)
    }

    /// A new sequence holding the same tokens as `seq`, sharing its blocks.
    pub fn fork(&mut self, seq: SeqId) -> Result<SeqId, KvCacheError> {
        self.ledger.fork(seq)
    }

    /// Ends `seq` and releases its blocks.
    pub fn free(&mut self, seq: SeqId) -> Result<(), KvCacheError> {
        self.ledger.free(seq)
    }

    /// Ends every sequence.
    pub fn clear(&mut self) {
        self.ledger.clear();
    }

    /// Tokens held by `seq`.
    pub fn len(&self, seq: SeqId) -> Result<usize, KvCacheError> {
        self.ledger.len(seq)
    }

    /// Whether `seq` exists.
    pub fn contains(&self, seq: SeqId) -> bool {
        self.ledger.contains(seq)
    }

    /// K and V of positions `0..len` of `seq` for one layer and KV head, one
    /// block at a time, in position order.
    pub fn head_blocks(
        &self,
        seq: SeqId,
        layer: usize,
        head: usize,
    ) -> Result<HeadBlocks<'_, T>, KvCacheError> {
        self.check_layer_head(layer, head)?;
        Ok(HeadBlocks {
            config: self.config,
            data: self.storage.data(),
            table: self.ledger.block_table(seq)?,
            len: self.ledger.len(seq)?,
            layer,
            head,
            next: 0,
        })
    }

    /// The K and V rows (`head_dim` values each) of one position.
    pub fn token(
        &self,
        seq: SeqId,
        layer: usize,
        head: usize,
        pos: usize,
    ) -> Result<(&[T], &[T]), KvCacheError> {
        self.check_layer_head(layer, head)?;
        let len = self.ledger.len(seq)?;
        if pos >= len {
            return Err(KvCacheError::PositionOutOfRange {
                seq,
                start: pos,
                end: pos + 1,
                len,
            });
        }
        let c = &self.config;
        let block = self.ledger.block_table(seq)?[pos / c.block_tokens()];
        let slot = pos % c.block_tokens();
        let hd = c.head_dim();
        let data = self.storage.data();
        let k = c.element_offset(layer, KvKind::K, block, head, slot, 0);
        let v = c.element_offset(layer, KvKind::V, block, head, slot, 0);
        Ok((&data[k..k + hd], &data[v..v + hd]))
    }

    /// What the cache holds now.
    pub fn stats(&self) -> KvStats {
        let l = &self.ledger;
        let sequences: Vec<(SeqId, usize)> = l.sequences().collect();
        let bytes_per_block = self.config.block_elements() * size_of::<T>();
        KvStats {
            tokens: sequences.iter().map(|s| s.1).sum(),
            sequences,
            unique_tokens: l.unique_tokens(),
            block_tokens: self.config.block_tokens(),
            blocks_total: l.n_blocks(),
            blocks_used: l.used_blocks(),
            blocks_free: l.free_blocks(),
            blocks_shared: l.shared_blocks(),
            bytes_per_block,
            bytes_allocated: self.storage.bytes(),
            bytes_used: l.used_blocks() * bytes_per_block,
        }
    }

    fn check_layer_head(&self, layer: usize, head: usize) -> Result<(), KvCacheError> {
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
        Ok(())
    }
}

/// One block's worth of a KV head's cache: `n_tokens` consecutive positions
/// starting at `first_pos`.
#[derive(Debug, Clone, Copy)]
pub struct KvBlockRef<'a, T> {
    /// Position of the first token.
    pub first_pos: usize,
    /// Tokens in this block (`block_tokens`, fewer in the last block).
    pub n_tokens: usize,
    /// Keys, `[n_tokens][head_dim]`.
    pub keys: &'a [T],
    /// Values, `[n_tokens][head_dim]`.
    pub values: &'a [T],
}

/// Iterator over the blocks of one sequence, layer and KV head; see
/// [`PagedKvCache::head_blocks`].
#[derive(Debug, Clone)]
pub struct HeadBlocks<'a, T> {
    config: KvCacheConfig,
    data: &'a [T],
    table: &'a [u32],
    len: usize,
    layer: usize,
    head: usize,
    next: usize,
}

impl<'a, T> Iterator for HeadBlocks<'a, T> {
    type Item = KvBlockRef<'a, T>;

    fn next(&mut self) -> Option<Self::Item> {
        let c = &self.config;
        let first_pos = self.next * c.block_tokens();
        if first_pos >= self.len {
            return None;
        }
        let block = *self.table.get(self.next)?;
        self.next += 1;
        let n_tokens = (self.len - first_pos).min(c.block_tokens());
        let n = n_tokens * c.head_dim();
        let k = c.head_block_offset(self.layer, KvKind::K, block, self.head);
        let v = c.head_block_offset(self.layer, KvKind::V, block, self.head);
        Some(KvBlockRef {
            first_pos,
            n_tokens,
            keys: &self.data[k..k + n],
            values: &self.data[v..v + n],
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self
            .len
            .div_ceil(self.config.block_tokens())
            .saturating_sub(self.next);
        (left, Some(left))
    }
}

impl<T> ExactSizeIterator for HeadBlocks<'_, T> {}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn small() -> PagedKvCache<f32> {
        PagedKvCache::new(KvCacheConfig::new(2, 2, 3, 4, 4).unwrap()).unwrap()
    }

    #[test]
    fn write_places_rows_at_the_documented_offsets() {
        let mut cache = small();
        let s = cache.create_sequence();
        cache.append(s, 5).unwrap();
        // Token t, head h, dim d has value 100 t + 10 h + d.
        let k: Vec<f32> = (0..5 * 6)
            .map(|i| (100 * (i / 6) + 10 * ((i % 6) / 3) + i % 3) as f32)
            .collect();
        let v: Vec<f32> = k.iter().map(|x| -x).collect();
        cache.write(s, 1, 0, &k, &v).unwrap();
        let table = cache.ledger().block_table(s).unwrap().to_vec();
        let c = *cache.config();
        let data = cache.storage().as_slice();
        for t in 0..5 {
            for h in 0..2 {
                for d in 0..3 {
                    let want = (100 * t + 10 * h + d) as f32;
                    let at = c.element_offset(1, KvKind::K, table[t / 4], h, t % 4, d);
                    assert_eq!(data[at], want);
                    let at = c.element_offset(1, KvKind::V, table[t / 4], h, t % 4, d);
                    assert_eq!(data[at], -want);
                }
            }
        }
        let (k4, v4) = cache.token(s, 1, 1, 4).unwrap();
        assert_eq!(
            (k4, v4),
            (&[410.0, 411.0, 412.0][..], &[-410.0, -411.0, -412.0][..])
        );
        let blocks: Vec<(usize, usize)> = cache
            .head_blocks(s, 1, 1)
            .unwrap()
            .map(|b| (b.first_pos, b.n_tokens))
            .collect();
        assert_eq!(blocks, [(0, 4), (4, 1)]);
    }

    #[test]
    fn bad_writes_and_reads_are_typed_errors() {
        let mut cache = small();
        let s = cache.create_sequence();
        cache.append(s, 2).unwrap();
        let row = [0.0_f32; 6];
        assert_eq!(
            cache.write(s, 2, 0, &row, &row),
            Err(KvCacheError::LayerOutOfRange {
                layer: 2,
                n_layers: 2
            })
        );
        assert_eq!(
            cache.write(s, 0, 0, &row[..5], &row[..5]),
            Err(KvCacheError::ShapeMismatch {
                what: "k",
                len: 5,
                row: 6
            })
        );
        assert_eq!(
            cache.write(s, 0, 0, &row, &[0.0; 12]),
            Err(KvCacheError::ShapeMismatch {
                what: "v",
                len: 12,
                row: 6
            })
        );
        assert_eq!(
            cache.write(s, 0, 1, &[0.0; 12], &[0.0; 12]),
            Err(KvCacheError::PositionOutOfRange {
                seq: s,
                start: 1,
                end: 3,
                len: 2
            })
        );
        assert!(matches!(
            cache.head_blocks(s, 0, 2),
            Err(KvCacheError::HeadOutOfRange { head: 2, .. })
        ));
        assert!(matches!(
            cache.token(s, 0, 0, 2),
            Err(KvCacheError::PositionOutOfRange { .. })
        ));
        cache.free(s).unwrap();
        assert_eq!(
            cache.write(s, 0, 0, &row, &row),
            Err(KvCacheError::UnknownSequence { seq: s })
        );
        assert!(!cache.contains(s));
    }

    #[test]
    fn stats_count_shared_blocks_once() {
        let mut cache = small();
        let a = cache.create_sequence();
        cache.append(a, 6).unwrap();
        let b = cache.fork(a).unwrap();
        cache.append(b, 1).unwrap();
        let st = cache.stats();
        assert_eq!(st.sequences, [(a, 6), (b, 7)]);
        assert_eq!(st.tokens, 13);
        // Block 0 shared (4 tokens), a's block 1 (2 tokens), b's copy of it (3 tokens).
        assert_eq!(st.unique_tokens, 9);
        assert_eq!(
            (st.blocks_used, st.blocks_free, st.blocks_shared),
            (3, 1, 1)
        );
        assert_eq!(st.bytes_per_block, 2 * 2 * 2 * 4 * 3 * 4);
        assert_eq!(st.bytes_used, 3 * st.bytes_per_block);
        assert_eq!(st.bytes_allocated, 4 * st.bytes_per_block);
        assert!((st.utilization() - 9.0 / 12.0).abs() < 1e-12);
        assert!((st.occupancy() - 0.75).abs() < 1e-12);
    }
}
