//! Gemma 2: Gemma's block (norms before and after each sub-layer, GELU-tanh gated feed-forward,
//! embeddings scaled by √d_model, tied head) with soft-capped attention scores and final logits
//! and sliding-window attention on every other block (the even ones), without q/k norms.
//!
//! ```text
//! x = embed(tokens) · √d_model
//! for each block:
//!     h = rms_norm(x) · attn_norm
//!     s = softcap_attn(scale · rope(W_q h) · rope(W_k h))    (window on even blocks)
//!     x += rms_norm(W_o · softmax(s) W_v h) · post_attention_norm
//!     h = rms_norm(x) · ffn_norm
//!     x += rms_norm(W_down · (gelu_tanh(W_gate h) ⊙ W_up h)) · post_ffw_norm
//! logits = softcap_final(W_embd · (rms_norm(x) · output_norm))
//! softcap_c(v) = c · tanh(v / c)        (c: 50 and 30 unless the file says)
//! ```
//!
//! The 27B model (46 blocks) scales scores by `1/√(d_model / n_head)` instead of
//! `1/√head_dim`, as its reference implementation does.

use super::spec::{
    ArchSpec, Dims, Experts, FfnLayout, NormPlacement, QkvLayout, RopeFactors, SlidingWindow,
    Softcap,
};
use crate::backend::Glu;
use crate::config::RopeStyle;

/// Blocks of Gemma 2 27B, the size with its own attention scale.
const BLOCKS_27B: usize = 46;

fn attn_scale(d: &Dims) -> f32 {
    let width = if d.n_layer == BLOCKS_27B {
        d.d_model / d.n_head
    } else {
        d.head_dim
    };
    1.0 / (width as f32).sqrt()
}

/// The gemma2 row of the architecture table.
pub const SPEC: ArchSpec = ArchSpec {
    names: &["gemma2"],
    summary: "Gemma 2",
    qkv: QkvLayout::Separate,
    qkv_bias: false,
    qk_norm: false,
    rope_style: RopeStyle::Halves,
    rope_factors: RopeFactors::None,
    norms: NormPlacement::PreAndPost,
    ffn: FfnLayout::Gated,
    experts: Experts::No,
    glu: Glu::GeluTanh,
    embed_scale_sqrt_d: true,
    softcap: Some(Softcap {
        attn: 50.0,
        final_logits: 30.0,
    }),
    sliding_window: Some(SlidingWindow {
        period: 2,
        default_window: Some(4096),
        local_rope_base: None,
    }),
    always_tied: true,
    attn_scale,
};
