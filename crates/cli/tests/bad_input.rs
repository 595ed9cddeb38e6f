//! Hostile and broken files given to `ferrolm inspect`: each must end with one
//! line on stderr that names the file and the problem, exit code 1, and no panic.
#![allow(clippy::unwrap_used)]

use ferrolm_gguf::{GgmlType, GgufWriter};
use std::path::Path;
use std::process::{Command, Output};

/// A small valid file: two metadata keys and two f32 tensors.
fn valid_file() -> Vec<u8> {
    let mut writer = GgufWriter::new();
    writer.add_metadata("general.architecture", "llama");
    writer.add_metadata("test.count", 7u32);
    let alpha: Vec<u8> = (0..8u32).flat_map(|i| (i as f32).to_le_bytes()).collect();
    let beta: Vec<u8> = (0..8u32)
        .flat_map(|i| (-(i as f32)).to_le_bytes())
        .collect();
    writer
        .add_tensor("alpha", &[4, 2], GgmlType::F32, alpha)
        .unwrap();
    writer
        .add_tensor("beta", &[8], GgmlType::F32, beta)
        .unwrap();
    let mut bytes = Vec::new();
    writer.write_to(&mut bytes).unwrap();
    bytes
}

/// Byte offset of the first occurrence of `needle`.
fn find(bytes: &[u8], needle: &[u8]) -> usize {
    bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap()
}

fn put_u32(bytes: &mut [u8], at: usize, value: u32) {
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

fn put_u64(bytes: &mut [u8], at: usize, value: u64) {
    bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
}

// Layout of the valid file: the 24-byte header (magic, version, tensor count,
// metadata count); each key is a u64 length and its bytes, then a u32 value
// type and the value; each tensor name is a u64 length and its bytes, then a
// u32 dimension count, u64 dimensions, a u32 type and a u64 data offset.
const VERSION_AT: usize = 4;
const TENSOR_COUNT_AT: usize = 8;
const METADATA_COUNT_AT: usize = 16;

fn arch_key_at(bytes: &[u8]) -> usize {
    find(bytes, b"general.architecture")
}
fn count_key_at(bytes: &[u8]) -> usize {
    find(bytes, b"test.count")
}
fn alpha_at(bytes: &[u8]) -> usize {
    find(bytes, b"alpha")
}

fn inspect(path: &Path, json: bool) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferrolm"));
    cmd.arg("inspect").arg(path);
    if json {
        cmd.arg("--json");
    }
    cmd.env_remove("RUST_LOG").output().unwrap()
}

/// Writes `bytes` to a file, inspects it, and checks the one-line error.
fn assert_rejected(name: &str, bytes: &[u8], expected: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("{name}.gguf"));
    std::fs::write(&path, bytes).unwrap();
    assert_error(&path, expected);
}

fn assert_error(path: &Path, expected: &[&str]) {
    for json in [false, true] {
        let out = inspect(path, json);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{}: expected exit code 1, stderr: {stderr}",
            path.display()
        );
        assert!(out.stdout.is_empty(), "stdout not empty: {:?}", out.stdout);
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "expected one line on stderr, got: {stderr}");
        let line = lines[0];
        assert!(line.starts_with("error: "), "{line}");
        assert!(
            line.contains(&path.display().to_string()),
            "the error does not name the file: {line}"
        );
        for fragment in expected {
            assert!(line.contains(fragment), "expected {fragment:?} in: {line}");
        }
    }
}

#[test]
fn the_valid_base_file_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("valid.gguf");
    std::fs::write(&path, valid_file()).unwrap();
    let out = inspect(&path, true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["tensor_count"], 2);
    assert_eq!(report["parameter_count"], 16);
    assert_eq!(report["tensors"][0]["name"], "alpha");
    assert_eq!(report["tensors"][0]["shape"], serde_json::json!([4, 2]));
}

#[test]
fn a_file_truncated_in_the_header_is_rejected() {
    assert_rejected("header", &valid_file()[..20], &["truncated"]);
}

#[test]
fn a_file_truncated_in_the_metadata_is_rejected() {
    let bytes = valid_file();
    let cut = count_key_at(&bytes) + 4;
    assert_rejected("metadata", &bytes[..cut], &["truncated"]);
}

#[test]
fn a_file_truncated_in_the_tensor_data_is_rejected() {
    let bytes = valid_file();
    assert_rejected(
        "data",
        &bytes[..bytes.len() - 8],
        &["tensor \"beta\"", "past the end"],
    );
}

#[test]
fn an_empty_file_is_rejected() {
    assert_rejected("empty", &[], &["truncated"]);
}

#[test]
fn wrong_magic_is_rejected() {
    let mut bytes = valid_file();
    bytes[..4].copy_from_slice(b"GGML");
    assert_rejected("magic", &bytes, &["not a GGUF file"]);
    assert_rejected(
        "text",
        b"this is a text file, not a model\n",
        &["not a GGUF file"],
    );
}

#[test]
fn unsupported_versions_are_rejected() {
    let mut bytes = valid_file();
    put_u32(&mut bytes, VERSION_AT, 1);
    assert_rejected("v1", &bytes, &["unsupported GGUF version 1"]);
    put_u32(&mut bytes, VERSION_AT, 4);
    assert_rejected("v4", &bytes, &["unsupported GGUF version 4"]);
    bytes[VERSION_AT..VERSION_AT + 4].copy_from_slice(&3u32.to_be_bytes());
    assert_rejected("big_endian", &bytes, &["big-endian"]);
}

#[test]
fn absurd_counts_are_rejected() {
    let mut bytes = valid_file();
    put_u64(&mut bytes, TENSOR_COUNT_AT, 1 << 62);
    assert_rejected(
        "tensor_count",
        &bytes,
        &["count 4611686018427387904", "impossible"],
    );
    let mut bytes = valid_file();
    put_u64(&mut bytes, METADATA_COUNT_AT, u64::MAX);
    assert_rejected(
        "metadata_count",
        &bytes,
        &["count 18446744073709551615", "impossible"],
    );
}

#[test]
fn absurd_string_lengths_are_rejected() {
    let mut bytes = valid_file();
    let key_len_at = arch_key_at(&bytes) - 8;
    put_u64(&mut bytes, key_len_at, 1 << 60);
    assert_rejected("key_length", &bytes, &["truncated"]);
    let mut bytes = valid_file();
    let value_len_at = arch_key_at(&bytes) + "general.architecture".len() + 4;
    put_u64(&mut bytes, value_len_at, u64::MAX - 3);
    assert_rejected("value_length", &bytes, &["truncated"]);
}

#[test]
fn tensor_offsets_past_the_end_are_rejected() {
    let mut bytes = valid_file();
    let offset_at = alpha_at(&bytes) + "alpha".len() + 4 + 16 + 4;
    put_u64(&mut bytes, offset_at, 1 << 40);
    assert_rejected("offset", &bytes, &["tensor \"alpha\"", "past the end"]);
    // An offset so large that adding the data section's start overflows.
    put_u64(&mut bytes, offset_at, !31u64);
    assert_rejected("offset_overflow", &bytes, &["tensor \"alpha\""]);
}

#[test]
fn dimensions_whose_product_overflows_are_rejected() {
    let mut bytes = valid_file();
    let dims_at = alpha_at(&bytes) + "alpha".len() + 4;
    put_u64(&mut bytes, dims_at, 1 << 40);
    put_u64(&mut bytes, dims_at + 8, 1 << 40);
    assert_rejected("dims", &bytes, &["tensor \"alpha\"", "overflows"]);
}

#[test]
fn unknown_tensor_types_are_rejected() {
    let mut bytes = valid_file();
    let type_at = alpha_at(&bytes) + "alpha".len() + 4 + 16;
    put_u32(&mut bytes, type_at, 9999);
    assert_rejected(
        "tensor_type",
        &bytes,
        &["tensor \"alpha\"", "unknown ggml type id 9999"],
    );
}

#[test]
fn unknown_value_types_are_rejected() {
    let mut bytes = valid_file();
    let type_at = count_key_at(&bytes) + "test.count".len();
    put_u32(&mut bytes, type_at, 99);
    assert_rejected(
        "value_type",
        &bytes,
        &["test.count", "unknown value type 99"],
    );
}

#[test]
fn too_many_dimensions_are_rejected() {
    let mut bytes = valid_file();
    let n_dims_at = alpha_at(&bytes) + "alpha".len();
    put_u32(&mut bytes, n_dims_at, 5);
    assert_rejected("five_dims", &bytes, &["tensor \"alpha\"", "5 dimensions"]);
    put_u32(&mut bytes, n_dims_at, u32::MAX);
    assert_rejected(
        "many_dims",
        &bytes,
        &["tensor \"alpha\"", "4294967295 dimensions"],
    );
}

#[test]
fn a_directory_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("folder.gguf");
    std::fs::create_dir(&path).unwrap();
    assert_error(&path, &["not a regular file"]);
}

#[test]
fn a_missing_path_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    assert_error(&dir.path().join("missing.gguf"), &["No such file"]);
}

#[test]
fn an_unknown_model_name_is_rejected() {
    let out = Command::new(env!("CARGO_BIN_EXE_ferrolm"))
        .args(["inspect", "no-such-model"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("`no-such-model` is neither a file, a known model name"),
        "{stderr}"
    );
}
