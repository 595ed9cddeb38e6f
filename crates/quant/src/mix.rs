//! llama.cpp's quantization mixes (`llama_ftype`): the type each tensor of a
//! model gets when it is quantized as `q4_K_M`, `q3_K_S`, `q8_0`, ...
//!
//! A [`Mix`] has a default type for the weight matrices; llama-quantize's
//! rules then promote some of them by role and layer (value projections and
//! `ffn_down` in chosen layers, the output matrix to Q6_K, ...), and a type
//! whose block does not divide a matrix's rows falls back to a 32-element
//! format. [`QuantPlan::new`] works all of this out from the header alone,
//! without touching tensor data.
//!
//! ```
//! use ferrolm_gguf::{GgmlType, Gguf, GgufWriter};
//! use ferrolm_quant::mix::{Mix, MixOptions, QuantPlan};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut model = GgufWriter::new();
//! model.add_metadata("general.architecture", "llama");
//! model.add_metadata("llama.block_count", 1u32);
//! for name in ["blk.0.attn_v.weight", "blk.0.ffn_down.weight", "output.weight"] {
//!     model.add_tensor(name, &[256, 2], GgmlType::F32, vec![0u8; 256 * 2 * 4])?;
//! }
//! let mut bytes = Vec::new();
//! model.write_to(&mut bytes)?;
//!
//! let plan = QuantPlan::new(&Gguf::parse(&bytes)?, Mix::Q4KM, &MixOptions::default())?;
//! let types: Vec<GgmlType> = plan.tensors.iter().map(|t| t.to).collect();
//! assert_eq!(types, [GgmlType::Q6K, GgmlType::Q6K, GgmlType::Q6K]);
//! assert_eq!(plan.mix.file_type(), 15);
//! # Ok(()) }
//! ```

mod rules;

use ferrolm_gguf::keys::ArchKey;
use ferrolm_gguf::{GgmlType, Gguf, MetadataValue, TensorInfo};

pub use rules::fallback_type;
use rules::{Candidate, Counters, Role, RuleError};

use crate::QuantError;

/// A quantization scheme, named and numbered as llama.cpp names and numbers
/// it (`general.file_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mix {
    /// Every matrix F32.
    F32,
    /// Every matrix F16.
    F16,
    /// Q4_0, the output matrix Q6_K.
    Q4_0,
    /// Q4_1, the output matrix Q6_K.
    Q4_1,
    /// Q8_0 throughout.
    Q8_0,
    /// Q5_0, the output matrix Q6_K.
    Q5_0,
    /// Q5_1, the output matrix Q6_K.
    Q5_1,
    /// Q2_K, with value projections, `ffn_down` and attention outputs at Q3_K or better.
    Q2K,
    /// Q3_K, small.
    Q3KS,
    /// Q3_K, medium.
    Q3KM,
    /// Q3_K, large.
    Q3KL,
    /// Q4_K, small.
    Q4KS,
    /// Q4_K, medium: half of the value projections and `ffn_down` at Q6_K.
    Q4KM,
    /// Q5_K, small.
    Q5KS,
    /// Q5_K, medium.
    Q5KM,
    /// Q6_K throughout.
    Q6K,
    /// IQ4_NL.
    Iq4Nl,
    /// IQ4_XS.
    Iq4Xs,
    /// Every matrix BF16.
    Bf16,
}

/// Each mix: its name, `general.file_type` and default matrix type.
const MIXES: [(Mix, &str, u32, GgmlType); 19] = [
    (Mix::F32, "f32", 0, GgmlType::F32),
    (Mix::F16, "f16", 1, GgmlType::F16),
    (Mix::Q4_0, "q4_0", 2, GgmlType::Q4_0),
    (Mix::Q4_1, "q4_1", 3, GgmlType::Q4_1),
    (Mix::Q8_0, "q8_0", 7, GgmlType::Q8_0),
    (Mix::Q5_0, "q5_0", 8, GgmlType::Q5_0),
    (Mix::Q5_1, "q5_1", 9, GgmlType::Q5_1),
    (Mix::Q2K, "q2_K", 10, GgmlType::Q2K),
    (Mix::Q3KS, "q3_K_S", 11, GgmlType::Q3K),
    (Mix::Q3KM, "q3_K_M", 12, GgmlType::Q3K),
    (Mix::Q3KL, "q3_K_L", 13, GgmlType::Q3K),
    (Mix::Q4KS, "q4_K_S", 14, GgmlType::Q4K),
    (Mix::Q4KM, "q4_K_M", 15, GgmlType::Q4K),
    (Mix::Q5KS, "q5_K_S", 16, GgmlType::Q5K),
    (Mix::Q5KM, "q5_K_M", 17, GgmlType::Q5K),
    (Mix::Q6K, "q6_K", 18, GgmlType::Q6K),
    (Mix::Iq4Nl, "iq4_nl", 25, GgmlType::Iq4Nl),
    (Mix::Iq4Xs, "iq4_xs", 30, GgmlType::Iq4Xs),
    (Mix::Bf16, "bf16", 32, GgmlType::Bf16),
];

/// llama-quantize's short names for the medium K mixes.
const ALIASES: [(&str, Mix); 3] = [
    ("q3_K", Mix::Q3KM),
    ("q4_K", Mix::Q4KM),
    ("q5_K", Mix::Q5KM),
];

impl Mix {
    /// Every mix, in `general.file_type` order.
    pub const ALL: [Mix; 19] = {
        let mut all = [Mix::F32; 19];
        let mut i = 0;
        while i < MIXES.len() {
            all[i] = MIXES[i].0;
            i += 1;
        }
        all
    };

    // The enum's declaration order matches MIXES', so the discriminant indexes it.
    fn row(self) -> &'static (Mix, &'static str, u32, GgmlType) {
        &MIXES[self as usize]
    }

    /// The mix called `name` (any ASCII case), including llama-quantize's
    /// aliases `q3_K`, `q4_K` and `q5_K` for the medium mixes.
    pub fn from_name(name: &str) -> Option<Mix> {
        MIXES
            .iter()
            .map(|&(mix, n, _, _)| (n, mix))
            .chain(ALIASES)
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, mix)| mix)
    }

    /// llama.cpp's name, e.g. `"q4_K_M"`.
    pub fn name(self) -> &'static str {
        self.row().1
    }

    /// The `general.file_type` (`llama_ftype`) of a model written with this mix.
    pub fn file_type(self) -> u32 {
        self.row().2
    }

    /// The type of the weight matrices no rule promotes.
    pub fn default_type(self) -> GgmlType {
        self.row().3
    }
}

impl std::fmt::Display for Mix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The hyperparameters llama-quantize's rules look at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MixHparams {
    /// `general.architecture` (Falcon has rules of its own).
    pub arch: String,
    /// `{arch}.block_count`.
    pub n_layer: u32,
    /// Attention heads of the first layer (0 when the file states none).
    pub n_head: u32,
    /// Key/value heads of the first layer (`n_head` when the file states none).
    pub n_head_kv: u32,
    /// `{arch}.expert_count` (0 for a dense model).
    pub n_expert: u32,
}

impl MixHparams {
    /// Reads them from `src`; the architecture and block count are required.
    pub fn from_gguf(src: &Gguf<'_>) -> Result<MixHparams, QuantError> {
        let arch = src.architecture()?.to_owned();
        let n_layer = src.get_u32(&src.arch_key(ArchKey::BlockCount)?)?;
        // Per-layer head counts are arrays; the rules read the first layer's.
        let first = |key: ArchKey| -> Result<Option<u32>, QuantError> {
            let key = src.arch_key(key)?;
            Ok(match src.get(&key) {
                Some(MetadataValue::Array(a)) => a.get_i64(0).and_then(|v| u32::try_from(v).ok()),
                Some(_) => Some(src.get_u32(&key)?),
                None => None,
            })
        };
        let n_head = first(ArchKey::HeadCount)?.unwrap_or(0);
        let n_head_kv = first(ArchKey::HeadCountKv)?.unwrap_or(n_head);
        let n_expert = src
            .opt_u32(&src.arch_key(ArchKey::ExpertCount)?)?
            .unwrap_or(0);
        Ok(MixHparams {
            arch,
            n_layer,
            n_head,
            n_head_kv,
            n_expert,
        })
    }

    /// Query heads per key/value head (0 without key/value heads).
    fn n_gqa(&self) -> u32 {
        self.n_head.checked_div(self.n_head_kv).unwrap_or(0)
    }

    /// Whether llama.cpp sizes the model as 70B, which gets larger value projections.
    fn is_70b(&self) -> bool {
        match self.arch.as_str() {
            "llama" => self.n_layer == 80 && self.n_head != self.n_head_kv,
            "qwen2" | "deci" | "olmo" => self.n_layer == 80,
            "jais2" => self.n_layer == 68,
            _ => false,
        }
    }
}

/// Switches of a quantization; the defaults are llama-quantize's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MixOptions {
    /// Give every quantizable matrix the mix's default type, without the
    /// per-role promotions (llama-quantize's `--pure`); rows that do not fit
    /// still fall back.
    pub pure: bool,
}

/// What happens to one tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TensorAction {
    /// Decoded and encoded as the type the mix chose.
    Requantized,
    /// Written as another type than the mix chose, because its rows do not
    /// fit that type's blocks (copied unchanged when already of that type).
    Fallback,
    /// Already of the type it gets: copied unchanged.
    AlreadyTarget,
    /// Not quantized (a vector, a norm, integer data, ...): copied unchanged.
    Kept,
}

/// The type one tensor gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorPlan {
    /// Tensor name.
    pub name: String,
    /// Shape in ggml order.
    pub dims: Vec<u64>,
    /// Type in the input file.
    pub from: GgmlType,
    /// The type the mix's rules chose, before the fallback for rows that do
    /// not fit its blocks; `from` for tensors that are not quantized.
    pub chosen: GgmlType,
    /// Type in the output file.
    pub to: GgmlType,
    /// What is done to it.
    pub action: TensorAction,
    /// Bytes of data in the input file.
    pub bytes_in: u64,
    /// Bytes of data in the output file.
    pub bytes_out: u64,
}

impl TensorPlan {
    /// Whether the data is decoded and encoded, not copied.
    pub fn converts(&self) -> bool {
        self.to != self.from
    }

    /// Elements per row (`dims[0]`).
    pub fn row_len(&self) -> u64 {
        self.dims.first().copied().unwrap_or(0)
    }
}

/// How many tensors one output type has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TypeCount {
    /// The output type.
    pub ty: GgmlType,
    /// Tensors written as `ty`.
    pub tensors: usize,
    /// Of those, tensors decoded and encoded (the others are copied).
    pub converted: usize,
    /// Bytes of their data in the output.
    pub bytes: u64,
}

/// The type every tensor of a model gets under a mix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuantPlan {
    /// The mix.
    pub mix: Mix,
    /// Every tensor, in file order.
    pub tensors: Vec<TensorPlan>,
}

impl QuantPlan {
    /// Works out the type of every tensor of `src` under `mix`, from the
    /// header alone.
    pub fn new(src: &Gguf<'_>, mix: Mix, options: &MixOptions) -> Result<QuantPlan, QuantError> {
        let hparams = MixHparams::from_gguf(src)?;
        QuantPlan::for_tensors(src.tensors(), &hparams, mix, options)
    }

    /// The same for a list of tensor headers and the hyperparameters the rules read.
    pub fn for_tensors(
        tensors: &[TensorInfo<'_>],
        hparams: &MixHparams,
        mix: Mix,
        options: &MixOptions,
    ) -> Result<QuantPlan, QuantError> {
        let names: Vec<&str> = tensors.iter().map(|t| t.name).collect();
        let tied = !names.contains(&"output.weight");
        let mut counters = Counters {
            n_attn_v: names.iter().filter(|n| Role::of(n).is_attn_v()).count() as i64,
            ..Counters::default()
        };
        let default = mix.default_type();
        let mut chosen = vec![None; tensors.len()];
        for i in rules::visit_order(&names) {
            let t = &tensors[i];
            if !rules::is_quantizable(&hparams.arch, t.name, &t.dims, t.ty) {
                continue;
            }
            let row_len = t.dims.first().copied().unwrap_or(0);
            // Float mixes convert every such matrix, without rules or fallbacks.
            if !default.is_quantized() {
                chosen[i] = Some((default, default));
                continue;
            }
            let wanted = if options.pure {
                default
            } else {
                let candidate = Candidate {
                    name: t.name,
                    role: Role::of(t.name),
                    row_len,
                };
                rules::promoted_type(mix, hparams, tied, &candidate, &mut counters).map_err(
                    |RuleError::NoLayer { n_layer }| QuantError::Tensor {
                        name: t.name.to_owned(),
                        reason: format!(
                            "an expert model's ffn_down needs a layer below {n_layer} in its name"
                        ),
                    },
                )?
            };
            chosen[i] = Some((wanted, fallback_type(wanted, row_len)));
        }
        let tensors = tensors
            .iter()
            .zip(chosen)
            .map(|(t, chosen)| {
                let (wanted, to) = chosen.unwrap_or((t.ty, t.ty));
                let action = match chosen {
                    None => TensorAction::Kept,
                    Some(_) if to != wanted => TensorAction::Fallback,
                    Some(_) if to == t.ty => TensorAction::AlreadyTarget,
                    Some(_) => TensorAction::Requantized,
                };
                let row_len = t.dims.first().copied().unwrap_or(0);
                let rows = t
                    .dims
                    .iter()
                    .skip(1)
                    .fold(1u64, |n, &d| n.saturating_mul(d));
                let bytes_out = to
                    .row_bytes(row_len)
                    .map_or(u64::MAX, |b| b.saturating_mul(rows));
                TensorPlan {
                    name: t.name.to_owned(),
                    dims: t.dims.clone(),
                    from: t.ty,
                    chosen: wanted,
                    to,
                    action,
                    bytes_in: t.n_bytes(),
                    bytes_out,
                }
            })
            .collect();
        Ok(QuantPlan { mix, tensors })
    }

    /// Tensors per output type, most tensors first.
    pub fn type_counts(&self) -> Vec<TypeCount> {
        let mut counts: Vec<TypeCount> = Vec::new();
        for t in &self.tensors {
            let i = if let Some(i) = counts.iter().position(|c| c.ty == t.to) {
                i
            } else {
                counts.push(TypeCount {
                    ty: t.to,
                    tensors: 0,
                    converted: 0,
                    bytes: 0,
                });
                counts.len() - 1
            };
            let c = &mut counts[i];
            c.tensors += 1;
            c.converted += usize::from(t.converts());
            c.bytes = c.bytes.saturating_add(t.bytes_out);
        }
        counts.sort_by(|a, b| b.tensors.cmp(&a.tensors).then(a.ty.id().cmp(&b.ty.id())));
        counts
    }

    /// Tensors written as another type than the mix chose.
    pub fn fallbacks(&self) -> impl Iterator<Item = &TensorPlan> {
        self.tensors
            .iter()
            .filter(|t| t.action == TensorAction::Fallback)
    }

    /// Bytes of tensor data read.
    pub fn bytes_in(&self) -> u64 {
        self.tensors
            .iter()
            .fold(0, |n, t| n.saturating_add(t.bytes_in))
    }

    /// Bytes of tensor data written.
    pub fn bytes_out(&self) -> u64 {
        self.tensors
            .iter()
            .fold(0, |n, t| n.saturating_add(t.bytes_out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info<'a>(name: &'a str, dims: &[u64]) -> TensorInfo<'a> {
        TensorInfo {
            name,
            dims: dims.to_vec(),
            ty: GgmlType::F16,
            offset: 0,
        }
    }

    fn hparams(n_layer: u32, n_head: u32, n_head_kv: u32) -> MixHparams {
        MixHparams {
            arch: "llama".to_owned(),
            n_layer,
            n_head,
            n_head_kv,
            n_expert: 0,
        }
    }

    /// A dense model of `n_layer` blocks with 256-wide rows, tied embeddings.
    fn dense_names(n_layer: u32) -> Vec<String> {
        let mut names = vec![
            "token_embd.weight".to_owned(),
            "output_norm.weight".to_owned(),
        ];
        for l in 0..n_layer {
            for part in [
                "attn_q",
                "attn_k",
                "attn_v",
                "attn_output",
                "ffn_down",
                "ffn_up",
            ] {
                names.push(format!("blk.{l}.{part}.weight"));
            }
            names.push(format!("blk.{l}.attn_norm.weight"));
        }
        names
    }

    fn plan_of(names: &[String], hp: &MixHparams, mix: Mix) -> QuantPlan {
        let tensors: Vec<TensorInfo<'_>> = names
            .iter()
            .map(|n| {
                let dims: &[u64] = if n.contains("norm") {
                    &[256]
                } else {
                    &[256, 8]
                };
                info(n, dims)
            })
            .collect();
        QuantPlan::for_tensors(&tensors, hp, mix, &MixOptions::default()).expect("plans")
    }

    fn type_of(plan: &QuantPlan, name: &str) -> GgmlType {
        plan.tensors
            .iter()
            .find(|t| t.name == name)
            .expect("tensor")
            .to
    }

    #[test]
    fn names_numbers_and_aliases_are_llama_cpps() {
        assert_eq!(Mix::from_name("Q4_K_M"), Some(Mix::Q4KM));
        assert_eq!(Mix::from_name("q4_k"), Some(Mix::Q4KM));
        assert_eq!(Mix::from_name("q3_k"), Some(Mix::Q3KM));
        assert_eq!(Mix::from_name("q2_k"), Some(Mix::Q2K));
        assert_eq!(Mix::from_name("q9_9"), None);
        assert_eq!(Mix::Q5KS.file_type(), 16);
        assert_eq!(Mix::Q4KS.default_type(), GgmlType::Q4K);
        for (i, mix) in Mix::ALL.into_iter().enumerate() {
            assert_eq!(mix as usize, i, "{mix}");
            assert_eq!(Mix::from_name(mix.name()), Some(mix));
            assert!(crate::can_quantize(mix.default_type()), "{mix}");
        }
    }

    #[test]
    fn q4_k_m_promotes_value_and_ffn_down_in_llama_cpps_layers() {
        let hp = hparams(16, 8, 8);
        let plan = plan_of(&dense_names(16), &hp, Mix::Q4KM);
        let promoted = |part: &str| -> Vec<u32> {
            (0..16)
                .filter(|l| type_of(&plan, &format!("blk.{l}.{part}.weight")) == GgmlType::Q6K)
                .collect()
        };
        assert_eq!(promoted("attn_v"), [0, 1, 4, 7, 10, 13, 14, 15]);
        assert_eq!(promoted("ffn_down"), [0, 1, 4, 7, 10, 13, 14, 15]);
        assert_eq!(type_of(&plan, "blk.3.attn_q.weight"), GgmlType::Q4K);
        // Tied embeddings are the output matrix.
        assert_eq!(type_of(&plan, "token_embd.weight"), GgmlType::Q6K);
        assert_eq!(type_of(&plan, "output_norm.weight"), GgmlType::F16);
        assert_eq!(plan.fallbacks().count(), 0);
    }

    #[test]
    fn small_mixes_promote_the_first_layers_and_q2_k_looks_at_gqa() {
        let names = dense_names(16);
        let s = plan_of(&names, &hparams(16, 8, 8), Mix::Q4KS);
        assert_eq!(type_of(&s, "blk.3.attn_v.weight"), GgmlType::Q5K);
        assert_eq!(type_of(&s, "blk.4.attn_v.weight"), GgmlType::Q4K);
        assert_eq!(type_of(&s, "blk.1.ffn_down.weight"), GgmlType::Q5K);
        assert_eq!(type_of(&s, "blk.2.ffn_down.weight"), GgmlType::Q4K);
        let q2 = plan_of(&names, &hparams(16, 8, 8), Mix::Q2K);
        assert_eq!(type_of(&q2, "blk.5.attn_v.weight"), GgmlType::Q3K);
        assert_eq!(type_of(&q2, "blk.5.attn_output.weight"), GgmlType::Q3K);
        assert_eq!(type_of(&q2, "blk.5.ffn_down.weight"), GgmlType::Q3K);
        assert_eq!(type_of(&q2, "blk.5.ffn_up.weight"), GgmlType::Q2K);
        let q2_gqa = plan_of(&names, &hparams(16, 8, 2), Mix::Q2K);
        assert_eq!(type_of(&q2_gqa, "blk.5.attn_v.weight"), GgmlType::Q4K);
    }

    #[test]
    fn an_untied_output_is_q6_k_and_rows_off_the_block_fall_back() {
        let hp = hparams(1, 4, 4);
        let tensors = [
            info("token_embd.weight", &[256, 8]),
            info("output.weight", &[256, 8]),
            info("blk.0.attn_q.weight", &[576, 8]),
            info("blk.0.attn_k.weight", &[48, 8]),
        ];
        let plan = QuantPlan::for_tensors(&tensors, &hp, Mix::Q4_0, &MixOptions::default())
            .expect("plans");
        let types: Vec<(GgmlType, GgmlType)> =
            plan.tensors.iter().map(|t| (t.chosen, t.to)).collect();
        assert_eq!(
            types,
            [
                (GgmlType::Q4_0, GgmlType::Q4_0),
                (GgmlType::Q6K, GgmlType::Q6K),
                (GgmlType::Q4_0, GgmlType::Q4_0),
                (GgmlType::Q4_0, GgmlType::F16),
            ]
        );
        let pure = QuantPlan::for_tensors(&tensors, &hp, Mix::Q4_0, &MixOptions { pure: true })
            .expect("plans");
        assert_eq!(pure.tensors[1].to, GgmlType::Q4_0);
        let counts = plan.type_counts();
        assert_eq!(counts[0].ty, GgmlType::Q4_0);
        assert_eq!((counts[0].tensors, counts[0].converted), (2, 2));
        assert_eq!(counts.iter().map(|c| c.tensors).sum::<usize>(), 4);
    }

    #[test]
    fn float_mixes_convert_every_matrix_without_rules() {
        let hp = hparams(1, 4, 4);
        let tensors = [
            info("output.weight", &[48, 8]),
            info("blk.0.attn_norm.weight", &[48]),
        ];
        let plan = QuantPlan::for_tensors(&tensors, &hp, Mix::Bf16, &MixOptions::default())
            .expect("plans");
        assert_eq!(plan.tensors[0].to, GgmlType::Bf16);
        assert_eq!(plan.tensors[1].action, TensorAction::Kept);
        assert_eq!(plan.bytes_out(), 48 * 8 * 2 + 48 * 2);
    }

    #[test]
    fn expert_models_read_ffn_down_layers_from_names() {
        let hp = MixHparams {
            n_expert: 8,
            ..hparams(8, 8, 8)
        };
        let tensors = [
            info("blk.0.ffn_down_exps.weight", &[256, 8, 8]),
            info("blk.0.attn_v.weight", &[256, 8]),
            info("blk.0.attn_output.weight", &[256, 8]),
            info("blk.2.ffn_down_exps.weight", &[256, 8, 8]),
        ];
        let plan = QuantPlan::for_tensors(&tensors, &hp, Mix::Q4KM, &MixOptions::default())
            .expect("plans");
        let types: Vec<GgmlType> = plan.tensors.iter().map(|t| t.to).collect();
        assert_eq!(
            types,
            [GgmlType::Q6K, GgmlType::Q8_0, GgmlType::Q5K, GgmlType::Q4K]
        );
        let bad = [info("blk.8.ffn_down_exps.weight", &[256, 8, 8])];
        assert!(matches!(
            QuantPlan::for_tensors(&bad, &hp, Mix::Q4KM, &MixOptions::default()),
            Err(QuantError::Tensor { .. })
        ));
    }
}
