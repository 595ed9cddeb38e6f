//! Qwen 2 and 2.5 (and DeepSeek-R1-Distill-Qwen): the llama block with biases on the query, key
//! and value projections and rotary embedding on NeoX pairs; YaRN when the file asks for it
//! (`rope.scaling.type = "yarn"`).
//!
//! ```text
//! x = embed(tokens)
//! for each block:
//!     h = rms_norm(x) · attn_norm
//!     x += W_o · attention(rope(W_q h + b_q), rope(W_k h + b_k), W_v h + b_v)
//!     h = rms_norm(x) · ffn_norm
//!     x += W_down · (silu(W_gate h) ⊙ W_up h)
//! logits = W_out · (rms_norm(x) · output_norm)        (W_out = embeddings when tied)
//! ```

use super::spec::{
    ArchSpec, Experts, FfnLayout, NormPlacement, QkvLayout, RopeFactors, inv_sqrt_head_dim,
};
use crate::backend::Glu;
use crate::config::RopeStyle;

/// The qwen2 row of the architecture table.
pub const SPEC: ArchSpec = ArchSpec {
    names: &["qwen2"],
    summary: "Qwen 2 / 2.5, DeepSeek-R1-Distill-Qwen",
    qkv: QkvLayout::Separate,
    qkv_bias: true,
    qk_norm: false,
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
