//! Small promises of the command line: usage errors exit 2, a missing file is named once, text
//! to tokenize can come from stdin.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write as _;
use std::process::{Command, Stdio};

fn ferrolm(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ferrolm"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn tokenize_without_text_is_a_usage_error() {
    let out = ferrolm(&["tokenize", "-m", "/no/such/model.gguf"]);
    assert_eq!(out.status.code(), Some(2));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("-f -"), "{e}");
}

#[test]
fn a_missing_model_file_is_named_once() {
    for args in [
        &["run", "-m", "/no/such/model.gguf", "-p", "hi"][..],
        &["tokenize", "-m", "/no/such/model.gguf", "hi"][..],
    ] {
        let out = ferrolm(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let e = String::from_utf8_lossy(&out.stderr);
        assert_eq!(e.matches("/no/such/model.gguf").count(), 1, "{e}");
        assert_eq!(e.trim_end().lines().count(), 1, "{e}");
    }
}

#[test]
fn tokenize_reads_stdin_with_dash() {
    let model = common::smollm2();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferrolm"))
        .args(["tokenize", "-m", &model, "--json", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"Hello world")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let from_stdin: Vec<u32> = serde_json::from_slice(&out.stdout).unwrap();
    let out = ferrolm(&["tokenize", "-m", &model, "--json", "Hello world"]);
    let from_arg: Vec<u32> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(from_stdin, from_arg);
    assert!(!from_stdin.is_empty());
}
