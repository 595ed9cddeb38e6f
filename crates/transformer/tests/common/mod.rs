//! Locating real models and golden data for the integration tests.
#![allow(dead_code)]

pub mod tiny;

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

use ferrolm_transformer::{Batch, CpuBackend, CpuOptions, Model, Precision};

/// The model on the CPU at `precision`, two threads.
pub fn cpu_model<'w>(gguf: &ferrolm_gguf::Gguf<'w>, precision: Precision) -> Model<'w, CpuBackend> {
    let backend = CpuBackend::new(CpuOptions {
        threads: 2,
        precision,
    })
    .expect("thread pool");
    Model::load(gguf, backend).expect("model loads")
}

/// Logits after every token of `ids` (one row of `vocab` each), run as one batch.
pub fn logits_at_every_position(model: &Model<'_, CpuBackend>, ids: &[u32]) -> Vec<Vec<f32>> {
    let n = ids.len();
    let mut kv = model.kv_cache(n, 1).expect("kv cache");
    let mut state = model.state(n, n).expect("state");
    let positions: Vec<u32> = (0..n as u32).collect();
    let outputs: Vec<usize> = (0..n).collect();
    let batch = Batch {
        tokens: ids,
        positions: &positions,
        seqs: &vec![0; n],
        outputs: &outputs,
    };
    model.forward(&mut state, &mut kv, &batch).expect("forward");
    state
        .logits()
        .chunks_exact(model.config().vocab)
        .map(<[f32]>::to_vec)
        .collect()
}

/// Logits after every token of `ids` the way generation computes them: the first
/// `prompt_len` tokens in one batch, then one token per step (the decode path).
pub fn logits_as_generated(
    model: &Model<'_, CpuBackend>,
    ids: &[u32],
    prompt_len: usize,
) -> Vec<Vec<f32>> {
    let n = ids.len();
    let vocab = model.config().vocab;
    let mut kv = model.kv_cache(n, 1).expect("kv cache");
    let mut state = model
        .state(prompt_len.max(1), prompt_len.max(1))
        .expect("state");
    let positions: Vec<u32> = (0..n as u32).collect();
    let outputs: Vec<usize> = (0..prompt_len).collect();
    let mut rows = Vec::with_capacity(n);
    if prompt_len > 0 {
        let batch = Batch {
            tokens: &ids[..prompt_len],
            positions: &positions[..prompt_len],
            seqs: &vec![0; prompt_len],
            outputs: &outputs,
        };
        model.forward(&mut state, &mut kv, &batch).expect("forward");
        rows.extend(state.logits().chunks_exact(vocab).map(<[f32]>::to_vec));
    }
    for i in prompt_len..n {
        let batch = Batch {
            tokens: &ids[i..=i],
            positions: &positions[i..=i],
            seqs: &[0],
            outputs: &[0],
        };
        model.forward(&mut state, &mut kv, &batch).expect("forward");
        rows.push(state.logits().to_vec());
    }
    rows
}

pub fn argmax(row: &[f32]) -> u32 {
    row.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i as u32)
}

/// KL(p ‖ q) in nats between the softmaxes of two logit rows.
pub fn kl_divergence(p_logits: &[f32], q_logits: &[f32]) -> f64 {
    let lse = |l: &[f32]| {
        let m = l.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        m + l.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln()
    };
    let (lp, lq) = (lse(p_logits), lse(q_logits));
    p_logits
        .iter()
        .zip(q_logits)
        .map(|(&a, &b)| {
            let la = a as f64 - lp;
            la.exp() * (la - (b as f64 - lq))
        })
        .sum()
}

/// A step where the model's greedy choice differs from llama.cpp's.
#[derive(Debug)]
pub struct Divergence {
    pub step: usize,
    pub ours: u32,
    pub golden: u32,
    /// Our logit of our choice minus our logit of llama.cpp's choice.
    pub gap: f32,
}

/// Runs each greedy case teacher-forced (the prompt in one batch, then llama.cpp's
/// continuation one token per step, as generation runs) and lists the steps where our
/// argmax is not llama.cpp's next token.
pub fn greedy_divergences(
    model: &Model<'_, CpuBackend>,
    case: &serde_json::Value,
) -> Vec<Divergence> {
    let prompt = ids(&case["prompt_ids"]);
    let want = ids(&case["ids"]);
    let mut all = prompt.clone();
    all.extend_from_slice(&want[..want.len() - 1]);
    let logits = logits_as_generated(model, &all, prompt.len());
    want.iter()
        .enumerate()
        .filter_map(|(step, &golden)| {
            let row = &logits[prompt.len() - 1 + step];
            let ours = argmax(row);
            (ours != golden).then(|| Divergence {
                step,
                ours,
                golden,
                gap: row[ours as usize] - row[golden as usize],
            })
        })
        .collect()
}
