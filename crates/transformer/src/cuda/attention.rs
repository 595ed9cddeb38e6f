use cudarc::driver::CudaSlice;

use super::{CudaDevice, CudaError};

/// Warps per attention block; each writes its own partial result.
pub(crate) const ATT_WARPS: usize = 4;

/// One layer's K and V caches on the device, in the paged layout the attention kernels read:
/// f16 `[block][kv_head][slot][head_dim]`, `block_size` slots per block.
#[derive(Debug)]
pub struct PagedKvLayer {
    pub(crate) k: CudaSlice<u16>,
    pub(crate) v: CudaSlice<u16>,
    n_blocks: usize,
    block_size: usize,
    n_kv_heads: usize,
    head_dim: usize,
}

impl PagedKvLayer {
    /// Zeroed storage for `n_blocks` blocks of `block_size` tokens.
    pub fn new(
        dev: &CudaDevice,
        n_blocks: usize,
        block_size: usize,
        n_kv_heads: usize,
        head_dim: usize,
    ) -> Result<Self, CudaError> {
        if n_blocks == 0
            || block_size == 0
            || n_kv_heads == 0
            || !matches!(head_dim, 64 | 128 | 256)
        {
            return Err(CudaError::Unsupported {
                op: "kv cache",
                what: format!(
                    "{n_blocks} blocks of {block_size} slots, {n_kv_heads} kv heads of dimension {head_dim} \
                     (head_dim must be 64, 128 or 256)"
                ),
            });
        }
        let n = n_blocks * block_size * n_kv_heads * head_dim;
        if i32::try_from(n_blocks).is_err() || i32::try_from(block_size).is_err() {
            return Err(CudaError::Unsupported {
                op: "kv cache",
                what: format!("{n_blocks} blocks of {block_size}"),
            });
        }
        let s = dev.stream();
        let k = s
            .alloc_zeros::<u16>(n)
            .map_err(CudaError::driver("allocating kv cache"))?;
        let v = s
            .alloc_zeros::<u16>(n)
            .map_err(CudaError::driver("allocating kv cache"))?;
        Ok(Self {
            k,
            v,
            n_blocks,
            block_size,
            n_kv_heads,
            head_dim,
        })
    }

    /// Number of blocks.
    pub fn n_blocks(&self) -> usize {
        self.n_blocks
    }

    /// Token slots per block.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Number of KV heads.
    pub fn n_kv_heads(&self) -> usize {
        self.n_kv_heads
    }

    /// Dimension of each head.
    pub fn head_dim(&self) -> usize {
        self.head_dim
    }

    /// Bytes of device memory for K and V together.
    pub fn bytes(&self) -> usize {
        2 * 2 * self.n_blocks * self.block_size * self.n_kv_heads * self.head_dim
    }

    /// Copies the K and V caches back to the host (f16 bit patterns).
    pub fn download(&self, dev: &CudaDevice) -> Result<(Vec<u16>, Vec<u16>), CudaError> {
        let s = dev.stream();
        let k = s
            .clone_dtoh(&self.k)
            .map_err(CudaError::driver("downloading kv cache"))?;
        let v = s
            .clone_dtoh(&self.v)
            .map_err(CudaError::driver("downloading kv cache"))?;
        Ok((k, v))
    }
}

/// Which tokens a batch of queries sees. All buffers are device memory so that a captured
/// graph can be replayed with new positions.
#[derive(Debug, Clone, Copy)]
pub struct QueryBatch<'a> {
    /// Number of queries (tokens) in the batch.
    pub n_queries: usize,
    /// `[n_queries]`: the sequence (row of `block_table`) each query belongs to.
    pub q_seq: &'a CudaSlice<i32>,
    /// `[n_queries]`: each query's position; it sees its sequence's tokens `0..=pos`.
    pub pos: &'a CudaSlice<i32>,
    /// `[n_seqs × max_blocks]`: physical block of each sequence's logical block.
    pub block_table: &'a CudaSlice<i32>,
    /// Row length of `block_table`.
    pub max_blocks: usize,
}

/// Shape of an attention layer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttentionParams {
    /// Query heads.
    pub n_heads: usize,
    /// KV heads; `n_heads / n_kv_heads` query heads share each (at most 8).
    pub n_kv_heads: usize,
    /// Dimension of each head: 64, 128 or 256.
    pub head_dim: usize,
    /// Factor applied to the query before the dot products (usually `1 / sqrt(head_dim)`).
    pub scale: f32,
    /// Sliding window: a query sees only its last `window` tokens; 0 for none.
    pub window: usize,
    /// Soft cap on the scaled scores (`cap · tanh(s / cap)` before the softmax); 0 for none.
    pub softcap: f32,
}

/// Scratch for the partial results of split attention, allocated once.
#[derive(Debug)]
pub struct AttentionWorkspace {
    pub(crate) acc: CudaSlice<f32>,
    pub(crate) ml: CudaSlice<f32>,
    parts: usize,
    head_dim: usize,
}

impl AttentionWorkspace {
    /// Room for `n_queries × n_heads` query heads of `head_dim`, each split `n_splits` ways.
    pub fn new(
        dev: &CudaDevice,
        n_queries: usize,
        n_heads: usize,
        head_dim: usize,
        n_splits: usize,
    ) -> Result<Self, CudaError> {
        let parts = n_queries * n_heads * n_splits * ATT_WARPS;
        if parts == 0 {
            return Err(CudaError::Unsupported {
                op: "attention workspace",
                what: "an empty workspace".into(),
            });
        }
        let s = dev.stream();
        let acc = s
            .alloc_zeros::<f32>(parts * head_dim)
            .map_err(CudaError::driver("allocating attention workspace"))?;
        let ml = s
            .alloc_zeros::<f32>(parts * 2)
            .map_err(CudaError::driver("allocating attention workspace"))?;
        Ok(Self {
            acc,
            ml,
            parts,
            head_dim,
        })
    }

    pub(crate) fn fits(&self, parts: usize, head_dim: usize) -> bool {
        parts <= self.parts && parts * head_dim <= self.parts * self.head_dim
    }
}
