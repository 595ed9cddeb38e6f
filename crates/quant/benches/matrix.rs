//! Matrix-vector (decode) and matrix-matrix (prefill, 512 rows; small
//! batches, 4 rows) products on two threads, at each precision, for shapes
//! of the real models and of an 8B model's FFN.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ferrolm_quant::{GgmlType, MatScratch, Precision, QMatrix, quantize_row, row_size};
use rayon::prelude::*;

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

fn weights(ty: GgmlType, rows: usize, cols: usize) -> Vec<u8> {
    let row_bytes = row_size(ty, cols).expect("row size");
    let src = values(16 * cols, 7);
    let mut base = vec![0u8; 16 * row_bytes];
    for (s, d) in src.chunks(cols).zip(base.chunks_mut(row_bytes)) {
        quantize_row(ty, s, d).expect("quantize");
    }
    base.iter()
        .copied()
        .cycle()
        .take(rows * row_bytes)
        .collect()
}

const THREADS: usize = 2;

fn pool() -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(THREADS)
        .build()
        .expect("thread pool")
}

fn matvec(c: &mut Criterion) {
    let pool = pool();
    let shapes = [
        (GgmlType::Q4_1, 576, 1536),
        (GgmlType::Q8_0, 576, 1536),
        (GgmlType::Q5_0, 640, 2048),
        (GgmlType::Q8_0, 640, 262_144),
        (GgmlType::Q4K, 1024, 640),
        (GgmlType::Q6K, 2048, 640),
        (GgmlType::Q4K, 4096, 14336),
    ];
    let mut g = c.benchmark_group("matvec");
    for (ty, cols, rows) in shapes {
        let data = weights(ty, rows, cols);
        let m = QMatrix::new(ty, rows, cols, &data).expect("matrix");
        let x = values(cols, 3);
        let mut y = vec![0.0f32; rows];
        g.throughput(Throughput::Bytes(data.len() as u64));
        for precision in [Precision::Q8, Precision::Q16, Precision::F32] {
            let mut scratch = MatScratch::new(precision);
            let id = format!("{}/{cols}x{rows}/{precision:?}", ty.name());
            g.bench_function(id, |b| {
                pool.install(|| {
                    b.iter(|| {
                        m.matvec(black_box(&x), &mut y, &mut scratch)
                            .expect("matvec");
                    });
                });
            });
        }
    }
    g.finish();
}

/// Gemma 3's tied output head (262144 × 640, Q8_0, 178 MB) against one
/// vector, next to a plain two-thread read of the same bytes: the bound a
/// memory-bound kernel can reach.
fn head(c: &mut Criterion) {
    let pool = pool();
    let (ty, cols, rows) = (GgmlType::Q8_0, 640, 262_144);
    let data = weights(ty, rows, cols);
    let m = QMatrix::new(ty, rows, cols, &data).expect("matrix");
    let x = values(cols, 3);
    let mut y = vec![0.0f32; rows];
    let mut g = c.benchmark_group("head");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("read", |b| {
        pool.install(|| {
            b.iter(|| {
                let per_thread = data.len().div_ceil(THREADS);
                data.par_chunks(per_thread)
                    .map(|c| {
                        let (words, _) = c.as_chunks::<64>();
                        words.iter().fold(0u8, |acc, w| acc ^ w[0] ^ w[63])
                    })
                    .reduce(|| 0, |a, b| a ^ b)
            });
        });
    });
    for precision in [Precision::Q8, Precision::Q16] {
        let mut scratch = MatScratch::new(precision);
        let id = format!("{}/{cols}x{rows}/{precision:?}", ty.name());
        g.bench_function(id, |b| {
            pool.install(|| {
                b.iter(|| {
                    m.matvec(black_box(&x), &mut y, &mut scratch)
                        .expect("matvec");
                });
            });
        });
    }
    // Four sequences decoding together: still one pass over the weights.
    let x4 = values(4 * cols, 5);
    let mut y4 = vec![0.0f32; 4 * rows];
    let mut scratch = MatScratch::new(Precision::Q8);
    g.bench_function(format!("{}/{cols}x{rows}/Q8x4", ty.name()), |b| {
        pool.install(|| {
            b.iter(|| {
                m.matmul(black_box(&x4), 4, &mut y4, &mut scratch)
                    .expect("matmul");
            });
        });
    });
    g.finish();
}

fn matmul(c: &mut Criterion) {
    let pool = pool();
    let shapes = [
        (GgmlType::Q4_1, 576, 1536),
        (GgmlType::Q5_0, 640, 2048),
        (GgmlType::Q4K, 1024, 640),
        (GgmlType::Q6K, 2048, 640),
    ];
    // 512 rows (prefill) always take the exact f32 kernels; 4 rows (a few
    // sequences decoding together) take the integer ones at Q8.
    for (n, precisions) in [
        (512, &[Precision::F32][..]),
        (4, &[Precision::Q8, Precision::F32][..]),
    ] {
        let mut g = c.benchmark_group(format!("matmul{n}"));
        for (ty, cols, rows) in shapes {
            let data = weights(ty, rows, cols);
            let m = QMatrix::new(ty, rows, cols, &data).expect("matrix");
            let x = values(n * cols, 3);
            let mut y = vec![0.0f32; n * rows];
            // Elements: multiply-adds per call.
            g.throughput(Throughput::Elements((n * rows * cols) as u64));
            for &precision in precisions {
                let mut scratch = MatScratch::new(precision);
                let id = format!("{}/{cols}x{rows}/{precision:?}", ty.name());
                g.bench_function(id, |b| {
                    pool.install(|| {
                        b.iter(|| {
                            m.matmul(black_box(&x), n, &mut y, &mut scratch)
                                .expect("matmul");
                        });
                    });
                });
            }
        }
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    targets = matvec, head, matmul
}
criterion_main!(benches);
