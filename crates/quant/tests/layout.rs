//! Dequantization of random valid blocks equals a straightforward decoding of
//! the documented byte layout, written here element by element from byte
//! offsets and bit positions.

use ferrolm_quant::{GgmlType, dequantize_row};
use half::f16;
use proptest::prelude::*;

const IQ4_LEVELS: [f32; 16] = [
    -127.0, -104.0, -83.0, -65.0, -49.0, -35.0, -22.0, -10.0, 1.0, 13.0, 25.0, 38.0, 53.0, 69.0,
    89.0, 113.0,
];

fn h(b: &[u8], off: usize) -> f32 {
    f16::from_le_bytes([b[off], b[off + 1]]).to_f32()
}

/// The nibble of element `i` (0..32) in a 16-byte run at `off`: elements
/// 0..16 in the low nibbles, 16..32 in the high nibbles.
fn nibble32(b: &[u8], off: usize, i: usize) -> u8 {
    let byte = b[off + i % 16];
    if i < 16 { byte & 15 } else { byte >> 4 }
}

/// Bit `i` of the little-endian bit string starting at `off`.
fn bit(b: &[u8], off: usize, i: usize) -> u8 {
    (b[off + i / 8] >> (i % 8)) & 1
}

/// The 2-bit field of element `e` (0..256) in a 64-byte run at `off`: each
/// half of 128 elements uses 32 bytes, element `32j + l` of the half sits in
/// bits `2j..2j+2` of byte `l`.
fn crumb(b: &[u8], off: usize, e: usize) -> u8 {
    let (half, r) = (e / 128, e % 128);
    (b[off + 32 * half + r % 32] >> (2 * (r / 32))) & 3
}

/// The 4-bit field of element `e` (0..256) in a 128-byte run at `off`: each
/// group of 64 uses 32 bytes, low nibbles first.
fn nibble256(b: &[u8], off: usize, e: usize) -> u8 {
    let (group, r) = (e / 64, e % 64);
    let byte = b[off + 32 * group + r % 32];
    if r < 32 { byte & 15 } else { byte >> 4 }
}

/// Q4_K/Q5_K scales: the 12 bytes are three rows of four, `d`, `m`, `md`;
/// sub-block `s < 4` has scale `d[s] & 63`, min `m[s] & 63`; sub-block
/// `s >= 4` has scale `md[s-4] & 15 | (d[s-4] >> 6) << 4` and min
/// `md[s-4] >> 4 | (m[s-4] >> 6) << 4`.
fn k4_scale_min(sc: &[u8], s: usize) -> (f32, f32) {
    let (d, m, md) = (&sc[0..4], &sc[4..8], &sc[8..12]);
    if s < 4 {
        (f32::from(d[s] & 63), f32::from(m[s] & 63))
    } else {
        let t = s - 4;
        (
            f32::from((md[t] & 15) | ((d[t] >> 6) << 4)),
            f32::from((md[t] >> 4) | ((m[t] >> 6) << 4)),
        )
    }
}

/// Decodes element `e` of one block of `ty`.
fn decode(ty: GgmlType, b: &[u8], e: usize) -> f32 {
    match ty {
        GgmlType::Q4_0 => (f32::from(nibble32(b, 2, e)) - 8.0) * h(b, 0),
        GgmlType::Q4_1 => f32::from(nibble32(b, 4, e)) * h(b, 0) + h(b, 2),
        GgmlType::Q5_0 => {
            let q = nibble32(b, 6, e) | (bit(b, 2, e) << 4);
            (f32::from(q) - 16.0) * h(b, 0)
        }
        GgmlType::Q5_1 => {
            let q = nibble32(b, 8, e) | (bit(b, 4, e) << 4);
            f32::from(q) * h(b, 0) + h(b, 2)
        }
        GgmlType::Q8_0 => f32::from(b[2 + e] as i8) * h(b, 0),
        GgmlType::Q8_1 => f32::from(b[4 + e] as i8) * h(b, 0),
        GgmlType::Q2K => {
            let sc = b[e / 16];
            let dl = h(b, 80) * f32::from(sc & 15);
            let ml = h(b, 82) * f32::from(sc >> 4);
            dl * f32::from(crumb(b, 16, e)) - ml
        }
        GgmlType::Q3K => {
            let s = e / 16;
            let low = (b[96 + s % 8] >> (4 * (s / 8))) & 15;
            let high = (b[96 + 8 + s % 4] >> (2 * (s / 4))) & 3;
            let scale = f32::from(low | (high << 4)) - 32.0;
            let q = f32::from(crumb(b, 32, e))
                - if bit(b, 0, (e % 32) * 8 + e / 32) == 1 {
                    0.0
                } else {
                    4.0
                };
            h(b, 108) * scale * q
        }
        GgmlType::Q4K => {
            let (sc, m) = k4_scale_min(&b[4..16], e / 32);
            h(b, 0) * sc * f32::from(nibble256(b, 16, e)) - h(b, 2) * m
        }
        GgmlType::Q5K => {
            let (sc, m) = k4_scale_min(&b[4..16], e / 32);
            let q = nibble256(b, 48, e) | (bit(b, 16, (e % 32) * 8 + e / 32) << 4);
            h(b, 0) * sc * f32::from(q) - h(b, 2) * m
        }
        GgmlType::Q6K => {
            // Low nibbles: each half of 128 uses 64 bytes; elements 32j + l
            // use byte (j % 2) * 32 + l, low nibble for j < 2.
            let (half, r) = (e / 128, e % 128);
            let (j, l) = (r / 32, r % 32);
            let byte = b[64 * half + 32 * (j % 2) + l];
            let low = if j < 2 { byte & 15 } else { byte >> 4 };
            let high = crumb(b, 128, e);
            let q = f32::from(low | (high << 4)) - 32.0;
            h(b, 208) * f32::from(b[192 + e / 16] as i8) * q
        }
        GgmlType::Q8K => {
            let d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            d * f32::from(b[4 + e] as i8)
        }
        GgmlType::Iq4Nl => h(b, 0) * IQ4_LEVELS[usize::from(nibble32(b, 2, e))],
        GgmlType::Iq4Xs => {
            let s = e / 32;
            let scales_h = u16::from_le_bytes([b[2], b[3]]);
            let low = (b[4 + s / 2] >> (4 * (s % 2))) & 15;
            let high = ((scales_h >> (2 * s)) & 3) as u8;
            let dl = h(b, 0) * (f32::from(low | (high << 4)) - 32.0);
            dl * IQ4_LEVELS[usize::from(nibble32(b, 8 + 16 * s, e % 32))]
        }
        _ => unreachable!("not a block format under test"),
    }
}

/// (type, block bytes, offsets of f16 scale fields)
const FORMATS: [(GgmlType, usize, &[usize]); 14] = [
    (GgmlType::Q4_0, 18, &[0]),
    (GgmlType::Q4_1, 20, &[0, 2]),
    (GgmlType::Q5_0, 22, &[0]),
    (GgmlType::Q5_1, 24, &[0, 2]),
    (GgmlType::Q8_0, 34, &[0]),
    (GgmlType::Q8_1, 36, &[0, 2]),
    (GgmlType::Q2K, 84, &[80, 82]),
    (GgmlType::Q3K, 110, &[108]),
    (GgmlType::Q4K, 144, &[0, 2]),
    (GgmlType::Q5K, 176, &[0, 2]),
    (GgmlType::Q6K, 210, &[208]),
    (GgmlType::Q8K, 292, &[]),
    (GgmlType::Iq4Nl, 18, &[0]),
    (GgmlType::Iq4Xs, 136, &[0]),
];

/// Random bytes for `n` blocks with every scale field a finite value
/// (an f16 field could otherwise hold NaN or infinity).
fn blocks(
    size: usize,
    scale_offsets: &'static [usize],
    is_q8k: bool,
) -> impl Strategy<Value = Vec<u8>> {
    (1usize..4).prop_flat_map(move |n| {
        (
            prop::collection::vec(any::<u8>(), n * size),
            prop::collection::vec(-1000.0f32..1000.0, n * 2),
        )
            .prop_map(move |(mut bytes, scales)| {
                for (i, block) in bytes.chunks_exact_mut(size).enumerate() {
                    for (k, &off) in scale_offsets.iter().enumerate() {
                        let v = f16::from_f32(scales[2 * i + k] * 0.001);
                        block[off..off + 2].copy_from_slice(&v.to_le_bytes());
                    }
                    if is_q8k {
                        block[0..4].copy_from_slice(&(scales[2 * i] * 0.001).to_le_bytes());
                    }
                }
                bytes
            })
    })
}

fn check(ty: GgmlType, size: usize, bytes: &[u8]) -> Result<(), TestCaseError> {
    let block = ty.block_size();
    let n = bytes.len() / size * block;
    let mut got = vec![f32::NAN; n];
    dequantize_row(ty, bytes, &mut got).map_err(|e| TestCaseError::fail(e.to_string()))?;
    for (i, g) in got.iter().enumerate() {
        let expected = decode(ty, &bytes[(i / block) * size..], i % block);
        prop_assert_eq!(
            g.to_bits(),
            expected.to_bits(),
            "{} element {}: {} vs {}",
            ty,
            i,
            g,
            expected
        );
    }
    Ok(())
}

macro_rules! layout_tests {
    ($($name:ident => $idx:expr;)*) => {
        proptest! {
            #![proptest_config(ProptestConfig::with_cases(cases()))]
            $(
                #[test]
                fn $name(bytes in blocks(FORMATS[$idx].1, FORMATS[$idx].2, FORMATS[$idx].0 == GgmlType::Q8K)) {
                    check(FORMATS[$idx].0, FORMATS[$idx].1, &bytes)?;
                }
            )*
        }
    };
}

layout_tests! {
    q4_0_decodes_as_laid_out => 0;
    q4_1_decodes_as_laid_out => 1;
    q5_0_decodes_as_laid_out => 2;
    q5_1_decodes_as_laid_out => 3;
    q8_0_decodes_as_laid_out => 4;
    q8_1_decodes_as_laid_out => 5;
    q2_k_decodes_as_laid_out => 6;
    q3_k_decodes_as_laid_out => 7;
    q4_k_decodes_as_laid_out => 8;
    q5_k_decodes_as_laid_out => 9;
    q6_k_decodes_as_laid_out => 10;
    q8_k_decodes_as_laid_out => 11;
    iq4_nl_decodes_as_laid_out => 12;
    iq4_xs_decodes_as_laid_out => 13;
}

#[test]
fn every_format_under_test_has_the_documented_block_size() {
    for (ty, size, _) in FORMATS {
        assert_eq!(
            ferrolm_quant::block_layout(ty).map(|l| l.1),
            Some(size),
            "{ty}"
        );
    }
}

/// 64 cases unless `PROPTEST_CASES` asks for more.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}
