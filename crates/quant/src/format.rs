//! [`BlockFormat`]: one trait over every block struct, so generic code (dot
//! products, matmul, tests) can be written once per operation.

use bytemuck::Pod;
use ferrolm_gguf::GgmlType;

use crate::QuantError;
use crate::blocks::{
    BlockIq4Nl, BlockIq4Xs, BlockQ2K, BlockQ3K, BlockQ4_0, BlockQ4_1, BlockQ4K, BlockQ5_0,
    BlockQ5_1, BlockQ5K, BlockQ6K, BlockQ8_0, BlockQ8_1, BlockQ8K,
};

/// A quantized block format: the block struct, its ggml type, and its
/// scalar reference codec over slices of blocks.
pub trait BlockFormat: Pod + Default + Send + Sync + 'static {
    /// The ggml type stored as these blocks.
    const TYPE: GgmlType;
    /// Elements per block.
    const ELEMS: usize;

    /// Decodes `blocks` into `out`, which must hold `blocks.len() * ELEMS` values.
    fn dequantize_blocks(blocks: &[Self], out: &mut [f32]) -> Result<(), QuantError>;

    /// Encodes `src`, which must hold `out.len() * ELEMS` values, into `out`.
    fn quantize_blocks(src: &[f32], out: &mut [Self]) -> Result<(), QuantError>;
}

fn check_len(what: &'static str, expected: usize, got: usize) -> Result<(), QuantError> {
    if expected == got {
        Ok(())
    } else {
        Err(QuantError::LengthMismatch {
            what,
            expected,
            got,
        })
    }
}

macro_rules! block_format {
    ($($block:ty => $ty:expr, $n:expr;)*) => {$(
        impl BlockFormat for $block {
            const TYPE: GgmlType = $ty;
            const ELEMS: usize = $n;

            fn dequantize_blocks(blocks: &[Self], out: &mut [f32]) -> Result<(), QuantError> {
                check_len("output values", blocks.len() * $n, out.len())?;
                for (block, chunk) in blocks.iter().zip(out.as_chunks_mut::<$n>().0) {
                    block.dequantize(chunk);
                }
                Ok(())
            }

            fn quantize_blocks(src: &[f32], out: &mut [Self]) -> Result<(), QuantError> {
                check_len("source values", out.len() * $n, src.len())?;
                for (block, chunk) in out.iter_mut().zip(src.as_chunks::<$n>().0) {
                    *block = Self::quantize(chunk);
                }
                Ok(())
            }
        }
    )*};
}

block_format! {
    BlockQ4_0 => GgmlType::Q4_0, 32;
    BlockQ4_1 => GgmlType::Q4_1, 32;
    BlockQ5_0 => GgmlType::Q5_0, 32;
    BlockQ5_1 => GgmlType::Q5_1, 32;
    BlockQ8_0 => GgmlType::Q8_0, 32;
    BlockQ8_1 => GgmlType::Q8_1, 32;
    BlockQ2K => GgmlType::Q2K, 256;
    BlockQ3K => GgmlType::Q3K, 256;
    BlockQ4K => GgmlType::Q4K, 256;
    BlockQ5K => GgmlType::Q5K, 256;
    BlockQ6K => GgmlType::Q6K, 256;
    BlockQ8K => GgmlType::Q8K, 256;
    BlockIq4Nl => GgmlType::Iq4Nl, 32;
    BlockIq4Xs => GgmlType::Iq4Xs, 256;
}
