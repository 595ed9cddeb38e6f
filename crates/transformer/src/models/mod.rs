//! Architectures, one file each, and what they share: loading weights with shape checks,
//! the preallocated run state, and the [`Model`] that dispatches between them.

pub mod gemma3;
pub mod llama;

use ferrolm_gguf::{Gguf, TensorView};

use crate::backend::{Backend, Batch, KvLayout};
use crate::config::{Architecture, ModelConfig};
use crate::error::{Result, TransformerError};
use crate::names::TensorName;

/// Finds tensors by name and checks their shapes before handing them to the backend.
pub(crate) struct Loader<'g, 'w, B> {
    gguf: &'g Gguf<'w>,
    backend: &'g B,
}

impl<'w, B: Backend<'w>> Loader<'_, 'w, B> {
    fn view(&self, name: &str, dims: &[usize]) -> Result<TensorView<'w>> {
        let view = self
            .gguf
            .tensor(name)
            .ok_or_else(|| TransformerError::MissingTensor { name: name.into() })?;
        let expected: Vec<u64> = dims.iter().map(|&d| d as u64).collect();
        // A trailing dimension of 1 is the same shape (a 1-D norm may be stored as (n, 1)).
        let mut got = view.dims.clone();
        while got.len() > expected.len() && got.last() == Some(&1) {
            got.pop();
        }
        if got != expected {
            return Err(TransformerError::TensorShape {
                name: name.into(),
                expected,
                got: view.dims.clone(),
            });
        }
        Ok(view)
    }

    /// A matrix of `rows` outputs by `cols` inputs (GGUF dims `[cols, rows]`).
    pub(crate) fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<B::Matrix> {
        self.backend.matrix(&self.view(name, &[cols, rows])?)
    }

    /// A vector of `n` f32 values.
    pub(crate) fn vector(&self, name: &str, n: usize) -> Result<B::Vector> {
        self.backend.vector(&self.view(name, &[n])?)
    }

    /// The output projection, or the embedding table when the model ties them.
    pub(crate) fn output(&self, config: &ModelConfig) -> Result<B::Matrix> {
        let name = if self.gguf.tensor(TensorName::Output.as_str()).is_some() {
            TensorName::Output
        } else {
            TensorName::TokenEmbd
        };
        self.matrix(name.as_str(), config.vocab, config.d_model)
    }
}

/// Weights of one of the supported architectures.
enum Weights<M, V> {
    Llama(llama::Weights<M, V>),
    Gemma3(gemma3::Weights<M, V>),
}

/// A model ready to run: its configuration, its weights in the backend's form, and the backend.
pub struct Model<'w, B: Backend<'w>> {
    config: ModelConfig,
    weights: Weights<B::Matrix, B::Vector>,
    backend: B,
}

impl<'w, B: Backend<'w>> Model<'w, B> {
    /// Reads the configuration and takes every weight of the model in `gguf` (borrowed from
    /// the file on the CPU). A missing tensor or one of the wrong shape is an error naming it.
    pub fn load(gguf: &Gguf<'w>, backend: B) -> Result<Self> {
        let config = ModelConfig::from_gguf(gguf)?;
        let loader = Loader {
            gguf,
            backend: &backend,
        };
        let weights = match config.arch {
            Architecture::Llama => Weights::Llama(llama::Weights::load(&loader, &config)?),
            Architecture::Gemma3 => Weights::Gemma3(gemma3::Weights::load(&loader, &config)?),
        };
        Ok(Self {
            config,
            weights,
            backend,
        })
    }

    /// The model's hyperparameters.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The backend it runs on.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// A KV cache for `n_seq` sequences of up to `n_ctx` positions.
    pub fn kv_cache(&self, n_ctx: usize, n_seq: usize) -> Result<B::Kv> {
        self.kv_cache_layers(n_ctx, n_seq, self.config.n_layer)
    }

    /// A KV cache of only the first `n_layers` blocks, enough for
    /// [`Model::forward_layers`] with up to that many.
    pub fn kv_cache_layers(&self, n_ctx: usize, n_seq: usize, n_layers: usize) -> Result<B::Kv> {
        self.check_layers(n_layers)?;
        self.backend.kv_cache(KvLayout {
            n_layer: n_layers,
            n_head_kv: self.config.n_head_kv,
            head_dim: self.config.head_dim,
            n_ctx,
            n_seq,
        })
    }

    /// Activation buffers for batches of up to `max_batch` tokens with up to `max_outputs`
    /// rows of logits each.
    pub fn state(&self, max_batch: usize, max_outputs: usize) -> Result<State<'w, B>> {
        State::new(&self.backend, &self.config, max_batch, max_outputs)
    }

    /// Runs `batch` through the model: its keys and values are appended to `kv`, and the
    /// logits of the batch's `outputs` rows are left in [`State::logits`].
    pub fn forward(
        &self,
        state: &mut State<'w, B>,
        kv: &mut B::Kv,
        batch: &Batch<'_>,
    ) -> Result<()> {
        self.forward_layers(state, kv, batch, self.config.n_layer)
    }

    /// [`Model::forward`] through only the first `n_layers` blocks, then the output norm
    /// and head: the early-exit logits a self-speculative drafter samples from. `kv` needs
    /// at least `n_layers` layers ([`Model::kv_cache_layers`]); with every layer this is
    /// `forward`.
    pub fn forward_layers(
        &self,
        state: &mut State<'w, B>,
        kv: &mut B::Kv,
        batch: &Batch<'_>,
        n_layers: usize,
    ) -> Result<()> {
        self.run_batch(state, kv, batch, n_layers, Readback::Logits)
    }

    /// [`Model::forward`], but of each output row only the index of its largest logit is read
    /// back, into [`State::argmax`] ([`Backend::read_argmax`]'s rule): a greedy step on a GPU
    /// then copies back one token id instead of a row of the vocabulary. [`State::logits`] is
    /// not updated.
    pub fn forward_argmax(
        &self,
        state: &mut State<'w, B>,
        kv: &mut B::Kv,
        batch: &Batch<'_>,
    ) -> Result<()> {
        self.run_batch(state, kv, batch, self.config.n_layer, Readback::Argmax)
    }

    fn run_batch(
        &self,
        state: &mut State<'w, B>,
        kv: &mut B::Kv,
        batch: &Batch<'_>,
        n_layers: usize,
        readback: Readback,
    ) -> Result<()> {
        self.check_layers(n_layers)?;
        validate(batch, state, self.config.vocab)?;
        let b = &self.backend;
        b.kv_reserve(kv, batch)?;
        let result = b.run(|| {
            match &self.weights {
                Weights::Llama(w) => llama::forward(w, &self.config, b, state, kv, batch, n_layers),
                Weights::Gemma3(w) => {
                    gemma3::forward(w, &self.config, b, state, kv, batch, n_layers)
                }
            }?;
            match readback {
                Readback::Argmax => b.argmax_ahead(&state.logits),
                Readback::Logits => Ok(()),
            }
        });
        if result.is_err() {
            // Leave the cache as it was before the batch.
            for &seq in batch.seqs {
                let first = batch
                    .seqs
                    .iter()
                    .zip(batch.positions)
                    .filter(|(s, _)| **s == seq)
                    .map(|(_, &p)| p as usize)
                    .min()
                    .unwrap_or(0);
                b.kv_truncate(kv, seq, first)?;
            }
        }
        result?;
        state.n_outputs = batch.outputs.len();
        match readback {
            Readback::Logits => b.read(
                &state.logits,
                &mut state.logits_host[..batch.outputs.len() * self.config.vocab],
            ),
            Readback::Argmax => {
                b.read_argmax(&state.logits, &mut state.argmax_host[..batch.outputs.len()])
            }
        }
    }
}

impl<'w, B: Backend<'w>> Model<'w, B> {
    fn check_layers(&self, n_layers: usize) -> Result<()> {
        let n_layer = self.config.n_layer;
        if n_layers == 0 || n_layers > n_layer {
            return Err(TransformerError::LayerCount {
                requested: n_layers,
                n_layer,
            });
        }
        Ok(())
    }
}

fn validate<'w, B: Backend<'w>>(
    batch: &Batch<'_>,
    state: &State<'w, B>,
    vocab: usize,
) -> Result<()> {
    let n = batch.tokens.len();
    let bad = |reason: String| Err(TransformerError::InvalidBatch { reason });
    if n == 0 {
        return bad("no tokens".into());
    }
    if batch.positions.len() != n || batch.seqs.len() != n {
        return bad(format!(
            "{n} tokens, {} positions, {} sequence ids",
            batch.positions.len(),
            batch.seqs.len()
        ));
    }
    if n > state.max_batch {
        return bad(format!(
            "{n} tokens, the state holds batches of {}",
            state.max_batch
        ));
    }
    if batch.outputs.len() > state.max_outputs {
        return bad(format!(
            "{} outputs, the state holds {}",
            batch.outputs.len(),
            state.max_outputs
        ));
    }
    if let Some(&o) = batch.outputs.iter().find(|&&o| o >= n) {
        return bad(format!("output row {o} of a batch of {n}"));
    }
    if let Some(&t) = batch.tokens.iter().find(|&&t| t as usize >= vocab) {
        return Err(TransformerError::TokenOutOfRange { id: t, vocab });
    }
    Ok(())
}

/// Activations of the forward pass, allocated once for a largest batch (shapes in
/// comments: `B` batch tokens, `O` output rows).
pub struct State<'w, B: Backend<'w>> {
    max_batch: usize,
    max_outputs: usize,
    n_outputs: usize,
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
    pub(crate) out_x: B::Buffer,    // (O, d_model) rows whose logits are wanted
    pub(crate) out_in: B::Prepared, // (O, d_model) prepared
    pub(crate) logits: B::Buffer,   // (O, vocab)
    logits_host: Vec<f32>,          // (O, vocab)
    argmax_host: Vec<u32>,          // (O) index of each output row's largest logit
}

/// What a forward pass reads back from the backend.
#[derive(Debug, Clone, Copy)]
enum Readback {
    Logits,
    Argmax,
}

impl<'w, B: Backend<'w>> State<'w, B> {
    fn new(b: &B, c: &ModelConfig, max_batch: usize, max_outputs: usize) -> Result<Self> {
        if max_batch == 0 || max_outputs == 0 || max_outputs > max_batch {
            return Err(TransformerError::InvalidBatch {
                reason: format!("a state for batches of {max_batch} with {max_outputs} outputs"),
            });
        }
        let (n, o) = (max_batch, max_outputs);
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
            out_x: b.buffer(o, c.d_model)?,
            out_in: b.prepared(o, c.d_model)?,
            logits: b.buffer(o, c.vocab)?,
            logits_host: vec![0.0; o * c.vocab],
            argmax_host: vec![0; o],
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
    /// [`Model::forward_argmax`], in the order the batch listed them.
    pub fn argmax(&self) -> &[u32] {
        &self.argmax_host[..self.n_outputs]
    }

    /// Logits of the last batch's output rows, `outputs × vocab`, in the order the batch
    /// listed them.
    pub fn logits(&self) -> &[f32] {
        let vocab = self.logits_host.len() / self.max_outputs;
        &self.logits_host[..self.n_outputs * vocab]
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
        b.set_rows(&mut self.out_x, o)?;
        b.set_rows(&mut self.logits, o)
    }
}
