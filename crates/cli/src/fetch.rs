//! Downloading one file over HTTP(S) into the model cache:
//!
//! - into `FILE.part`, resumed with an HTTP `Range` request when a part is there (a lost
//!   connection is resumed a few times before giving up; a later run resumes too);
//! - with a progress bar showing size, speed and time left;
//! - checked against the size and SHA-256 the source gives, then renamed to `FILE`, so a
//!   half-written model is never seen;
//! - under an exclusive lock on `FILE.lock`, so two runs fetching the same file wait for each
//!   other instead of writing it together.
//!
//! Beside a finished file, `FILE.sha256-ok` records its hash, size and modification time (so
//! later runs need not hash it again), and `FILE.source` where it came from.

use anyhow::{Context, Result, anyhow, bail, ensure};
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressState, ProgressStyle};
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, UNIX_EPOCH};
use tracing::{info, warn};

/// Attempts at one download when the connection breaks, each resuming where the last ended.
const ATTEMPTS: u32 = 4;
/// Longest wait for a connection, and for the next bytes of a response.
const NETWORK_TIMEOUT: Duration = Duration::from_secs(60);

/// A file to fetch.
#[derive(Clone, Debug)]
pub struct Remote {
    /// Where to get it.
    pub url: String,
    /// Its size in bytes, when the source says.
    pub size: Option<u64>,
    /// Its SHA-256 (lowercase hex), when the source says.
    pub sha256: Option<String>,
    /// The reference it was asked for by, recorded beside it.
    pub source: String,
}

/// An HTTP client that runs its requests on a runtime of its own thread, so it can be used
/// from any caller, inside an async runtime or not.
#[derive(Debug)]
pub struct Client {
    http: reqwest::Client,
    token: Option<String>,
}

impl Client {
    /// A client sending `token` (if any) as a bearer token.
    pub fn new(token: Option<String>) -> Result<Self> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("ferrolm/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(NETWORK_TIMEOUT)
            .read_timeout(NETWORK_TIMEOUT)
            .build()
            .context("cannot set up the HTTP client")?;
        Ok(Self { http, token })
    }

    fn request(&self, url: &str) -> reqwest::RequestBuilder {
        let request = self.http.get(url);
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// The body of `url` as text; an HTTP error status is an error naming it.
    pub fn get_text(&self, url: &str) -> Result<String> {
        block_on(async {
            let response = self
                .request(url)
                .send()
                .await
                .with_context(|| format!("cannot reach {url}"))?;
            let response = check_status(response, url)?;
            response
                .text()
                .await
                .with_context(|| format!("cannot read the answer of {url}"))
        })
    }
}

/// Runs `future` to completion on a single-threaded runtime in a thread of its own.
fn block_on<T: Send>(future: impl Future<Output = Result<T>> + Send) -> Result<T> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("cannot start the download runtime")?
                    .block_on(future)
            })
            .join()
            .map_err(|_| anyhow!("the download thread panicked"))?
    })
}

/// An error for an unsuccessful status, with what it usually means.
fn check_status(response: reqwest::Response, url: &str) -> Result<reqwest::Response> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let hint = match status.as_u16() {
        401 | 403 => ": access denied (for a private or gated repository, set HF_TOKEN)",
        404 => ": not found",
        429 => ": too many requests; try again later",
        _ => "",
    };
    bail!("{url} answered {status}{hint}")
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// The partial download of `path`.
pub fn part_path(path: &Path) -> PathBuf {
    with_suffix(path, ".part")
}

/// The marker of a verified `path`.
pub fn marker_path(path: &Path) -> PathBuf {
    with_suffix(path, ".sha256-ok")
}

/// The record of where `path` came from.
pub fn source_path(path: &Path) -> PathBuf {
    with_suffix(path, ".source")
}

fn lock_path(path: &Path) -> PathBuf {
    with_suffix(path, ".lock")
}

/// Removes `path` and the files ferrolm keeps beside it; what is not there is skipped.
pub fn remove_with_sidecars(path: &Path) {
    for p in [
        path.to_owned(),
        marker_path(path),
        source_path(path),
        part_path(path),
        lock_path(path),
    ] {
        let _ = fs::remove_file(p);
    }
}

/// The marker's contents for `path` as it is now, given its hash.
fn marker_contents(sha256: &str, path: &Path) -> Option<String> {
    let meta = fs::metadata(path).ok()?;
    let modified = meta.modified().ok()?.duration_since(UNIX_EPOCH).ok()?;
    Some(format!("{sha256} {} {}\n", meta.len(), modified.as_nanos()))
}

/// The hash recorded for `path`, if its marker still matches the file.
fn marked_hash(path: &Path) -> Option<String> {
    let marker = fs::read_to_string(marker_path(path)).ok()?;
    let sha = marker.split(' ').next()?.to_owned();
    (marker_contents(&sha, path)? == marker).then_some(sha)
}

fn write_marker(sha256: &str, path: &Path) {
    if let Some(contents) = marker_contents(sha256, path)
        && let Err(err) = fs::write(marker_path(path), contents)
    {
        warn!(
            "cannot write {}: {err}; the file will be hashed again next time",
            marker_path(path).display()
        );
    }
}

/// SHA-256 of the file at `path`, as lowercase hex (with a progress bar over its length).
fn hash_file(path: &Path) -> Result<String> {
    let len = fs::metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .len();
    crate::download::sha256_file(path, len)
}

/// Whether the file at `dest` is `remote` as far as can be told: its size matches and, where
/// the source gives a hash, so does its SHA-256 (from the marker unless `rehash`).
fn present(remote: &Remote, dest: &Path, rehash: bool) -> Result<bool> {
    let Ok(meta) = fs::metadata(dest) else {
        return Ok(false);
    };
    ensure!(
        meta.is_file(),
        "{} is in the way of the model: it is not a regular file",
        dest.display()
    );
    if remote.size.is_some_and(|size| size != meta.len()) {
        warn!(
            "{} has {} bytes, the source says {}; downloading it again",
            dest.display(),
            meta.len(),
            remote.size.unwrap_or_default()
        );
        return Ok(false);
    }
    let Some(expected) = &remote.sha256 else {
        return Ok(true);
    };
    let known = if rehash { None } else { marked_hash(dest) };
    let actual = if let Some(sha) = known {
        sha
    } else {
        info!("checking the SHA-256 of {}", dest.display());
        let sha = hash_file(dest)?;
        write_marker(&sha, dest);
        sha
    };
    if &actual != expected {
        warn!(
            "{} has SHA-256 {actual}, the source says {expected}; downloading it again",
            dest.display()
        );
        return Ok(false);
    }
    Ok(true)
}

/// Makes `dest` hold `remote`: nothing to do when a matching copy is there, else a download
/// (resumed from `dest.part` where possible).
pub fn ensure(client: &Client, remote: &Remote, dest: &Path, rehash: bool) -> Result<()> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock_path(dest))
        .with_context(|| format!("cannot create {}", lock_path(dest).display()))?;
    if lock.try_lock().is_err() {
        info!(
            "another ferrolm is downloading {}; waiting for it",
            dest.display()
        );
        lock.lock()
            .with_context(|| format!("cannot lock {}", lock_path(dest).display()))?;
    }
    if present(remote, dest, rehash)? {
        return Ok(());
    }
    let _ = fs::remove_file(marker_path(dest));
    let name = dest
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    info!("downloading {} from {}", remote.source, remote.url);
    let sha = download(client, remote, &part_path(dest), &name)?;
    if let Some(expected) = &remote.sha256
        && &sha != expected
    {
        let _ = fs::remove_file(part_path(dest));
        bail!(
            "{} downloaded with SHA-256 {sha}, but the source says {expected}; the partial file was removed, run again to fetch it anew",
            remote.url
        );
    }
    fs::rename(part_path(dest), dest)
        .with_context(|| format!("cannot move the download to {}", dest.display()))?;
    write_marker(&sha, dest);
    if let Err(err) = fs::write(source_path(dest), format!("{}\n", remote.source)) {
        warn!("cannot write {}: {err}", source_path(dest).display());
    }
    Ok(())
}

/// Why one attempt of a download stopped.
enum Stop {
    /// The connection broke: worth resuming.
    Broken(anyhow::Error),
    /// An error that another attempt will not fix.
    Fatal(anyhow::Error),
}

/// Downloads `remote` into `part` (appending to what is there) and returns the whole file's
/// SHA-256.
fn download(client: &Client, remote: &Remote, part: &Path, name: &str) -> Result<String> {
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(part)
        .with_context(|| format!("cannot create {}", part.display()))?;
    let bar = ProgressBar::new(remote.size.unwrap_or(0)).with_message(format!("fetching {name}"));
    bar.set_style(bar_style());
    let mut attempt = 1;
    loop {
        let have = file
            .seek(SeekFrom::End(0))
            .with_context(|| format!("cannot read {}", part.display()))?;
        match block_on(async { Ok(fetch_once(client, remote, &mut file, have, &bar).await) })? {
            Ok(()) => break,
            Err(Stop::Fatal(err)) => {
                bar.abandon();
                return Err(err);
            }
            Err(Stop::Broken(err)) if attempt < ATTEMPTS => {
                bar.suspend(|| {
                    warn!("{err:#}; resuming (attempt {} of {ATTEMPTS})", attempt + 1);
                });
                std::thread::sleep(Duration::from_secs(u64::from(attempt)));
                attempt += 1;
            }
            Err(Stop::Broken(err)) => {
                bar.abandon();
                return Err(err.context(format!(
                    "the download of {} broke off {ATTEMPTS} times; run the same command again to resume it",
                    remote.url
                )));
            }
        }
    }
    bar.finish_and_clear();
    file.sync_all()
        .with_context(|| format!("cannot write {}", part.display()))?;
    let len = file.metadata().map(|m| m.len()).unwrap_or_default();
    if let Some(size) = remote.size {
        ensure!(
            len == size,
            "{} downloaded with {len} bytes, but the source says {size}",
            remote.url
        );
    }
    drop(file);
    hash_file(part)
}

/// The bar: bytes so far of the total, speed of this run, and time left.
fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {rate} {eta_left}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .with_key(
            "rate",
            |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = w.write_str(&rate(state));
            },
        )
        .with_key(
            "eta_left",
            |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                if state.len().is_some_and(|len| len > 0) && state.elapsed() > SPEED_AFTER {
                    let _ = write!(w, "{} left", indicatif::HumanDuration(state.eta()));
                }
            },
        )
        .progress_chars("=> ")
}

/// How long a bar runs before it shows a speed: a rate over the first milliseconds reads as
/// terabytes per second.
const SPEED_AFTER: Duration = Duration::from_millis(500);

fn rate(state: &ProgressState) -> String {
    if state.elapsed() < SPEED_AFTER {
        return String::new();
    }
    format!("{}/s", indicatif::HumanBytes(state.per_sec() as u64))
}

/// One request: appends the body (from byte `have` on, where the server can resume) to
/// `file`, showing progress on `bar`.
async fn fetch_once(
    client: &Client,
    remote: &Remote,
    file: &mut File,
    have: u64,
    bar: &ProgressBar,
) -> Result<(), Stop> {
    if remote.size.is_some_and(|size| have == size) {
        return Ok(());
    }
    let mut request = client.request(&remote.url);
    if have > 0 {
        request = request.header(reqwest::header::RANGE, format!("bytes={have}-"));
    }
    let response = request.send().await.map_err(|err| {
        Stop::Broken(anyhow::Error::new(err).context(format!("cannot reach {}", remote.url)))
    })?;
    let status = response.status().as_u16();
    let start = match status {
        206 => content_range_start(&response).unwrap_or(u64::MAX),
        416 if remote.size.is_none() && have > 0 => {
            // Nothing past what is there: the part is complete.
            return Ok(());
        }
        _ => 0,
    };
    if status == 206 && start != have {
        // A range that is not the one asked for: start again from the beginning.
        restart(file).map_err(Stop::Fatal)?;
        return Err(Stop::Broken(anyhow!(
            "{} resumed at byte {start} instead of {have}",
            remote.url
        )));
    }
    let response = check_status(response, &remote.url).map_err(Stop::Fatal)?;
    if status == 200 && have > 0 {
        info!("{} cannot resume; downloading from the start", remote.url);
        restart(file).map_err(Stop::Fatal)?;
    }
    let offset = if status == 206 { have } else { 0 };
    if let Some(len) = response.content_length() {
        let total = offset + len;
        if let Some(size) = remote.size
            && size != total
        {
            return Err(Stop::Fatal(anyhow!(
                "{} has {total} bytes, but the listing says {size}",
                remote.url
            )));
        }
        bar.set_length(total);
    }
    bar.set_position(offset);
    bar.reset_eta();
    let mut out = BufWriter::with_capacity(1 << 20, &mut *file);
    let mut stream = response.bytes_stream();
    let started = Instant::now();
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(err) => {
                // Keep what arrived: the next attempt resumes after it.
                out.flush().map_err(|err| {
                    Stop::Fatal(anyhow::Error::new(err).context("cannot write the download"))
                })?;
                return Err(Stop::Broken(anyhow::Error::new(err).context(format!(
                    "the connection to {} broke after {:.1} s",
                    remote.url,
                    started.elapsed().as_secs_f64()
                ))));
            }
        };
        out.write_all(&chunk).map_err(|err| {
            Stop::Fatal(anyhow::Error::new(err).context("cannot write the download"))
        })?;
        bar.inc(chunk.len() as u64);
    }
    out.flush()
        .map_err(|err| Stop::Fatal(anyhow::Error::new(err).context("cannot write the download")))?;
    drop(out);
    let len = file
        .seek(SeekFrom::End(0))
        .map_err(|err| Stop::Fatal(anyhow::Error::new(err).context("cannot read the download")))?;
    if let Some(size) = remote.size.or(bar.length())
        && len < size
    {
        return Err(Stop::Broken(anyhow!(
            "the download of {} ended at byte {len} of {size}",
            remote.url
        )));
    }
    Ok(())
}

/// The first byte of a `Content-Range: bytes START-END/TOTAL` answer.
fn content_range_start(response: &reqwest::Response) -> Option<u64> {
    let value = response
        .headers()
        .get(reqwest::header::CONTENT_RANGE)?
        .to_str()
        .ok()?;
    let range = value.strip_prefix("bytes ")?;
    range.split('-').next()?.trim().parse().ok()
}

fn restart(file: &mut File) -> Result<()> {
    file.set_len(0).context("cannot restart the download")?;
    file.seek(SeekFrom::Start(0))
        .context("cannot restart the download")?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_holds_only_while_the_file_is_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        fs::write(&path, b"abc").unwrap();
        let sha = hash_file(&path).unwrap();
        assert_eq!(
            sha,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        write_marker(&sha, &path);
        assert_eq!(marked_hash(&path).as_deref(), Some(sha.as_str()));
        fs::write(&path, b"abcd").unwrap();
        assert_eq!(marked_hash(&path), None);
        remove_with_sidecars(&path);
        assert!(!path.exists() && !marker_path(&path).exists());
    }

    #[test]
    fn a_present_file_is_checked_against_size_and_hash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        let remote = |size, sha: Option<&str>| Remote {
            url: String::new(),
            size,
            sha256: sha.map(str::to_owned),
            source: String::new(),
        };
        assert!(!present(&remote(None, None), &path, false).unwrap());
        fs::write(&path, b"abc").unwrap();
        assert!(present(&remote(None, None), &path, false).unwrap());
        assert!(!present(&remote(Some(4), None), &path, false).unwrap());
        let good = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert!(present(&remote(Some(3), Some(good)), &path, false).unwrap());
        assert!(!present(&remote(Some(3), Some(&"0".repeat(64))), &path, true).unwrap());
        fs::create_dir(dir.path().join("d.gguf")).unwrap();
        assert!(present(&remote(None, None), &dir.path().join("d.gguf"), false).is_err());
    }
}
