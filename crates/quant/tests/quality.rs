//! How good the quantizers are: ggml's own acceptance test, and RMSE against
//! plain rounding on Gaussian data.

use ferrolm_quant::{GgmlType, dequantize_row, quantize_row, row_size};
use rand::Rng;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn round_trip(ty: GgmlType, src: &[f32]) -> Vec<f32> {
    let mut bytes = vec![0u8; row_size(ty, src.len()).expect("whole blocks")];
    quantize_row(ty, src, &mut bytes).expect("encodes");
    let mut out = vec![0.0f32; src.len()];
    dequantize_row(ty, &bytes, &mut out).expect("decodes");
    out
}

fn sse(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum()
}

fn rmse(a: &[f32], b: &[f32]) -> f64 {
    (sse(a, b) / a.len() as f64).sqrt()
}

/// ggml's `test-quantize-fns`: data `0.1 + 2 cos(i)` over 4096 values, error
/// `sqrt(SSE) / n`, limits 0.002 (0.0075 for 2-bit, 0.004 for 3-bit types).
#[test]
fn errors_are_within_ggml_test_quantize_fns_limits() {
    let n = 32 * 128;
    let src: Vec<f32> = (0..n).map(|i| 0.1 + 2.0 * (i as f32).cos()).collect();
    for ty in [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q8_1,
        GgmlType::Q2K,
        GgmlType::Q3K,
        GgmlType::Q4K,
        GgmlType::Q5K,
        GgmlType::Q6K,
        GgmlType::Q8K,
        GgmlType::Iq4Nl,
        GgmlType::Iq4Xs,
    ] {
        let limit = match ty {
            GgmlType::Q2K => 0.0075,
            GgmlType::Q3K => 0.0040,
            _ => 0.002,
        };
        let err = sse(&src, &round_trip(ty, &src)).sqrt() / n as f64;
        eprintln!("{ty}: {err:.6} (limit {limit})");
        assert!(err < limit, "{ty}: {err} >= {limit}");
    }
}

/// Plain rounding with exact (unquantized) f32 scales per sub-block and no
/// search: the affine grid spans `[min(x, 0), max(x)]`, the symmetric grid
/// maps the largest magnitude to the most negative level.
fn plain_rounding(src: &[f32], sub: usize, affine: bool, nmax: i32) -> Vec<f32> {
    let mut out = Vec::with_capacity(src.len());
    for x in src.chunks(sub) {
        if affine {
            let min = x.iter().copied().fold(0.0f32, f32::min);
            let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let d = (max - min) / nmax as f32;
            out.extend(x.iter().map(|&v| {
                let q = ((v - min) / d).round().clamp(0.0, nmax as f32);
                d * q + min
            }));
        } else {
            let max = x
                .iter()
                .copied()
                .fold(0.0f32, |m, v| if v.abs() > m.abs() { v } else { m });
            let d = max / -(nmax as f32);
            out.extend(x.iter().map(|&v| {
                let q = (v / d).round().clamp(-(nmax as f32), nmax as f32 - 1.0);
                d * q
            }));
        }
    }
    out
}

fn gaussian(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            // Box-Muller.
            let u1: f32 = rng.random_range(f32::EPSILON..1.0);
            let u2: f32 = rng.random();
            (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
        })
        .collect()
}

/// The K-quants' searched scales beat plain rounding with exact f32 scales,
/// although they also pay for storing their scales in 4 to 8 bits.
#[test]
fn k_quant_searches_beat_plain_rounding_on_gaussian_data() {
    let src = gaussian(256 * 64, 11);
    // (type, sub-block, affine, levels, required ratio rmse / plain rmse)
    let cases = [
        (GgmlType::Q2K, 16, true, 3, 0.86),
        (GgmlType::Q3K, 16, false, 4, 0.97),
        (GgmlType::Q4K, 32, true, 15, 0.93),
        (GgmlType::Q5K, 32, true, 31, 0.95),
        (GgmlType::Q6K, 16, false, 32, 0.96),
    ];
    for (ty, sub, affine, nmax, ratio) in cases {
        let ours = rmse(&src, &round_trip(ty, &src));
        let plain = rmse(&src, &plain_rounding(&src, sub, affine, nmax));
        eprintln!(
            "{ty}: rmse {ours:.5}, plain rounding {plain:.5}, ratio {:.3}",
            ours / plain
        );
        assert!(ours < ratio * plain, "{ty}: {ours} vs plain {plain}");
    }
}
