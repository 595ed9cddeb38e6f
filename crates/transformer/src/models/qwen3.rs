//! Qwen 3: the llama block with per-head RMS norms of queries and keys before a NeoX rotary
//! embedding; heads may be wider than `d_model / n_head` (`attention.key_length`).
//!
//! ```text
//! x = embed(tokens)
//! for each block:
//!     h = rms_norm(x) · attn_norm
//!     q = rope(rms_norm_per_head(W_q h) · q_norm), k = rope(rms_norm_per_head(W_k h) · k_norm)
//!     x += W_o · attention(q, k, W_v h)
//!     h = rms_norm(x) · ffn_norm
//!     x += W_down · (silu(W_gate h) ⊙ W_up h)
//! logits = W_out · (rms_norm(x) · output_norm)        (W_out = embeddings when tied)
//! ```

use super::spec::{
    ArchSpec, Experts, FfnLayout, NormPlacement, QkvLayout, RopeFactors, inv_sqrt_head_dim,
};
use crate::backend::Glu;
use crate::config::RopeStyle;

/// The qwen3 row of the architecture table.
pub const SPEC: ArchSpec = ArchSpec {
    names: &["qwen3"],
    summary: "Qwen 3",
    qkv: QkvLayout::Separate,
    qkv_bias: false,
    qk_norm: true,
    rope_style: RopeStyle::Halves,
    rope_factors: RopeFactors::None,
    norms: NormPlacement::Pre,
    ffn: FfnLayout::Gated,
    experts: Experts::No,
    glu: Glu::Silu,
    embed_scale_sqrt_d: false,
    softcap: None,
    sliding_window: None,
    always_tied: false,
    attn_scale: inv_sqrt_head_dim,
};
