/// A ggml tensor element type, as stored in a GGUF tensor header.
///
/// Quantized types store elements in blocks: [`GgmlType::block_size`]
/// elements take [`GgmlType::type_size`] bytes. Plain types have a block size
/// of one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum GgmlType {
    /// 32-bit IEEE float.
    F32,
    /// 16-bit IEEE float.
    F16,
    /// 4-bit, 32 per block, f16 scale.
    Q4_0,
    /// 4-bit, 32 per block, f16 scale and minimum.
    Q4_1,
    /// 5-bit, 32 per block, f16 scale.
    Q5_0,
    /// 5-bit, 32 per block, f16 scale and minimum.
    Q5_1,
    /// 8-bit, 32 per block, f16 scale.
    Q8_0,
    /// 8-bit, 32 per block, f32 scale and sum (activations).
    Q8_1,
    /// 2-bit k-quant, 256 per super-block.
    Q2K,
    /// 3-bit k-quant, 256 per super-block.
    Q3K,
    /// 4-bit k-quant, 256 per super-block.
    Q4K,
    /// 5-bit k-quant, 256 per super-block.
    Q5K,
    /// 6-bit k-quant, 256 per super-block.
    Q6K,
    /// 8-bit k-quant, 256 per super-block (activations).
    Q8K,
    /// 2.06 bits per weight i-quant.
    Iq2Xxs,
    /// 2.31 bits per weight i-quant.
    Iq2Xs,
    /// 3.06 bits per weight i-quant.
    Iq3Xxs,
    /// 1.56 bits per weight i-quant.
    Iq1S,
    /// 4-bit non-linear, 32 per block.
    Iq4Nl,
    /// 3.44 bits per weight i-quant.
    Iq3S,
    /// 2.5 bits per weight i-quant.
    Iq2S,
    /// 4.25 bits per weight non-linear, 256 per super-block.
    Iq4Xs,
    /// 8-bit signed integer.
    I8,
    /// 16-bit signed integer.
    I16,
    /// 32-bit signed integer.
    I32,
    /// 64-bit signed integer.
    I64,
    /// 64-bit IEEE float.
    F64,
    /// 1.75 bits per weight i-quant.
    Iq1M,
    /// bfloat16.
    Bf16,
    /// Ternary, 1.69 bits per weight.
    Tq1_0,
    /// Ternary, 2.06 bits per weight.
    Tq2_0,
    /// Microscaling FP4 (E2M1 values, E8M0 scale), 32 per block.
    Mxfp4,
    /// NVIDIA FP4 (E2M1 values, FP8 scales), 64 per block.
    Nvfp4,
    /// 1-bit, 128 per block.
    Q1_0,
}

/// One row of the type table: type, id, name, block size, bytes per block.
/// Ids missing here (4, 5, 31-33, 36-38) belonged to formats ggml removed.
const TABLE: [(GgmlType, u32, &str, usize, usize); 34] = [
    (GgmlType::F32, 0, "f32", 1, 4),
    (GgmlType::F16, 1, "f16", 1, 2),
    (GgmlType::Q4_0, 2, "q4_0", 32, 18),
    (GgmlType::Q4_1, 3, "q4_1", 32, 20),
    (GgmlType::Q5_0, 6, "q5_0", 32, 22),
    (GgmlType::Q5_1, 7, "q5_1", 32, 24),
    (GgmlType::Q8_0, 8, "q8_0", 32, 34),
    // ggml's block_q8_1 is two f16 (scale, scaled sum) and 32 i8: 36 bytes.
    (GgmlType::Q8_1, 9, "q8_1", 32, 36),
    (GgmlType::Q2K, 10, "q2_K", 256, 84),
    (GgmlType::Q3K, 11, "q3_K", 256, 110),
    (GgmlType::Q4K, 12, "q4_K", 256, 144),
    (GgmlType::Q5K, 13, "q5_K", 256, 176),
    (GgmlType::Q6K, 14, "q6_K", 256, 210),
    (GgmlType::Q8K, 15, "q8_K", 256, 292),
    (GgmlType::Iq2Xxs, 16, "iq2_xxs", 256, 66),
    (GgmlType::Iq2Xs, 17, "iq2_xs", 256, 74),
    (GgmlType::Iq3Xxs, 18, "iq3_xxs", 256, 98),
    (GgmlType::Iq1S, 19, "iq1_s", 256, 50),
    (GgmlType::Iq4Nl, 20, "iq4_nl", 32, 18),
    (GgmlType::Iq3S, 21, "iq3_s", 256, 110),
    (GgmlType::Iq2S, 22, "iq2_s", 256, 82),
    (GgmlType::Iq4Xs, 23, "iq4_xs", 256, 136),
    (GgmlType::I8, 24, "i8", 1, 1),
    (GgmlType::I16, 25, "i16", 1, 2),
    (GgmlType::I32, 26, "i32", 1, 4),
    (GgmlType::I64, 27, "i64", 1, 8),
    (GgmlType::F64, 28, "f64", 1, 8),
    (GgmlType::Iq1M, 29, "iq1_m", 256, 56),
    (GgmlType::Bf16, 30, "bf16", 1, 2),
    (GgmlType::Tq1_0, 34, "tq1_0", 256, 54),
    (GgmlType::Tq2_0, 35, "tq2_0", 256, 66),
    (GgmlType::Mxfp4, 39, "mxfp4", 32, 17),
    (GgmlType::Nvfp4, 40, "nvfp4", 64, 36),
    (GgmlType::Q1_0, 41, "q1_0", 128, 18),
];

impl GgmlType {
    /// Every type, in id order.
    pub const ALL: [GgmlType; 34] = {
        let mut all = [GgmlType::F32; 34];
        let mut i = 0;
        while i < TABLE.len() {
            all[i] = TABLE[i].0;
            i += 1;
        }
        all
    };

    // The enum's declaration order matches TABLE's, so the discriminant indexes it.
    fn row(self) -> &'static (GgmlType, u32, &'static str, usize, usize) {
        &TABLE[self as usize]
    }

    /// The type with ggml id `id`, or `None` for ids ggml does not define.
    pub fn from_id(id: u32) -> Option<GgmlType> {
        TABLE.iter().find(|row| row.1 == id).map(|row| row.0)
    }

    /// ggml's numeric id, as stored in GGUF tensor headers.
    pub fn id(self) -> u32 {
        self.row().1
    }

    /// ggml's name for the type: `"f32"`, `"q4_0"`, `"q4_K"`, `"iq4_nl"`, `"bf16"`, ...
    pub fn name(self) -> &'static str {
        self.row().2
    }

    /// The type whose name is `s`, compared without regard to ASCII case.
    pub fn from_name(s: &str) -> Option<GgmlType> {
        TABLE
            .iter()
            .find(|row| row.2.eq_ignore_ascii_case(s))
            .map(|row| row.0)
    }

    /// Elements per block (1 for the plain float and integer types).
    pub fn block_size(self) -> usize {
        self.row().3
    }

    /// Bytes per block.
    pub fn type_size(self) -> usize {
        self.row().4
    }

    /// Whether the type stores elements in blocks of more than one (a quantized type).
    pub fn is_quantized(self) -> bool {
        self.block_size() > 1
    }

    /// Bytes taken by `n_elements` elements, or `None` when `n_elements` is
    /// not a multiple of the block size or the result overflows `u64`.
    pub fn row_bytes(self, n_elements: u64) -> Option<u64> {
        let block = self.block_size() as u64;
        if !n_elements.is_multiple_of(block) {
            return None;
        }
        (n_elements / block).checked_mul(self.type_size() as u64)
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_rows_follow_declaration_order() {
        for (i, row) in TABLE.iter().enumerate() {
            assert_eq!(row.0 as usize, i, "{}", row.2);
        }
    }

    #[test]
    fn ids_round_trip_and_removed_ids_are_unknown() {
        for ty in GgmlType::ALL {
            assert_eq!(GgmlType::from_id(ty.id()), Some(ty));
            assert_eq!(GgmlType::from_name(ty.name()), Some(ty));
            assert_eq!(GgmlType::from_name(&ty.name().to_uppercase()), Some(ty));
        }
        for id in [4, 5, 31, 32, 33, 36, 37, 38, 42, 1000, u32::MAX] {
            assert_eq!(GgmlType::from_id(id), None, "id {id}");
        }
        assert_eq!(GgmlType::from_name("Q4_k"), Some(GgmlType::Q4K));
        assert_eq!(GgmlType::from_name("q4_2"), None);
    }

    /// Block sizes and bytes per block as the Python `gguf` package's
    /// `GGML_QUANT_SIZES` lists them, except Q8_1: that table still gives the
    /// old 40-byte layout with f32 scales, while ggml's block is 36 bytes.
    #[test]
    fn sizes_match_reference_table() {
        let reference: [(u32, usize, usize); 34] = [
            (0, 1, 4),
            (1, 1, 2),
            (2, 32, 18),
            (3, 32, 20),
            (6, 32, 22),
            (7, 32, 24),
            (8, 32, 34),
            (9, 32, 36),
            (10, 256, 84),
            (11, 256, 110),
            (12, 256, 144),
            (13, 256, 176),
            (14, 256, 210),
            (15, 256, 292),
            (16, 256, 66),
            (17, 256, 74),
            (18, 256, 98),
            (19, 256, 50),
            (20, 32, 18),
            (21, 256, 110),
            (22, 256, 82),
            (23, 256, 136),
            (24, 1, 1),
            (25, 1, 2),
            (26, 1, 4),
            (27, 1, 8),
            (28, 1, 8),
            (29, 256, 56),
            (30, 1, 2),
            (34, 256, 54),
            (35, 256, 66),
            (39, 32, 17),
            (40, 64, 36),
            (41, 128, 18),
        ];
        for (id, block, bytes) in reference {
            let ty = GgmlType::from_id(id).expect("id in table");
            assert_eq!((ty.block_size(), ty.type_size()), (block, bytes), "{ty}");
        }
    }

    #[test]
    fn row_bytes_checks_block_multiple_and_overflow() {
        assert_eq!(GgmlType::Q8_0.row_bytes(576), Some(18 * 34));
        assert_eq!(GgmlType::Q4K.row_bytes(640), None);
        assert_eq!(GgmlType::Q4K.row_bytes(512), Some(288));
        assert_eq!(GgmlType::F32.row_bytes(3), Some(12));
        assert_eq!(GgmlType::F32.row_bytes(u64::MAX / 2), None);
        assert_eq!(GgmlType::Q4_0.row_bytes(0), Some(0));
    }
}
