//! The seam between model code and the hardware that runs it.
//!
//! Model files ([`crate::models`]) are written once against [`Backend`]: they hold weights as
//! the backend's [`Backend::Matrix`] and [`Backend::Vector`], activations as
//! [`Backend::Buffer`], and call one method per operation. The CPU backend ([`cpu`]) borrows
//! weights straight from the memory-mapped file; a GPU backend uploads them. The [`cuda`]
//! module gives the CUDA backend's entry point, which without the `cuda` feature reports that
//! the build has no CUDA support.

pub mod cpu;
pub mod cuda;

use ferrolm_gguf::TensorView;

use crate::config::Rope;
use crate::error::Result;

/// Identifies one sequence in a batch and in the KV cache.
pub type SeqId = u32;

/// Tokens to run through the model together: one entry per token.
#[derive(Clone, Copy, Debug)]
pub struct Batch<'a> {
    /// Token ids.
    pub tokens: &'a [u32],
    /// Position of each token in its sequence.
    pub positions: &'a [u32],
    /// Sequence of each token. Within a sequence, tokens appear in position order and
    /// continue exactly where the sequence's cached positions end.
    pub seqs: &'a [SeqId],
    /// Indices into `tokens` whose next-token logits are wanted, in the order the logits
    /// are written.
    pub outputs: &'a [usize],
}

impl Batch<'_> {
    /// Tokens in the batch.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

/// How the blocks of a KV cache are used ([`Backend::kv_blocks`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvBlocks {
    /// Blocks of the cache.
    pub total: usize,
    /// Blocks that hold positions of at least one sequence.
    pub used: usize,
    /// Blocks that hold positions of several sequences (a shared prompt prefix).
    pub shared: usize,
    /// Positions per block.
    pub block_tokens: usize,
}

impl KvBlocks {
    pub(crate) fn of(ledger: &ferrolm_kvcache::BlockLedger) -> KvBlocks {
        KvBlocks {
            total: ledger.n_blocks(),
            used: ledger.used_blocks(),
            shared: ledger.shared_blocks(),
            block_tokens: ledger.block_tokens(),
        }
    }

    /// Blocks free for new positions.
    pub fn free(&self) -> usize {
        self.total - self.used
    }
}

/// Shapes of the KV cache a model needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvLayout {
    /// Layers, each with its own keys and values.
    pub n_layer: usize,
    /// Key/value heads.
    pub n_head_kv: usize,
    /// Width of each head (keys and values alike).
    pub head_dim: usize,
    /// Most positions one sequence may hold.
    pub n_ctx: usize,
    /// Most sequences held at once.
    pub n_seq: usize,
}

/// Attention settings of one layer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttentionParams {
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads (query head `h` reads KV head `h / (n_head / n_head_kv)`).
    pub n_head_kv: usize,
    /// Width of each head.
    pub head_dim: usize,
    /// Multiplier on the dot products before the softmax.
    pub scale: f32,
    /// Attend only to the last `window` positions (the query's own included), if set.
    pub window: Option<usize>,
    /// Soft cap on the scaled scores (`cap · tanh(s / cap)`, before the softmax), if set.
    pub softcap: Option<f32>,
}

/// How a mixture-of-experts layer weighs the experts its router picks.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MoeRouting {
    /// Experts chosen per token: the `n_used` largest of the router's softmax.
    pub n_used: usize,
    /// Renormalize the chosen probabilities to sum to 1.
    pub norm_weights: bool,
    /// Multiplier on the chosen weights.
    pub weights_scale: f32,
}

/// Nonlinearity of a gated feed-forward layer: `out = act(gate) * up`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Glu {
    /// `x · sigmoid(x)` (SwiGLU).
    Silu,
    /// GELU with the tanh approximation (GeGLU).
    GeluTanh,
}

/// A place that runs the forward pass: owns the layout of weights and activations and
/// implements every operation the model files use.
///
/// Activation buffers hold `rows × cols` f32 values; `rows` can be changed with
/// [`Backend::set_rows`] up to the capacity they were made with, without allocating.
pub trait Backend<'w>: Sync {
    /// A weight matrix of `rows × cols` (each row one output), in this backend's form.
    type Matrix: Sync;
    /// A vector of f32 weights (norm scales).
    type Vector: Sync;
    /// Activations: `rows × cols` f32.
    type Buffer: Send;
    /// Activations made ready for [`Backend::matmul`] once and reused for every matrix
    /// that reads them (on the CPU: quantized to 8 bits).
    type Prepared: Send;
    /// Keys and values of every layer and sequence.
    type Kv: Send;

    /// Short name for messages ("cpu", "cuda").
    fn name(&self) -> &'static str;

    /// Bytes of weights the backend copied into its own memory beside the mapped model
    /// file (the CPU backend's interleaved copies for its integer kernels); 0 by default.
    fn weight_copy_bytes(&self) -> usize {
        0
    }

    /// Runs `f` in the backend's execution context (the CPU backend's thread pool), so a
    /// whole forward pass pays for entering it once.
    fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        f()
    }

    /// Takes a 2-D weight tensor of the model file as a matrix, with the bias (a 1-D f32
    /// tensor of one value per row) that every product with it adds, if any.
    fn matrix(&self, view: &TensorView<'w>, bias: Option<&TensorView<'w>>) -> Result<Self::Matrix>;
    /// Takes a 2-D tensor of the model file that is only read a row at a time
    /// ([`Backend::embed`]): by default as a [`Backend::matrix`], which a backend may store
    /// more cheaply when no product reads it.
    fn table(&self, view: &TensorView<'w>) -> Result<Self::Matrix> {
        self.matrix(view, None)
    }
    /// Takes a 1-D f32 tensor of the model file as a vector.
    fn vector(&self, view: &TensorView<'w>) -> Result<Self::Vector>;
    /// A buffer of capacity `rows × cols`, with `rows` rows in use.
    fn buffer(&self, rows: usize, cols: usize) -> Result<Self::Buffer>;
    /// An empty prepared-activation buffer for inputs of up to `rows × cols`.
    fn prepared(&self, rows: usize, cols: usize) -> Result<Self::Prepared>;
    /// A KV cache of the given layout, holding no positions.
    fn kv_cache(&self, layout: KvLayout) -> Result<Self::Kv>;

    /// Sets the rows in use of `buf` (at most its capacity).
    fn set_rows(&self, buf: &mut Self::Buffer, rows: usize) -> Result<()>;

    /// `out[i] = table[tokens[i]] * scale`.
    fn embed(
        &self,
        table: &Self::Matrix,
        tokens: &[u32],
        scale: f32,
        out: &mut Self::Buffer,
    ) -> Result<()>;
    /// RMS-normalizes every run of `w.len()` values of `x` in place and multiplies by `w`
    /// (a row of `x` may hold several runs: per-head norms).
    fn rms_norm(&self, x: &mut Self::Buffer, w: &Self::Vector, eps: f32) -> Result<()>;
    /// `out = rms_norm(x) * w`, row by row.
    fn rms_norm_into(
        &self,
        x: &Self::Buffer,
        w: &Self::Vector,
        eps: f32,
        out: &mut Self::Buffer,
    ) -> Result<()>;
    /// Prepares `x` as the input of matrix products.
    fn prepare(&self, x: &Self::Buffer, out: &mut Self::Prepared) -> Result<()>;
    /// `out = x · Wᵀ`: for each row of `x` (cols = W's cols), one value per row of `W`.
    fn matmul(&self, w: &Self::Matrix, x: &Self::Prepared, out: &mut Self::Buffer) -> Result<()>;
    /// The expert router's product `out = x · Wᵀ`, taken from the f32 activations `x` itself
    /// where the backend can: its logits pick experts, and a choice that rounding flips
    /// changes a token's whole feed-forward output. `prepared` is `x` prepared, for weights
    /// that need it. By default, [`Backend::matmul`] of `prepared` (exact on backends whose
    /// float weights always take f32 activations).
    fn matmul_router(
        &self,
        w: &Self::Matrix,
        x: &Self::Buffer,
        prepared: &Self::Prepared,
        out: &mut Self::Buffer,
    ) -> Result<()> {
        let _ = x;
        self.matmul(w, prepared, out)
    }
    /// Rotary embedding of every head of width `head_dim` in each row of `x`, row `i` at
    /// `positions[i]`; `factors` (one per rotated pair) divide the pairs' frequencies.
    fn rope(
        &self,
        x: &mut Self::Buffer,
        head_dim: usize,
        positions: &[u32],
        rope: &Rope,
        factors: Option<&Self::Vector>,
    ) -> Result<()>;
    /// Stores `k` and `v` (one row per batch token) in `layer` of the cache, then computes
    /// causal attention of each query row of `q` over its sequence's cached positions.
    fn attention(
        &self,
        kv: &mut Self::Kv,
        layer: usize,
        batch: &Batch<'_>,
        q: &Self::Buffer,
        k: &Self::Buffer,
        v: &Self::Buffer,
        params: &AttentionParams,
        out: &mut Self::Buffer,
    ) -> Result<()>;
    /// [`Backend::attention`], then `out` prepared into `prepared` as [`Backend::prepare`]
    /// does, which a backend may fuse.
    #[allow(clippy::too_many_arguments)]
    fn attention_prepare(
        &self,
        kv: &mut Self::Kv,
        layer: usize,
        batch: &Batch<'_>,
        q: &Self::Buffer,
        k: &Self::Buffer,
        v: &Self::Buffer,
        params: &AttentionParams,
        out: &mut Self::Buffer,
        prepared: &mut Self::Prepared,
    ) -> Result<()> {
        self.attention(kv, layer, batch, q, k, v, params, out)?;
        self.prepare(out, prepared)
    }
    /// `x += y`.
    fn add(&self, x: &mut Self::Buffer, y: &Self::Buffer) -> Result<()>;
    /// `gate = act(gate) * up`.
    fn glu(&self, gate: &mut Self::Buffer, up: &Self::Buffer, act: Glu) -> Result<()>;
    /// `out = rms_norm(x) · w` row by row, then `out` prepared into `prepared`: what
    /// [`Backend::rms_norm_into`] and [`Backend::prepare`] do, which a backend may fuse.
    fn rms_norm_prepare(
        &self,
        x: &Self::Buffer,
        w: &Self::Vector,
        eps: f32,
        out: &mut Self::Buffer,
        prepared: &mut Self::Prepared,
    ) -> Result<()> {
        self.rms_norm_into(x, w, eps, out)?;
        self.prepare(out, prepared)
    }
    /// `gate = act(gate) · up`, then `gate` prepared into `prepared` ([`Backend::glu`] and
    /// [`Backend::prepare`], which a backend may fuse).
    fn glu_prepare(
        &self,
        gate: &mut Self::Buffer,
        up: &Self::Buffer,
        act: Glu,
        prepared: &mut Self::Prepared,
    ) -> Result<()> {
        self.glu(gate, up, act)?;
        self.prepare(gate, prepared)
    }
    /// `outs[m] = x · ws[m]ᵀ` for matrices that share their input (a layer's query, key and
    /// value projections; its gate and up projections): [`Backend::matmul`] on each, which a
    /// backend may run as one pass.
    fn matmul_many(
        &self,
        ws: &[&Self::Matrix],
        x: &Self::Prepared,
        outs: &mut [&mut Self::Buffer],
    ) -> Result<()> {
        for (w, out) in ws.iter().zip(outs.iter_mut()) {
            self.matmul(w, x, out)?;
        }
        Ok(())
    }
    /// `out = x · Wᵀ`, then `residual += out`: a sub-layer's output projection and the residual
    /// connection ([`Backend::matmul`] and [`Backend::add`], which a backend may fuse).
    fn matmul_add(
        &self,
        w: &Self::Matrix,
        x: &Self::Prepared,
        out: &mut Self::Buffer,
        residual: &mut Self::Buffer,
    ) -> Result<()> {
        self.matmul(w, x, out)?;
        self.add(residual, out)
    }
    /// Rotary embedding of the queries `q` and keys `k` of the same tokens ([`Backend::rope`]
    /// on each, which a backend may fuse).
    fn rope_qk(
        &self,
        q: &mut Self::Buffer,
        k: &mut Self::Buffer,
        head_dim: usize,
        positions: &[u32],
        rope: &Rope,
        factors: Option<&Self::Vector>,
    ) -> Result<()> {
        self.rope(q, head_dim, positions, rope, factors)?;
        self.rope(k, head_dim, positions, rope, factors)
    }
    /// Per-head RMS norms of the queries `q` and keys `k` (weights `q_norm` and `k_norm`, one
    /// value per head dimension), then their rotary embedding: [`Backend::rms_norm`] on each and
    /// [`Backend::rope_qk`], which a backend may fuse.
    #[allow(clippy::too_many_arguments)]
    fn qk_norm_rope(
        &self,
        q: &mut Self::Buffer,
        k: &mut Self::Buffer,
        q_norm: &Self::Vector,
        k_norm: &Self::Vector,
        eps: f32,
        head_dim: usize,
        positions: &[u32],
        rope: &Rope,
        factors: Option<&Self::Vector>,
    ) -> Result<()> {
        self.rms_norm(q, q_norm, eps)?;
        self.rms_norm(k, k_norm, eps)?;
        self.rope_qk(q, k, head_dim, positions, rope, factors)
    }
    /// `x = cap · tanh(x / cap)`, element by element (logit soft-capping).
    fn softcap(&self, x: &mut Self::Buffer, cap: f32) -> Result<()>;
    /// Routes each token of a mixture-of-experts layer: from the router's logits (one row of
    /// `n_expert` per token), the softmax's `routing.n_used` largest entries, lowest index
    /// first on ties, weighted as `routing` says. Row `t` of `choice` (`2 · n_used` wide) holds
    /// the chosen experts' indices (as f32) and then their weights.
    fn moe_route(
        &self,
        logits: &Self::Buffer,
        routing: &MoeRouting,
        choice: &mut Self::Buffer,
    ) -> Result<()>;
    /// Products with the chosen experts: `experts` stacks `n_expert` matrices of equal shape
    /// (expert `e`'s rows follow expert `e − 1`'s); for token `t` and slot `j` of `choice`
    /// ([`Backend::moe_route`]), row `t · n_used + j` of `out` is expert `choice[t][j]` times row
    /// `t` of `x` when `x` has a row per token, or times row `t · n_used + j` when it has one per
    /// slot. Only the chosen experts' weights need be read.
    fn matmul_experts(
        &self,
        experts: &Self::Matrix,
        n_expert: usize,
        choice: &Self::Buffer,
        x: &Self::Prepared,
        out: &mut Self::Buffer,
    ) -> Result<()>;
    /// `out[t] = Σ_j weight[t][j] · y[t · n_used + j]`: the chosen experts' outputs of each
    /// token, weighted by `choice` ([`Backend::moe_route`]).
    fn moe_combine(
        &self,
        choice: &Self::Buffer,
        y: &Self::Buffer,
        out: &mut Self::Buffer,
    ) -> Result<()>;
    /// `out[j] = x[rows[j]]`.
    fn gather_rows(&self, x: &Self::Buffer, rows: &[usize], out: &mut Self::Buffer) -> Result<()>;
    /// Copies the rows in use of `x` to host memory, row after row.
    fn read(&self, x: &Self::Buffer, out: &mut [f32]) -> Result<()>;
    /// The index of the largest value of each row of `x`, one per row into `out` (the lowest
    /// index on ties; NaN and −∞ are never chosen, and a row with nothing else is an error, as
    /// for the greedy sampler): all that a greedy step needs, so a GPU copies back one token
    /// id per row instead of a row of the vocabulary.
    fn read_argmax(&self, x: &Self::Buffer, out: &mut [u32]) -> Result<()>;
    /// [`Backend::read_argmax`] among the columns `allowed` lets through (a grammar's token
    /// mask): column `k` competes when bit `k % 32` of `allowed[k / 32]` is set, the same mask
    /// for every row, and a row with no allowed finite value is an error. A GPU copies the
    /// mask up (a bit per token) instead of the logits down (32 bits per token).
    fn read_argmax_masked(&self, x: &Self::Buffer, allowed: &[u32], out: &mut [u32]) -> Result<()>;
    /// Starts finding what [`Backend::read_argmax`] of `x` will return, as the last operation
    /// of a forward pass, so that a GPU can run it inside the step it replays as one graph;
    /// `x` must not change before that read. Backends that find it on reading need not.
    fn argmax_ahead(&self, x: &Self::Buffer) -> Result<()> {
        let _ = x;
        Ok(())
    }

    /// The layout `kv` was made with.
    fn kv_layout(&self, kv: &Self::Kv) -> KvLayout;
    /// Positions cached for sequence `seq` (0 for an unknown one).
    fn kv_len(&self, kv: &Self::Kv, seq: SeqId) -> usize;
    /// How many of the cache's blocks hold positions, and how many are shared.
    fn kv_blocks(&self, kv: &Self::Kv) -> KvBlocks;
    /// Makes room for the batch's tokens at their positions; the batch must continue each of
    /// its sequences where the cache ends.
    fn kv_reserve(&self, kv: &mut Self::Kv, batch: &Batch<'_>) -> Result<()>;
    /// Keeps only the first `len` positions of `seq`.
    fn kv_truncate(&self, kv: &mut Self::Kv, seq: SeqId, len: usize) -> Result<()>;
    /// Makes `dst` hold the first `len` positions of `src` (all it has if fewer), sharing
    /// their storage: a block is copied only when one of the two sequences writes into it, so
    /// a prompt prefix that several sequences share is computed and stored once. What `dst`
    /// held before is dropped.
    fn kv_share(&self, kv: &mut Self::Kv, dst: SeqId, src: SeqId, len: usize) -> Result<()>;
    /// Forgets every position of every sequence.
    fn kv_clear(&self, kv: &mut Self::Kv);
}

/// Whether bit `k % 32` of `allowed[k / 32]` is set ([`Backend::read_argmax_masked`]'s mask);
/// a column past the mask is not allowed.
pub fn mask_allows(allowed: &[u32], k: usize) -> bool {
    allowed
        .get(k / 32)
        .is_some_and(|w| (w >> (k % 32)) & 1 == 1)
}

/// [`argmax_row`] among the columns of `row` that `allowed` lets through ([`mask_allows`]):
/// the rule of [`Backend::read_argmax_masked`].
pub fn argmax_row_masked(row: &[f32], allowed: &[u32]) -> Option<u32> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &v) in row.iter().enumerate() {
        if !v.is_nan()
            && v > f32::NEG_INFINITY
            && best.is_none_or(|(_, b)| v > b)
            && mask_allows(allowed, i)
        {
            best = Some((i, v));
        }
    }
    best.and_then(|(i, _)| u32::try_from(i).ok())
}

/// Index of the largest value of `row`: the lowest index on ties, NaN and −∞ never chosen, as
/// the greedy sampler ranks tokens; `None` when no value can be chosen. The rule of
/// [`Backend::read_argmax`].
pub fn argmax_row(row: &[f32]) -> Option<u32> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &v) in row.iter().enumerate() {
        if !v.is_nan() && v > f32::NEG_INFINITY && best.is_none_or(|(_, b)| v > b) {
            best = Some((i, v));
        }
    }
    best.and_then(|(i, _)| u32::try_from(i).ok())
}
