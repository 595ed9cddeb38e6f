//! The llama family: Llama 2 and 3.x, Mistral, Mixtral, SmolLM2, and the many models stored as
//! `llama`. Pre-norm blocks of grouped-query attention with rotary embeddings on adjacent pairs
//! and a SwiGLU feed-forward layer.
//!
//! ```text
//! x = embed(tokens)
//! for each block:
//!     h = rms_norm(x) · attn_norm
//!     x += W_o · attention(rope(W_q h), rope(W_k h), W_v h)
//!     h = rms_norm(x) · ffn_norm
//!     x += W_down · (silu(W_gate h) ⊙ W_up h)
//! logits = W_out · (rms_norm(x) · output_norm)        (W_out = embeddings when tied)
//! ```
//!
//! - Llama 3.1 and later carry `rope_freqs.weight`: each rotated pair's frequency is divided by
//!   its factor.
//! - Mixtral is a `llama` file with `expert_count` > 0: the feed-forward layer is a mixture of
//!   experts (`ffn_gate_inp` routes each token to the `expert_used_count` experts of largest
//!   softmax probability, weighted by those probabilities renormalized to sum to 1).
//! - Mistral files are `llama` files; their `attention.sliding_window` is ignored, as llama.cpp
//!   ignores it (Mistral 7B v0.2 and later have none; v0.1's 4096 matters only past 4096
//!   positions).

use super::spec::{
    ArchSpec, Experts, FfnLayout, NormPlacement, QkvLayout, RopeFactors, inv_sqrt_head_dim,
};
use crate::backend::Glu;
use crate::config::RopeStyle;

/// The llama row of the architecture table (`mistral` is accepted as a name of it).
pub const SPEC: ArchSpec = ArchSpec {
    names: &["llama", "mistral"],
    summary: "Llama 2/3.x, Mistral, Mixtral, SmolLM2",
    qkv: QkvLayout::Separate,
    qkv_bias: false,
    qk_norm: false,
    rope_style: RopeStyle::Adjacent,
    rope_factors: RopeFactors::Single,
    norms: NormPlacement::Pre,
    ffn: FfnLayout::Gated,
    experts: Experts::WhenPresent,
    glu: Glu::Silu,
    embed_scale_sqrt_d: false,
    softcap: None,
    sliding_window: None,
    always_tied: false,
    attn_scale: inv_sqrt_head_dim,
};
