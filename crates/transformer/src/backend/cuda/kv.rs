//! Device KV storage of the CUDA backend: one [`PagedKvLayer`] (f16, paged) per layer, its
//! blocks handed out by `ferrolm-kvcache`'s [`BlockLedger`] (batches placed by its [`Slots`]),
//! and the block table of every sequence slot mirrored in device memory for the attention
//! kernels.

use cudarc::driver::CudaSlice;
use ferrolm_kvcache::{BlockCopy, BlockLedger, KvCacheConfig, PendingCopies, Slots};

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
    slots: Slots<PendingCopies>,
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
        let store = PendingCopies {
            ledger: BlockLedger::new(&config),
            copies: Vec::new(),
        };
        let max_blocks = layout.n_ctx.div_ceil(BLOCK_TOKENS);
        let table = vec![-1; layout.n_seq * max_blocks];
        let table_dev = dev
            .stream()
            .clone_htod(&table)
            .map_err(CudaError::driver("uploading block table"))?;
        Ok(Self {
            layout,
            layers,
            slots: Slots::new(store, layout.n_seq, layout.n_ctx),
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
        &self.slots.store().ledger
    }

    /// Bytes of device memory for keys and values.
    pub fn bytes(&self) -> usize {
        self.layers.iter().map(PagedKvLayer::bytes).sum()
    }

    /// Positions held by `seq` (0 for an unknown one).
    pub fn len(&self, seq: SeqId) -> usize {
        self.slots.len(seq)
    }

    /// Whether no sequence holds any position.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Checks that every sequence of the batch is a slot of this cache.
    pub(crate) fn check_seqs(&self, seqs: &[SeqId]) -> Result<()> {
        Ok(self.slots.check(seqs)?)
    }

    /// Appends the batch's positions, checking that each sequence continues where it ends (a
    /// batch that fails leaves every sequence as it was), carries out the copy-on-writes and
    /// brings the device block table up to date.
    pub(crate) fn reserve(&mut self, dev: &CudaDevice, batch: &Batch<'_>) -> Result<()> {
        let placed = self.slots.reserve(batch.seqs, batch.positions);
        // Copies are made even for a failed batch: an undone sequence may keep a copied block.
        let copies = std::mem::take(&mut self.slots.store_mut().copies);
        for copy in copies {
            self.copy_block(dev, copy)?;
        }
        let mut last = None;
        for &seq in batch.seqs {
            if last != Some(seq) && self.slots.id(seq).is_ok() {
                self.sync_row(dev, seq)?;
            }
            last = Some(seq);
        }
        Ok(placed?)
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

    /// Makes the device block table row of `seq` match the ledger. The host copy changes only
    /// once the upload succeeded, so a failed upload is retried by the next call.
    fn sync_row(&mut self, dev: &CudaDevice, seq: SeqId) -> Result<()> {
        let id = self.slots.id(seq)?;
        let blocks = self.slots.store().ledger.block_table(id)?;
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
        self.slots.truncate(seq, len)?;
        self.sync_row(dev, seq)
    }

    /// [`ferrolm_kvcache::Slots::share`], and the device block table row of `dst`.
    pub(crate) fn share(
        &mut self,
        dev: &CudaDevice,
        dst: SeqId,
        src: SeqId,
        len: usize,
    ) -> Result<()> {
        self.slots.share(dst, src, len)?;
        self.sync_row(dev, dst)
    }

    pub(crate) fn clear(&mut self, dev: &CudaDevice) -> Result<()> {
        for seq in 0..self.layout.n_seq {
            #[allow(clippy::cast_possible_truncation)] // slots come from a u32 SeqId range
            self.truncate(dev, seq as SeqId, 0)?;
        }
        Ok(())
    }
}
