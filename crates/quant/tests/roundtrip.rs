//! Quantize → dequantize error bounds for every format.

use ferrolm_quant::{GgmlType, dequantize_row, quantize_row, row_size};
use proptest::prelude::*;

fn round_trip(ty: GgmlType, src: &[f32]) -> Vec<f32> {
    let mut bytes = vec![0u8; row_size(ty, src.len()).expect("whole blocks")];
    quantize_row(ty, src, &mut bytes).expect("encodes");
    let mut out = vec![0.0f32; src.len()];
    dequantize_row(ty, &bytes, &mut out).expect("decodes");
    out
}

fn rmse(a: &[f32], b: &[f32]) -> f32 {
    let sse: f64 = a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum();
    (sse / a.len() as f64).sqrt() as f32
}

/// Per format: the largest error of one element, and the largest RMSE of one
/// block (a super-block for the K-quants), each relative to the block's
/// largest magnitude. The element bounds of the plain formats follow from
/// their grids: half a step, or a whole step where the reference clamps the
/// value opposite the largest one, plus the f16 rounding of the scales. The
/// bounds of the searched formats have a margin of about 15% over the worst
/// case seen on 12,000 random blocks of the shapes below. Every bound also
/// allows [`F16_FLOOR`] in absolute terms.
const BOUNDS: [(GgmlType, f32, f32); 17] = [
    (GgmlType::F32, 0.0, 0.0),
    (GgmlType::F16, 1.0 / 2048.0, 1.0 / 2048.0),
    (GgmlType::Bf16, 1.0 / 256.0, 1.0 / 256.0),
    (GgmlType::Q8_0, 1.0 / 254.0 + 1.0 / 2048.0, 1.0 / 254.0),
    (GgmlType::Q8_1, 1.0 / 254.0 + 1.0 / 2048.0, 1.0 / 254.0),
    (GgmlType::Q4_0, 1.0 / 8.0 + 1.0 / 256.0, 0.065),
    (GgmlType::Q4_1, 1.0 / 15.0 + 1.0 / 256.0, 0.06),
    (GgmlType::Q5_0, 1.0 / 16.0 + 1.0 / 256.0, 0.032),
    (GgmlType::Q5_1, 1.0 / 31.0 + 1.0 / 256.0, 0.028),
    (GgmlType::Q8K, 1.0 / 254.0 + 1e-6, 1.0 / 254.0),
    (GgmlType::Q2K, 0.6, 0.17),
    (GgmlType::Q3K, 0.32, 0.095),
    (GgmlType::Q4K, 0.14, 0.04),
    (GgmlType::Q5K, 0.09, 0.021),
    (GgmlType::Q6K, 0.07, 0.018),
    (GgmlType::Iq4Nl, 0.17, 0.056),
    (GgmlType::Iq4Xs, 0.19, 0.056),
];

/// Below 2^-14 an f16 scale is subnormal, with an absolute resolution of
/// 2^-24; a 6-bit sub-scale times a 5-bit quant times that, rounded up, is
/// the smallest error the formats can promise for tiny blocks.
const F16_FLOOR: f32 = 4e-5;

fn check_bounds(
    ty: GgmlType,
    src: &[f32],
    max_rel: f32,
    rmse_rel: f32,
) -> Result<(), TestCaseError> {
    let out = round_trip(ty, src);
    let block = ty.block_size().max(32);
    for (x, y) in src.chunks(block).zip(out.chunks(block)) {
        let amax = x.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        let worst = x
            .iter()
            .zip(y)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        prop_assert!(
            worst <= max_rel * amax + F16_FLOOR,
            "{}: element error {} > {} * {}",
            ty,
            worst,
            max_rel,
            amax
        );
        let r = rmse(x, y);
        prop_assert!(
            r <= rmse_rel * amax + F16_FLOOR,
            "{}: rmse {} > {} * {}",
            ty,
            r,
            rmse_rel,
            amax
        );
    }
    Ok(())
}

/// Rows of 256..768 values of one magnitude (1e-3 .. 1e3), drawn from a mix
/// of shapes: uniform, cubed (peaked at zero), all positive, and exponential
/// (heavy outliers).
fn rows() -> impl Strategy<Value = Vec<f32>> {
    (1usize..=3, -3i32..=3, 0u8..4).prop_flat_map(|(blocks, exp, shape)| {
        let scale = 10f32.powi(exp);
        prop::collection::vec(-1.0f32..1.0, blocks * 256).prop_map(move |v| {
            v.into_iter()
                .map(|u| {
                    scale
                        * match shape {
                            0 => u,
                            1 => u * u * u,
                            2 => u.abs() + 0.25,
                            _ => u.signum() * (u.abs() * 3.0).exp(),
                        }
                })
                .collect()
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn round_trip_error_is_bounded_for_every_format(src in rows()) {
        for (ty, max_rel, rmse_rel) in BOUNDS {
            check_bounds(ty, &src, max_rel, rmse_rel)?;
        }
    }

    #[test]
    fn quantizing_is_deterministic_and_decodes_to_finite_values(src in rows()) {
        for (ty, _, _) in BOUNDS {
            let a = round_trip(ty, &src);
            let b = round_trip(ty, &src);
            prop_assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()), "{}", ty);
            prop_assert!(a.iter().all(|v| v.is_finite()), "{}", ty);
        }
    }
}

/// 64 cases unless `PROPTEST_CASES` asks for more.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}
