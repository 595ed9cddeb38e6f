//! Embeddings of SmolLM2 on the CPU at exact f32 precision, against the same hidden states
//! computed separately: the last position's vector is what the output head multiplies (its
//! product with the head equals the logits of an ordinary forward pass), the mean is the mean
//! of the states read one position at a time, and normalisation only scales.
#![allow(clippy::unwrap_used)]

mod common;

use common::{SMOLLM2, cpu_model, logits_at_every_position, open_model};
use ferrolm_quant::{Input, QMatrix};
use ferrolm_tokenizer::{EncodeOptions, Tokenizer};
use ferrolm_transformer::{Batch, Model, Pooling, Precision, embed};

/// The hidden state of position `i` of `ids`, from a pass that reads only that row.
fn hidden_at(
    model: &Model<'_, ferrolm_transformer::CpuBackend>,
    ids: &[u32],
    i: usize,
) -> Vec<f32> {
    let n = ids.len();
    let mut kv = model.kv_cache(n, 1).unwrap();
    let mut state = model.state(n, 1).unwrap();
    let positions: Vec<u32> = (0..n as u32).collect();
    let batch = Batch {
        tokens: ids,
        positions: &positions,
        seqs: &vec![0; n],
        outputs: &[i],
    };
    model.forward_hidden(&mut state, &mut kv, &batch).unwrap();
    state.hidden().to_vec()
}

fn max_rel_err(a: &[f32], b: &[f32]) -> f64 {
    let scale = b
        .iter()
        .map(|v| f64::from(v.abs()))
        .fold(0.0, f64::max)
        .max(1e-12);
    a.iter()
        .zip(b)
        .map(|(x, y)| f64::from((x - y).abs()) / scale)
        .fold(0.0, f64::max)
}

#[test]
fn embeddings_are_the_hidden_states_the_head_multiplies() {
    let file = open_model(SMOLLM2);
    let gguf = file.gguf().unwrap();
    let model = cpu_model(&gguf, Precision::F32);
    let tok = Tokenizer::from_gguf(&gguf).unwrap();
    let ids = tok.encode(
        "The quick brown fox jumps over the lazy dog.",
        EncodeOptions::default(),
    );
    let d = model.config().d_model;

    // Last position: head · embedding = the logits of a plain forward pass.
    let last = embed(&model, &ids, Pooling::Last, false).unwrap();
    assert_eq!(last.len(), d);
    let logits = logits_at_every_position(&model, &ids).pop().unwrap();
    let head = gguf
        .tensor_views()
        .find(|t| t.name == "output.weight")
        .or_else(|| gguf.tensor_views().find(|t| t.name == "token_embd.weight"))
        .unwrap();
    let vocab = head.dims[1] as usize;
    let m = QMatrix::new(head.ty, vocab, d, head.data).unwrap();
    let mut product = vec![0.0f32; vocab];
    m.forward(&Input::f32(&last, d).unwrap(), &mut product)
        .unwrap();
    let e = max_rel_err(&product, &logits);
    assert!(
        e < 1e-5,
        "head · last embedding differs from the logits by {e}"
    );

    // Every pooling against the states read one position at a time.
    let each: Vec<Vec<f32>> = (0..ids.len()).map(|i| hidden_at(&model, &ids, i)).collect();
    let mean: Vec<f32> = (0..d)
        .map(|j| (each.iter().map(|h| f64::from(h[j])).sum::<f64>() / ids.len() as f64) as f32)
        .collect();
    let pooled = embed(&model, &ids, Pooling::Mean, false).unwrap();
    assert!(max_rel_err(&pooled, &mean) < 1e-5);
    assert!(max_rel_err(&embed(&model, &ids, Pooling::Cls, false).unwrap(), &each[0]) < 1e-6);
    assert!(max_rel_err(&last, &each[ids.len() - 1]) < 1e-6);
    // The mean is not the last state: the poolings differ.
    assert!(max_rel_err(&pooled, &last) > 1e-2);

    // Normalised: unit length, same direction.
    let unit = embed(&model, &ids, Pooling::Mean, true).unwrap();
    let norm: f64 = unit
        .iter()
        .map(|&v| f64::from(v) * f64::from(v))
        .sum::<f64>()
        .sqrt();
    assert!((norm - 1.0).abs() < 1e-5, "{norm}");
    let scale = pooled
        .iter()
        .map(|&v| f64::from(v) * f64::from(v))
        .sum::<f64>()
        .sqrt();
    let back: Vec<f32> = unit
        .iter()
        .map(|&v| (f64::from(v) * scale) as f32)
        .collect();
    assert!(max_rel_err(&back, &pooled) < 1e-5);
    assert!(embed(&model, &[], Pooling::Mean, true).is_err());
}
