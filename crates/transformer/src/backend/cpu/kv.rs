//! Host KV storage of the CPU backend: `ferrolm-kvcache`'s paged cache, one sequence per
//! [`SeqId`] slot ([`Slots`] places the batches).

use ferrolm_kvcache::{HeadBlocks, KvCacheConfig, PagedKvCache, Slots};

use crate::backend::{Batch, KvLayout, SeqId};
use crate::error::{Result, TransformerError};

/// Tokens per cache block.
const BLOCK_TOKENS: usize = 32;

/// Keys and values of every layer and sequence, in f32, paged.
#[derive(Debug)]
pub struct CpuKv {
    layout: KvLayout,
    slots: Slots<PagedKvCache<f32>>,
}

impl CpuKv {
    pub(crate) fn new(layout: KvLayout) -> Result<Self> {
        // Each sequence fills whole blocks: its last one may be partly empty.
        let tokens = layout
            .n_ctx
            .div_ceil(BLOCK_TOKENS)
            .checked_mul(BLOCK_TOKENS)
            .and_then(|per_seq| per_seq.checked_mul(layout.n_seq))
            .ok_or_else(|| TransformerError::InvalidConfig {
                key: "context size".into(),
                reason: format!(
                    "{} sequences of {} positions overflow",
                    layout.n_seq, layout.n_ctx
                ),
            })?;
        check_memory(&layout, tokens)?;
        let config = KvCacheConfig::for_tokens(
            layout.n_layer,
            layout.n_head_kv,
            layout.head_dim,
            BLOCK_TOKENS,
            tokens,
        )?
        .with_max_sequence_tokens(layout.n_ctx);
        let cache = PagedKvCache::new(config)?;
        Ok(Self {
            layout,
            slots: Slots::new(cache, layout.n_seq, layout.n_ctx),
        })
    }

    /// The layout the cache was made with.
    pub fn layout(&self) -> KvLayout {
        self.layout
    }

    /// The paged cache (statistics, block tables).
    pub fn paged(&self) -> &PagedKvCache<f32> {
        self.slots.store()
    }

    /// Positions held by `seq` (0 for an unknown one).
    pub fn len(&self, seq: SeqId) -> usize {
        self.slots.len(seq)
    }

    /// Whether no sequence holds any position.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Appends the batch's positions, checking that each sequence continues where it ends;
    /// a batch that fails leaves every sequence as it was.
    pub(crate) fn reserve(&mut self, batch: &Batch<'_>) -> Result<()> {
        Ok(self.slots.reserve(batch.seqs, batch.positions)?)
    }

    pub(crate) fn truncate(&mut self, seq: SeqId, len: usize) -> Result<()> {
        Ok(self.slots.truncate(seq, len)?)
    }

    pub(crate) fn share(&mut self, dst: SeqId, src: SeqId, len: usize) -> Result<()> {
        Ok(self.slots.share(dst, src, len)?)
    }

    pub(crate) fn clear(&mut self) {
        let _ = self.slots.clear();
    }

    /// Writes the keys and values of consecutive positions `first..` of `seq` in `layer`
    /// (`k`, `v`: rows of `n_head_kv * head_dim`).
    pub(crate) fn store(
        &mut self,
        layer: usize,
        seq: SeqId,
        first: usize,
        k: &[f32],
        v: &[f32],
    ) -> Result<()> {
        let id = self.slots.id(seq)?;
        Ok(self.slots.store_mut().write(id, layer, first, k, v)?)
    }

    /// Keys and values of one KV head of `seq` in `layer`, block by block.
    pub(crate) fn head(
        &self,
        layer: usize,
        seq: SeqId,
        head: usize,
    ) -> Result<HeadBlocks<'_, f32>> {
        let id = self.slots.id(seq)?;
        Ok(self.slots.store().head_blocks(id, layer, head)?)
    }
}

/// Refuses a cache larger than the machine's available memory, before anything is allocated.
fn check_memory(layout: &KvLayout, tokens: usize) -> Result<()> {
    let overflow = || TransformerError::InvalidConfig {
        key: "context size".into(),
        reason: format!("a KV cache of {tokens} positions overflows"),
    };
    let bytes = [layout.n_layer, layout.n_head_kv, layout.head_dim, 2, 4]
        .iter()
        .try_fold(tokens as u64, |acc, &m| acc.checked_mul(m as u64))
        .ok_or_else(overflow)?;
    if let Some(available) = available_memory()
        && bytes > available
    {
        return Err(TransformerError::InsufficientMemory {
            what: format!("a KV cache of {tokens} positions"),
            needed_mib: bytes >> 20,
            available_mib: available >> 20,
        });
    }
    Ok(())
}

/// Bytes of memory available for new allocations (`MemAvailable` of `/proc/meminfo`), where
/// the system says.
fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}
