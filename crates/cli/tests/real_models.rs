//! `ferrolm inspect` on the two real models (fetched by `cargo xtask fetch-models`).
#![allow(clippy::unwrap_used)]

use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

/// The model cache as `ferrolm` finds it; the model must be there.
fn model_path(file_name: &str) -> PathBuf {
    let dir = match std::env::var_os("FERROLM_HOME").filter(|h| !h.is_empty()) {
        Some(home) => PathBuf::from(home).join("models"),
        None => dirs::cache_dir().unwrap().join("ferrolm").join("models"),
    };
    let path = dir.join(file_name);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo xtask fetch-models` first",
        path.display()
    );
    path
}

fn ferrolm(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ferrolm"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ferrolm {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn inspect_json(model: &str) -> Value {
    let stdout = ferrolm(&["inspect", model, "--json"]);
    assert_eq!(stdout.lines().count(), 1, "--json must print one line");
    serde_json::from_str(&stdout).unwrap()
}

/// Tensor count of each type in the report's quantization mix.
fn type_counts(report: &Value) -> Vec<(String, u64)> {
    report["quantization"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["type"].as_str().unwrap().to_owned(),
                u["tensors"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn smollm2_is_a_llama_model_with_272_tensors() {
    let path = model_path("SmolLM2-135M-Instruct.Q4_1.gguf");
    let report = inspect_json(path.to_str().unwrap());
    assert_eq!(report["architecture"], "llama");
    assert_eq!(report["tensor_count"], 272);
    assert_eq!(report["tensors"].as_array().unwrap().len(), 272);
    assert_eq!(report["parameter_count"], 134_515_008);
    assert_eq!(report["tensor_bytes"], 96_576_768);
    assert_eq!(report["data_offset"], 1_785_664);
    assert_eq!(report["context_length"], 8192);
    assert_eq!(report["file_type"]["name"], "q4_1");
    assert_eq!(
        type_counts(&report),
        [("q4_1".into(), 210), ("q8_0".into(), 1), ("f32".into(), 61)]
    );
    let hyper = &report["hyperparameters"];
    assert_eq!(hyper["block_count"], 30);
    assert_eq!(hyper["embedding_length"], 576);
    assert_eq!(hyper["attention.head_count_kv"], 3);
    assert_eq!(hyper["attention.layer_norm_rms_epsilon"], 1e-5);
    let tok = &report["tokenizer"];
    assert_eq!(tok["model"], "gpt2");
    assert_eq!(tok["pre"], "smollm");
    assert_eq!(tok["vocab_size"], 49152);
    assert_eq!(tok["merges"], 48900);
    assert_eq!(tok["special_tokens"][0]["role"], "bos");
    assert_eq!(tok["special_tokens"][0]["text"], "<|im_start|>");
    let embd = &report["tensors"][0];
    assert_eq!(embd["name"], "token_embd.weight");
    assert_eq!(embd["type"], "q8_0");
    assert_eq!(embd["shape"], serde_json::json!([576, 49152]));
    assert_eq!(embd["bytes"], 30_081_024);
    // Long arrays are given by length, not dumped.
    let tokens = report["metadata"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["key"] == "tokenizer.ggml.tokens")
        .unwrap();
    assert_eq!(tokens["len"], 49152);
    assert_eq!(tokens["element_type"], "string");
    assert!(tokens.get("value").is_none());
}

#[test]
fn gemma3_is_a_gemma3_model_with_236_tensors() {
    let path = model_path("gemma-3-270m-q4_k_m.gguf");
    let report = inspect_json(path.to_str().unwrap());
    assert_eq!(report["architecture"], "gemma3");
    assert_eq!(report["tensor_count"], 236);
    assert_eq!(report["tensors"].as_array().unwrap().len(), 236);
    assert_eq!(report["parameter_count"], 268_098_176);
    assert_eq!(report["tensor_bytes"], 246_587_904);
    assert_eq!(report["context_length"], 32768);
    assert_eq!(report["file_type"]["name"], "q4_K_M");
    let mut counts = type_counts(&report);
    counts.sort();
    assert_eq!(
        counts,
        [
            ("f32".into(), 109),
            ("q4_K".into(), 27),
            ("q5_0".into(), 81),
            ("q6_K".into(), 9),
            ("q8_0".into(), 10)
        ]
    );
    let hyper = &report["hyperparameters"];
    assert_eq!(hyper["attention.sliding_window"], 512);
    assert_eq!(hyper["attention.key_length"], 256);
    assert_eq!(hyper["rope.freq_base"], 1_000_000.0);
    assert_eq!(report["tokenizer"]["model"], "llama");
    assert_eq!(report["tokenizer"]["vocab_size"], 262_144);
}

#[test]
fn the_text_view_summarizes_the_model() {
    let path = model_path("gemma-3-270m-q4_k_m.gguf");
    let text = ferrolm(&["inspect", path.to_str().unwrap()]);
    assert!(text.contains("architecture    gemma3\n"), "{text}");
    assert!(text.contains("tensors         236, "), "{text}");
    assert!(text.contains("context length  32768\n"), "{text}");
    assert!(text.contains("vocabulary    262144 tokens\n"), "{text}");
    assert!(text.contains("add bos/eos   yes / no\n"), "{text}");
    assert!(text.contains("tokenizer.ggml.tokens "), "{text}");
    assert!(text.contains("[string × 262144] ["), "{text}");
    assert!(text.contains("token_embd.weight"), "{text}");
    // One line per metadata key and per tensor, not one per token.
    assert!(text.lines().count() < 400, "{} lines", text.lines().count());
}

#[test]
fn a_known_name_resolves_to_the_cached_file() {
    let path = model_path("SmolLM2-135M-Instruct.Q4_1.gguf");
    let report = inspect_json("smollm2-135m");
    assert_eq!(report["path"], path.to_str().unwrap());
    assert_eq!(report["tensor_count"], 272);
}
