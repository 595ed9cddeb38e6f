//! Sizes a user gives that the model or the machine cannot meet: each is a clear line on stderr
//! or a warning, never a panic or an abort.
#![allow(clippy::unwrap_used)]

mod common;

use common::smollm2;

use std::process::{Command, Output};

fn ferrolm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferrolm"))
        .args(args)
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn run_without_a_token_limit_generates_until_the_context_is_full() {
    let model = smollm2();
    for n in [None, Some("-1"), Some("-7")] {
        let mut args = vec![
            "run", "-m", &model, "-p", "hi", "-c", "8", "--temp", "0", "--json",
        ];
        if let Some(n) = n {
            args.extend(["-n", n]);
        }
        let out = ferrolm(&args);
        assert!(out.status.success(), "{n:?}: {}", stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let generated = v["ids"].as_array().unwrap().len();
        let prompt = v["prompt_ids"].as_array().unwrap().len();
        assert_eq!(prompt + generated, 9, "{n:?}: {v}");
    }
}

#[test]
fn a_context_too_small_for_a_prompt_and_a_reply_is_a_usage_error() {
    let model = smollm2();
    for c in ["0", "1"] {
        let out = ferrolm(&["run", "-m", &model, "-p", "hi", "-c", c, "-n", "2"]);
        assert_eq!(out.status.code(), Some(1), "-c {c}");
        let e = stderr(&out);
        assert!(e.contains(&format!("a context of {c} tokens")), "{e}");
        assert_eq!(e.trim_end().lines().count(), 1, "{e}");
    }
    let out = ferrolm(&[
        "run", "-m", &model, "-p", "hi", "-c", "2", "-n", "4", "--temp", "0",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn a_context_past_the_trained_one_is_used_up_to_it_with_a_warning() {
    let model = smollm2();
    let out = ferrolm(&[
        "run", "-m", &model, "-p", "hi", "-c", "1000000", "-n", "2", "--temp", "0",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let e = stderr(&out);
    assert!(
        e.contains("longer than the 8192 the model was trained with"),
        "{e}"
    );
}

#[test]
fn ctrl_c_ends_run_with_its_text_and_timing_line() {
    use std::io::Read as _;
    let model = smollm2();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferrolm"))
        .args(["run", "-m", &model, "-p", "Once upon a time", "--temp", "0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 32];
    stdout.read_exact(&mut first).unwrap();
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let e = stderr(&out);
    assert!(e.contains("(interrupted)"), "{e}");
    assert!(e.contains("load ") && e.contains("decode "), "{e}");
}

#[test]
fn a_huge_trained_context_and_a_huge_context_flag_are_a_memory_error_not_an_abort() {
    let source = ferrolm_gguf::GgufFile::open(smollm2()).unwrap();
    let gguf = source.gguf().unwrap();
    let mut w = ferrolm_gguf::GgufWriter::from_gguf(&gguf).unwrap();
    w.add_metadata("llama.context_length", u32::MAX);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge-context.gguf");
    w.write_file(&path).unwrap();
    let path = path.display().to_string();
    let out = ferrolm(&[
        "run",
        "-m",
        &path,
        "-p",
        "hi",
        "-c",
        "4000000000",
        "-n",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let e = stderr(&out);
    assert!(e.contains("needs") && e.contains("MiB"), "{e}");
}
