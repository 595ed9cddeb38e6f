//! Row-level dispatch from a [`GgmlType`] to the block codecs: the entry
//! points for code that holds raw tensor bytes.

use bytemuck::Pod;
use ferrolm_gguf::{GgmlType, TensorView};
use half::{bf16, f16};

use crate::QuantError;
use crate::blocks::{
    BlockIq4Nl, BlockIq4Xs, BlockQ2K, BlockQ3K, BlockQ4_0, BlockQ4_1, BlockQ4K, BlockQ5_0,
    BlockQ5_1, BlockQ5K, BlockQ6K, BlockQ8_0, BlockQ8_1, BlockQ8K,
};

/// Elements per block and bytes per block of `ty` as this crate lays it out,
/// or `None` for types it does not handle.
///
/// This agrees with [`GgmlType::block_size`]/[`GgmlType::type_size`] for
/// every handled type except possibly Q8_1, whose current ggml layout (two
/// f16 fields, 36 bytes) is what this crate uses.
pub fn block_layout(ty: GgmlType) -> Option<(usize, usize)> {
    let layout = match ty {
        GgmlType::F32 => (1, 4),
        GgmlType::F16 | GgmlType::Bf16 => (1, 2),
        GgmlType::Q4_0 => (32, size_of::<BlockQ4_0>()),
        GgmlType::Q4_1 => (32, size_of::<BlockQ4_1>()),
        GgmlType::Q5_0 => (32, size_of::<BlockQ5_0>()),
        GgmlType::Q5_1 => (32, size_of::<BlockQ5_1>()),
        GgmlType::Q8_0 => (32, size_of::<BlockQ8_0>()),
        GgmlType::Q8_1 => (32, size_of::<BlockQ8_1>()),
        GgmlType::Q2K => (256, size_of::<BlockQ2K>()),
        GgmlType::Q3K => (256, size_of::<BlockQ3K>()),
        GgmlType::Q4K => (256, size_of::<BlockQ4K>()),
        GgmlType::Q5K => (256, size_of::<BlockQ5K>()),
        GgmlType::Q6K => (256, size_of::<BlockQ6K>()),
        GgmlType::Q8K => (256, size_of::<BlockQ8K>()),
        GgmlType::Iq4Nl => (32, size_of::<BlockIq4Nl>()),
        GgmlType::Iq4Xs => (256, size_of::<BlockIq4Xs>()),
        _ => return None,
    };
    Some(layout)
}

/// Bytes taken by a row of `n_elements` elements of `ty`.
pub fn row_size(ty: GgmlType, n_elements: usize) -> Result<usize, QuantError> {
    let (block, bytes) = block_layout(ty).ok_or(QuantError::Unsupported {
        ty,
        op: "row layout",
    })?;
    if !n_elements.is_multiple_of(block) {
        return Err(QuantError::NotBlockMultiple {
            ty,
            elements: n_elements,
            block,
        });
    }
    Ok(n_elements / block * bytes)
}

/// Whether [`dequantize_row`] handles `ty`.
pub fn can_dequantize(ty: GgmlType) -> bool {
    block_layout(ty).is_some()
}

/// Whether [`quantize_row`] handles `ty` (every type [`dequantize_row`] does).
pub fn can_quantize(ty: GgmlType) -> bool {
    block_layout(ty).is_some()
}

fn check_lengths(ty: GgmlType, elements: usize, got_bytes: usize) -> Result<(), QuantError> {
    let expected = row_size(ty, elements)?;
    if expected != got_bytes {
        return Err(QuantError::ByteLength {
            ty,
            elements,
            expected,
            got: got_bytes,
        });
    }
    Ok(())
}

/// Decodes consecutive blocks of `B`, reading them in place when `bytes` is
/// suitably aligned and copying each one out otherwise.
fn decode_blocks<B: Pod, const N: usize>(
    bytes: &[u8],
    out: &mut [f32],
    decode: impl Fn(&B, &mut [f32; N]),
) {
    let (chunks, _) = out.as_chunks_mut::<N>();
    if let Ok(blocks) = bytemuck::try_cast_slice::<u8, B>(bytes) {
        for (block, chunk) in blocks.iter().zip(chunks) {
            decode(block, chunk);
        }
    } else {
        for (raw, chunk) in bytes.chunks_exact(size_of::<B>()).zip(chunks) {
            decode(&bytemuck::pod_read_unaligned::<B>(raw), chunk);
        }
    }
}

fn encode_blocks<B: Pod, const N: usize>(
    src: &[f32],
    out: &mut [u8],
    encode: impl Fn(&[f32; N]) -> B,
) {
    let (chunks, _) = src.as_chunks::<N>();
    for (chunk, raw) in chunks.iter().zip(out.chunks_exact_mut(size_of::<B>())) {
        raw.copy_from_slice(bytemuck::bytes_of(&encode(chunk)));
    }
}

/// Decodes one row of `ty` from `bytes` into `out` (`out.len()` elements).
///
/// `bytes` must hold exactly `out.len()` elements; it need not be aligned.
/// The values are exactly those of ggml's reference dequantization.
///
/// ```
/// use ferrolm_gguf::GgmlType;
/// # fn main() -> Result<(), ferrolm_quant::QuantError> {
/// let bytes = [0u8, 0x3c, 0x00, 0x40]; // f16 1.0 and 2.0
/// let mut out = [0.0f32; 2];
/// ferrolm_quant::dequantize_row(GgmlType::F16, &bytes, &mut out)?;
/// assert_eq!(out, [1.0, 2.0]);
/// # Ok(()) }
/// ```
pub fn dequantize_row(ty: GgmlType, bytes: &[u8], out: &mut [f32]) -> Result<(), QuantError> {
    check_lengths(ty, out.len(), bytes.len())?;
    match ty {
        GgmlType::F32 => {
            for (o, raw) in out.iter_mut().zip(bytes.as_chunks::<4>().0) {
                *o = f32::from_le_bytes(*raw);
            }
        }
        GgmlType::F16 => {
            for (o, raw) in out.iter_mut().zip(bytes.as_chunks::<2>().0) {
                *o = f16::from_le_bytes(*raw).to_f32();
            }
        }
        GgmlType::Bf16 => {
            for (o, raw) in out.iter_mut().zip(bytes.as_chunks::<2>().0) {
                *o = bf16::from_le_bytes(*raw).to_f32();
            }
        }
        GgmlType::Q4_0 => decode_blocks(bytes, out, BlockQ4_0::dequantize),
        GgmlType::Q4_1 => decode_blocks(bytes, out, BlockQ4_1::dequantize),
        GgmlType::Q5_0 => decode_blocks(bytes, out, BlockQ5_0::dequantize),
        GgmlType::Q5_1 => decode_blocks(bytes, out, BlockQ5_1::dequantize),
        GgmlType::Q8_0 => decode_blocks(bytes, out, BlockQ8_0::dequantize),
        GgmlType::Q8_1 => decode_blocks(bytes, out, BlockQ8_1::dequantize),
        GgmlType::Q2K => decode_blocks(bytes, out, BlockQ2K::dequantize),
        GgmlType::Q3K => decode_blocks(bytes, out, BlockQ3K::dequantize),
        GgmlType::Q4K => decode_blocks(bytes, out, BlockQ4K::dequantize),
        GgmlType::Q5K => decode_blocks(bytes, out, BlockQ5K::dequantize),
        GgmlType::Q6K => decode_blocks(bytes, out, BlockQ6K::dequantize),
        GgmlType::Q8K => decode_blocks(bytes, out, BlockQ8K::dequantize),
        GgmlType::Iq4Nl => decode_blocks(bytes, out, BlockIq4Nl::dequantize),
        GgmlType::Iq4Xs => decode_blocks(bytes, out, BlockIq4Xs::dequantize),
        _ => {
            return Err(QuantError::Unsupported {
                ty,
                op: "dequantization",
            });
        }
    }
    Ok(())
}

/// Encodes one row of `src` as `ty` into `out`, which must be exactly
/// [`row_size`]`(ty, src.len())` bytes long.
///
/// ```
/// use ferrolm_gguf::GgmlType;
/// # fn main() -> Result<(), ferrolm_quant::QuantError> {
/// let src: Vec<f32> = (0..32).map(|i| i as f32 - 16.0).collect();
/// let mut bytes = vec![0u8; ferrolm_quant::row_size(GgmlType::Q8_0, 32)?];
/// ferrolm_quant::quantize_row(GgmlType::Q8_0, &src, &mut bytes)?;
/// let mut back = [0.0f32; 32];
/// ferrolm_quant::dequantize_row(GgmlType::Q8_0, &bytes, &mut back)?;
/// assert!(src.iter().zip(&back).all(|(a, b)| (a - b).abs() < 0.07));
/// # Ok(()) }
/// ```
pub fn quantize_row(ty: GgmlType, src: &[f32], out: &mut [u8]) -> Result<(), QuantError> {
    check_lengths(ty, src.len(), out.len())?;
    match ty {
        GgmlType::F32 => {
            for (raw, v) in out.as_chunks_mut::<4>().0.iter_mut().zip(src) {
                *raw = v.to_le_bytes();
            }
        }
        GgmlType::F16 => {
            for (raw, v) in out.as_chunks_mut::<2>().0.iter_mut().zip(src) {
                *raw = f16::from_f32(*v).to_le_bytes();
            }
        }
        GgmlType::Bf16 => {
            for (raw, v) in out.as_chunks_mut::<2>().0.iter_mut().zip(src) {
                *raw = bf16::from_f32(*v).to_le_bytes();
            }
        }
        GgmlType::Q4_0 => encode_blocks(src, out, BlockQ4_0::quantize),
        GgmlType::Q4_1 => encode_blocks(src, out, BlockQ4_1::quantize),
        GgmlType::Q5_0 => encode_blocks(src, out, BlockQ5_0::quantize),
        GgmlType::Q5_1 => encode_blocks(src, out, BlockQ5_1::quantize),
        GgmlType::Q8_0 => encode_blocks(src, out, BlockQ8_0::quantize),
        GgmlType::Q8_1 => encode_blocks(src, out, BlockQ8_1::quantize),
        GgmlType::Q2K => encode_blocks(src, out, BlockQ2K::quantize),
        GgmlType::Q3K => encode_blocks(src, out, BlockQ3K::quantize),
        GgmlType::Q4K => encode_blocks(src, out, BlockQ4K::quantize),
        GgmlType::Q5K => encode_blocks(src, out, BlockQ5K::quantize),
        GgmlType::Q6K => encode_blocks(src, out, BlockQ6K::quantize),
        GgmlType::Q8K => encode_blocks(src, out, BlockQ8K::quantize),
        GgmlType::Iq4Nl => encode_blocks(src, out, BlockIq4Nl::quantize),
        GgmlType::Iq4Xs => encode_blocks(src, out, BlockIq4Xs::quantize),
        _ => {
            return Err(QuantError::Unsupported {
                ty,
                op: "quantization",
            });
        }
    }
    Ok(())
}

/// Decodes a whole tensor to f32 (row-major, `view.n_elements()` values).
pub fn dequantize_tensor(view: &TensorView<'_>) -> Result<Vec<f32>, QuantError> {
    let n = usize::try_from(view.n_elements()).map_err(|_| QuantError::Tensor {
        name: view.name.to_owned(),
        reason: "too many elements for this platform".to_owned(),
    })?;
    let mut out = vec![0.0f32; n];
    dequantize_row(view.ty, view.data, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_agree_with_the_gguf_type_table() {
        for ty in GgmlType::ALL {
            let Some((block, bytes)) = block_layout(ty) else {
                continue;
            };
            assert_eq!(block, ty.block_size(), "{ty}");
            // The gguf table follows an older Q8_1 layout with f32 fields
            // (40 bytes); ggml's current block is 2 f16 + 32 i8.
            if ty != GgmlType::Q8_1 {
                assert_eq!(bytes, ty.type_size(), "{ty}");
            }
        }
        assert_eq!(block_layout(GgmlType::Q8_1), Some((32, 36)));
    }

    #[test]
    fn wrong_lengths_are_errors_not_panics() {
        let mut out = [0.0f32; 32];
        assert!(matches!(
            dequantize_row(GgmlType::Q4_0, &[0u8; 17], &mut out),
            Err(QuantError::ByteLength {
                expected: 18,
                got: 17,
                ..
            })
        ));
        assert!(matches!(
            dequantize_row(GgmlType::Q4K, &[0u8; 18], &mut out),
            Err(QuantError::NotBlockMultiple { block: 256, .. })
        ));
        assert!(matches!(
            quantize_row(GgmlType::Iq2Xxs, &[0.0; 256], &mut [0u8; 66]),
            Err(QuantError::Unsupported { .. })
        ));
        assert!(matches!(
            quantize_row(GgmlType::Q8_0, &[0.0; 32], &mut [0u8; 35]),
            Err(QuantError::ByteLength { .. })
        ));
    }
}
