//! Kernels chosen at run time for the CPU found: AVX2 + FMA + F16C on
//! x86-64 when present, else the portable scalar code of [`crate::dot::reference`].
//!
//! All `unsafe` of the crate's arithmetic lives below this module: loads
//! and stores through pointers derived from fixed-size array references, and
//! calls of `#[target_feature]` functions after the features were detected.
#![allow(unsafe_code)]

#[cfg(target_arch = "x86_64")]
mod avx2;

use ferrolm_gguf::GgmlType;

use crate::dot::activations::{self, ActRow};
use crate::dot::reference;

/// A weight row against one quantized activation row.
pub(crate) type DotQ8Fn = fn(&[u8], ActRow<'_>) -> f32;
/// A weight row of a float type (raw bytes) against f32 values.
pub(crate) type DotF32Fn = fn(&[u8], &[f32]) -> f32;
/// A SIMD decoder of a weight row to f32.
type DequantFn = fn(&[u8], &mut [f32]);

/// An instruction-set level with its own kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Isa {
    /// Plain Rust, any CPU.
    Scalar,
    /// x86-64 with AVX2, FMA and F16C.
    Avx2,
}

impl Isa {
    /// The best level this CPU supports.
    pub(crate) fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx2")
                && std::is_x86_feature_detected!("fma")
                && std::is_x86_feature_detected!("f16c")
            {
                return Isa::Avx2;
            }
        }
        Isa::Scalar
    }
}

/// The level used by the dispatched entry points, detected once.
pub(crate) fn isa() -> Isa {
    static ISA: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
    *ISA.get_or_init(Isa::detect)
}

/// The quantized-activation dot product for weights of `ty` at level `isa`,
/// or `None` when `ty` has none.
pub(crate) fn dot_q8_kernel(ty: GgmlType, isa: Isa) -> Option<DotQ8Fn> {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx2 {
        let f: DotQ8Fn = match ty {
            GgmlType::Q4_0 => avx2::dot_q4_0,
            GgmlType::Q4_1 => avx2::dot_q4_1,
            GgmlType::Q5_0 => avx2::dot_q5_0,
            GgmlType::Q5_1 => avx2::dot_q5_1,
            GgmlType::Q8_0 => avx2::dot_q8_0,
            GgmlType::Iq4Nl => avx2::dot_iq4_nl,
            GgmlType::Q2K => avx2::dot_q2_k,
            GgmlType::Q3K => avx2::dot_q3_k,
            GgmlType::Q4K => avx2::dot_q4_k,
            GgmlType::Q5K => avx2::dot_q5_k,
            GgmlType::Q6K => avx2::dot_q6_k,
            GgmlType::Iq4Xs => avx2::dot_iq4_xs,
            _ => return None,
        };
        return Some(f);
    }
    let _ = isa;
    let f: DotQ8Fn = match ty {
        GgmlType::Q4_0 => reference::q4_0,
        GgmlType::Q4_1 => reference::q4_1,
        GgmlType::Q5_0 => reference::q5_0,
        GgmlType::Q5_1 => reference::q5_1,
        GgmlType::Q8_0 => reference::q8_0,
        GgmlType::Iq4Nl => reference::iq4_nl,
        GgmlType::Q2K => reference::q2_k,
        GgmlType::Q3K => reference::q3_k,
        GgmlType::Q4K => reference::q4_k,
        GgmlType::Q5K => reference::q5_k,
        GgmlType::Q6K => reference::q6_k,
        GgmlType::Iq4Xs => reference::iq4_xs,
        _ => return None,
    };
    Some(f)
}

/// The f32-activation dot product for a float weight type, or `None` for
/// quantized types (those go through [`dequant_kernel`]).
pub(crate) fn dot_f32_kernel(ty: GgmlType, isa: Isa) -> Option<DotF32Fn> {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx2 {
        let f: DotF32Fn = match ty {
            GgmlType::F32 => avx2::dot_f32_bytes,
            GgmlType::F16 => avx2::dot_f16,
            GgmlType::Bf16 => avx2::dot_bf16,
            _ => return None,
        };
        return Some(f);
    }
    let _ = isa;
    let f: DotF32Fn = match ty {
        GgmlType::F32 => reference::f32_f32,
        GgmlType::F16 => reference::f16_f32,
        GgmlType::Bf16 => reference::bf16_f32,
        _ => return None,
    };
    Some(f)
}

/// Decodes rows of one weight type to f32, with the SIMD decoder of the
/// chosen level where there is one (bit-identical to the scalar decoder).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Dequantizer {
    ty: GgmlType,
    simd: Option<DequantFn>,
}

impl Dequantizer {
    /// The decoder for `ty` at level `isa`, or `None` for types the crate cannot decode.
    pub(crate) fn new(ty: GgmlType, isa: Isa) -> Option<Self> {
        if !crate::can_dequantize(ty) {
            return None;
        }
        Some(Self {
            ty,
            simd: simd_dequant(ty, isa),
        })
    }

    /// Decodes `row` into `out`; the caller guarantees that `row` holds
    /// exactly `out.len()` elements.
    pub(crate) fn run(&self, row: &[u8], out: &mut [f32]) {
        match self.simd {
            Some(f) => f(row, out),
            None => dequantize_fallback(self.ty, row, out),
        }
    }
}

/// The scalar decoder, for the few rows the SIMD ones do not take.
pub(crate) fn dequantize_fallback(ty: GgmlType, row: &[u8], out: &mut [f32]) {
    let decoded = crate::dequantize_row(ty, row, out);
    debug_assert!(decoded.is_ok(), "{decoded:?}");
}

fn simd_dequant(ty: GgmlType, isa: Isa) -> Option<DequantFn> {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx2 {
        return match ty {
            GgmlType::F16 => Some(avx2::dequant_f16),
            GgmlType::Bf16 => Some(avx2::dequant_bf16),
            GgmlType::Q4_0 => Some(avx2::dequant_q4_0),
            GgmlType::Q4_1 => Some(avx2::dequant_q4_1),
            GgmlType::Q5_0 => Some(avx2::dequant_q5_0),
            GgmlType::Q5_1 => Some(avx2::dequant_q5_1),
            GgmlType::Q8_0 => Some(avx2::dequant_q8_0),
            GgmlType::Iq4Nl => Some(avx2::dequant_iq4_nl),
            GgmlType::Q2K => Some(avx2::dequant_q2_k),
            GgmlType::Q3K => Some(avx2::dequant_q3_k),
            GgmlType::Q4K => Some(avx2::dequant_q4_k),
            GgmlType::Q5K => Some(avx2::dequant_q5_k),
            GgmlType::Q6K => Some(avx2::dequant_q6_k),
            GgmlType::Iq4Xs => Some(avx2::dequant_iq4_xs),
            _ => None,
        };
    }
    let _ = (ty, isa);
    None
}

/// Quantizes activation rows (see [`crate::dot::activations`]) at the detected level.
pub(crate) fn quantize_activations(
    x: &[f32],
    qs: &mut [i8],
    d: &mut [f32],
    dsum: &mut [f32],
    sums16: &mut [i16],
) {
    quantize_activations_with(isa(), x, qs, d, dsum, sums16);
}

/// Quantizes activation rows at level `isa`; bit-identical across levels for finite input.
pub(crate) fn quantize_activations_with(
    isa: Isa,
    x: &[f32],
    qs: &mut [i8],
    d: &mut [f32],
    dsum: &mut [f32],
    sums16: &mut [i16],
) {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx2 {
        avx2::quantize_activations(x, qs, d, dsum, sums16);
        return;
    }
    let _ = isa;
    activations::quantize_reference(x, qs, d, dsum, sums16);
}

/// Dot product of two f32 slices at the detected level.
pub(crate) fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if isa() == Isa::Avx2 {
        return avx2::dot_f32(a, b);
    }
    a.iter().zip(b).map(|(a, b)| a * b).sum()
}

/// Rows of activations per f32 micro-tile.
pub(crate) const TILE_X: usize = 3;
/// Weight rows per f32 micro-tile.
pub(crate) const TILE_W: usize = 4;

/// The `TILE_X × TILE_W` dot products of three activation rows with four
/// weight rows (all of one length), at the detected level.
pub(crate) fn dots_f32_tile(x: [&[f32]; TILE_X], w: [&[f32]; TILE_W]) -> [[f32; TILE_W]; TILE_X] {
    #[cfg(target_arch = "x86_64")]
    if isa() == Isa::Avx2 {
        return avx2::dots_f32_tile(x, w);
    }
    x.map(|x| w.map(|w| x.iter().zip(w).map(|(a, b)| a * b).sum()))
}
