//! Model configuration and loading from arbitrary GGUF files: `ModelConfig::from_gguf` and
//! `Model::load` on the CPU return an error or a model, and a model that loads runs a prompt
//! token and a decode step in a small context.
//!
//! Nothing is skipped for asking for too much memory: the library must turn such metadata
//! into an error, so an allocation past libFuzzer's `-malloc_limit_mb` is a finding.
#![no_main]

use ferrolm_gguf::Gguf;
use ferrolm_transformer::{Batch, CpuBackend, CpuOptions, Model, ModelConfig, Precision};
use libfuzzer_sys::fuzz_target;

/// Positions of the KV cache: enough for the two tokens run.
const N_CTX: usize = 4;

fuzz_target!(|data: &[u8]| {
    let Ok(gguf) = Gguf::parse(data) else {
        return;
    };
    let Ok(config) = ModelConfig::from_gguf(&gguf) else {
        return;
    };
    assert_eq!(config.layers.len(), config.n_layer);
    let backend = CpuBackend::new(CpuOptions {
        threads: 1,
        precision: Precision::Q8,
    })
    .expect("a one-thread pool starts");
    let Ok(model) = Model::load(&gguf, backend) else {
        return;
    };
    let vocab = model.config().vocab as u32;
    let (Ok(mut kv), Ok(mut state)) = (model.kv_cache(N_CTX, 1), model.state(1, 1)) else {
        return;
    };
    for (pos, token) in [0, vocab.saturating_sub(1)].into_iter().enumerate() {
        let batch = Batch {
            tokens: &[token],
            positions: &[pos as u32],
            seqs: &[0],
            outputs: &[0],
        };
        if model.forward(&mut state, &mut kv, &batch).is_err() {
            return;
        }
        assert_eq!(state.logits().len(), vocab as usize);
    }
});
