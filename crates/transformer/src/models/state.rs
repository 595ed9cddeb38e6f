//! The preallocated activations of the forward pass.

use crate::backend::Backend;
use crate::config::ModelConfig;
use crate::error::{Result, TransformerError};

/// Activations of the forward pass, allocated once for a largest batch (shapes in
/// comments: `B` batch tokens, `O` output rows).
pub struct State<'w, B: Backend<'w>> {
    pub(crate) max_batch: usize,
    pub(crate) max_outputs: usize,
    pub(crate) n_outputs: usize,
    pub(crate) x: B::Buffer,        // (B, d_model) residual stream
    pub(crate) xn: B::Buffer,       // (B, d_model) normalized input of a sub-layer
    pub(crate) xn_in: B::Prepared,  // (B, d_model) prepared for matmul
    pub(crate) q: B::Buffer,        // (B, n_head * head_dim)
    pub(crate) k: B::Buffer,        // (B, n_head_kv * head_dim)
    pub(crate) v: B::Buffer,        // (B, n_head_kv * head_dim)
    pub(crate) att: B::Buffer,      // (B, n_head * head_dim) attention output
    pub(crate) att_in: B::Prepared, // (B, n_head * head_dim) prepared
    pub(crate) proj: B::Buffer,     // (B, d_model) sub-layer output
    pub(crate) gate: B::Buffer,     // (B, ffn_dim)
    pub(crate) up: B::Buffer,       // (B, ffn_dim)
    pub(crate) ffn_in: B::Prepared, // (B, ffn_dim) prepared
    pub(crate) moe: Option<MoeState<B::Buffer, B::Prepared>>,
    pub(crate) out_x: B::Buffer, // (O, d_model) rows whose logits are wanted
    pub(crate) out_in: B::Prepared, // (O, d_model) prepared
    pub(crate) logits: B::Buffer, // (O, vocab)
    pub(crate) logits_host: Vec<f32>, // (O, vocab)
    pub(crate) argmax_host: Vec<u32>, // (O) index of each output row's largest logit
    pub(crate) hidden_host: Vec<f32>, // (O, d_model) final hidden states, after the output norm
    pub(crate) mask: Vec<u32>,   // (vocab / 32) allowed tokens of a masked argmax
}

/// Activations of a mixture-of-experts layer (`K` experts used per token).
pub(crate) struct MoeState<Buf, Prep> {
    pub(crate) n_used: usize,
    pub(crate) logits: Buf,  // (B, n_expert) router logits
    pub(crate) choice: Buf,  // (B, 2K) chosen experts, then their weights
    pub(crate) gate: Buf,    // (B·K, expert ffn)
    pub(crate) up: Buf,      // (B·K, expert ffn)
    pub(crate) ffn_in: Prep, // (B·K, expert ffn) prepared
    pub(crate) down: Buf,    // (B·K, d_model)
}

impl<'w, B: Backend<'w>> State<'w, B> {
    pub(crate) fn new(
        b: &B,
        c: &ModelConfig,
        max_batch: usize,
        max_outputs: usize,
    ) -> Result<Self> {
        if max_batch == 0 || max_outputs == 0 || max_outputs > max_batch {
            return Err(TransformerError::InvalidBatch {
                reason: format!("a state for batches of {max_batch} with {max_outputs} outputs"),
            });
        }
        let (n, o) = (max_batch, max_outputs);
        let moe = match &c.moe {
            None => None,
            Some(m) => {
                let nk = n
                    .checked_mul(m.n_used)
                    .ok_or_else(|| TransformerError::InvalidBatch {
                        reason: format!("a state for batches of {max_batch}"),
                    })?;
                Some(MoeState {
                    n_used: m.n_used,
                    logits: b.buffer(n, m.n_expert)?,
                    choice: b.buffer(n, 2 * m.n_used)?,
                    gate: b.buffer(nk, m.ffn_dim)?,
                    up: b.buffer(nk, m.ffn_dim)?,
                    ffn_in: b.prepared(nk, m.ffn_dim)?,
                    down: b.buffer(nk, c.d_model)?,
                })
            }
        };
        Ok(Self {
            max_batch,
            max_outputs,
            n_outputs: 0,
            x: b.buffer(n, c.d_model)?,
            xn: b.buffer(n, c.d_model)?,
            xn_in: b.prepared(n, c.d_model)?,
            q: b.buffer(n, c.q_dim())?,
            k: b.buffer(n, c.kv_dim())?,
            v: b.buffer(n, c.kv_dim())?,
            att: b.buffer(n, c.q_dim())?,
            att_in: b.prepared(n, c.q_dim())?,
            proj: b.buffer(n, c.d_model)?,
            gate: b.buffer(n, c.ffn_dim)?,
            up: b.buffer(n, c.ffn_dim)?,
            ffn_in: b.prepared(n, c.ffn_dim)?,
            moe,
            out_x: b.buffer(o, c.d_model)?,
            out_in: b.prepared(o, c.d_model)?,
            logits: b.buffer(o, c.vocab)?,
            logits_host: vec![0.0; o * c.vocab],
            argmax_host: vec![0; o],
            hidden_host: vec![0.0; o * c.d_model],
            mask: Vec::with_capacity(c.vocab.div_ceil(32)),
        })
    }

    /// Largest batch this state runs.
    pub fn max_batch(&self) -> usize {
        self.max_batch
    }

    /// Most output rows per batch.
    pub fn max_outputs(&self) -> usize {
        self.max_outputs
    }

    /// The index of the largest logit of each output row of the last
    /// [`crate::Model::forward_argmax`], in the order the batch listed them.
    pub fn argmax(&self) -> &[u32] {
        &self.argmax_host[..self.n_outputs]
    }

    /// Logits of the last batch's output rows, `outputs × vocab`, in the order the batch
    /// listed them.
    pub fn logits(&self) -> &[f32] {
        let vocab = self.logits_host.len() / self.max_outputs;
        &self.logits_host[..self.n_outputs * vocab]
    }

    /// Final hidden states (after the output norm, before the head) of the last
    /// [`crate::Model::forward_hidden`]'s output rows, `outputs × d_model`, in the order the
    /// batch listed them: the model's embeddings of those positions.
    pub fn hidden(&self) -> &[f32] {
        let d = self.hidden_host.len() / self.max_outputs.max(1);
        &self.hidden_host[..self.n_outputs * d]
    }

    /// Sets the rows in use of every per-token buffer to `n` and of the output buffers to `o`.
    pub(crate) fn set_rows(&mut self, b: &B, n: usize, o: usize) -> Result<()> {
        for buf in [
            &mut self.x,
            &mut self.xn,
            &mut self.q,
            &mut self.k,
            &mut self.v,
            &mut self.att,
            &mut self.proj,
            &mut self.gate,
            &mut self.up,
        ] {
            b.set_rows(buf, n)?;
        }
        if let Some(m) = &mut self.moe {
            let k = m.n_used;
            b.set_rows(&mut m.logits, n)?;
            b.set_rows(&mut m.choice, n)?;
            for buf in [&mut m.gate, &mut m.up, &mut m.down] {
                b.set_rows(buf, n * k)?;
            }
        }
        b.set_rows(&mut self.out_x, o)?;
        b.set_rows(&mut self.logits, o)
    }
}
