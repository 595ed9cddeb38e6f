//! `cargo xtask test-gpu`: the CUDA tests of ferrolm-transformer (`tests/cuda_*.rs`), either
//! run here on a machine with a GPU, or packaged with `--package DIR` for a GPU machine without
//! a Rust toolchain: the release test executables and a release `ferrolm` when the CLI builds
//! (stripped, so they travel), the real models cut to a few layers that the whole-model tests
//! compare (`models/`, written by the `cuda_model` test itself from the models on this
//! machine), and a `run.sh` that runs the tests with `FERROLM_REQUIRE_GPU=1` (a missing GPU is
//! then a failure).

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{cargo_program, workspace_root};

/// The package must travel in one device call.
const MAX_PACKAGE_BYTES: u64 = 60 * 1024 * 1024;

pub(crate) fn run(args: &[String]) -> Result<()> {
    match args {
        [] => run_here(),
        [flag, dir] if flag == "--package" => package(Path::new(dir)),
        _ => bail!("usage: cargo xtask test-gpu [--package DIR]"),
    }
}

/// Names of the CUDA integration tests: the stems of `crates/transformer/tests/cuda_*.rs`.
fn cuda_tests() -> Result<Vec<String>> {
    let dir = workspace_root().join("crates/transformer/tests");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        if stem.starts_with("cuda_") && path.extension().is_some_and(|e| e == "rs") {
            names.push(stem.to_owned());
        }
    }
    names.sort();
    if names.is_empty() {
        bail!("no tests/cuda_*.rs in {}", dir.display());
    }
    Ok(names)
}

fn cargo_command(args: &[&str]) -> Command {
    eprintln!("xtask: cargo {}", args.join(" "));
    let mut cmd = Command::new(cargo_program());
    cmd.args(args).current_dir(workspace_root());
    cmd
}

fn run_here() -> Result<()> {
    let tests = cuda_tests()?;
    let mut args = vec![
        "test",
        "--release",
        "--features",
        "cuda",
        "-p",
        "ferrolm-transformer",
    ];
    for t in &tests {
        args.extend(["--test", t.as_str()]);
    }
    args.extend(["--", "--nocapture", "--test-threads=1"]);
    let status = cargo_command(&args)
        .env("FERROLM_REQUIRE_GPU", "1")
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        bail!("the GPU tests failed ({status})");
    }
    Ok(())
}

/// Builds the CUDA test executables and returns (test name, path) for each.
fn build_test_executables() -> Result<Vec<(String, PathBuf)>> {
    let tests = cuda_tests()?;
    let mut args = vec![
        "test",
        "--no-run",
        "--release",
        "--features",
        "cuda",
        "-p",
        "ferrolm-transformer",
        "--message-format=json",
    ];
    for t in &tests {
        args.extend(["--test", t.as_str()]);
    }
    let out = cargo_command(&args)
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run cargo")?;
    if !out.status.success() {
        bail!("building the GPU tests failed ({})", out.status);
    }
    let mut found = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" || msg["profile"]["test"] != true {
            continue;
        }
        let (Some(name), Some(exe)) = (msg["target"]["name"].as_str(), msg["executable"].as_str())
        else {
            continue;
        };
        if tests.iter().any(|t| t == name) {
            found.push((name.to_owned(), PathBuf::from(exe)));
        }
    }
    if found.len() != tests.len() {
        bail!(
            "cargo reported {} test executables for {} CUDA tests",
            found.len(),
            tests.len()
        );
    }
    Ok(found)
}

/// Builds the release `ferrolm` binary (with its `cuda` feature when it has one); `None`
/// when the CLI does not build.
fn build_cli() -> Option<PathBuf> {
    let manifest = std::fs::read_to_string(workspace_root().join("crates/cli/Cargo.toml")).ok()?;
    let mut args = vec![
        "build",
        "--release",
        "-p",
        "ferrolm",
        "--message-format=json",
    ];
    if manifest
        .lines()
        .any(|l| l.trim_start().starts_with("cuda ="))
    {
        args.extend(["--features", "cuda"]);
    }
    let out = cargo_command(&args)
        .stderr(Stdio::inherit())
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!("xtask: warning: the ferrolm binary does not build; packaging the tests only");
        return None;
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|line| {
            let msg: serde_json::Value = serde_json::from_str(line).ok()?;
            if msg["reason"] == "compiler-artifact" && msg["target"]["name"] == "ferrolm" {
                msg["executable"].as_str().map(PathBuf::from)
            } else {
                None
            }
        })
}

const RUN_SH: &str = r#"#!/bin/sh
# Runs ferrolm's packaged GPU tests. Logs go to $OUT when set, else to ./logs beside this file.
set -u
here=$(cd "$(dirname "$0")" && pwd)
logs=${OUT:-$here/logs}
mkdir -p "$logs"
export FERROLM_REQUIRE_GPU=1
export FERROLM_HOME="${FERROLM_HOME:-$(mktemp -d)}"
export FERROLM_TEST_MODELS="$here/models"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv 2>&1 | tee "$logs/gpu.txt"
# Clocks and power once a second while the tests run, to read timings against.
nvidia-smi dmon -s pc -d 1 >"$logs/dmon.txt" 2>&1 &
dmon=$!
passed=0
failed=0
for t in "$here"/tests/*; do
    name=$(basename "$t")
    if "$t" --nocapture --test-threads=1 >"$logs/$name.log" 2>&1; then
        passed=$((passed + 1))
        echo "ok   $name"
    else
        failed=$((failed + 1))
        echo "FAIL $name"
    fi
    cat "$logs/$name.log"
done
if [ -x "$here/ferrolm" ]; then
    "$here/ferrolm" --help >"$logs/ferrolm.txt" 2>&1 && echo "ferrolm binary runs" || echo "ferrolm binary failed to start"
fi
kill "$dmon" 2>/dev/null
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
"#;

/// Copies an executable and strips its symbols and debug lines when `strip` is there (test
/// executables shrink from about 30 MiB to 2); returns the size of the copy.
fn copy_executable(from: &Path, to: &Path) -> Result<u64> {
    std::fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    let stripped = Command::new("strip")
        .arg(to)
        .status()
        .is_ok_and(|s| s.success());
    if !stripped {
        eprintln!("xtask: note: could not strip {}", to.display());
    }
    Ok(std::fs::metadata(to)
        .with_context(|| format!("reading {}", to.display()))?
        .len())
}

/// The test that cuts the real models, run here with the variable that makes it write them.
const CUT_MODELS_TEST: (&str, &str) = ("cuda_model", "cut_models_keep_their_layers_and_vocabulary");

/// Writes the cut real models into `dir` by running the test that makes them; returns their
/// total size.
fn write_cut_models(tests: &[(String, PathBuf)], dir: &Path) -> Result<u64> {
    let (test, name) = CUT_MODELS_TEST;
    let Some((_, exe)) = tests.iter().find(|(t, _)| t == test) else {
        bail!("no {test} test executable to write the cut models with");
    };
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let status = Command::new(exe)
        .args(["--exact", name, "--test-threads=1"])
        .env("FERROLM_WRITE_TEST_MODELS", dir)
        .env_remove("FERROLM_TEST_MODELS")
        .status()
        .with_context(|| format!("cannot run {}", exe.display()))?;
    if !status.success() {
        bail!(
            "{test} {name} failed ({status}); are the real models here (`cargo xtask fetch-models`)?"
        );
    }
    let mut total = 0;
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        total += entry?.metadata()?.len();
    }
    if total == 0 {
        bail!("{test} {name} wrote no model into {}", dir.display());
    }
    Ok(total)
}

fn package(dir: &Path) -> Result<()> {
    let tests = build_test_executables()?;
    let cli = build_cli();
    let test_dir = dir.join("tests");
    if test_dir.exists() {
        std::fs::remove_dir_all(&test_dir)
            .with_context(|| format!("clearing {}", test_dir.display()))?;
    }
    std::fs::create_dir_all(&test_dir)
        .with_context(|| format!("creating {}", test_dir.display()))?;
    let mut total = 0;
    for (name, exe) in &tests {
        total += copy_executable(exe, &test_dir.join(name))?;
    }
    let cli_dst = dir.join("ferrolm");
    if let Some(cli) = &cli {
        total += copy_executable(cli, &cli_dst)?;
    } else if cli_dst.exists() {
        std::fs::remove_file(&cli_dst)
            .with_context(|| format!("removing {}", cli_dst.display()))?;
    }
    total += write_cut_models(&tests, &dir.join("models"))?;
    let run_sh = dir.join("run.sh");
    std::fs::write(&run_sh, RUN_SH).with_context(|| format!("writing {}", run_sh.display()))?;
    let status = Command::new("chmod")
        .arg("+x")
        .arg(&run_sh)
        .status()
        .context("cannot run chmod")?;
    if !status.success() {
        bail!("chmod +x {} failed", run_sh.display());
    }
    total += RUN_SH.len() as u64;
    if total > MAX_PACKAGE_BYTES {
        bail!(
            "the package is {} MiB, over the 60 MiB a device call carries",
            total >> 20
        );
    }
    eprintln!(
        "xtask: packaged {} test executable(s){}, the cut models in {} ({:.1} MiB); run {}/run.sh on the GPU machine",
        tests.len(),
        if cli.is_some() { " and ferrolm" } else { "" },
        dir.display(),
        total as f64 / (1024.0 * 1024.0),
        dir.display()
    );
    Ok(())
}
