//! Tasks of the ferrolm workspace, run as `cargo xtask <task>` (an alias in
//! `.cargo/config.toml`).

mod fuzz;
mod layers;
mod test_arm;
mod test_gpu;

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const USAGE: &str = "usage: cargo xtask <task>

tasks:
  fetch-models     download the known models (`ferrolm pull`) unless already present
  test [ARGS..]    build the tests, fetch the models and OpenAI's Python client, run `cargo test --release --workspace [ARGS..]`
  publish-check    `cargo package` every publishable crate, in dependency order
  check-layers     assert that crates depend only down the layer diagram of README.md
  test-gpu [--package DIR]
                   run the CUDA tests here (needs a GPU), or package them with run.sh into DIR
  test-arm [ARGS..]
                   cross-compile ferrolm-quant's tests for aarch64 and run them under qemu
                   (-cpu max and -cpu cortex-a53: the NEON kernels with and without dotprod)
  fuzz [SECONDS [TARGET..]]
                   run each `cargo fuzz` target of fuzz/ (or those named) for SECONDS
                   (default 60), one after another; fail if any crashes";

/// The models that the test suite reads.
const TEST_MODELS: &[&str] = &["smollm2-135m", "gemma3-270m"];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<()> {
    let Some(task) = args.first() else {
        println!("{USAGE}");
        return Ok(());
    };
    let rest = &args[1..];
    match task.as_str() {
        "fetch-models" => fetch_models(),
        "test" => test(rest),
        "publish-check" => publish_check(),
        "check-layers" => check_layers(),
        "test-gpu" => test_gpu::run(rest),
        "test-arm" => test_arm::run(rest),
        "fuzz" => fuzz::run(rest),
        "help" | "-h" | "--help" => {
            println!("{USAGE}");
            Ok(())
        }
        other => bail!("unknown task `{other}` (run `cargo xtask help` for the list)"),
    }
}

/// The workspace root: xtask lives one folder below it.
pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

pub(crate) fn cargo_program() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

/// Runs cargo in the workspace root with inherited output; fails on a non-zero exit.
fn cargo(args: &[&str]) -> Result<()> {
    let program = cargo_program();
    eprintln!("xtask: cargo {}", args.join(" "));
    let status = Command::new(&program)
        .args(args)
        .current_dir(workspace_root())
        .status()
        .with_context(|| format!("cannot run {program}"))?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

fn fetch_models() -> Result<()> {
    for name in TEST_MODELS {
        cargo(&[
            "run",
            "--release",
            "--quiet",
            "--package",
            "ferrolm",
            "--",
            "pull",
            name,
        ])
        .with_context(|| format!("cannot fetch the model {name}"))?;
    }
    Ok(())
}

/// Builds every test first, so that the `ferrolm` binary used to fetch the
/// models is the one the tests use (one build, one set of unified features),
/// then fetches the models and runs the tests.
fn test(extra: &[String]) -> Result<()> {
    let mut build = vec!["test", "--release", "--workspace", "--no-run"];
    build.extend(extra.iter().map(String::as_str));
    cargo(&build)?;
    let binary = release_binary("ferrolm")?;
    if binary.is_file() {
        for name in TEST_MODELS {
            run_binary(&binary, &["pull", name])
                .with_context(|| format!("cannot fetch the model {name}"))?;
        }
    } else {
        fetch_models()?;
    }
    openai_client()?;
    let mut run = vec!["test", "--release", "--workspace"];
    run.extend(extra.iter().map(String::as_str));
    cargo(&run)
}

/// The version of OpenAI's Python client the server's tests talk through.
const OPENAI_CLIENT: &str = "openai==3.63.0";

/// Installs OpenAI's Python client (with pip, into `target/openai-client`) unless it is
/// there: the server's tests use it as a user would.
fn openai_client() -> Result<()> {
    let meta = layers::workspace_metadata(&cargo_program(), &workspace_root())?;
    let target = meta["target_directory"]
        .as_str()
        .context("`cargo metadata` gives no target_directory")?;
    let dir = Path::new(target).join("openai-client");
    let marker = dir.join(format!("{OPENAI_CLIENT}.installed"));
    if marker.is_file() {
        return Ok(());
    }
    eprintln!("xtask: pip install {OPENAI_CLIENT} into {}", dir.display());
    let status = Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(["--upgrade", "--target"])
        .arg(&dir)
        .arg(OPENAI_CLIENT)
        .status()
        .context("cannot run python3 -m pip")?;
    if !status.success() {
        bail!("pip could not install {OPENAI_CLIENT} ({status})");
    }
    std::fs::write(&marker, "").with_context(|| format!("cannot write {}", marker.display()))?;
    Ok(())
}

/// Where cargo puts the release build of binary `name` (honours `CARGO_TARGET_DIR`).
fn release_binary(name: &str) -> Result<PathBuf> {
    let meta = layers::workspace_metadata(&cargo_program(), &workspace_root())?;
    let target = meta["target_directory"]
        .as_str()
        .context("`cargo metadata` gives no target_directory")?;
    Ok(Path::new(target)
        .join("release")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX)))
}

fn run_binary(binary: &Path, args: &[&str]) -> Result<()> {
    eprintln!("xtask: {} {}", binary.display(), args.join(" "));
    let status = Command::new(binary)
        .args(args)
        .current_dir(workspace_root())
        .status()
        .with_context(|| format!("cannot run {}", binary.display()))?;
    if !status.success() {
        bail!(
            "`{} {}` failed ({status})",
            binary.display(),
            args.join(" ")
        );
    }
    Ok(())
}

fn publish_check() -> Result<()> {
    cargo(&[
        "package",
        "--workspace",
        "--exclude",
        "xtask",
        "--allow-dirty",
    ])
}

fn check_layers() -> Result<()> {
    let meta = layers::workspace_metadata(&cargo_program(), &workspace_root())?;
    let found = layers::violations(&meta)?;
    if !found.is_empty() {
        bail!(
            "{} dependency edge(s) break the layer rule: {}",
            found.len(),
            found.join("; ")
        );
    }
    eprintln!("xtask: every crate depends only down the layer diagram");
    Ok(())
}
