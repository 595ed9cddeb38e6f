//! What the command-line tests share: where the real models are.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::PathBuf;

/// The path of SmolLM2 in the model cache as `ferrolm` finds it; it must be there.
pub fn smollm2() -> String {
    let dir = match std::env::var_os("FERROLM_HOME").filter(|h| !h.is_empty()) {
        Some(home) => PathBuf::from(home).join("models"),
        None => dirs::cache_dir().unwrap().join("ferrolm").join("models"),
    };
    let path = dir.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        path.is_file(),
        "{} is missing: run `cargo xtask fetch-models` first",
        path.display()
    );
    path.to_string_lossy().into_owned()
}
