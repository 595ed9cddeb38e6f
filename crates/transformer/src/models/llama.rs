//! The llama family (Llama 2/3, Mistral, SmolLM2): pre-norm blocks of grouped-query attention
//! with rotary embeddings and a SwiGLU feed-forward layer.
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

use super::{Loader, State};
use crate::backend::{AttentionParams, Backend, Batch, Glu};
use crate::config::ModelConfig;
use crate::error::Result;
use crate::names::TensorName as T;

/// Weights of one block.
pub struct Layer<M, V> {
    attn_norm: V, // (d_model,)
    wq: M,        // (n_head * head_dim, d_model)
    wk: M,        // (n_head_kv * head_dim, d_model)
    wv: M,        // (n_head_kv * head_dim, d_model)
    wo: M,        // (d_model, n_head * head_dim)
    ffn_norm: V,  // (d_model,)
    w_gate: M,    // (ffn_dim, d_model)
    w_up: M,      // (ffn_dim, d_model)
    w_down: M,    // (d_model, ffn_dim)
}

/// All weights of a llama-family model.
pub struct Weights<M, V> {
    token_embd: M, // (vocab, d_model)
    layers: Vec<Layer<M, V>>,
    output_norm: V, // (d_model,)
    output: M,      // (vocab, d_model), the embeddings when tied
}

impl<M, V> Weights<M, V> {
    pub(crate) fn load<'w, B>(l: &Loader<'_, 'w, B>, c: &ModelConfig) -> Result<Self>
    where
        B: Backend<'w, Matrix = M, Vector = V>,
    {
        let (d, q, kv, f) = (c.d_model, c.q_dim(), c.kv_dim(), c.ffn_dim);
        let layers = (0..c.n_layer)
            .map(|il| {
                let n = |t: T| t.in_block(il);
                Ok(Layer {
                    attn_norm: l.vector(&n(T::AttnNorm), d)?,
                    wq: l.matrix(&n(T::AttnQ), q, d)?,
                    wk: l.matrix(&n(T::AttnK), kv, d)?,
                    wv: l.matrix(&n(T::AttnV), kv, d)?,
                    wo: l.matrix(&n(T::AttnOutput), d, q)?,
                    ffn_norm: l.vector(&n(T::FfnNorm), d)?,
                    w_gate: l.matrix(&n(T::FfnGate), f, d)?,
                    w_up: l.matrix(&n(T::FfnUp), f, d)?,
                    w_down: l.matrix(&n(T::FfnDown), d, f)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            token_embd: l.matrix(T::TokenEmbd.as_str(), c.vocab, d)?,
            layers,
            output_norm: l.vector(T::OutputNorm.as_str(), d)?,
            output: l.output(c)?,
        })
    }
}

pub(crate) fn forward<'w, B: Backend<'w>>(
    w: &Weights<B::Matrix, B::Vector>,
    c: &ModelConfig,
    b: &B,
    s: &mut State<'w, B>,
    kv: &mut B::Kv,
    batch: &Batch<'_>,
    n_layers: usize,
) -> Result<()> {
    s.set_rows(b, batch.len(), batch.outputs.len())?;
    b.embed(&w.token_embd, batch.tokens, 1.0, &mut s.x)?;
    for (il, (layer, lc)) in w.layers.iter().zip(&c.layers).take(n_layers).enumerate() {
        // Attention.
        b.rms_norm_prepare(&s.x, &layer.attn_norm, c.rms_eps, &mut s.xn, &mut s.xn_in)?;
        b.matmul_many(
            &[&layer.wq, &layer.wk, &layer.wv],
            &s.xn_in,
            &mut [&mut s.q, &mut s.k, &mut s.v],
        )?;
        b.rope_qk(&mut s.q, &mut s.k, c.head_dim, batch.positions, &lc.rope)?;
        let params = AttentionParams {
            n_head: c.n_head,
            n_head_kv: c.n_head_kv,
            head_dim: c.head_dim,
            scale: c.attn_scale,
            window: lc.window,
        };
        b.attention_prepare(
            kv,
            il,
            batch,
            &s.q,
            &s.k,
            &s.v,
            &params,
            &mut s.att,
            &mut s.att_in,
        )?;
        b.matmul_add(&layer.wo, &s.att_in, &mut s.proj, &mut s.x)?;

        // Feed-forward.
        b.rms_norm_prepare(&s.x, &layer.ffn_norm, c.rms_eps, &mut s.xn, &mut s.xn_in)?;
        b.matmul_many(
            &[&layer.w_gate, &layer.w_up],
            &s.xn_in,
            &mut [&mut s.gate, &mut s.up],
        )?;
        b.glu_prepare(&mut s.gate, &s.up, Glu::Silu, &mut s.ffn_in)?;
        b.matmul_add(&layer.w_down, &s.ffn_in, &mut s.proj, &mut s.x)?;
    }
    b.gather_rows(&s.x, batch.outputs, &mut s.out_x)?;
    b.rms_norm(&mut s.out_x, &w.output_norm, c.rms_eps)?;
    b.prepare(&s.out_x, &mut s.out_in)?;
    b.matmul(&w.output, &s.out_in, &mut s.logits)
}
