//! Phi-3 and Phi-3.5 (mini, medium): the llama block with NeoX rotary embedding, the query, key
//! and value projections fused in one tensor (`attn_qkv`: query rows, key rows, value rows) and
//! the gate and up projections fused in `ffn_up` (gate rows, then up rows). Both are split into
//! row ranges at load, borrowing the file's bytes. Long-context variants carry LongRoPE factors
//! (`rope_factors_long`, `rope_factors_short`): the long set applies when the context is longer
//! than `rope.scaling.original_context_length`, and `rope.scaling.attn_factor` scales the rotated
//! values. The file's `attention.sliding_window` is ignored, as llama.cpp ignores it.
//!
//! ```text
//! x = embed(tokens)
//! for each block:
//!     h = rms_norm(x) · attn_norm
//!     q, k, v = split(W_qkv h)
//!     x += W_o · attention(rope(q), rope(k), v)
//!     g, u = split(W_up h)
//!     x += W_down · (silu(g) ⊙ u)                     (h = rms_norm(x) · ffn_norm)
//! logits = W_out · (rms_norm(x) · output_norm)
//! ```

use super::spec::{
    ArchSpec, Experts, FfnLayout, NormPlacement, QkvLayout, RopeFactors, inv_sqrt_head_dim,
};
use crate::backend::Glu;
use crate::config::RopeStyle;

/// The phi3 row of the architecture table.
pub const SPEC: ArchSpec = ArchSpec {
    names: &["phi3"],
    summary: "Phi-3, Phi-3.5",
    qkv: QkvLayout::Fused,
    qkv_bias: false,
    qk_norm: false,
    rope_style: RopeStyle::Halves,
    rope_factors: RopeFactors::LongShort,
    norms: NormPlacement::Pre,
    ffn: FfnLayout::FusedGateUp,
    experts: Experts::No,
    glu: Glu::Silu,
    embed_scale_sqrt_d: false,
    softcap: None,
    sliding_window: None,
    always_tied: false,
    attn_scale: inv_sqrt_head_dim,
};
