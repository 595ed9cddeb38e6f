//! `cargo xtask test-arm [ARGS..]`: the tests of ferrolm-quant cross-compiled for
//! aarch64 Linux and run under qemu user-mode emulation, once per emulated CPU model, so that
//! the NEON kernels are checked against the scalar references on an x86-64 machine: `max`
//! (NEON with `dotprod`, where the tests run both the `sdot` kernels and the plain NEON ones)
//! and `cortex-a53` (no `dotprod`: plain NEON is what the dispatched entry points pick).
//! `ARGS` go to `cargo test` (a test name filter, say).
//!
//! The linker and runner are set through cargo's environment variables for this run only,
//! so nothing in the repository's cargo configuration depends on the cross tools.

use anyhow::{Context, Result, bail};
use std::path::Path;
use std::process::{Command, Stdio};

use crate::{cargo_program, workspace_root};

const TARGET: &str = "aarch64-unknown-linux-gnu";
const LINKER: &str = "aarch64-linux-gnu-gcc";
const QEMU: &str = "qemu-aarch64";
/// Where Debian's `libc6-dev-arm64-cross` puts the aarch64 C library (qemu's `-L`).
const SYSROOT: &str = "/usr/aarch64-linux-gnu";
/// The emulated CPU models, each with and without the extensions the kernels detect.
const CPUS: &[&str] = &["max", "cortex-a53"];

pub(crate) fn run(args: &[String]) -> Result<()> {
    check_tools()?;
    let extra: Vec<&str> = args.iter().map(String::as_str).collect();
    let build = [
        "test",
        "--release",
        "-p",
        "ferrolm-quant",
        "--target",
        TARGET,
        "--no-run",
    ];
    cargo_with_runner(&build, None)?;
    for cpu in CPUS {
        let mut test = vec![
            "test",
            "--release",
            "-p",
            "ferrolm-quant",
            "--target",
            TARGET,
        ];
        test.extend(&extra);
        cargo_with_runner(&test, Some(cpu))
            .with_context(|| format!("the aarch64 tests failed under `{QEMU} -cpu {cpu}`"))?;
    }
    eprintln!(
        "xtask: ferrolm-quant's tests passed under {QEMU} -cpu {}",
        CPUS.join(", -cpu ")
    );
    Ok(())
}

/// Runs cargo with the aarch64 linker, and with qemu as the runner for `cpu`.
fn cargo_with_runner(args: &[&str], cpu: Option<&str>) -> Result<()> {
    let linker_var = "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER";
    let runner_var = "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER";
    let mut cmd = Command::new(cargo_program());
    cmd.args(args)
        .current_dir(workspace_root())
        .env(linker_var, LINKER);
    let mut shown = vec![format!("{linker_var}={LINKER}")];
    if let Some(cpu) = cpu {
        let runner = format!("{QEMU} -L {SYSROOT} -cpu {cpu}");
        shown.push(format!("{runner_var}=\"{runner}\""));
        cmd.env(runner_var, runner);
    }
    eprintln!("xtask: {} cargo {}", shown.join(" "), args.join(" "));
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {}", cargo_program()))?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Fails with what to install when the Rust target, the cross linker, its C library or
/// qemu is missing.
fn check_tools() -> Result<()> {
    let mut missing = Vec::new();
    if !has_rust_target()? {
        missing.push(format!(
            "the Rust target {TARGET}: rustup target add {TARGET}"
        ));
    }
    if !runs(LINKER) {
        missing.push(format!(
            "the linker {LINKER}: apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross"
        ));
    } else if !Path::new(SYSROOT).join("lib").is_dir() {
        missing.push(format!(
            "the aarch64 C library in {SYSROOT}: apt-get install libc6-dev-arm64-cross"
        ));
    }
    if !runs(QEMU) {
        missing.push(format!("{QEMU}: apt-get install qemu-user"));
    }
    if !missing.is_empty() {
        bail!(
            "cargo xtask test-arm needs\n  - {}\n(all at once: rustup target add {TARGET} && \
             apt-get install qemu-user gcc-aarch64-linux-gnu libc6-dev-arm64-cross)",
            missing.join("\n  - ")
        );
    }
    Ok(())
}

/// Whether the toolchain has the standard library of [`TARGET`].
fn has_rust_target() -> Result<bool> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let out = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .current_dir(workspace_root())
        .output()
        .with_context(|| format!("cannot run {rustc}"))?;
    if !out.status.success() {
        bail!("`{rustc} --print sysroot` failed ({})", out.status);
    }
    let sysroot = String::from_utf8_lossy(&out.stdout);
    let lib = Path::new(sysroot.trim())
        .join("lib/rustlib")
        .join(TARGET)
        .join("lib");
    Ok(lib.is_dir())
}

/// Whether `program --version` runs.
fn runs(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
