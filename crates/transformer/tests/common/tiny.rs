//! Tiny random-weight GGUF models of several families, laid out exactly as llama.cpp reads
//! them, so one forward pass can be checked against llama.cpp family by family without
//! downloading a real model of each.
//!
//! A [`TinySpec`] (variant, seed, weight type, width) decides every byte of the file apart
//! from the tokenizer, which is copied from a real model when one is given (else the file
//! says `tokenizer.ggml.model = "no_vocab"` and callers feed token ids). The random values
//! come from exactly rounded arithmetic only (no `ln`, `cos`, `powf`), so every machine
//! writes the same F32 and F16 files (quantized ones as far as `ferrolm_quant`'s quantizers
//! are deterministic), and tests regenerate a model instead of keeping it in the repository.
//!
//! ```ignore
//! let spec = TinySpec { weight_type: GgmlType::Q4K, width: 4, ..TinySpec::new(Variant::Qwen3) };
//! tiny::write(&spec, None, dir.join("qwen3.gguf"))?; // no_vocab, 512 tokens
//! ```
use std::error::Error;
use std::path::Path;

use ferrolm_gguf::keys::{ArchKey, general, tokenizer};
use ferrolm_gguf::{GgmlType, Gguf, GgufWriter, OwnedMetadataValue};

pub type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// The model families (and settings within a family) the tiny models cover.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Variant {
    /// `llama` with a global `rope_freqs.weight` and a separate output matrix.
    Llama3,
    /// `llama` with `attention.sliding_window` present (llama.cpp ignores it) and tied output.
    Mistral,
    /// `llama` with 4 experts, 2 used per token.
    Mixtral,
    /// `qwen2`: q/k/v biases, tied output, YaRN scaling by 4 from 16 positions.
    Qwen2,
    /// `qwen3`: per-head q/k RMS norms, heads of 32 (query width 128 over d_model 64).
    Qwen3,
    /// `qwen3moe`: qwen3 attention with 4 experts of width 48, 2 used.
    Qwen3Moe,
    /// `phi3`: fused qkv and gate/up, long/short rope factors; llama.cpp's n_ctx 1024 is
    /// below the original context (4096), so the short factors apply.
    Phi3,
    /// `phi3` with an original context of 512, so at n_ctx 1024 the long factors apply.
    Phi3Long,
    /// `gemma2`: post-norms, attention and final soft-capping, sliding window 4 on even
    /// layers, GELU, embeddings scaled by sqrt(d_model).
    Gemma2,
}

impl Variant {
    /// Every variant, in fixture order.
    pub const ALL: [Variant; 9] = [
        Variant::Llama3,
        Variant::Mistral,
        Variant::Mixtral,
        Variant::Qwen2,
        Variant::Qwen3,
        Variant::Qwen3Moe,
        Variant::Phi3,
        Variant::Phi3Long,
        Variant::Gemma2,
    ];

    /// The variant's name, as in fixture file names.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Llama3 => "llama3",
            Variant::Mistral => "mistral",
            Variant::Mixtral => "mixtral",
            Variant::Qwen2 => "qwen2",
            Variant::Qwen3 => "qwen3",
            Variant::Qwen3Moe => "qwen3moe",
            Variant::Phi3 => "phi3",
            Variant::Phi3Long => "phi3-long",
            Variant::Gemma2 => "gemma2",
        }
    }

    pub fn from_name(name: &str) -> Option<Variant> {
        Variant::ALL.into_iter().find(|v| v.name() == name)
    }

    /// The seed the fixtures were made with: the first of `0x7153_0000 + 256 * index + k`
    /// (k = 0, 1, ...) whose greedy continuations in llama.cpp have no near tie (top-2
    /// margin below 0.02) before step 16 of either prompt, at least 20 distinct tokens
    /// among the 24 and entropies within 0.5% of what llama.cpp gives with an f32 KV
    /// cache (fixtures/families/README.md).
    pub fn seed(self) -> u64 {
        let (index, k) = match self {
            Variant::Llama3 => (0, 6),
            Variant::Mistral => (1, 4),
            Variant::Mixtral => (2, 3),
            Variant::Qwen2 => (3, 2),
            Variant::Qwen3 => (4, 1),
            Variant::Qwen3Moe => (5, 5),
            Variant::Phi3 => (6, 1),
            Variant::Phi3Long => (7, 0),
            Variant::Gemma2 => (8, 1),
        };
        0x7153_0000 + 256 * index + k
    }
}

/// Everything that decides a tiny model's bytes, apart from the tokenizer.
#[derive(Clone, Debug, PartialEq)]
pub struct TinySpec {
    pub variant: Variant,
    pub seed: u64,
    /// Type of the weight matrices (embeddings and output included). Norm weights, biases,
    /// rope factors and the expert router are always F32. A matrix whose rows are not a
    /// whole number of this type's blocks is stored as Q8_0 (F16 if not even that), as
    /// llama.cpp's quantizer falls back.
    pub weight_type: GgmlType,
    /// Multiplies d_model, head size and feed-forward widths: 1 gives d_model 64; 4 gives
    /// rows of 256 so the K-quants apply to most matrices.
    pub width: usize,
    /// Vocabulary size when no tokenizer is given; with one, its token count.
    pub vocab: usize,
}

impl TinySpec {
    /// `variant` with its fixture seed, F32 weights, width 1 and 512 tokens.
    pub fn new(variant: Variant) -> TinySpec {
        TinySpec {
            variant,
            seed: variant.seed(),
            weight_type: GgmlType::F32,
            width: 1,
            vocab: 512,
        }
    }
}

/// Writes the model of `spec` to `path`, with the `tokenizer.*` metadata of `tokenizer_source`.
pub fn write(
    spec: &TinySpec,
    tokenizer_source: Option<&Gguf<'_>>,
    path: impl AsRef<Path>,
) -> Result<()> {
    build(spec, tokenizer_source)?.write_file(path)?;
    Ok(())
}

/// How the query, key and value projections are stored.
#[derive(Clone, Copy, PartialEq)]
enum Qkv {
    Separate,
    SeparateWithBias,
    /// One `attn_qkv` matrix: query rows, then key rows, then value rows.
    Fused,
}

/// Where rope frequency factors come from.
#[derive(Clone, Copy, PartialEq)]
enum RopeFactors {
    None,
    /// `rope_freqs.weight`, llama 3 style.
    Freqs,
    /// `rope_factors_long.weight` and `rope_factors_short.weight`, Phi-3 style.
    LongShort,
}

/// The feed-forward tensors.
#[derive(Clone, Copy)]
enum Ffn {
    /// `ffn_gate`, `ffn_up`, `ffn_down`.
    GateUp,
    /// Gate and up in one `ffn_up` of twice the width (gate rows first), `ffn_down`.
    FusedGateUp,
    /// A router `ffn_gate_inp` and `ffn_{gate,up,down}_exps`.
    Experts(Experts),
}

/// Which head-size key the file states; llama.cpp derives the others.
#[derive(Clone, Copy, PartialEq)]
enum StatedHeadSize {
    None,
    /// `rope.dimension_count`.
    RopeDims,
    /// `attention.key_length` and `attention.value_length`.
    KeyValueLength,
}

#[derive(Clone, Copy)]
struct Experts {
    count: usize,
    used: usize,
    /// `expert_feed_forward_length` at width 1; `None`: the experts are `ffn` wide.
    ffn: Option<usize>,
}

/// Standard deviations and gains of the random weights; a matrix gets N(0, gain²/fan_in).
#[derive(Clone, Copy)]
struct Gains {
    /// Standard deviation of each token embedding entry.
    embedding: f64,
    qk: f64,
    v: f64,
    o: f64,
    ffn_in: f64,
    ffn_out: f64,
    /// Standard deviation of the logits, set through the output norm's weights.
    logits: f64,
    router: f64,
    /// Centre of the q/k norm weights (the other norms are centred on 1).
    qk_norm: f64,
    /// Centre of Gemma 2's post-attention and post-feed-forward norm weights.
    post_norm: f64,
    /// Standard deviation of the q and k biases (v gets half).
    bias: f64,
}

/// One family's shape at width 1, which tensors it has, and how its weights are scaled.
struct Family {
    arch: &'static str,
    layers: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    ffn: usize,
    ffn_tensors: Ffn,
    qkv: Qkv,
    /// `attn_q_norm`/`attn_k_norm` per head.
    qk_norm: bool,
    /// `post_attention_norm`/`post_ffw_norm`.
    post_norms: bool,
    /// No `output.weight`: the token embeddings serve as the output matrix.
    tied: bool,
    rope_factors: RopeFactors,
    /// As real files of the family do.
    stated_head_size: StatedHeadSize,
    context_length: u32,
    rms_eps: f32,
    gains: Gains,
}

const GAINS: Gains = Gains {
    embedding: 1.0,
    qk: 1.5,
    v: 1.0,
    o: 1.5,
    ffn_in: 1.5,
    ffn_out: 1.5,
    logits: 4.0,
    router: 3.0,
    qk_norm: 1.5,
    post_norm: 1.0,
    bias: 1.0,
};

fn family(variant: Variant) -> Family {
    let llama = Family {
        arch: "llama",
        layers: 3,
        heads: 4,
        kv_heads: 2,
        head_dim: 16,
        ffn: 128,
        ffn_tensors: Ffn::GateUp,
        qkv: Qkv::Separate,
        qk_norm: false,
        post_norms: false,
        tied: false,
        rope_factors: RopeFactors::None,
        stated_head_size: StatedHeadSize::RopeDims,
        context_length: 2048,
        rms_eps: 1e-5,
        gains: GAINS,
    };
    let tied_gains = Gains {
        embedding: 0.15,
        ..GAINS
    };
    match variant {
        Variant::Llama3 => Family {
            rope_factors: RopeFactors::Freqs,
            ..llama
        },
        Variant::Mistral => Family {
            tied: true,
            gains: tied_gains,
            ..llama
        },
        Variant::Mixtral => Family {
            ffn_tensors: Ffn::Experts(Experts {
                count: 4,
                used: 2,
                ffn: None,
            }),
            ..llama
        },
        Variant::Qwen2 => Family {
            arch: "qwen2",
            qkv: Qkv::SeparateWithBias,
            tied: true,
            stated_head_size: StatedHeadSize::None,
            context_length: 64,
            rms_eps: 1e-6,
            gains: tied_gains,
            ..llama
        },
        Variant::Qwen3 | Variant::Qwen3Moe => Family {
            arch: if variant == Variant::Qwen3 {
                "qwen3"
            } else {
                "qwen3moe"
            },
            head_dim: 32,
            ffn_tensors: if variant == Variant::Qwen3 {
                Ffn::GateUp
            } else {
                Ffn::Experts(Experts {
                    count: 4,
                    used: 2,
                    ffn: Some(48),
                })
            },
            qk_norm: true,
            stated_head_size: StatedHeadSize::KeyValueLength,
            context_length: 4096,
            rms_eps: 1e-6,
            ..llama
        },
        Variant::Phi3 | Variant::Phi3Long => Family {
            arch: "phi3",
            qkv: Qkv::Fused,
            ffn_tensors: Ffn::FusedGateUp,
            rope_factors: RopeFactors::LongShort,
            context_length: if variant == Variant::Phi3 {
                131_072
            } else {
                8192
            },
            ..llama
        },
        Variant::Gemma2 => Family {
            arch: "gemma2",
            layers: 4,
            post_norms: true,
            tied: true,
            stated_head_size: StatedHeadSize::KeyValueLength,
            context_length: 8192,
            rms_eps: 1e-6,
            gains: Gains {
                embedding: 0.05,
                post_norm: 4.0,
                logits: 5.5,
                ..GAINS
            },
            ..llama
        },
    }
}

/// The metadata a variant adds beyond the shapes: scaling, windows, soft-caps.
fn variant_metadata(variant: Variant, arch: &str, w: &mut GgufWriter<'_>) {
    let key = |k: ArchKey| k.key(arch);
    match variant {
        Variant::Mistral => w.add_metadata(&key(ArchKey::SlidingWindow), 4u32),
        Variant::Qwen2 => {
            w.add_metadata(&key(ArchKey::RopeScalingType), "yarn");
            w.add_metadata(&key(ArchKey::RopeScalingFactor), 4.0f32);
            w.add_metadata(&key(ArchKey::RopeScalingOrigCtxLen), 16u32);
        }
        Variant::Phi3 | Variant::Phi3Long => {
            w.add_metadata(&key(ArchKey::RopeScalingAttnFactor), 1.19f32);
            let original = if variant == Variant::Phi3 {
                4096u32
            } else {
                512
            };
            w.add_metadata(&key(ArchKey::RopeScalingOrigCtxLen), original);
        }
        Variant::Gemma2 => {
            w.add_metadata(&key(ArchKey::AttnLogitSoftcapping), 5.0f32);
            w.add_metadata(&key(ArchKey::FinalLogitSoftcapping), 30.0f32);
            w.add_metadata(&key(ArchKey::SlidingWindow), 4u32);
        }
        Variant::Llama3 | Variant::Mixtral | Variant::Qwen3 | Variant::Qwen3Moe => {}
    }
}

/// llama.cpp's `llama_ftype` for files mostly of type `ty`.
fn file_type(ty: GgmlType) -> Option<u32> {
    Some(match ty {
        GgmlType::F32 => 0,
        GgmlType::F16 => 1,
        GgmlType::Q4_0 => 2,
        GgmlType::Q4_1 => 3,
        GgmlType::Q8_0 => 7,
        GgmlType::Q5_0 => 8,
        GgmlType::Q5_1 => 9,
        GgmlType::Q2K => 10,
        GgmlType::Q3K => 12,
        GgmlType::Q4K => 15,
        GgmlType::Q5K => 17,
        GgmlType::Q6K => 18,
        _ => return None,
    })
}

/// The model of `spec` as a writer, ready to write out.
pub fn build(spec: &TinySpec, tokenizer_source: Option<&Gguf<'_>>) -> Result<GgufWriter<'static>> {
    if spec.width == 0 {
        return Err("width must be at least 1".into());
    }
    let f = family(spec.variant);
    let arch = f.arch;
    let x = spec.width;
    let d = 64 * x;
    let head_dim = f.head_dim * x;
    let (q_width, kv_width) = (f.heads * head_dim, f.kv_heads * head_dim);
    let ffn = f.ffn * x;
    let g = f.gains;

    let mut w = GgufWriter::new();
    w.add_metadata(general::ARCHITECTURE, arch);
    // Not the family's name: llama.cpp changes token attributes for models named "phi3",
    // and needs tokens that SmolLM2's vocabulary lacks for it.
    w.add_metadata(general::NAME, "ferrolm tiny random-weight model");
    if let Some(ft) = file_type(spec.weight_type) {
        w.add_metadata(general::FILE_TYPE, ft);
    }
    if spec.weight_type.is_quantized() {
        w.add_metadata(general::QUANTIZATION_VERSION, 2u32);
    }
    let key = |k: ArchKey| k.key(arch);
    w.add_metadata(&key(ArchKey::ContextLength), f.context_length);
    w.add_metadata(&key(ArchKey::EmbeddingLength), d as u32);
    w.add_metadata(&key(ArchKey::BlockCount), f.layers as u32);
    w.add_metadata(&key(ArchKey::FeedForwardLength), ffn as u32);
    w.add_metadata(&key(ArchKey::HeadCount), f.heads as u32);
    w.add_metadata(&key(ArchKey::HeadCountKv), f.kv_heads as u32);
    w.add_metadata(&key(ArchKey::RmsEps), f.rms_eps);
    w.add_metadata(&key(ArchKey::RopeFreqBase), 10_000.0f32);
    match f.stated_head_size {
        StatedHeadSize::None => {}
        StatedHeadSize::RopeDims => {
            w.add_metadata(&key(ArchKey::RopeDimensionCount), head_dim as u32);
        }
        StatedHeadSize::KeyValueLength => {
            w.add_metadata(&key(ArchKey::KeyLength), head_dim as u32);
            w.add_metadata(&key(ArchKey::ValueLength), head_dim as u32);
        }
    }
    if let Ffn::Experts(e) = f.ffn_tensors {
        w.add_metadata(&key(ArchKey::ExpertCount), e.count as u32);
        w.add_metadata(&key(ArchKey::ExpertUsedCount), e.used as u32);
        if let Some(width) = e.ffn {
            w.add_metadata(&key(ArchKey::ExpertFeedForwardLength), (width * x) as u32);
        }
    }
    variant_metadata(spec.variant, arch, &mut w);

    let vocab = if let Some(src) = tokenizer_source {
        for (k, value) in src.metadata() {
            if k.starts_with("tokenizer.") {
                w.add_metadata(k, OwnedMetadataValue::from(value));
            }
        }
        src.get_array(tokenizer::TOKENS)?.len()
    } else {
        // llama.cpp sizes a vocabulary without tokens from this key.
        w.add_metadata(tokenizer::MODEL, "no_vocab");
        w.add_metadata(&key(ArchKey::VocabSize), spec.vocab as u32);
        spec.vocab
    };

    let mut t = Tensors {
        w,
        seed: spec.seed,
        ty: spec.weight_type,
    };
    t.matrix(
        "token_embd.weight",
        d,
        vocab,
        1,
        g.embedding * (d as f64).sqrt(),
    )?;
    let n_factors = head_dim / 2;
    match f.rope_factors {
        RopeFactors::None => {}
        RopeFactors::Freqs => t.factors("rope_freqs.weight", n_factors, 1.0, 8.0)?,
        RopeFactors::LongShort => {
            t.factors("rope_factors_long.weight", n_factors, 1.0, 8.0)?;
            t.factors("rope_factors_short.weight", n_factors, 1.0, 1.6)?;
        }
    }
    for i in 0..f.layers {
        let blk = |name: &str| format!("blk.{i}.{name}");
        t.norm(&blk("attn_norm.weight"), d, 1.0)?;
        if f.qkv == Qkv::Fused {
            t.matrix(&blk("attn_qkv.weight"), d, q_width + 2 * kv_width, 1, g.qk)?;
        } else {
            t.matrix(&blk("attn_q.weight"), d, q_width, 1, g.qk)?;
            t.matrix(&blk("attn_k.weight"), d, kv_width, 1, g.qk)?;
            t.matrix(&blk("attn_v.weight"), d, kv_width, 1, g.v)?;
        }
        if f.qkv == Qkv::SeparateWithBias {
            t.vector(&blk("attn_q.bias"), q_width, g.bias)?;
            t.vector(&blk("attn_k.bias"), kv_width, g.bias)?;
            t.vector(&blk("attn_v.bias"), kv_width, g.bias / 2.0)?;
        }
        if f.qk_norm {
            t.norm(&blk("attn_q_norm.weight"), head_dim, g.qk_norm)?;
            t.norm(&blk("attn_k_norm.weight"), head_dim, g.qk_norm)?;
        }
        t.matrix(&blk("attn_output.weight"), q_width, d, 1, g.o)?;
        if f.post_norms {
            t.norm(&blk("post_attention_norm.weight"), d, g.post_norm)?;
        }
        t.norm(&blk("ffn_norm.weight"), d, 1.0)?;
        match f.ffn_tensors {
            Ffn::Experts(e) => {
                let width = e.ffn.map_or(ffn, |w| w * x);
                t.router(&blk("ffn_gate_inp.weight"), d, e.count, g.router)?;
                t.matrix(&blk("ffn_gate_exps.weight"), d, width, e.count, g.ffn_in)?;
                t.matrix(&blk("ffn_up_exps.weight"), d, width, e.count, g.ffn_in)?;
                t.matrix(&blk("ffn_down_exps.weight"), width, d, e.count, g.ffn_out)?;
            }
            Ffn::FusedGateUp => {
                t.matrix(&blk("ffn_up.weight"), d, 2 * ffn, 1, g.ffn_in)?;
                t.matrix(&blk("ffn_down.weight"), ffn, d, 1, g.ffn_out)?;
            }
            Ffn::GateUp => {
                t.matrix(&blk("ffn_gate.weight"), d, ffn, 1, g.ffn_in)?;
                t.matrix(&blk("ffn_up.weight"), d, ffn, 1, g.ffn_in)?;
                t.matrix(&blk("ffn_down.weight"), ffn, d, 1, g.ffn_out)?;
            }
        }
        if f.post_norms {
            t.norm(&blk("post_ffw_norm.weight"), d, g.post_norm)?;
        }
    }
    // The output matrix (embeddings or not) maps unit-rms vectors to unit-variance logits,
    // so the output norm's weights set the logits' spread.
    let unit_output = if f.tied {
        g.embedding * (d as f64).sqrt()
    } else {
        1.0
    };
    t.norm("output_norm.weight", d, g.logits / unit_output)?;
    if !f.tied {
        t.matrix("output.weight", d, vocab, 1, 1.0)?;
    }
    Ok(t.w)
}

/// Adds tensors of seeded random values; each tensor's values depend only on the seed and
/// its name, so adding a tensor leaves the others unchanged.
struct Tensors {
    w: GgufWriter<'static>,
    seed: u64,
    ty: GgmlType,
}

impl Tensors {
    fn rng(&self, name: &str) -> SplitMix64 {
        SplitMix64(self.seed ^ fnv1a(name.as_bytes()))
    }

    /// `count` matrices of `rows` rows of `cols` (ggml dims `[cols, rows, count]`), entries
    /// N(0, gain²/cols), in the spec's weight type.
    fn matrix(
        &mut self,
        name: &str,
        cols: usize,
        rows: usize,
        count: usize,
        gain: f64,
    ) -> Result<()> {
        let mut rng = self.rng(name);
        let std = gain / (cols as f64).sqrt();
        let values: Vec<f32> = (0..cols * rows * count)
            .map(|_| (rng.normal() * std) as f32)
            .collect();
        let mut dims = vec![cols as u64, rows as u64];
        if count > 1 {
            dims.push(count as u64);
        }
        let ty = storage_type(self.ty, cols);
        let row_bytes = ferrolm_quant::row_size(ty, cols)?;
        let mut data = vec![0u8; row_bytes * rows * count];
        for (src, out) in values
            .chunks_exact(cols)
            .zip(data.chunks_exact_mut(row_bytes))
        {
            ferrolm_quant::quantize_row(ty, src, out)?;
        }
        self.w.add_tensor(name, &dims, ty, data)?;
        Ok(())
    }

    fn f32s(&mut self, name: &str, dims: &[u64], values: &[f32]) -> Result<()> {
        let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.w.add_tensor(name, dims, GgmlType::F32, data)?;
        Ok(())
    }

    /// The expert router, always F32 (as llama.cpp's converters write it).
    fn router(&mut self, name: &str, cols: usize, experts: usize, gain: f64) -> Result<()> {
        let mut rng = self.rng(name);
        let std = gain / (cols as f64).sqrt();
        let values: Vec<f32> = (0..cols * experts)
            .map(|_| (rng.normal() * std) as f32)
            .collect();
        self.f32s(name, &[cols as u64, experts as u64], &values)
    }

    /// Norm weights around `centre`, ±10% of it.
    fn norm(&mut self, name: &str, n: usize, centre: f64) -> Result<()> {
        let mut rng = self.rng(name);
        let values: Vec<f32> = (0..n)
            .map(|_| (centre * (1.0 + 0.1 * rng.normal())) as f32)
            .collect();
        self.f32s(name, &[n as u64], &values)
    }

    /// A bias of N(0, std²) entries.
    fn vector(&mut self, name: &str, n: usize, std: f64) -> Result<()> {
        let mut rng = self.rng(name);
        let values: Vec<f32> = (0..n).map(|_| (rng.normal() * std) as f32).collect();
        self.f32s(name, &[n as u64], &values)
    }

    /// Rope frequency factors rising from `low` to `high` over the rotated pairs, with a
    /// little noise so no two sets are alike.
    fn factors(&mut self, name: &str, n: usize, low: f64, high: f64) -> Result<()> {
        let mut rng = self.rng(name);
        let last = (n.max(2) - 1) as f64;
        let values: Vec<f32> = (0..n)
            .map(|i| {
                let ramp = low + (high - low) * (i as f64 / last);
                (ramp * (1.0 + 0.05 * rng.uniform())) as f32
            })
            .collect();
        self.f32s(name, &[n as u64], &values)
    }
}

/// `requested`, or the type llama.cpp's quantizer falls back to when a row is not a whole
/// number of `requested`'s blocks.
fn storage_type(requested: GgmlType, cols: usize) -> GgmlType {
    if cols.is_multiple_of(requested.block_size()) {
        requested
    } else if cols.is_multiple_of(GgmlType::Q8_0.block_size()) {
        GgmlType::Q8_0
    } else {
        GgmlType::F16
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Steele, Lea and Flood's SplitMix64 generator.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform on [0, 1), exactly: 53 random bits.
    fn uniform(&mut self) -> f64 {
        (self.next() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Approximately standard normal: the sum of four uniforms, centred and scaled to unit
    /// variance. Box-Muller would need `ln` and `cos`, whose last bits differ between
    /// math libraries; this needs only exactly rounded operations.
    fn normal(&mut self) -> f64 {
        let sum = self.uniform() + self.uniform() + self.uniform() + self.uniform();
        (sum - 2.0) * 3.0f64.sqrt()
    }
}
