//! The type of every tensor under each of llama.cpp's mixes equals what
//! `llama-quantize` wrote for the same model (fixtures/quantize, made by the
//! commands in its README), computed from the headers alone.

use std::collections::BTreeMap;
use std::path::PathBuf;

use ferrolm_gguf::GgufFile;
use ferrolm_quant::GgmlType;
use ferrolm_quant::mix::{Mix, MixOptions, QuantPlan};

/// Fixture prefix and model file of each model.
const MODELS: [(&str, &str); 2] = [
    ("smollm2-135m", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    ("gemma3-270m", "gemma-3-270m-q4_k_m.gguf"),
];

/// The mixes llama-quantize was run with.
const MIXES: [&str; 8] = [
    "q4_k_m", "q4_k_s", "q5_k_m", "q5_k_s", "q3_k_m", "q3_k_s", "q2_k", "q6_k",
];

fn model_path(file: &str) -> PathBuf {
    let dir = match std::env::var_os("FERROLM_HOME").filter(|h| !h.is_empty()) {
        Some(home) => PathBuf::from(home).join("models"),
        None => dirs::cache_dir()
            .expect("a cache directory")
            .join("ferrolm/models"),
    };
    let path = dir.join(file);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo xtask fetch-models` first",
        path.display()
    );
    path
}

/// llama-quantize's `general.file_type` and tensor types for one model and mix.
fn reference(model: &str, mix: &str) -> (u32, BTreeMap<String, GgmlType>) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../../fixtures/quantize/{model}.{mix}.tsv"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = text
        .lines()
        .map(|l| l.split_once('\t').expect("two columns"));
    let (key, file_type) = lines.next().expect("a header line");
    assert_eq!(key, "general.file_type");
    let types = lines
        .map(|(name, ty)| {
            let ty = GgmlType::from_name(ty).unwrap_or_else(|| panic!("type {ty}"));
            (name.to_owned(), ty)
        })
        .collect();
    (file_type.parse().expect("a number"), types)
}

#[test]
fn every_mix_gives_llama_quantizes_tensor_types_on_both_models() {
    for (model, file) in MODELS {
        let gguf_file = GgufFile::open(model_path(file)).expect("opens");
        let gguf = gguf_file.gguf().expect("parses");
        for name in MIXES {
            let mix = Mix::from_name(name).expect("a mix");
            let (file_type, expected) = reference(model, name);
            let plan = QuantPlan::new(&gguf, mix, &MixOptions::default()).expect("plans");
            assert_eq!(mix.file_type(), file_type, "{model} {name}");
            let got: BTreeMap<String, GgmlType> = plan
                .tensors
                .iter()
                .map(|t| (t.name.clone(), t.to))
                .collect();
            assert_eq!(got.len(), expected.len(), "{model} {name}: tensor count");
            let differing: Vec<String> = expected
                .iter()
                .filter(|&(n, ty)| got.get(n) != Some(ty))
                .map(|(n, ty)| format!("{n}: llama-quantize {ty}, ferrolm {:?}", got.get(n)))
                .collect();
            assert!(
                differing.is_empty(),
                "{model} {name}: {} of {} tensors differ:\n{}",
                differing.len(),
                expected.len(),
                differing.join("\n")
            );
        }
    }
}

#[test]
fn smollm2_q4_k_m_promotes_then_falls_back_and_counts_types_truthfully() {
    let gguf_file = GgufFile::open(model_path(MODELS[0].1)).expect("opens");
    let gguf = gguf_file.gguf().expect("parses");
    let plan = QuantPlan::new(&gguf, Mix::Q4KM, &MixOptions::default()).expect("plans");
    let pairs = |part: &str| {
        let mut pairs: BTreeMap<(&str, &str), usize> = BTreeMap::new();
        for t in plan.tensors.iter().filter(|t| t.name.contains(part)) {
            *pairs.entry((t.chosen.name(), t.to.name())).or_default() += 1;
        }
        pairs.into_iter().collect::<Vec<_>>()
    };
    // 30 layers: llama.cpp's layer choice gives 14 of them Q6_K; SmolLM2's
    // 576-wide rows then fall back to the 32-element formats.
    assert_eq!(
        pairs("ffn_down"),
        [(("q4_K", "q4_K"), 16), (("q6_K", "q6_K"), 14)]
    );
    assert_eq!(
        pairs("attn_v"),
        [(("q4_K", "q5_0"), 16), (("q6_K", "q8_0"), 14)]
    );
    // Tied embeddings are treated as the output matrix: Q6_K unless the row
    // does not fit 256, then Q8_0 (already its type: copied).
    assert_eq!(pairs("token_embd"), [(("q8_0", "q8_0"), 1)]);
    let counts: Vec<(GgmlType, usize, usize)> = plan
        .type_counts()
        .iter()
        .map(|c| (c.ty, c.tensors, c.converted))
        .collect();
    assert_eq!(
        counts,
        [
            (GgmlType::Q5_0, 166, 166),
            (GgmlType::F32, 61, 0),
            (GgmlType::Q4K, 16, 16),
            (GgmlType::Q8_0, 15, 14),
            (GgmlType::Q6K, 14, 14),
        ]
    );
    assert_eq!(plan.fallbacks().count(), 180);
}
