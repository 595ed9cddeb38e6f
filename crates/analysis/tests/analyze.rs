//! The analyzer on a real model: recorded attention, token metrics against the perplexity
//! path, and a report with every part.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use ferrolm_analysis::{AnalysisOptions, Analyzer, HeadHealth, logits};
use ferrolm_tokenizer::{EncodeOptions, Tokenizer};
use ferrolm_transformer::Batch;

const PROMPT: &str =
    "The capital of France is Paris. The capital of Germany is Berlin. The capital of Italy is";

#[test]
fn attention_recording_changes_nothing_and_rows_are_distributions() {
    let f = common::open_model(common::GEMMA3);
    let g = f.gguf().unwrap();
    let model = common::cpu_model(&g);
    let tokens = Tokenizer::from_gguf(&g)
        .unwrap()
        .encode(PROMPT, EncodeOptions::default());
    let n = tokens.len();
    let run = || {
        let mut kv = model.kv_cache(n, 1).unwrap();
        let mut state = model.state(n, 1).unwrap();
        let positions: Vec<u32> = (0..n as u32).collect();
        let batch = Batch {
            tokens: &tokens,
            positions: &positions,
            seqs: &vec![0; n],
            outputs: &[n - 1],
        };
        model.forward(&mut state, &mut kv, &batch).unwrap();
        state.logits().to_vec()
    };
    let plain = run();
    assert!(
        model.backend().take_attention().is_empty(),
        "nothing is recorded by default"
    );
    model.backend().record_attention(true);
    let recorded = run();
    model.backend().record_attention(false);
    assert_eq!(plain, recorded);
    let rows = model.backend().take_attention();
    let c = model.config();
    assert_eq!(rows.len(), c.n_layer * c.n_head * n);
    for r in &rows {
        assert_eq!(r.weights.len(), r.position + 1 - r.first_key);
        let sum: f32 = r.weights.iter().sum();
        assert!((sum - 1.0).abs() < 1e-4, "{sum}");
    }
    run();
    assert!(
        model.backend().take_attention().is_empty(),
        "recording stopped"
    );
}

#[test]
fn analysis_of_a_prompt_reports_every_part() {
    let f = common::open_model(common::SMOLLM2);
    let g = f.gguf().unwrap();
    let model = common::cpu_model(&g);
    let tokenizer = Tokenizer::from_gguf(&g).unwrap();
    let tokens = tokenizer.encode(PROMPT, EncodeOptions::default());
    let n = tokens.len();
    let a = Analyzer::new(AnalysisOptions::all())
        .analyze(&model, &tokens, |t| {
            String::from_utf8_lossy(&tokenizer.token_to_piece(t, true).unwrap()).into_owned()
        })
        .unwrap();
    assert_eq!(a.pieces[1], " capital");

    // Surprisal is the NLL the perplexity path computes from the same logits.
    let metrics = a.metrics.as_ref().unwrap();
    assert_eq!(metrics.len(), n - 1);
    let mut kv = model.kv_cache(n, 1).unwrap();
    let mut state = model.state(n, n).unwrap();
    let positions: Vec<u32> = (0..n as u32).collect();
    let outputs: Vec<usize> = (0..n).collect();
    let batch = Batch {
        tokens: &tokens,
        positions: &positions,
        seqs: &vec![0; n],
        outputs: &outputs,
    };
    model.forward(&mut state, &mut kv, &batch).unwrap();
    let vocab = model.config().vocab;
    for (t, m) in metrics.iter().enumerate() {
        let nll = logits::nll(&state.logits()[t * vocab..(t + 1) * vocab], tokens[t + 1]).unwrap();
        assert!((m.surprisal - nll).abs() < 1e-6);
        assert!(m.entropy >= 0.0 && m.varentropy >= 0.0 && m.top_k_mass <= 1.0);
    }
    // " Berlin" after "The capital of Germany is" is all but certain.
    let berlin = a.pieces.iter().position(|p| p == " Berlin").unwrap();
    assert!(metrics[berlin - 1].surprisal < 0.2 && metrics[berlin - 1].rank == 0);

    let att = a
        .attention
        .as_ref()
        .expect("the CPU backend records attention");
    let c = model.config();
    assert_eq!(att.heads.len(), c.n_layer * c.n_head);
    assert!((att.received.iter().sum::<f64>() - 1.0).abs() < 1e-9);
    assert!(att.heads.iter().any(|h| h.health == HeadHealth::Healthy));
    assert_eq!(a.transfer_entropy.as_ref().unwrap().len(), 6);

    let text = a.to_text();
    for part in [
        "Per-token metrics",
        "Attention health",
        "Most attended",
        "Transfer entropy",
        "layer 29",
    ] {
        assert!(text.contains(part), "{part} missing from\n{text}");
    }
    let json = serde_json::to_value(&a).unwrap();
    assert_eq!(json["metrics"].as_array().unwrap().len(), n - 1);
    assert!(json["attention"]["heads"][0]["health"].is_string());
}
