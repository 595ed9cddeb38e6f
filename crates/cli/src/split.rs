//! Models split into parts (`NAME-00001-of-00003.gguf`, …, as llama.cpp's `gguf-split` writes
//! them): each part is a GGUF file holding some of the tensors, the first one the model's
//! metadata, all of them `split.no`, `split.count` and `split.tensors.count`. ferrolm merges
//! the parts into one file (`NAME.gguf`) and reads that.

use anyhow::{Context, Result, bail, ensure};
use ferrolm_gguf::{GgufFile, GgufWriter};
use std::path::{Path, PathBuf};

/// Metadata keys of split files.
const SPLIT_NO: &str = "split.no";
const SPLIT_COUNT: &str = "split.count";
const SPLIT_TENSORS: &str = "split.tensors.count";

/// For a name ending in `-IIIII-of-NNNNN.gguf` (any letter case), the name before that, the
/// part number and the part count; `None` for other names or numbers out of range.
pub fn part_name(path: &str) -> Option<(String, u32, u32)> {
    let lower = path.to_ascii_lowercase();
    let body = &path[..lower.strip_suffix(".gguf")?.len()];
    let (rest, count) = body.rsplit_once("-of-")?;
    let (stem, index) = rest.rsplit_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(index) || !digits(count) {
        return None;
    }
    let (index, count) = (index.parse().ok()?, count.parse().ok()?);
    (1..=count)
        .contains(&index)
        .then(|| (stem.to_owned(), index, count))
}

/// Where the merged model of the part at `part` goes: beside it, named without the part
/// numbers.
pub fn merged_path(part: &Path) -> PathBuf {
    let name = part
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match part_name(&name) {
        Some((stem, _, _)) => part.with_file_name(format!("{stem}.gguf")),
        None => part.to_owned(),
    }
}

/// For the local path of a part of a split model, the merged model in `cache`
/// (`merged/NAME.gguf`), merging the parts first unless a merge newer than all of them is
/// there; `None` for a path that is not a part.
pub fn merged_local(part: &Path, cache: &Path) -> Result<Option<PathBuf>> {
    let Some(name) = part.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return Ok(None);
    };
    let Some((stem, _, count)) = part_name(&name) else {
        return Ok(None);
    };
    let parts: Vec<PathBuf> = (1..=count)
        .map(|i| part.with_file_name(format!("{stem}-{i:05}-of-{count:05}.gguf")))
        .collect();
    let mut newest = std::time::SystemTime::UNIX_EPOCH;
    for p in &parts {
        let meta = std::fs::metadata(p).with_context(|| {
            format!(
                "{} is part of a model split in {count}, but part {} cannot be read",
                part.display(),
                p.display()
            )
        })?;
        newest = newest.max(meta.modified().unwrap_or(newest));
    }
    let dir = cache.join("merged");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let merged = dir.join(format!("{stem}.gguf"));
    let fresh = std::fs::metadata(&merged)
        .and_then(|m| m.modified())
        .is_ok_and(|t| t >= newest);
    if !fresh {
        tracing::info!(
            "{} is part 1 of {count}; merging the parts into {}",
            parts[0].display(),
            merged.display()
        );
        merge(&parts, &merged)?;
    }
    Ok(Some(merged))
}

/// A metadata integer of a part, as u64.
fn split_key(gguf: &ferrolm_gguf::Gguf<'_>, key: &str) -> Option<u64> {
    gguf.get(key).and_then(ferrolm_gguf::MetadataValue::as_u64)
}

/// Writes the model whose parts are `parts` (in order) as one GGUF file at `out`: the first
/// part's metadata without the `split.*` keys, then every part's tensors. The file appears at
/// `out` only when complete.
pub fn merge(parts: &[PathBuf], out: &Path) -> Result<()> {
    let files = parts
        .iter()
        .map(GgufFile::open)
        .collect::<Result<Vec<_>, _>>()?;
    let parsed = files
        .iter()
        .map(GgufFile::gguf)
        .collect::<Result<Vec<_>, _>>()?;
    let count = parts.len() as u64;
    for (i, (g, path)) in parsed.iter().zip(parts).enumerate() {
        let (no, n) = (split_key(g, SPLIT_NO), split_key(g, SPLIT_COUNT));
        ensure!(
            n == Some(count) && no == Some(i as u64),
            "{} is not part {} of {count} of one model (its split.no is {}, split.count {})",
            path.display(),
            i + 1,
            no.map_or("missing".to_owned(), |v| v.to_string()),
            n.map_or("missing".to_owned(), |v| v.to_string()),
        );
    }
    let mut writer = GgufWriter::new();
    for (key, value) in parsed[0].metadata() {
        if !key.starts_with("split.") {
            writer.add_metadata(key, ferrolm_gguf::OwnedMetadataValue::from(value));
        }
    }
    let mut tensors = 0u64;
    for (g, path) in parsed.iter().zip(parts) {
        for t in g.tensor_views() {
            writer
                .add_tensor(t.name, &t.dims, t.ty, t.data)
                .with_context(|| format!("cannot merge {}", path.display()))?;
            tensors += 1;
        }
    }
    if let Some(expected) = split_key(&parsed[0], SPLIT_TENSORS)
        && expected != tensors
    {
        bail!("the parts hold {tensors} tensors, but the first says the model has {expected}");
    }
    let dir = out.parent().unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new()
        .prefix(".merge-")
        .suffix(".gguf")
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    writer
        .write_to(tmp.as_file())
        .with_context(|| format!("cannot write the merged model {}", out.display()))?;
    tmp.as_file()
        .sync_all()
        .with_context(|| format!("cannot write the merged model {}", out.display()))?;
    tmp.persist(out)
        .with_context(|| format!("cannot move the merged model to {}", out.display()))?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use ferrolm_gguf::GgmlType;

    #[test]
    fn part_names_are_recognised_and_rebuilt() {
        assert_eq!(
            part_name("dir/Model-Q4_K_M-00002-of-00003.gguf"),
            Some(("dir/Model-Q4_K_M".to_owned(), 2, 3))
        );
        assert_eq!(part_name("m-00004-of-00003.gguf"), None);
        assert_eq!(part_name("m-00000-of-00003.gguf"), None);
        assert_eq!(part_name("m-Q8_0.gguf"), None);
        assert_eq!(part_name("m-x-of-00003.gguf"), None);
        assert_eq!(
            merged_path(Path::new("/c/m-00001-of-00002.gguf")),
            Path::new("/c/m.gguf")
        );
    }

    /// Writes part `no` (0-based) of `count`, holding tensors `names` with distinct contents.
    fn write_part(path: &Path, no: u16, count: u16, total: i32, names: &[&str]) {
        let mut w = GgufWriter::new();
        if no == 0 {
            w.add_metadata("general.architecture", "llama");
        }
        w.add_metadata(SPLIT_NO, no);
        w.add_metadata(SPLIT_COUNT, count);
        w.add_metadata(SPLIT_TENSORS, total);
        let data: Vec<Vec<u8>> = names
            .iter()
            .map(|n| (0..16u8).map(|i| i ^ n.len() as u8).collect())
            .collect();
        for (n, d) in names.iter().zip(&data) {
            w.add_tensor(n, &[4], GgmlType::F32, d.as_slice()).unwrap();
        }
        w.write_file(path).unwrap();
    }

    #[test]
    fn parts_merge_into_one_file_with_every_tensor_and_no_split_keys() {
        let dir = tempfile::tempdir().unwrap();
        let p1 = dir.path().join("m-00001-of-00002.gguf");
        let p2 = dir.path().join("m-00002-of-00002.gguf");
        write_part(&p1, 0, 2, 3, &["a", "bb"]);
        write_part(&p2, 1, 2, 3, &["ccc"]);
        let out = merged_path(&p1);
        merge(&[p1.clone(), p2.clone()], &out).unwrap();
        let f = GgufFile::open(&out).unwrap();
        let g = f.gguf().unwrap();
        assert_eq!(g.architecture().unwrap(), "llama");
        assert!(g.metadata().iter().all(|(k, _)| !k.starts_with("split.")));
        let names: Vec<_> = g.tensor_views().map(|t| t.name).collect();
        assert_eq!(names, ["a", "bb", "ccc"]);
        let ccc = g.tensor_views().find(|t| t.name == "ccc").unwrap();
        assert_eq!(ccc.data[1], 1 ^ 3);

        // Parts out of order, or a set with a tensor missing, are refused and leave nothing.
        std::fs::remove_file(&out).unwrap();
        let err = merge(&[p2.clone(), p1.clone()], &out)
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not part 1 of 2"), "{err}");
        write_part(&p2, 1, 2, 4, &["ccc"]);
        write_part(&p1, 0, 2, 4, &["a", "bb"]);
        let err = merge(&[p1, p2], &out).unwrap_err().to_string();
        assert!(err.contains("hold 3 tensors"), "{err}");
        assert!(!out.exists());
    }
}
