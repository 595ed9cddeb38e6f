//! Tensor names of the GGUF format, in one table.

/// A tensor of the model file, global or inside block `il`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TensorName {
    /// `token_embd.weight`: (vocab, d_model).
    TokenEmbd,
    /// `output_norm.weight`: (d_model,).
    OutputNorm,
    /// `output.weight`: (vocab, d_model); absent when tied to the embeddings.
    Output,
    /// `blk.N.attn_norm.weight`.
    AttnNorm,
    /// `blk.N.attn_q.weight`.
    AttnQ,
    /// `blk.N.attn_k.weight`.
    AttnK,
    /// `blk.N.attn_v.weight`.
    AttnV,
    /// `blk.N.attn_output.weight`.
    AttnOutput,
    /// `blk.N.attn_q_norm.weight`.
    AttnQNorm,
    /// `blk.N.attn_k_norm.weight`.
    AttnKNorm,
    /// `blk.N.post_attention_norm.weight`.
    PostAttnNorm,
    /// `blk.N.ffn_norm.weight`.
    FfnNorm,
    /// `blk.N.ffn_gate.weight`.
    FfnGate,
    /// `blk.N.ffn_up.weight`.
    FfnUp,
    /// `blk.N.ffn_down.weight`.
    FfnDown,
    /// `blk.N.post_ffw_norm.weight`.
    PostFfwNorm,
    /// `blk.N.attn_qkv.weight`: query, key and value rows in one tensor (Phi-3).
    AttnQkv,
    /// `blk.N.attn_q.bias`.
    AttnQBias,
    /// `blk.N.attn_k.bias`.
    AttnKBias,
    /// `blk.N.attn_v.bias`.
    AttnVBias,
    /// `blk.N.ffn_gate_inp.weight`: the router, (n_expert, d_model).
    FfnGateInp,
    /// `blk.N.ffn_gate_exps.weight`: (n_expert, ffn, d_model).
    FfnGateExps,
    /// `blk.N.ffn_up_exps.weight`: (n_expert, ffn, d_model).
    FfnUpExps,
    /// `blk.N.ffn_down_exps.weight`: (n_expert, d_model, ffn).
    FfnDownExps,
    /// `rope_freqs.weight`: one frequency divisor per rotated pair (Llama 3.1 and later).
    RopeFreqs,
    /// `rope_factors_long.weight`: LongRoPE divisors past the original context (Phi-3).
    RopeFactorsLong,
    /// `rope_factors_short.weight`: LongRoPE divisors within the original context (Phi-3).
    RopeFactorsShort,
}

impl TensorName {
    /// The name of a global tensor, or the suffix after `blk.N.` of a block tensor.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TokenEmbd => "token_embd.weight",
            Self::OutputNorm => "output_norm.weight",
            Self::Output => "output.weight",
            Self::AttnNorm => "attn_norm.weight",
            Self::AttnQ => "attn_q.weight",
            Self::AttnK => "attn_k.weight",
            Self::AttnV => "attn_v.weight",
            Self::AttnOutput => "attn_output.weight",
            Self::AttnQNorm => "attn_q_norm.weight",
            Self::AttnKNorm => "attn_k_norm.weight",
            Self::PostAttnNorm => "post_attention_norm.weight",
            Self::FfnNorm => "ffn_norm.weight",
            Self::FfnGate => "ffn_gate.weight",
            Self::FfnUp => "ffn_up.weight",
            Self::FfnDown => "ffn_down.weight",
            Self::PostFfwNorm => "post_ffw_norm.weight",
            Self::AttnQkv => "attn_qkv.weight",
            Self::AttnQBias => "attn_q.bias",
            Self::AttnKBias => "attn_k.bias",
            Self::AttnVBias => "attn_v.bias",
            Self::FfnGateInp => "ffn_gate_inp.weight",
            Self::FfnGateExps => "ffn_gate_exps.weight",
            Self::FfnUpExps => "ffn_up_exps.weight",
            Self::FfnDownExps => "ffn_down_exps.weight",
            Self::RopeFreqs => "rope_freqs.weight",
            Self::RopeFactorsLong => "rope_factors_long.weight",
            Self::RopeFactorsShort => "rope_factors_short.weight",
        }
    }

    /// The full name inside block `il`.
    pub fn in_block(self, il: usize) -> String {
        format!("blk.{il}.{}", self.as_str())
    }
}
