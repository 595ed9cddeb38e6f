//! Models by reference: an `http(s)://…/FILE.gguf` URL, or a Hugging Face repository
//! (`hf:OWNER/REPO[:QUANT]`, `hf:OWNER/REPO/FILE.gguf`), fetched into the model cache under
//! `url/HOST/FILE` and `hf/OWNER/REPO/FILE`.
//!
//! A repository is listed with the Hub's `api/models/OWNER/REPO?blobs=true` JSON (which
//! gives each file's size and, for files stored with LFS, its SHA-256), and its files are
//! downloaded from `OWNER/REPO/resolve/main/FILE`. `HF_ENDPOINT` replaces
//! `https://huggingface.co`, and `HF_TOKEN` is sent as a bearer token. A model split into
//! `-00001-of-0000N.gguf` parts is fetched whole and merged into one file.

use anyhow::{Context, Result, bail, ensure};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use tracing::{info, warn};

use crate::fetch::{self, Client, Remote};
use crate::split;

/// The Hub used when `HF_ENDPOINT` is not set.
const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// The quantization chosen in a repository of several when the reference names none, as
/// llama.cpp's `-hf` does.
const DEFAULT_QUANT: &str = "Q4_K_M";

/// A model named by where it comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reference {
    /// A direct link to a `.gguf` file.
    Url {
        /// The link as given.
        url: String,
        /// Host (and port) of the link, for the cache path.
        host: String,
        /// The file name: the link's last path segment.
        file: String,
    },
    /// A file of a Hugging Face model repository.
    Hf {
        /// Owner (user or organisation).
        owner: String,
        /// Repository name.
        repo: String,
        /// Which file.
        pick: Pick,
    },
}

/// How a repository's file is chosen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pick {
    /// The file whose name carries this quantization (`Q4_K_M`), or with `None` the only
    /// model of the repository, else its `Q4_K_M`.
    Quant(Option<String>),
    /// The file at this path in the repository.
    File(String),
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reference::Url { url, .. } => f.write_str(url),
            Reference::Hf { owner, repo, pick } => match pick {
                Pick::Quant(None) => write!(f, "hf:{owner}/{repo}"),
                Pick::Quant(Some(q)) => write!(f, "hf:{owner}/{repo}:{q}"),
                Pick::File(file) => write!(f, "hf:{owner}/{repo}/{file}"),
            },
        }
    }
}

/// `Some` when `spec` is a remote reference (it starts with `hf:`, `http://` or `https://`),
/// with the parsed reference or why it is malformed; `None` for anything else (a path or a
/// known name).
pub fn parse(spec: &str) -> Option<Result<Reference>> {
    if let Some(rest) = spec.strip_prefix("hf:") {
        return Some(parse_hf(rest).with_context(|| {
            format!("`{spec}` is not a Hugging Face reference: use hf:OWNER/REPO[:QUANT] or hf:OWNER/REPO/FILE.gguf")
        }));
    }
    let lower = spec.to_ascii_lowercase();
    if lower.starts_with("https://") || lower.starts_with("http://") {
        return Some(parse_url(spec));
    }
    None
}

fn parse_hf(rest: &str) -> Result<Reference> {
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let (owner, rest) = rest.split_once('/').context("no OWNER/")?;
    let (repo, pick) = match rest.split_once('/') {
        Some((repo, file)) => {
            ensure!(
                file.to_ascii_lowercase().ends_with(".gguf"),
                "the file `{file}` is not a .gguf file"
            );
            for part in file.split('/') {
                check_segment(part, "file path")?;
            }
            (repo, Pick::File(file.to_owned()))
        }
        None => match rest.split_once(':') {
            Some((repo, quant)) => {
                check_segment(quant, "quantization")?;
                (repo, Pick::Quant(Some(quant.to_owned())))
            }
            None => (rest, Pick::Quant(None)),
        },
    };
    check_segment(owner, "owner")?;
    check_segment(repo, "repository name")?;
    Ok(Reference::Hf {
        owner: owner.to_owned(),
        repo: repo.to_owned(),
        pick,
    })
}

/// A name that is safe as one path component: letters, digits, `-`, `_`, `.`, not `.` or `..`.
fn check_segment(s: &str, what: &str) -> Result<()> {
    ensure!(!s.is_empty(), "the {what} is empty");
    ensure!(
        s != "."
            && s != ".."
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
        "the {what} `{s}` may hold only letters, digits, '-', '_' and '.'"
    );
    Ok(())
}

fn parse_url(spec: &str) -> Result<Reference> {
    let url = reqwest::Url::parse(spec).with_context(|| format!("`{spec}` is not a valid URL"))?;
    let host = url
        .host_str()
        .with_context(|| format!("the URL `{spec}` has no host"))?;
    let host = match url.port() {
        Some(port) => format!("{host}_{port}"),
        None => host.to_owned(),
    };
    let file = url
        .path_segments()
        .and_then(|mut segments| segments.next_back())
        .unwrap_or_default();
    ensure!(
        file.to_ascii_lowercase().ends_with(".gguf"),
        "the URL `{spec}` does not name a .gguf file"
    );
    // The file name as it lands in the cache: decoded, and kept to safe characters.
    let decoded: String = percent_decode(file)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    check_segment(&decoded, "file name")?;
    check_segment(&host.replace(':', "_"), "host")?;
    Ok(Reference::Url {
        url: spec.to_owned(),
        host,
        file: decoded,
    })
}

/// `%XX` escapes of a URL path segment decoded as UTF-8 (invalid sequences kept as escapes).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| s.to_owned())
}

/// Where the reference's file lives in the cache `dir` (for a repository reference that names
/// no file, the repository's folder).
pub fn cache_path(reference: &Reference, dir: &Path) -> PathBuf {
    match reference {
        Reference::Url { host, file, .. } => dir.join("url").join(host).join(file),
        Reference::Hf {
            owner, repo, pick, ..
        } => {
            let repo_dir = dir.join("hf").join(owner).join(repo);
            match pick {
                Pick::File(file) => repo_dir.join(file),
                Pick::Quant(_) => repo_dir,
            }
        }
    }
}

/// A file of a repository listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoFile {
    /// Path inside the repository.
    pub path: String,
    /// Size in bytes, when listed.
    pub size: Option<u64>,
    /// SHA-256 (lowercase hex), for files stored with LFS.
    pub sha256: Option<String>,
}

#[derive(Deserialize)]
struct RepoInfo {
    #[serde(default)]
    siblings: Vec<Sibling>,
}

#[derive(Deserialize)]
struct Sibling {
    rfilename: String,
    size: Option<u64>,
    lfs: Option<Lfs>,
}

#[derive(Deserialize)]
struct Lfs {
    sha256: Option<String>,
    oid: Option<String>,
    size: Option<u64>,
}

/// The files of a repository from the Hub's model-info JSON.
pub fn parse_listing(json: &str) -> Result<Vec<RepoFile>> {
    let info: RepoInfo = serde_json::from_str(json)
        .context("the Hub's repository listing is not the expected JSON")?;
    Ok(info
        .siblings
        .into_iter()
        .map(|s| {
            let (sha256, lfs_size) = match s.lfs {
                Some(lfs) => (lfs.sha256.or(lfs.oid), lfs.size),
                None => (None, None),
            };
            RepoFile {
                path: s.rfilename,
                size: s.size.or(lfs_size),
                sha256: sha256
                    .map(|h| h.trim_start_matches("sha256:").to_ascii_lowercase())
                    .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit())),
            }
        })
        .collect())
}

/// The file (or, for a split model, every part in order) that `pick` selects from a
/// repository's files.
pub fn choose(files: &[RepoFile], pick: &Pick, repo: &str) -> Result<Vec<RepoFile>> {
    let models = group_models(files);
    let chosen = match pick {
        Pick::File(path) => {
            let found = models.iter().find(|m| m.iter().any(|f| &f.path == path));
            match found {
                Some(model) => model.clone(),
                None => bail!(
                    "{repo} has no file {path}; its .gguf files: {}",
                    list_names(&models)
                ),
            }
        }
        Pick::Quant(Some(quant)) => {
            let matching: Vec<_> = models
                .iter()
                .filter(|m| carries_quant(&m[0].path, quant))
                .collect();
            match matching.as_slice() {
                [one] => (*one).clone(),
                [] => bail!(
                    "no .gguf file in {repo} carries {quant} in its name; its .gguf files: {}",
                    list_names(&models)
                ),
                several => bail!(
                    "several .gguf files in {repo} carry {quant}: {}; name one with hf:{repo}/FILE",
                    several
                        .iter()
                        .map(|m| m[0].path.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
        }
        Pick::Quant(None) => match models.as_slice() {
            [] => bail!("{repo} holds no .gguf file"),
            [one] => one.clone(),
            _ => {
                let default: Vec<_> = models
                    .iter()
                    .filter(|m| carries_quant(&m[0].path, DEFAULT_QUANT))
                    .collect();
                match default.as_slice() {
                    [one] => (*one).clone(),
                    _ => bail!(
                        "{repo} holds several models; choose one with hf:{repo}:QUANT or hf:{repo}/FILE: {}",
                        list_names(&models)
                    ),
                }
            }
        },
    };
    Ok(chosen)
}

/// The repository's `.gguf` files as models: a single file, or all parts of a split one in
/// part order (only complete sets).
fn group_models(files: &[RepoFile]) -> Vec<Vec<RepoFile>> {
    let mut models: Vec<Vec<RepoFile>> = Vec::new();
    let mut splits: Vec<(String, u32, Vec<Option<RepoFile>>)> = Vec::new();
    for f in files {
        if !f.path.to_ascii_lowercase().ends_with(".gguf") {
            continue;
        }
        match split::part_name(&f.path) {
            Some((stem, index, count)) => {
                let found = splits
                    .iter()
                    .position(|(s, c, _)| *s == stem && *c == count);
                let pos = found.unwrap_or_else(|| {
                    splits.push((stem, count, vec![None; count as usize]));
                    splits.len() - 1
                });
                splits[pos].2[index as usize - 1] = Some(f.clone());
            }
            None => models.push(vec![f.clone()]),
        }
    }
    for (_, _, parts) in splits {
        if let Some(parts) = parts.into_iter().collect::<Option<Vec<_>>>() {
            models.push(parts);
        }
    }
    models.sort_by(|a, b| a[0].path.cmp(&b[0].path));
    models
}

fn list_names(models: &[Vec<RepoFile>]) -> String {
    if models.is_empty() {
        return "none".to_owned();
    }
    models
        .iter()
        .map(|m| match m.len() {
            1 => m[0].path.clone(),
            n => format!("{} ({n} parts)", m[0].path),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether the file name (not its folder) carries `quant` as a whole token, ignoring case:
/// `Q4_K` is in `model-Q4_K.gguf` but not in `model-Q4_K_M.gguf`.
pub fn carries_quant(path: &str, quant: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path).to_ascii_lowercase();
    // The quantization may also be the folder, as in `Q4_K_M/model-00001-of-00002.gguf`.
    let folder = path
        .rsplit_once('/')
        .map(|(dir, _)| dir.to_ascii_lowercase());
    let quant = quant.to_ascii_lowercase();
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let in_name = name.match_indices(&quant).any(|(at, m)| {
        let before = name[..at].chars().next_back();
        let after = name[at + m.len()..].chars().next();
        !before.is_some_and(word) && !after.is_some_and(word)
    });
    in_name || folder.is_some_and(|f| f.rsplit('/').next().is_some_and(|last| last == quant))
}

/// The Hub's address: `HF_ENDPOINT` or `https://huggingface.co`, without a trailing `/`.
fn endpoint() -> String {
    std::env::var("HF_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned())
        .trim_end_matches('/')
        .to_owned()
}

/// `HF_TOKEN`, if set.
fn token() -> Option<String> {
    std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty())
}

/// Path segments joined for a URL, each percent-encoded.
fn encode_path(path: &str) -> String {
    path.split('/')
        .map(|segment| {
            segment
                .bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Makes the referenced model present in the cache `dir` and returns its path: downloaded
/// (resuming a partial download), verified where the source gives a SHA-256, and for a split
/// model merged into one file. With `rehash`, a present file is hashed again.
pub fn ensure_present(reference: &Reference, dir: &Path, rehash: bool) -> Result<PathBuf> {
    let client = Client::new(token())?;
    match reference {
        Reference::Url { url, .. } => {
            let dest = cache_path(reference, dir);
            let remote = Remote {
                url: url.clone(),
                size: None,
                sha256: None,
                source: reference.to_string(),
            };
            fetch::ensure(&client, &remote, &dest, rehash)?;
            Ok(dest)
        }
        Reference::Hf { owner, repo, pick } => {
            let full = format!("{owner}/{repo}");
            let repo_dir = dir.join("hf").join(owner).join(repo);
            let listing_url = format!("{}/api/models/{full}?blobs=true", endpoint());
            let files = match client.get_text(&listing_url) {
                Ok(json) => parse_listing(&json)?,
                Err(err) => {
                    let cached = cached_files(&repo_dir);
                    let Ok(chosen) = choose(&cached, pick, &full) else {
                        return Err(err.context(format!("cannot list the files of {full}")));
                    };
                    warn!("cannot list {full} ({err:#}); using the copy in the cache");
                    return finish(&chosen, &repo_dir, reference);
                }
            };
            let chosen = choose(&files, pick, &full)?;
            for file in &chosen {
                let remote = Remote {
                    url: format!(
                        "{}/{full}/resolve/main/{}",
                        endpoint(),
                        encode_path(&file.path)
                    ),
                    size: file.size,
                    sha256: file.sha256.clone(),
                    source: format!("hf:{full}/{}", file.path),
                };
                let dest = repo_dir.join(&file.path);
                if chosen.len() > 1 && split::merged_path(&repo_dir.join(&chosen[0].path)).is_file()
                {
                    // The parts were merged before and removed.
                    break;
                }
                fetch::ensure(&client, &remote, &dest, rehash)?;
            }
            finish(&chosen, &repo_dir, reference)
        }
    }
}

/// The path of the chosen model in `repo_dir`: its file, or the merged file of its parts
/// (merging them first when needed).
fn finish(chosen: &[RepoFile], repo_dir: &Path, reference: &Reference) -> Result<PathBuf> {
    match chosen {
        [one] => Ok(repo_dir.join(&one.path)),
        parts => {
            let first = repo_dir.join(&parts[0].path);
            let merged = split::merged_path(&first);
            if merged.is_file() {
                return Ok(merged);
            }
            info!(
                "{reference} comes in {} parts; merging them into one file",
                parts.len()
            );
            let paths: Vec<PathBuf> = parts.iter().map(|p| repo_dir.join(&p.path)).collect();
            split::merge(&paths, &merged)?;
            for p in &paths {
                fetch::remove_with_sidecars(p);
            }
            Ok(merged)
        }
    }
}

/// The `.gguf` files already in a repository's cache folder, as a listing (for working
/// offline); a merged split model is one file there.
fn cached_files(repo_dir: &Path) -> Vec<RepoFile> {
    let mut out = Vec::new();
    let mut stack = vec![repo_dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let Ok(rel) = path.strip_prefix(repo_dir) else {
                continue;
            };
            let rel = rel.to_string_lossy().replace('\\', "/");
            if rel.to_ascii_lowercase().ends_with(".gguf") {
                out.push(RepoFile {
                    path: rel,
                    size: None,
                    sha256: None,
                });
            }
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn file(path: &str) -> RepoFile {
        RepoFile {
            path: path.to_owned(),
            size: None,
            sha256: None,
        }
    }

    fn hf(owner: &str, repo: &str, pick: Pick) -> Reference {
        Reference::Hf {
            owner: owner.to_owned(),
            repo: repo.to_owned(),
            pick,
        }
    }

    #[test]
    fn references_parse_in_every_accepted_form() {
        assert_eq!(
            parse("hf:bartowski/Qwen2.5-0.5B-GGUF").unwrap().unwrap(),
            hf("bartowski", "Qwen2.5-0.5B-GGUF", Pick::Quant(None))
        );
        assert_eq!(
            parse("hf:bartowski/Qwen2.5-0.5B-GGUF:Q8_0")
                .unwrap()
                .unwrap(),
            hf(
                "bartowski",
                "Qwen2.5-0.5B-GGUF",
                Pick::Quant(Some("Q8_0".into()))
            )
        );
        assert_eq!(
            parse("hf:a/b/sub/m-Q4_0.gguf").unwrap().unwrap(),
            hf("a", "b", Pick::File("sub/m-Q4_0.gguf".into()))
        );
        let url = parse("https://example.com:8443/x/My%20Model.GGUF?download=1")
            .unwrap()
            .unwrap();
        assert_eq!(
            url,
            Reference::Url {
                url: "https://example.com:8443/x/My%20Model.GGUF?download=1".into(),
                host: "example.com_8443".into(),
                file: "My_Model.GGUF".into(),
            }
        );
        assert!(parse("smollm2-135m").is_none());
        assert!(parse("models/x.gguf").is_none());
    }

    #[test]
    fn malformed_references_are_errors_that_say_what_is_wrong() {
        for (spec, needle) in [
            ("hf:onlyowner", "no OWNER/"),
            ("hf:a/b/readme.md", "not a .gguf"),
            ("hf:a/../x.gguf", "may hold only"),
            ("hf:a/b:", "quantization is empty"),
            ("hf:a b/c", "may hold only"),
            ("https://example.com/model.bin", "does not name a .gguf"),
            ("https://", "not a valid URL"),
        ] {
            let err = format!("{:#}", parse(spec).unwrap().unwrap_err());
            assert!(err.contains(needle), "{spec}: {err}");
        }
    }

    #[test]
    fn the_listing_gives_sizes_and_lfs_hashes() {
        let sha = "a".repeat(64);
        let json = format!(
            r#"{{"id":"o/r","siblings":[{{"rfilename":"README.md","size":10}},
            {{"rfilename":"m-Q4_0.gguf","size":100,"lfs":{{"sha256":"{sha}","size":100,"pointerSize":130}}}},
            {{"rfilename":"m-Q8_0.gguf","lfs":{{"oid":"sha256:{}","size":200}}}}]}}"#,
            "B".repeat(64)
        );
        let files = parse_listing(&json).unwrap();
        assert_eq!(files.len(), 3);
        assert_eq!(files[1].size, Some(100));
        assert_eq!(files[1].sha256.as_deref(), Some(sha.as_str()));
        assert_eq!(files[2].size, Some(200));
        assert_eq!(files[2].sha256, Some("b".repeat(64)));
        assert!(parse_listing("{\"siblings\": 3}").is_err());
    }

    #[test]
    fn quantizations_match_whole_tokens_of_the_file_name() {
        assert!(carries_quant("Model-Q4_K_M.gguf", "q4_k_m"));
        assert!(!carries_quant("Model-Q4_K_M.gguf", "Q4_K"));
        assert!(carries_quant("model.Q8_0.gguf", "Q8_0"));
        assert!(!carries_quant("model-IQ4_XS.gguf", "Q4"));
        assert!(carries_quant("Q4_K_M/model-00001-of-00002.gguf", "Q4_K_M"));
    }

    #[test]
    fn choosing_a_file_follows_quant_file_and_default_rules() {
        let files = [
            file("README.md"),
            file("m-Q4_K_M.gguf"),
            file("m-Q8_0.gguf"),
            file("big-Q6_K-00002-of-00002.gguf"),
            file("big-Q6_K-00001-of-00002.gguf"),
            file("partial-Q2_K-00001-of-00003.gguf"),
        ];
        let names = |v: Vec<RepoFile>| v.into_iter().map(|f| f.path).collect::<Vec<_>>();
        let q = |s: &str| Pick::Quant(Some(s.into()));
        assert_eq!(
            names(choose(&files, &q("q8_0"), "o/r").unwrap()),
            ["m-Q8_0.gguf"]
        );
        assert_eq!(
            names(choose(&files, &Pick::Quant(None), "o/r").unwrap()),
            ["m-Q4_K_M.gguf"]
        );
        // A split model comes as all its parts, in order, whichever part is named.
        assert_eq!(
            names(choose(&files, &q("Q6_K"), "o/r").unwrap()),
            [
                "big-Q6_K-00001-of-00002.gguf",
                "big-Q6_K-00002-of-00002.gguf"
            ]
        );
        assert_eq!(
            choose(
                &files,
                &Pick::File("big-Q6_K-00002-of-00002.gguf".into()),
                "o/r"
            )
            .unwrap()
            .len(),
            2
        );
        // An incomplete set of parts is no model.
        let err = choose(&files, &q("Q2_K"), "o/r").unwrap_err().to_string();
        assert!(err.contains("no .gguf file in o/r carries Q2_K"), "{err}");
        assert!(err.contains("m-Q8_0.gguf"), "{err}");
        let err = choose(&files[2..3], &Pick::File("x.gguf".into()), "o/r")
            .unwrap_err()
            .to_string();
        assert!(err.contains("o/r has no file x.gguf"), "{err}");
        let two = [file("a-Q8_0.gguf"), file("b-Q8_0.gguf")];
        let err = choose(&two, &Pick::Quant(None), "o/r")
            .unwrap_err()
            .to_string();
        assert!(err.contains("several models"), "{err}");
        let err = choose(&two, &q("Q8_0"), "o/r").unwrap_err().to_string();
        assert!(
            err.contains("several .gguf files in o/r carry Q8_0"),
            "{err}"
        );
        assert!(choose(&[file("README.md")], &Pick::Quant(None), "o/r").is_err());
    }

    #[test]
    fn cache_paths_keep_references_apart() {
        let dir = Path::new("/c");
        let r = parse("hf:o/r/sub/m.gguf").unwrap().unwrap();
        assert_eq!(cache_path(&r, dir), Path::new("/c/hf/o/r/sub/m.gguf"));
        let u = parse("http://127.0.0.1:8080/a/m.gguf").unwrap().unwrap();
        assert_eq!(
            cache_path(&u, dir),
            Path::new("/c/url/127.0.0.1_8080/m.gguf")
        );
        assert_eq!(encode_path("sub dir/m+1.gguf"), "sub%20dir/m%2B1.gguf");
    }
}
