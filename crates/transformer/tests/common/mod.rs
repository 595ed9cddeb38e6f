//! Locating real models and golden data for the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use ferrolm_gguf::GgufFile;

/// The directory models are kept in: `$FERROLM_HOME/models`, else `<cache>/ferrolm/models`.
pub fn models_dir() -> PathBuf {
    match std::env::var_os("FERROLM_HOME") {
        Some(home) => PathBuf::from(home).join("models"),
        None => dirs::cache_dir()
            .expect("a cache directory")
            .join("ferrolm")
            .join("models"),
    }
}

pub const SMOLLM2: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
pub const GEMMA3: &str = "gemma-3-270m-q4_k_m.gguf";

/// Opens a real model, failing with the command that fetches it when it is absent.
pub fn open_model(file: &str) -> GgufFile {
    let path = models_dir().join(file);
    assert!(
        path.exists(),
        "{} is missing: run `cargo xtask fetch-models`",
        path.display()
    );
    GgufFile::open(&path).expect("model opens")
}

/// A golden file of fixtures/golden, parsed.
pub fn golden(name: &str) -> serde_json::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/golden")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("golden JSON")
}

pub fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}
