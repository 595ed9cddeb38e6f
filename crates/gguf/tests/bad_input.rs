//! Each kind of hostile or broken file gets its own error, never a panic.
#![allow(clippy::unwrap_used)]

use ferrolm_gguf::{GgmlType, Gguf, GgufError, GgufFile, GgufWriter, keys};

/// Raw GGUF bytes built field by field, so tests can write what the writer refuses to.
#[derive(Default)]
struct Raw(Vec<u8>);

impl Raw {
    fn header(version: u32, n_tensors: u64, n_kv: u64) -> Raw {
        let mut r = Raw::default();
        r.bytes(b"GGUF").u32(version).u64(n_tensors).u64(n_kv);
        r
    }
    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }
    fn str(&mut self, s: &str) -> &mut Self {
        self.u64(s.len() as u64).bytes(s.as_bytes())
    }
    /// A metadata entry holding a u32.
    fn kv_u32(&mut self, key: &str, v: u32) -> &mut Self {
        self.str(key).u32(4).u32(v)
    }
    fn tensor(&mut self, name: &str, dims: &[u64], ty: u32, offset: u64) -> &mut Self {
        self.str(name).u32(dims.len() as u32);
        for &d in dims {
            self.u64(d);
        }
        self.u32(ty).u64(offset)
    }
    /// Zero padding up to the next multiple of `align`.
    fn pad(&mut self, align: usize) -> &mut Self {
        while !self.0.len().is_multiple_of(align) {
            self.0.push(0);
        }
        self
    }
    fn parse(&self) -> Result<Gguf<'_>, GgufError> {
        Gguf::parse(&self.0)
    }
}

fn err(r: &Raw) -> GgufError {
    let e = r.parse().unwrap_err();
    let msg = e.to_string();
    assert!(!msg.contains('\n'), "message not one line: {msg}");
    e
}

/// A valid file with metadata and two tensors, from the writer.
fn valid_file() -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.add_metadata(keys::general::ARCHITECTURE, "llama");
    w.add_metadata(keys::general::NAME, "tiny");
    w.add_tensor("a", &[4], GgmlType::F32, vec![1; 16]).unwrap();
    w.add_tensor("b", &[32, 2], GgmlType::Q8_0, vec![2; 68])
        .unwrap();
    let mut bytes = Vec::new();
    w.write_to(&mut bytes).unwrap();
    bytes
}

#[test]
fn valid_raw_file_parses() {
    let mut r = Raw::header(3, 1, 1);
    r.kv_u32("k", 7)
        .tensor("t", &[2, 3], 0, 0)
        .pad(32)
        .bytes(&[0; 24]);
    let g = r.parse().unwrap();
    assert_eq!(g.get_u32("k").unwrap(), 7);
    assert_eq!(g.tensor("t").unwrap().data.len(), 24);
}

#[test]
fn truncated_in_header() {
    for len in [0, 3, 4, 7, 8, 12, 20, 23] {
        let bytes = &valid_file()[..len];
        let e = Gguf::parse(bytes).unwrap_err();
        assert!(matches!(e, GgufError::Truncated { .. }), "len {len}: {e}");
    }
    let e = Gguf::parse(&valid_file()[..10]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "truncated file: tensor count at byte offset 8 needs 8 bytes but only 2 remain"
    );
}

#[test]
fn truncated_in_metadata_names_the_key() {
    let bytes = valid_file();
    // Header 24 bytes, key "general.architecture" (8 + 20), type (4), then the value.
    let e = Gguf::parse(&bytes[..24 + 28 + 4 + 10]).unwrap_err();
    let GgufError::Truncated { what, offset, .. } = &e else {
        panic!("{e}")
    };
    assert!(what.contains("general.architecture"), "{e}");
    assert_eq!(*offset, 24 + 28 + 4 + 8);
    // Every cut inside the header region is an error.
    let g = Gguf::parse(&bytes).unwrap();
    for len in 0..g.data_offset() as usize {
        assert!(Gguf::parse(&bytes[..len]).is_err(), "len {len}");
    }
}

#[test]
fn truncated_in_tensor_data() {
    let bytes = valid_file();
    let g = Gguf::parse(&bytes).unwrap();
    let b = &g.tensors()[1];
    let end = (g.data_offset() + b.offset + b.n_bytes()) as usize;
    assert!(Gguf::parse(&bytes[..end]).is_ok());
    let e = Gguf::parse(&bytes[..end - 1]).unwrap_err();
    assert!(
        matches!(&e, GgufError::TensorOutOfBounds { tensor, .. } if tensor == "b"),
        "{e}"
    );
}

#[test]
fn wrong_magic() {
    let mut bytes = valid_file();
    bytes[..4].copy_from_slice(b"GGML");
    let e = Gguf::parse(&bytes).unwrap_err();
    assert!(
        matches!(e, GgufError::BadMagic { found } if &found == b"GGML"),
        "{e}"
    );
    assert!(e.to_string().contains("not a GGUF file"));
}

#[test]
fn unsupported_and_big_endian_versions() {
    for version in [0, 1, 4, 0xFFFF_FFFF] {
        let e = err(&Raw::header(version, 0, 0));
        assert!(
            matches!(e, GgufError::UnsupportedVersion { version: v } if v == version),
            "{e}"
        );
    }
    for version in [1u32, 2, 3] {
        let e = err(&Raw::header(version.swap_bytes(), 0, 0));
        assert!(matches!(e, GgufError::BigEndian { .. }), "{e}");
        assert!(e.to_string().contains("big-endian"));
    }
}

#[test]
fn absurd_tensor_and_metadata_counts() {
    let e = err(&Raw::header(3, 1 << 62, 0));
    assert!(
        matches!(e, GgufError::CountTooLarge { count, offset: 8, max: 0, .. } if count == 1 << 62),
        "{e}"
    );
    let e = err(&Raw::header(3, 0, u64::MAX));
    assert!(
        matches!(e, GgufError::CountTooLarge { offset: 16, .. }),
        "{e}"
    );
    // Enough bytes for one metadata entry but not for 1000.
    let mut r = Raw::header(3, 0, 1000);
    r.kv_u32("k", 1);
    assert!(matches!(err(&r), GgufError::CountTooLarge { max: 1, .. }));
}

#[test]
fn absurd_string_lengths() {
    let mut r = Raw::header(3, 0, 1);
    r.u64(1 << 60).bytes(b"general.name");
    let e = err(&r);
    assert!(
        matches!(e, GgufError::Truncated { needed, offset: 32, .. } if needed == 1 << 60),
        "{e}"
    );
    // A string value, and a string inside an array.
    let mut r = Raw::header(3, 0, 1);
    r.str("k").u32(8).u64(u64::MAX).bytes(b"x");
    assert!(matches!(err(&r), GgufError::Truncated { .. }));
    let mut r = Raw::header(3, 0, 1);
    r.str("k").u32(9).u32(8).u64(2).str("ok").u64(1 << 40);
    let e = err(&r);
    assert!(e.to_string().contains("element 1"), "{e}");
    // A tensor name.
    let mut r = Raw::header(3, 1, 0);
    r.u64(u64::MAX - 3).bytes(&[0; 40]);
    assert!(matches!(err(&r), GgufError::Truncated { .. }));
}

#[test]
fn absurd_array_lengths() {
    let mut r = Raw::header(3, 0, 1);
    r.str("k").u32(9).u32(0).u64(1 << 62).bytes(&[1, 2, 3]);
    let e = err(&r);
    assert!(matches!(e, GgufError::CountTooLarge { max: 3, .. }), "{e}");
    // Nested arrays: 12 bytes at least per element.
    let mut r = Raw::header(3, 0, 1);
    r.str("k").u32(9).u32(9).u64(2).bytes(&[0; 12]);
    assert!(matches!(err(&r), GgufError::CountTooLarge { max: 1, .. }));
}

#[test]
fn offsets_past_the_end() {
    let mut r = Raw::header(3, 1, 0);
    r.tensor("t", &[8], 0, 64).pad(32).bytes(&[0; 64]);
    let e = err(&r);
    assert!(
        matches!(&e, GgufError::TensorOutOfBounds { tensor, len: 32, .. } if tensor == "t"),
        "{e}"
    );
    // An offset so large that data_offset + offset overflows.
    let mut r = Raw::header(3, 1, 0);
    r.tensor("t", &[8], 0, u64::MAX - 31).pad(32);
    assert!(matches!(err(&r), GgufError::TensorOutOfBounds { .. }));
    let mut r = Raw::header(3, 1, 0);
    r.tensor("t", &[8], 0, 8).pad(32).bytes(&[0; 64]);
    let e = err(&r);
    assert!(
        matches!(
            e,
            GgufError::MisalignedTensor {
                offset: 8,
                alignment: 32,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn dims_whose_product_overflows() {
    let mut r = Raw::header(3, 1, 0);
    r.tensor("big", &[1 << 32, 1 << 32, 2], 0, 0).pad(32);
    let e = err(&r);
    assert!(
        matches!(&e, GgufError::ShapeOverflow { tensor, .. } if tensor == "big"),
        "{e}"
    );
    let mut r = Raw::header(3, 1, 0);
    r.tensor("neg", &[u64::MAX], 24, 0).pad(32);
    assert!(matches!(err(&r), GgufError::ShapeOverflow { .. }));
    let mut r = Raw::header(3, 1, 0);
    r.tensor("zero", &[4, 0], 0, 0).pad(32);
    assert!(matches!(err(&r), GgufError::ZeroDim { index: 1, .. }));
    let mut r = Raw::header(3, 1, 0);
    r.tensor("row", &[48], 2, 0).pad(32).bytes(&[0; 64]);
    assert!(matches!(
        err(&r),
        GgufError::RowNotBlockMultiple {
            row_len: 48,
            block_size: 32,
            ..
        }
    ));
}

#[test]
fn unknown_tensor_type_names_the_tensor() {
    for ty in [4, 5, 31, 33, 36, 38, 42, u32::MAX] {
        let mut r = Raw::header(3, 1, 0);
        r.tensor("blk.0.attn_q.weight", &[32], ty, 0)
            .pad(32)
            .bytes(&[0; 256]);
        let e = err(&r);
        assert!(
            matches!(&e, GgufError::UnknownTensorType { type_id, .. } if *type_id == ty),
            "{e}"
        );
        assert!(e.to_string().contains("\"blk.0.attn_q.weight\""), "{e}");
    }
}

#[test]
fn unknown_value_types() {
    let mut r = Raw::header(3, 0, 1);
    r.str("general.name").u32(13).u32(0);
    let e = err(&r);
    assert!(
        matches!(&e, GgufError::UnknownValueType { key, type_id: 13, offset: 44 } if key == "general.name"),
        "{e}"
    );
    // Inside an array.
    let mut r = Raw::header(3, 0, 1);
    r.str("k").u32(9).u32(99).u64(0);
    assert!(matches!(
        err(&r),
        GgufError::UnknownValueType { type_id: 99, .. }
    ));
}

#[test]
fn too_many_dims_and_none() {
    let mut r = Raw::header(3, 1, 0);
    r.tensor("t", &[1, 1, 1, 1, 1], 0, 0).pad(32).bytes(&[0; 4]);
    assert!(matches!(err(&r), GgufError::BadDimCount { n_dims: 5, .. }));
    let mut r = Raw::header(3, 1, 0);
    r.str("t").u32(u32::MAX).bytes(&[0; 64]);
    assert!(matches!(
        err(&r),
        GgufError::BadDimCount {
            n_dims: 0xFFFF_FFFF,
            ..
        }
    ));
    let mut r = Raw::header(3, 1, 0);
    r.tensor("t", &[], 0, 0).pad(32).bytes(&[0; 4]);
    assert!(matches!(err(&r), GgufError::BadDimCount { n_dims: 0, .. }));
}

#[test]
fn duplicate_keys_and_tensor_names() {
    let mut r = Raw::header(3, 0, 2);
    r.kv_u32("a", 1).kv_u32("a", 2);
    let e = err(&r);
    assert!(
        matches!(&e, GgufError::DuplicateKey { key, offset: 41 } if key == "a"),
        "{e}"
    );
    let mut r = Raw::header(3, 2, 0);
    r.tensor("t", &[1], 0, 0)
        .tensor("t", &[1], 0, 32)
        .pad(32)
        .bytes(&[0; 64]);
    assert!(matches!(err(&r), GgufError::DuplicateTensor { .. }));
}

#[test]
fn invalid_utf8_bool_and_nesting() {
    let mut r = Raw::header(3, 0, 1);
    r.u64(2).bytes(&[0xC3, 0x28]).u32(4).u32(0);
    assert!(matches!(err(&r), GgufError::InvalidUtf8 { offset: 32, .. }));
    let mut r = Raw::header(3, 0, 1);
    r.str("k").u32(7).bytes(&[2]);
    assert!(matches!(err(&r), GgufError::InvalidBool { value: 2, .. }));
    // Arrays nested one level deeper than allowed.
    let mut r = Raw::header(3, 0, 1);
    r.str("k").u32(9);
    for _ in 0..ferrolm_gguf::MAX_ARRAY_DEPTH {
        r.u32(9).u64(1);
    }
    r.u32(0).u64(0);
    assert!(matches!(err(&r), GgufError::ArrayTooDeep { .. }));
}

#[test]
fn bad_alignment_values() {
    for v in [0u32, 3, 24] {
        let mut r = Raw::header(3, 0, 1);
        r.kv_u32("general.alignment", v);
        let e = err(&r);
        assert!(matches!(e, GgufError::InvalidAlignment { .. }), "{e}");
    }
    let mut r = Raw::header(3, 0, 1);
    r.str("general.alignment").u32(8).str("32");
    assert!(matches!(err(&r), GgufError::InvalidAlignment { .. }));
    let mut r = Raw::header(3, 1, 1);
    r.kv_u32("general.alignment", 64)
        .tensor("t", &[4], 0, 0)
        .pad(64)
        .bytes(&[0; 16]);
    let g = r.parse().unwrap();
    assert_eq!((g.alignment(), g.data_offset()), (64, 128));
}

#[test]
fn typed_getters_name_the_key() {
    let mut r = Raw::header(3, 0, 3);
    r.kv_u32("n", 7).str("s").u32(8).str("text");
    r.str("neg").u32(5).u32((-1i32) as u32);
    let g = r.parse().unwrap();
    let e = g.get_u32("missing").unwrap_err();
    assert_eq!(e.to_string(), "metadata key \"missing\" is missing");
    let e = g.get_str("n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "metadata key \"n\" has type u32, expected string"
    );
    let e = g.get_u32("neg").unwrap_err();
    assert_eq!(
        e.to_string(),
        "metadata key \"neg\" value -1 does not fit in u32"
    );
    assert_eq!(g.get_u64("n").unwrap(), 7);
    assert!(matches!(g.get_f32("n"), Err(GgufError::WrongType { .. })));
    assert!(matches!(g.get_bool("s"), Err(GgufError::WrongType { .. })));
    assert!(matches!(g.get_array("s"), Err(GgufError::WrongType { .. })));
    assert!(matches!(
        g.architecture(),
        Err(GgufError::MissingKey { .. })
    ));
}

#[test]
fn open_names_the_path() {
    let dir = std::env::temp_dir().join(format!("ferrolm-gguf-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    let missing = dir.join("missing.gguf");
    let e = GgufFile::open(&missing).unwrap_err();
    assert!(matches!(e, GgufError::Io { .. }), "{e}");
    assert!(
        e.to_string().starts_with(&missing.display().to_string()),
        "{e}"
    );

    let e = GgufFile::open(&dir).unwrap_err();
    assert!(matches!(e, GgufError::NotAFile { .. }), "{e}");
    assert!(e.to_string().contains("directory"), "{e}");

    let empty = dir.join("empty.gguf");
    std::fs::write(&empty, b"").unwrap();
    let e = GgufFile::open(&empty).unwrap_err();
    assert!(
        e.to_string().starts_with(&empty.display().to_string()),
        "{e}"
    );
    assert!(matches!(e, GgufError::InFile { .. }), "{e}");

    let bad = dir.join("bad.gguf");
    std::fs::write(&bad, b"GGUF\x01\x00\x00\x00").unwrap();
    let e = GgufFile::open(&bad).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{}: unsupported GGUF version 1; versions 2 and 3 are supported",
            bad.display()
        )
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn long_or_multiline_names_stay_on_one_short_line() {
    let name = format!("evil\nname{}", "x".repeat(10_000));
    let mut r = Raw::header(3, 1, 0);
    r.tensor(&name, &[4], 77, 0);
    let msg = err(&r).to_string();
    assert!(msg.contains("evil\\nname"), "{msg}");
    assert!(msg.len() < 200, "{msg}");
}
