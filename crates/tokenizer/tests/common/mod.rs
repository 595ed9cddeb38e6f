//! Helpers shared by the integration tests: model files and golden cases.

#![allow(dead_code)]

use std::path::PathBuf;

use serde::Deserialize;

/// The directory real models live in: `$FERROLM_HOME/models`, else `<cache dir>/ferrolm/models`.
pub fn models_dir() -> PathBuf {
    match std::env::var_os("FERROLM_HOME") {
        Some(home) => PathBuf::from(home).join("models"),
        None => dirs::cache_dir()
            .expect("no cache directory on this system")
            .join("ferrolm")
            .join("models"),
    }
}

/// Path of a real model file; fails the test with instructions when it is missing.
pub fn model_path(file: &str) -> PathBuf {
    let path = models_dir().join(file);
    assert!(
        path.is_file(),
        "model file {} is missing: run `cargo xtask fetch-models` first",
        path.display()
    );
    path
}

pub const SMOLLM2: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
pub const GEMMA3: &str = "gemma-3-270m-q4_k_m.gguf";

pub fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/golden")
}

#[derive(Deserialize)]
pub struct TokenizeCase {
    pub text: String,
    pub add_special: bool,
    pub parse_special: bool,
    pub ids: Vec<u32>,
}

#[derive(Deserialize)]
pub struct GreedyCase {
    pub prompt: String,
    pub add_special: bool,
    pub parse_special: bool,
    pub prompt_ids: Vec<u32>,
}

#[derive(Deserialize)]
pub struct Golden {
    pub tokenize: Vec<TokenizeCase>,
    pub greedy: Vec<GreedyCase>,
}

/// The golden cases of one model (`smollm2` or `gemma3`).
pub fn golden(name: &str) -> Golden {
    let path = golden_dir().join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// Loads the tokenizer of a real model.
pub fn load(file: &str) -> ferrolm_tokenizer::Tokenizer {
    let gguf = ferrolm_gguf::GgufFile::open(model_path(file)).expect("open model");
    let g = gguf.gguf().expect("parse model");
    ferrolm_tokenizer::Tokenizer::from_gguf(&g).expect("load tokenizer")
}
