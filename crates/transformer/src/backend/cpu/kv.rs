//! Host KV storage of the CPU backend: `ferrolm-kvcache`'s paged cache, one sequence per
//! [`SeqId`] slot.

use ferrolm_kvcache::{HeadBlocks, KvCacheConfig, PagedKvCache};

use crate::backend::{Batch, KvLayout, SeqId};
use crate::error::{Result, TransformerError};

/// Tokens per cache block.
const BLOCK_TOKENS: usize = 32;

/// Keys and values of every layer and sequence, in f32, paged.
#[derive(Debug)]
pub struct CpuKv {
    layout: KvLayout,
    cache: PagedKvCache<f32>,
    seqs: Vec<ferrolm_kvcache::SeqId>,
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
        let mut cache = PagedKvCache::new(config)?;
        let seqs = (0..layout.n_seq).map(|_| cache.create_sequence()).collect();
        Ok(Self {
            layout,
            cache,
            seqs,
        })
    }

    /// The layout the cache was made with.
    pub fn layout(&self) -> KvLayout {
        self.layout
    }

    /// The paged cache (statistics, block tables).
    pub fn paged(&self) -> &PagedKvCache<f32> {
        &self.cache
    }

    /// Positions held by `seq` (0 for an unknown one).
    pub fn len(&self, seq: SeqId) -> usize {
        self.id(seq)
            .ok()
            .and_then(|id| self.cache.len(id).ok())
            .unwrap_or(0)
    }

    /// Whether no sequence holds any position.
    pub fn is_empty(&self) -> bool {
        self.seqs
            .iter()
            .all(|&id| self.cache.len(id).unwrap_or(0) == 0)
    }

    fn id(&self, seq: SeqId) -> Result<ferrolm_kvcache::SeqId> {
        self.seqs
            .get(seq as usize)
            .copied()
            .ok_or_else(|| TransformerError::InvalidBatch {
                reason: format!("sequence {seq} is not in a cache of {}", self.layout.n_seq),
            })
    }

    /// Appends the batch's positions, checking that each sequence continues where it ends.
    pub(crate) fn reserve(&mut self, batch: &Batch<'_>) -> Result<()> {
        let mut done = 0;
        while done < batch.len() {
            let seq = batch.seqs[done];
            let run = batch.seqs[done..].iter().take_while(|&&s| s == seq).count();
            if let Err(e) = self.append_run(seq, &batch.positions[done..done + run]) {
                self.undo(&batch.seqs[..done]);
                return Err(e);
            }
            done += run;
        }
        Ok(())
    }

    fn append_run(&mut self, seq: SeqId, positions: &[u32]) -> Result<()> {
        let id = self.id(seq)?;
        let len = self.cache.len(id)?;
        if let Some((i, &p)) = positions
            .iter()
            .enumerate()
            .find(|&(i, &p)| p as usize != len + i)
        {
            return Err(TransformerError::InvalidBatch {
                reason: format!(
                    "a token of sequence {seq} is at position {p}, expected {}",
                    len + i
                ),
            });
        }
        let needed = len + positions.len();
        match self.cache.append(id, positions.len()) {
            Ok(_) => Ok(()),
            Err(ferrolm_kvcache::KvCacheError::ContextFull { .. }) => {
                Err(TransformerError::ContextFull {
                    needed,
                    n_ctx: self.layout.n_ctx,
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    fn undo(&mut self, seqs: &[SeqId]) {
        for &seq in seqs {
            if let Ok(id) = self.id(seq) {
                let len = self.cache.len(id).unwrap_or(0);
                let _ = self.cache.truncate(id, len.saturating_sub(1));
            }
        }
    }

    pub(crate) fn truncate(&mut self, seq: SeqId, len: usize) -> Result<()> {
        let id = self.id(seq)?;
        let len = len.min(self.cache.len(id)?);
        Ok(self.cache.truncate(id, len)?)
    }

    pub(crate) fn clear(&mut self) {
        for &id in &self.seqs {
            let _ = self.cache.truncate(id, 0);
        }
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
        let id = self.id(seq)?;
        Ok(self.cache.write(id, layer, first, k, v)?)
    }

    /// Keys and values of one KV head of `seq` in `layer`, block by block.
    pub(crate) fn head(
        &self,
        layer: usize,
        seq: SeqId,
        head: usize,
    ) -> Result<HeadBlocks<'_, f32>> {
        Ok(self.cache.head_blocks(self.id(seq)?, layer, head)?)
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
