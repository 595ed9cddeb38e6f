//! Device KV storage of the CUDA backend: one [`PagedKvLayer`] (f16, paged) per layer, its
//! blocks handed out by `ferrolm-kvcache`'s [`BlockLedger`], and the block table of every
//! sequence slot mirrored in device memory for the attention kernels.

use cudarc::driver::CudaSlice;
use ferrolm_kvcache::{BlockCopy, BlockLedger, KvCacheConfig, KvCacheError};

use crate::backend::{Batch, KvLayout, SeqId};
use crate::cuda::{CudaDevice, CudaError, PagedKvLayer};
use crate::error::{Result, TransformerError};

/// Tokens per cache block.
const BLOCK_TOKENS: usize = 32;

/// Keys and values of every layer and sequence, in device memory.
#[derive(Debug)]
pub struct CudaKv {
    layout: KvLayout,
    pub(crate) layers: Vec<PagedKvLayer>,
    ledger: BlockLedger,
    ids: Vec<ferrolm_kvcache::SeqId>,
    /// Logical blocks per sequence (the row length of the block table).
    pub(crate) max_blocks: usize,
    /// `(n_seq, max_blocks)`: physical block of each logical block, -1 where none.
    table: Vec<i32>,
    pub(crate) table_dev: CudaSlice<i32>,
}

impl CudaKv {
    pub(crate) fn new(dev: &CudaDevice, layout: KvLayout) -> Result<Self> {
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
        if tokens == 0 {
            return Err(TransformerError::InvalidConfig {
                key: "context size".into(),
                reason: "a cache of no positions".into(),
            });
        }
        let config = KvCacheConfig::for_tokens(
            layout.n_layer,
            layout.n_head_kv,
            layout.head_dim,
            BLOCK_TOKENS,
            tokens,
        )?
        .with_max_sequence_tokens(layout.n_ctx);
        let n_blocks = config.n_blocks();
        // Keys and values in f16: refused with the size it needs when the device has not that
        // much free, before anything is allocated.
        let bytes = [
            n_blocks,
            BLOCK_TOKENS,
            layout.n_layer,
            layout.n_head_kv,
            layout.head_dim,
            2,
            2,
        ]
        .iter()
        .try_fold(1u64, |acc, &m| acc.checked_mul(m as u64))
        .ok_or_else(|| TransformerError::InvalidConfig {
            key: "context size".into(),
            reason: format!("a KV cache of {tokens} positions overflows"),
        })?;
        let (free, _) = dev.memory_info()?;
        if bytes > free as u64 {
            return Err(TransformerError::InsufficientMemory {
                what: format!("a KV cache of {tokens} positions on the GPU"),
                needed_mib: bytes >> 20,
                available_mib: (free as u64) >> 20,
            });
        }
        let layers = (0..layout.n_layer)
            .map(|_| {
                PagedKvLayer::new(
                    dev,
                    n_blocks,
                    BLOCK_TOKENS,
                    layout.n_head_kv,
                    layout.head_dim,
                )
            })
            .collect::<Result<Vec<_>, CudaError>>()?;
        let mut ledger = BlockLedger::new(&config);
        let ids = (0..layout.n_seq).map(|_| ledger.create()).collect();
        let max_blocks = layout.n_ctx.div_ceil(BLOCK_TOKENS);
        let table = vec![-1; layout.n_seq * max_blocks];
        let table_dev = dev
            .stream()
            .clone_htod(&table)
            .map_err(CudaError::driver("uploading block table"))?;
        Ok(Self {
            layout,
            layers,
            ledger,
            ids,
            max_blocks,
            table,
            table_dev,
        })
    }

    /// The layout the cache was made with.
    pub fn layout(&self) -> KvLayout {
        self.layout
    }

    /// The block bookkeeping (statistics, block tables).
    pub fn ledger(&self) -> &BlockLedger {
        &self.ledger
    }

    /// Bytes of device memory for keys and values.
    pub fn bytes(&self) -> usize {
        self.layers.iter().map(PagedKvLayer::bytes).sum()
    }

    /// Positions held by `seq` (0 for an unknown one).
    pub fn len(&self, seq: SeqId) -> usize {
        self.id(seq)
            .ok()
            .and_then(|id| self.ledger.len(id).ok())
            .unwrap_or(0)
    }

    /// Whether no sequence holds any position.
    pub fn is_empty(&self) -> bool {
        self.ids
            .iter()
            .all(|&id| self.ledger.len(id).unwrap_or(0) == 0)
    }

    fn id(&self, seq: SeqId) -> Result<ferrolm_kvcache::SeqId> {
        self.ids
            .get(seq as usize)
            .copied()
            .ok_or_else(|| TransformerError::InvalidBatch {
                reason: format!("sequence {seq} is not in a cache of {}", self.layout.n_seq),
            })
    }

    /// Checks that every sequence of the batch is a slot of this cache.
    pub(crate) fn check_seqs(&self, seqs: &[SeqId]) -> Result<()> {
        seqs.iter().try_for_each(|&s| self.id(s).map(|_| ()))
    }

    /// Appends the batch's positions, checking that each sequence continues where it ends, and
    /// brings the device block table up to date.
    pub(crate) fn reserve(&mut self, dev: &CudaDevice, batch: &Batch<'_>) -> Result<()> {
        let mut done = 0;
        while done < batch.len() {
            let seq = batch.seqs[done];
            let run = batch.seqs[done..].iter().take_while(|&&s| s == seq).count();
            if let Err(e) = self.append_run(dev, seq, &batch.positions[done..done + run]) {
                self.undo(dev, batch, done);
                return Err(e);
            }
            done += run;
        }
        Ok(())
    }

    fn append_run(&mut self, dev: &CudaDevice, seq: SeqId, positions: &[u32]) -> Result<()> {
        let id = self.id(seq)?;
        let len = self.ledger.len(id)?;
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
        let appended = match self.ledger.append(id, positions.len()) {
            Ok(a) => a,
            Err(KvCacheError::ContextFull { .. }) => {
                return Err(TransformerError::ContextFull {
                    needed: len + positions.len(),
                    n_ctx: self.layout.n_ctx,
                });
            }
            Err(e) => return Err(e.into()),
        };
        if let Some(copy) = appended.copy {
            self.copy_block(dev, copy)?;
        }
        self.sync_row(dev, seq)
    }

    /// Copy-on-write of a block shared with another sequence (the whole block, every layer).
    fn copy_block(&mut self, dev: &CudaDevice, copy: BlockCopy) -> Result<()> {
        dev.untracked_work()?;
        let s = dev.stream();
        for layer in &mut self.layers {
            let n = layer.block_size() * layer.n_kv_heads() * layer.head_dim();
            let (src, dst) = (copy.src as usize * n, copy.dst as usize * n);
            for data in [&mut layer.k, &mut layer.v] {
                let block = s
                    .clone_dtoh(&data.slice(src..src + n))
                    .map_err(CudaError::driver("copying a shared kv block"))?;
                s.memcpy_htod(&block, &mut data.slice_mut(dst..dst + n))
                    .map_err(CudaError::driver("copying a shared kv block"))?;
            }
        }
        Ok(())
    }

    /// Removes the positions a failed batch appended to the sequences before token `done`.
    fn undo(&mut self, dev: &CudaDevice, batch: &Batch<'_>, done: usize) {
        let mut i = 0;
        while i < done {
            let seq = batch.seqs[i];
            let run = batch.seqs[i..done]
                .iter()
                .take_while(|&&s| s == seq)
                .count();
            let _ = self.truncate(dev, seq, batch.positions[i] as usize);
            i += run;
        }
    }

    /// Makes the device block table row of `seq` match the ledger. The host copy changes only
    /// once the upload succeeded, so a failed upload is retried by the next call.
    fn sync_row(&mut self, dev: &CudaDevice, seq: SeqId) -> Result<()> {
        let id = self.id(seq)?;
        let blocks = self.ledger.block_table(id)?;
        let row0 = seq as usize * self.max_blocks;
        let row = &self.table[row0..row0 + self.max_blocks];
        let want = |i: usize| {
            blocks
                .get(i)
                .map_or(-1, |&b| i32::try_from(b).unwrap_or(-1))
        };
        if row.iter().enumerate().all(|(i, &b)| b == want(i)) {
            return Ok(());
        }
        let new: Vec<i32> = (0..self.max_blocks).map(want).collect();
        dev.untracked_work()?;
        let mut dst = self.table_dev.slice_mut(row0..row0 + self.max_blocks);
        dev.stream()
            .memcpy_htod(&new, &mut dst)
            .map_err(CudaError::driver("uploading block table"))?;
        self.table[row0..row0 + self.max_blocks].copy_from_slice(&new);
        Ok(())
    }

    pub(crate) fn truncate(&mut self, dev: &CudaDevice, seq: SeqId, len: usize) -> Result<()> {
        let id = self.id(seq)?;
        let len = len.min(self.ledger.len(id)?);
        self.ledger.truncate(id, len)?;
        self.sync_row(dev, seq)
    }

    pub(crate) fn clear(&mut self, dev: &CudaDevice) -> Result<()> {
        for seq in 0..self.layout.n_seq {
            #[allow(clippy::cast_possible_truncation)] // slots come from a u32 SeqId range
            self.truncate(dev, seq as SeqId, 0)?;
        }
        Ok(())
    }
}
