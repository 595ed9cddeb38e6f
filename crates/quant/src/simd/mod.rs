//! Kernels chosen at run time for the CPU found: AVX2 + FMA + F16C on
//! x86-64 when present (AVX-512 where it pays), NEON on aarch64 (with the
//! `dotprod` extension when present), else the portable scalar code of
//! [`crate::dot::reference`].
//!
//! All `unsafe` of the crate's arithmetic lives below this module: loads
//! and stores through pointers derived from fixed-size array references, and
//! calls of `#[target_feature]` functions after the features were detected.
#![allow(unsafe_code)]

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "aarch64")]
mod neon;

use ferrolm_gguf::GgmlType;

use crate::dot::activations::{self, ActOut, ActRow};
use crate::dot::reference;
use crate::interleave::Format;

/// A weight row against one quantized activation row.
pub(crate) type DotQ8Fn = fn(&[u8], ActRow<'_>) -> f32;
/// Consecutive weight rows (`out.len()` rows of `row_bytes` each) against
/// one quantized activation row: `fn(data, row_bytes, act, out)`.
pub(crate) type DotQ8RowsFn = fn(&[u8], usize, ActRow<'_>, &mut [f32]);
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
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// [`Isa::Avx2`] plus AVX-512F, used where the wider registers pay (f32
    /// tiles, and the integer dots of Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K and
    /// Q6_K where AVX-512 VNNI is present too).
    #[cfg(target_arch = "x86_64")]
    Avx512,
    /// aarch64 NEON (part of every aarch64 CPU), integer dots through
    /// widening multiplies.
    #[cfg(target_arch = "aarch64")]
    Neon,
    /// [`Isa::Neon`] with the `dotprod` extension: integer dots through `sdot`.
    #[cfg(target_arch = "aarch64")]
    NeonDotprod,
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
                if std::is_x86_feature_detected!("avx512f") {
                    return Isa::Avx512;
                }
                return Isa::Avx2;
            }
        }
        #[cfg(target_arch = "aarch64")]
        if neon::has_dotprod() {
            return Isa::NeonDotprod;
        }
        Isa::BASELINE
    }
}

impl Isa {
    /// The level every CPU of the target architecture has.
    #[cfg(target_arch = "aarch64")]
    const BASELINE: Isa = Isa::Neon;
    /// The level every CPU of the target architecture has.
    #[cfg(not(target_arch = "aarch64"))]
    const BASELINE: Isa = Isa::Scalar;
}

impl Isa {
    /// Whether the AVX2 kernels may run.
    #[cfg(target_arch = "x86_64")]
    pub(crate) fn has_avx2(self) -> bool {
        self != Isa::Scalar
    }

    /// Every level this CPU runs, for tests that compare them: on aarch64
    /// plain NEON always, so that the kernels without `dotprod` are tested
    /// where it is present too.
    #[cfg(test)]
    pub(crate) fn available() -> Vec<Isa> {
        let best = Isa::detect();
        let mut levels = vec![Isa::Scalar];
        #[cfg(target_arch = "x86_64")]
        {
            if best.has_avx2() {
                levels.push(Isa::Avx2);
            }
            if best == Isa::Avx512 {
                levels.push(Isa::Avx512);
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            levels.push(Isa::Neon);
            if best == Isa::NeonDotprod {
                levels.push(Isa::NeonDotprod);
            }
        }
        let _ = best;
        levels
    }
}

/// The environment variable that caps the kernel set: `scalar`, `avx2`,
/// `avx512` or `neon` (the best this CPU runs when unset), so that any
/// machine can run and time the kernels of a smaller one.
pub const KERNELS_ENV: &str = "FERROLM_CPU_KERNELS";

/// The level [`KERNELS_ENV`] asks for, `Ok(None)` when it is unset, or an
/// error naming the accepted values.
pub fn requested_kernels() -> Result<Option<&'static str>, String> {
    let Some(value) = std::env::var_os(KERNELS_ENV) else {
        return Ok(None);
    };
    match value.to_str().map(str::trim) {
        Some("scalar") => Ok(Some("scalar")),
        Some("avx2") => Ok(Some("avx2")),
        Some("avx512") => Ok(Some("avx512")),
        Some("neon") => Ok(Some("neon")),
        _ => Err(format!(
            "{KERNELS_ENV}={} is not a kernel set: use scalar, avx2, avx512 or neon (or unset it)",
            value.to_string_lossy()
        )),
    }
}

/// The level used by the dispatched entry points, detected once and capped
/// by [`KERNELS_ENV`] (a set this CPU lacks, or an unknown name, leaves the
/// detected one; the command line refuses those with [`requested_kernels`]).
pub(crate) fn isa() -> Isa {
    static ISA: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
    *ISA.get_or_init(|| {
        let detected = Isa::detect();
        match requested_kernels() {
            Ok(Some("scalar")) => Isa::Scalar,
            #[cfg(target_arch = "x86_64")]
            Ok(Some("avx2")) if detected.has_avx2() => Isa::Avx2,
            #[cfg(target_arch = "aarch64")]
            Ok(Some("neon")) => Isa::Neon,
            _ => detected,
        }
    })
}

/// The name of the kernel set the dispatched entry points use on this CPU: `"avx512-vnni"`,
/// `"avx512"` (f32 tiles only; the integer dots stay AVX2), `"avx2"`, `"neon-dotprod"`,
/// `"neon"` or `"scalar"`. The aarch64 `i8mm` extension has no kernels (see `neon`), so
/// it is not named.
pub fn kernel_set() -> &'static str {
    match isa() {
        Isa::Scalar => "scalar",
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => "avx2",
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 if has_vnni() => "avx512-vnni",
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => "avx512",
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => "neon",
        #[cfg(target_arch = "aarch64")]
        Isa::NeonDotprod => "neon-dotprod",
    }
}

/// Whether the AVX-512 VNNI integer kernels may run, detected once.
#[cfg(target_arch = "x86_64")]
fn has_vnni() -> bool {
    static VNNI: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *VNNI.get_or_init(avx512::has_vnni)
}

/// The quantized-activation dot product for weights of `ty` at level `isa`,
/// or `None` when `ty` has none.
pub(crate) fn dot_q8_kernel(ty: GgmlType, isa: Isa) -> Option<DotQ8Fn> {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 && has_vnni() {
        let f: Option<DotQ8Fn> = match ty {
            GgmlType::Q4_0 => Some(avx512::dot_q4_0),
            GgmlType::Q4_1 => Some(avx512::dot_q4_1),
            GgmlType::Q5_0 => Some(avx512::dot_q5_0),
            GgmlType::Q5_1 => Some(avx512::dot_q5_1),
            GgmlType::Q8_0 => Some(avx512::dot_q8_0),
            GgmlType::Q4K => Some(avx512::dot_q4_k),
            GgmlType::Q6K => Some(avx512::dot_q6_k),
            _ => None,
        };
        if f.is_some() {
            return f;
        }
    }
    #[cfg(target_arch = "x86_64")]
    if isa.has_avx2() {
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
    #[cfg(target_arch = "aarch64")]
    if let Some(f) = neon_dot_q8_kernel(ty, isa) {
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

/// The NEON kernel of `ty`, with `sdot` at [`Isa::NeonDotprod`].
#[cfg(target_arch = "aarch64")]
fn neon_dot_q8_kernel(ty: GgmlType, isa: Isa) -> Option<DotQ8Fn> {
    let dp = isa == Isa::NeonDotprod;
    let pick = |plain: DotQ8Fn, dotprod: DotQ8Fn| Some(if dp { dotprod } else { plain });
    match (isa, ty) {
        (Isa::Scalar, _) => None,
        (_, GgmlType::Q4_0) => pick(neon::dot_q4_0, neon::dot_q4_0_dp),
        (_, GgmlType::Q4_1) => pick(neon::dot_q4_1, neon::dot_q4_1_dp),
        (_, GgmlType::Q5_0) => pick(neon::dot_q5_0, neon::dot_q5_0_dp),
        (_, GgmlType::Q5_1) => pick(neon::dot_q5_1, neon::dot_q5_1_dp),
        (_, GgmlType::Q8_0) => pick(neon::dot_q8_0, neon::dot_q8_0_dp),
        (_, GgmlType::Iq4Nl) => pick(neon::dot_iq4_nl, neon::dot_iq4_nl_dp),
        (_, GgmlType::Q2K) => pick(neon::dot_q2_k, neon::dot_q2_k_dp),
        (_, GgmlType::Q3K) => pick(neon::dot_q3_k, neon::dot_q3_k_dp),
        (_, GgmlType::Q4K) => pick(neon::dot_q4_k, neon::dot_q4_k_dp),
        (_, GgmlType::Q5K) => pick(neon::dot_q5_k, neon::dot_q5_k_dp),
        (_, GgmlType::Q6K) => pick(neon::dot_q6_k, neon::dot_q6_k_dp),
        (_, GgmlType::Iq4Xs) => pick(neon::dot_iq4_xs, neon::dot_iq4_xs_dp),
        _ => None,
    }
}

/// The NEON multi-row kernel of `ty`, with `sdot` at [`Isa::NeonDotprod`].
#[cfg(target_arch = "aarch64")]
fn neon_dot_q8_rows_kernel(ty: GgmlType, isa: Isa) -> Option<DotQ8RowsFn> {
    let dp = isa == Isa::NeonDotprod;
    let pick = |plain: DotQ8RowsFn, dotprod: DotQ8RowsFn| Some(if dp { dotprod } else { plain });
    match (isa, ty) {
        (Isa::Scalar, _) => None,
        (_, GgmlType::Q4_0) => pick(neon::dot_q4_0_rows, neon::dot_q4_0_rows_dp),
        (_, GgmlType::Q4_1) => pick(neon::dot_q4_1_rows, neon::dot_q4_1_rows_dp),
        (_, GgmlType::Q5_0) => pick(neon::dot_q5_0_rows, neon::dot_q5_0_rows_dp),
        (_, GgmlType::Q5_1) => pick(neon::dot_q5_1_rows, neon::dot_q5_1_rows_dp),
        (_, GgmlType::Q8_0) => pick(neon::dot_q8_0_rows, neon::dot_q8_0_rows_dp),
        (_, GgmlType::Iq4Nl) => pick(neon::dot_iq4_nl_rows, neon::dot_iq4_nl_rows_dp),
        (_, GgmlType::Q2K) => pick(neon::dot_q2_k_rows, neon::dot_q2_k_rows_dp),
        (_, GgmlType::Q3K) => pick(neon::dot_q3_k_rows, neon::dot_q3_k_rows_dp),
        (_, GgmlType::Q4K) => pick(neon::dot_q4_k_rows, neon::dot_q4_k_rows_dp),
        (_, GgmlType::Q5K) => pick(neon::dot_q5_k_rows, neon::dot_q5_k_rows_dp),
        (_, GgmlType::Q6K) => pick(neon::dot_q6_k_rows, neon::dot_q6_k_rows_dp),
        (_, GgmlType::Iq4Xs) => pick(neon::dot_iq4_xs_rows, neon::dot_iq4_xs_rows_dp),
        _ => None,
    }
}

/// A kernel that multiplies several weight rows of `ty` per call (sharing
/// activation loads between them), where level `isa` has one; each row's
/// result does not depend on how many rows a call takes.
pub(crate) fn dot_q8_rows_kernel(ty: GgmlType, isa: Isa) -> Option<DotQ8RowsFn> {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 && has_vnni() {
        return match ty {
            GgmlType::Q4_0 => Some(avx512::dot_q4_0_rows),
            GgmlType::Q4_1 => Some(avx512::dot_q4_1_rows),
            GgmlType::Q5_0 => Some(avx512::dot_q5_0_rows),
            GgmlType::Q5_1 => Some(avx512::dot_q5_1_rows),
            GgmlType::Q8_0 => Some(avx512::dot_q8_0_rows),
            GgmlType::Q4K => Some(avx512::dot_q4_k_rows),
            GgmlType::Q6K => Some(avx512::dot_q6_k_rows),
            _ => None,
        };
    }
    #[cfg(target_arch = "aarch64")]
    if isa != Isa::Scalar {
        return neon_dot_q8_rows_kernel(ty, isa);
    }
    let _ = (ty, isa);
    None
}

/// Groups of eight interleaved rows against one quantized activation row:
/// `fn(data, group_len, act, out)`, `out.len() / 8` groups of `group_len`
/// bytes (see [`crate::interleave`]).
pub(crate) type InterleavedFn = fn(&[u8], usize, ActRow<'_>, &mut [f32]);

/// The interleaved-rows kernel of `format` at level `isa`, where that level
/// gains from the layout: AVX2 (and AVX-512 without VNNI, whose integer
/// dots are AVX2's). AVX-512 VNNI keeps its four-row kernels over the GGUF
/// layout, and scalar code gains nothing from a copy.
pub(crate) fn interleaved_kernel(format: Format, isa: Isa) -> Option<InterleavedFn> {
    #[cfg(target_arch = "x86_64")]
    if isa.has_avx2() && !(isa == Isa::Avx512 && has_vnni()) {
        return Some(match format {
            Format::Q4_0 => avx2::groups_q4_0,
            Format::Q4_1 => avx2::groups_q4_1,
            Format::Q5_0 => avx2::groups_q5_0,
            Format::Q5_1 => avx2::groups_q5_1,
            Format::Q8_0 => avx2::groups_q8_0,
            Format::Iq4Nl => avx2::groups_iq4_nl,
            Format::Q4K => avx2::groups_q4_k,
            Format::Q6K => avx2::groups_q6_k,
        });
    }
    let _ = (format, isa);
    None
}

/// The f32-activation dot product for a float weight type, or `None` for
/// quantized types (those go through a [`Dequantizer`]).
pub(crate) fn dot_f32_kernel(ty: GgmlType, isa: Isa) -> Option<DotF32Fn> {
    #[cfg(target_arch = "x86_64")]
    if isa.has_avx2() {
        let f: DotF32Fn = match ty {
            GgmlType::F32 => avx2::dot_f32_bytes,
            GgmlType::F16 => avx2::dot_f16,
            GgmlType::Bf16 => avx2::dot_bf16,
            _ => return None,
        };
        return Some(f);
    }
    #[cfg(target_arch = "aarch64")]
    if isa != Isa::Scalar {
        let f: DotF32Fn = match ty {
            GgmlType::F32 => neon::dot_f32_bytes,
            GgmlType::F16 => neon::dot_f16,
            GgmlType::Bf16 => neon::dot_bf16,
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
    if isa.has_avx2() {
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
    #[cfg(target_arch = "aarch64")]
    if isa != Isa::Scalar {
        return match ty {
            GgmlType::F16 => Some(neon::dequant_f16),
            GgmlType::Bf16 => Some(neon::dequant_bf16),
            GgmlType::Q4_0 => Some(neon::dequant_q4_0),
            GgmlType::Q4_1 => Some(neon::dequant_q4_1),
            GgmlType::Q5_0 => Some(neon::dequant_q5_0),
            GgmlType::Q5_1 => Some(neon::dequant_q5_1),
            GgmlType::Q8_0 => Some(neon::dequant_q8_0),
            GgmlType::Iq4Nl => Some(neon::dequant_iq4_nl),
            GgmlType::Q2K => Some(neon::dequant_q2_k),
            GgmlType::Q3K => Some(neon::dequant_q3_k),
            GgmlType::Q4K => Some(neon::dequant_q4_k),
            GgmlType::Q5K => Some(neon::dequant_q5_k),
            GgmlType::Q6K => Some(neon::dequant_q6_k),
            GgmlType::Iq4Xs => Some(neon::dequant_iq4_xs),
            _ => None,
        };
    }
    let _ = (ty, isa);
    None
}

/// Quantizes activation rows (see [`crate::dot::activations`]) at the detected level.
pub(crate) fn quantize_activations(x: &[f32], out: ActOut<'_>) {
    quantize_activations_with(isa(), x, out);
}

/// Quantizes activation rows at level `isa`; bit-identical across levels for finite input.
pub(crate) fn quantize_activations_with(isa: Isa, x: &[f32], out: ActOut<'_>) {
    #[cfg(target_arch = "x86_64")]
    if isa.has_avx2() {
        avx2::quantize_activations(x, out);
        return;
    }
    #[cfg(target_arch = "aarch64")]
    if isa != Isa::Scalar {
        neon::quantize_activations(x, out);
        return;
    }
    let _ = isa;
    activations::quantize_reference(x, out);
}

/// Dot product of two f32 slices at the detected level.
pub(crate) fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if isa().has_avx2() {
        return avx2::dot_f32(a, b);
    }
    #[cfg(target_arch = "aarch64")]
    if isa() != Isa::Scalar {
        return neon::dot_f32(a, b);
    }
    a.iter().zip(b).map(|(a, b)| a * b).sum()
}

/// The f32 matrix-multiply micro-kernel of a level: `wrows` weight rows
/// against `lanes` activation rows packed k-major (`xp[k * lanes + l]`),
/// as an outer-product update, so no horizontal sums are needed.
#[derive(Clone, Copy, Debug)]
pub(crate) struct F32Gemm {
    /// Activation rows per call, packed side by side.
    pub(crate) lanes: usize,
    /// Weight rows per call.
    pub(crate) wrows: usize,
    kernel: fn(&[f32], &[f32], usize, &mut [f32]),
}

impl F32Gemm {
    /// The kernel of level `isa`.
    pub(crate) fn new(isa: Isa) -> Self {
        #[cfg(target_arch = "x86_64")]
        match isa {
            Isa::Avx512 => {
                return Self {
                    lanes: avx512::GEMM_LANES,
                    wrows: avx512::GEMM_WROWS,
                    kernel: avx512::gemm_f32,
                };
            }
            Isa::Avx2 => {
                return Self {
                    lanes: avx2::GEMM_LANES,
                    wrows: avx2::GEMM_WROWS,
                    kernel: avx2::gemm_f32,
                };
            }
            Isa::Scalar => {}
        }
        #[cfg(target_arch = "aarch64")]
        if isa != Isa::Scalar {
            return Self {
                lanes: neon::GEMM_LANES,
                wrows: neon::GEMM_WROWS,
                kernel: neon::gemm_f32,
            };
        }
        let _ = isa;
        Self {
            lanes: 4,
            wrows: 4,
            kernel: gemm_f32_scalar,
        }
    }

    /// `out[j * lanes + l] = Σ_k w[j * cols + k] · xp[k * lanes + l]` for
    /// `j < wrows`, `l < lanes`; the slices must hold at least that much.
    pub(crate) fn run(&self, xp: &[f32], w: &[f32], cols: usize, out: &mut [f32]) {
        (self.kernel)(xp, w, cols, out);
    }
}

fn gemm_f32_scalar(xp: &[f32], w: &[f32], cols: usize, out: &mut [f32]) {
    let (lanes, wrows) = (4, 4);
    for j in 0..wrows {
        for l in 0..lanes {
            out[j * lanes + l] = (0..cols).map(|k| w[j * cols + k] * xp[k * lanes + l]).sum();
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::{F32Gemm, Isa};

    #[test]
    fn f32_gemm_kernels_match_plain_sums_at_every_level() {
        let mut rng = ChaCha8Rng::seed_from_u64(21);
        for isa in Isa::available() {
            let g = F32Gemm::new(isa);
            for cols in [1, 7, 64, 300] {
                let xp: Vec<f32> = (0..cols * g.lanes)
                    .map(|_| rng.random_range(-1.0..1.0))
                    .collect();
                let w: Vec<f32> = (0..g.wrows * cols)
                    .map(|_| rng.random_range(-1.0..1.0))
                    .collect();
                let mut out = vec![f32::NAN; g.wrows * g.lanes + 1];
                g.run(&xp, &w, cols, &mut out);
                for j in 0..g.wrows {
                    for l in 0..g.lanes {
                        let exact: f64 = (0..cols)
                            .map(|k| f64::from(w[j * cols + k]) * f64::from(xp[k * g.lanes + l]))
                            .sum();
                        let got = f64::from(out[j * g.lanes + l]);
                        assert!(
                            (got - exact).abs() < 1e-5 * cols as f64,
                            "{isa:?} cols {cols} [{j},{l}]: {got} vs {exact}"
                        );
                    }
                }
                assert!(
                    out[g.wrows * g.lanes].is_nan(),
                    "{isa:?}: wrote past the tile"
                );
            }
        }
    }
}
