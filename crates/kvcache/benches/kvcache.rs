//! Cost of appending tokens and of reading a head's cache, at SmolLM2-135M's
//! shape (30 layers, 3 KV heads of 64).

// criterion's macros generate undocumented items.
#![allow(missing_docs)]

use criterion::{BenchmarkId, Criterion, black_box, criterion_group, criterion_main};
use ferrolm_kvcache::half::f16;
use ferrolm_kvcache::{KvCacheConfig, KvElement, PagedKvCache};

const LAYERS: usize = 30;
const HEADS: usize = 3;
const DIM: usize = 64;
const BLOCK: usize = 16;
const CONTEXT: usize = 4096;

fn cache<T: KvElement>() -> PagedKvCache<T> {
    PagedKvCache::new(
        KvCacheConfig::for_tokens(LAYERS, HEADS, DIM, BLOCK, CONTEXT).expect("valid shape"),
    )
    .expect("allocates")
}

fn rows(n_tokens: usize) -> Vec<f32> {
    (0..n_tokens * HEADS * DIM)
        .map(|i| ((i * 7919) % 1000) as f32 * 1e-3 - 0.5)
        .collect()
}

fn append_one_token<T: KvElement>(c: &mut Criterion, name: &str) {
    let mut cache = cache::<T>();
    let seq = cache.create_sequence();
    let row = rows(1);
    c.bench_function(&format!("decode_append_{name}"), |b| {
        b.iter(|| {
            if cache.len(seq).expect("live") == CONTEXT {
                cache.truncate(seq, 0).expect("live");
            }
            let pos = cache.append(seq, 1).expect("room").start;
            for layer in 0..LAYERS {
                cache
                    .write(seq, layer, pos, black_box(&row), black_box(&row))
                    .expect("reserved");
            }
        });
    });
}

fn prefill_512<T: KvElement>(c: &mut Criterion, name: &str) {
    let mut cache = cache::<T>();
    let seq = cache.create_sequence();
    let block = rows(512);
    c.bench_function(&format!("prefill_512_one_layer_{name}"), |b| {
        b.iter(|| {
            cache.truncate(seq, 0).expect("live");
            let pos = cache.append(seq, 512).expect("room").start;
            cache
                .write(seq, 0, pos, black_box(&block), black_box(&block))
                .expect("reserved");
        });
    });
}

/// Reads every key of one layer (all heads) as attention scores would,
/// widening a block at a time into a scratch buffer.
fn read_layer<T: KvElement>(c: &mut Criterion, name: &str) {
    let mut cache = cache::<T>();
    let seq = cache.create_sequence();
    let mut group = c.benchmark_group(format!("read_layer_{name}"));
    for len in [512usize, 2048] {
        cache.truncate(seq, 0).expect("live");
        let pos = cache.append(seq, len).expect("room").start;
        let block = rows(len);
        cache.write(seq, 0, pos, &block, &block).expect("reserved");
        let q = vec![0.25_f32; DIM];
        let mut scratch = vec![0.0_f32; BLOCK * DIM];
        group.bench_with_input(BenchmarkId::from_parameter(len), &len, |b, _| {
            b.iter(|| {
                let mut total = 0.0_f32;
                for head in 0..HEADS {
                    for blk in cache.head_blocks(seq, 0, head).expect("valid") {
                        let keys = &mut scratch[..blk.keys.len()];
                        T::load(keys, blk.keys);
                        for key in keys.chunks_exact(DIM) {
                            total += key.iter().zip(&q).map(|(k, q)| k * q).sum::<f32>();
                        }
                    }
                }
                black_box(total)
            });
        });
    }
    group.finish();
}

fn benches(c: &mut Criterion) {
    append_one_token::<f32>(c, "f32");
    append_one_token::<f16>(c, "f16");
    prefill_512::<f32>(c, "f32");
    prefill_512::<f16>(c, "f16");
    read_layer::<f32>(c, "f32");
    read_layer::<f16>(c, "f16");
}

criterion_group!(kvcache, benches);
criterion_main!(kvcache);
