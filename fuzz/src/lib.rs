//! What the fuzz targets share: the two real vocabularies, loaded once per process.
//!
//! The models are the ones `cargo xtask fetch-models` puts in `$FERROLM_HOME/models`
//! (else `<user cache dir>/ferrolm/models`). A target that needs one and does not find it
//! panics at its first input, which libFuzzer reports at once.

use std::path::PathBuf;
use std::sync::LazyLock;

use ferrolm_gguf::GgufFile;
use ferrolm_tokenizer::Tokenizer;

/// The byte-level BPE model (`gpt2` vocabulary, `smollm` pre-tokenizer).
pub const SMOLLM2_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// The SentencePiece model (`llama` vocabulary of 262,144 tokens).
pub const GEMMA3_FILE: &str = "gemma-3-270m-q4_k_m.gguf";

/// SmolLM2's tokenizer, with its chat template (ChatML).
pub static SMOLLM2: LazyLock<Tokenizer> = LazyLock::new(|| load(SMOLLM2_FILE));
/// Gemma 3's tokenizer, with its chat template.
pub static GEMMA3: LazyLock<Tokenizer> = LazyLock::new(|| load(GEMMA3_FILE));

/// Where the real models live.
pub fn models_dir() -> PathBuf {
    match std::env::var_os("FERROLM_HOME").filter(|home| !home.is_empty()) {
        Some(home) => PathBuf::from(home).join("models"),
        None => dirs::cache_dir()
            .expect("no cache directory on this system; set FERROLM_HOME")
            .join("ferrolm")
            .join("models"),
    }
}

fn load(file: &str) -> Tokenizer {
    let path = models_dir().join(file);
    let opened = GgufFile::open(&path)
        .unwrap_or_else(|e| panic!("cannot open {file} (run `cargo xtask fetch-models`): {e}"));
    let gguf = opened.gguf().expect("the model parsed when opened");
    Tokenizer::from_gguf(&gguf).unwrap_or_else(|e| panic!("the vocabulary of {file}: {e}"))
}

/// Splits the input at its first byte: a selector for the target's modes, and the rest.
pub fn selector(data: &[u8]) -> Option<(u8, &[u8])> {
    data.split_first().map(|(&s, rest)| (s, rest))
}
