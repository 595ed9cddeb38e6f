//! The metadata keys GGUF files use, so callers never spell key strings.
//!
//! Keys under `general.` and `tokenizer.` are constants; architecture-specific
//! keys (`llama.context_length`, `gemma3.attention.sliding_window`, ...) are
//! [`ArchKey`] values turned into strings for a given architecture.

/// Keys under `general.`: what the file is and how it was made.
pub mod general {
    /// Model architecture (string), e.g. `"llama"`; prefixes the architecture keys.
    pub const ARCHITECTURE: &str = "general.architecture";
    /// Version of the quantization formats used (u32).
    pub const QUANTIZATION_VERSION: &str = "general.quantization_version";
    /// Alignment of tensor data in bytes (u32); 32 when absent.
    pub const ALIGNMENT: &str = "general.alignment";
    /// Kind of file (string): `"model"`, `"adapter"`, ...
    pub const TYPE: &str = "general.type";
    /// Predominant weight type (u32, llama.cpp's `llama_ftype`).
    pub const FILE_TYPE: &str = "general.file_type";
    /// Human-readable model name.
    pub const NAME: &str = "general.name";
    /// Author of the model.
    pub const AUTHOR: &str = "general.author";
    /// Version of the model.
    pub const VERSION: &str = "general.version";
    /// Organization that made the model.
    pub const ORGANIZATION: &str = "general.organization";
    /// Fine-tune label.
    pub const FINETUNE: &str = "general.finetune";
    /// Base name of the model family.
    pub const BASENAME: &str = "general.basename";
    /// Free-text description.
    pub const DESCRIPTION: &str = "general.description";
    /// Who quantized the file.
    pub const QUANTIZED_BY: &str = "general.quantized_by";
    /// Size label, e.g. `"135M"`.
    pub const SIZE_LABEL: &str = "general.size_label";
    /// License identifier.
    pub const LICENSE: &str = "general.license";
    /// License name.
    pub const LICENSE_NAME: &str = "general.license.name";
    /// Link to the license text.
    pub const LICENSE_LINK: &str = "general.license.link";
    /// Model URL.
    pub const URL: &str = "general.url";
    /// Model DOI.
    pub const DOI: &str = "general.doi";
    /// Model UUID.
    pub const UUID: &str = "general.uuid";
    /// Source repository URL.
    pub const REPO_URL: &str = "general.repo_url";
    /// URL of the source model.
    pub const SOURCE_URL: &str = "general.source.url";
    /// Repository of the source model.
    pub const SOURCE_REPO_URL: &str = "general.source.repo_url";
    /// Number of base models (u32).
    pub const BASE_MODEL_COUNT: &str = "general.base_model.count";
    /// Number of datasets (u32).
    pub const DATASET_COUNT: &str = "general.dataset.count";
    /// Tags (array of strings).
    pub const TAGS: &str = "general.tags";
    /// Languages (array of strings).
    pub const LANGUAGES: &str = "general.languages";
    /// Recommended sampler sequence (string).
    pub const SAMPLING_SEQUENCE: &str = "general.sampling.sequence";
    /// Recommended top-k (i32).
    pub const SAMPLING_TOP_K: &str = "general.sampling.top_k";
    /// Recommended top-p (f32).
    pub const SAMPLING_TOP_P: &str = "general.sampling.top_p";
    /// Recommended min-p (f32).
    pub const SAMPLING_MIN_P: &str = "general.sampling.min_p";
    /// Recommended temperature (f32).
    pub const SAMPLING_TEMP: &str = "general.sampling.temp";
    /// Recommended repetition penalty (f32).
    pub const SAMPLING_PENALTY_REPEAT: &str = "general.sampling.penalty_repeat";
    /// Recommended repetition-penalty window (i32).
    pub const SAMPLING_PENALTY_LAST_N: &str = "general.sampling.penalty_last_n";
}

/// Keys under `tokenizer.`: the vocabulary and its rules.
pub mod tokenizer {
    /// Tokenizer family (string): `"gpt2"` (byte-level BPE), `"llama"` (SentencePiece), `"no_vocab"`, ...
    pub const MODEL: &str = "tokenizer.ggml.model";
    /// Pre-tokenizer name (string), e.g. `"smollm"`, `"default"`.
    pub const PRE: &str = "tokenizer.ggml.pre";
    /// Token texts (array of strings), indexed by token id.
    pub const TOKENS: &str = "tokenizer.ggml.tokens";
    /// Token scores (array of f32), SentencePiece vocabularies.
    pub const SCORES: &str = "tokenizer.ggml.scores";
    /// Token types (array of i32): normal, unknown, control, user-defined, unused, byte.
    pub const TOKEN_TYPE: &str = "tokenizer.ggml.token_type";
    /// Number of token types (u32), for BERT-style segment embeddings.
    pub const TOKEN_TYPE_COUNT: &str = "tokenizer.ggml.token_type_count";
    /// BPE merges (array of strings `"a b"`), in priority order.
    pub const MERGES: &str = "tokenizer.ggml.merges";
    /// Beginning-of-sequence token id (u32).
    pub const BOS_ID: &str = "tokenizer.ggml.bos_token_id";
    /// End-of-sequence token id (u32).
    pub const EOS_ID: &str = "tokenizer.ggml.eos_token_id";
    /// End-of-turn token id (u32).
    pub const EOT_ID: &str = "tokenizer.ggml.eot_token_id";
    /// End-of-message token id (u32).
    pub const EOM_ID: &str = "tokenizer.ggml.eom_token_id";
    /// Unknown token id (u32).
    pub const UNK_ID: &str = "tokenizer.ggml.unknown_token_id";
    /// Separator token id (u32); the key's spelling is the format's.
    pub const SEP_ID: &str = "tokenizer.ggml.seperator_token_id";
    /// Padding token id (u32).
    pub const PAD_ID: &str = "tokenizer.ggml.padding_token_id";
    /// Mask token id (u32).
    pub const MASK_ID: &str = "tokenizer.ggml.mask_token_id";
    /// Whether to add the BOS token (bool).
    pub const ADD_BOS: &str = "tokenizer.ggml.add_bos_token";
    /// Whether to add the EOS token (bool).
    pub const ADD_EOS: &str = "tokenizer.ggml.add_eos_token";
    /// Whether to add the separator token (bool).
    pub const ADD_SEP: &str = "tokenizer.ggml.add_sep_token";
    /// Whether SentencePiece prepends a space (bool).
    pub const ADD_SPACE_PREFIX: &str = "tokenizer.ggml.add_space_prefix";
    /// Whether SentencePiece collapses runs of whitespace (bool).
    pub const REMOVE_EXTRA_WHITESPACES: &str = "tokenizer.ggml.remove_extra_whitespaces";
    /// SentencePiece normalizer character map (array of u8).
    pub const PRECOMPILED_CHARSMAP: &str = "tokenizer.ggml.precompiled_charsmap";
    /// Fill-in-the-middle prefix token id (u32).
    pub const FIM_PRE_ID: &str = "tokenizer.ggml.fim_pre_token_id";
    /// Fill-in-the-middle suffix token id (u32).
    pub const FIM_SUF_ID: &str = "tokenizer.ggml.fim_suf_token_id";
    /// Fill-in-the-middle middle token id (u32).
    pub const FIM_MID_ID: &str = "tokenizer.ggml.fim_mid_token_id";
    /// Fill-in-the-middle padding token id (u32).
    pub const FIM_PAD_ID: &str = "tokenizer.ggml.fim_pad_token_id";
    /// Fill-in-the-middle repository token id (u32).
    pub const FIM_REP_ID: &str = "tokenizer.ggml.fim_rep_token_id";
    /// Fill-in-the-middle file separator token id (u32).
    pub const FIM_SEP_ID: &str = "tokenizer.ggml.fim_sep_token_id";
    /// A Hugging Face `tokenizer.json`, embedded verbatim (string).
    pub const HF_JSON: &str = "tokenizer.huggingface.json";
    /// RWKV world vocabulary (string).
    pub const RWKV: &str = "tokenizer.rwkv.world";
    /// The default Jinja chat template (string).
    pub const CHAT_TEMPLATE: &str = "tokenizer.chat_template";
    /// Names of further chat templates (array of strings); each is under
    /// [`chat_template_named`].
    pub const CHAT_TEMPLATES: &str = "tokenizer.chat_templates";

    /// Key of the chat template called `name`.
    pub fn chat_template_named(name: &str) -> String {
        format!("{CHAT_TEMPLATE}.{name}")
    }
}

/// Keys under `split.`: models split over several files.
pub mod split {
    /// Index of this file among the parts (u16).
    pub const NO: &str = "split.no";
    /// Number of parts (u16).
    pub const COUNT: &str = "split.count";
    /// Number of tensors over all parts (i32).
    pub const TENSORS_COUNT: &str = "split.tensors.count";
}

macro_rules! arch_keys {
    ($($(#[$doc:meta])* $variant:ident => $suffix:literal,)*) => {
        /// An architecture-specific key: the part after `{arch}.`.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ArchKey {
            $($(#[$doc])* $variant,)*
        }

        impl ArchKey {
            /// Every architecture key.
            pub const ALL: &'static [ArchKey] = &[$(ArchKey::$variant,)*];

            /// The key without its architecture prefix, e.g. `"context_length"`.
            pub fn suffix(self) -> &'static str {
                match self {
                    $(ArchKey::$variant => $suffix,)*
                }
            }
        }
    };
}

arch_keys! {
    /// Vocabulary size (u32), when the file states it.
    VocabSize => "vocab_size",
    /// Context length the model was trained for (u32).
    ContextLength => "context_length",
    /// Hidden size, `n_embd` (u32).
    EmbeddingLength => "embedding_length",
    /// Number of transformer blocks (u32).
    BlockCount => "block_count",
    /// Feed-forward hidden size (u32, or an array per layer).
    FeedForwardLength => "feed_forward_length",
    /// Feed-forward hidden size of each expert (u32).
    ExpertFeedForwardLength => "expert_feed_forward_length",
    /// Number of experts (u32).
    ExpertCount => "expert_count",
    /// Experts used per token (u32).
    ExpertUsedCount => "expert_used_count",
    /// Multiplier on the chosen experts' weights (0 or absent: none).
    ExpertWeightsScale => "expert_weights_scale",
    /// Whether the chosen experts' weights are normalized to sum to 1.
    ExpertWeightsNorm => "expert_weights_norm",
    /// Whether attention and feed-forward run in parallel (bool).
    UseParallelResidual => "use_parallel_residual",
    /// Scale applied to the output logits (f32).
    LogitScale => "logit_scale",
    /// Soft cap on attention logits (f32).
    AttnLogitSoftcapping => "attn_logit_softcapping",
    /// Soft cap on final logits (f32).
    FinalLogitSoftcapping => "final_logit_softcapping",
    /// Residual scale (f32).
    ResidualScale => "residual_scale",
    /// Embedding scale (f32).
    EmbeddingScale => "embedding_scale",
    /// Attention heads (u32, or an array per layer).
    HeadCount => "attention.head_count",
    /// Key/value heads (u32, or an array per layer); equals `HeadCount` without GQA.
    HeadCountKv => "attention.head_count_kv",
    /// Maximum ALiBi bias (f32).
    MaxAlibiBias => "attention.max_alibi_bias",
    /// Clamp of Q, K and V (f32).
    ClampKqv => "attention.clamp_kqv",
    /// Size of each key head (u32); `embedding_length / head_count` when absent.
    KeyLength => "attention.key_length",
    /// Size of each value head (u32); `embedding_length / head_count` when absent.
    ValueLength => "attention.value_length",
    /// LayerNorm epsilon (f32).
    LayerNormEps => "attention.layer_norm_epsilon",
    /// RMSNorm epsilon (f32).
    RmsEps => "attention.layer_norm_rms_epsilon",
    /// Whether attention is causal (bool).
    Causal => "attention.causal",
    /// Sliding-window attention width (u32).
    SlidingWindow => "attention.sliding_window",
    /// Pattern of sliding-window layers (u32 period or bool array).
    SlidingWindowPattern => "attention.sliding_window_pattern",
    /// Attention scale (f32), when not `1/sqrt(head_dim)`.
    AttentionScale => "attention.scale",
    /// Number of rotary dimensions (u32).
    RopeDimensionCount => "rope.dimension_count",
    /// RoPE base frequency (f32).
    RopeFreqBase => "rope.freq_base",
    /// RoPE base frequency of sliding-window layers (f32).
    RopeFreqBaseSwa => "rope.freq_base_swa",
    /// RoPE scaling kind (string): `"none"`, `"linear"`, `"yarn"`, ...
    RopeScalingType => "rope.scaling.type",
    /// RoPE scaling factor (f32).
    RopeScalingFactor => "rope.scaling.factor",
    /// RoPE scaling attention factor (f32).
    RopeScalingAttnFactor => "rope.scaling.attn_factor",
    /// Context length before RoPE scaling (u32).
    RopeScalingOrigCtxLen => "rope.scaling.original_context_length",
    /// Whether the model was fine-tuned with RoPE scaling (bool).
    RopeScalingFinetuned => "rope.scaling.finetuned",
    /// SSM convolution kernel size (u32).
    SsmConvKernel => "ssm.conv_kernel",
    /// SSM inner size (u32).
    SsmInnerSize => "ssm.inner_size",
    /// SSM state size (u32).
    SsmStateSize => "ssm.state_size",
    /// SSM time-step rank (u32).
    SsmTimeStepRank => "ssm.time_step_rank",
}

impl ArchKey {
    /// The full key for architecture `arch`, e.g. `"llama.context_length"`.
    pub fn key(self, arch: &str) -> String {
        format!("{arch}.{}", self.suffix())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arch_keys_join_architecture_and_suffix() {
        assert_eq!(ArchKey::ContextLength.key("llama"), "llama.context_length");
        assert_eq!(
            ArchKey::SlidingWindow.key("gemma3"),
            "gemma3.attention.sliding_window"
        );
        assert_eq!(
            ArchKey::RmsEps.key("llama"),
            "llama.attention.layer_norm_rms_epsilon"
        );
    }

    #[test]
    fn arch_key_suffixes_are_distinct() {
        let mut seen = std::collections::HashSet::new();
        for k in ArchKey::ALL {
            assert!(seen.insert(k.suffix()), "{k:?}");
        }
    }
}
