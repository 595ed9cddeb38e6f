//! The description of a model family: one [`ArchSpec`] value per family, in the family's own
//! file, says everything in which it differs from a plain llama block. The configuration reader
//! ([`crate::config`]), the weight loader and the one block forward ([`super::block`]) read it.

use crate::backend::Glu;
use crate::config::RopeStyle;

/// One model family, as a row of the architecture table ([`super::ARCHITECTURES`]).
///
/// A row of independent yes/no choices reads best as named flags.
#[allow(clippy::struct_excessive_bools)]
#[derive(Clone, Copy, Debug)]
pub struct ArchSpec {
    /// `general.architecture` values of this family (the first is its own name).
    pub names: &'static [&'static str],
    /// One line for messages and `inspect`.
    pub summary: &'static str,
    /// Query/key/value projections: three tensors, or one fused tensor split at load.
    pub qkv: QkvLayout,
    /// Whether the query, key and value projections carry biases (`attn_{q,k,v}.bias`).
    pub qkv_bias: bool,
    /// Per-head RMS norms of queries and keys before the rotary embedding (`attn_{q,k}_norm`).
    pub qk_norm: bool,
    /// Pairing of dimensions in the rotary embedding.
    pub rope_style: RopeStyle,
    /// Which per-pair frequency-factor tensors the family may carry.
    pub rope_factors: RopeFactors,
    /// Where the norms of a block sit.
    pub norms: NormPlacement,
    /// The feed-forward layer.
    pub ffn: FfnLayout,
    /// Mixture of experts in place of the dense feed-forward layer.
    pub experts: Experts,
    /// Nonlinearity of the gated feed-forward layer.
    pub glu: Glu,
    /// Embeddings are multiplied by `√d_model` after lookup.
    pub embed_scale_sqrt_d: bool,
    /// Attention and final logits soft-capping (`cap · tanh(x / cap)`), with the defaults used
    /// when the file does not give `attn_logit_softcapping` / `final_logit_softcapping`.
    pub softcap: Option<Softcap>,
    /// Sliding-window attention on some layers.
    pub sliding_window: Option<SlidingWindow>,
    /// The output head is always the embedding table, even if the file has `output.weight`.
    pub always_tied: bool,
    /// The attention scale when the file gives no `attention.scale`.
    pub attn_scale: fn(&Dims) -> f32,
}

/// Families are the same when they have the same names.
impl PartialEq for ArchSpec {
    fn eq(&self, other: &Self) -> bool {
        self.names == other.names
    }
}

impl ArchSpec {
    /// The family's own name (its first `general.architecture` value).
    pub fn name(&self) -> &'static str {
        self.names.first().copied().unwrap_or("")
    }
}

/// Shapes an [`ArchSpec::attn_scale`] rule may depend on.
#[derive(Clone, Copy, Debug)]
pub struct Dims {
    /// Transformer blocks.
    pub n_layer: usize,
    /// Residual stream width.
    pub d_model: usize,
    /// Query heads.
    pub n_head: usize,
    /// Width of a query/key head.
    pub head_dim: usize,
}

/// `1/√head_dim`, the usual attention scale.
pub fn inv_sqrt_head_dim(d: &Dims) -> f32 {
    1.0 / (d.head_dim as f32).sqrt()
}

/// How the query, key and value projections are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QkvLayout {
    /// `attn_q`, `attn_k`, `attn_v`.
    Separate,
    /// `attn_qkv`: query rows, then key rows, then value rows (Phi-3).
    Fused,
}

/// Frequency-factor tensors (one divisor per rotated dimension pair).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeFactors {
    /// None.
    None,
    /// `rope_freqs.weight` when present (Llama 3.1 and later).
    Single,
    /// `rope_factors_long.weight` / `rope_factors_short.weight` when present (Phi-3 LongRoPE): the
    /// long set when the context is longer than the original training context.
    LongShort,
}

/// Which norms a block has besides the norm in front of each sub-layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormPlacement {
    /// Pre-norm only (`attn_norm`, `ffn_norm`).
    Pre,
    /// Pre-norm and a norm of each sub-layer's output before the residual add
    /// (`post_attention_norm`, `post_ffw_norm`: Gemma 2 and 3).
    PreAndPost,
}

/// How the dense feed-forward weights are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FfnLayout {
    /// `ffn_gate`, `ffn_up`, `ffn_down`.
    Gated,
    /// `ffn_up` holds the gate rows then the up rows (Phi-3); `ffn_down`.
    FusedGateUp,
}

/// Whether the feed-forward layer is a mixture of experts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Experts {
    /// Never.
    No,
    /// When the file gives `expert_count` > 0 (Mixtral is stored as `llama`).
    WhenPresent,
    /// Always (`expert_count` and `expert_used_count` required).
    Always,
}

/// Soft-capping defaults of a family.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Softcap {
    /// Cap on the attention scores.
    pub attn: f32,
    /// Cap on the final logits.
    pub final_logits: f32,
}

/// A family's sliding-window attention.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SlidingWindow {
    /// Default period: in every run of `period` layers all but the last slide
    /// (`attention.sliding_window_pattern` overrides it).
    pub period: usize,
    /// Default window when the file gives no `attention.sliding_window`.
    pub default_window: Option<usize>,
    /// RoPE base of the sliding layers when the file gives no `rope.freq_base_swa`; `None`: the
    /// global base.
    pub local_rope_base: Option<f32>,
}
