//! Golden vectors written by the Python `gguf` package (tests/fixtures/gen_golden.py):
//! random blocks of every format and their decoded values, and rows encoded
//! by its quantizers (ports of ggml's reference ones).

use std::path::PathBuf;

use ferrolm_quant::{GgmlType, dequantize_row, quantize_row, row_size};

fn fixture(rel: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

const DEQUANT_TYPES: [&str; 16] = [
    "f16", "bf16", "q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q8_1", "q2_K", "q3_K", "q4_K", "q5_K",
    "q6_K", "q8_K", "iq4_nl", "iq4_xs",
];

#[test]
fn dequantization_matches_python_gguf_bit_for_bit() {
    for name in DEQUANT_TYPES {
        let ty = GgmlType::from_name(name).expect("known type");
        let blocks = fixture(&format!("dequant/{name}.blocks"));
        let expected = f32s(&fixture(&format!("dequant/{name}.f32")));
        assert_eq!(
            row_size(ty, expected.len()).expect("layout"),
            blocks.len(),
            "{name}"
        );
        let mut got = vec![f32::NAN; expected.len()];
        dequantize_row(ty, &blocks, &mut got).expect("decodes");
        for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
            assert_eq!(
                g.to_bits(),
                e.to_bits(),
                "{name} element {i}: got {g}, expected {e}"
            );
        }
    }
}

#[test]
fn dequantization_does_not_depend_on_buffer_alignment() {
    for name in DEQUANT_TYPES {
        let ty = GgmlType::from_name(name).expect("known type");
        let blocks = fixture(&format!("dequant/{name}.blocks"));
        let expected = f32s(&fixture(&format!("dequant/{name}.f32")));
        let mut shifted = vec![0u8; blocks.len() + 1];
        shifted[1..].copy_from_slice(&blocks);
        let mut got = vec![f32::NAN; expected.len()];
        dequantize_row(ty, &shifted[1..], &mut got).expect("decodes");
        assert!(
            got.iter()
                .zip(&expected)
                .all(|(g, e)| g.to_bits() == e.to_bits()),
            "{name}"
        );
    }
}

#[test]
fn legacy_quantizers_match_the_reference_quantizers_bit_for_bit() {
    for name in ["q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "bf16"] {
        let ty = GgmlType::from_name(name).expect("known type");
        let src = f32s(&fixture(&format!("quant/{name}.src.f32")));
        let expected = fixture(&format!("quant/{name}.q"));
        let mut got = vec![0u8; row_size(ty, src.len()).expect("layout")];
        quantize_row(ty, &src, &mut got).expect("encodes");
        assert_eq!(got.len(), expected.len(), "{name}");
        let first_diff = got.iter().zip(&expected).position(|(a, b)| a != b);
        assert_eq!(first_diff, None, "{name}: first differing byte");
    }
}
