//! Cost of one token's sampling on Gemma-sized rows (262,144 logits).

// criterion's macros generate undocumented items.
#![allow(missing_docs)]

use criterion::{Criterion, black_box, criterion_group, criterion_main};
use ferrolm_sampling::{Candidates, Preset, SamplingConfig, log_softmax_in_place};

const N_VOCAB: usize = 262_144;

/// Logits shaped like a model's: mostly low, a heavy tail of plausible tokens.
fn logits() -> Vec<f32> {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    (0..N_VOCAB)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let u = (state >> 40) as f32 / (1u64 << 24) as f32;
            let v = -(1.0 - u).ln();
            8.0 * v - 10.0
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let row = logits();
    let mut group = c.benchmark_group("sample_262144");
    for preset in [Preset::Standard, Preset::Greedy, Preset::MinP] {
        let mut chain = SamplingConfig::preset(preset)
            .build()
            .expect("valid preset");
        group.bench_function(preset.name(), |b| {
            b.iter(|| chain.sample(black_box(&row)).expect("selectable"));
        });
    }
    let mut top_p_only = SamplingConfig {
        top_k: 0,
        min_p: 0.0,
        ..SamplingConfig::default()
    }
    .build()
    .expect("valid config");
    group.bench_function("top-p-without-top-k", |b| {
        b.iter(|| top_p_only.sample(black_box(&row)).expect("selectable"));
    });
    let mut candidates = Candidates::with_capacity(N_VOCAB);
    group.bench_function("fill", |b| {
        b.iter(|| candidates.fill(black_box(&row)).expect("non-empty"));
    });
    let mut scratch = row.clone();
    group.bench_function("log_softmax", |b| {
        b.iter(|| {
            scratch.copy_from_slice(&row);
            log_softmax_in_place(black_box(&mut scratch)).expect("finite");
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
