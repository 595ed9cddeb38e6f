//! Requantizing a whole GGUF model to another type, as llama.cpp's
//! `llama-quantize` does without an importance matrix: every weight matrix
//! is decoded to f32 and encoded as the target type; vectors (norms,
//! biases) and integer tensors are copied unchanged; metadata is copied with
//! `general.file_type` set for the target.

use std::path::Path;

use ferrolm_gguf::{GgmlType, Gguf, GgufFile, GgufWriter, OwnedMetadataValue, TensorView, keys};
use rayon::iter::{IndexedParallelIterator, ParallelIterator};
use rayon::slice::{ParallelSlice, ParallelSliceMut};

use crate::{QuantError, can_dequantize, dequantize_row, quantize_row, row_size};

/// The types a model can be requantized to.
pub const REQUANTIZE_TARGETS: [GgmlType; 15] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::Bf16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2K,
    GgmlType::Q3K,
    GgmlType::Q4K,
    GgmlType::Q5K,
    GgmlType::Q6K,
    GgmlType::Iq4Nl,
    GgmlType::Iq4Xs,
];

/// llama.cpp's `general.file_type` (`llama_ftype`) for a model whose weights
/// are all of type `ty`; a K-quant maps to its "small" mix, the one that uses
/// only that type.
pub fn file_type(ty: GgmlType) -> Option<u32> {
    Some(match ty {
        GgmlType::F32 => 0,
        GgmlType::F16 => 1,
        GgmlType::Q4_0 => 2,
        GgmlType::Q4_1 => 3,
        GgmlType::Q8_0 => 7,
        GgmlType::Q5_0 => 8,
        GgmlType::Q5_1 => 9,
        GgmlType::Q2K => 10,
        GgmlType::Q3K => 11,
        GgmlType::Q4K => 14,
        GgmlType::Q5K => 16,
        GgmlType::Q6K => 18,
        GgmlType::Iq4Nl => 25,
        GgmlType::Iq4Xs => 30,
        GgmlType::Bf16 => 32,
        _ => return None,
    })
}

/// The type used instead of `target` for rows whose length is not a
/// multiple of `target`'s block: the nearest 32-element format of at least
/// the same precision (as llama.cpp does, except that Q2_K and Q3_K fall back
/// to Q4_0 rather than IQ4_NL), and F16 when even 32 does not divide the row.
pub fn fallback_type(target: GgmlType, row_len: u64) -> GgmlType {
    let fits = |ty: GgmlType| row_len.is_multiple_of(ty.block_size() as u64);
    if fits(target) {
        return target;
    }
    let legacy = match target {
        GgmlType::Q2K | GgmlType::Q3K => GgmlType::Q4_0,
        GgmlType::Q4K => GgmlType::Q5_0,
        GgmlType::Q5K => GgmlType::Q5_1,
        GgmlType::Q6K => GgmlType::Q8_0,
        GgmlType::Iq4Xs => GgmlType::Iq4Nl,
        _ => GgmlType::F16,
    };
    if fits(legacy) { legacy } else { GgmlType::F16 }
}

/// What happened to one tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TensorAction {
    /// Decoded and encoded as the target type.
    Requantized,
    /// Written as another type because its rows do not fit the target's
    /// blocks (copied unchanged when already of that type).
    Fallback,
    /// Already of the type it would get: copied unchanged.
    AlreadyTarget,
    /// Not a weight matrix (a vector, or integer data): copied unchanged.
    Kept,
}

/// Progress report for one tensor, passed to the callback before the tensor
/// is processed.
#[derive(Clone, Debug)]
pub struct TensorProgress<'a> {
    /// Position of the tensor in the file, from 0.
    pub index: usize,
    /// Number of tensors in the file.
    pub total: usize,
    /// Tensor name.
    pub name: &'a str,
    /// Shape in ggml order.
    pub dims: &'a [u64],
    /// Type in the input file.
    pub from: GgmlType,
    /// Type in the output file.
    pub to: GgmlType,
    /// What is done to it.
    pub action: TensorAction,
}

/// A tensor written as another type than the target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fallback {
    /// Tensor name.
    pub tensor: String,
    /// Its row length.
    pub row_len: u64,
    /// The requested type, whose block does not divide the row.
    pub wanted: GgmlType,
    /// The type used instead.
    pub used: GgmlType,
}

/// Summary of a requantization.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequantizeReport {
    /// The requested type.
    pub target: GgmlType,
    /// Tensors in the model.
    pub tensors: usize,
    /// Tensors decoded and re-encoded.
    pub requantized: usize,
    /// Tensors copied unchanged (vectors, integer data, and matrices already
    /// of the type they would get).
    pub copied: usize,
    /// Tensors written as another type than `target`.
    pub fallbacks: Vec<Fallback>,
    /// Bytes of tensor data read.
    pub bytes_in: u64,
    /// Bytes of tensor data written.
    pub bytes_out: u64,
}

/// Whether a tensor is a weight matrix to requantize: at least two
/// dimensions and floating-point data. Integer tensors and vectors are kept.
fn is_weight_matrix(t: &TensorView<'_>) -> bool {
    let integer = matches!(
        t.ty,
        GgmlType::I8 | GgmlType::I16 | GgmlType::I32 | GgmlType::I64 | GgmlType::F64
    );
    t.dims.len() >= 2 && !integer
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

/// Requantizes every weight matrix of `src` to `target` and returns a writer
/// holding the new model (unchanged tensors borrowed from `src`), plus a
/// report. `progress` is called once per tensor, before it is processed.
///
/// ```
/// use ferrolm_gguf::{GgmlType, Gguf, GgufWriter};
/// use ferrolm_quant::requantize::requantize;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let weights: Vec<u8> = (0..64 * 2).flat_map(|i| (i as f32 * 0.01).to_le_bytes()).collect();
/// let norm: Vec<u8> = [1.0f32; 64].iter().flat_map(|x| x.to_le_bytes()).collect();
/// let mut model = GgufWriter::new();
/// model.add_metadata("general.architecture", "llama");
/// model.add_tensor("blk.0.ffn_up.weight", &[64, 2], GgmlType::F32, weights)?;
/// model.add_tensor("blk.0.ffn_norm.weight", &[64], GgmlType::F32, norm)?;
/// let mut bytes = Vec::new();
/// model.write_to(&mut bytes)?;
///
/// let gguf = Gguf::parse(&bytes)?;
/// let (writer, report) = requantize(&gguf, GgmlType::Q8_0, |_| {})?;
/// assert_eq!((report.requantized, report.copied), (1, 1));
/// let mut out = Vec::new();
/// writer.write_to(&mut out)?;
/// let requantized = Gguf::parse(&out)?;
/// assert_eq!(requantized.tensor("blk.0.ffn_up.weight").unwrap().ty, GgmlType::Q8_0);
/// assert_eq!(requantized.get_u32("general.file_type")?, 7);
/// # Ok(()) }
/// ```
pub fn requantize<'a>(
    src: &Gguf<'a>,
    target: GgmlType,
    mut progress: impl FnMut(&TensorProgress<'_>),
) -> Result<(GgufWriter<'a>, RequantizeReport), QuantError> {
    let Some(ftype) = file_type(target) else {
        let allowed: Vec<&str> = REQUANTIZE_TARGETS.iter().map(|t| t.name()).collect();
        return Err(QuantError::InvalidTarget {
            ty: target,
            allowed: allowed.join(", "),
        });
    };
    let mut writer = GgufWriter::new();
    for (key, value) in src.metadata() {
        writer.add_metadata(key, OwnedMetadataValue::from(value));
    }
    writer.add_metadata(keys::general::FILE_TYPE, OwnedMetadataValue::U32(ftype));
    if target.is_quantized() {
        writer.add_metadata(
            keys::general::QUANTIZATION_VERSION,
            OwnedMetadataValue::U32(2),
        );
    }
    let mut report = RequantizeReport {
        target,
        tensors: src.tensors().len(),
        requantized: 0,
        copied: 0,
        fallbacks: Vec::new(),
        bytes_in: 0,
        bytes_out: 0,
    };
    for (index, t) in src.tensor_views().enumerate() {
        let (to, action) = if is_weight_matrix(&t) {
            let to = fallback_type(target, t.row_len());
            let action = if to != target {
                TensorAction::Fallback
            } else if to == t.ty {
                TensorAction::AlreadyTarget
            } else {
                TensorAction::Requantized
            };
            (to, action)
        } else {
            (t.ty, TensorAction::Kept)
        };
        progress(&TensorProgress {
            index,
            total: report.tensors,
            name: t.name,
            dims: &t.dims,
            from: t.ty,
            to,
            action,
        });
        if action == TensorAction::Fallback {
            report.fallbacks.push(Fallback {
                tensor: t.name.to_owned(),
                row_len: t.row_len(),
                wanted: target,
                used: to,
            });
        }
        report.bytes_in += t.data.len() as u64;
        if to == t.ty {
            report.bytes_out += t.data.len() as u64;
            report.copied += 1;
            writer.add_tensor(t.name, &t.dims, t.ty, t.data)?;
        } else {
            if !can_dequantize(t.ty) {
                return Err(QuantError::Unsupported {
                    ty: t.ty,
                    op: "dequantization",
                });
            }
            let data = convert(&t, to)?;
            report.bytes_out += data.len() as u64;
            report.requantized += 1;
            writer.add_tensor(t.name, &t.dims, to, data)?;
        }
    }
    Ok((writer, report))
}

/// Reads the model at `input`, requantizes it to `target` (see
/// [`requantize`]) and writes it to `output`.
pub fn requantize_file(
    input: impl AsRef<Path>,
    output: impl AsRef<Path>,
    target: GgmlType,
    progress: impl FnMut(&TensorProgress<'_>),
) -> Result<RequantizeReport, QuantError> {
    let (input, output) = (input.as_ref(), output.as_ref());
    // Writing over the mapped input would corrupt it mid-read.
    if let (Ok(a), Ok(b)) = (input.canonicalize(), output.canonicalize())
        && a == b
    {
        return Err(QuantError::SameFile { path: a });
    }
    let file = GgufFile::open(input)?;
    let gguf = file.gguf()?;
    let (writer, report) = requantize(&gguf, target, progress)?;
    writer.write_file(output)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32_bytes(values: impl Iterator<Item = f32>) -> Vec<u8> {
        values.flat_map(f32::to_le_bytes).collect()
    }

    fn synthetic() -> Vec<u8> {
        let mut w = GgufWriter::new();
        w.add_metadata(keys::general::ARCHITECTURE, "llama");
        w.add_metadata(keys::general::FILE_TYPE, 0u32);
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
    fn fallbacks_follow_the_block_that_divides_the_row() {
        assert_eq!(fallback_type(GgmlType::Q4K, 512), GgmlType::Q4K);
        assert_eq!(fallback_type(GgmlType::Q4K, 576), GgmlType::Q5_0);
        assert_eq!(fallback_type(GgmlType::Q5K, 640), GgmlType::Q5_1);
        assert_eq!(fallback_type(GgmlType::Q6K, 576), GgmlType::Q8_0);
        assert_eq!(fallback_type(GgmlType::Q2K, 576), GgmlType::Q4_0);
        assert_eq!(fallback_type(GgmlType::Q3K, 576), GgmlType::Q4_0);
        assert_eq!(fallback_type(GgmlType::Iq4Xs, 576), GgmlType::Iq4Nl);
        assert_eq!(fallback_type(GgmlType::Q4K, 48), GgmlType::F16);
        assert_eq!(fallback_type(GgmlType::Q8_0, 48), GgmlType::F16);
        assert_eq!(fallback_type(GgmlType::F32, 7), GgmlType::F32);
    }

    #[test]
    fn every_target_has_a_file_type_and_others_are_refused() {
        for ty in REQUANTIZE_TARGETS {
            assert!(file_type(ty).is_some(), "{ty}");
        }
        let bytes = synthetic();
        let gguf = Gguf::parse(&bytes).expect("parses");
        for ty in [
            GgmlType::Q8K,
            GgmlType::Q8_1,
            GgmlType::Iq2Xxs,
            GgmlType::I32,
        ] {
            assert!(matches!(
                requantize(&gguf, ty, |_| {}),
                Err(QuantError::InvalidTarget { .. })
            ));
        }
    }

    #[test]
    fn matrices_are_requantized_vectors_and_integers_kept() {
        let bytes = synthetic();
        let gguf = Gguf::parse(&bytes).expect("parses");
        let mut seen = Vec::new();
        let (writer, report) = requantize(&gguf, GgmlType::Q4K, |p| {
            seen.push((p.name.to_owned(), p.action, p.to));
        })
        .expect("requantizes");
        assert_eq!(
            seen,
            [
                (
                    "blk.0.ffn_up.weight".to_owned(),
                    TensorAction::Requantized,
                    GgmlType::Q4K
                ),
                (
                    "blk.0.odd.weight".to_owned(),
                    TensorAction::Fallback,
                    GgmlType::F16
                ),
                (
                    "blk.0.ffn_norm.weight".to_owned(),
                    TensorAction::Kept,
                    GgmlType::F32
                ),
                ("ids".to_owned(), TensorAction::Kept, GgmlType::I32),
            ]
        );
        assert_eq!((report.requantized, report.copied), (2, 2));
        assert_eq!(
            report.fallbacks,
            [Fallback {
                tensor: "blk.0.odd.weight".to_owned(),
                row_len: 48,
                wanted: GgmlType::Q4K,
                used: GgmlType::F16,
            }]
        );
        let mut out = Vec::new();
        writer.write_to(&mut out).expect("writes");
        let out = Gguf::parse(&out).expect("parses");
        assert_eq!(out.get_u32(keys::general::FILE_TYPE).expect("set"), 14);
        assert_eq!(
            out.get_u32(keys::general::QUANTIZATION_VERSION)
                .expect("set"),
            2
        );
        assert_eq!(out.architecture().expect("kept"), "llama");
        let src_ids = gguf.tensor("ids").expect("ids");
        assert_eq!(out.tensor("ids").expect("ids").data, src_ids.data);
        let up = out.tensor("blk.0.ffn_up.weight").expect("up");
        assert_eq!(up.data.len(), 4 * 144);
        let odd = out.tensor("blk.0.odd.weight").expect("odd");
        let mut values = vec![0.0f32; 48 * 3];
        dequantize_row(GgmlType::F16, odd.data, &mut values).expect("decodes");
        assert!((values[5] - (5.0f32 * 0.11).cos()).abs() < 1e-3);
    }

    #[test]
    fn writing_over_the_input_is_refused() {
        let dir = std::env::temp_dir().join(format!("ferrolm-quant-same-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("model.gguf");
        std::fs::write(&path, synthetic()).expect("writes");
        let result = requantize_file(&path, dir.join("./model.gguf"), GgmlType::Q8_0, |_| {});
        assert!(matches!(result, Err(QuantError::SameFile { .. })));
        let report = requantize_file(&path, dir.join("q8.gguf"), GgmlType::Q8_0, |_| {})
            .expect("requantizes");
        assert_eq!(report.fallbacks.len(), 1);
        std::fs::remove_dir_all(&dir).expect("cleans up");
    }
}
