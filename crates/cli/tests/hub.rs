//! Models by reference against a local HTTP server that answers as the Hugging Face Hub does
//! (`api/models/OWNER/REPO?blobs=true` and `OWNER/REPO/resolve/main/FILE`, with `Range`
//! requests), serving the real SmolLM2 file: as one file, split into two parts, and by direct
//! link. Downloads that break off are resumed, partial files are resumed across runs, hashes
//! are checked, tokens are sent, two pulls of one file share one download, and the fetched
//! model generates exactly what the local file does.
#![allow(clippy::unwrap_used)]

mod common;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use ferrolm_gguf::{GgufFile, GgufWriter, OwnedMetadataValue};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// A file the fake Hub serves.
struct Served {
    bytes: Arc<Vec<u8>>,
    /// The SHA-256 the listing gives (the true one unless a test wants a wrong one).
    listed_sha: String,
}

/// One request the server saw: path, `Range` and `Authorization` headers.
#[derive(Clone, Debug)]
struct Seen {
    path: String,
    range: Option<String>,
    auth: Option<String>,
}

#[derive(Default)]
struct Hub {
    /// `OWNER/REPO` → files by path.
    repos: HashMap<String, Vec<(String, Served)>>,
    /// Paths whose next full (non-range) download sends half the body, then breaks.
    break_once: Mutex<Vec<String>>,
    /// Repositories that answer 401 without the token `secret`.
    private: Vec<String>,
    /// Paths whose body is sent slowly (for the concurrent-pull test).
    slow: Vec<String>,
    seen: Mutex<Vec<Seen>>,
}

fn sha(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// SmolLM2's bytes, read once.
fn smollm2_bytes() -> Arc<Vec<u8>> {
    static BYTES: OnceLock<Arc<Vec<u8>>> = OnceLock::new();
    BYTES
        .get_or_init(|| Arc::new(std::fs::read(common::smollm2()).unwrap()))
        .clone()
}

/// SmolLM2 as two split parts, as llama.cpp's gguf-split lays them out: the metadata and the
/// first half of the tensors, then the rest.
fn smollm2_parts() -> [Vec<u8>; 2] {
    let file = GgufFile::open(common::smollm2()).unwrap();
    let g = file.gguf().unwrap();
    let views: Vec<_> = g.tensor_views().collect();
    let half = views.len() / 2;
    let part = |no: u16, range: std::ops::Range<usize>| {
        let mut w = GgufWriter::new();
        if no == 0 {
            for (k, v) in g.metadata() {
                w.add_metadata(k, OwnedMetadataValue::from(v));
            }
        }
        w.add_metadata("split.no", no);
        w.add_metadata("split.count", 2u16);
        w.add_metadata("split.tensors.count", views.len() as i32);
        for t in &views[range] {
            w.add_tensor(t.name, &t.dims, t.ty, t.data).unwrap();
        }
        let mut out = Vec::new();
        w.write_to(&mut out).unwrap();
        out
    };
    [part(0, 0..half), part(1, half..views.len())]
}

fn listing(hub: &Hub, repo: &str) -> Option<String> {
    let files = hub.repos.get(repo)?;
    let siblings: Vec<_> = files
        .iter()
        .map(|(path, f)| {
            serde_json::json!({
                "rfilename": path,
                "size": f.bytes.len(),
                "lfs": {"sha256": f.listed_sha, "size": f.bytes.len(), "pointerSize": 134},
            })
        })
        .chain([serde_json::json!({"rfilename": "README.md", "size": 12})])
        .collect();
    Some(serde_json::json!({"id": repo, "siblings": siblings}).to_string())
}

fn record(hub: &Hub, path: String, headers: &HeaderMap) {
    let get = |name| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    hub.seen.lock().unwrap().push(Seen {
        path,
        range: get(header::RANGE),
        auth: get(header::AUTHORIZATION),
    });
}

fn authorized(hub: &Hub, repo: &str, headers: &HeaderMap) -> bool {
    !hub.private.iter().any(|p| p == repo)
        || headers
            .get(header::AUTHORIZATION)
            .is_some_and(|v| v == "Bearer secret")
}

async fn api(
    State(hub): State<Arc<Hub>>,
    UrlPath((owner, repo)): UrlPath<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let repo = format!("{owner}/{repo}");
    record(&hub, format!("api/models/{repo}"), &headers);
    if !authorized(&hub, &repo, &headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    match listing(&hub, &repo) {
        Some(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn resolve(
    State(hub): State<Arc<Hub>>,
    UrlPath((owner, repo, file)): UrlPath<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let repo = format!("{owner}/{repo}");
    let path = format!("{repo}/{file}");
    record(&hub, path.clone(), &headers);
    if !authorized(&hub, &repo, &headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let Some((_, served)) = hub
        .repos
        .get(&repo)
        .and_then(|files| files.iter().find(|(p, _)| *p == file))
    else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let bytes = served.bytes.clone();
    let len = bytes.len();
    let start = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.strip_suffix('-'))
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(start) = start {
        if start >= len {
            return StatusCode::RANGE_NOT_SATISFIABLE.into_response();
        }
        return (
            StatusCode::PARTIAL_CONTENT,
            [
                (
                    header::CONTENT_RANGE,
                    format!("bytes {start}-{}/{len}", len - 1),
                ),
                (header::CONTENT_LENGTH, (len - start).to_string()),
            ],
            Body::from(bytes[start..].to_vec()),
        )
            .into_response();
    }
    let breaks = {
        let mut b = hub.break_once.lock().unwrap();
        let found = b.iter().position(|p| *p == path);
        found.map(|i| b.remove(i)).is_some()
    };
    let slow = hub.slow.contains(&path);
    let chunks: Vec<Result<Bytes, std::io::Error>> = {
        let size = len.div_ceil(8);
        let mut v: Vec<_> = bytes
            .chunks(size)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        if breaks {
            v.truncate(4);
            v.push(Err(std::io::Error::other("connection reset")));
        }
        v
    };
    let stream = futures_util::stream::iter(chunks).then(move |c| async move {
        if slow {
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        c
    });
    (
        [(header::CONTENT_LENGTH, len.to_string())],
        Body::from_stream(stream),
    )
        .into_response()
}

use futures_util::StreamExt;

/// Starts the fake Hub on a free port; returns its address.
fn serve(hub: Hub) -> (String, Arc<Hub>) {
    let hub = Arc::new(hub);
    let app = Router::new()
        .route("/api/models/{owner}/{repo}", get(api))
        .route("/{owner}/{repo}/resolve/main/{*file}", get(resolve))
        .with_state(hub.clone());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    let addr = rx.recv().unwrap();
    (format!("http://{addr}"), hub)
}

fn served(bytes: Vec<u8>) -> Served {
    let listed_sha = sha(&bytes);
    Served {
        bytes: Arc::new(bytes),
        listed_sha,
    }
}

/// Runs ferrolm with the fake Hub as `HF_ENDPOINT` and `home` as `FERROLM_HOME`.
fn ferrolm(endpoint: &str, home: &Path, args: &[&str], token: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferrolm"));
    cmd.args(args)
        .env("HF_ENDPOINT", endpoint)
        .env("FERROLM_HOME", home)
        .env_remove("HF_TOKEN")
        .env_remove("RUST_LOG");
    if let Some(token) = token {
        cmd.env("HF_TOKEN", token);
    }
    cmd.output().unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn failed(out: &Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Greedy continuation of a fixed prompt by the model at `model`.
fn greedy(endpoint: &str, home: &Path, model: &str) -> String {
    ok(&ferrolm(
        endpoint,
        home,
        &[
            "run",
            "-m",
            model,
            "-p",
            "The capital of France is",
            "-n",
            "8",
            "--temp",
            "0",
        ],
        None,
    ))
}

#[test]
fn a_repository_model_is_fetched_verified_resumed_and_runs_as_the_local_file() {
    let mut hub = Hub::default();
    hub.repos.insert(
        "test/SmolLM2-GGUF".into(),
        vec![
            ("SmolLM2-Q4_1.gguf".into(), served(smollm2_bytes().to_vec())),
            ("SmolLM2-Q8_0.gguf".into(), served(b"not this one".to_vec())),
        ],
    );
    hub.break_once
        .lock()
        .unwrap()
        .push("test/SmolLM2-GGUF/SmolLM2-Q4_1.gguf".into());
    let (endpoint, hub) = serve(hub);
    let home = tempfile::tempdir().unwrap();

    let out = ferrolm(
        &endpoint,
        home.path(),
        &["pull", "hf:test/SmolLM2-GGUF:q4_1"],
        None,
    );
    let path = ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("resuming (attempt 2 of 4)"), "{stderr}");
    let path = Path::new(path.trim());
    assert_eq!(
        path,
        home.path()
            .join("models/hf/test/SmolLM2-GGUF/SmolLM2-Q4_1.gguf")
    );
    assert_eq!(sha(&std::fs::read(path).unwrap()), sha(&smollm2_bytes()));
    // The broken download was resumed where it broke, not started again.
    let seen = hub.seen.lock().unwrap().clone();
    let gets: Vec<_> = seen
        .iter()
        .filter(|s| s.path.ends_with("SmolLM2-Q4_1.gguf"))
        .collect();
    assert_eq!(gets.len(), 2, "{seen:?}");
    assert_eq!(gets[0].range, None);
    let chunk = smollm2_bytes().len().div_ceil(8);
    let start: usize = gets[1]
        .range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|r| r.parse().ok())
        .unwrap();
    assert!(start > 0 && start <= 4 * chunk, "resumed at {start}");
    assert!(!path.with_extension("gguf.part").exists());

    // The fetched model is the model: same greedy text as the local file.
    let local = greedy(&endpoint, home.path(), &common::smollm2());
    assert_eq!(
        greedy(&endpoint, home.path(), "hf:test/SmolLM2-GGUF:Q4_1"),
        local
    );

    // Present and verified: no second download (only the listing is asked for).
    let before = hub.seen.lock().unwrap().len();
    ok(&ferrolm(
        &endpoint,
        home.path(),
        &["pull", "hf:test/SmolLM2-GGUF/SmolLM2-Q4_1.gguf"],
        None,
    ));
    let after: Vec<_> = hub.seen.lock().unwrap()[before..].to_vec();
    assert!(
        after.iter().all(|s| s.path.starts_with("api/")),
        "{after:?}"
    );

    // Two models and no quantization named, none of them Q4_K_M: a clear error naming both.
    let err = failed(&ferrolm(
        &endpoint,
        home.path(),
        &["pull", "hf:test/SmolLM2-GGUF"],
        None,
    ));
    assert!(err.contains("holds several models"), "{err}");
    assert!(err.contains("SmolLM2-Q8_0.gguf"), "{err}");

    // list and rm.
    let list = ok(&ferrolm(&endpoint, home.path(), &["list"], None));
    assert!(
        list.contains("hf:test/SmolLM2-GGUF/SmolLM2-Q4_1.gguf"),
        "{list}"
    );
    assert!(list.contains("q4_1") && list.contains("llama"), "{list}");
    ok(&ferrolm(
        &endpoint,
        home.path(),
        &["rm", "hf:test/SmolLM2-GGUF:Q4_1"],
        None,
    ));
    assert!(!path.exists());
    let list = ok(&ferrolm(&endpoint, home.path(), &["list", "--json"], None));
    assert!(list.is_empty(), "{list}");
    let err = failed(&ferrolm(
        &endpoint,
        home.path(),
        &["rm", "hf:test/SmolLM2-GGUF:Q4_1"],
        None,
    ));
    assert!(err.contains("not in the model cache"), "{err}");
}

#[test]
fn a_split_model_is_fetched_whole_merged_and_runs_as_the_local_file() {
    let [p1, p2] = smollm2_parts();
    let mut hub = Hub::default();
    hub.repos.insert(
        "test/split".into(),
        vec![
            ("m-Q4_1-00002-of-00002.gguf".into(), served(p2)),
            ("m-Q4_1-00001-of-00002.gguf".into(), served(p1)),
        ],
    );
    let (endpoint, _hub) = serve(hub);
    let home = tempfile::tempdir().unwrap();
    let out = ok(&ferrolm(
        &endpoint,
        home.path(),
        &["pull", "hf:test/split"],
        None,
    ));
    let merged = home.path().join("models/hf/test/split/m-Q4_1.gguf");
    assert_eq!(out.trim(), merged.display().to_string());
    let left: Vec<_> = std::fs::read_dir(merged.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| {
            std::path::Path::new(n)
                .extension()
                .is_some_and(|e| e == "gguf")
        })
        .collect();
    assert_eq!(left, ["m-Q4_1.gguf"], "the parts are removed once merged");
    let local = greedy(&endpoint, home.path(), &common::smollm2());
    assert_eq!(greedy(&endpoint, home.path(), "hf:test/split:Q4_1"), local);
}

#[test]
fn a_partial_file_is_resumed_and_a_wrong_hash_leaves_nothing() {
    let bytes = smollm2_bytes();
    let mut wrong = served(b"x".repeat(1000));
    wrong.listed_sha = sha(b"something else");
    let mut hub = Hub::default();
    hub.repos.insert(
        "test/m".into(),
        vec![
            ("m.gguf".into(), served(bytes.to_vec())),
            ("bad.gguf".into(), wrong),
        ],
    );
    let (endpoint, hub) = serve(hub);
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("models/hf/test/m");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("m.gguf.part"), &bytes[..12345]).unwrap();
    ok(&ferrolm(
        &endpoint,
        home.path(),
        &["pull", "hf:test/m/m.gguf"],
        None,
    ));
    assert_eq!(
        sha(&std::fs::read(dir.join("m.gguf")).unwrap()),
        sha(&bytes)
    );
    let seen = hub.seen.lock().unwrap().clone();
    let get = seen.iter().find(|s| s.path == "test/m/m.gguf").unwrap();
    assert_eq!(get.range.as_deref(), Some("bytes=12345-"));

    let err = failed(&ferrolm(
        &endpoint,
        home.path(),
        &["pull", "hf:test/m/bad.gguf"],
        None,
    ));
    assert!(err.contains("but the source says"), "{err}");
    assert!(!dir.join("bad.gguf").exists() && !dir.join("bad.gguf.part").exists());
}

#[test]
fn tokens_are_sent_and_a_private_repository_without_one_says_so() {
    let mut hub = Hub::default();
    hub.repos.insert(
        "corp/private".into(),
        vec![("p.gguf".into(), served(smollm2_bytes().to_vec()))],
    );
    hub.private.push("corp/private".into());
    let (endpoint, hub) = serve(hub);
    let home = tempfile::tempdir().unwrap();
    let err = failed(&ferrolm(
        &endpoint,
        home.path(),
        &["pull", "hf:corp/private"],
        None,
    ));
    assert!(err.contains("401") && err.contains("HF_TOKEN"), "{err}");
    ok(&ferrolm(
        &endpoint,
        home.path(),
        &["pull", "hf:corp/private"],
        Some("secret"),
    ));
    assert!(
        hub.seen
            .lock()
            .unwrap()
            .iter()
            .any(|s| s.path == "corp/private/p.gguf" && s.auth.as_deref() == Some("Bearer secret"))
    );
    let err = failed(&ferrolm(
        &endpoint,
        home.path(),
        &["pull", "hf:corp/none"],
        None,
    ));
    assert!(err.contains("404"), "{err}");
}

#[test]
fn two_pulls_of_one_file_share_one_download_and_links_work() {
    let mut hub = Hub::default();
    hub.repos.insert(
        "test/slow".into(),
        vec![("s.gguf".into(), served(smollm2_bytes().to_vec()))],
    );
    hub.slow.push("test/slow/s.gguf".into());
    let (endpoint, hub) = serve(hub);
    let home = tempfile::tempdir().unwrap();
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_ferrolm"))
            .args(["pull", "hf:test/slow"])
            .env("HF_ENDPOINT", &endpoint)
            .env("FERROLM_HOME", home.path())
            .env_remove("HF_TOKEN")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert_eq!(ok(&a), ok(&b));
    let gets = hub
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.path == "test/slow/s.gguf")
        .count();
    assert_eq!(
        gets, 1,
        "the second pull waits for the first and reuses its file"
    );

    // A direct link to a .gguf file (the server's resolve address, as any web server's).
    let url = format!("{endpoint}/test/slow/resolve/main/s.gguf");
    let path = ok(&ferrolm(&endpoint, home.path(), &["pull", &url], None));
    assert!(path.contains("/models/url/127.0.0.1_"), "{path}");
    assert_eq!(
        sha(&std::fs::read(path.trim()).unwrap()),
        sha(&smollm2_bytes())
    );
    let list = ok(&ferrolm(&endpoint, home.path(), &["list"], None));
    assert!(list.contains(&url), "{list}");
    let err = failed(&ferrolm(
        &endpoint,
        home.path(),
        &["pull", "https://example.invalid/readme.md"],
        None,
    ));
    assert!(err.contains("does not name a .gguf file"), "{err}");
}

#[test]
fn a_local_split_model_is_merged_into_the_cache_and_runs_as_the_whole_file() {
    let parts = tempfile::tempdir().unwrap();
    let [p1, p2] = smollm2_parts();
    std::fs::write(parts.path().join("s-00001-of-00002.gguf"), p1).unwrap();
    let home = tempfile::tempdir().unwrap();
    let first = parts.path().join("s-00001-of-00002.gguf");
    let first = first.to_str().unwrap();
    let err = failed(&ferrolm(
        "http://unused",
        home.path(),
        &["inspect", first],
        None,
    ));
    assert!(
        err.contains("part 2 of 2") || err.contains("cannot be read"),
        "{err}"
    );
    std::fs::write(parts.path().join("s-00002-of-00002.gguf"), p2).unwrap();
    let local = greedy("http://unused", home.path(), &common::smollm2());
    assert_eq!(greedy("http://unused", home.path(), first), local);
    assert!(home.path().join("models/merged/s.gguf").is_file());
}
