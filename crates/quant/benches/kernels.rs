//! Throughput of the per-row kernels, in bytes of weights per second, next
//! to a plain memory copy of the same bytes: decoding to f32 and dot
//! products against 8-bit and f32 activations, one thread.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ferrolm_quant::{
    GgmlType, MatScratch, Precision, QMatrix, QuantizedActivations, dot, quantize_row, row_size,
};

const ROWS: usize = 1024;
const COLS: usize = 2048;

const TYPES: [GgmlType; 15] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::Bf16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2K,
    GgmlType::Q3K,
    GgmlType::Q4K,
    GgmlType::Q5K,
    GgmlType::Q6K,
    GgmlType::Iq4Nl,
    GgmlType::Iq4Xs,
];

/// Pseudo-random values in -1..1 (a fixed LCG, so runs are comparable).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// `rows` rows of `ty`: 16 quantized rows repeated (speed does not depend on values).
pub fn weights(ty: GgmlType, rows: usize, cols: usize) -> Vec<u8> {
    let row_bytes = row_size(ty, cols).expect("row size");
    let src = values(16 * cols, 7);
    let mut base = vec![0u8; 16 * row_bytes];
    for (s, d) in src.chunks(cols).zip(base.chunks_mut(row_bytes)) {
        if quantize_row(ty, s, d).is_err() {
            // Types without a quantizer here: the Q4_0-like layout with sane f16 scales.
            for block in d.chunks_mut(ty.type_size()) {
                block.fill(0x5a);
                block[..2].copy_from_slice(&half::f16::from_f32(0.01).to_le_bytes());
            }
        }
    }
    base.iter()
        .copied()
        .cycle()
        .take(rows * row_bytes)
        .collect()
}

fn copy(c: &mut Criterion) {
    let bytes = row_size(GgmlType::Q4_0, COLS).expect("row size") * ROWS;
    let src = vec![1u8; bytes];
    let mut dst = vec![0u8; bytes];
    let mut g = c.benchmark_group("memcpy");
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("q4_0-sized", |b| {
        b.iter(|| {
            dst.copy_from_slice(black_box(&src));
            black_box(&mut dst);
        });
    });
    g.finish();
}

fn kernels(c: &mut Criterion) {
    let x = values(COLS, 3);
    let mut acts = QuantizedActivations::new();
    acts.quantize(&x, COLS).expect("quantize");
    let act = acts.row(0).expect("row");
    let mut out = vec![0.0f32; COLS];
    for ty in TYPES {
        let data = weights(ty, ROWS, COLS);
        let m = QMatrix::new(ty, ROWS, COLS, &data).expect("matrix");
        let mut g = c.benchmark_group(ty.name());
        g.throughput(Throughput::Bytes(data.len() as u64));
        g.bench_function("dequantize", |b| {
            b.iter(|| {
                for r in 0..ROWS {
                    m.dequantize_row(r, &mut out).expect("dequantize");
                }
                black_box(&out);
            });
        });
        if dot::supports_quantized(ty) {
            g.bench_function("dot_q8", |b| {
                b.iter(|| {
                    let mut s = 0.0;
                    for r in 0..ROWS {
                        s += dot::dot_quantized(ty, m.row(r).expect("row"), act).expect("dot");
                    }
                    black_box(s)
                });
            });
        }
        g.bench_function("dot_f32", |b| {
            b.iter(|| {
                let mut s = 0.0;
                for r in 0..ROWS {
                    s += dot::dot_f32(ty, m.row(r).expect("row"), &x).expect("dot");
                }
                black_box(s)
            });
        });
        g.finish();
    }
    let _ = (MatScratch::new(Precision::Q8), Precision::F32);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    targets = copy, kernels
}
criterion_main!(benches);
