//! `ferrolm bench --spec` (greedy against speculative decoding of a real prompt) and
//! `--attention` (the decode test again with attention weights recorded) on SmolLM2.
#![allow(clippy::unwrap_used)]

mod common;

use common::smollm2;

use serde_json::Value;
use std::process::{Command, Output};

/// SmolLM2 has 30 layers of 9 query heads.
const SMOLLM2_LAYERS_TIMES_HEADS: u64 = 30 * 9;

fn ferrolm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferrolm"))
        .args(args)
        .args(["--threads", "2"])
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

fn json(args: &[&str]) -> Value {
    serde_json::from_str(&ok_stdout(args)).unwrap()
}

const LIST_PROMPT: &str = "Count: one two three four five, one two three four five, one two three four five, one two three four five,";

#[test]
fn bench_spec_ngram_accepts_drafts_on_a_repetitive_prompt() {
    let model = smollm2();
    let n_gen = 40u64;
    let n = n_gen.to_string();
    let report = json(&[
        "bench",
        "-m",
        &model,
        "--spec",
        "ngram",
        "--spec-prompt",
        LIST_PROMPT,
        "-n",
        &n,
        "-r",
        "1",
        "--json",
    ]);
    let rows = report.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{report}");
    let (greedy, spec) = (&rows[0], &rows[1]);
    let prompt_tokens = spec["speculative"]["prompt_tokens"].as_u64().unwrap();
    let tokenized = Command::new(env!("CARGO_BIN_EXE_ferrolm"))
        .args(["tokenize", "-m", &model, "--json", LIST_PROMPT])
        .output()
        .unwrap();
    let ids: Vec<u32> = serde_json::from_slice(&tokenized.stdout).unwrap();
    assert_eq!(
        prompt_tokens,
        ids.len() as u64,
        "the model's tokenizer, with BOS"
    );
    assert_eq!(
        greedy["test"],
        format!("tg{n_gen} @ d{prompt_tokens} greedy")
    );
    assert_eq!(
        spec["test"],
        format!("tg{n_gen} @ d{prompt_tokens} spec ngram")
    );
    assert!(greedy["speculative"].is_null());
    assert_eq!(spec["n_gen"], n_gen);
    assert_eq!(spec["n_depth"], prompt_tokens);
    assert!(greedy["avg_ts"].as_f64().unwrap() > 0.0 && spec["avg_ts"].as_f64().unwrap() > 0.0);

    let s = &spec["speculative"];
    assert_eq!(s["identical"], true);
    let (drafted, accepted, rounds) = (
        s["drafted"].as_u64().unwrap(),
        s["accepted"].as_u64().unwrap(),
        s["rounds"].as_u64().unwrap(),
    );
    assert!(accepted > 0 && accepted <= drafted, "{s}");
    // The first token comes from the prompt; every target pass then yields its accepted
    // drafts and one token of its own.
    assert_eq!(1 + rounds + accepted, n_gen, "{s}");
    let rate = s["acceptance_rate"].as_f64().unwrap();
    assert!(
        (rate - accepted as f64 / drafted as f64).abs() < 1e-3,
        "{s}"
    );
    let speedup = s["speedup"].as_f64().unwrap();
    let ratio = spec["avg_ts"].as_f64().unwrap() / s["greedy_avg_ts"].as_f64().unwrap();
    assert!((speedup - ratio).abs() < 0.01 * ratio, "{s}");

    // `ferrolm run` drafts the same way from the same prompt, so it counts the same, and its
    // tokens are greedy decoding's.
    let base = [
        "run",
        "-m",
        &model,
        "-p",
        LIST_PROMPT,
        "-n",
        &n,
        "--temp",
        "0",
        "--json",
    ];
    let plain: Value = serde_json::from_str(&ok_stdout(&base)).unwrap();
    let run: Value =
        serde_json::from_str(&ok_stdout(&[&base[..], &["--spec", "ngram"]].concat())).unwrap();
    assert_eq!(plain["ids"].as_array().unwrap().len() as u64, n_gen);
    assert_eq!(run["ids"], plain["ids"]);
    assert_eq!(run["speculative"]["drafted"], drafted);
    assert_eq!(run["speculative"]["accepted"], accepted);

    // The table names the drafter and the counts.
    let table = ok_stdout(&[
        "bench",
        "-m",
        &model,
        "--spec",
        "self:10",
        "--spec-prompt",
        LIST_PROMPT,
        "-n",
        "8",
        "-r",
        "1",
    ]);
    assert!(table.contains("spec self:10 |"), "{table}");
    assert!(table.contains("| self:10 (draft 4) |"), "{table}");
    assert!(table.contains("identical in all 1 repetitions"), "{table}");
}

#[test]
fn bench_spec_on_a_model_without_vocabulary_is_a_clear_error() {
    let model = smollm2();
    let bytes = std::fs::read(&model).unwrap();
    let gguf = ferrolm_gguf::Gguf::parse(&bytes).unwrap();
    let mut writer = ferrolm_gguf::GgufWriter::from_gguf(&gguf).unwrap();
    writer.add_metadata("tokenizer.ggml.model", "no_vocab");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-vocab.gguf");
    writer.write_file(&path).unwrap();
    let path = path.to_str().unwrap();

    let out = ferrolm(&["bench", "-m", path, "--spec", "ngram", "-n", "4", "-r", "1"]);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--spec needs a vocabulary") && err.contains("no-vocab.gguf"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");

    // Random-token tests need no vocabulary.
    let report = json(&[
        "bench", "-m", path, "-p", "0", "-n", "2", "-r", "1", "--json",
    ]);
    assert_eq!(report[0]["test"], "tg2");
}

#[test]
fn bench_attention_adds_a_decode_row_with_capture_on() {
    let model = smollm2();
    let report = json(&[
        "bench",
        "-m",
        &model,
        "-p",
        "0",
        "-n",
        "6",
        "-d",
        "3",
        "-r",
        "2",
        "--attention",
        "--json",
    ]);
    let rows = report.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{report}");
    let (off, on) = (&rows[0], &rows[1]);
    assert_eq!(off["test"], "tg6 @ d3");
    assert_eq!(on["test"], "tg6 @ d3 (attention capture)");
    assert_eq!(off["attention_capture"], false);
    assert!(off["attention_rows"].is_null());
    assert_eq!(on["attention_capture"], true);
    // One row per decode step, layer and head: the untimed prefill of the depth is not
    // recorded.
    assert_eq!(on["attention_rows"], 6 * SMOLLM2_LAYERS_TIMES_HEADS);
    for r in rows {
        assert_eq!(r["samples_ts"].as_array().unwrap().len(), 2);
        assert!(r["avg_ts"].as_f64().unwrap() > 0.0);
    }

    let table = ok_stdout(&[
        "bench",
        "-m",
        &model,
        "-p",
        "0",
        "-n",
        "4",
        "-r",
        "1",
        "--attention",
    ]);
    assert!(table.contains("| tg4 |"), "{table}");
    assert!(table.contains("| tg4 (attention capture) |"), "{table}");
    assert!(
        table.contains(&format!("recorded {} rows", 4 * SMOLLM2_LAYERS_TIMES_HEADS)),
        "{table}"
    );
    let plain = ok_stdout(&["bench", "-m", &model, "-p", "0", "-n", "4", "-r", "1"]);
    assert!(!plain.contains("attention"), "{plain}");

    let out = ferrolm(&["bench", "-m", &model, "--attention", "--spec", "ngram"]);
    assert!(!out.status.success());
}

#[test]
fn parallel_rows_follow_llama_batched_bench() {
    let model = common::smollm2();
    let out = ferrolm(&[
        "bench",
        "-m",
        &model,
        "--parallel",
        "1,3",
        "-p",
        "8",
        "-n",
        "2",
        "-b",
        "16",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for (row, pl) in rows.iter().zip([1u64, 3]) {
        assert_eq!(row["pl"], pl);
        assert_eq!(row["pp"], 8);
        assert_eq!(row["tg"], 2);
        assert_eq!(row["n_kv"], pl * 10);
        let f = |k: &str| row[k].as_f64().unwrap();
        assert!(f("t_pp") > 0.0 && f("t_tg") > 0.0, "{row}");
        let speed = (pl * 10) as f64 / f("t");
        assert!((f("speed") - speed).abs() <= 0.01 * speed + 0.01, "{row}");
    }
    let out = ferrolm(&["bench", "-m", &model, "--parallel", "0"]);
    assert_eq!(out.status.code(), Some(1));
    let out = ferrolm(&["bench", "-m", &model, "--parallel", "2", "--spec", "ngram"]);
    assert_eq!(out.status.code(), Some(2));
}

/// `FERROLM_CPU_KERNELS` caps the kernel set (so any machine can run a smaller machine's
/// kernels), bench names the set that ran and the memory the repacked weights take, and an
/// unknown set is refused.
#[test]
fn the_kernel_set_can_be_forced_down_and_is_reported() {
    let model = smollm2();
    let run = |set: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferrolm"));
        cmd.args([
            "bench", "-m", &model, "-p", "8", "-n", "2", "-r", "1", "--json",
        ])
        .args(["--threads", "2"]);
        if let Some(set) = set {
            cmd.env("FERROLM_CPU_KERNELS", set);
        }
        cmd.output().unwrap()
    };
    let parse = |out: Output| -> Value {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let scalar = parse(run(Some("scalar")));
    assert_eq!(scalar[0]["cpu_kernels"], "scalar", "{scalar}");
    // Scalar code gains nothing from interleaved rows: nothing is copied.
    assert_eq!(scalar[0]["weight_copies_mib"], 0.0, "{scalar}");
    let best = parse(run(None));
    let set = best[0]["cpu_kernels"].as_str().unwrap().to_owned();
    if set == "avx2" {
        // SmolLM2's Q4_1 and Q8_0 matrices are interleaved, the tied head with them:
        // about the whole 92 MiB file, never more.
        let mib = best[0]["weight_copies_mib"].as_f64().unwrap();
        let file_mib = best[0]["model_size"].as_f64().unwrap() / (1024.0 * 1024.0);
        assert!(mib > 0.5 * file_mib && mib <= file_mib, "{best}");
        assert_eq!(parse(run(Some("avx2")))[0]["cpu_kernels"], "avx2");
    }
    let bad = run(Some("sse9"));
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("FERROLM_CPU_KERNELS=sse9") && err.contains("avx2"),
        "{err}"
    );
}
