//! Tiny random-weight models of each family (tests/common/tiny.rs, with SmolLM2's tokenizer)
//! against llama.cpp's greedy continuations of the same files (fixtures/families; its
//! README has the commands that made them). Each test regenerates its model from the
//! fixture's spec, decodes greedily on the exact (F32) path and compares token by token.
mod common;

use std::path::PathBuf;

use common::tiny::{self, TinySpec, Variant};
use ferrolm_gguf::{GgmlType, GgufFile};
use ferrolm_tokenizer::{EncodeOptions, Tokenizer};
use ferrolm_transformer::{Batch, CpuBackend, CpuOptions, Model, Precision};

/// llama.cpp keeps K, V (and Q for their product) in f16, which moves its logits on these
/// models by up to about 0.01–0.04 from an exact computation, so where its top two logits
/// are closer than this it may pick either. From such a step on the continuations may part
/// without either being wrong (the exact computation, not llama.cpp, is the last word), so
/// comparing stops there.
const NEAR_TIE: f64 = 0.02;

/// Relative tolerance on each step's entropy. The f16 noise above moves llama.cpp's own
/// entropies by less than half of this on the fixtures (their seeds were chosen so).
const ENTROPY_TOLERANCE: f64 = 0.01;

/// Fewer compared steps than this would make a case too weak to catch a wrong family (the
/// fixtures' seeds were chosen to meet it).
const MIN_COMPARED_STEPS: usize = 16;

/// The positions the KV cache holds, as llama.cpp's n_ctx when the fixtures were made
/// (it decides Phi-3's choice between long and short rope factors).
const N_CTX: usize = 1024;

fn fixture(variant: Variant) -> serde_json::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/families")
        .join(format!("{}.json", variant.name()));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("fixture JSON")
}

fn spec_of(fixture: &serde_json::Value) -> TinySpec {
    let variant =
        Variant::from_name(fixture["variant"].as_str().expect("variant")).expect("known variant");
    TinySpec {
        variant,
        seed: fixture["seed"].as_u64().expect("seed"),
        weight_type: GgmlType::from_name(fixture["weight_type"].as_str().expect("weight_type"))
            .expect("known type"),
        width: fixture["width"].as_u64().expect("width") as usize,
        vocab: fixture["vocab"].as_u64().expect("vocab") as usize,
    }
}

/// Natural-log entropy of the softmax of `logits`, in f64.
fn entropy(logits: &[f32]) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let weights: Vec<f64> = logits.iter().map(|&l| (l as f64 - max).exp()).collect();
    let sum: f64 = weights.iter().sum();
    let log_sum = sum.ln();
    weights
        .iter()
        .zip(logits)
        .filter(|(w, _)| **w > 0.0)
        .map(|(w, &l)| -(w / sum) * (l as f64 - max - log_sum))
        .sum()
}

/// Greedy continuation of `prompt` for `steps` tokens: the chosen ids and the entropy of
/// the distribution each was chosen from.
fn greedy(model: &Model<'_, CpuBackend>, prompt: &[u32], steps: usize) -> (Vec<u32>, Vec<f64>) {
    let mut kv = model.kv_cache(N_CTX, 1).expect("kv cache");
    let mut state = model.state(prompt.len(), 1).expect("state");
    let positions: Vec<u32> = (0..(prompt.len() + steps) as u32).collect();
    let batch = Batch {
        tokens: prompt,
        positions: &positions[..prompt.len()],
        seqs: &vec![0; prompt.len()],
        outputs: &[prompt.len() - 1],
    };
    model.forward(&mut state, &mut kv, &batch).expect("prefill");
    let (mut ids, mut entropies) = (Vec::with_capacity(steps), Vec::with_capacity(steps));
    for step in 0..steps {
        let next = common::argmax(state.logits());
        ids.push(next);
        entropies.push(entropy(state.logits()));
        if step + 1 < steps {
            let pos = prompt.len() + step;
            let batch = Batch {
                tokens: &[next],
                positions: &positions[pos..=pos],
                seqs: &[0],
                outputs: &[0],
            };
            model.forward(&mut state, &mut kv, &batch).expect("decode");
        }
    }
    (ids, entropies)
}

fn matches_llama_cpp(variant: Variant) {
    let fixture = fixture(variant);
    let spec = spec_of(&fixture);
    assert_eq!(spec.variant, variant);
    let tokenizer_file = common::open_model(common::SMOLLM2);
    let tokenizer_source = tokenizer_file.gguf().expect("parses");
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join(format!("{}.gguf", variant.name()));
    tiny::write(&spec, Some(&tokenizer_source), &path).expect("model written");

    let file = GgufFile::open(&path).expect("opens");
    let gguf = file.gguf().expect("parses");
    let tokenizer = Tokenizer::from_gguf(&gguf).expect("tokenizer");
    let backend = CpuBackend::new(CpuOptions {
        threads: 2,
        precision: Precision::F32,
    })
    .expect("thread pool");
    let model = Model::load(&gguf, backend).expect("model loads");

    for case in fixture["cases"].as_array().expect("cases") {
        let prompt = case["prompt"].as_str().expect("prompt");
        let prompt_ids = common::ids(&case["prompt_ids"]);
        let plain = EncodeOptions {
            add_special: false,
            parse_special: false,
        };
        assert_eq!(tokenizer.encode(prompt, plain), prompt_ids, "{prompt:?}");

        let want = common::ids(&case["ids"]);
        let margins = f64s(&case["margins"]);
        let want_entropy = f64s(&case["entropy"]);
        let (got, got_entropy) = greedy(&model, &prompt_ids, want.len());
        let compared = margins.iter().take_while(|&&m| m >= NEAR_TIE).count();
        eprintln!(
            "{} {prompt:?}: comparing {compared} of {} steps\n  ours      {got:?}\n  llama.cpp {want:?}",
            variant.name(),
            want.len()
        );
        assert!(
            compared >= MIN_COMPARED_STEPS,
            "{prompt:?}: only {compared} steps before a near tie; regenerate the fixture"
        );
        let worst = (0..compared)
            .map(|i| (got_entropy[i] - want_entropy[i]).abs() / want_entropy[i])
            .fold(0.0, f64::max);
        eprintln!("  largest relative entropy difference {worst:.5}");
        for step in 0..compared {
            assert_eq!(
                got[step],
                want[step],
                "{} {prompt:?}: step {step} (llama.cpp margin {}); ours {:?}, llama.cpp {:?}",
                variant.name(),
                margins[step],
                &got[..=step],
                &want[..=step]
            );
            let (ours, theirs) = (got_entropy[step], want_entropy[step]);
            assert!(
                (ours - theirs).abs() <= ENTROPY_TOLERANCE * theirs,
                "{} {prompt:?}: step {step} entropy {ours:.5} nats, llama.cpp {theirs:.5}",
                variant.name()
            );
        }
    }
}

fn f64s(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

#[test]
fn llama3_with_rope_freqs_matches_llama_cpp() {
    matches_llama_cpp(Variant::Llama3);
}

#[test]
fn mistral_ignoring_its_sliding_window_matches_llama_cpp() {
    matches_llama_cpp(Variant::Mistral);
}

#[test]
fn mixtral_experts_match_llama_cpp() {
    matches_llama_cpp(Variant::Mixtral);
}

#[test]
fn qwen2_with_biases_and_yarn_matches_llama_cpp() {
    matches_llama_cpp(Variant::Qwen2);
}

#[test]
fn qwen3_with_qk_norm_and_wide_heads_matches_llama_cpp() {
    matches_llama_cpp(Variant::Qwen3);
}

#[test]
fn qwen3moe_experts_match_llama_cpp() {
    matches_llama_cpp(Variant::Qwen3Moe);
}

#[test]
fn phi3_fused_with_short_rope_factors_matches_llama_cpp() {
    matches_llama_cpp(Variant::Phi3);
}

#[test]
fn phi3_fused_with_long_rope_factors_matches_llama_cpp() {
    matches_llama_cpp(Variant::Phi3Long);
}

#[test]
fn gemma2_with_softcaps_and_sliding_window_matches_llama_cpp() {
    matches_llama_cpp(Variant::Gemma2);
}

/// Every variant has a fixture, and each fixture's spec is that variant's default, so the
/// fixtures can be remade with `tiny_model VARIANT` alone.
#[test]
fn every_variant_has_a_fixture_of_its_default_spec() {
    for variant in Variant::ALL {
        let spec = spec_of(&fixture(variant));
        assert_eq!(
            (spec.seed, spec.weight_type, spec.width),
            (variant.seed(), GgmlType::F32, 1),
            "{}",
            variant.name()
        );
    }
}
