//! `cargo xtask fuzz [SECONDS [TARGET..]]`: every libFuzzer target of `fuzz/` (or those
//! named) for SECONDS (60 unless given), one after another; fails if any of them crashed.
//!
//! Each target starts from its committed seeds (`fuzz/corpus/<target>`) and what earlier
//! runs found (`fuzz/target/corpus/<target>`, where new inputs go); its whole output is in
//! `fuzz/target/logs/<target>.log` and a crashing input in `fuzz/artifacts/<target>/`.
//! cargo-fuzz needs nightly features: on a stable toolchain `RUSTC_BOOTSTRAP=1` allows them.

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::{cargo_program, workspace_root};

/// The targets, in the order they run (the names of `fuzz/fuzz_targets/*.rs`).
const TARGETS: &[&str] = &[
    "gguf_parse",
    "model_load",
    "tokenizer",
    "chat_template",
    "serve_request",
];

/// Memory libFuzzer lets a run use (and the largest single allocation), in MiB.
const RSS_LIMIT_MB: u32 = 4096;

/// Seconds one input may take before libFuzzer reports it as a hang; the first input of
/// the tokenizer targets also loads a real model's vocabulary.
const INPUT_TIMEOUT_S: u32 = 60;

const DEFAULT_SECONDS: u64 = 60;

/// What one target's run gave.
struct Outcome {
    target: &'static str,
    crashed: bool,
    /// Executions, speed, corpus and memory, if libFuzzer got to its closing statistics.
    summary: Option<String>,
    /// Where libFuzzer wrote the crashing input, if it did.
    artifact: Option<String>,
}

pub fn run(args: &[String]) -> Result<()> {
    let (seconds, names) = match args {
        [] => (DEFAULT_SECONDS, &[][..]),
        [s, names @ ..] => (
            s.parse()
                .with_context(|| format!("SECONDS must be a whole number, got `{s}`"))?,
            names,
        ),
    };
    let targets: Vec<&'static str> = if names.is_empty() {
        TARGETS.to_vec()
    } else {
        names
            .iter()
            .map(|name| {
                TARGETS
                    .iter()
                    .copied()
                    .find(|t| t == name)
                    .with_context(|| {
                        format!("no fuzz target `{name}` (targets: {})", TARGETS.join(", "))
                    })
            })
            .collect::<Result<_>>()?
    };
    let root = workspace_root();
    cargo_fuzz(&root, &["--version"]).context(
        "cannot run `cargo fuzz`: install it with `cargo install cargo-fuzz` (fuzz/README.md)",
    )?;
    cargo_fuzz(&root, &["build"])?;

    let logs = root.join("fuzz/target/logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
    let mut outcomes = Vec::new();
    for target in targets {
        outcomes.push(fuzz(&root, target, seconds, &logs)?);
    }

    for o in &outcomes {
        let status = if o.crashed { "CRASHED" } else { "ok" };
        eprintln!(
            "xtask: {:<14} {status:<8} {}",
            o.target,
            o.summary.as_deref().unwrap_or("(no closing status line)")
        );
        if let Some(artifact) = &o.artifact {
            eprintln!("xtask: {:<14} input: {artifact}", "");
        }
    }
    let crashed: Vec<&str> = outcomes
        .iter()
        .filter(|o| o.crashed)
        .map(|o| o.target)
        .collect();
    if !crashed.is_empty() {
        bail!(
            "{} target(s) crashed: {} (logs in {})",
            crashed.len(),
            crashed.join(", "),
            logs.display()
        );
    }
    eprintln!("xtask: no target crashed in {seconds} s each");
    Ok(())
}

/// Runs `target` for `seconds`, its output into `logs/<target>.log`.
fn fuzz(root: &Path, target: &'static str, seconds: u64, logs: &Path) -> Result<Outcome> {
    let fuzz_dir = root.join("fuzz");
    let found = fuzz_dir.join("target/corpus").join(target);
    std::fs::create_dir_all(&found)
        .with_context(|| format!("cannot create {}", found.display()))?;
    let seeds = fuzz_dir.join("corpus").join(target);
    let dict = fuzz_dir.join("dicts").join(format!("{target}.dict"));
    let log_path = logs.join(format!("{target}.log"));
    let log =
        File::create(&log_path).with_context(|| format!("cannot create {}", log_path.display()))?;

    let mut args = vec![
        "run".to_owned(),
        target.to_owned(),
        found.display().to_string(),
        seeds.display().to_string(),
        "--".to_owned(),
        format!("-max_total_time={seconds}"),
        format!("-rss_limit_mb={RSS_LIMIT_MB}"),
        format!("-timeout={INPUT_TIMEOUT_S}"),
        "-print_final_stats=1".to_owned(),
    ];
    if dict.is_file() {
        args.push(format!("-dict={}", dict.display()));
    }
    eprintln!(
        "xtask: fuzzing {target} for {seconds} s (log: {})",
        log_path.display()
    );
    let status = Command::new(cargo_program())
        .arg("fuzz")
        .args(&args)
        .env("RUSTC_BOOTSTRAP", "1")
        .current_dir(root)
        .stdout(log.try_clone()?)
        .stderr(log)
        .status()
        .context("cannot run `cargo fuzz run`")?;

    let text = std::fs::read_to_string(&log_path)
        .with_context(|| format!("cannot read {}", log_path.display()))?;
    let summary = summary(&text);
    let artifact = text
        .lines()
        .find_map(|l| l.split_once("Test unit written to "))
        .map(|(_, path)| path.trim().to_owned());
    Ok(Outcome {
        target,
        crashed: !status.success(),
        summary,
        artifact,
    })
}

/// Executions, speed, corpus and memory from libFuzzer's `stat::` lines and its last
/// status line (`#N DONE cov: .. ft: .. corp: UNITS/SIZE ..`).
fn summary(log: &str) -> Option<String> {
    let stat = |name: &str| {
        log.lines()
            .find_map(|l| {
                l.strip_prefix("stat::")?
                    .strip_prefix(name)?
                    .strip_prefix(':')
            })
            .map(str::trim)
    };
    let corpus = log
        .lines()
        .rev()
        .filter(|l| l.starts_with('#'))
        .find_map(|l| l.split_once("corp: "))
        .and_then(|(_, rest)| rest.split_whitespace().next());
    Some(format!(
        "{} executions, {} exec/s, corpus {}, {} new, peak RSS {} MB",
        stat("number_of_executed_units")?,
        stat("average_exec_per_sec")?,
        corpus.unwrap_or("?"),
        stat("new_units_added")?,
        stat("peak_rss_mb")?,
    ))
}

/// `cargo fuzz ARGS` in the workspace root, nightly features allowed.
fn cargo_fuzz(root: &Path, args: &[&str]) -> Result<()> {
    let status = Command::new(cargo_program())
        .arg("fuzz")
        .args(args)
        .env("RUSTC_BOOTSTRAP", "1")
        .current_dir(root)
        .stdout(Stdio::null())
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        bail!("`cargo fuzz {}` failed ({status})", args.join(" "));
    }
    Ok(())
}
