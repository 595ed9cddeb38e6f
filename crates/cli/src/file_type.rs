//! Names of `general.file_type`, the quantization scheme a whole file was written
//! with (llama.cpp's `llama_ftype` numbering).

/// The scheme's name, e.g. `q4_K_M` for 15; `None` for numbers not in the table.
pub fn name(file_type: u32) -> Option<&'static str> {
    Some(match file_type {
        0 => "all_f32",
        1 => "f16",
        2 => "q4_0",
        3 => "q4_1",
        7 => "q8_0",
        8 => "q5_0",
        9 => "q5_1",
        10 => "q2_K",
        11 => "q3_K_S",
        12 => "q3_K_M",
        13 => "q3_K_L",
        14 => "q4_K_S",
        15 => "q4_K_M",
        16 => "q5_K_S",
        17 => "q5_K_M",
        18 => "q6_K",
        19 => "iq2_xxs",
        20 => "iq2_xs",
        21 => "q2_K_S",
        22 => "iq3_xs",
        23 => "iq3_xxs",
        24 => "iq1_s",
        25 => "iq4_nl",
        26 => "iq3_s",
        27 => "iq3_m",
        28 => "iq2_s",
        29 => "iq2_m",
        30 => "iq4_xs",
        31 => "iq1_m",
        32 => "bf16",
        36 => "tq1_0",
        37 => "tq2_0",
        38 => "mxfp4_moe",
        _ => return None,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::name;

    #[test]
    fn known_and_unknown_file_types() {
        assert_eq!(name(3), Some("q4_1"));
        assert_eq!(name(15), Some("q4_K_M"));
        assert_eq!(name(32), Some("bf16"));
        assert_eq!(name(4), None);
        assert_eq!(name(1000), None);
    }
}
