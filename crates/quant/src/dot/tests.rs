//! SIMD kernels against the scalar references on seeded random inputs, and
//! the references against plain f64 arithmetic on decoded values.

use ferrolm_gguf::GgmlType;
use half::f16;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::F32Dot;
use super::activations::{ActOut, Planes, QuantizedActivations, quantize_reference};
use crate::simd::{self, Dequantizer, Isa};

/// Every weight type with an integer kernel.
pub(crate) const Q8_TYPES: [GgmlType; 12] = [
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Iq4Nl,
    GgmlType::Q2K,
    GgmlType::Q3K,
    GgmlType::Q4K,
    GgmlType::Q5K,
    GgmlType::Q6K,
    GgmlType::Iq4Xs,
];

pub(crate) fn cases() -> usize {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

/// Byte offsets of the f16 scale fields in a block of `ty`.
fn scale_offsets(ty: GgmlType) -> &'static [usize] {
    match ty {
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4K | GgmlType::Q5K => &[0, 2],
        GgmlType::Q2K => &[80, 82],
        GgmlType::Q3K => &[108],
        GgmlType::Q6K => &[208],
        GgmlType::F32 | GgmlType::F16 | GgmlType::Bf16 => &[],
        _ => &[0],
    }
}

/// A row of `blocks` random blocks of `ty`: random bits everywhere except
/// the f16 scales, which get finite values of either sign.
pub(crate) fn random_row(ty: GgmlType, blocks: usize, rng: &mut ChaCha8Rng) -> Vec<u8> {
    let size = ty.type_size();
    let mut row = vec![0u8; blocks * size];
    rng.fill(&mut row[..]);
    if ty == GgmlType::F32 {
        for w in row.chunks_exact_mut(4) {
            w.copy_from_slice(&rng.random_range(-2.0f32..2.0).to_le_bytes());
        }
        return row;
    }
    if matches!(ty, GgmlType::F16 | GgmlType::Bf16) {
        for w in row.chunks_exact_mut(2) {
            let v = rng.random_range(-2.0f32..2.0);
            let bits = if ty == GgmlType::F16 {
                f16::from_f32(v).to_le_bytes()
            } else {
                half::bf16::from_f32(v).to_le_bytes()
            };
            w.copy_from_slice(&bits);
        }
        return row;
    }
    for block in row.chunks_exact_mut(size) {
        for &off in scale_offsets(ty) {
            let v = rng.random_range(-0.05f32..0.05);
            block[off..off + 2].copy_from_slice(&f16::from_f32(v).to_le_bytes());
        }
    }
    row
}

/// Activations with blocks of very different magnitudes, as real ones have.
pub(crate) fn random_activations(n: usize, rng: &mut ChaCha8Rng) -> Vec<f32> {
    let mut x = vec![0.0f32; n];
    for block in x.chunks_mut(32) {
        let scale = 10f32.powf(rng.random_range(-2.0..1.5));
        for v in block.iter_mut() {
            *v = rng.random_range(-1.0f32..1.0) * scale;
        }
    }
    if n >= 64 {
        x[32..64].fill(0.0);
    }
    x
}

fn decode(ty: GgmlType, row: &[u8], n: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; n];
    crate::dequantize_row(ty, row, &mut out).expect("decodable row");
    out
}

fn elements(ty: GgmlType, blocks: usize) -> usize {
    blocks * ty.block_size()
}

/// Owned buffers for one quantizer run.
struct ActBufs {
    qs: Vec<i8>,
    qs2: Vec<i8>,
    d: Vec<f32>,
    dsum: Vec<f32>,
    sums16: Vec<i16>,
    sums16b: Vec<i16>,
}

impl ActBufs {
    fn new(n: usize, planes: Planes) -> Self {
        let second = if planes == Planes::Two { n } else { 0 };
        Self {
            qs: vec![0; n],
            qs2: vec![0; second],
            d: vec![0.0; n / 32],
            dsum: vec![0.0; n / 32],
            sums16: vec![0; n / 16],
            sums16b: vec![0; second / 16],
        }
    }

    fn out(&mut self) -> ActOut<'_> {
        ActOut {
            qs: &mut self.qs,
            qs2: &mut self.qs2,
            d: &mut self.d,
            dsum: &mut self.dsum,
            sums16: &mut self.sums16,
            sums16b: &mut self.sums16b,
        }
    }
}

#[test]
fn simd_activation_quantizer_is_bit_identical_to_scalar() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for _ in 0..cases() {
        let n = 32 * rng.random_range(1..40);
        let x = random_activations(n, &mut rng);
        for planes in [Planes::One, Planes::Two] {
            let mut a = ActBufs::new(n, planes);
            quantize_reference(&x, a.out());
            for isa in Isa::available() {
                let mut b = ActBufs::new(n, planes);
                simd::quantize_activations_with(isa, &x, b.out());
                assert_eq!(a.qs, b.qs, "{isa:?}");
                assert_eq!(a.qs2, b.qs2, "{isa:?}");
                assert_eq!(a.d, b.d, "{isa:?}");
                assert_eq!(a.dsum, b.dsum, "{isa:?}");
                assert_eq!(a.sums16, b.sums16, "{isa:?}");
                assert_eq!(a.sums16b, b.sums16b, "{isa:?}");
            }
        }
    }
}

#[test]
fn activation_quantizer_error_is_within_half_a_step() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let x = random_activations(32 * 64, &mut rng);
    let mut acts = QuantizedActivations::new();
    acts.quantize(&x, 32 * 16).expect("valid shape");
    assert_eq!((acts.rows(), acts.cols()), (4, 512));
    for r in 0..4 {
        let row = acts.row(r).expect("row in range");
        for (i, &v) in x[r * 512..(r + 1) * 512].iter().enumerate() {
            let step = row.d[i / 32];
            assert!(
                (row.value(i) - v).abs() <= 0.5 * step * 1.0001,
                "{i}: {v} vs {}",
                row.value(i)
            );
        }
        for (b, q) in row.qs.chunks(16).enumerate() {
            assert_eq!(row.sums16[b], q.iter().map(|&q| i16::from(q)).sum::<i16>());
        }
    }
    assert!(acts.row(4).is_none());
    assert!(acts.quantize(&x, 33).is_err());
}

#[test]
fn simd_dequantization_is_bit_identical_to_scalar() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let types = Q8_TYPES
        .iter()
        .copied()
        .chain([GgmlType::F16, GgmlType::Bf16]);
    for (ty, isa) in types.flat_map(|ty| Isa::available().into_iter().map(move |isa| (ty, isa))) {
        let dequant = Dequantizer::new(ty, isa).expect("decodable type");
        for _ in 0..cases() / 4 {
            let blocks = rng.random_range(1..6) * if ty.block_size() == 1 { 37 } else { 1 };
            let row = random_row(ty, blocks, &mut rng);
            let n = elements(ty, blocks);
            let expected = decode(ty, &row, n);
            let mut got = vec![0.0f32; n];
            dequant.run(&row, &mut got);
            for (i, (a, b)) in expected.iter().zip(&got).enumerate() {
                assert!(
                    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                    "{ty} {isa:?} element {i}: {a} vs {b}"
                );
            }
        }
    }
}

/// The references against f64 sums of decoded weights times decoded activations.
#[test]
fn reference_dots_match_decoded_arithmetic() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    for ty in Q8_TYPES {
        let kernel = simd::dot_q8_kernel(ty, Isa::Scalar).expect("kernel");
        for _ in 0..cases() / 4 {
            let blocks = rng.random_range(1..5) * 256 / ty.block_size();
            let n = elements(ty, blocks);
            let row = random_row(ty, blocks, &mut rng);
            let w = decode(ty, &row, n);
            let mut acts = QuantizedActivations::new();
            acts.quantize_planes(
                &random_activations(n, &mut rng),
                n,
                if rng.random() {
                    Planes::Two
                } else {
                    Planes::One
                },
            )
            .expect("shape");
            let act = acts.row(0).expect("row");
            let exact: f64 = (0..n)
                .map(|i| f64::from(w[i]) * f64::from(act.value(i)))
                .sum();
            let scale: f64 = (0..n)
                .map(|i| (f64::from(w[i]) * f64::from(act.value(i))).abs())
                .sum();
            let got = f64::from(kernel(&row, act));
            assert!(
                (got - exact).abs() <= 1e-5 * scale + 1e-6,
                "{ty}: {got} vs {exact} (scale {scale})"
            );
        }
    }
}

#[test]
fn simd_dots_match_scalar_references() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for (ty, isa) in Q8_TYPES
        .into_iter()
        .flat_map(|ty| Isa::available().into_iter().map(move |isa| (ty, isa)))
    {
        let fast = simd::dot_q8_kernel(ty, isa).expect("kernel");
        let slow = simd::dot_q8_kernel(ty, Isa::Scalar).expect("kernel");
        for _ in 0..cases() / 2 {
            let blocks = rng.random_range(1..9) * 256 / ty.block_size();
            let n = elements(ty, blocks);
            let row = random_row(ty, blocks, &mut rng);
            let w = decode(ty, &row, n);
            let mut acts = QuantizedActivations::new();
            acts.quantize_planes(
                &random_activations(n, &mut rng),
                n,
                if rng.random() {
                    Planes::Two
                } else {
                    Planes::One
                },
            )
            .expect("shape");
            let act = acts.row(0).expect("row");
            let scale: f32 = (0..n).map(|i| (w[i] * act.value(i)).abs()).sum();
            let (a, b) = (fast(&row, act), slow(&row, act));
            assert!(
                (a - b).abs() <= 1e-5 * scale + 1e-7,
                "{ty} {isa:?}: simd {a} vs scalar {b} (scale {scale})"
            );
        }
    }
}

/// Every level's kernels of the 32-value formats against the scalar
/// references on short rows of any block count, so that the multi-block
/// steps of the wide kernels and their leftover blocks are both exercised.
#[test]
fn simd_dots_match_scalar_references_at_odd_block_counts() {
    let mut rng = ChaCha8Rng::seed_from_u64(15);
    let types = [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Iq4Nl,
    ];
    for isa in Isa::available() {
        for ty in types {
            let fast = simd::dot_q8_kernel(ty, isa).expect("kernel");
            let slow = simd::dot_q8_kernel(ty, Isa::Scalar).expect("kernel");
            for blocks in 1..=23 {
                let n = elements(ty, blocks);
                let mut row = random_row(ty, blocks, &mut rng);
                if ty == GgmlType::Q8_0 {
                    // The most negative quant has no positive counterpart in i8.
                    row[2] = 0x80;
                }
                let w = decode(ty, &row, n);
                for planes in [Planes::One, Planes::Two] {
                    let mut acts = QuantizedActivations::new();
                    acts.quantize_planes(&random_activations(n, &mut rng), n, planes)
                        .expect("shape");
                    let act = acts.row(0).expect("row");
                    let scale: f32 = (0..n).map(|i| (w[i] * act.value(i)).abs()).sum();
                    let (a, b) = (fast(&row, act), slow(&row, act));
                    assert!(
                        (a - b).abs() <= 1e-5 * scale + 1e-7,
                        "{ty} {isa:?} {blocks} blocks {planes:?}: simd {a} vs scalar {b} (scale {scale})"
                    );
                }
            }
        }
    }
}

#[test]
fn f32_dots_match_decoded_arithmetic() {
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let types = Q8_TYPES
        .iter()
        .copied()
        .chain([GgmlType::F32, GgmlType::F16, GgmlType::Bf16]);
    for ty in types {
        for isa in Isa::available() {
            let dot = F32Dot::new(ty, isa).expect("f32 kernel");
            for _ in 0..cases() / 4 {
                let blocks = if ty.block_size() == 1 {
                    rng.random_range(1..700)
                } else {
                    rng.random_range(1..7) * 256 / ty.block_size()
                };
                let n = elements(ty, blocks);
                let row = random_row(ty, blocks, &mut rng);
                let w = decode(ty, &row, n);
                let x = random_activations(n, &mut rng);
                let exact: f64 = w
                    .iter()
                    .zip(&x)
                    .map(|(a, b)| f64::from(*a) * f64::from(*b))
                    .sum();
                let scale: f64 = w
                    .iter()
                    .zip(&x)
                    .map(|(a, b)| (f64::from(*a) * f64::from(*b)).abs())
                    .sum();
                let got = f64::from(dot.dot(&row, &x));
                assert!(
                    (got - exact).abs() <= 1e-5 * scale + 1e-7,
                    "{ty} {isa:?}: {got} vs {exact}"
                );
            }
        }
    }
}

#[test]
fn unaligned_rows_give_the_same_dots() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for ty in Q8_TYPES {
        let blocks = 512 / ty.block_size();
        let row = random_row(ty, blocks, &mut rng);
        let mut shifted = vec![0u8; row.len() + 1];
        shifted[1..].copy_from_slice(&row);
        let n = elements(ty, blocks);
        let mut acts = QuantizedActivations::new();
        acts.quantize_planes(
            &random_activations(n, &mut rng),
            n,
            if rng.random() {
                Planes::Two
            } else {
                Planes::One
            },
        )
        .expect("shape");
        let act = acts.row(0).expect("row");
        let a = super::dot_quantized(ty, &row, act).expect("dot");
        let b = super::dot_quantized(ty, &shifted[1..], act).expect("dot");
        assert!((a - b).abs() <= 1e-5 * a.abs().max(1.0), "{ty}: {a} vs {b}");
    }
}

#[test]
fn public_dots_reject_bad_lengths_and_types() {
    let mut acts = QuantizedActivations::new();
    acts.quantize(&[0.5; 64], 64).expect("shape");
    let act = acts.row(0).expect("row");
    assert!(super::dot_quantized(GgmlType::Q4_0, &[0u8; 35], act).is_err());
    assert!(super::dot_quantized(GgmlType::F32, &[0u8; 256], act).is_err());
    assert!(super::dot_quantized(GgmlType::Q4K, &[0u8; 144], act).is_err());
    assert!(super::dot_f32(GgmlType::F16, &[0u8; 6], &[1.0; 2]).is_err());
    assert!(super::dot_f32(GgmlType::Iq2Xxs, &[0u8; 66], &[1.0; 256]).is_err());
    let ones = half::f16::from_f32(1.0).to_le_bytes();
    let row: Vec<u8> = ones.iter().copied().cycle().take(128).collect();
    assert_eq!(
        super::dot_f32(GgmlType::F16, &row, &[0.5; 64]).expect("dot"),
        32.0
    );
    assert!(super::supports_quantized(GgmlType::Q6K) && !super::supports_quantized(GgmlType::Bf16));
    assert!(super::supports_f32(GgmlType::Bf16) && !super::supports_f32(GgmlType::Q8K));
}

/// The multi-row kernels against the scalar reference row by row: odd row
/// counts (so the leftover rows after the four-row steps run too), odd and
/// even block counts, rows starting at odd addresses, both plane counts.
#[test]
fn multi_row_kernels_match_scalar_references() {
    let mut rng = ChaCha8Rng::seed_from_u64(16);
    for isa in Isa::available() {
        for ty in Q8_TYPES {
            let Some(multi) = simd::dot_q8_rows_kernel(ty, isa) else {
                continue;
            };
            let slow = simd::dot_q8_kernel(ty, Isa::Scalar).expect("kernel");
            for case in 0..cases() / 4 + 4 {
                // Past 16 blocks the scale gathers take more than one step.
                let blocks = if ty.block_size() == 32 {
                    rng.random_range(1..45)
                } else {
                    rng.random_range(1..5)
                };
                let n = elements(ty, blocks);
                let rows = rng.random_range(1..12);
                // Rows at odd addresses every other case.
                let pad = case % 2;
                let mut data = vec![0u8; pad];
                for _ in 0..rows {
                    let mut row = random_row(ty, blocks, &mut rng);
                    if ty == GgmlType::Q8_0 {
                        row[2] = 0x80;
                    }
                    data.extend_from_slice(&row);
                }
                let data = &data[pad..];
                let row_bytes = data.len() / rows;
                for planes in [Planes::One, Planes::Two] {
                    let mut acts = QuantizedActivations::new();
                    acts.quantize_planes(&random_activations(n, &mut rng), n, planes)
                        .expect("shape");
                    let act = acts.row(0).expect("row");
                    let mut got = vec![f32::NAN; rows];
                    multi(data, row_bytes, act, &mut got);
                    for (r, (row, &a)) in data.chunks_exact(row_bytes).zip(&got).enumerate() {
                        let w = decode(ty, row, n);
                        let scale: f32 = (0..n).map(|i| (w[i] * act.value(i)).abs()).sum();
                        let b = slow(row, act);
                        assert!(
                            (a - b).abs() <= 1e-5 * scale + 1e-7,
                            "{ty} {isa:?} {blocks} blocks row {r}/{rows} {planes:?}: {a} vs {b}"
                        );
                    }
                    let mut alone = [f32::NAN];
                    multi(&data[..row_bytes], row_bytes, act, &mut alone);
                    assert_eq!(
                        alone[0].to_bits(),
                        got[0].to_bits(),
                        "{ty} {isa:?}: a row alone differs from the same row in a group"
                    );
                }
            }
        }
    }
}
