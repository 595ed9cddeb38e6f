//! Partial forward passes (`Model::forward_layers`): every layer is `forward`, and the first
//! `k` layers of a model give the logits of the same model cut to `k` blocks.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

mod common;

use common::{GEMMA3, SMOLLM2, cpu_model, golden, ids};
use ferrolm_gguf::{Gguf, GgufWriter};
use ferrolm_transformer::{Batch, CpuBackend, Model, Precision, TransformerError};

/// `src` with only its first `layers` blocks.
fn cut_model(src: &Gguf<'_>, layers: usize) -> Vec<u8> {
    let arch = src.architecture().unwrap().to_owned();
    let mut w = GgufWriter::new();
    for (key, value) in src.metadata() {
        w.add_metadata(key, value);
    }
    w.add_metadata(&format!("{arch}.block_count"), layers as u32);
    for t in src.tensor_views() {
        let block = t
            .name
            .strip_prefix("blk.")
            .map(|rest| rest.split('.').next().unwrap().parse::<usize>().unwrap());
        if block.is_none_or(|b| b < layers) {
            w.add_tensor(t.name, &t.dims, t.ty, t.data).unwrap();
        }
    }
    let mut out = Vec::new();
    w.write_to(&mut out).unwrap();
    out
}

/// Logits of every position of the prompt run as one batch, then of one more token run
/// alone, through the first `n_layers` layers (all of them with `None`, by `forward`).
fn logits(model: &Model<'_, CpuBackend>, prompt: &[u32], n_layers: Option<usize>) -> Vec<f32> {
    let n = prompt.len() + 1;
    let mut kv = match n_layers {
        Some(k) => model.kv_cache_layers(n, 1, k).unwrap(),
        None => model.kv_cache(n, 1).unwrap(),
    };
    let mut state = model.state(n, n).unwrap();
    let mut out = Vec::new();
    let positions: Vec<u32> = (0..n as u32).collect();
    let seqs = vec![0; n];
    let outputs: Vec<usize> = (0..prompt.len()).collect();
    let steps = [
        (prompt, &positions[..prompt.len()], &outputs[..]),
        (&prompt[..1], &positions[prompt.len()..], &outputs[..1]),
    ];
    for (tokens, positions, outputs) in steps {
        let batch = Batch {
            tokens,
            positions,
            seqs: &seqs[..tokens.len()],
            outputs,
        };
        match n_layers {
            Some(k) => model.forward_layers(&mut state, &mut kv, &batch, k),
            None => model.forward(&mut state, &mut kv, &batch),
        }
        .unwrap();
        out.extend_from_slice(state.logits());
    }
    out
}

fn check(file: &str, golden_file: &str, cut: usize) {
    let f = common::open_model(file);
    let gguf = f.gguf().unwrap();
    let model = cpu_model(&gguf, Precision::Q8);
    let n_layer = model.config().n_layer;
    let prompt = ids(&golden(golden_file)["greedy"][0]["prompt_ids"]);

    let full = logits(&model, &prompt, None);
    assert_eq!(full, logits(&model, &prompt, Some(n_layer)));

    let bytes = cut_model(&gguf, cut);
    let cut_gguf = Gguf::parse(&bytes).unwrap();
    let cut_model = cpu_model(&cut_gguf, Precision::Q8);
    assert_eq!(cut_model.config().n_layer, cut);
    let early = logits(&model, &prompt, Some(cut));
    assert_eq!(early, logits(&cut_model, &prompt, None));
    assert_ne!(early, full);
}

#[test]
fn smollm2_first_layers_are_the_model_cut_to_them() {
    check(SMOLLM2, "smollm2.json", 7);
}

#[test]
fn gemma3_first_layers_are_the_model_cut_to_them() {
    check(GEMMA3, "gemma3.json", 8);
}

#[test]
fn layer_counts_outside_the_model_are_errors() {
    let f = common::open_model(SMOLLM2);
    let gguf = f.gguf().unwrap();
    let model = cpu_model(&gguf, Precision::Q8);
    let n_layer = model.config().n_layer;
    let mut kv = model.kv_cache(4, 1).unwrap();
    let mut state = model.state(1, 1).unwrap();
    let batch = Batch {
        tokens: &[1],
        positions: &[0],
        seqs: &[0],
        outputs: &[0],
    };
    for bad in [0, n_layer + 1] {
        assert!(matches!(
            model.forward_layers(&mut state, &mut kv, &batch, bad),
            Err(TransformerError::LayerCount { requested, n_layer: n })
                if requested == bad && n == n_layer
        ));
        assert!(matches!(
            model.kv_cache_layers(4, 1, bad),
            Err(TransformerError::LayerCount { .. })
        ));
    }
    // A cache of fewer layers than the pass runs is refused, not overrun.
    let mut small = model.kv_cache_layers(4, 1, 2).unwrap();
    assert!(
        model
            .forward_layers(&mut state, &mut small, &batch, 3)
            .is_err()
    );
    assert!(
        model
            .forward_layers(&mut state, &mut small, &batch, 2)
            .is_ok()
    );
}
