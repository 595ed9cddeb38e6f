//! `ferrolm tokenize` against the golden ids, and `ferrolm quantize` round trips of both
//! real models (fetched by `cargo xtask fetch-models`).
#![allow(clippy::unwrap_used)]

use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output};

fn model_path(file_name: &str) -> PathBuf {
    let dir = match std::env::var_os("FERROLM_HOME").filter(|h| !h.is_empty()) {
        Some(home) => PathBuf::from(home).join("models"),
        None => dirs::cache_dir().unwrap().join("ferrolm").join("models"),
    };
    let path = dir.join(file_name);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo xtask fetch-models` first",
        path.display()
    );
    path
}

fn ferrolm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferrolm"))
        .args(args)
        .output()
        .unwrap()
}

fn ok_stdout(args: &[&str]) -> String {
    let out = ferrolm(args);
    assert!(
        out.status.success(),
        "ferrolm {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn golden(model: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../../fixtures/golden/{model}.json"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn ids_of(stdout: &str) -> Vec<u64> {
    assert_eq!(stdout.lines().count(), 1, "--json prints one line");
    serde_json::from_str(stdout.trim()).unwrap()
}

fn check_golden_tokenize(model: &str, file: &str) {
    let path = model_path(file);
    let path = path.to_str().unwrap();
    let cases = golden(model)["tokenize"].as_array().unwrap().clone();
    assert!(!cases.is_empty());
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let mut args = vec!["tokenize", "-m", path, "--json"];
        if !case["add_special"].as_bool().unwrap() {
            args.push("--no-bos");
        }
        if case["parse_special"].as_bool().unwrap() {
            args.push("--parse-special");
        }
        // `--` so texts starting with '-' stay text.
        args.extend(["--", text]);
        let want: Vec<u64> = serde_json::from_value(case["ids"].clone()).unwrap();
        assert_eq!(ids_of(&ok_stdout(&args)), want, "{model}: {text:?}");
    }
}

#[test]
fn tokenize_gives_the_golden_ids_for_smollm2() {
    check_golden_tokenize("smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf");
}

#[test]
fn tokenize_gives_the_golden_ids_for_gemma3() {
    check_golden_tokenize("gemma3", "gemma-3-270m-q4_k_m.gguf");
}

#[test]
fn tokenize_reads_a_file_and_needs_some_text() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("t.txt");
    std::fs::write(&text, "Hello world").unwrap();
    let ids = ids_of(&ok_stdout(&[
        "tokenize",
        "-m",
        "smollm2-135m",
        "--json",
        "-f",
        text.to_str().unwrap(),
    ]));
    assert_eq!(ids, [19556, 905]);
    let out = ferrolm(&["tokenize", "-m", "smollm2-135m"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("give the text"));
}

#[test]
fn tokenize_works_on_a_vocabulary_only_file() {
    let src = std::fs::read(model_path("SmolLM2-135M-Instruct.Q4_1.gguf")).unwrap();
    let gguf = ferrolm_gguf::Gguf::parse(&src).unwrap();
    let mut writer = ferrolm_gguf::GgufWriter::new();
    for (key, value) in gguf.metadata() {
        writer.add_metadata(key, ferrolm_gguf::OwnedMetadataValue::from(value));
    }
    let dir = tempfile::tempdir().unwrap();
    let vocab = dir.path().join("vocab.gguf");
    writer.write_file(&vocab).unwrap();
    let ids = ids_of(&ok_stdout(&[
        "tokenize",
        "-m",
        vocab.to_str().unwrap(),
        "--json",
        "Hello world",
    ]));
    assert_eq!(ids, [19556, 905]);
}

fn inspect_types(path: &str) -> Value {
    serde_json::from_str(ok_stdout(&["inspect", path, "--json"]).trim()).unwrap()
}

#[test]
fn quantize_round_trips_smollm2_to_q8_0_and_back_to_q4_1() {
    let dir = tempfile::tempdir().unwrap();
    let src = model_path("SmolLM2-135M-Instruct.Q4_1.gguf");
    let q8 = dir.path().join("q8.gguf");
    let q41 = dir.path().join("q41.gguf");
    ok_stdout(&[
        "quantize",
        src.to_str().unwrap(),
        q8.to_str().unwrap(),
        "q8_0",
    ]);
    ok_stdout(&[
        "quantize",
        q8.to_str().unwrap(),
        q41.to_str().unwrap(),
        "q4_1",
    ]);
    for (path, ty) in [(&q8, "q8_0"), (&q41, "q4_1")] {
        let report = inspect_types(path.to_str().unwrap());
        assert_eq!(report["tensors"].as_array().unwrap().len(), 272);
        let wq = report["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == "blk.0.attn_q.weight")
            .unwrap()
            .clone();
        assert_eq!(
            wq["type"].as_str().unwrap().to_lowercase(),
            ty,
            "{}",
            path.display()
        );
    }
    // The requantized model still knows the capital of France.
    let run = ok_stdout(&[
        "run",
        "-m",
        q41.to_str().unwrap(),
        "-p",
        "The capital of France is",
        "-n",
        "4",
        "--temp",
        "0",
    ]);
    assert!(run.contains("Paris"), "{run:?}");
}

#[test]
fn quantize_gemma3_pure_falls_back_for_640_wide_rows_and_still_runs() {
    let dir = tempfile::tempdir().unwrap();
    let src = model_path("gemma-3-270m-q4_k_m.gguf");
    let out_path = dir.path().join("q4k.gguf");
    let out = ferrolm(&[
        "quantize",
        src.to_str().unwrap(),
        out_path.to_str().unwrap(),
        "q4_k_s",
        "--pure",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("rows of 640 values") && stderr.contains("q5_0"),
        "{stderr}"
    );
    let report = inspect_types(out_path.to_str().unwrap());
    assert_eq!(report["file_type"]["id"], 14);
    let tensors = report["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), 236);
    let type_of = |name: &str| {
        tensors.iter().find(|t| t["name"] == name).unwrap()["type"]
            .as_str()
            .unwrap()
            .to_lowercase()
    };
    assert_eq!(type_of("blk.0.ffn_down.weight"), "q4_k");
    assert_eq!(type_of("blk.0.attn_v.weight"), "q5_0");
    assert_eq!(type_of("token_embd.weight"), "q5_0");
    let run = ok_stdout(&[
        "run",
        "-m",
        out_path.to_str().unwrap(),
        "-p",
        "The capital of France is",
        "-n",
        "4",
        "--temp",
        "0",
    ]);
    assert!(run.contains("capital"), "{run:?}");
}

/// llama-quantize's types for SmolLM2 under q4_K_M (fixtures/quantize), as name -> type.
fn llama_quantize_types(fixture: &str) -> Vec<(String, String)> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../../fixtures/quantize/{fixture}.tsv"));
    let mut types: Vec<(String, String)> = std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let (name, ty) = l.split_once('\t').unwrap();
            (name.to_owned(), ty.to_lowercase())
        })
        .collect();
    types.sort();
    types
}

#[test]
fn quantize_smollm2_q4_k_m_writes_llama_quantizes_types_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let src = model_path("SmolLM2-135M-Instruct.Q4_1.gguf");
    let out_path = dir.path().join("q4km.gguf");
    let args = [
        "quantize",
        src.to_str().unwrap(),
        out_path.to_str().unwrap(),
        "q4_k_m",
    ];
    let dry = ok_stdout(&[&args[..], &["--dry-run"]].concat());
    assert!(!out_path.exists(), "a dry run writes nothing");
    assert!(
        dry.contains("blk.0.attn_v.weight") && dry.contains("q4_1 -> q8_0"),
        "{dry}"
    );
    let stdout = ok_stdout(&args);
    // The summary counts every output type, fallbacks included.
    let summary: Vec<&str> = stdout.lines().collect();
    assert!(
        summary[0].contains("q4_K_M (general.file_type 15), 272 tensors"),
        "{stdout}"
    );
    for (ty, count) in [
        ("q5_0", 166),
        ("f32", 61),
        ("q4_K", 16),
        ("q8_0", 15),
        ("q6_K", 14),
    ] {
        assert!(
            summary
                .iter()
                .any(|l| l.split_whitespace().take(2).eq([ty, &count.to_string()])),
            "{ty} {count}: {stdout}"
        );
    }
    assert!(dry.ends_with(&stdout[stdout.find(':').unwrap()..]), "{dry}");
    let report = inspect_types(out_path.to_str().unwrap());
    assert_eq!(report["file_type"]["id"], 15);
    let mut written: Vec<(String, String)> = report["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let ty = t["type"].as_str().unwrap().to_lowercase();
            (t["name"].as_str().unwrap().to_owned(), ty)
        })
        .collect();
    written.sort();
    assert_eq!(written, llama_quantize_types("smollm2-135m.q4_k_m"));
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, ["q4km.gguf"], "no temporary file is left");
}

#[test]
fn quantize_rejects_an_unknown_type_and_its_own_input() {
    let src = model_path("SmolLM2-135M-Instruct.Q4_1.gguf");
    let src = src.to_str().unwrap();
    let out = ferrolm(&["quantize", src, "/tmp/never-written.gguf", "q9_9"]);
    assert_eq!(out.status.code(), Some(2), "a usage error");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unknown type") && stderr.contains("q4_k_m"),
        "{stderr}"
    );
    let out = ferrolm(&["quantize", src, src, "q8_0"]);
    assert!(!out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
}
