//! `cargo xtask test-arm`: the quantization crate's tests (every kernel set against
//! the scalar reference, and the real models' matrices against exact products) built
//! for aarch64 and run under qemu, once on a CPU with the dot-product extension
//! (NEON with and without `sdot`) and once on one without (NEON only).

use anyhow::{Context, Result, bail};
use std::path::Path;
use std::process::Command;

const TARGET: &str = "aarch64-unknown-linux-gnu";
const LINKER: &str = "aarch64-linux-gnu-gcc";
const QEMU: &str = "qemu-aarch64";
/// Debian's aarch64 C library, which qemu loads the test binaries against.
const SYSROOT: &str = "/usr/aarch64-linux-gnu";
/// qemu CPU models: `max` has dotprod and i8mm; the Cortex-A53 has neither.
const CPUS: &[&str] = &["max", "cortex-a53"];

const INSTALL: &str = "install the cross toolchain and qemu with `rustup target add \
aarch64-unknown-linux-gnu` and `apt-get install qemu-user gcc-aarch64-linux-gnu \
libc6-dev-arm64-cross`";

fn found(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn target_installed() -> bool {
    Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .is_ok_and(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.trim() == TARGET)
        })
}

pub(crate) fn run(args: &[String]) -> Result<()> {
    if let Some(arg) = args.first() {
        bail!("test-arm takes no arguments (got `{arg}`)");
    }
    let mut missing = Vec::new();
    if !target_installed() {
        missing.push(format!("the Rust target {TARGET}"));
    }
    if !found(LINKER) {
        missing.push(format!("the linker {LINKER}"));
    }
    if !found(QEMU) {
        missing.push(QEMU.to_owned());
    }
    if !Path::new(SYSROOT).join("lib").is_dir() {
        missing.push(format!("the aarch64 C library in {SYSROOT}"));
    }
    if !missing.is_empty() {
        bail!("missing {}: {INSTALL}", missing.join(", "));
    }
    // The real-model tests read the two known models.
    crate::fetch_models()?;
    let target_dir = crate::workspace_root().join("target").join("aarch64");
    for cpu in CPUS {
        eprintln!("xtask: quant tests for {TARGET} under {QEMU} -cpu {cpu}");
        let status = Command::new(crate::cargo_program())
            .args([
                "test",
                "--release",
                "--package",
                "ferrolm-quant",
                "--target",
                TARGET,
            ])
            .arg("--target-dir")
            .arg(&target_dir)
            .env("CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER", LINKER)
            .env(
                "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER",
                format!("{QEMU} -L {SYSROOT} -cpu {cpu}"),
            )
            .current_dir(crate::workspace_root())
            .status()
            .context("cannot run cargo")?;
        if !status.success() {
            bail!("the aarch64 tests failed under -cpu {cpu} ({status})");
        }
    }
    Ok(())
}
