//! `ferrolm tokenizer train`: a vocabulary learned from text files, written as a
//! vocabulary-only GGUF file that `ferrolm tokenize` reads, and errors for missing or
//! empty files and a vocabulary size too small.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ferrolm_gguf::{GgufFile, keys};
use ferrolm_tokenizer::{DecodeOptions, Tokenizer};

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

/// gpl-3.txt cut in two halves, written as two files in `dir`.
fn corpus(dir: &Path) -> [String; 2] {
    let text = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/golden/texts/gpl-3.txt"),
    )
    .unwrap();
    let half = text.len() / 2;
    let cut = (half..text.len())
        .find(|&i| text.is_char_boundary(i))
        .unwrap();
    let (a, b) = text.split_at(cut);
    [("a.txt", a), ("b.txt", b)].map(|(name, part)| {
        let path = dir.join(name);
        std::fs::write(&path, part).unwrap();
        path.to_string_lossy().into_owned()
    })
}

#[test]
fn a_trained_vocabulary_round_trips_text_through_ferrolm_tokenize() {
    let dir = tempfile::tempdir().unwrap();
    let [a, b] = corpus(dir.path());
    let out = dir.path().join("vocab.gguf");
    let out_str = out.to_str().unwrap();
    let summary = ok_stdout(&[
        "tokenizer",
        "train",
        "--vocab-size",
        "600",
        &a,
        &b,
        "-o",
        out_str,
    ]);
    assert!(summary.contains("600 tokens (343 merges)"), "{summary}");

    let file = GgufFile::open(&out).unwrap();
    let gguf = file.gguf().unwrap();
    assert_eq!(gguf.get_str(keys::tokenizer::MODEL).unwrap(), "gpt2");
    assert_eq!(gguf.get_array(keys::tokenizer::TOKENS).unwrap().len(), 600);
    assert_eq!(gguf.get_array(keys::tokenizer::MERGES).unwrap().len(), 343);
    assert_eq!(gguf.tensor_views().count(), 0, "vocabulary only");

    // The pieces `tokenize` prints add up to the text, in fewer tokens than bytes.
    let text = "This License applies to any program or other work, 42 times.";
    let listing = ok_stdout(&["tokenize", "-m", out_str, text]);
    let lines: Vec<&str> = listing.lines().collect();
    let (last, pieces) = lines.split_last().unwrap();
    let joined: String = pieces
        .iter()
        .map(|l| {
            let (_, quoted) = l.trim_start().split_once(' ').unwrap();
            quoted.strip_prefix('"').unwrap().strip_suffix('"').unwrap()
        })
        .collect();
    assert_eq!(joined, text);
    assert_eq!(*last, format!("{} tokens", pieces.len()));
    assert!(pieces.len() * 2 < text.len(), "{listing}");

    // Text the corpus never saw comes back byte for byte.
    let unseen = "Zebras juggle émojis 😀 — quietly.";
    let ids: Vec<u32> =
        serde_json::from_str(&ok_stdout(&["tokenize", "-m", out_str, "--json", unseen])).unwrap();
    let tokenizer = Tokenizer::from_gguf(&gguf).unwrap();
    assert_eq!(
        tokenizer.decode(&ids, DecodeOptions::default()).unwrap(),
        unseen
    );
    // <|endoftext|> is the special token 0.
    let special: Vec<u32> = serde_json::from_str(&ok_stdout(&[
        "tokenize",
        "-m",
        out_str,
        "--json",
        "--parse-special",
        "<|endoftext|>",
    ]))
    .unwrap();
    assert_eq!(special, [0]);
}

#[test]
fn a_small_corpus_gives_fewer_tokens_than_asked_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.txt");
    std::fs::write(&path, "abab abab").unwrap();
    let out = dir.path().join("tiny.gguf");
    let result = ferrolm(&[
        "tokenizer",
        "train",
        "--vocab-size",
        "4294967295",
        path.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(result.status.success());
    let err = String::from_utf8_lossy(&result.stderr);
    assert!(err.contains("not 4294967295"), "{err}");
    let file = GgufFile::open(&out).unwrap();
    let tokens = file
        .gguf()
        .unwrap()
        .get_array(keys::tokenizer::TOKENS)
        .unwrap()
        .len();
    assert!(tokens > 257 && tokens < 270, "{tokens}");
}

#[test]
fn missing_or_empty_files_and_a_small_vocabulary_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let [a, _] = corpus(dir.path());
    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, " \n").unwrap();
    let out = dir.path().join("v.gguf");
    let out = out.to_str().unwrap();
    let cases: [(&[&str], i32, &str); 5] = [
        (
            &["--vocab-size", "300", "/no/such/corpus.txt", "-o", out],
            1,
            "/no/such/corpus.txt",
        ),
        (
            &[
                "--vocab-size",
                "300",
                &a,
                empty.to_str().unwrap(),
                "-o",
                out,
            ],
            1,
            "empty.txt is empty",
        ),
        (&["--vocab-size", "257", &a, "-o", out], 2, "at least 258"),
        (&["--vocab-size", "300", "-o", out], 2, "FILES"),
        (
            &["--vocab-size", "4294967296", &a, "-o", out],
            2,
            "--vocab-size",
        ),
    ];
    for (args, code, expected) in cases {
        let result = ferrolm(&[&["tokenizer", "train"][..], args].concat());
        let err = String::from_utf8_lossy(&result.stderr);
        assert_eq!(result.status.code(), Some(code), "{args:?}: {err}");
        assert!(err.contains(expected), "{args:?}: {err}");
        if code == 1 || expected.starts_with("at least") {
            assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        }
    }
    assert!(!Path::new(out).exists());
}
