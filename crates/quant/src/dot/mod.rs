//! Dot products of one weight row with activations: against 8-bit
//! [`QuantizedActivations`] (integer arithmetic, the fast path) or against
//! f32 values (weights decoded on the fly, the exact path).
//!
//! The functions here pick the fastest kernel this CPU runs (AVX2 when
//! detected on x86-64, NEON on aarch64); [`reference`](mod@reference) holds the scalar
//! versions they are tested against.
//!
//! ```
//! use ferrolm_quant::dot::{dot_f32, dot_quantized, QuantizedActivations};
//! use ferrolm_quant::{quantize_row, row_size, GgmlType};
//!
//! # fn main() -> Result<(), ferrolm_quant::QuantError> {
//! let w: Vec<f32> = (0..64).map(|i| (i as f32 * 0.1).cos()).collect();
//! let x: Vec<f32> = (0..64).map(|i| (i as f32 * 0.3).sin()).collect();
//! let mut row = vec![0u8; row_size(GgmlType::Q8_0, 64)?];
//! quantize_row(GgmlType::Q8_0, &w, &mut row)?;
//! let mut acts = QuantizedActivations::new();
//! acts.quantize(&x, 64)?;
//! let exact: f32 = w.iter().zip(&x).map(|(a, b)| a * b).sum();
//! let fast = dot_quantized(GgmlType::Q8_0, &row, acts.row(0).unwrap())?;
//! let decoded = dot_f32(GgmlType::Q8_0, &row, &x)?;
//! assert!((fast - exact).abs() < 0.05 && (decoded - exact).abs() < 0.05);
//! # Ok(()) }
//! ```

pub mod activations;
pub mod reference;
#[cfg(test)]
pub(crate) mod tests;

pub use activations::{ACT_BLOCK, ActRow, Planes, QuantizedActivations};

use ferrolm_gguf::GgmlType;

use crate::QuantError;
use crate::simd::{self, Dequantizer, DotF32Fn, DotQ8Fn, Isa};

/// Whether weights of `ty` have an integer dot product against [`QuantizedActivations`].
pub fn supports_quantized(ty: GgmlType) -> bool {
    simd::dot_q8_kernel(ty, Isa::Scalar).is_some()
}

/// Whether weights of `ty` have a dot product against f32 values.
pub fn supports_f32(ty: GgmlType) -> bool {
    F32Dot::new(ty, Isa::Scalar).is_some()
}

fn check_row(ty: GgmlType, row: &[u8], elements: usize) -> Result<(), QuantError> {
    let expected = crate::row_size(ty, elements)?;
    if row.len() != expected {
        return Err(QuantError::ByteLength {
            ty,
            elements,
            expected,
            got: row.len(),
        });
    }
    Ok(())
}

/// Dot product of a weight row of `ty` with one quantized activation row of
/// the same length.
pub fn dot_quantized(ty: GgmlType, row: &[u8], act: ActRow<'_>) -> Result<f32, QuantError> {
    dot_quantized_with(simd::isa(), ty, row, act)
}

pub(crate) fn dot_quantized_with(
    isa: Isa,
    ty: GgmlType,
    row: &[u8],
    act: ActRow<'_>,
) -> Result<f32, QuantError> {
    let kernel = simd::dot_q8_kernel(ty, isa).ok_or(QuantError::Unsupported {
        ty,
        op: "dot product with quantized activations",
    })?;
    check_row(ty, row, act.len())?;
    Ok(kernel(row, act))
}

/// Dot product of a weight row of `ty` with f32 values: float weights
/// directly, quantized weights decoded exactly and multiplied in f32.
pub fn dot_f32(ty: GgmlType, row: &[u8], x: &[f32]) -> Result<f32, QuantError> {
    let dot = F32Dot::new(ty, simd::isa()).ok_or(QuantError::Unsupported {
        ty,
        op: "dot product with f32 activations",
    })?;
    check_row(ty, row, x.len())?;
    Ok(dot.dot(row, x))
}

/// Values decoded at a time on the f32 path: a multiple of every block size,
/// small enough to stay in L1.
pub(crate) const F32_CHUNK: usize = 256;

/// The f32-activation dot product of one weight type.
#[derive(Clone, Copy, Debug)]
pub(crate) enum F32Dot {
    /// Float weights, multiplied as they are.
    Direct(DotF32Fn),
    /// Quantized weights, decoded a chunk at a time.
    Decoded {
        dequant: Dequantizer,
        /// Bytes of [`F32_CHUNK`] values.
        chunk_bytes: usize,
        /// Bytes per value block and values per block.
        block: (usize, usize),
    },
}

impl F32Dot {
    pub(crate) fn new(ty: GgmlType, isa: Isa) -> Option<Self> {
        if let Some(f) = simd::dot_f32_kernel(ty, isa) {
            return Some(F32Dot::Direct(f));
        }
        if !ty.is_quantized() || ty == GgmlType::Q8K {
            return None;
        }
        let (elems, bytes) = crate::block_layout(ty)?;
        Some(F32Dot::Decoded {
            dequant: Dequantizer::new(ty, isa)?,
            chunk_bytes: F32_CHUNK / elems * bytes,
            block: (bytes, elems),
        })
    }

    /// `row · x`; the caller guarantees that `row` holds `x.len()` values.
    pub(crate) fn dot(&self, row: &[u8], x: &[f32]) -> f32 {
        match *self {
            F32Dot::Direct(f) => f(row, x),
            F32Dot::Decoded {
                dequant,
                chunk_bytes,
                block: (bytes, elems),
            } => {
                let mut buf = [0.0f32; F32_CHUNK];
                let mut sum = 0.0f32;
                for (w, x) in row.chunks(chunk_bytes).zip(x.chunks(F32_CHUNK)) {
                    let n = w.len() / bytes * elems;
                    dequant.run(w, &mut buf[..n]);
                    sum += simd::dot_f32(&buf[..n], x);
                }
                sum
            }
        }
    }
}

/// The quantized-activation kernel of `ty`, if any.
pub(crate) fn q8_kernel(ty: GgmlType, isa: Isa) -> Option<DotQ8Fn> {
    simd::dot_q8_kernel(ty, isa)
}
