//! Host KV storage of the CPU backend.

use crate::backend::{Batch, KvLayout, SeqId};
use crate::error::{Result, TransformerError};

/// Keys and values of every layer and sequence, f32, position-major.
///
/// Storage for the whole layout is requested from the allocator up front as zeroed memory,
/// which the operating system maps lazily: resident memory grows with the positions actually
/// written, and the per-token loop never allocates.
#[derive(Debug)]
pub struct CpuKv {
    layout: KvLayout,
    k: Vec<f32>,     // (layer, seq, pos, kv_dim)
    v: Vec<f32>,     // (layer, seq, pos, kv_dim)
    len: Vec<usize>, // positions held, per sequence
}

impl CpuKv {
    pub(crate) fn new(layout: KvLayout) -> Result<Self> {
        let n = [layout.n_layer, layout.n_seq, layout.n_ctx, layout.kv_dim]
            .into_iter()
            .try_fold(1usize, usize::checked_mul)
            .ok_or_else(|| TransformerError::InvalidConfig {
                key: "context size".into(),
                reason: format!("{layout:?} does not fit in memory"),
            })?;
        Ok(Self {
            layout,
            k: vec![0.0; n],
            v: vec![0.0; n],
            len: vec![0; layout.n_seq],
        })
    }

    /// The layout the cache was made with.
    pub fn layout(&self) -> KvLayout {
        self.layout
    }

    /// Positions held by `seq`.
    pub fn len(&self, seq: SeqId) -> usize {
        self.len.get(seq as usize).copied().unwrap_or(0)
    }

    /// Whether no sequence holds any position.
    pub fn is_empty(&self) -> bool {
        self.len.iter().all(|&l| l == 0)
    }

    /// Bytes of keys and values currently written.
    pub fn bytes_used(&self) -> usize {
        self.len.iter().sum::<usize>()
            * self.layout.n_layer
            * self.layout.kv_dim
            * 2
            * size_of::<f32>()
    }

    fn offset(&self, layer: usize, seq: SeqId, pos: usize) -> usize {
        ((layer * self.layout.n_seq + seq as usize) * self.layout.n_ctx + pos) * self.layout.kv_dim
    }

    pub(crate) fn reserve(&mut self, batch: &Batch<'_>) -> Result<()> {
        for (i, (&seq, &pos)) in batch.seqs.iter().zip(batch.positions).enumerate() {
            if let Err(e) = self.push(i, seq, pos) {
                // Undo the tokens already counted, so a refused batch leaves the cache as it was.
                for &s in &batch.seqs[..i] {
                    self.len[s as usize] -= 1;
                }
                return Err(e);
            }
        }
        Ok(())
    }

    fn push(&mut self, i: usize, seq: SeqId, pos: u32) -> Result<()> {
        let n_seq = self.layout.n_seq;
        let n_ctx = self.layout.n_ctx;
        let n = self
            .len
            .get_mut(seq as usize)
            .ok_or_else(|| TransformerError::InvalidBatch {
                reason: format!("token {i} names sequence {seq}, the cache holds {n_seq}"),
            })?;
        if pos as usize != *n {
            return Err(TransformerError::InvalidBatch {
                reason: format!("token {i} of sequence {seq} is at position {pos}, expected {n}"),
            });
        }
        if *n >= n_ctx {
            return Err(TransformerError::ContextFull {
                needed: *n + 1,
                n_ctx,
            });
        }
        *n += 1;
        Ok(())
    }

    pub(crate) fn truncate(&mut self, seq: SeqId, len: usize) -> Result<()> {
        let n = self
            .len
            .get_mut(seq as usize)
            .ok_or_else(|| TransformerError::InvalidBatch {
                reason: format!("sequence {seq} is not in a cache of {}", self.layout.n_seq),
            })?;
        *n = (*n).min(len);
        Ok(())
    }

    pub(crate) fn clear(&mut self) {
        self.len.iter_mut().for_each(|l| *l = 0);
    }

    /// Writes one position's keys and values.
    pub(crate) fn store(&mut self, layer: usize, seq: SeqId, pos: usize, k: &[f32], v: &[f32]) {
        let o = self.offset(layer, seq, pos);
        let d = self.layout.kv_dim;
        self.k[o..o + d].copy_from_slice(k);
        self.v[o..o + d].copy_from_slice(v);
    }

    /// Keys and values of positions `0..len` of `seq` in `layer`, `len × kv_dim` each.
    pub(crate) fn rows(&self, layer: usize, seq: SeqId, len: usize) -> (&[f32], &[f32]) {
        let o = self.offset(layer, seq, 0);
        let n = len * self.layout.kv_dim;
        (&self.k[o..o + n], &self.v[o..o + n])
    }
}
