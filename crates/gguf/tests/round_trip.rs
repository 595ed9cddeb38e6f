//! Files written by `GgufWriter` read back identical.
#![allow(clippy::unwrap_used)]

use ferrolm_gguf::{
    GgmlType, Gguf, GgufError, GgufWriter, MAX_ARRAY_DEPTH, OwnedArray, OwnedMetadataValue, keys,
};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

fn finite_f32() -> impl Strategy<Value = f32> {
    use proptest::num::f32::{INFINITE, NEGATIVE, NORMAL, POSITIVE, SUBNORMAL, ZERO};
    POSITIVE | NEGATIVE | NORMAL | SUBNORMAL | ZERO | INFINITE
}

fn finite_f64() -> impl Strategy<Value = f64> {
    use proptest::num::f64::{INFINITE, NEGATIVE, NORMAL, POSITIVE, SUBNORMAL, ZERO};
    POSITIVE | NEGATIVE | NORMAL | SUBNORMAL | ZERO | INFINITE
}

fn flat_array() -> impl Strategy<Value = OwnedArray> {
    let n = 0..12usize;
    prop_oneof![
        prop::collection::vec(any::<u8>(), n.clone()).prop_map(OwnedArray::U8),
        prop::collection::vec(any::<i8>(), n.clone()).prop_map(OwnedArray::I8),
        prop::collection::vec(any::<u16>(), n.clone()).prop_map(OwnedArray::U16),
        prop::collection::vec(any::<i16>(), n.clone()).prop_map(OwnedArray::I16),
        prop::collection::vec(any::<u32>(), n.clone()).prop_map(OwnedArray::U32),
        prop::collection::vec(any::<i32>(), n.clone()).prop_map(OwnedArray::I32),
        prop::collection::vec(any::<u64>(), n.clone()).prop_map(OwnedArray::U64),
        prop::collection::vec(any::<i64>(), n.clone()).prop_map(OwnedArray::I64),
        prop::collection::vec(finite_f32(), n.clone()).prop_map(OwnedArray::F32),
        prop::collection::vec(finite_f64(), n.clone()).prop_map(OwnedArray::F64),
        prop::collection::vec(any::<bool>(), n.clone()).prop_map(OwnedArray::Bool),
        prop::collection::vec(any::<String>(), n).prop_map(OwnedArray::String),
    ]
}

/// Arrays nested up to the reader's depth limit.
fn array() -> impl Strategy<Value = OwnedArray> {
    flat_array().prop_recursive(MAX_ARRAY_DEPTH as u32 - 1, 64, 4, |inner| {
        prop::collection::vec(inner, 0..4).prop_map(OwnedArray::Array)
    })
}

fn value() -> impl Strategy<Value = OwnedMetadataValue> {
    prop_oneof![
        any::<u8>().prop_map(OwnedMetadataValue::U8),
        any::<i8>().prop_map(OwnedMetadataValue::I8),
        any::<u16>().prop_map(OwnedMetadataValue::U16),
        any::<i16>().prop_map(OwnedMetadataValue::I16),
        any::<u32>().prop_map(OwnedMetadataValue::U32),
        any::<i32>().prop_map(OwnedMetadataValue::I32),
        any::<u64>().prop_map(OwnedMetadataValue::U64),
        any::<i64>().prop_map(OwnedMetadataValue::I64),
        finite_f32().prop_map(OwnedMetadataValue::F32),
        finite_f64().prop_map(OwnedMetadataValue::F64),
        any::<bool>().prop_map(OwnedMetadataValue::Bool),
        any::<String>().prop_map(OwnedMetadataValue::String),
        array().prop_map(OwnedMetadataValue::Array),
    ]
}

/// A tensor: type, shape (ggml order) and random bytes of the right length.
fn tensor() -> impl Strategy<Value = (GgmlType, Vec<u64>, Vec<u8>)> {
    (
        prop::sample::select(GgmlType::ALL.to_vec()),
        1..=3u64,
        prop::collection::vec(1..=3u64, 0..=3),
    )
        .prop_flat_map(|(ty, blocks, rest)| {
            let mut dims = vec![blocks * ty.block_size() as u64];
            dims.extend(rest);
            let n_rows: u64 = dims[1..].iter().product();
            let len = ty.row_bytes(dims[0]).unwrap() * n_rows;
            (
                Just(ty),
                Just(dims),
                prop::collection::vec(any::<u8>(), len as usize),
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn metadata_and_tensors_read_back_identical(
        metadata in prop::collection::btree_map("[a-z._]{1,24}", value(), 0..10),
        tensors in prop::collection::vec(tensor(), 0..6),
        align_log2 in prop::option::of(0u32..8),
    ) {
        let mut writer = match align_log2 {
            Some(k) => GgufWriter::with_alignment(1 << k),
            None => GgufWriter::new(),
        };
        let metadata: Vec<_> = metadata
            .into_iter()
            .filter(|(k, _)| k != keys::general::ALIGNMENT)
            .collect();
        for (k, v) in &metadata {
            writer.add_metadata(k, v.clone());
        }
        for (i, (ty, dims, data)) in tensors.iter().enumerate() {
            writer.add_tensor(&format!("t{i}"), dims, *ty, data.clone()).unwrap();
        }
        let mut bytes = Vec::new();
        writer.write_to(&mut bytes).unwrap();

        let g = Gguf::parse(&bytes).unwrap();
        let alignment = align_log2.map_or(32, |k| 1u64 << k);
        prop_assert_eq!(g.version(), 3);
        prop_assert_eq!(g.alignment(), alignment);
        prop_assert_eq!(g.data_offset() % alignment, 0);
        let read: Vec<(String, OwnedMetadataValue)> = g
            .metadata()
            .iter()
            .filter(|(k, _)| *k != keys::general::ALIGNMENT)
            .map(|(k, v)| ((*k).to_owned(), v.into()))
            .collect();
        prop_assert_eq!(read, metadata);
        prop_assert_eq!(g.tensors().len(), tensors.len());
        for (i, (view, (ty, dims, data))) in g.tensor_views().zip(&tensors).enumerate() {
            prop_assert_eq!(view.name, format!("t{i}"));
            prop_assert_eq!(view.ty, *ty);
            prop_assert_eq!(&view.dims, dims);
            prop_assert_eq!(view.data, data.as_slice());
            prop_assert_eq!(g.tensors()[i].offset % alignment, 0);
        }
    }
}

#[test]
fn version_2_files_read_like_version_3() {
    let mut w = GgufWriter::new();
    w.add_metadata(keys::general::NAME, "v2");
    w.add_tensor("a", &[2], GgmlType::I16, vec![1, 0, 2, 0])
        .unwrap();
    let mut bytes = Vec::new();
    w.write_to(&mut bytes).unwrap();
    bytes[4] = 2;
    let g = Gguf::parse(&bytes).unwrap();
    assert_eq!(g.version(), 2);
    assert_eq!(g.get_str(keys::general::NAME).unwrap(), "v2");
    assert_eq!(g.tensor("a").unwrap().data, &[1, 0, 2, 0]);
}

#[test]
fn writer_honours_alignment_from_metadata() {
    let mut w = GgufWriter::new();
    w.add_metadata(keys::general::ALIGNMENT, 256u32);
    w.add_tensor("a", &[3], GgmlType::F32, vec![0; 12]).unwrap();
    w.add_tensor("b", &[1], GgmlType::I8, vec![7]).unwrap();
    let mut bytes = Vec::new();
    w.write_to(&mut bytes).unwrap();
    let g = Gguf::parse(&bytes).unwrap();
    assert_eq!(g.alignment(), 256);
    assert_eq!(g.data_offset(), 256);
    assert_eq!(g.tensors()[1].offset, 256);
    assert_eq!(g.tensor("b").unwrap().data, &[7]);
    assert_eq!(bytes.len(), 256 * 3);
}

/// Found by the `gguf_parse` fuzz target: a file without tensors whose `general.alignment`
/// is 2^63 parses, and rewriting it padded the end of the header to 2^63 bytes.
#[test]
fn a_file_without_tensors_ends_after_its_header_whatever_the_alignment() {
    let mut w = GgufWriter::with_alignment(1 << 63);
    w.add_metadata(keys::general::NAME, "no tensors");
    let mut bytes = Vec::new();
    w.write_to(&mut bytes).unwrap();
    let header = 4 + 4 + 8 + 8;
    let alignment_kv = 8 + keys::general::ALIGNMENT.len() + 4 + 8;
    let name_kv = 8 + keys::general::NAME.len() + 4 + 8 + "no tensors".len();
    assert_eq!(bytes.len(), header + alignment_kv + name_kv);

    let g = Gguf::parse(&bytes).unwrap();
    assert_eq!(g.alignment(), 1 << 63);
    assert!(g.tensors().is_empty());
    let mut again = Vec::new();
    GgufWriter::from_gguf(&g)
        .unwrap()
        .write_to(&mut again)
        .unwrap();
    assert_eq!(again, bytes);
}

#[test]
fn writer_rejects_bad_alignment_and_bad_tensors() {
    for align in [0, 3, 48] {
        let err = GgufWriter::with_alignment(align)
            .write_to(Vec::new())
            .unwrap_err();
        assert!(matches!(err, GgufError::InvalidAlignment { .. }), "{err}");
    }
    let mut w = GgufWriter::new();
    w.add_metadata(keys::general::ALIGNMENT, "32");
    assert!(matches!(
        w.write_to(Vec::new()),
        Err(GgufError::InvalidAlignment { .. })
    ));

    let mut w = GgufWriter::new();
    let err = w
        .add_tensor("q", &[32, 2], GgmlType::Q8_0, vec![0; 34])
        .unwrap_err();
    assert!(
        matches!(
            err,
            GgufError::TensorSizeMismatch {
                expected: 68,
                got: 34,
                ..
            }
        ),
        "{err}"
    );
    let err = w
        .add_tensor("q", &[16], GgmlType::Q8_0, vec![0; 17])
        .unwrap_err();
    assert!(
        matches!(err, GgufError::RowNotBlockMultiple { .. }),
        "{err}"
    );
    w.add_tensor("q", &[32], GgmlType::Q8_0, vec![0; 34])
        .unwrap();
    let err = w
        .add_tensor("q", &[32], GgmlType::Q8_0, vec![0; 34])
        .unwrap_err();
    assert!(matches!(err, GgufError::DuplicateTensor { .. }), "{err}");
}

#[test]
fn adding_a_key_again_replaces_its_value_in_place() {
    let mut w = GgufWriter::new();
    w.add_metadata("a", 1u32);
    w.add_metadata("b", 2u32);
    w.add_metadata("a", 3u32);
    let mut bytes = Vec::new();
    w.write_to(&mut bytes).unwrap();
    let g = Gguf::parse(&bytes).unwrap();
    let keys: Vec<_> = g.metadata().iter().map(|(k, _)| *k).collect();
    assert_eq!(keys, ["a", "b"]);
    assert_eq!(g.get_u32("a").unwrap(), 3);
}

#[test]
fn write_file_then_open_round_trips_and_names_the_path() {
    let dir = std::env::temp_dir().join(format!("ferrolm-gguf-rt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tiny.gguf");
    let mut w = GgufWriter::new();
    w.add_metadata(keys::general::ARCHITECTURE, "llama");
    w.add_tensor("x", &[4], GgmlType::F16, vec![0, 60, 0, 64, 0, 66, 0, 68])
        .unwrap();
    w.write_file(&path).unwrap();
    let file = ferrolm_gguf::GgufFile::open(&path).unwrap();
    assert_eq!(file.path(), path);
    let g = file.gguf().unwrap();
    assert_eq!(g.architecture().unwrap(), "llama");
    assert_eq!(g.tensor("x").unwrap().data, &[0, 60, 0, 64, 0, 66, 0, 68]);

    let err = GgufWriter::new()
        .write_file(dir.join("missing-dir").join("x.gguf"))
        .unwrap_err();
    assert!(err.to_string().contains("missing-dir"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
