//! Hyperparameters of a model, read from GGUF metadata as its family's [`ArchSpec`] directs.

use ferrolm_gguf::Gguf;
use ferrolm_gguf::keys::ArchKey;

use crate::error::{Result, TransformerError};
use crate::models::spec::{ArchSpec, Dims, Experts};
use crate::names::TensorName;

/// Widest attention head supported.
pub const MAX_HEAD_DIM: usize = 512;

/// Most experts a mixture-of-experts layer may have, and most used per token.
pub const MAX_EXPERTS: usize = 256;

/// How rotary embedding pairs up the dimensions of a head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    /// Rotate adjacent pairs `(2i, 2i+1)` (llama.cpp's "normal" mode; GGUF converters permute
    /// Llama's Q/K weights for it).
    Adjacent,
    /// Rotate `(i, i + n_rot/2)` (GPT-NeoX style: Gemma, Qwen, Phi-3).
    Halves,
}

/// Rotary embedding parameters of one layer.
///
/// Pair `i` turns by `θ_i = pos · base^(-2i/n_rot) / factor_i` (factors from the model file, 1
/// without them), interpolated as `freq_scale · θ_i`; with YaRN (`ext_factor` ≠ 0) pairs below
/// `corr_dims` keep some of the uninterpolated angle. The rotated values are multiplied by
/// `mscale`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rope {
    /// Frequency base θ.
    pub base: f32,
    /// Position multiplier (1 without RoPE scaling).
    pub freq_scale: f32,
    /// Leading dimensions of each head that are rotated.
    pub n_rot: usize,
    /// Pairing of dimensions.
    pub style: RopeStyle,
    /// YaRN: how much of the uninterpolated angle the ramp mixes back (0: none).
    pub ext_factor: f32,
    /// YaRN: the dimension range over which the ramp goes from extrapolation to interpolation.
    pub corr_dims: [f32; 2],
    /// Multiplier on cos and sin (YaRN's magnitude correction, the file's `attn_factor`).
    pub mscale: f32,
}

impl Rope {
    /// Plain rotary embedding: no scaling, no factors.
    pub fn plain(base: f32, n_rot: usize, style: RopeStyle) -> Self {
        Self {
            base,
            freq_scale: 1.0,
            n_rot,
            style,
            ext_factor: 0.0,
            corr_dims: [0.0, 0.0],
            mscale: 1.0,
        }
    }
}

/// Per-layer attention settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LayerConfig {
    /// Attend to at most this many most recent positions (the query's own included);
    /// `None` for full causal attention.
    pub window: Option<usize>,
    /// Rotary embedding of this layer.
    pub rope: Rope,
}

/// A mixture-of-experts feed-forward layer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MoeConfig {
    /// Experts per layer.
    pub n_expert: usize,
    /// Experts chosen per token (top-k of the router's softmax).
    pub n_used: usize,
    /// Hidden width of each expert.
    pub ffn_dim: usize,
    /// Whether the chosen experts' weights are renormalized to sum to 1.
    pub norm_weights: bool,
    /// Multiplier on the chosen experts' weights (1: none).
    pub weights_scale: f32,
}

/// Everything the forward pass needs to know about a model's shape.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    /// The model's family.
    pub arch: &'static ArchSpec,
    /// `general.architecture` as the file gives it.
    pub arch_name: String,
    /// Transformer blocks.
    pub n_layer: usize,
    /// Residual stream width.
    pub d_model: usize,
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads (`n_head` is a multiple of it).
    pub n_head_kv: usize,
    /// Width of each query/key head.
    pub head_dim: usize,
    /// Width of each value head.
    pub head_dim_v: usize,
    /// Feed-forward hidden width (of the dense layer).
    pub ffn_dim: usize,
    /// Mixture of experts in place of the dense feed-forward layer, if any.
    pub moe: Option<MoeConfig>,
    /// Vocabulary size (rows of the embedding table).
    pub vocab: usize,
    /// Context length the model was trained with.
    pub n_ctx_train: usize,
    /// Context length before RoPE scaling (YaRN's and LongRoPE's reference).
    pub n_ctx_orig: usize,
    /// RMSNorm epsilon.
    pub rms_eps: f32,
    /// Multiplier on the scaled dot products (usually `1/√head_dim`).
    pub attn_scale: f32,
    /// Soft cap on attention scores, if any.
    pub attn_softcap: Option<f32>,
    /// Soft cap on the final logits, if any.
    pub final_softcap: Option<f32>,
    /// Multiplier on embeddings after lookup (`√d_model` for Gemma), if any.
    pub embed_scale: Option<f32>,
    /// One entry per layer.
    pub layers: Vec<LayerConfig>,
}

impl ModelConfig {
    /// Reads the configuration of the model in `gguf`.
    pub fn from_gguf(gguf: &Gguf<'_>) -> Result<Self> {
        let arch_name = gguf.architecture()?;
        let arch = crate::models::arch_spec(arch_name)?;
        let m = Meta { gguf };

        let n_layer = m.u(ArchKey::BlockCount)?;
        let d_model = m.u(ArchKey::EmbeddingLength)?;
        let n_head = m.u(ArchKey::HeadCount)?;
        let n_head_kv = m.u_or(ArchKey::HeadCountKv, n_head)?;
        if n_head == 0 || n_head_kv == 0 || n_head % n_head_kv != 0 {
            return Err(m.invalid(
                ArchKey::HeadCountKv,
                format!("{n_head} query heads cannot be shared by {n_head_kv} key/value heads"),
            ));
        }
        // Key and value widths default to d_model / n_head by the format's definition.
        let head_dim = m.u_or(ArchKey::KeyLength, d_model / n_head)?;
        let head_dim_v = m.u_or(ArchKey::ValueLength, d_model / n_head)?;
        let ffn_dim = m.u(ArchKey::FeedForwardLength)?;
        let n_ctx_train = m.u(ArchKey::ContextLength)?;
        let rms_eps = m.f(ArchKey::RmsEps)?;
        let base = m.f_or(ArchKey::RopeFreqBase, 10_000.0)?;
        let n_rot = m.u_or(ArchKey::RopeDimensionCount, head_dim)?;

        let embd = gguf.tensor(TensorName::TokenEmbd.as_str()).ok_or_else(|| {
            TransformerError::MissingTensor {
                name: TensorName::TokenEmbd.as_str().into(),
            }
        })?;
        let vocab = embd.n_rows() as usize;

        for (key, v) in [
            (ArchKey::BlockCount, n_layer),
            (ArchKey::EmbeddingLength, d_model),
            (ArchKey::KeyLength, head_dim),
            (ArchKey::ValueLength, head_dim_v),
            (ArchKey::FeedForwardLength, ffn_dim),
        ] {
            if v == 0 {
                return Err(m.invalid(key, "must be positive".into()));
            }
        }
        // Every block has tensors, so a count past the file's tensors is corrupt metadata;
        // checked before anything is allocated per layer.
        if n_layer > gguf.tensors().len() {
            return Err(m.invalid(
                ArchKey::BlockCount,
                format!(
                    "{n_layer} blocks, but the file holds only {} tensors",
                    gguf.tensors().len()
                ),
            ));
        }
        if head_dim > MAX_HEAD_DIM {
            return Err(m.invalid(
                ArchKey::KeyLength,
                format!("heads of {head_dim} are wider than the {MAX_HEAD_DIM} supported"),
            ));
        }
        if n_rot > head_dim || n_rot % 2 != 0 || n_rot == 0 {
            return Err(m.invalid(
                ArchKey::RopeDimensionCount,
                format!(
                    "{n_rot} rotated dimensions do not fit an even part of a head of {head_dim}"
                ),
            ));
        }
        if head_dim_v != head_dim {
            return Err(m.invalid(
                ArchKey::ValueLength,
                format!("value heads of {head_dim_v} differ from key heads of {head_dim}"),
            ));
        }

        let n_ctx_orig = m.u_or(ArchKey::RopeScalingOrigCtxLen, n_ctx_train)?;
        let scaling = RopeScaling::read(&m)?;
        let global = scaling.rope(base, n_rot, arch.rope_style, n_ctx_orig);

        let layers = match arch.sliding_window {
            None => vec![
                LayerConfig {
                    window: None,
                    rope: global
                };
                n_layer
            ],
            Some(sw) => {
                let window = match sw.default_window {
                    Some(w) => m.u_or(ArchKey::SlidingWindow, w)?,
                    None => m.u(ArchKey::SlidingWindow)?,
                };
                if window == 0 {
                    return Err(m.invalid(ArchKey::SlidingWindow, "must be positive".into()));
                }
                let local_base =
                    m.f_or(ArchKey::RopeFreqBaseSwa, sw.local_rope_base.unwrap_or(base))?;
                let local = scaling.rope(local_base, n_rot, arch.rope_style, n_ctx_orig);
                let sliding = m.swa_pattern(n_layer, sw.period)?;
                sliding
                    .into_iter()
                    .map(|slides| {
                        if slides {
                            LayerConfig {
                                window: Some(window),
                                rope: local,
                            }
                        } else {
                            LayerConfig {
                                window: None,
                                rope: global,
                            }
                        }
                    })
                    .collect()
            }
        };

        let moe = read_moe(&m, arch, ffn_dim)?;
        let dims = Dims {
            n_layer,
            d_model,
            n_head,
            head_dim,
        };
        let attn_scale = m.f_or(ArchKey::AttentionScale, (arch.attn_scale)(&dims))?;
        let (attn_softcap, final_softcap) = match arch.softcap {
            None => (None, None),
            Some(d) => (
                Some(m.positive(ArchKey::AttnLogitSoftcapping, d.attn)?),
                Some(m.positive(ArchKey::FinalLogitSoftcapping, d.final_logits)?),
            ),
        };

        Ok(Self {
            arch,
            arch_name: arch_name.to_owned(),
            n_layer,
            d_model,
            n_head,
            n_head_kv,
            head_dim,
            head_dim_v,
            ffn_dim,
            moe,
            vocab,
            n_ctx_train,
            n_ctx_orig,
            rms_eps,
            attn_scale,
            attn_softcap,
            final_softcap,
            embed_scale: arch.embed_scale_sqrt_d.then(|| (d_model as f32).sqrt()),
            layers,
        })
    }

    /// Width of all query heads together.
    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim
    }

    /// Width of all key (or value) heads together.
    pub fn kv_dim(&self) -> usize {
        self.n_head_kv * self.head_dim
    }
}

/// Typed access to one file's architecture keys.
struct Meta<'a, 'g> {
    gguf: &'a Gguf<'g>,
}

impl Meta<'_, '_> {
    fn key(&self, k: ArchKey) -> Result<String> {
        Ok(self.gguf.arch_key(k)?)
    }

    fn has(&self, k: ArchKey) -> bool {
        self.gguf
            .arch_key(k)
            .is_ok_and(|key| self.gguf.get(&key).is_some())
    }

    fn u(&self, k: ArchKey) -> Result<usize> {
        Ok(self.gguf.get_u32(&self.key(k)?)? as usize)
    }

    fn u_or(&self, k: ArchKey, default: usize) -> Result<usize> {
        if self.has(k) { self.u(k) } else { Ok(default) }
    }

    fn f(&self, k: ArchKey) -> Result<f32> {
        Ok(self.gguf.get_f32(&self.key(k)?)?)
    }

    fn f_or(&self, k: ArchKey, default: f32) -> Result<f32> {
        if self.has(k) { self.f(k) } else { Ok(default) }
    }

    /// A finite positive f32, `default` when absent.
    fn positive(&self, k: ArchKey, default: f32) -> Result<f32> {
        let v = self.f_or(k, default)?;
        if v.is_finite() && v > 0.0 {
            Ok(v)
        } else {
            Err(self.invalid(k, format!("{v} is not a positive number")))
        }
    }

    fn invalid(&self, k: ArchKey, reason: String) -> TransformerError {
        TransformerError::InvalidConfig {
            key: self.key(k).unwrap_or_else(|_| k.suffix().to_owned()),
            reason,
        }
    }

    /// Which layers slide: `attention.sliding_window_pattern` as a per-layer array of bools or as
    /// a period (all but the last layer of every `period` slide), else `period`.
    fn swa_pattern(&self, n_layer: usize, period: usize) -> Result<Vec<bool>> {
        let k = ArchKey::SlidingWindowPattern;
        let key = self.key(k)?;
        let period = match self.gguf.get(&key) {
            None => period,
            Some(v) => {
                if let Some(flags) = v.as_array().and_then(|a| a.as_bools()) {
                    if flags.len() != n_layer {
                        return Err(self
                            .invalid(k, format!("{} entries for {n_layer} layers", flags.len())));
                    }
                    return Ok(flags.to_vec());
                }
                v.as_u32().map(|p| p as usize).ok_or_else(|| {
                    self.invalid(k, "neither a layer count nor an array of bools".into())
                })?
            }
        };
        Ok((0..n_layer)
            .map(|il| period == 0 || il % period < period - 1)
            .collect())
    }
}

/// The file's RoPE scaling, as llama.cpp reads it.
struct RopeScaling {
    freq_scale: f32,
    yarn: bool,
    mscale: f32,
}

/// YaRN's default ramp bounds (in rotations over the original context).
const YARN_BETA_FAST: f32 = 32.0;
const YARN_BETA_SLOW: f32 = 1.0;

impl RopeScaling {
    fn read(m: &Meta<'_, '_>) -> Result<Self> {
        let ty_key = ArchKey::RopeScalingType;
        let ty = if m.has(ty_key) {
            let key = m.key(ty_key)?;
            Some(m.gguf.get_str(&key)?)
        } else {
            None
        };
        let factor = if m.has(ArchKey::RopeScalingFactor) {
            m.positive(ArchKey::RopeScalingFactor, 1.0)?
        } else {
            1.0
        };
        let attn_factor = m.positive(ArchKey::RopeScalingAttnFactor, 1.0)?;
        // An absent type means linear with the given factor (1 when absent too); `llama3` and
        // `longrope` scale through the frequency-factor tensors alone.
        let (freq_scale, yarn) = match ty {
            None | Some("linear") => (1.0 / factor, false),
            Some("none" | "llama3" | "longrope") => (1.0, false),
            Some("yarn") => (1.0 / factor, true),
            Some(other) => {
                return Err(m.invalid(
                    ty_key,
                    format!(
                        "RoPE scaling {other:?} is not supported (none, linear, yarn, llama3, longrope)"
                    ),
                ));
            }
        };
        let mscale = if yarn {
            // YaRN's magnitude correction, 1 + 0.1·ln(factor) for factors above 1.
            let f = 1.0 / freq_scale;
            let correction = if f <= 1.0 { 1.0 } else { 0.1 * f.ln() + 1.0 };
            correction * attn_factor
        } else {
            attn_factor
        };
        Ok(Self {
            freq_scale,
            yarn,
            mscale,
        })
    }

    fn rope(&self, base: f32, n_rot: usize, style: RopeStyle, n_ctx_orig: usize) -> Rope {
        let corr_dims = if self.yarn {
            yarn_corr_dims(n_rot, n_ctx_orig, base)
        } else {
            [0.0, 0.0]
        };
        Rope {
            base,
            freq_scale: self.freq_scale,
            n_rot,
            style,
            ext_factor: if self.yarn { 1.0 } else { 0.0 },
            corr_dims,
            mscale: self.mscale,
        }
    }
}

/// The dimension (of `n_rot`) whose pair turns `rotations` times over `n_ctx_orig` positions.
fn yarn_corr_dim(n_rot: usize, n_ctx_orig: usize, rotations: f32, base: f32) -> f32 {
    n_rot as f32 * (n_ctx_orig as f32 / (rotations * 2.0 * std::f32::consts::PI)).ln()
        / (2.0 * base.ln())
}

/// YaRN's ramp: from the pair that turns `YARN_BETA_FAST` times over the original context
/// (rounded down) to the one that turns `YARN_BETA_SLOW` times (rounded up).
fn yarn_corr_dims(n_rot: usize, n_ctx_orig: usize, base: f32) -> [f32; 2] {
    let start = yarn_corr_dim(n_rot, n_ctx_orig, YARN_BETA_FAST, base).floor();
    let end = yarn_corr_dim(n_rot, n_ctx_orig, YARN_BETA_SLOW, base).ceil();
    [start.max(0.0), end.min(n_rot as f32 - 1.0)]
}

fn read_moe(m: &Meta<'_, '_>, arch: &ArchSpec, ffn_dim: usize) -> Result<Option<MoeConfig>> {
    let n_expert = match arch.experts {
        Experts::No => return Ok(None),
        Experts::WhenPresent => m.u_or(ArchKey::ExpertCount, 0)?,
        Experts::Always => m.u(ArchKey::ExpertCount)?,
    };
    if n_expert == 0 {
        return match arch.experts {
            Experts::Always => Err(m.invalid(ArchKey::ExpertCount, "must be positive".into())),
            _ => Ok(None),
        };
    }
    let n_used = m.u(ArchKey::ExpertUsedCount)?;
    if n_expert > MAX_EXPERTS {
        return Err(m.invalid(
            ArchKey::ExpertCount,
            format!("{n_expert} experts, at most {MAX_EXPERTS} are supported"),
        ));
    }
    if n_used == 0 || n_used > n_expert {
        return Err(m.invalid(
            ArchKey::ExpertUsedCount,
            format!("{n_used} experts used of {n_expert}"),
        ));
    }
    // Mixtral's experts are `feed_forward_length` wide; families that always have experts give
    // their width separately.
    let ffn_dim = match arch.experts {
        Experts::Always => m.u(ArchKey::ExpertFeedForwardLength)?,
        _ => m.u_or(ArchKey::ExpertFeedForwardLength, ffn_dim)?,
    };
    if ffn_dim == 0 {
        return Err(m.invalid(ArchKey::ExpertFeedForwardLength, "must be positive".into()));
    }
    let scale = m.f_or(ArchKey::ExpertWeightsScale, 0.0)?;
    Ok(Some(MoeConfig {
        n_expert,
        n_used,
        ffn_dim,
        norm_weights: true,
        weights_scale: if scale == 0.0 { 1.0 } else { scale },
    }))
}
