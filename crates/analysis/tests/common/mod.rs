//! Locating real models and golden data for the integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use ferrolm_gguf::GgufFile;
use ferrolm_transformer::{CpuBackend, CpuOptions, Model};

pub const SMOLLM2: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
pub const GEMMA3: &str = "gemma-3-270m-q4_k_m.gguf";

/// `$FERROLM_HOME/models`, else `<cache dir>/ferrolm/models`.
pub fn models_dir() -> PathBuf {
    match std::env::var_os("FERROLM_HOME").filter(|h| !h.is_empty()) {
        Some(home) => PathBuf::from(home).join("models"),
        None => dirs::cache_dir()
            .expect("a cache directory")
            .join("ferrolm")
            .join("models"),
    }
}

/// The path of a real model; fails with the command that fetches it when it is absent.
pub fn model_path(file: &str) -> PathBuf {
    let path = models_dir().join(file);
    assert!(
        path.exists(),
        "{} is missing: run `cargo xtask fetch-models`",
        path.display()
    );
    path
}

pub fn open_model(file: &str) -> GgufFile {
    GgufFile::open(model_path(file)).expect("model opens")
}

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/golden")
}

/// A golden file of fixtures/golden, parsed.
pub fn golden(name: &str) -> serde_json::Value {
    let path = fixtures().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("golden JSON")
}

pub fn gpl3() -> String {
    std::fs::read_to_string(fixtures().join("texts/gpl-3.txt")).expect("gpl-3.txt")
}

/// The model on the CPU with the default (fast) precision, two threads.
pub fn cpu_model<'w>(gguf: &ferrolm_gguf::Gguf<'w>) -> Model<'w, CpuBackend> {
    let backend = CpuBackend::new(CpuOptions {
        threads: 2,
        ..CpuOptions::default()
    })
    .expect("thread pool");
    Model::load(gguf, backend).expect("model loads")
}
