//! Tokenization speed on about 1 MB of English text (the GPL v3 repeated),
//! single thread, with the SmolLM2 (byte-level BPE) and Gemma 3
//! (SentencePiece) vocabularies, and the time to load Gemma's vocabulary.

// criterion's macros generate undocumented public items.
#![allow(missing_docs)]

use std::path::PathBuf;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ferrolm_gguf::GgufFile;
use ferrolm_tokenizer::{EncodeOptions, Tokenizer};

fn model(file: &str) -> GgufFile {
    let dir = match std::env::var_os("FERROLM_HOME") {
        Some(home) => PathBuf::from(home).join("models"),
        None => dirs::cache_dir()
            .expect("no cache directory")
            .join("ferrolm")
            .join("models"),
    };
    let path = dir.join(file);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo xtask fetch-models` first",
        path.display()
    );
    GgufFile::open(path).expect("open model")
}

fn corpus() -> String {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/golden/texts/gpl-3.txt");
    let text = std::fs::read_to_string(path).expect("read gpl-3.txt");
    text.repeat((1 << 20) / text.len() + 1)
}

fn bench(c: &mut Criterion) {
    let text = corpus();
    let opts = EncodeOptions {
        add_special: false,
        parse_special: false,
    };
    let mut group = c.benchmark_group("encode_1mb");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(text.len() as u64));
    for (name, file) in [
        ("smollm2_bpe", "SmolLM2-135M-Instruct.Q4_1.gguf"),
        ("gemma3_spm", "gemma-3-270m-q4_k_m.gguf"),
    ] {
        let f = model(file);
        let tok = Tokenizer::from_gguf(&f.gguf().expect("parse")).expect("tokenizer");
        group.bench_function(name, |b| b.iter(|| tok.encode(&text, opts)));
    }
    group.finish();

    let gemma = model("gemma-3-270m-q4_k_m.gguf");
    let g = gemma.gguf().expect("parse");
    let mut load = c.benchmark_group("load_vocab");
    load.sample_size(10);
    load.bench_function("gemma3_262k", |b| {
        b.iter(|| Tokenizer::from_gguf(&g).expect("tokenizer"));
    });
    load.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
