//! Model families and what they share.
//!
//! Each family is one [`ArchSpec`] in its own file (a row of [`ARCHITECTURES`]); the weights of
//! every family load through one [`Loader`] into [`block::Weights`], and one block forward
//! ([`block::forward`]) runs them all, on every backend.

pub mod block;
pub mod gemma2;
pub mod gemma3;
pub mod llama;
pub mod phi3;
pub mod qwen2;
pub mod qwen3;
pub mod qwen3moe;
pub mod spec;
mod state;

use std::ops::Range;

use ferrolm_gguf::{Gguf, TensorView};

pub use spec::ArchSpec;
pub use state::State;

use crate::backend::{Backend, Batch, KvLayout};
use crate::config::ModelConfig;
use crate::error::{Result, TransformerError};
use crate::names::TensorName;

/// The architecture table: every family this crate runs.
pub const ARCHITECTURES: &[&ArchSpec] = &[
    &llama::SPEC,
    &qwen2::SPEC,
    &qwen3::SPEC,
    &qwen3moe::SPEC,
    &phi3::SPEC,
    &gemma2::SPEC,
    &gemma3::SPEC,
];

/// The family whose names include `name` (a `general.architecture` value).
pub fn arch_spec(name: &str) -> Result<&'static ArchSpec> {
    ARCHITECTURES
        .iter()
        .copied()
        .find(|a| a.names.contains(&name))
        .ok_or_else(|| TransformerError::UnsupportedArchitecture {
            arch: name.to_owned(),
            supported: architecture_names().join(", "),
        })
}

/// Every `general.architecture` value this crate runs.
pub fn architecture_names() -> Vec<&'static str> {
    ARCHITECTURES
        .iter()
        .flat_map(|a| a.names.iter().copied())
        .collect()
}

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

    /// Whether the file has a tensor of this name.
    pub(crate) fn has(&self, name: &str) -> bool {
        self.gguf.tensor(name).is_some()
    }

    /// A matrix of `rows` outputs by `cols` inputs (GGUF dims `[cols, rows]`).
    pub(crate) fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<B::Matrix> {
        self.backend.matrix(&self.view(name, &[cols, rows])?, None)
    }

    /// A table of `rows` rows of `cols` values read a row at a time (the token embeddings).
    pub(crate) fn table(&self, name: &str, rows: usize, cols: usize) -> Result<B::Matrix> {
        self.backend.table(&self.view(name, &[cols, rows])?)
    }

    /// [`Loader::matrix`] with a bias of `rows` values added to every product.
    pub(crate) fn matrix_with_bias(
        &self,
        name: &str,
        bias: &str,
        rows: usize,
        cols: usize,
    ) -> Result<B::Matrix> {
        let bias = self.view(bias, &[rows])?;
        self.backend
            .matrix(&self.view(name, &[cols, rows])?, Some(&bias))
    }

    /// Rows `part` of a matrix of `rows × cols` stored as one tensor (a fused projection),
    /// borrowed from the file without copying.
    pub(crate) fn matrix_part(
        &self,
        name: &str,
        rows: usize,
        cols: usize,
        part: Range<usize>,
    ) -> Result<B::Matrix> {
        let view = self.view(name, &[cols, rows])?;
        self.backend.matrix(&rows_of(&view, rows, part)?, None)
    }

    /// `n` matrices of `rows × cols` stored as one 3-D tensor (GGUF dims `[cols, rows, n]`),
    /// as one matrix of `n · rows` rows: the experts of a mixture-of-experts layer.
    pub(crate) fn stacked(
        &self,
        name: &str,
        n: usize,
        rows: usize,
        cols: usize,
    ) -> Result<B::Matrix> {
        let view = self.view(name, &[cols, rows, n])?;
        let all_rows = rows
            .checked_mul(n)
            .ok_or_else(|| TransformerError::TensorShape {
                name: name.into(),
                expected: vec![cols as u64, rows as u64, n as u64],
                got: view.dims.clone(),
            })?;
        let flat = TensorView {
            dims: vec![cols as u64, all_rows as u64],
            ..view
        };
        self.backend.matrix(&flat, None)
    }

    /// A vector of `n` f32 values.
    pub(crate) fn vector(&self, name: &str, n: usize) -> Result<B::Vector> {
        self.backend.vector(&self.view(name, &[n])?)
    }

    /// [`Loader::vector`] when the file has the tensor, else `None`.
    pub(crate) fn optional_vector(&self, name: &str, n: usize) -> Result<Option<B::Vector>> {
        if self.has(name) {
            self.vector(name, n).map(Some)
        } else {
            Ok(None)
        }
    }

    /// The output projection, or the embedding table when the model ties them.
    pub(crate) fn output(&self, config: &ModelConfig) -> Result<B::Matrix> {
        let name = if !config.arch.always_tied && self.has(TensorName::Output.as_str()) {
            TensorName::Output
        } else {
            TensorName::TokenEmbd
        };
        self.matrix(name.as_str(), config.vocab, config.d_model)
    }
}

/// Rows `part` of a view of `rows` rows, as a view of its own over the same bytes.
fn rows_of<'w>(view: &TensorView<'w>, rows: usize, part: Range<usize>) -> Result<TensorView<'w>> {
    let row_bytes = view.data.len() / rows.max(1);
    if part.start >= part.end || part.end > rows || row_bytes * rows != view.data.len() {
        return Err(TransformerError::TensorShape {
            name: view.name.into(),
            expected: vec![view.row_len(), part.end as u64],
            got: view.dims.clone(),
        });
    }
    Ok(TensorView {
        dims: vec![view.row_len(), (part.end - part.start) as u64],
        data: &view.data[part.start * row_bytes..part.end * row_bytes],
        ..view.clone()
    })
}

/// A model ready to run: its configuration, its weights in the backend's form, and the backend.
pub struct Model<'w, B: Backend<'w>> {
    config: ModelConfig,
    weights: block::Weights<B::Matrix, B::Vector>,
    backend: B,
}

/// What a forward pass reads back from the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Readback {
    Logits,
    Argmax,
    /// The index of the largest logit among those a mask allows (the mask is made while the
    /// pass runs).
    MaskedArgmax,
    /// The final hidden states of the output rows, without the head.
    Hidden,
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
        let weights = block::Weights::load(&loader, &config)?;
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

    /// [`Model::forward_argmax`] among the tokens a mask allows ([`Backend::read_argmax_masked`],
    /// for greedy decoding under a grammar). Once the pass is queued, `mask` fills the allowed
    /// set, a bit per vocabulary entry (bit `k % 32` of word `k / 32`, see
    /// [`crate::backend::mask_allows`]), so on a GPU the host makes the mask while the step
    /// runs, and then copies it up instead of copying the logits down.
    pub fn forward_argmax_masked(
        &self,
        state: &mut State<'w, B>,
        kv: &mut B::Kv,
        batch: &Batch<'_>,
        mask: impl FnOnce(&mut Vec<u32>) -> Result<()>,
    ) -> Result<()> {
        self.queue_batch(
            state,
            kv,
            batch,
            self.config.n_layer,
            Readback::MaskedArgmax,
        )?;
        state.mask.clear();
        mask(&mut state.mask)?;
        let n = batch.outputs.len();
        self.backend
            .read_argmax_masked(&state.logits, &state.mask, &mut state.argmax_host[..n])
    }

    /// [`Model::forward`] without the output head: the output rows' final hidden states
    /// (after the output norm) are read back into [`State::hidden`], and [`State::logits`] is
    /// not updated. These are the embeddings llama.cpp's `--embeddings` pools.
    pub fn forward_hidden(
        &self,
        state: &mut State<'w, B>,
        kv: &mut B::Kv,
        batch: &Batch<'_>,
    ) -> Result<()> {
        self.run_batch(state, kv, batch, self.config.n_layer, Readback::Hidden)
    }

    fn run_batch(
        &self,
        state: &mut State<'w, B>,
        kv: &mut B::Kv,
        batch: &Batch<'_>,
        n_layers: usize,
        readback: Readback,
    ) -> Result<()> {
        self.queue_batch(state, kv, batch, n_layers, readback)?;
        let b = &self.backend;
        match readback {
            Readback::Logits | Readback::MaskedArgmax => b.read(
                &state.logits,
                &mut state.logits_host[..batch.outputs.len() * self.config.vocab],
            ),
            Readback::Argmax => {
                b.read_argmax(&state.logits, &mut state.argmax_host[..batch.outputs.len()])
            }
            Readback::Hidden => b.read(
                &state.out_x,
                &mut state.hidden_host[..batch.outputs.len() * self.config.d_model],
            ),
        }
    }

    /// Runs `batch` up to what `readback` reads, without reading it (a GPU may still be
    /// working when this returns).
    fn queue_batch(
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
            let head = readback != Readback::Hidden;
            block::forward(
                &self.weights,
                &self.config,
                b,
                state,
                kv,
                batch,
                n_layers,
                head,
            )?;
            match readback {
                Readback::Argmax => b.argmax_ahead(&state.logits),
                Readback::Logits | Readback::MaskedArgmax | Readback::Hidden => Ok(()),
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
        Ok(())
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
