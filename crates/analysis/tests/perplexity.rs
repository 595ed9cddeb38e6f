//! Perplexity on gpl-3.txt at n_ctx 256 against llama.cpp's figures.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use ferrolm_analysis::{PerplexityOptions, perplexity_of_text};
use ferrolm_tokenizer::Tokenizer;

fn check(file: &str, golden: &str) {
    let gold = common::golden(golden);
    let entry = &gold["perplexity"][0];
    let n_ctx = entry["n_ctx"].as_u64().unwrap() as usize;
    let want = entry["ppl"].as_f64().unwrap();
    let want_stderr = entry["ppl_stderr"].as_f64().unwrap();
    let want_chunks = entry["chunks"].as_u64().unwrap() as usize;

    let f = common::open_model(file);
    let gguf = f.gguf().unwrap();
    let model = common::cpu_model(&gguf);
    let tokenizer = Tokenizer::from_gguf(&gguf).unwrap();
    let t0 = std::time::Instant::now();
    let got = perplexity_of_text(
        &model,
        &tokenizer,
        &common::gpl3(),
        PerplexityOptions::new(n_ctx),
        |_| {},
    )
    .unwrap();
    eprintln!("{file}: {got:?} in {:?}", t0.elapsed());
    assert_eq!(got.chunks, want_chunks);
    assert_eq!(got.tokens_scored, want_chunks * (n_ctx - 1 - n_ctx / 2));
    let rel = (got.ppl - want).abs() / want;
    assert!(
        rel < 0.005,
        "{file}: ppl {} vs llama.cpp {want} ({:.3}% off)",
        got.ppl,
        rel * 100.0
    );
    let rel_err = (got.ppl_stderr - want_stderr).abs() / want_stderr;
    assert!(
        rel_err < 0.02,
        "{file}: stderr {} vs llama.cpp {want_stderr}",
        got.ppl_stderr
    );
}

#[test]
fn smollm2_perplexity_matches_llama_cpp() {
    check(common::SMOLLM2, "smollm2.json");
}

#[test]
fn gemma3_perplexity_matches_llama_cpp() {
    check(common::GEMMA3, "gemma3.json");
}
