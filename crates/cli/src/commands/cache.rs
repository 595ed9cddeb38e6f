//! `ferrolm list` and `ferrolm rm MODEL`: the models in the model cache, and removing one.

use anyhow::{Context, Result, bail};
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use crate::fetch;
use crate::hub::{self, Pick, Reference};
use crate::models;
use crate::output::print_stdout;

/// Arguments of `ferrolm list`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Print one JSON object per model instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `ferrolm rm`.
#[derive(Debug, clap::Args)]
pub struct RmArgs {
    /// The model to remove from the cache, as `ferrolm list` names it or as it was pulled: a
    /// known name, an hf: reference or an http(s):// link. Files outside the cache are never
    /// removed.
    #[arg(value_name = "MODEL", required = true)]
    pub models: Vec<String>,
}

/// One model file in the cache.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Entry {
    /// The name to give `run -m` or `rm`.
    pub name: String,
    /// File size in bytes.
    pub size: u64,
    /// `general.file_type` by name, if the file says.
    pub quant: Option<String>,
    /// `general.architecture`, if the file says.
    pub architecture: Option<String>,
    /// Where it is.
    pub path: PathBuf,
}

/// Every model file under `dir`, by name.
pub fn entries(dir: &Path) -> Vec<Entry> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(read) = fs::read_dir(&d) else {
            continue;
        };
        for entry in read.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            // Work folders and temporary files of unfinished pulls and merges.
            if name.starts_with('.') {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else if name.to_ascii_lowercase().ends_with(".gguf") {
                files.push(path);
            }
        }
    }
    let mut out: Vec<Entry> = files.iter().map(|p| entry(dir, p)).collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn entry(dir: &Path, path: &Path) -> Entry {
    let rel = path
        .strip_prefix(dir)
        .unwrap_or(path)
        .to_string_lossy()
        .replace('\\', "/");
    let name = if let Some(known) = models::KNOWN_MODELS.iter().find(|m| m.file_name == rel) {
        known.name.to_owned()
    } else if let Some(rest) = rel.strip_prefix("hf/") {
        format!("hf:{rest}")
    } else {
        fs::read_to_string(fetch::source_path(path))
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| path.display().to_string())
    };
    let size = fs::metadata(path).map(|m| m.len()).unwrap_or_default();
    let (quant, architecture) = match ferrolm_gguf::GgufFile::open(path) {
        Ok(file) => match file.gguf() {
            Ok(g) => (
                g.get_u32(ferrolm_gguf::keys::general::FILE_TYPE)
                    .ok()
                    .and_then(crate::file_type::name)
                    .map(str::to_owned),
                g.architecture().ok().map(str::to_owned),
            ),
            Err(_) => (None, None),
        },
        Err(_) => (None, None),
    };
    Entry {
        name,
        size,
        quant,
        architecture,
        path: path.to_owned(),
    }
}

/// Prints the cache's models.
pub fn list(args: &ListArgs) -> Result<()> {
    let dir = models::models_dir()?;
    let entries = entries(&dir);
    let mut out = String::new();
    if args.json {
        for e in &entries {
            out.push_str(&serde_json::to_string(e)?);
            out.push('\n');
        }
        return print_stdout(&out);
    }
    if entries.is_empty() {
        eprintln!(
            "no models in {}; fetch one with `ferrolm pull`",
            dir.display()
        );
        return Ok(());
    }
    let width = entries
        .iter()
        .map(|e| e.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let _ = writeln!(
        out,
        "{:<width$}  {:>10}  {:<8}  {:<10}  PATH",
        "NAME", "SIZE", "QUANT", "ARCH"
    );
    for e in &entries {
        let _ = writeln!(
            out,
            "{:<width$}  {:>10}  {:<8}  {:<10}  {}",
            e.name,
            indicatif::HumanBytes(e.size).to_string(),
            e.quant.as_deref().unwrap_or("?"),
            e.architecture.as_deref().unwrap_or("?"),
            e.path.display()
        );
    }
    print_stdout(&out)
}

/// The cached file `spec` names, without fetching anything.
fn cached_path(spec: &str, dir: &Path) -> Result<PathBuf> {
    let entries = entries(dir);
    if let Some(e) = entries.iter().find(|e| e.name == spec) {
        return Ok(e.path.clone());
    }
    if let Some(known) = models::known(spec) {
        return Ok(dir.join(known.file_name));
    }
    if let Some(reference) = hub::parse(spec) {
        let reference = reference?;
        let path = hub::cache_path(&reference, dir);
        if let Reference::Hf {
            pick: Pick::Quant(quant),
            ..
        } = &reference
        {
            // A repository: the cached model that the reference would pick there.
            let prefix = format!("{}/", path.display());
            let candidates: Vec<_> = entries
                .iter()
                .filter(|e| e.path.display().to_string().starts_with(&prefix))
                .filter(|e| {
                    quant
                        .as_deref()
                        .is_none_or(|q| hub::carries_quant(&e.path.to_string_lossy(), q))
                })
                .collect();
            return match candidates.as_slice() {
                [one] => Ok(one.path.clone()),
                [] => bail!("{spec} is not in the model cache {}", dir.display()),
                several => bail!(
                    "{spec} matches several cached models: {}",
                    several
                        .iter()
                        .map(|e| e.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
        }
        return Ok(path);
    }
    bail!(
        "`{spec}` is not a model in the cache {} (see `ferrolm list`)",
        dir.display()
    )
}

/// Removes models from the cache.
pub fn rm(args: &RmArgs) -> Result<()> {
    let dir = models::models_dir()?;
    for spec in &args.models {
        let path = cached_path(spec, &dir)?;
        if !path.starts_with(&dir) {
            bail!(
                "{} is not in the model cache {}",
                path.display(),
                dir.display()
            );
        }
        if !path.is_file() {
            bail!("{spec} is not in the model cache {}", dir.display());
        }
        fetch::remove_with_sidecars(&path);
        // The folders it leaves empty, up to the cache itself.
        let mut parent = path.parent();
        while let Some(p) = parent {
            if p == dir || fs::remove_dir(p).is_err() {
                break;
            }
            parent = p.parent();
        }
        print_stdout(&format!("removed {}\n", path.display()))
            .context("cannot report the removal")?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use ferrolm_gguf::GgufWriter;

    fn write_model(path: &Path, arch: &str, file_type: u32) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut w = GgufWriter::new();
        w.add_metadata("general.architecture", arch);
        w.add_metadata("general.file_type", file_type);
        w.write_file(path).unwrap();
    }

    #[test]
    fn the_cache_lists_by_name_and_removes_by_any_name() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write_model(&d.join("hf/o/r/m-Q8_0.gguf"), "qwen2", 7);
        write_model(&d.join("hf/o/r/m-Q4_K_M.gguf"), "qwen2", 15);
        write_model(&d.join("url/h/x.gguf"), "llama", 2);
        fs::write(d.join("url/h/x.gguf.source"), "https://h/a/x.gguf\n").unwrap();
        fs::write(d.join("hf/o/r/m-Q2_K.gguf.part"), "partial").unwrap();
        fs::create_dir_all(d.join(".pull-1")).unwrap();
        fs::write(d.join(".pull-1/y.gguf"), "tmp").unwrap();
        let names: Vec<_> = entries(d)
            .into_iter()
            .map(|e| (e.name, e.quant, e.architecture))
            .collect();
        assert_eq!(
            names,
            [
                (
                    "hf:o/r/m-Q4_K_M.gguf".to_owned(),
                    Some("q4_K_M".to_owned()),
                    Some("qwen2".to_owned())
                ),
                (
                    "hf:o/r/m-Q8_0.gguf".to_owned(),
                    Some("q8_0".to_owned()),
                    Some("qwen2".to_owned())
                ),
                (
                    "https://h/a/x.gguf".to_owned(),
                    Some("q4_0".to_owned()),
                    Some("llama".to_owned())
                ),
            ]
        );
        assert_eq!(
            cached_path("hf:o/r:Q8_0", d).unwrap(),
            d.join("hf/o/r/m-Q8_0.gguf")
        );
        assert!(
            cached_path("hf:o/r", d)
                .unwrap_err()
                .to_string()
                .contains("several")
        );
        assert_eq!(
            cached_path("https://h/a/x.gguf", d).unwrap(),
            d.join("url/h/x.gguf")
        );
        assert!(cached_path("hf:o/r:Q3_K", d).is_err());
        assert!(cached_path("nothing", d).is_err());
    }
}
