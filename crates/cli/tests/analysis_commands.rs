//! `ferrolm perplexity`, `kl-divergence` and `analyze` on a real model: one JSON line each
//! with the documented keys, and errors a person can act on.
#![allow(clippy::unwrap_used)]

use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output};

fn model_path(file_name: &str) -> String {
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
    path.to_string_lossy().into_owned()
}

fn smollm2() -> String {
    model_path("SmolLM2-135M-Instruct.Q4_1.gguf")
}

fn ferrolm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferrolm"))
        .args(args)
        .args(["--threads", "2"])
        .output()
        .unwrap()
}

fn json_line(args: &[&str]) -> Value {
    let out = ferrolm(args);
    assert!(
        out.status.success(),
        "ferrolm {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        stdout.lines().count(),
        1,
        "--json prints one line: {stdout}"
    );
    serde_json::from_str(&stdout).unwrap()
}

/// The first part of gpl-3.txt, written to a temporary file.
fn short_text(dir: &tempfile::TempDir) -> String {
    let text = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/golden/texts/gpl-3.txt"),
    )
    .unwrap();
    let path = dir.path().join("short.txt");
    std::fs::write(&path, &text[..2500]).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn perplexity_and_kl_divergence_print_their_json_keys() {
    let dir = tempfile::tempdir().unwrap();
    let (model, text) = (smollm2(), short_text(&dir));
    let p = json_line(&[
        "perplexity",
        "-m",
        &model,
        "-f",
        &text,
        "-c",
        "128",
        "--json",
    ]);
    let chunks = p["chunks"].as_u64().unwrap();
    assert!(chunks >= 2);
    assert_eq!(p["tokens_scored"].as_u64().unwrap(), chunks * 63);
    let ppl = p["ppl"].as_f64().unwrap();
    assert!(ppl > 1.0 && ppl < 1000.0, "{ppl}");
    assert!(p["ppl_stderr"].as_f64().unwrap() > 0.0);

    let k = json_line(&[
        "kl-divergence",
        "--base",
        &model,
        "-m",
        &model,
        "-f",
        &text,
        "-c",
        "128",
        "--json",
    ]);
    assert_eq!(k["mean_kld"].as_f64().unwrap(), 0.0);
    assert_eq!(k["median_kld"].as_f64().unwrap(), 0.0);
    assert_eq!(k["same_top_p_percent"].as_f64().unwrap(), 100.0);
    assert_eq!(k["ppl_base"].as_f64().unwrap(), ppl);
    assert_eq!(k["ppl_model"].as_f64().unwrap(), ppl);
}

#[test]
fn analyze_reports_metrics_attention_and_flow() {
    let model = smollm2();
    let prompt = "The capital of France is Paris. The capital of Italy is Rome.";
    let a = json_line(&["analyze", "-m", &model, "-p", prompt, "--json"]);
    let n = a["tokens"].as_array().unwrap().len();
    assert_eq!(a["metrics"].as_array().unwrap().len(), n - 1);
    assert!(a["metrics"][0]["surprisal"].as_f64().unwrap() > 0.0);
    assert_eq!(a["attention"]["heads"].as_array().unwrap().len(), 30 * 9);
    assert_eq!(a["transfer_entropy"].as_array().unwrap().len(), 6);

    let text = ferrolm(&[
        "analyze",
        "-m",
        &model,
        "-p",
        prompt,
        "--no-transfer-entropy",
    ]);
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains("Attention health per layer") && !text.contains("Transfer entropy"));
}

#[test]
fn analyze_lists_the_most_influential_tokens() {
    let model = smollm2();
    let prompt = "The capital of France is Paris. The capital of Italy is Rome. The capital of \
                  Spain is Madrid. The capital of Germany is Berlin. The capital of";
    let a = json_line(&[
        "analyze",
        "-m",
        &model,
        "-p",
        prompt,
        "--no-transfer-entropy",
        "--influence",
        "5",
        "--json",
    ]);
    let tokens = a["tokens"].as_array().unwrap();
    let n = tokens.len();
    assert!(n > 30, "{n}");
    assert!(a.get("transfer_entropy").is_none());
    let ranked = a["influence"].as_array().unwrap();
    assert_eq!(ranked.len(), 5);
    let mut margins = Vec::new();
    for r in ranked {
        let pos = r["position"].as_u64().unwrap() as usize;
        assert_eq!(r["token"], tokens[pos]);
        // With history 1, position s has a series over the queries max(s, 1)..n, one sample
        // fewer; fewer than 8 samples are not ranked.
        let samples = r["samples"].as_u64().unwrap() as usize;
        assert_eq!(samples, n - pos.max(1) - 1, "{r}");
        assert!(samples >= 8);
        let f = |k: &str| r[k].as_f64().unwrap();
        assert!(f("te_bits") >= 0.0 && f("baseline_max_bits") >= f("baseline_bits"));
        assert!((f("margin_bits") - (f("te_bits") - f("baseline_max_bits"))).abs() < 1e-12);
        margins.push(f("margin_bits"));
    }
    assert!(margins.windows(2).all(|w| w[0] >= w[1]), "{margins:?}");

    let out = ferrolm(&[
        "analyze",
        "-m",
        &model,
        "-p",
        prompt,
        "--no-attention",
        "--no-transfer-entropy",
        "--influence",
    ]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let section = text
        .split_once("Most influential tokens")
        .unwrap_or_else(|| panic!("{text}"))
        .1;
    // Without a value, ten tokens.
    assert_eq!(
        section.lines().filter(|l| l.ends_with(" samples)")).count(),
        10
    );
    assert!(!text.contains("Attention health"), "{text}");

    let out = ferrolm(&["analyze", "-m", &model, "-p", "Hi", "--influence", "0"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn bad_inputs_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (model, text) = (smollm2(), short_text(&dir));
    for (args, needle) in [
        (
            vec!["perplexity", "-m", &model, "-f", &text, "-c", "4096"],
            "needs at least",
        ),
        (
            vec!["perplexity", "-m", &model, "-f", &text, "-c", "2"],
            "too small",
        ),
        (
            vec!["perplexity", "-m", &model, "-f", "/nonexistent.txt"],
            "cannot read",
        ),
        (
            vec!["analyze", "-m", &model, "-p", "Hi", "--bins", "1"],
            "--bins",
        ),
    ] {
        let out = ferrolm(&args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.contains(needle), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
}

#[test]
fn run_adds_metrics_and_speculative_counts_to_its_json() {
    let model = smollm2();
    let base = [
        "run",
        "-m",
        &model,
        "-p",
        "def is_prime(n):",
        "-n",
        "24",
        "--temp",
        "0",
        "--json",
    ];
    let plain = json_line(&base);
    assert!(plain.get("metrics").is_none() && plain.get("speculative").is_none());
    let ids = plain["ids"].as_array().unwrap();

    let with_metrics = json_line(&[&base[..], &["--metrics"]].concat());
    assert_eq!(
        with_metrics["ids"].as_array().unwrap(),
        ids,
        "metrics change nothing"
    );
    let metrics = with_metrics["metrics"].as_array().unwrap();
    assert_eq!(metrics.len(), ids.len());
    for (m, id) in metrics.iter().zip(ids) {
        assert_eq!(&m["token"], id);
        // Greedy picks the most likely token.
        assert_eq!(m["rank"], 0);
        assert!(m["entropy"].as_f64().unwrap() >= 0.0);
    }

    let draft = format!("draft:{model}");
    for spec in ["ngram", draft.as_str(), "self:10", "self:20"] {
        let s = json_line(&[&base[..], &["--spec", spec]].concat());
        assert_eq!(
            s["ids"].as_array().unwrap(),
            ids,
            "--spec {spec} is lossless under greedy"
        );
        let drafted = s["speculative"]["drafted"].as_u64().unwrap();
        assert!(s["speculative"]["accepted"].as_u64().unwrap() <= drafted);
    }
    // SmolLM2 has 30 layers: a draft through all of them is no draft.
    let out = ferrolm(&["run", "-m", &model, "-p", "Hi", "--spec", "self:30"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("self:30 with a model of 30 layers"), "{err}");
}

#[test]
fn device_cuda_is_refused_clearly_where_it_cannot_run() {
    let model = smollm2();
    // analyze records attention on the CPU only, whatever the build.
    let out = ferrolm(&["analyze", "-m", &model, "-p", "Hi", "--device", "cuda"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("runs on the CPU only") && err.trim().lines().count() == 1,
        "{err}"
    );
    // perplexity does take --device cuda: without a GPU (or CUDA support) it says which.
    let text = std::env::temp_dir().join("ferrolm-device-test.txt");
    std::fs::write(
        &text,
        "one two three four five six seven eight nine ten ".repeat(20),
    )
    .unwrap();
    let out = ferrolm(&[
        "perplexity",
        "-m",
        &model,
        "-f",
        text.to_str().unwrap(),
        "-c",
        "16",
        "--device",
        "cuda",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        // A machine with a GPU scored it.
        assert!(String::from_utf8_lossy(&out.stdout).contains("PPL"));
    } else {
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("CUDA") || err.contains("cuda"), "{err}");
        assert!(!err.contains("CPU only"), "{err}");
    }
}
