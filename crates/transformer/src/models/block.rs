//! The one transformer block every family runs, and its weights.
//!
//! ```text
//! x = embed(tokens) · embed_scale
//! for each block:
//!     h = rms_norm(x) · attn_norm
//!     q, k, v = W_q h + b_q, W_k h + b_k, W_v h + b_v        (biases, fused qkv: per family)
//!     q, k = rms_norm_per_head(q) · q_norm, … · k_norm       (families with q/k norms)
//!     q, k = rope(q), rope(k)                                (style, factors, scaling per layer)
//!     a = W_o · attention(q, k, v)                           (window, soft cap per layer)
//!     x += rms_norm(a) · post_attention_norm  or  x += a     (post-norm families)
//!     h = rms_norm(x) · ffn_norm
//!     f = W_down · (act(W_gate h) ⊙ W_up h)                  (dense)
//!       or Σ_top-k p_e · W_down,e · (act(W_gate,e h) ⊙ W_up,e h)   (experts)
//!     x += rms_norm(f) · post_ffw_norm  or  x += f
//! logits = softcap(W_out · (rms_norm(x) · output_norm))
//! ```
//!
//! Named intermediate values are the fields of [`State`]; a family's differences are the
//! choices of its [`ArchSpec`](super::ArchSpec), read once at load.

use super::spec::{FfnLayout, NormPlacement, QkvLayout, RopeFactors};
use super::{Loader, State};
use crate::backend::{AttentionParams, Backend, Batch, MoeRouting};
use crate::config::{LayerConfig, ModelConfig};
use crate::error::Result;
use crate::names::TensorName as T;

/// Attention weights of one block.
pub struct Attention<M, V> {
    norm: V,              // (d_model,)
    wq: M,                // (n_head * head_dim, d_model), with its bias if any
    wk: M,                // (n_head_kv * head_dim, d_model)
    wv: M,                // (n_head_kv * head_dim, d_model)
    q_norm: Option<V>,    // (head_dim,)
    k_norm: Option<V>,    // (head_dim,)
    wo: M,                // (d_model, n_head * head_dim)
    post_norm: Option<V>, // (d_model,)
}

/// Feed-forward weights of one block.
pub enum Ffn<M> {
    /// A gated feed-forward layer.
    Dense {
        /// (ffn, d_model)
        gate: M,
        /// (ffn, d_model)
        up: M,
        /// (d_model, ffn)
        down: M,
    },
    /// A mixture of experts: a router and each expert's gated layer, stacked.
    Experts {
        /// (n_expert, d_model)
        router: M,
        /// (n_expert · ffn_exp, d_model)
        gate: M,
        /// (n_expert · ffn_exp, d_model)
        up: M,
        /// (n_expert · d_model, ffn_exp)
        down: M,
    },
}

/// Weights of one block.
pub struct Layer<M, V> {
    attn: Attention<M, V>,
    ffn_norm: V, // (d_model,)
    ffn: Ffn<M>,
    post_ffn_norm: Option<V>, // (d_model,)
}

/// Frequency factors of the rotary embedding.
enum Factors<V> {
    None,
    Single(V), // (n_rot / 2,)
    LongShort { long: V, short: V },
}

/// All weights of a model.
pub struct Weights<M, V> {
    token_embd: M, // (vocab, d_model)
    layers: Vec<Layer<M, V>>,
    output_norm: V, // (d_model,)
    output: M,      // (vocab, d_model), the embeddings when tied
    rope_factors: Factors<V>,
}

impl<M, V> Weights<M, V> {
    pub(crate) fn load<'w, B>(l: &Loader<'_, 'w, B>, c: &ModelConfig) -> Result<Self>
    where
        B: Backend<'w, Matrix = M, Vector = V>,
    {
        let layers = (0..c.n_layer)
            .map(|il| load_layer(l, c, il))
            .collect::<Result<_>>()?;
        let half_rot = c.layers.first().map_or(0, |lc| lc.rope.n_rot / 2);
        let rope_factors = match c.arch.rope_factors {
            RopeFactors::None => Factors::None,
            RopeFactors::Single => match l.optional_vector(T::RopeFreqs.as_str(), half_rot)? {
                Some(v) => Factors::Single(v),
                None => Factors::None,
            },
            RopeFactors::LongShort => {
                let long = l.optional_vector(T::RopeFactorsLong.as_str(), half_rot)?;
                let short = l.optional_vector(T::RopeFactorsShort.as_str(), half_rot)?;
                match (long, short) {
                    (Some(long), Some(short)) => Factors::LongShort { long, short },
                    (None, None) => Factors::None,
                    (Some(_), None) => return Err(missing(T::RopeFactorsShort)),
                    (None, Some(_)) => return Err(missing(T::RopeFactorsLong)),
                }
            }
        };
        Ok(Self {
            token_embd: l.table(T::TokenEmbd.as_str(), c.vocab, c.d_model)?,
            layers,
            output_norm: l.vector(T::OutputNorm.as_str(), c.d_model)?,
            output: l.output(c)?,
            rope_factors,
        })
    }

    /// Which frequency factors apply with a context of `n_ctx` positions per sequence: LongRoPE's
    /// long set past the original training context, as llama.cpp chooses.
    fn factors(&self, n_ctx: usize, n_ctx_orig: usize) -> Option<&V> {
        match &self.rope_factors {
            Factors::None => None,
            Factors::Single(v) => Some(v),
            Factors::LongShort { long, short } => {
                Some(if n_ctx > n_ctx_orig { long } else { short })
            }
        }
    }
}

fn missing(t: T) -> crate::TransformerError {
    crate::TransformerError::MissingTensor {
        name: t.as_str().into(),
    }
}

fn load_layer<'w, B: Backend<'w>>(
    l: &Loader<'_, 'w, B>,
    c: &ModelConfig,
    il: usize,
) -> Result<Layer<B::Matrix, B::Vector>> {
    let spec = c.arch;
    let n = |t: T| t.in_block(il);
    let (d, q, kv, hd) = (c.d_model, c.q_dim(), c.kv_dim(), c.head_dim);
    let projection = |w: T, b: T, rows: usize| {
        if spec.qkv_bias {
            l.matrix_with_bias(&n(w), &n(b), rows, d)
        } else {
            l.matrix(&n(w), rows, d)
        }
    };
    // Some converters write Phi-3's projections separately; either form loads.
    let fused = spec.qkv == QkvLayout::Fused && l.has(&n(T::AttnQkv));
    let (wq, wk, wv) = if fused {
        let (name, rows) = (n(T::AttnQkv), q + 2 * kv);
        (
            l.matrix_part(&name, rows, d, 0..q)?,
            l.matrix_part(&name, rows, d, q..q + kv)?,
            l.matrix_part(&name, rows, d, q + kv..rows)?,
        )
    } else {
        (
            projection(T::AttnQ, T::AttnQBias, q)?,
            projection(T::AttnK, T::AttnKBias, kv)?,
            projection(T::AttnV, T::AttnVBias, kv)?,
        )
    };
    let post = spec.norms == NormPlacement::PreAndPost;
    let attn = Attention {
        norm: l.vector(&n(T::AttnNorm), d)?,
        wq,
        wk,
        wv,
        q_norm: spec
            .qk_norm
            .then(|| l.vector(&n(T::AttnQNorm), hd))
            .transpose()?,
        k_norm: spec
            .qk_norm
            .then(|| l.vector(&n(T::AttnKNorm), hd))
            .transpose()?,
        wo: l.matrix(&n(T::AttnOutput), d, q)?,
        post_norm: post.then(|| l.vector(&n(T::PostAttnNorm), d)).transpose()?,
    };
    let ffn = match (&c.moe, spec.ffn) {
        (Some(m), _) => {
            let (e, f) = (m.n_expert, m.ffn_dim);
            Ffn::Experts {
                router: l.matrix(&n(T::FfnGateInp), e, d)?,
                gate: l.stacked(&n(T::FfnGateExps), e, f, d)?,
                up: l.stacked(&n(T::FfnUpExps), e, f, d)?,
                down: l.stacked(&n(T::FfnDownExps), e, d, f)?,
            }
        }
        (None, FfnLayout::Gated) => Ffn::Dense {
            gate: l.matrix(&n(T::FfnGate), c.ffn_dim, d)?,
            up: l.matrix(&n(T::FfnUp), c.ffn_dim, d)?,
            down: l.matrix(&n(T::FfnDown), d, c.ffn_dim)?,
        },
        (None, FfnLayout::FusedGateUp) => {
            let (name, f) = (n(T::FfnUp), c.ffn_dim);
            Ffn::Dense {
                gate: l.matrix_part(&name, 2 * f, d, 0..f)?,
                up: l.matrix_part(&name, 2 * f, d, f..2 * f)?,
                down: l.matrix(&n(T::FfnDown), d, f)?,
            }
        }
    };
    Ok(Layer {
        attn,
        ffn_norm: l.vector(&n(T::FfnNorm), d)?,
        ffn,
        post_ffn_norm: post.then(|| l.vector(&n(T::PostFfwNorm), d)).transpose()?,
    })
}

/// Runs `batch` through the first `n_layers` blocks, the output norm and, with `head`, the
/// output head.
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward<'w, B: Backend<'w>>(
    w: &Weights<B::Matrix, B::Vector>,
    c: &ModelConfig,
    b: &B,
    s: &mut State<'w, B>,
    kv: &mut B::Kv,
    batch: &Batch<'_>,
    n_layers: usize,
    head: bool,
) -> Result<()> {
    s.set_rows(b, batch.len(), batch.outputs.len())?;
    b.embed(
        &w.token_embd,
        batch.tokens,
        c.embed_scale.unwrap_or(1.0),
        &mut s.x,
    )?;
    let factors = w.factors(b.kv_layout(kv).n_ctx, c.n_ctx_orig);
    for (il, (layer, lc)) in w.layers.iter().zip(&c.layers).take(n_layers).enumerate() {
        attention(b, c, lc, il, &layer.attn, factors, s, kv, batch)?;
        feed_forward(b, c, layer, s)?;
    }
    b.gather_rows(&s.x, batch.outputs, &mut s.out_x)?;
    b.rms_norm(&mut s.out_x, &w.output_norm, c.rms_eps)?;
    if !head {
        return Ok(());
    }
    b.prepare(&s.out_x, &mut s.out_in)?;
    b.matmul(&w.output, &s.out_in, &mut s.logits)?;
    if let Some(cap) = c.final_softcap {
        b.softcap(&mut s.logits, cap)?;
    }
    Ok(())
}

/// `x += attention block(x)`.
#[allow(clippy::too_many_arguments)]
fn attention<'w, B: Backend<'w>>(
    b: &B,
    c: &ModelConfig,
    lc: &LayerConfig,
    il: usize,
    a: &Attention<B::Matrix, B::Vector>,
    factors: Option<&B::Vector>,
    s: &mut State<'w, B>,
    kv: &mut B::Kv,
    batch: &Batch<'_>,
) -> Result<()> {
    b.rms_norm_prepare(&s.x, &a.norm, c.rms_eps, &mut s.xn, &mut s.xn_in)?;
    b.matmul_many(
        &[&a.wq, &a.wk, &a.wv],
        &s.xn_in,
        &mut [&mut s.q, &mut s.k, &mut s.v],
    )?;
    match (&a.q_norm, &a.k_norm) {
        (Some(q_norm), Some(k_norm)) => b.qk_norm_rope(
            &mut s.q,
            &mut s.k,
            q_norm,
            k_norm,
            c.rms_eps,
            c.head_dim,
            batch.positions,
            &lc.rope,
            factors,
        )?,
        _ => b.rope_qk(
            &mut s.q,
            &mut s.k,
            c.head_dim,
            batch.positions,
            &lc.rope,
            factors,
        )?,
    }
    let params = AttentionParams {
        n_head: c.n_head,
        n_head_kv: c.n_head_kv,
        head_dim: c.head_dim,
        scale: c.attn_scale,
        window: lc.window,
        softcap: c.attn_softcap,
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
    match &a.post_norm {
        None => b.matmul_add(&a.wo, &s.att_in, &mut s.proj, &mut s.x),
        Some(post) => {
            b.matmul(&a.wo, &s.att_in, &mut s.proj)?;
            b.rms_norm(&mut s.proj, post, c.rms_eps)?;
            b.add(&mut s.x, &s.proj)
        }
    }
}

/// `x += feed-forward block(x)`, dense or mixture of experts.
fn feed_forward<'w, B: Backend<'w>>(
    b: &B,
    c: &ModelConfig,
    layer: &Layer<B::Matrix, B::Vector>,
    s: &mut State<'w, B>,
) -> Result<()> {
    let glu = c.arch.glu;
    b.rms_norm_prepare(&s.x, &layer.ffn_norm, c.rms_eps, &mut s.xn, &mut s.xn_in)?;
    match (&layer.ffn, &layer.post_ffn_norm) {
        (Ffn::Dense { gate, up, down }, post) => {
            b.matmul_many(&[gate, up], &s.xn_in, &mut [&mut s.gate, &mut s.up])?;
            b.glu_prepare(&mut s.gate, &s.up, glu, &mut s.ffn_in)?;
            match post {
                None => return b.matmul_add(down, &s.ffn_in, &mut s.proj, &mut s.x),
                Some(_) => b.matmul(down, &s.ffn_in, &mut s.proj)?,
            }
        }
        (
            Ffn::Experts {
                router,
                gate,
                up,
                down,
            },
            _,
        ) => {
            let (Some(moe), Some(m)) = (&c.moe, &mut s.moe) else {
                return Err(crate::TransformerError::InvalidBatch {
                    reason: "a mixture-of-experts layer without its activations".into(),
                });
            };
            let routing = MoeRouting {
                n_used: moe.n_used,
                norm_weights: moe.norm_weights,
                weights_scale: moe.weights_scale,
            };
            let e = moe.n_expert;
            b.matmul_router(router, &s.xn, &s.xn_in, &mut m.logits)?;
            b.moe_route(&m.logits, &routing, &mut m.choice)?;
            b.matmul_experts(gate, e, &m.choice, &s.xn_in, &mut m.gate)?;
            b.matmul_experts(up, e, &m.choice, &s.xn_in, &mut m.up)?;
            b.glu_prepare(&mut m.gate, &m.up, glu, &mut m.ffn_in)?;
            b.matmul_experts(down, e, &m.choice, &m.ffn_in, &mut m.down)?;
            b.moe_combine(&m.choice, &m.down, &mut s.proj)?;
        }
    }
    if let Some(post) = &layer.post_ffn_norm {
        b.rms_norm(&mut s.proj, post, c.rms_eps)?;
    }
    b.add(&mut s.x, &s.proj)
}
