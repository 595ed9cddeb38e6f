//! KL divergence between real models: a model against itself, and against a requantized copy.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use ferrolm_analysis::perplexity::tokenize_text;
use ferrolm_analysis::{AnalysisError, PerplexityOptions, kl_divergence, perplexity};
use ferrolm_gguf::GgufFile;
use ferrolm_tokenizer::Tokenizer;

const N_CTX: usize = 64;
const CHUNKS: usize = 3;

fn text_tokens(tokenizer: &Tokenizer) -> (Vec<u32>, Option<u32>) {
    let (mut tokens, bos) = tokenize_text(tokenizer, &common::gpl3());
    tokens.truncate(N_CTX * CHUNKS);
    (tokens, bos)
}

#[test]
fn a_model_against_itself_diverges_by_exactly_zero() {
    let (fa, fb) = (
        common::open_model(common::SMOLLM2),
        common::open_model(common::SMOLLM2),
    );
    let (ga, gb) = (fa.gguf().unwrap(), fb.gguf().unwrap());
    let (a, b) = (common::cpu_model(&ga), common::cpu_model(&gb));
    let (tokens, bos) = text_tokens(&Tokenizer::from_gguf(&ga).unwrap());
    let mut progress = vec![];
    let k = kl_divergence(&a, &b, &tokens, bos, PerplexityOptions::new(N_CTX), |p| {
        progress.push(p.done);
    })
    .unwrap();
    assert_eq!(progress, [1, 2, 3]);
    assert_eq!(k.chunks, CHUNKS);
    assert_eq!(k.tokens_scored, CHUNKS * (N_CTX / 2 - 1));
    assert_eq!(k.mean_kld, 0.0);
    assert_eq!((k.kld.max, k.kld.min), (0.0, 0.0));
    assert_eq!(k.rms_dp_percent, 0.0);
    assert_eq!(k.same_top_p_percent, 100.0);
    assert_eq!(k.ppl_base, k.ppl_model);
    assert_eq!(k.ppl_ratio, 1.0);

    // The base perplexity is the one the perplexity protocol gives on the same tokens.
    let ppl = perplexity(&a, &tokens, bos, PerplexityOptions::new(N_CTX), |_| {}).unwrap();
    assert!(
        (ppl.ppl - k.ppl_base).abs() < 1e-9 * ppl.ppl,
        "{} vs {}",
        ppl.ppl,
        k.ppl_base
    );
    // Splitting each chunk into batches gives the same figure up to rounding: matrix
    // products over a few rows take the 8-bit activation path, larger ones the f32 path, so
    // the figures differ by a few tenths of a percent; wrong positions or a cache that is not
    // continued would be off by far more.
    let split = PerplexityOptions {
        n_ctx: N_CTX,
        batch: 24,
    };
    let ppl_split = perplexity(&a, &tokens, bos, split, |_| {}).unwrap();
    assert!(
        (ppl_split.ppl - ppl.ppl).abs() < 1e-2 * ppl.ppl,
        "{} vs {}",
        ppl_split.ppl,
        ppl.ppl
    );
}

#[test]
fn a_requantized_copy_diverges_by_a_positive_amount() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("smollm2-q8_0.gguf");
    ferrolm_quant::requantize_file(
        common::model_path(common::SMOLLM2),
        &copy,
        ferrolm_quant::Mix::Q8_0,
        &ferrolm_quant::MixOptions::default(),
        |_| {},
    )
    .unwrap();
    let (fa, fb) = (
        common::open_model(common::SMOLLM2),
        GgufFile::open(&copy).unwrap(),
    );
    let (ga, gb) = (fa.gguf().unwrap(), fb.gguf().unwrap());
    let (a, b) = (common::cpu_model(&ga), common::cpu_model(&gb));
    let (tokens, bos) = text_tokens(&Tokenizer::from_gguf(&ga).unwrap());
    let k = kl_divergence(&a, &b, &tokens, bos, PerplexityOptions::new(N_CTX), |_| {}).unwrap();
    // Q8_0 is nearly lossless: a small positive divergence (0.005 nats measured here).
    assert!(
        k.mean_kld > 1e-4 && k.mean_kld < 0.05,
        "mean KLD {}",
        k.mean_kld
    );
    assert!(
        k.kld.min >= -1e-6,
        "KLD is never negative beyond rounding: {}",
        k.kld.min
    );
    assert!(k.kld.max > k.median_kld && k.median_kld > 0.0);
    assert!(k.rms_dp_percent > 0.0);
    assert!(k.same_top_p_percent > 80.0 && k.same_top_p_percent < 100.0);
    assert!(k.ppl_model != k.ppl_base);
    assert!((k.ppl_ratio - k.ppl_model / k.ppl_base).abs() < 1e-9);
}

#[test]
fn models_with_different_vocabularies_cannot_be_compared() {
    let (fa, fb) = (
        common::open_model(common::SMOLLM2),
        common::open_model(common::GEMMA3),
    );
    let (ga, gb) = (fa.gguf().unwrap(), fb.gguf().unwrap());
    let (a, b) = (common::cpu_model(&ga), common::cpu_model(&gb));
    let err = kl_divergence(&a, &b, &[1; 64], None, PerplexityOptions::new(8), |_| {}).unwrap_err();
    assert!(
        matches!(
            err,
            AnalysisError::VocabularyMismatch {
                base: 49152,
                model: 262144
            }
        ),
        "{err}"
    );
}
