//! Sizes from flags and metadata that the machine cannot hold are errors, never aborts: a KV
//! cache past the machine's memory, a generation limit of "no limit".

mod common;

use std::ops::ControlFlow;

use common::tiny::{self, TinySpec, Variant};
use ferrolm_gguf::GgufFile;
use ferrolm_sampling::{Preset, SamplingConfig};
use ferrolm_transformer::{
    CpuBackend, CpuOptions, GenerateOptions, Model, Precision, Session, StopReason,
    TransformerError,
};

fn with_tiny_model(f: impl FnOnce(&Model<'_, CpuBackend>)) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tiny.gguf");
    tiny::write(&TinySpec::new(Variant::Qwen3), None, &path).expect("tiny model");
    let file = GgufFile::open(&path).expect("opens");
    let gguf = file.gguf().expect("parses");
    let backend = CpuBackend::new(CpuOptions {
        threads: 1,
        precision: Precision::F32,
    })
    .expect("pool");
    f(&Model::load(&gguf, backend).expect("loads"));
}

#[test]
fn a_kv_cache_larger_than_memory_is_an_error_naming_its_size() {
    with_tiny_model(|model| {
        match model.kv_cache(1 << 40, 1) {
            Err(TransformerError::InsufficientMemory { needed_mib, .. }) => {
                // 2^40 positions × 3 layers × 2 heads × 32 × (keys, values) × 4 bytes.
                assert_eq!(needed_mib, ((1u64 << 40) * 3 * 2 * 32 * 2 * 4) >> 20);
            }
            Err(e) => panic!("expected a memory error, got {e}"),
            Ok(_) => panic!("a KV cache of 2^40 positions was made"),
        }
        let e = model.kv_cache(usize::MAX, 2).expect_err("overflow refused");
        assert!(e.to_string().contains("overflow"), "{e}");
    });
}

#[test]
fn generating_without_a_limit_stops_at_a_full_context() {
    with_tiny_model(|model| {
        let mut session = Session::new(model, 12, 8).expect("session");
        let mut sampler = SamplingConfig::preset(Preset::Greedy)
            .build()
            .expect("greedy");
        let generation = session
            .generate(
                &[1, 2, 3],
                &mut sampler,
                GenerateOptions {
                    max_tokens: usize::MAX,
                },
                |_| false,
                |_| Ok(ControlFlow::Continue(())),
            )
            .expect("generates");
        assert_eq!(generation.stop, StopReason::ContextFull);
        assert_eq!(generation.ids.len() + 3, 12 + 1);
    });
}

/// Every sequence of a cache holds its full context even when that is not a whole number of
/// blocks (3 sequences of 40 positions need 6 blocks of 32, not the 4 that 120 positions fill).
#[test]
fn every_sequence_fills_its_context_when_it_is_not_a_whole_number_of_blocks() {
    let file = common::open_model(common::SMOLLM2);
    let gguf = file.gguf().expect("parses");
    let model = common::cpu_model(&gguf, ferrolm_transformer::Precision::Q8);
    let (n_ctx, n_seq) = (40, 3);
    let mut kv = model.kv_cache(n_ctx, n_seq).expect("kv cache");
    let mut state = model.state(n_ctx * n_seq, n_seq).expect("state");
    let tokens: Vec<u32> = (0..n_ctx * n_seq).map(|i| 100 + i as u32).collect();
    let positions: Vec<u32> = (0..n_ctx * n_seq).map(|i| (i % n_ctx) as u32).collect();
    let seqs: Vec<u32> = (0..n_ctx * n_seq).map(|i| (i / n_ctx) as u32).collect();
    let outputs: Vec<usize> = (1..=n_seq).map(|s| s * n_ctx - 1).collect();
    let batch = ferrolm_transformer::Batch {
        tokens: &tokens,
        positions: &positions,
        seqs: &seqs,
        outputs: &outputs,
    };
    model
        .forward(&mut state, &mut kv, &batch)
        .expect("three full sequences fit");
}
