//! Requantizing a whole GGUF model with one of llama.cpp's mixes, as
//! `llama-quantize` does without an importance matrix: a [`QuantPlan`]
//! chooses every tensor's type; tensors whose type changes are decoded to
//! f32 and encoded again, the others are copied; metadata is copied with
//! `general.file_type` set for the mix. [`requantize_file`] writes the result
//! to a temporary file beside the output and renames it into place, so the
//! output path never holds a partial model.

use std::path::{Path, PathBuf};

use ferrolm_gguf::{Gguf, GgufFile, GgufWriter, OwnedMetadataValue, TensorView, keys};
use rayon::iter::{IndexedParallelIterator, ParallelIterator};
use rayon::slice::{ParallelSlice, ParallelSliceMut};

use crate::mix::{Mix, MixOptions, QuantPlan, TensorPlan};
use crate::{
    GgmlType, QuantError, can_dequantize, can_quantize, dequantize_row, quantize_row, row_size,
};

/// Progress report for one tensor, passed to the callback before the tensor
/// is processed.
#[derive(Clone, Copy, Debug)]
pub struct TensorProgress<'a> {
    /// Position of the tensor in the file, from 0.
    pub index: usize,
    /// Number of tensors in the file.
    pub total: usize,
    /// What is done to it.
    pub tensor: &'a TensorPlan,
}

/// Decodes and re-encodes `t` as `to`, rows in parallel.
fn convert(t: &TensorView<'_>, to: GgmlType) -> Result<Vec<u8>, QuantError> {
    let tensor_error = |reason: String| QuantError::Tensor {
        name: t.name.to_owned(),
        reason,
    };
    let row_len = usize::try_from(t.row_len()).map_err(|_| tensor_error("row too long".into()))?;
    let n_rows = usize::try_from(t.n_rows()).map_err(|_| tensor_error("too many rows".into()))?;
    let in_row = row_size(t.ty, row_len)?;
    let out_row = row_size(to, row_len)?;
    let expected = in_row
        .checked_mul(n_rows)
        .ok_or_else(|| tensor_error("size overflows".into()))?;
    if t.data.len() != expected || in_row == 0 || out_row == 0 {
        return Err(tensor_error(format!(
            "holds {} bytes, its shape needs {expected}",
            t.data.len()
        )));
    }
    let mut out = vec![0u8; out_row * n_rows];
    out.par_chunks_mut(out_row)
        .zip(t.data.par_chunks(in_row))
        .try_for_each_init(
            || vec![0.0f32; row_len],
            |values, (dst, src)| {
                dequantize_row(t.ty, src, values)?;
                quantize_row(to, values, dst)
            },
        )?;
    Ok(out)
}

/// Requantizes `src` with `mix` and returns a writer holding the new model
/// (unchanged tensors borrowed from `src`) and the plan it followed.
/// `progress` is called once per tensor, before it is processed. Every
/// conversion is checked to be possible before any is done.
///
/// ```
/// use ferrolm_gguf::{GgmlType, Gguf, GgufWriter};
/// use ferrolm_quant::mix::{Mix, MixOptions, TensorAction};
/// use ferrolm_quant::requantize::requantize;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let weights: Vec<u8> = (0..64 * 2).flat_map(|i| (i as f32 * 0.01).to_le_bytes()).collect();
/// let norm: Vec<u8> = [1.0f32; 64].iter().flat_map(|x| x.to_le_bytes()).collect();
/// let mut model = GgufWriter::new();
/// model.add_metadata("general.architecture", "llama");
/// model.add_metadata("llama.block_count", 1u32);
/// model.add_tensor("blk.0.ffn_up.weight", &[64, 2], GgmlType::F32, weights)?;
/// model.add_tensor("blk.0.ffn_norm.weight", &[64], GgmlType::F32, norm)?;
/// let mut bytes = Vec::new();
/// model.write_to(&mut bytes)?;
///
/// let gguf = Gguf::parse(&bytes)?;
/// let (writer, plan) = requantize(&gguf, Mix::Q8_0, &MixOptions::default(), |_| {})?;
/// let actions: Vec<TensorAction> = plan.tensors.iter().map(|t| t.action).collect();
/// assert_eq!(actions, [TensorAction::Requantized, TensorAction::Kept]);
/// let mut out = Vec::new();
/// writer.write_to(&mut out)?;
/// let requantized = Gguf::parse(&out)?;
/// assert_eq!(requantized.tensor("blk.0.ffn_up.weight").unwrap().ty, GgmlType::Q8_0);
/// assert_eq!(requantized.get_u32("general.file_type")?, 7);
/// # Ok(()) }
/// ```
pub fn requantize<'a>(
    src: &Gguf<'a>,
    mix: Mix,
    options: &MixOptions,
    mut progress: impl FnMut(&TensorProgress<'_>),
) -> Result<(GgufWriter<'a>, QuantPlan), QuantError> {
    let plan = QuantPlan::new(src, mix, options)?;
    for t in plan.tensors.iter().filter(|t| t.converts()) {
        if !can_dequantize(t.from) {
            return Err(QuantError::Unsupported {
                ty: t.from,
                op: "dequantization",
            });
        }
        if !can_quantize(t.to) {
            return Err(QuantError::Unsupported {
                ty: t.to,
                op: "quantization",
            });
        }
    }
    let mut writer = GgufWriter::new();
    // A split model's part becomes a whole file.
    let split_keys = [
        keys::split::NO,
        keys::split::COUNT,
        keys::split::TENSORS_COUNT,
    ];
    for (key, value) in src.metadata() {
        if !split_keys.contains(key) {
            writer.add_metadata(key, OwnedMetadataValue::from(value));
        }
    }
    writer.add_metadata(
        keys::general::QUANTIZATION_VERSION,
        OwnedMetadataValue::U32(2),
    );
    writer.add_metadata(
        keys::general::FILE_TYPE,
        OwnedMetadataValue::U32(mix.file_type()),
    );
    let total = plan.tensors.len();
    for (index, (view, t)) in src.tensor_views().zip(&plan.tensors).enumerate() {
        progress(&TensorProgress {
            index,
            total,
            tensor: t,
        });
        if t.converts() {
            let data = convert(&view, t.to)?;
            writer.add_tensor(view.name, &view.dims, t.to, data)?;
        } else {
            writer.add_tensor(view.name, &view.dims, view.ty, view.data)?;
        }
    }
    Ok((writer, plan))
}

/// Where [`requantize_file`] writes before renaming: `OUT.tmp` beside `OUT`.
pub fn temporary_path(output: &Path) -> Result<PathBuf, QuantError> {
    let Some(name) = output.file_name() else {
        return Err(QuantError::Write {
            path: output.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file name"),
        });
    };
    let mut name = name.to_os_string();
    name.push(".tmp");
    Ok(output.with_file_name(name))
}

/// Reads the model at `input`, requantizes it with `mix` (see
/// [`requantize`]) and writes it to `output` atomically: to
/// [`temporary_path`] first, synced to disk, then renamed over `output`. On
/// an error the temporary file is removed and `output` is left as it was.
pub fn requantize_file(
    input: impl AsRef<Path>,
    output: impl AsRef<Path>,
    mix: Mix,
    options: &MixOptions,
    progress: impl FnMut(&TensorProgress<'_>),
) -> Result<QuantPlan, QuantError> {
    let (input, output) = (input.as_ref(), output.as_ref());
    let temporary = temporary_path(output)?;
    // Writing over the mapped input would corrupt it mid-read.
    for written in [output, temporary.as_path()] {
        if let (Ok(a), Ok(b)) = (input.canonicalize(), written.canonicalize())
            && a == b
        {
            return Err(QuantError::SameFile { path: a });
        }
    }
    let file = GgufFile::open(input)?;
    let gguf = file.gguf()?;
    let (writer, plan) = requantize(&gguf, mix, options, progress)?;
    let written = writer
        .write_file(&temporary)
        .map_err(QuantError::from)
        .and_then(|()| {
            std::fs::rename(&temporary, output).map_err(|source| QuantError::Write {
                path: output.to_owned(),
                source,
            })
        });
    if written.is_err() {
        // The write's own error is the one worth reporting.
        let _ = std::fs::remove_file(&temporary);
    }
    written?;
    sync_directory(output)?;
    Ok(plan)
}

/// Makes the rename of `path` durable by syncing its directory.
#[cfg(unix)]
fn sync_directory(path: &Path) -> Result<(), QuantError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| QuantError::Write {
            path: dir.to_owned(),
            source,
        })
}

/// Directories cannot be opened for syncing here; the rename stands as it is.
#[cfg(not(unix))]
fn sync_directory(_path: &Path) -> Result<(), QuantError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mix::TensorAction;

    fn f32_bytes(values: impl Iterator<Item = f32>) -> Vec<u8> {
        values.flat_map(f32::to_le_bytes).collect()
    }

    fn synthetic() -> Vec<u8> {
        let mut w = GgufWriter::new();
        w.add_metadata(keys::general::ARCHITECTURE, "llama");
        w.add_metadata("llama.block_count", 1u32);
        w.add_metadata(keys::general::FILE_TYPE, 0u32);
        w.add_metadata(keys::split::COUNT, 1u16);
        let wide = f32_bytes((0..512 * 2).map(|i| (i as f32 * 0.37).sin()));
        let odd = f32_bytes((0..48 * 3).map(|i| (i as f32 * 0.11).cos()));
        let norm = f32_bytes((0..512).map(|i| 1.0 + i as f32 * 1e-3));
        let ids: Vec<u8> = (0..8i32).flat_map(i32::to_le_bytes).collect();
        w.add_tensor("blk.0.ffn_up.weight", &[512, 2], GgmlType::F32, wide)
            .expect("adds");
        w.add_tensor("blk.0.odd.weight", &[48, 3], GgmlType::F32, odd)
            .expect("adds");
        w.add_tensor("blk.0.ffn_norm.weight", &[512], GgmlType::F32, norm)
            .expect("adds");
        w.add_tensor("ids", &[4, 2], GgmlType::I32, ids)
            .expect("adds");
        let mut bytes = Vec::new();
        w.write_to(&mut bytes).expect("writes");
        bytes
    }

    #[test]
    fn matrices_are_requantized_vectors_and_integers_kept() {
        let bytes = synthetic();
        let gguf = Gguf::parse(&bytes).expect("parses");
        let mut seen = Vec::new();
        let (writer, plan) = requantize(&gguf, Mix::Q4KS, &MixOptions::default(), |p| {
            seen.push((p.index, p.total, p.tensor.name.clone()));
        })
        .expect("requantizes");
        assert_eq!(seen.len(), 4);
        assert_eq!((seen[3].0, seen[3].1, seen[3].2.as_str()), (3, 4, "ids"));
        let got: Vec<(&str, TensorAction, GgmlType)> = plan
            .tensors
            .iter()
            .map(|t| (t.name.as_str(), t.action, t.to))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "blk.0.ffn_up.weight",
                    TensorAction::Requantized,
                    GgmlType::Q4K
                ),
                ("blk.0.odd.weight", TensorAction::Fallback, GgmlType::F16),
                ("blk.0.ffn_norm.weight", TensorAction::Kept, GgmlType::F32),
                ("ids", TensorAction::Kept, GgmlType::I32),
            ]
        );
        assert_eq!(plan.fallbacks().count(), 1);
        assert_eq!(plan.tensors[1].chosen, GgmlType::Q4K);
        let mut out = Vec::new();
        writer.write_to(&mut out).expect("writes");
        let out = Gguf::parse(&out).expect("parses");
        assert_eq!(out.get_u32(keys::general::FILE_TYPE).expect("set"), 14);
        assert_eq!(
            out.get_u32(keys::general::QUANTIZATION_VERSION)
                .expect("set"),
            2
        );
        assert!(out.get(keys::split::COUNT).is_none());
        assert_eq!(out.architecture().expect("kept"), "llama");
        let src_ids = gguf.tensor("ids").expect("ids");
        assert_eq!(out.tensor("ids").expect("ids").data, src_ids.data);
        let up = out.tensor("blk.0.ffn_up.weight").expect("up");
        assert_eq!(up.data.len(), 4 * 144);
        assert_eq!(
            plan.bytes_out(),
            (4 * 144 + 48 * 3 * 2 + 512 * 4 + 8 * 4) as u64
        );
        let odd = out.tensor("blk.0.odd.weight").expect("odd");
        let mut values = vec![0.0f32; 48 * 3];
        dequantize_row(GgmlType::F16, odd.data, &mut values).expect("decodes");
        assert!((values[5] - (5.0f32 * 0.11).cos()).abs() < 1e-3);
    }

    #[test]
    fn a_model_without_a_block_count_is_refused_naming_the_key() {
        let mut w = GgufWriter::new();
        w.add_metadata(keys::general::ARCHITECTURE, "llama");
        let mut bytes = Vec::new();
        w.write_to(&mut bytes).expect("writes");
        let gguf = Gguf::parse(&bytes).expect("parses");
        let err = requantize(&gguf, Mix::Q8_0, &MixOptions::default(), |_| {})
            .expect_err("no block count");
        assert!(err.to_string().contains("llama.block_count"), "{err}");
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ferrolm-quant-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    #[test]
    fn writing_over_the_input_or_its_temporary_name_is_refused() {
        let dir = temp_dir("same");
        let path = dir.join("model.gguf");
        std::fs::write(&path, synthetic()).expect("writes");
        let options = MixOptions::default();
        let result = requantize_file(&path, dir.join("./model.gguf"), Mix::Q8_0, &options, |_| {});
        assert!(matches!(result, Err(QuantError::SameFile { .. })));
        let result = requantize_file(&path, dir.join("model"), Mix::Q8_0, &options, |_| {});
        assert!(result.is_ok(), "model.tmp is not the input");
        let renamed = dir.join("out.gguf.tmp");
        std::fs::rename(&path, &renamed).expect("renames");
        let result = requantize_file(&renamed, dir.join("out.gguf"), Mix::Q8_0, &options, |_| {});
        assert!(matches!(result, Err(QuantError::SameFile { .. })));
        std::fs::remove_dir_all(&dir).expect("cleans up");
    }

    #[test]
    fn the_output_is_replaced_whole_and_a_failed_write_leaves_no_temporary_file() {
        let dir = temp_dir("atomic");
        let input = dir.join("model.gguf");
        std::fs::write(&input, synthetic()).expect("writes");
        let options = MixOptions::default();

        let output = dir.join("q8.gguf");
        std::fs::write(&output, b"an older file").expect("writes");
        let plan = requantize_file(&input, &output, Mix::Q8_0, &options, |_| {}).expect("writes");
        let written = std::fs::read(&output).expect("reads");
        let gguf = Gguf::parse(&written).expect("a whole model");
        assert_eq!(gguf.tensors().len(), plan.tensors.len());
        assert!(!temporary_path(&output).expect("a file name").exists());

        // A directory in the way makes the final rename fail after the data is written.
        let blocked = dir.join("blocked.gguf");
        std::fs::create_dir_all(blocked.join("inside")).expect("dir");
        let result = requantize_file(&input, &blocked, Mix::Q8_0, &options, |_| {});
        assert!(
            matches!(result, Err(QuantError::Write { .. })),
            "{result:?}"
        );
        assert!(blocked.join("inside").is_dir(), "left as it was");
        assert!(!temporary_path(&blocked).expect("a file name").exists());
        std::fs::remove_dir_all(&dir).expect("cleans up");
    }
}
