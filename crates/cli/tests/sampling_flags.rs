//! The sampling flags of `run` and `chat` on the real SmolLM2 model: presets give their
//! values and explicit flags override them, typical-p at 1 is plain sampling and a small
//! mass changes the draw, the entropy-guided sampler changes it too, and bad values are
//! usage errors naming the flag.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

use common::smollm2;
use serde_json::Value;

const PROMPT: &str = "Once upon a time";

fn ferrolm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferrolm"))
        .args(args)
        .output()
        .unwrap()
}

/// The ids `ferrolm run` generates for PROMPT with these extra flags.
fn run_ids(flags: &[&str]) -> Vec<u64> {
    let ids = run_n_ids(16, flags);
    assert_eq!(ids.len(), 16, "{flags:?}");
    ids
}

/// The ids (up to `n`: the end-of-text token may come first) `ferrolm run` generates for
/// PROMPT with these extra flags.
fn run_n_ids(n: usize, flags: &[&str]) -> Vec<u64> {
    let model = smollm2();
    let n_arg = n.to_string();
    let mut args = vec![
        "run",
        "-m",
        &model,
        "-p",
        PROMPT,
        "-n",
        &n_arg,
        "--json",
        "--threads",
        "1",
    ];
    args.extend_from_slice(flags);
    let out = ferrolm(&args);
    assert!(
        out.status.success(),
        "{flags:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<u64> = line["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert!(!ids.is_empty() && ids.len() <= n, "{flags:?}");
    ids
}

#[test]
fn typical_one_is_plain_sampling_and_a_small_mass_changes_the_draw() {
    let plain = run_ids(&["--temp", "1", "--seed", "11"]);
    assert_eq!(
        run_ids(&["--temp", "1", "--seed", "11", "--typical", "1"]),
        plain
    );
    assert_ne!(
        run_ids(&["--temp", "1", "--seed", "11", "--typical", "0.2"]),
        plain
    );
}

#[test]
fn presets_give_their_values_and_flags_override_them() {
    let greedy = run_ids(&["--temp", "0"]);
    assert_eq!(run_ids(&["--preset", "greedy"]), greedy);
    // An explicit temperature overrides the preset's; the rest of the preset stays.
    assert_eq!(
        run_ids(&["--preset", "min-p", "--seed", "5", "--temp", "0"]),
        greedy
    );
    let creative_greedy = run_ids(&["--preset", "creative", "--temp", "0"]);
    assert_ne!(creative_greedy, greedy, "creative's repeat penalty stays");
    assert_eq!(
        run_ids(&["--temp", "0", "--repeat-penalty", "1.05"]),
        creative_greedy
    );
    // A preset is its table's values, spelled out as flags.
    assert_eq!(
        run_ids(&["--preset", "creative", "--seed", "5"]),
        run_ids(&[
            "--seed",
            "5",
            "--temp",
            "1.1",
            "--top-k",
            "100",
            "--top-p",
            "0.98",
            "--min-p",
            "0.02",
            "--repeat-penalty",
            "1.05",
        ])
    );
    assert_ne!(
        run_ids(&["--preset", "creative", "--seed", "5"]),
        run_ids(&["--seed", "5"])
    );
}

#[test]
fn the_entropy_sampler_changes_the_draw_and_weight_zero_does_not() {
    let plain = run_ids(&["--seed", "9"]);
    let guided = run_ids(&["--seed", "9", "--sampler", "entropy"]);
    assert_ne!(guided, plain);
    assert_eq!(run_ids(&["--seed", "9", "--sampler", "entropy"]), guided);
    assert_eq!(
        run_ids(&[
            "--seed",
            "9",
            "--sampler",
            "entropy",
            "--entropy-weight",
            "0"
        ]),
        plain
    );
    // Other N-gram settings change the surprisals, so the draw changes with some seed. The
    // effect needs repeated N-grams (unseen ones all score alike) and weight: a longer run,
    // W = 0.6, and a few seeds (one may draw the same tokens both ways).
    let differs = ["9", "10", "11", "12"].iter().any(|&seed| {
        let weight = [
            "--seed",
            seed,
            "--sampler",
            "entropy",
            "--entropy-weight",
            "0.6",
        ];
        let default = run_n_ids(48, &weight);
        let short = run_n_ids(
            48,
            &[
                &weight[..],
                &["--entropy-order", "1", "--entropy-window", "8"],
            ]
            .concat(),
        );
        short != default
    });
    assert!(
        differs,
        "--entropy-order and --entropy-window changed nothing"
    );
}

#[test]
fn bad_sampling_values_are_usage_errors_naming_the_flag() {
    let cases: [(&[&str], &str); 7] = [
        (&["--typical", "2"], "--typical"),
        (&["--top-p", "1.5"], "--top-p"),
        (
            &["--sampler", "entropy", "--entropy-weight", "1.5"],
            "--entropy-weight",
        ),
        (
            &["--sampler", "entropy", "--entropy-order", "0"],
            "--entropy-order",
        ),
        (
            &[
                "--sampler",
                "entropy",
                "--entropy-order",
                "5",
                "--entropy-window",
                "4",
            ],
            "--entropy-window",
        ),
        (&["--entropy-weight", "0.3"], "--sampler entropy"),
        (&["--preset", "wild"], "creative"),
    ];
    // The model is never opened: the flags are checked first.
    for command in ["run", "chat"] {
        for (flags, expected) in cases {
            let mut args = vec![command, "-m", "/no/such/model.gguf", "-p", "hi"];
            if command == "chat" {
                args.truncate(3);
            }
            args.extend_from_slice(flags);
            let out = ferrolm(&args);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
            assert!(err.contains(expected), "{args:?}: {err}");
            assert!(!err.contains("/no/such/model.gguf"), "{args:?}: {err}");
        }
    }
}

#[test]
fn chat_takes_the_same_flags() {
    let reply = |flags: &[&str]| {
        let model = smollm2();
        let mut child = Command::new(env!("CARGO_BIN_EXE_ferrolm"))
            .args(["chat", "-m", &model, "-n", "12", "--threads", "1"])
            .args(flags)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"Name a colour.\n")
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{flags:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let greedy = reply(&["--temp", "0"]);
    assert!(!greedy.trim().is_empty());
    assert_eq!(reply(&["--preset", "greedy"]), greedy);
    assert_eq!(
        reply(&[
            "--preset",
            "min-p",
            "--seed",
            "1",
            "--typical",
            "0.5",
            "--temp",
            "0"
        ]),
        greedy
    );
}
