//! The two real models: every tensor dequantizes, rows match the Python
//! `gguf` package's decoding (tests/fixtures/models.json), and requantizing
//! writes a model that loads and stays close to the original.

use std::path::PathBuf;

use ferrolm_gguf::{Gguf, GgufFile, GgufWriter, TensorView};
use ferrolm_quant::mix::{Mix, MixOptions, TensorAction, fallback_type};
use ferrolm_quant::requantize::requantize;
use ferrolm_quant::{GgmlType, dequantize_row};

const SMOLLM2: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const GEMMA3: &str = "gemma-3-270m-q4_k_m.gguf";

fn model_path(file: &str) -> PathBuf {
    let dir = match std::env::var_os("FERROLM_HOME") {
        Some(home) => PathBuf::from(home).join("models"),
        None => dirs::cache_dir()
            .expect("a cache directory")
            .join("ferrolm/models"),
    };
    let path = dir.join(file);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo xtask fetch-models` first",
        path.display()
    );
    path
}

fn fnv1a64(values: &[f32]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for v in values {
        for b in v.to_le_bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

struct FixtureRow {
    tensor: String,
    ty: String,
    row: usize,
    row_len: usize,
    fnv1a64: u64,
    head: Vec<f32>,
}

fn fixture_rows(model: &str) -> Vec<FixtureRow> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models.json");
    let text = std::fs::read_to_string(&path).expect("models.json");
    let json: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    json[model]
        .as_array()
        .expect("rows of the model")
        .iter()
        .map(|r| FixtureRow {
            tensor: r["tensor"].as_str().expect("tensor").to_owned(),
            ty: r["type"].as_str().expect("type").to_owned(),
            row: r["row"].as_u64().expect("row") as usize,
            row_len: r["row_len"].as_u64().expect("row_len") as usize,
            fnv1a64: u64::from_str_radix(r["fnv1a64"].as_str().expect("hash"), 16).expect("hex"),
            head: r["head"]
                .as_array()
                .expect("head")
                .iter()
                .map(|v| v.as_f64().expect("number") as f32)
                .collect(),
        })
        .collect()
}

fn dequantize_rows(t: &TensorView<'_>) -> Vec<Vec<f32>> {
    let row_len = t.row_len() as usize;
    (0..t.n_rows() as usize)
        .map(|r| {
            let mut out = vec![f32::NAN; row_len];
            let bytes = t.row(r).expect("row inside the tensor");
            dequantize_row(t.ty, bytes, &mut out)
                .unwrap_or_else(|e| panic!("{} row {r}: {e}", t.name));
            out
        })
        .collect()
}

fn check_model(file: &str, expected_types: &[GgmlType]) {
    let model = GgufFile::open(model_path(file)).expect("opens");
    let gguf = model.gguf().expect("parses");
    let fixtures = fixture_rows(file);
    let mut seen_types = Vec::new();
    let mut checked_rows = 0;
    for t in gguf.tensor_views() {
        let rows = dequantize_rows(&t);
        for (r, row) in rows.iter().enumerate() {
            assert!(
                row.iter().all(|v| v.is_finite()),
                "{file}: {} row {r} has a non-finite value",
                t.name
            );
        }
        let mine: Vec<&FixtureRow> = fixtures.iter().filter(|f| f.tensor == t.name).collect();
        assert!(!mine.is_empty(), "{file}: no fixture rows for {}", t.name);
        for f in mine {
            assert_eq!(f.ty, t.ty.name().to_lowercase(), "{}", t.name);
            assert_eq!(f.row_len, t.row_len() as usize, "{}", t.name);
            let row = &rows[f.row];
            assert_eq!(
                &row[..f.head.len()],
                &f.head[..],
                "{} row {}",
                t.name,
                f.row
            );
            assert_eq!(fnv1a64(row), f.fnv1a64, "{} row {}", t.name, f.row);
            checked_rows += 1;
        }
        if !seen_types.contains(&t.ty) {
            seen_types.push(t.ty);
        }
    }
    assert_eq!(
        checked_rows,
        fixtures.len(),
        "{file}: every fixture row checked"
    );
    for ty in expected_types {
        assert!(seen_types.contains(ty), "{file}: expected {ty} tensors");
    }
}

#[test]
fn every_smollm2_tensor_dequantizes_and_matches_python_gguf() {
    check_model(SMOLLM2, &[GgmlType::F32, GgmlType::Q4_1, GgmlType::Q8_0]);
}

#[test]
fn every_gemma3_tensor_dequantizes_and_matches_python_gguf() {
    check_model(
        GEMMA3,
        &[
            GgmlType::F32,
            GgmlType::Q4K,
            GgmlType::Q5_0,
            GgmlType::Q6K,
            GgmlType::Q8_0,
        ],
    );
}

/// Relative RMSE of `b` against `a`.
fn relative_rmse(a: &[f32], b: &[f32]) -> f64 {
    let err: f64 = a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum();
    let norm: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum();
    (err / norm.max(f64::MIN_POSITIVE)).sqrt()
}

fn all_values(t: &TensorView<'_>) -> Vec<f32> {
    dequantize_rows(t).concat()
}

#[test]
fn smollm2_requantized_to_q8_0_loads_and_stays_close() {
    let model = GgufFile::open(model_path(SMOLLM2)).expect("opens");
    let src = model.gguf().expect("parses");
    let mut seen = 0;
    let (writer, plan) = requantize(&src, Mix::Q8_0, &MixOptions::default(), |p| {
        assert_eq!((p.index, p.total), (seen, src.tensors().len()));
        seen += 1;
    })
    .expect("requantizes");
    assert_eq!(seen, src.tensors().len());
    assert_eq!(plan.fallbacks().count(), 0);
    let mut bytes = Vec::new();
    writer.write_to(&mut bytes).expect("writes");
    let out = Gguf::parse(&bytes).expect("output parses");

    assert_eq!(out.get_u32("general.file_type").expect("file type"), 7);
    assert_eq!(out.architecture().expect("arch"), "llama");
    let vocab = |g: &Gguf<'_>| g.get_array("tokenizer.ggml.tokens").expect("vocab").len();
    assert_eq!(vocab(&out), vocab(&src));
    assert_eq!(out.tensors().len(), src.tensors().len());
    for t in src.tensor_views() {
        let o = out.tensor(t.name).expect("tensor kept");
        assert_eq!(o.dims, t.dims, "{}", t.name);
        if t.dims.len() == 1 {
            assert_eq!((o.ty, o.data), (t.ty, t.data), "{} kept as is", t.name);
        } else {
            assert_eq!(o.ty, GgmlType::Q8_0, "{}", t.name);
            // Q8_0 adds at most half a step of 1/127 of each block's maximum.
            let err = relative_rmse(&all_values(&t), &all_values(&o));
            assert!(err < 0.01, "{}: relative rmse {err}", t.name);
        }
    }
}

#[test]
fn gemma3_requantizes_with_fallbacks_for_640_wide_rows() {
    let model = GgufFile::open(model_path(GEMMA3)).expect("opens");
    let src = model.gguf().expect("parses");
    // A K-quant of the whole model takes a while; a few layers' worth of
    // real tensors (with every row length and type the model has) suffice.
    let mut small = GgufWriter::new();
    for (key, value) in src.metadata() {
        small.add_metadata(key, ferrolm_gguf::OwnedMetadataValue::from(value));
    }
    for t in src.tensor_views() {
        if t.name.starts_with("blk.0.")
            || t.name.starts_with("blk.1.")
            || t.name == "output_norm.weight"
        {
            small
                .add_tensor(t.name, &t.dims, t.ty, t.data)
                .expect("adds");
        }
    }
    let mut small_bytes = Vec::new();
    small.write_to(&mut small_bytes).expect("writes");
    let small = Gguf::parse(&small_bytes).expect("parses");

    // Pure: every matrix Q4_K, so only the fallback changes types.
    let pure = MixOptions { pure: true };
    let (writer, plan) = requantize(&small, Mix::Q4KS, &pure, |_| {}).expect("requantizes");
    let mut bytes = Vec::new();
    writer.write_to(&mut bytes).expect("writes");
    let out = Gguf::parse(&bytes).expect("output parses");
    assert_eq!(out.get_u32("general.file_type").expect("file type"), 14);

    let mut fallbacks = 0;
    for t in small.tensor_views() {
        let o = out.tensor(t.name).expect("tensor kept");
        let planned = plan
            .tensors
            .iter()
            .find(|p| p.name == t.name)
            .expect("planned");
        let action = planned.action;
        if t.dims.len() == 1 {
            assert_eq!(action, TensorAction::Kept);
            assert_eq!(o.data, t.data);
            continue;
        }
        let expected = if t.row_len() % 256 == 0 {
            GgmlType::Q4K
        } else {
            GgmlType::Q5_0
        };
        assert_eq!(o.ty, expected, "{}", t.name);
        assert_eq!(fallback_type(GgmlType::Q4K, t.row_len()), expected);
        if expected == GgmlType::Q5_0 {
            fallbacks += 1;
            assert_eq!(action, TensorAction::Fallback);
            assert_eq!((planned.chosen, planned.row_len()), (GgmlType::Q4K, 640));
        }
        if o.ty == t.ty {
            assert_eq!(o.data, t.data, "{} copied unchanged", t.name);
            continue;
        }
        // About what each format gives on Gaussian data: 4.5 bits per
        // weight leave ~7% relative error, 5.5 bits ~4%.
        let limit = if o.ty == GgmlType::Q4K { 0.085 } else { 0.05 };
        let err = relative_rmse(&all_values(&t), &all_values(&o));
        assert!(
            err < limit,
            "{} ({} -> {}): relative rmse {err}",
            t.name,
            t.ty,
            o.ty
        );
    }
    assert!(fallbacks > 0, "gemma3 has 640-wide rows");
    assert_eq!(plan.fallbacks().count(), fallbacks);
}
