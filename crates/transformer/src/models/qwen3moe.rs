//! Qwen 3 mixture of experts (Qwen3-30B-A3B, Qwen3-235B-A22B): Qwen 3 attention and a
//! feed-forward layer of `expert_count` SwiGLU experts of `expert_feed_forward_length`, of which
//! each token uses the `expert_used_count` with the largest router probabilities, weighted by
//! those probabilities renormalized to sum to 1. No shared expert.
//!
//! ```text
//! x = embed(tokens)
//! for each block:
//!     h = rms_norm(x) · attn_norm
//!     q = rope(rms_norm_per_head(W_q h) · q_norm), k = rope(rms_norm_per_head(W_k h) · k_norm)
//!     x += W_o · attention(q, k, W_v h)
//!     h = rms_norm(x) · ffn_norm
//!     p = softmax(W_router h);  E = top-k(p);  w_e = p_e / Σ_E p
//!     x += Σ_{e ∈ E} w_e · W_down,e · (silu(W_gate,e h) ⊙ W_up,e h)
//! logits = W_out · (rms_norm(x) · output_norm)        (W_out = embeddings when tied)
//! ```

use super::spec::{
    ArchSpec, Experts, FfnLayout, NormPlacement, QkvLayout, RopeFactors, inv_sqrt_head_dim,
};
use crate::backend::Glu;
use crate::config::RopeStyle;

/// The qwen3moe row of the architecture table.
pub const SPEC: ArchSpec = ArchSpec {
    names: &["qwen3moe"],
    summary: "Qwen 3 mixture of experts",
    qkv: QkvLayout::Separate,
    qkv_bias: false,
    qk_norm: true,
    rope_style: RopeStyle::Halves,
    rope_factors: RopeFactors::None,
    norms: NormPlacement::Pre,
    ffn: FfnLayout::Gated,
    experts: Experts::Always,
    glu: Glu::Silu,
    embed_scale_sqrt_d: false,
    softcap: None,
    sliding_window: None,
    always_tied: false,
    attn_scale: inv_sqrt_head_dim,
};
