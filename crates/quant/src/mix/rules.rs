//! llama-quantize's per-tensor rules, as facts from `src/llama-quant.cpp`:
//! which tensors are quantized at all, the role a tensor's name gives it, the
//! promotions each mix makes by role and layer, and the fallback for rows
//! that do not fit a type's blocks.

use ferrolm_gguf::GgmlType;

use super::{Mix, MixHparams};

/// Substrings that keep a matrix out of quantization: norms, expert
/// routers, tiny or positional tables of various architectures.
const NEVER_QUANTIZED: [&str; 35] = [
    "_norm.weight",
    "ffn_gate_inp.weight",
    "ffn_gate_tid2eid.weight",
    "altup",
    "laurel",
    "per_layer_model_proj",
    "ssm_conv1d",
    "shortconv.conv.weight",
    "indexer.k_proj.weight",
    "indexer.q_proj.weight",
    "time_mix_first.weight",
    "time_mix_w0.weight",
    "time_mix_w1.weight",
    "time_mix_w2.weight",
    "time_mix_v0.weight",
    "time_mix_v1.weight",
    "time_mix_v2.weight",
    "time_mix_a0.weight",
    "time_mix_a1.weight",
    "time_mix_a2.weight",
    "time_mix_g1.weight",
    "time_mix_g2.weight",
    "time_mix_decay_w1.weight",
    "time_mix_decay_w2.weight",
    "time_mix_lerp_fused.weight",
    "attn_rel_b.weight",
    ".position_embd",
    "sam.pos_embd",
    "sam.neck.",
    "sam.net_",
    ".rel_pos",
    ".patch_embd",
    ".patch_merger",
    "a.rvq.codebook",
    "mm.a.code_embd",
];

/// Whole names kept unquantized: positional embeddings and BERT's token types.
const NEVER_QUANTIZED_NAMES: [&str; 2] = ["position_embd.weight", "token_types.weight"];

/// Further substrings kept unquantized in `glm5-next` models.
const NEVER_QUANTIZED_GLM5_NEXT: [&str; 14] = [
    "hc_",
    "indexer.attn_q_b",
    "indexer.attn_k",
    "indexer.proj",
    "indexer_compressor_gate",
    "indexer_compressor_ape",
    "ssm_f_a.weight",
    "ssm_f_b.weight",
    "ssm_g_a.weight",
    "ssm_g_b.weight",
    "ssm_beta.weight",
    "attn_kv_a_mqa.weight",
    "attn_k_b.weight",
    "attn_v_b.weight",
];

/// Substrings of the `glm5-next` matrices held at Q8_0 or better.
const AT_LEAST_Q8_0_GLM5_NEXT: [&str; 3] = ["attn_q_a", "attn_q_b", "nextn.eh_proj"];

/// Parts of a name that give its role, tried in this order.
const ROLE_BY_PART: [(&str, Role); 9] = [
    ("attn_qkv.weight", Role::AttnQkv),
    ("attn_kv_b.weight", Role::AttnKvB),
    ("attn_v.weight", Role::AttnV),
    ("attn_k.weight", Role::AttnK),
    ("attn_q.weight", Role::AttnQ),
    ("attn_output.weight", Role::AttnOutput),
    ("ffn_up", Role::FfnUp),
    ("ffn_gate", Role::FfnGate),
    ("ffn_down", Role::FfnDown),
];

/// What a tensor's name says about it, as far as the rules care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    Output,
    TokenEmbd,
    AttnQkv,
    AttnKvB,
    AttnV,
    AttnK,
    AttnQ,
    AttnOutput,
    FfnUp,
    FfnGate,
    FfnDown,
    Other,
}

impl Role {
    /// The role of tensor `name`; the first match in this order wins.
    pub(crate) fn of(name: &str) -> Role {
        if name == "output.weight" {
            return Role::Output;
        }
        if name == "token_embd.weight" || name == "per_layer_token_embd.weight" {
            return Role::TokenEmbd;
        }
        ROLE_BY_PART
            .iter()
            .find(|(part, _)| name.contains(part))
            .map_or(Role::Other, |&(_, role)| role)
    }

    /// The value projections, which the mixes treat alike (the fused QKV
    /// matrix and MLA's KV up-projection count as value projections).
    pub(crate) fn is_attn_v(self) -> bool {
        matches!(self, Role::AttnV | Role::AttnQkv | Role::AttnKvB)
    }
}

/// ggml's dimension count: trailing dimensions of 1 do not count.
fn ggml_n_dims(dims: &[u64]) -> usize {
    dims.iter().rposition(|&d| d != 1).map_or(1, |i| i + 1)
}

/// Whether llama-quantize converts tensor `name` at all: a matrix (2-D or
/// 3-D) of floating-point or quantized data whose name ends in `weight` and
/// is not one of the tensors kept as they are.
pub(crate) fn is_quantizable(arch: &str, name: &str, dims: &[u64], ty: GgmlType) -> bool {
    let integer = matches!(
        ty,
        GgmlType::I8 | GgmlType::I16 | GgmlType::I32 | GgmlType::I64 | GgmlType::F64
    );
    let kept_for_arch = arch == "glm5-next"
        && NEVER_QUANTIZED_GLM5_NEXT
            .iter()
            .any(|part| name.contains(part));
    !integer
        && ggml_n_dims(dims) >= 2
        && name.ends_with("weight")
        && !NEVER_QUANTIZED.iter().any(|part| name.contains(part))
        && !NEVER_QUANTIZED_NAMES.contains(&name)
        && !kept_for_arch
}

/// The block index of `name` (`blk.N.…`), as llama.cpp's `sscanf("blk.%d.")` reads it.
pub(crate) fn layer_of(name: &str) -> Option<i64> {
    let rest = name.strip_prefix("blk.")?;
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// The order llama-quantize visits tensors in, which its layer counters
/// depend on: tensors outside the blocks first, then block by block, each
/// group by name.
pub(crate) fn visit_order(names: &[&str]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..names.len()).collect();
    order.sort_by(|&a, &b| {
        let key = |i: usize| (layer_of(names[i]).unwrap_or(-1), names[i]);
        key(a).cmp(&key(b))
    });
    order
}

/// llama.cpp's choice of layers that get more bits: the first and last
/// eighth, and every third layer in between.
fn use_more_bits(i_layer: i64, n_layers: i64) -> bool {
    i_layer < n_layers / 8 || i_layer >= 7 * n_layers / 8 || (i_layer - n_layers / 8) % 3 == 2
}

/// Where the rules are in their walk over the model: llama-quantize counts
/// value projections and `ffn_down` matrices in visiting order.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Counters {
    /// Value projections in the whole model.
    pub(crate) n_attn_v: i64,
    /// Value projections seen so far.
    pub(crate) i_attn_v: i64,
    /// `ffn_down` matrices seen so far.
    pub(crate) i_ffn_down: i64,
}

/// What the rules need to know about one tensor.
pub(crate) struct Candidate<'a> {
    pub(crate) name: &'a str,
    pub(crate) role: Role,
    pub(crate) row_len: u64,
}

/// Why the rules cannot place a tensor.
#[derive(Debug)]
pub(crate) enum RuleError {
    /// An expert model's `ffn_down` whose name gives no layer in range.
    NoLayer { n_layer: u32 },
}

/// The type `mix` gives a quantizable tensor before the row-length fallback.
/// `tied` says the model has no `output.weight`, so the token embeddings
/// double as the output matrix.
pub(crate) fn promoted_type(
    mix: Mix,
    hp: &MixHparams,
    tied: bool,
    t: &Candidate<'_>,
    counters: &mut Counters,
) -> Result<GgmlType, RuleError> {
    use GgmlType::{Q3K, Q4K, Q5K, Q6K, Q8_0};
    let default = mix.default_type();
    let falcon = hp.arch == "falcon";
    if hp.arch == "glm5-next"
        && AT_LEAST_Q8_0_GLM5_NEXT
            .iter()
            .any(|part| t.name.contains(part))
    {
        return Ok(Q8_0);
    }
    if t.role == Role::Output || (tied && t.role == Role::TokenEmbd) {
        let fits = t.row_len.is_multiple_of(default.block_size() as u64);
        return Ok(if falcon || !fits {
            Q8_0
        } else if default != Q8_0 {
            Q6K
        } else {
            default
        });
    }
    if t.role.is_attn_v() {
        let i = counters.i_attn_v;
        counters.i_attn_v += 1;
        let gqa = hp.n_gqa();
        let mut ty = match mix {
            Mix::Q2K if gqa >= 4 => Q4K,
            Mix::Q2K => Q3K,
            Mix::Q3KM if i < 2 => Q5K,
            Mix::Q3KM => Q4K,
            Mix::Q3KL => Q5K,
            Mix::Iq4Nl | Mix::Iq4Xs if gqa >= 4 => Q5K,
            Mix::Q4KM | Mix::Q5KM if use_more_bits(i, counters.n_attn_v) => Q6K,
            Mix::Q4KS if i < 4 => Q5K,
            _ => default,
        };
        // A 70B model's value matrix is 8x smaller than its query matrix.
        if hp.is_70b() && matches!(ty, Q3K | Q4K) {
            ty = Q5K;
        }
        if hp.n_expert == 8 {
            ty = Q8_0;
        }
        return Ok(ty);
    }
    Ok(match t.role {
        Role::AttnK if hp.n_expert == 8 => Q8_0,
        Role::FfnDown => {
            let i_layer = if hp.n_expert > 1 {
                // Expert tensors are not one per layer in order: read the layer from the name.
                layer_of(t.name)
                    .filter(|&l| l < i64::from(hp.n_layer))
                    .ok_or(RuleError::NoLayer {
                        n_layer: hp.n_layer,
                    })?
            } else {
                counters.i_ffn_down
            };
            counters.i_ffn_down += 1;
            let n = i64::from(hp.n_layer);
            let more = use_more_bits(i_layer, n);
            match mix {
                Mix::Q3KM if i_layer < n / 16 => Q5K,
                Mix::Q3KM if !falcon || more => Q4K,
                Mix::Q2K | Mix::Q3KM => Q3K,
                Mix::Q3KL if falcon => Q4K,
                Mix::Q3KL => Q5K,
                Mix::Q4KM if falcon && i_layer < n / 16 => Q6K,
                Mix::Q4KM if falcon && more => Q5K,
                Mix::Q4KM if falcon => Q4K,
                Mix::Q4KM | Mix::Q5KM if more => Q6K,
                // Without an importance matrix.
                Mix::Iq4Nl | Mix::Iq4Xs if i_layer < n / 8 => Q5K,
                Mix::Q4KS if !falcon && i_layer < n / 8 => Q5K,
                _ => default,
            }
        }
        Role::AttnOutput if falcon => match mix {
            Mix::Q3KL => Q4K,
            _ => default,
        },
        Role::AttnOutput if hp.n_expert == 8 => match mix {
            Mix::Q2K | Mix::Q3KS | Mix::Q3KM | Mix::Iq4Nl | Mix::Q4KS | Mix::Q4KM | Mix::Iq4Xs => {
                Q5K
            }
            _ => default,
        },
        Role::AttnOutput => match mix {
            Mix::Q2K => Q3K,
            Mix::Q3KM => Q4K,
            Mix::Q3KL => Q5K,
            _ => default,
        },
        // Untied token embeddings, queries, keys, gates and ups change only
        // in the i-quant mixes below 4 bits, which are not offered here.
        _ => default,
    })
}

/// The type used instead of `wanted` for rows whose length is not a
/// multiple of `wanted`'s block: the nearest 32-element format of at least
/// the same precision, and F16 when even 32 does not divide the row.
pub fn fallback_type(wanted: GgmlType, row_len: u64) -> GgmlType {
    let fits = |ty: GgmlType| row_len.is_multiple_of(ty.block_size() as u64);
    if fits(wanted) {
        return wanted;
    }
    let legacy = match wanted {
        GgmlType::Q2K | GgmlType::Q3K | GgmlType::Tq1_0 | GgmlType::Tq2_0 => GgmlType::Q4_0,
        GgmlType::Q4K => GgmlType::Q5_0,
        GgmlType::Q5K => GgmlType::Q5_1,
        GgmlType::Q6K => GgmlType::Q8_0,
        GgmlType::Iq4Xs
        | GgmlType::Iq3S
        | GgmlType::Iq3Xxs
        | GgmlType::Iq2S
        | GgmlType::Iq2Xs
        | GgmlType::Iq2Xxs
        | GgmlType::Iq1S
        | GgmlType::Iq1M => GgmlType::Iq4Nl,
        _ => GgmlType::F16,
    };
    if fits(legacy) { legacy } else { GgmlType::F16 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_follow_the_first_matching_part() {
        assert_eq!(Role::of("output.weight"), Role::Output);
        assert_eq!(Role::of("per_layer_token_embd.weight"), Role::TokenEmbd);
        assert_eq!(Role::of("blk.3.attn_qkv.weight"), Role::AttnQkv);
        assert_eq!(Role::of("blk.3.attn_v.weight"), Role::AttnV);
        assert_eq!(Role::of("blk.3.ffn_down_exps.weight"), Role::FfnDown);
        assert_eq!(Role::of("blk.3.ffn_gate_inp.weight"), Role::FfnGate);
        assert_eq!(Role::of("blk.3.attn_k_norm.weight"), Role::Other);
        assert!(Role::AttnKvB.is_attn_v() && !Role::AttnK.is_attn_v());
    }

    #[test]
    fn norms_routers_vectors_and_integers_are_not_quantized() {
        let q = |name: &str, dims: &[u64]| is_quantizable("llama", name, dims, GgmlType::F16);
        assert!(q("blk.0.ffn_up.weight", &[64, 32]));
        assert!(q("blk.0.ffn_up_exps.weight", &[64, 32, 8]));
        assert!(!q("blk.0.attn_q_norm.weight", &[64, 32]));
        assert!(!q("blk.0.ffn_gate_inp.weight", &[64, 8]));
        assert!(!q("blk.0.attn_q.bias", &[64, 32]));
        assert!(!q("blk.0.ffn_up.weight", &[64, 1, 1]));
        assert!(!q("position_embd.weight", &[64, 32]));
        assert!(!is_quantizable(
            "llama",
            "ids.weight",
            &[4, 2],
            GgmlType::I32
        ));
        assert!(!is_quantizable(
            "glm5-next",
            "blk.0.hc_x.weight",
            &[64, 32],
            GgmlType::F16
        ));
        assert!(is_quantizable(
            "llama",
            "blk.0.hc_x.weight",
            &[64, 32],
            GgmlType::F16
        ));
    }

    #[test]
    fn tensors_are_visited_by_layer_then_name() {
        let names = [
            "blk.10.attn_v.weight",
            "token_embd.weight",
            "blk.2.attn_v.weight",
            "blk.2.attn_k.weight",
            "output.weight",
        ];
        let order: Vec<&str> = visit_order(&names).into_iter().map(|i| names[i]).collect();
        assert_eq!(
            order,
            [
                "output.weight",
                "token_embd.weight",
                "blk.2.attn_k.weight",
                "blk.2.attn_v.weight",
                "blk.10.attn_v.weight",
            ]
        );
        assert_eq!(layer_of("blk.17.ffn_down.weight"), Some(17));
        assert_eq!(layer_of("blk.x.ffn_down.weight"), None);
    }

    #[test]
    fn more_bits_go_to_the_ends_and_every_third_layer() {
        let chosen: Vec<i64> = (0..30).filter(|&i| use_more_bits(i, 30)).collect();
        assert_eq!(chosen, [0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 26, 27, 28, 29]);
    }

    #[test]
    fn fallbacks_follow_the_block_that_divides_the_row() {
        assert_eq!(fallback_type(GgmlType::Q4K, 512), GgmlType::Q4K);
        assert_eq!(fallback_type(GgmlType::Q4K, 576), GgmlType::Q5_0);
        assert_eq!(fallback_type(GgmlType::Q5K, 640), GgmlType::Q5_1);
        assert_eq!(fallback_type(GgmlType::Q6K, 576), GgmlType::Q8_0);
        assert_eq!(fallback_type(GgmlType::Q2K, 576), GgmlType::Q4_0);
        assert_eq!(fallback_type(GgmlType::Q3K, 576), GgmlType::Q4_0);
        assert_eq!(fallback_type(GgmlType::Iq4Xs, 576), GgmlType::Iq4Nl);
        assert_eq!(fallback_type(GgmlType::Q4K, 48), GgmlType::F16);
        assert_eq!(fallback_type(GgmlType::Q8_0, 48), GgmlType::F16);
        assert_eq!(fallback_type(GgmlType::F32, 7), GgmlType::F32);
    }
}
