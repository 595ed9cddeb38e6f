//! Hyperparameters of each supported architecture, read from GGUF metadata.

use ferrolm_gguf::Gguf;
use ferrolm_gguf::keys::ArchKey;

use crate::error::{Result, TransformerError};
use crate::names::TensorName;

/// The architectures this crate runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Architecture {
    /// Llama family: pre-norm blocks, SwiGLU, rotary embedding on adjacent pairs, GQA
    /// (Llama 2/3, Mistral, SmolLM2, ...).
    Llama,
    /// Gemma 3: QK-norm, norms before and after attention and FFN, GELU-tanh gated FFN,
    /// embeddings scaled by √d, sliding-window attention on five of every six layers.
    Gemma3,
}

/// `general.architecture` values accepted, with what each maps to.
const ARCH_NAMES: &[(&str, Architecture)] = &[
    ("llama", Architecture::Llama),
    ("mistral", Architecture::Llama),
    ("gemma3", Architecture::Gemma3),
];

/// Widest attention head supported.
pub const MAX_HEAD_DIM: usize = 512;

/// Gemma 3 fixes these in its reference implementation rather than in metadata.
const GEMMA3_SWA_PERIOD: usize = 6;
const GEMMA3_LOCAL_ROPE_BASE: f32 = 10_000.0;

impl Architecture {
    /// The architecture named by `general.architecture`.
    pub fn from_name(name: &str) -> Result<Self> {
        ARCH_NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|&(_, a)| a)
            .ok_or_else(|| TransformerError::UnsupportedArchitecture {
                arch: name.to_owned(),
                supported: ARCH_NAMES
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

/// How rotary embedding pairs up the dimensions of a head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    /// Rotate adjacent pairs `(2i, 2i+1)` (llama.cpp's "normal" mode; GGUF converters permute
    /// Llama's Q/K weights for it).
    Adjacent,
    /// Rotate `(i, i + n_rot/2)` (GPT-NeoX style, used by Gemma).
    Halves,
}

/// Rotary embedding parameters of one layer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rope {
    /// Frequency base θ: dimension pair `i` turns by `pos · θ^(-2i/n_rot)`.
    pub base: f32,
    /// Position multiplier (1 without linear RoPE scaling).
    pub freq_scale: f32,
    /// Leading dimensions of each head that are rotated.
    pub n_rot: usize,
    /// Pairing of dimensions.
    pub style: RopeStyle,
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

/// Everything the forward pass needs to know about a model's shape.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    /// Architecture family.
    pub arch: Architecture,
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
    /// Feed-forward hidden width.
    pub ffn_dim: usize,
    /// Vocabulary size (rows of the embedding table).
    pub vocab: usize,
    /// Context length the model was trained with.
    pub n_ctx_train: usize,
    /// RMSNorm epsilon.
    pub rms_eps: f32,
    /// Multiplier on the scaled dot products (usually `1/√head_dim`).
    pub attn_scale: f32,
    /// Multiplier on embeddings after lookup (`√d_model` for Gemma), if any.
    pub embed_scale: Option<f32>,
    /// One entry per layer.
    pub layers: Vec<LayerConfig>,
}

impl ModelConfig {
    /// Reads the configuration of the model in `gguf`.
    pub fn from_gguf(gguf: &Gguf<'_>) -> Result<Self> {
        let arch_name = gguf.architecture()?;
        let arch = Architecture::from_name(arch_name)?;
        let u = |k: ArchKey| -> Result<usize> { Ok(gguf.get_u32(&gguf.arch_key(k)?)? as usize) };
        let f = |k: ArchKey| -> Result<f32> { Ok(gguf.get_f32(&gguf.arch_key(k)?)?) };
        let has = |k: ArchKey| gguf.arch_key(k).is_ok_and(|key| gguf.get(&key).is_some());

        let n_layer = u(ArchKey::BlockCount)?;
        let d_model = u(ArchKey::EmbeddingLength)?;
        let n_head = u(ArchKey::HeadCount)?;
        let n_head_kv = if has(ArchKey::HeadCountKv) {
            u(ArchKey::HeadCountKv)?
        } else {
            n_head
        };
        if n_head == 0 || n_head_kv == 0 || n_head % n_head_kv != 0 {
            return Err(invalid(
                &gguf.arch_key(ArchKey::HeadCountKv)?,
                format!("{n_head} query heads cannot be shared by {n_head_kv} key/value heads"),
            ));
        }
        // Key and value widths default to d_model / n_head by the format's definition.
        let head_dim = if has(ArchKey::KeyLength) {
            u(ArchKey::KeyLength)?
        } else {
            d_model / n_head
        };
        let head_dim_v = if has(ArchKey::ValueLength) {
            u(ArchKey::ValueLength)?
        } else {
            d_model / n_head
        };
        let ffn_dim = u(ArchKey::FeedForwardLength)?;
        let n_ctx_train = u(ArchKey::ContextLength)?;
        let rms_eps = f(ArchKey::RmsEps)?;
        let base = f(ArchKey::RopeFreqBase)?;
        let n_rot = if has(ArchKey::RopeDimensionCount) {
            u(ArchKey::RopeDimensionCount)?
        } else {
            head_dim
        };
        let freq_scale = rope_freq_scale(gguf)?;

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
                return Err(invalid(&gguf.arch_key(key)?, "must be positive".into()));
            }
        }
        if head_dim > MAX_HEAD_DIM {
            return Err(invalid(
                &gguf.arch_key(ArchKey::KeyLength)?,
                format!("heads of {head_dim} are wider than the {MAX_HEAD_DIM} supported"),
            ));
        }
        if n_rot > head_dim || n_rot % 2 != 0 {
            return Err(invalid(
                &gguf.arch_key(ArchKey::RopeDimensionCount)?,
                format!(
                    "{n_rot} rotated dimensions do not fit an even part of a head of {head_dim}"
                ),
            ));
        }
        if head_dim_v != head_dim {
            return Err(invalid(
                &gguf.arch_key(ArchKey::ValueLength)?,
                format!("value heads of {head_dim_v} differ from key heads of {head_dim}"),
            ));
        }

        let global = Rope {
            base,
            freq_scale,
            n_rot,
            style: RopeStyle::Adjacent,
        };
        let (layers, embed_scale) = match arch {
            Architecture::Llama => (
                vec![
                    LayerConfig {
                        window: None,
                        rope: global
                    };
                    n_layer
                ],
                None,
            ),
            Architecture::Gemma3 => {
                let window = u(ArchKey::SlidingWindow)?;
                if window == 0 {
                    return Err(invalid(
                        &gguf.arch_key(ArchKey::SlidingWindow)?,
                        "must be positive".into(),
                    ));
                }
                let local_base = if has(ArchKey::RopeFreqBaseSwa) {
                    f(ArchKey::RopeFreqBaseSwa)?
                } else {
                    GEMMA3_LOCAL_ROPE_BASE
                };
                let global = Rope {
                    style: RopeStyle::Halves,
                    ..global
                };
                let local = Rope {
                    base: local_base,
                    ..global
                };
                let layers = (0..n_layer)
                    .map(|il| {
                        if (il + 1) % GEMMA3_SWA_PERIOD == 0 {
                            LayerConfig {
                                window: None,
                                rope: global,
                            }
                        } else {
                            LayerConfig {
                                window: Some(window),
                                rope: local,
                            }
                        }
                    })
                    .collect();
                (layers, Some((d_model as f32).sqrt()))
            }
        };
        let attn_scale = if has(ArchKey::AttentionScale) {
            f(ArchKey::AttentionScale)?
        } else {
            1.0 / (head_dim as f32).sqrt()
        };

        Ok(Self {
            arch,
            n_layer,
            d_model,
            n_head,
            n_head_kv,
            head_dim,
            head_dim_v,
            ffn_dim,
            vocab,
            n_ctx_train,
            rms_eps,
            attn_scale,
            embed_scale,
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

fn invalid(key: &str, reason: String) -> TransformerError {
    TransformerError::InvalidConfig {
        key: key.to_owned(),
        reason,
    }
}

/// Linear RoPE scaling is a plain position multiplier; other kinds change the math and are refused.
fn rope_freq_scale(gguf: &Gguf<'_>) -> Result<f32> {
    let ty_key = gguf.arch_key(ArchKey::RopeScalingType)?;
    let Some(ty) = gguf.get(&ty_key) else {
        return Ok(1.0);
    };
    match ty.as_str() {
        Some("none") => Ok(1.0),
        Some("linear") => {
            let key = gguf.arch_key(ArchKey::RopeScalingFactor)?;
            let factor = gguf.get_f32(&key)?;
            if factor.is_finite() && factor > 0.0 {
                Ok(1.0 / factor)
            } else {
                Err(invalid(&key, format!("{factor} is not a positive factor")))
            }
        }
        other => Err(invalid(
            &ty_key,
            format!("RoPE scaling {other:?} is not supported (none, linear)"),
        )),
    }
}
