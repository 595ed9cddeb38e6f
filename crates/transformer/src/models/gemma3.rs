//! Gemma 3: grouped-query attention with RMS-normalized queries and keys, norms both before
//! and after each sub-layer, a GELU-tanh gated feed-forward layer, embeddings scaled by
//! √d_model, and sliding-window attention (with its own RoPE base, 10 000 unless the file says)
//! on five of every six blocks. GGUF stores the norm weights with Gemma's `1 +` already applied.
//!
//! ```text
//! x = embed(tokens) · √d_model
//! for each block:
//!     h = rms_norm(x) · attn_norm
//!     q = rope(rms_norm_per_head(W_q h) · q_norm), k = rope(rms_norm_per_head(W_k h) · k_norm)
//!     x += rms_norm(W_o · attention(q, k, W_v h)) · post_attention_norm
//!     h = rms_norm(x) · ffn_norm
//!     x += rms_norm(W_down · (gelu_tanh(W_gate h) ⊙ W_up h)) · post_ffw_norm
//! logits = W_embd · (rms_norm(x) · output_norm)
//! ```

use super::spec::{
    ArchSpec, Experts, FfnLayout, NormPlacement, QkvLayout, RopeFactors, SlidingWindow,
    inv_sqrt_head_dim,
};
use crate::backend::Glu;
use crate::config::RopeStyle;

/// The gemma3 row of the architecture table.
pub const SPEC: ArchSpec = ArchSpec {
    names: &["gemma3"],
    summary: "Gemma 3",
    qkv: QkvLayout::Separate,
    qkv_bias: false,
    qk_norm: true,
    rope_style: RopeStyle::Halves,
    rope_factors: RopeFactors::None,
    norms: NormPlacement::PreAndPost,
    ffn: FfnLayout::Gated,
    experts: Experts::No,
    glu: Glu::GeluTanh,
    embed_scale_sqrt_d: true,
    softcap: None,
    sliding_window: Some(SlidingWindow {
        period: 6,
        default_window: None,
        local_rope_base: Some(10_000.0),
    }),
    always_tied: false,
    attn_scale: inv_sqrt_head_dim,
};
