//! aarch64 NEON kernels. NEON is part of every aarch64 CPU; the integer dot
//! products come in two builds, told apart by the const parameter `DP`:
//! with the `dotprod` extension (`sdot`, reached only through
//! [`super::Isa::NeonDotprod`], handed out after run-time detection) and
//! without it (`smull`/`smlal2` and a pairwise widening add).
//!
//! `sdot` is written as assembly (its intrinsic is not stable yet) that
//! enables the extension for itself, so it is inlined into every kernel
//! whatever the compiler's inlining budget; the kernels built with `DP` are
//! instantiated only inside functions that enable `dotprod`.
//!
//! The i8mm extension (`smmla`: a 2×8 by 8×2 product, 32 multiplies into
//! four sums) is not used: against one activation row two of its four sums
//! are of no use, which leaves the 16 useful multiplies of one `sdot`. It
//! would pay with two activation rows per call, and the row kernels here
//! (`crate::simd::DotQ8RowsFn`) take one, shared by several weight rows.

#![allow(clippy::wildcard_imports)]

use std::arch::aarch64::*;
use std::arch::asm;

use bytemuck::Pod;

use crate::dot::activations::{ACT_BLOCK, ActOut, ActRow, RESIDUAL_STEPS};

mod kquants;
mod legacy;

pub(super) use kquants::*;
pub(super) use legacy::*;

/// Views a row as blocks, or `None` when it is not 2-byte aligned.
fn cast<B: Pod>(row: &[u8]) -> Option<&[B]> {
    bytemuck::try_cast_slice(row).ok()
}

/// Weight rows per step of the multi-row kernels: they share each
/// activation load.
const KERNEL_ROWS: usize = 4;

/// One kernel over `R` rows of blocks `B` against one activation row,
/// writing `R` results; unsafe because it may need `dotprod`.
type RowsFn<B, const R: usize> = unsafe fn([&[B]; R], ActRow<'_>, &mut [f32]);

/// The instantiations of one multi-row kernel at one level: one row and
/// [`KERNEL_ROWS`] rows, each for one and for two activation planes.
struct RowKernels<B: 'static> {
    one: [RowsFn<B, 1>; 2],
    four: [RowsFn<B, KERNEL_ROWS>; 2],
}

/// Consecutive rows (`out.len()` of `row_bytes` each, in `data`) through
/// `k`, four at a time; the scalar `reference` where the rows are not
/// block-aligned. Each row's result is the same whatever the group size.
///
/// # Safety
/// The kernels of `k` must be runnable on this CPU (checked by the caller's
/// level, see `crate::simd::Isa`).
unsafe fn run_rows<B: Pod>(
    data: &[u8],
    row_bytes: usize,
    act: ActRow<'_>,
    out: &mut [f32],
    k: &RowKernels<B>,
    reference: fn(&[u8], ActRow<'_>) -> f32,
) {
    let plane = usize::from(!act.qs2.is_empty());
    let per_row = row_bytes / size_of::<B>();
    let blocks = match cast::<B>(data) {
        Some(blocks) if per_row > 0 && row_bytes.is_multiple_of(size_of::<B>()) => blocks,
        _ => {
            for (y, row) in out.iter_mut().zip(data.chunks_exact(row_bytes.max(1))) {
                *y = reference(row, act);
            }
            return;
        }
    };
    let mut rows = blocks.chunks_exact(per_row);
    for ys in out.chunks_mut(KERNEL_ROWS) {
        if ys.len() == KERNEL_ROWS {
            let group: [&[B]; KERNEL_ROWS] = std::array::from_fn(|_| rows.next().unwrap_or(&[]));
            // SAFETY: the caller vouches for the level of `k`.
            unsafe { (k.four[plane])(group, act, ys) };
        } else {
            for y in ys.chunks_mut(1) {
                // SAFETY: as above.
                unsafe { (k.one[plane])([rows.next().unwrap_or(&[])], act, y) };
            }
        }
    }
}

/// Generates, for a multi-row kernel `$imp::<R, DP, TWO>` over blocks
/// `$block`, the safe entry points of one row and of consecutive rows, for
/// plain NEON and for NEON with `dotprod`.
macro_rules! row_entry_points {
    ($block:ty, $imp:ident, $reference:path =>
        $row:ident, $rows:ident, $row_dp:ident, $rows_dp:ident) => {
        pub(in crate::simd) fn $row(row: &[u8], act: ActRow<'_>) -> f32 {
            let mut out = [0.0];
            $rows(row, row.len(), act, &mut out);
            out[0]
        }

        pub(in crate::simd) fn $row_dp(row: &[u8], act: ActRow<'_>) -> f32 {
            let mut out = [0.0];
            $rows_dp(row, row.len(), act, &mut out);
            out[0]
        }

        pub(in crate::simd) fn $rows(
            data: &[u8],
            row_bytes: usize,
            act: ActRow<'_>,
            out: &mut [f32],
        ) {
            #[target_feature(enable = "neon")]
            fn plain<const R: usize, const TWO: bool>(
                rows: [&[$block]; R],
                act: ActRow<'_>,
                out: &mut [f32],
            ) {
                $imp::<R, false, TWO>(rows, act, out);
            }
            const KERNELS: super::RowKernels<$block> = super::RowKernels {
                one: [plain::<1, false>, plain::<1, true>],
                four: [plain::<4, false>, plain::<4, true>],
            };
            // SAFETY: NEON is part of every aarch64 CPU.
            unsafe { super::run_rows(data, row_bytes, act, out, &KERNELS, $reference) };
        }

        pub(in crate::simd) fn $rows_dp(
            data: &[u8],
            row_bytes: usize,
            act: ActRow<'_>,
            out: &mut [f32],
        ) {
            #[target_feature(enable = "neon,dotprod")]
            fn dotprod<const R: usize, const TWO: bool>(
                rows: [&[$block]; R],
                act: ActRow<'_>,
                out: &mut [f32],
            ) {
                $imp::<R, true, TWO>(rows, act, out);
            }
            const KERNELS: super::RowKernels<$block> = super::RowKernels {
                one: [dotprod::<1, false>, dotprod::<1, true>],
                four: [dotprod::<4, false>, dotprod::<4, true>],
            };
            // SAFETY: only reached through `Isa::NeonDotprod`, handed out
            // after `dotprod` was detected (see `crate::simd::Isa`).
            unsafe { super::run_rows(data, row_bytes, act, out, &KERNELS, $reference) };
        }
    };
}

/// A safe entry point for a dequantization kernel over blocks of `$block`,
/// falling back to the scalar reference for unaligned rows.
macro_rules! safe_dequant {
    ($name:ident, $imp:ident, $block:ty, $ty:expr) => {
        pub(in crate::simd) fn $name(row: &[u8], out: &mut [f32]) {
            match super::cast::<$block>(row) {
                // SAFETY: NEON is part of every aarch64 CPU.
                Some(blocks) => unsafe { $imp(blocks, out) },
                None => crate::simd::dequantize_fallback($ty, row, out),
            }
        }
    };
}

use {row_entry_points, safe_dequant};

/// Whether the `dotprod` extension (`sdot`) is present.
pub(super) fn has_dotprod() -> bool {
    std::arch::is_aarch64_feature_detected!("dotprod")
}

#[target_feature(enable = "neon")]
#[inline]
fn load_u8x16(b: &[u8; 16]) -> uint8x16_t {
    // SAFETY: `b` is 16 readable bytes; the load has no alignment requirement.
    unsafe { vld1q_u8(b.as_ptr()) }
}

/// The two halves of 32 bytes.
#[target_feature(enable = "neon")]
#[inline]
fn load_u8x32(b: &[u8; 32]) -> [uint8x16_t; 2] {
    let (h, _) = b.as_chunks::<16>();
    [load_u8x16(&h[0]), load_u8x16(&h[1])]
}

/// The two halves of 32 signed bytes.
#[target_feature(enable = "neon")]
#[inline]
fn load_i8x32(b: &[i8; 32]) -> [int8x16_t; 2] {
    // SAFETY: `b` is 32 readable bytes; the loads have no alignment requirement.
    unsafe { [vld1q_s8(b.as_ptr()), vld1q_s8(b.as_ptr().add(16))] }
}

#[target_feature(enable = "neon")]
#[inline]
fn load_f32x4(v: &[f32; 4]) -> float32x4_t {
    // SAFETY: `v` is 4 readable floats; the load has no alignment requirement.
    unsafe { vld1q_f32(v.as_ptr()) }
}

#[target_feature(enable = "neon")]
#[inline]
fn store_f32x4(out: &mut [f32; 4], v: float32x4_t) {
    // SAFETY: `out` is 4 writable floats; the store has no alignment requirement.
    unsafe { vst1q_f32(out.as_mut_ptr(), v) }
}

/// An f16 value as f32 (`fcvt`, exact; part of the base aarch64 FP unit,
/// unlike the f16 arithmetic of the `fp16` extension).
#[target_feature(enable = "neon")]
#[inline]
fn f16_to_f32(h: half::f16) -> f32 {
    let out: f32;
    // SAFETY: converts one register into another; touches no memory.
    unsafe {
        asm!(
            "fcvt {out:s}, {h:h}",
            out = lateout(vreg) out,
            h = in(vreg) h.to_bits() as i16,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    out
}

/// Eight f16 values (as their bits) as two vectors of f32 (`fcvtl`, `fcvtl2`).
#[target_feature(enable = "neon")]
#[inline]
fn f16x8_to_f32(bits: uint16x8_t) -> [float32x4_t; 2] {
    let (lo, hi): (float32x4_t, float32x4_t);
    // SAFETY: converts registers; touches no memory.
    unsafe {
        asm!(
            "fcvtl {lo:v}.4s, {b:v}.4h",
            "fcvtl2 {hi:v}.4s, {b:v}.8h",
            // Written before `b` is read again, so not `lateout`.
            lo = out(vreg) lo,
            hi = lateout(vreg) hi,
            b = in(vreg) bits,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    [lo, hi]
}

/// `acc + Σ` of four adjacent products of signed bytes per i32 lane (`sdot`).
///
/// # Safety
/// The CPU must have the `dotprod` extension.
// Always inlined: as a call, each 16-byte product would cost a call.
#[allow(clippy::inline_always)]
#[inline(always)]
unsafe fn sdot(acc: int32x4_t, w: int8x16_t, a: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: arithmetic on registers only; the caller vouches for `dotprod`.
    unsafe {
        asm!(
            ".arch_extension dotprod",
            "sdot {acc:v}.4s, {w:v}.16b, {a:v}.16b",
            acc = inout(vreg) acc,
            w = in(vreg) w,
            a = in(vreg) a,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    acc
}

/// `acc` plus the products `w·a` of 16 signed bytes, four per i32 lane.
/// Which four share a lane differs between the two builds, so callers only
/// ever add up lanes that share a scale. Without `DP` the i16 step holds
/// two products: at most `2·128·127`, since activations stay within ±127.
#[target_feature(enable = "neon")]
#[inline]
fn dot_i8<const DP: bool>(acc: int32x4_t, w: int8x16_t, a: int8x16_t) -> int32x4_t {
    if DP {
        // SAFETY: kernels with `DP` are only instantiated inside functions
        // that enable `dotprod`, reached after it was detected (see
        // `crate::simd::Isa::NeonDotprod`).
        unsafe { sdot(acc, w, a) }
    } else {
        let pairs = vmlal_high_s8(vmull_s8(vget_low_s8(w), vget_low_s8(a)), w, a);
        vpadalq_s16(acc, pairs)
    }
}

/// The integer dot product of 32 weights with 32 activations, as lanes to
/// be added up; with `TWO`, over both planes (`256·p1 + p2`).
#[target_feature(enable = "neon")]
#[inline]
fn block_dot<const DP: bool, const TWO: bool>(
    w: [int8x16_t; 2],
    a: [int8x16_t; 2],
    a2: [int8x16_t; 2],
) -> int32x4_t {
    let p = dot_i8::<DP>(dot_i8::<DP>(vdupq_n_s32(0), w[0], a[0]), w[1], a[1]);
    if TWO {
        dot_i8::<DP>(dot_i8::<DP>(vshlq_n_s32::<8>(p), w[0], a2[0]), w[1], a2[1])
    } else {
        p
    }
}

/// As [`block_dot`] for 16 weights.
#[target_feature(enable = "neon")]
#[inline]
fn half_dot<const DP: bool, const TWO: bool>(
    w: int8x16_t,
    a: int8x16_t,
    a2: int8x16_t,
) -> int32x4_t {
    let p = dot_i8::<DP>(vdupq_n_s32(0), w, a);
    if TWO {
        dot_i8::<DP>(vshlq_n_s32::<8>(p), w, a2)
    } else {
        p
    }
}

/// The low and high nibbles of 16 bytes: elements 0..16 and 16..32.
#[target_feature(enable = "neon")]
#[inline]
fn nibbles(qs: &[u8; 16]) -> [uint8x16_t; 2] {
    let v = load_u8x16(qs);
    [vandq_u8(v, vdupq_n_u8(0x0F)), vshrq_n_u8::<4>(v)]
}

/// 16 bits to 16 bytes: byte `j` is `0xFF` where bit `j` is set.
#[target_feature(enable = "neon")]
#[inline]
fn bits_to_bytes(bits: u16) -> uint8x16_t {
    let [lo, hi] = bits.to_le_bytes();
    let spread = vcombine_u8(vdup_n_u8(lo), vdup_n_u8(hi));
    let mask = vreinterpretq_u8_u64(vdupq_n_u64(0x8040_2010_0804_0201));
    vtstq_u8(spread, mask)
}

/// Bytes of `v` minus `offset`, as signed bytes.
#[target_feature(enable = "neon")]
#[inline]
fn minus(v: uint8x16_t, offset: u8) -> int8x16_t {
    vreinterpretq_s8_u8(vsubq_u8(v, vdupq_n_u8(offset)))
}

/// The IQ4 levels selected by 16 indices.
#[target_feature(enable = "neon")]
#[inline]
fn iq4_levels(idx: uint8x16_t) -> int8x16_t {
    let table = crate::blocks::IQ4_LEVELS;
    // SAFETY: `table` is 16 readable bytes.
    let t = unsafe { vld1q_s8(table.as_ptr()) };
    vqtbl1q_s8(t, idx)
}

/// Converts 16 signed bytes to floats and stores `f(k, x)` for each group
/// `k` (0..4) of four, in order.
#[target_feature(enable = "neon")]
#[inline]
fn bytes_to_f32(q: int8x16_t, out: &mut [f32; 16], f: impl Fn(float32x4_t) -> float32x4_t) {
    let halves = [vmovl_s8(vget_low_s8(q)), vmovl_high_s8(q)];
    let (outs, _) = out.as_chunks_mut::<4>();
    for (h, half) in halves.into_iter().enumerate() {
        let words = [vmovl_s16(vget_low_s16(half)), vmovl_high_s16(half)];
        for (p, w) in words.into_iter().enumerate() {
            store_f32x4(&mut outs[2 * h + p], f(vcvtq_f32_s32(w)));
        }
    }
}

/// Packs eight vectors of four integral floats (within ±127) to 32 bytes in
/// order, stores them, and returns the sums of each 16.
#[target_feature(enable = "neon")]
#[inline]
fn store_quants(v: [float32x4_t; 8], out: &mut [i8; 32]) -> [i16; 2] {
    let w = v.map(|v| vcvtq_s32_f32(v));
    let h: [int16x8_t; 4] =
        std::array::from_fn(|k| vcombine_s16(vmovn_s32(w[2 * k]), vmovn_s32(w[2 * k + 1])));
    let b = [
        vcombine_s8(vmovn_s16(h[0]), vmovn_s16(h[1])),
        vcombine_s8(vmovn_s16(h[2]), vmovn_s16(h[3])),
    ];
    // SAFETY: `out` is 32 writable bytes; the stores have no alignment requirement.
    unsafe {
        vst1q_s8(out.as_mut_ptr(), b[0]);
        vst1q_s8(out.as_mut_ptr().add(16), b[1]);
    }
    [vaddlvq_s8(b[0]), vaddlvq_s8(b[1])]
}

/// Quantizes activations; see [`crate::dot::activations`] for the format.
/// The same operations as the scalar reference (no fused multiply-add, the
/// same rounding), so the results are identical for finite input.
#[target_feature(enable = "neon")]
fn quantize_activations_impl(x: &[f32], out: ActOut<'_>) {
    let two = !out.qs2.is_empty();
    let (xb, _) = x.as_chunks::<ACT_BLOCK>();
    let (qb, _) = out.qs.as_chunks_mut::<ACT_BLOCK>();
    let (qb2, _) = out.qs2.as_chunks_mut::<ACT_BLOCK>();
    let (sb, _) = out.sums16.as_chunks_mut::<2>();
    let (sb2, _) = out.sums16b.as_chunks_mut::<2>();
    let (mut qb2, mut sb2) = (qb2.iter_mut(), sb2.iter_mut());
    let clamp = |v: float32x4_t| vmaxq_f32(vminq_f32(v, vdupq_n_f32(127.0)), vdupq_n_f32(-127.0));
    for ((((x, q), d), ds), s) in xb.iter().zip(qb).zip(out.d).zip(out.dsum).zip(sb) {
        let (xs, _) = x.as_chunks::<4>();
        let v: [float32x4_t; 8] = std::array::from_fn(|k| load_f32x4(&xs[k]));
        let m = v
            .iter()
            .fold(vdupq_n_f32(0.0), |m, &v| vmaxnmq_f32(m, vabsq_f32(v)));
        let amax = vmaxnmvq_f32(m);
        let scale = amax / 127.0;
        let id = if amax == 0.0 { 0.0 } else { 127.0 / amax };
        let scaled = v.map(|v| vmulq_n_f32(v, id));
        let rounded = scaled.map(|v| vrndnq_f32(v));
        let sums = store_quants(rounded.map(clamp), q);
        *s = sums;
        let total1 = i32::from(sums[0]) + i32::from(sums[1]);
        if let (true, Some(q2), Some(s2)) = (two, qb2.next(), sb2.next()) {
            let res: [float32x4_t; 8] = std::array::from_fn(|k| {
                let r = vsubq_f32(scaled[k], rounded[k]);
                clamp(vrndnq_f32(vmulq_n_f32(r, RESIDUAL_STEPS)))
            });
            let sums2 = store_quants(res, q2);
            *s2 = sums2;
            let d2 = scale / RESIDUAL_STEPS;
            *d = d2;
            *ds = d2 * (256 * total1 + i32::from(sums2[0]) + i32::from(sums2[1])) as f32;
        } else {
            *d = scale;
            *ds = scale * total1 as f32;
        }
    }
}

pub(super) fn quantize_activations(x: &[f32], out: ActOut<'_>) {
    // SAFETY: NEON is part of every aarch64 CPU.
    unsafe { quantize_activations_impl(x, out) }
}

/// `Σ w_k x_k` over chunks of 16 weights decoded to four vectors by
/// `decode`, plus the scalar `tail` of what is left.
#[target_feature(enable = "neon")]
#[inline]
fn dot_f32_chunks<const N: usize>(
    w: &[u8],
    x: &[f32],
    decode: impl Fn(&[u8; N]) -> [float32x4_t; 4],
    tail: fn(&[u8], &[f32]) -> f32,
) -> f32 {
    let (wc, wr) = w.as_chunks::<N>();
    let (xc, xr) = x.as_chunks::<16>();
    let mut acc = [vdupq_n_f32(0.0); 4];
    for (w, x) in wc.iter().zip(xc) {
        let wv = decode(w);
        let (x4, _) = x.as_chunks::<4>();
        for k in 0..4 {
            acc[k] = vfmaq_f32(acc[k], wv[k], load_f32x4(&x4[k]));
        }
    }
    let total = vaddq_f32(vaddq_f32(acc[0], acc[1]), vaddq_f32(acc[2], acc[3]));
    vaddvq_f32(total) + tail(wr, xr)
}

/// 16 f32 values from 64 little-endian bytes.
#[target_feature(enable = "neon")]
#[inline]
fn f32_bytes(w: &[u8; 64]) -> [float32x4_t; 4] {
    let (c, _) = w.as_chunks::<16>();
    std::array::from_fn(|k| vreinterpretq_f32_u8(load_u8x16(&c[k])))
}

/// 16 f16 values from 32 bytes, as f32.
#[target_feature(enable = "neon")]
#[inline]
fn f16_bytes(w: &[u8; 32]) -> [float32x4_t; 4] {
    let [a, b] = load_u8x32(w).map(|v| f16x8_to_f32(vreinterpretq_u16_u8(v)));
    [a[0], a[1], b[0], b[1]]
}

/// 16 bf16 values from 32 bytes, as f32 (the bits moved to the top half).
#[target_feature(enable = "neon")]
#[inline]
fn bf16_bytes(w: &[u8; 32]) -> [float32x4_t; 4] {
    let [a, b] = load_u8x32(w).map(|v| {
        let h = vreinterpretq_u16_u8(v);
        [
            vreinterpretq_f32_u32(vshll_n_u16::<16>(vget_low_u16(h))),
            vreinterpretq_f32_u32(vshll_high_n_u16::<16>(h)),
        ]
    });
    [a[0], a[1], b[0], b[1]]
}

fn f32_tail(w: &[u8], x: &[f32]) -> f32 {
    w.as_chunks::<4>()
        .0
        .iter()
        .zip(x)
        .map(|(w, x)| f32::from_le_bytes(*w) * x)
        .sum()
}

#[target_feature(enable = "neon")]
fn dot_f32_impl(w: &[f32], x: &[f32]) -> f32 {
    let (wc, wr) = w.as_chunks::<16>();
    let (xc, xr) = x.as_chunks::<16>();
    let mut acc = [vdupq_n_f32(0.0); 4];
    for (w, x) in wc.iter().zip(xc) {
        let (w4, _) = w.as_chunks::<4>();
        let (x4, _) = x.as_chunks::<4>();
        for k in 0..4 {
            acc[k] = vfmaq_f32(acc[k], load_f32x4(&w4[k]), load_f32x4(&x4[k]));
        }
    }
    let total = vaddq_f32(vaddq_f32(acc[0], acc[1]), vaddq_f32(acc[2], acc[3]));
    vaddvq_f32(total) + wr.iter().zip(xr).map(|(a, b)| a * b).sum::<f32>()
}

/// Dot product of two f32 slices of equal length.
pub(super) fn dot_f32(w: &[f32], x: &[f32]) -> f32 {
    // SAFETY: NEON is part of every aarch64 CPU.
    unsafe { dot_f32_impl(w, x) }
}

/// f32 weights (raw little-endian bytes) against f32 values.
pub(super) fn dot_f32_bytes(row: &[u8], x: &[f32]) -> f32 {
    // SAFETY: NEON is part of every aarch64 CPU.
    unsafe { dot_f32_chunks(row, x, |w| f32_bytes(w), f32_tail) }
}

/// f16 weights against f32 values.
pub(super) fn dot_f16(row: &[u8], x: &[f32]) -> f32 {
    // SAFETY: NEON is part of every aarch64 CPU.
    unsafe { dot_f32_chunks(row, x, |w| f16_bytes(w), crate::dot::reference::f16_f32) }
}

/// bf16 weights against f32 values.
pub(super) fn dot_bf16(row: &[u8], x: &[f32]) -> f32 {
    // SAFETY: NEON is part of every aarch64 CPU.
    unsafe { dot_f32_chunks(row, x, |w| bf16_bytes(w), crate::dot::reference::bf16_f32) }
}

/// Decodes 16 values at a time with `decode`, the rest with `tail`.
#[target_feature(enable = "neon")]
#[inline]
fn dequant_halves(
    row: &[u8],
    out: &mut [f32],
    decode: impl Fn(&[u8; 32]) -> [float32x4_t; 4],
    tail: impl Fn([u8; 2]) -> f32,
) {
    let (wc, wr) = row.as_chunks::<32>();
    let (oc, or) = out.as_chunks_mut::<16>();
    for (w, o) in wc.iter().zip(oc) {
        let (o4, _) = o.as_chunks_mut::<4>();
        for (o, v) in o4.iter_mut().zip(decode(w)) {
            store_f32x4(o, v);
        }
    }
    for (w, o) in wr.as_chunks::<2>().0.iter().zip(or) {
        *o = tail(*w);
    }
}

/// f16 to f32 conversion of a row.
pub(super) fn dequant_f16(row: &[u8], out: &mut [f32]) {
    // SAFETY: NEON is part of every aarch64 CPU.
    unsafe {
        dequant_halves(
            row,
            out,
            |w| f16_bytes(w),
            |b| half::f16::from_le_bytes(b).to_f32(),
        );
    }
}

/// bf16 to f32 conversion of a row.
pub(super) fn dequant_bf16(row: &[u8], out: &mut [f32]) {
    // SAFETY: NEON is part of every aarch64 CPU.
    unsafe {
        dequant_halves(
            row,
            out,
            |w| bf16_bytes(w),
            |b| half::bf16::from_le_bytes(b).to_f32(),
        );
    }
}

/// Activation rows per GEMM call (four vectors).
pub(in crate::simd) const GEMM_LANES: usize = 16;
/// Weight rows per GEMM call.
pub(in crate::simd) const GEMM_WROWS: usize = 4;

/// One `k` of the GEMM tile: the activations of column `k` times lane `L`
/// of each row's vector of four weights.
#[target_feature(enable = "neon")]
#[inline]
fn gemm_step<const L: i32>(
    acc: &mut [[float32x4_t; 4]; GEMM_WROWS],
    x: &[[f32; 4]],
    w: &[float32x4_t; GEMM_WROWS],
) {
    let xv: [float32x4_t; 4] = std::array::from_fn(|v| load_f32x4(&x[v]));
    for (acc, &w) in acc.iter_mut().zip(w) {
        for (acc, &x) in acc.iter_mut().zip(&xv) {
            *acc = vfmaq_laneq_f32::<L>(*acc, x, w);
        }
    }
}

/// Four weight rows against 16 packed activation rows: the 4×16 tile in
/// 16 accumulators, each row's weights loaded four columns at a time and
/// applied lane by lane (`fmla` by element).
#[target_feature(enable = "neon")]
fn gemm_f32_impl(xp: &[f32], w: &[f32], cols: usize, out: &mut [f32]) {
    let (xc, _) = xp[..cols * GEMM_LANES].as_chunks::<4>();
    let wr: [&[f32]; GEMM_WROWS] = std::array::from_fn(|j| &w[j * cols..(j + 1) * cols]);
    let w4: [&[[f32; 4]]; GEMM_WROWS] = wr.map(|r| r.as_chunks::<4>().0);
    let mut acc = [[vdupq_n_f32(0.0); 4]; GEMM_WROWS];
    let quads = cols / 4;
    for c in 0..quads {
        let wv: [float32x4_t; GEMM_WROWS] = std::array::from_fn(|j| load_f32x4(&w4[j][c]));
        let x = &xc[16 * c..16 * c + 16];
        gemm_step::<0>(&mut acc, &x[0..4], &wv);
        gemm_step::<1>(&mut acc, &x[4..8], &wv);
        gemm_step::<2>(&mut acc, &x[8..12], &wv);
        gemm_step::<3>(&mut acc, &x[12..16], &wv);
    }
    for k in 4 * quads..cols {
        let xv: [float32x4_t; 4] = std::array::from_fn(|v| load_f32x4(&xc[4 * k + v]));
        for (acc, w) in acc.iter_mut().zip(&wr) {
            for (acc, &x) in acc.iter_mut().zip(&xv) {
                *acc = vfmaq_n_f32(*acc, x, w[k]);
            }
        }
    }
    let (oc, _) = out[..GEMM_WROWS * GEMM_LANES].as_chunks_mut::<4>();
    for (o, acc) in oc.chunks_exact_mut(4).zip(&acc) {
        for (o, &v) in o.iter_mut().zip(acc) {
            store_f32x4(o, v);
        }
    }
}

/// Four weight rows against 16 packed activation rows (see `crate::simd::F32Gemm`).
pub(in crate::simd) fn gemm_f32(xp: &[f32], w: &[f32], cols: usize, out: &mut [f32]) {
    // SAFETY: NEON is part of every aarch64 CPU.
    unsafe { gemm_f32_impl(xp, w, cols, out) }
}

#[cfg(test)]
mod tests {
    use std::arch::aarch64::*;

    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::{dot_i8, f16_to_f32, f16x8_to_f32, has_dotprod};

    /// `Σ w·a` of 16 bytes through the kernel's integer dot of build `DP`.
    #[target_feature(enable = "neon")]
    fn lane_sum<const DP: bool>(w: &[i8; 16], a: &[i8; 16]) -> i32 {
        // SAFETY: `w` and `a` are 16 readable bytes each.
        let (w, a) = unsafe { (vld1q_s8(w.as_ptr()), vld1q_s8(a.as_ptr())) };
        vaddvq_s32(dot_i8::<DP>(vdupq_n_s32(0), w, a))
    }

    #[target_feature(enable = "neon,dotprod")]
    fn lane_sum_dotprod(w: &[i8; 16], a: &[i8; 16]) -> i32 {
        lane_sum::<true>(w, a)
    }

    #[test]
    fn integer_dots_with_and_without_dotprod_sum_extreme_bytes_exactly() {
        let mut rng = ChaCha8Rng::seed_from_u64(31);
        let mut cases: Vec<([i8; 16], [i8; 16])> = vec![
            ([-128; 16], [-127; 16]),
            ([-128; 16], [127; 16]),
            ([127; 16], [127; 16]),
            ([127; 16], [-127; 16]),
        ];
        for _ in 0..1000 {
            let w: [i8; 16] = rng.random();
            let a: [i8; 16] = std::array::from_fn(|_| rng.random_range(-127..=127));
            cases.push((w, a));
        }
        for (w, a) in &cases {
            let exact: i32 = w
                .iter()
                .zip(a)
                .map(|(&w, &a)| i32::from(w) * i32::from(a))
                .sum();
            // SAFETY: NEON is part of every aarch64 CPU.
            assert_eq!(unsafe { lane_sum::<false>(w, a) }, exact, "{w:?} · {a:?}");
            if has_dotprod() {
                // SAFETY: `dotprod` was detected.
                assert_eq!(unsafe { lane_sum_dotprod(w, a) }, exact, "{w:?} · {a:?}");
            }
        }
    }

    #[test]
    fn f16_conversions_match_the_half_crate_for_every_bit_pattern() {
        let same = |a: f32, b: f32| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
        for chunk in 0..=u16::MAX / 8 {
            let bits: [u16; 8] = std::array::from_fn(|i| 8 * chunk + i as u16);
            let expected = bits.map(|b| half::f16::from_bits(b).to_f32());
            // SAFETY: NEON is part of every aarch64 CPU; `bits` is 8 readable u16.
            let [lo, hi] = unsafe { f16x8_to_f32(vld1q_u16(bits.as_ptr())) };
            let mut got = [0.0f32; 8];
            // SAFETY: `got` is 8 writable floats.
            unsafe {
                vst1q_f32(got.as_mut_ptr(), lo);
                vst1q_f32(got.as_mut_ptr().add(4), hi);
            }
            for ((&b, &e), &g) in bits.iter().zip(&expected).zip(&got) {
                // SAFETY: as above.
                let one = unsafe { f16_to_f32(half::f16::from_bits(b)) };
                assert!(same(e, g) && same(e, one), "{b:#06x}: {e} vs {g}, {one}");
            }
        }
    }

    #[test]
    fn kernel_set_names_the_dotprod_level_where_found() {
        let expected = if has_dotprod() {
            "neon-dotprod"
        } else {
            "neon"
        };
        assert_eq!(crate::kernel_set(), expected);
    }
}
