//! Parse time of the real models' headers: Gemma 3's 262,144-token vocabulary
//! dominates, so this measures metadata parsing at scale.
#![allow(missing_docs)]

use std::path::PathBuf;

use criterion::{Criterion, criterion_group, criterion_main};
use ferrolm_gguf::{Gguf, GgufFile};

fn model(file: &str) -> GgufFile {
    let dir = match std::env::var_os("FERROLM_HOME") {
        Some(home) => PathBuf::from(home).join("models"),
        None => dirs::cache_dir()
            .expect("no cache directory; set FERROLM_HOME")
            .join("ferrolm")
            .join("models"),
    };
    let path = dir.join(file);
    GgufFile::open(&path).unwrap_or_else(|e| panic!("{e}: run `cargo xtask fetch-models`"))
}

fn parse(c: &mut Criterion) {
    for (label, file) in [
        ("parse_gemma3_270m", "gemma-3-270m-q4_k_m.gguf"),
        ("parse_smollm2_135m", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    ] {
        let f = model(file);
        c.bench_function(label, |b| {
            b.iter(|| Gguf::parse(std::hint::black_box(f.bytes())).map(|g| g.metadata().len()));
        });
    }
}

criterion_group!(benches, parse);
criterion_main!(benches);
