//! NEON kernels for aarch64, where NEON is part of the base instruction set:
//! the integer dot products of the 32-value formats (Q4_0, Q4_1, Q5_0, Q5_1,
//! Q8_0, IQ4_NL) against quantized activations, with `sdot` where the CPU has
//! the dot-product extension ([`super::Isa::NeonDot`]) and widening multiplies
//! elsewhere ([`super::Isa::Neon`]); the f32 matrix-multiply tile and the f32
//! dot product. The other formats take the scalar reference.
//!
//! Every function here is only reachable through its [`super::Isa`] level,
//! handed out after run-time detection; the safe wrappers rely on that.
#![allow(clippy::wildcard_imports)]

use std::arch::aarch64::*;

use bytemuck::Pod;

use crate::blocks::{
    BlockIq4Nl, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, IQ4_LEVELS,
};
use crate::dot::activations::ActRow;

/// Activation rows per GEMM call (four vectors; as many as AVX2's, so that batches take
/// the exact f32 tiles from the same size on).
pub(super) const GEMM_LANES: usize = 16;
/// Weight rows per GEMM call.
pub(super) const GEMM_WROWS: usize = 4;

/// Whether the CPU has the dot-product extension (`sdot`), detected once.
pub(super) fn has_dotprod() -> bool {
    static DOT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *DOT.get_or_init(|| std::arch::is_aarch64_feature_detected!("dotprod"))
}

/// `acc[i] += Σ_{j<4} a[4i + j] · b[4i + j]` with `sdot` (the intrinsic is
/// not stable in Rust yet).
#[target_feature(enable = "neon,dotprod")]
#[inline]
fn sdot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: `sdot` reads and writes vector registers only; the dot-product
    // extension is enabled for this function.
    unsafe {
        std::arch::asm!(
            "sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b",
            acc = inout(vreg) acc,
            a = in(vreg) a,
            b = in(vreg) b,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    acc
}

/// Sums of products of two signed byte vectors into four i32 lanes: `sdot`
/// with `SDOT`, else widening multiplies and pairwise adds (same sums, other
/// lanes).
#[target_feature(enable = "neon")]
#[inline]
fn dot16<const SDOT: bool>(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    if SDOT {
        // SAFETY: `SDOT` kernels are only reachable after the dot-product
        // extension was detected (see `super::Isa::NeonDot`).
        return unsafe { sdot(acc, a, b) };
    }
    let lo = vmull_s8(vget_low_s8(a), vget_low_s8(b));
    let hi = vmull_high_s8(a, b);
    vpadalq_s16(vpadalq_s16(acc, lo), hi)
}

#[target_feature(enable = "neon")]
#[inline]
fn load_i8x16(v: &[i8; 16]) -> int8x16_t {
    // SAFETY: `v` is 16 readable bytes; the load has no alignment requirement.
    unsafe { vld1q_s8(v.as_ptr()) }
}

#[target_feature(enable = "neon")]
#[inline]
fn load_u8x16(v: &[u8; 16]) -> uint8x16_t {
    // SAFETY: `v` is 16 readable bytes; the load has no alignment requirement.
    unsafe { vld1q_u8(v.as_ptr()) }
}

/// The two halves of activation block `b` of a plane.
#[target_feature(enable = "neon")]
#[inline]
fn act_halves(q: &[[i8; 32]], b: usize) -> [int8x16_t; 2] {
    let (halves, _) = q[b].as_chunks::<16>();
    [load_i8x16(&halves[0]), load_i8x16(&halves[1])]
}

/// The 32 nibbles of 16 packed bytes: elements 0..16 (low nibbles), 16..32 (high).
#[target_feature(enable = "neon")]
#[inline]
fn nibbles(qs: &[u8; 16]) -> [uint8x16_t; 2] {
    let v = load_u8x16(qs);
    [vandq_u8(v, vdupq_n_u8(0x0F)), vshrq_n_u8::<4>(v)]
}

/// `0x10` in the bytes of elements whose fifth bit is set, for elements
/// 0..16 and 16..32.
#[target_feature(enable = "neon")]
#[inline]
fn fifth_bits(qh: [u8; 4]) -> [uint8x16_t; 2] {
    const BITS: [u8; 16] = [1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128];
    let bits = load_u8x16(&BITS);
    let spread = |lo: u8, hi: u8| {
        let v = vcombine_u8(vdup_n_u8(lo), vdup_n_u8(hi));
        vandq_u8(vtstq_u8(v, bits), vdupq_n_u8(0x10))
    };
    [spread(qh[0], qh[1]), spread(qh[2], qh[3])]
}

/// Bytes known to be in `0..=127` as signed bytes.
#[target_feature(enable = "neon")]
#[inline]
fn signed(v: uint8x16_t) -> int8x16_t {
    vreinterpretq_s8_u8(v)
}

/// `Σ_b d_w · d_a · Σ(w·Q) + m · dsum` over the blocks, where `terms` gives a
/// block's signed weights (two halves), `d_w` and minimum `m` (0 without
/// one); with `TWO` over both activation planes.
#[target_feature(enable = "neon")]
#[inline]
fn legacy_dot<B, const SDOT: bool, const TWO: bool>(
    blocks: &[B],
    act: ActRow<'_>,
    terms: impl Fn(&B) -> ([int8x16_t; 2], f32, f32),
) -> f32 {
    let n = blocks.len();
    let (aq, _) = act.qs.as_chunks::<32>();
    let (aq2, _) = act.qs2.as_chunks::<32>();
    let mut sum = 0.0f32;
    for (b, blk) in blocks.iter().enumerate().take(n.min(aq.len())) {
        let (w, d, m) = terms(blk);
        let plane = |q: &[[i8; 32]]| {
            let a = act_halves(q, b);
            vaddvq_s32(dot16::<SDOT>(
                dot16::<SDOT>(vdupq_n_s32(0), w[0], a[0]),
                w[1],
                a[1],
            ))
        };
        let mut isum = plane(aq);
        if TWO {
            isum = 256 * isum + plane(aq2);
        }
        sum += d * act.d[b] * isum as f32 + m * act.dsum[b];
    }
    sum
}

#[target_feature(enable = "neon")]
fn dot_q4_0_impl<const SDOT: bool, const TWO: bool>(blocks: &[BlockQ4_0], act: ActRow<'_>) -> f32 {
    legacy_dot::<_, SDOT, TWO>(blocks, act, |b| {
        let [lo, hi] = nibbles(&b.qs);
        let eight = vdupq_n_s8(8);
        let w = [vsubq_s8(signed(lo), eight), vsubq_s8(signed(hi), eight)];
        (w, b.d.to_f32(), 0.0)
    })
}

#[target_feature(enable = "neon")]
fn dot_q4_1_impl<const SDOT: bool, const TWO: bool>(blocks: &[BlockQ4_1], act: ActRow<'_>) -> f32 {
    legacy_dot::<_, SDOT, TWO>(blocks, act, |b| {
        let [lo, hi] = nibbles(&b.qs);
        ([signed(lo), signed(hi)], b.d.to_f32(), b.m.to_f32())
    })
}

#[target_feature(enable = "neon")]
fn dot_q5_0_impl<const SDOT: bool, const TWO: bool>(blocks: &[BlockQ5_0], act: ActRow<'_>) -> f32 {
    legacy_dot::<_, SDOT, TWO>(blocks, act, |b| {
        let [lo, hi] = nibbles(&b.qs);
        let [h0, h1] = fifth_bits(b.qh);
        let sixteen = vdupq_n_s8(16);
        let w = [
            vsubq_s8(signed(vorrq_u8(lo, h0)), sixteen),
            vsubq_s8(signed(vorrq_u8(hi, h1)), sixteen),
        ];
        (w, b.d.to_f32(), 0.0)
    })
}

#[target_feature(enable = "neon")]
fn dot_q5_1_impl<const SDOT: bool, const TWO: bool>(blocks: &[BlockQ5_1], act: ActRow<'_>) -> f32 {
    legacy_dot::<_, SDOT, TWO>(blocks, act, |b| {
        let [lo, hi] = nibbles(&b.qs);
        let [h0, h1] = fifth_bits(b.qh);
        let w = [signed(vorrq_u8(lo, h0)), signed(vorrq_u8(hi, h1))];
        (w, b.d.to_f32(), b.m.to_f32())
    })
}

#[target_feature(enable = "neon")]
fn dot_q8_0_impl<const SDOT: bool, const TWO: bool>(blocks: &[BlockQ8_0], act: ActRow<'_>) -> f32 {
    legacy_dot::<_, SDOT, TWO>(blocks, act, |b| {
        let (halves, _) = b.qs.as_chunks::<16>();
        let w = [load_i8x16(&halves[0]), load_i8x16(&halves[1])];
        (w, b.d.to_f32(), 0.0)
    })
}

#[target_feature(enable = "neon")]
fn dot_iq4_nl_impl<const SDOT: bool, const TWO: bool>(
    blocks: &[BlockIq4Nl],
    act: ActRow<'_>,
) -> f32 {
    let table = load_i8x16(&IQ4_LEVELS);
    legacy_dot::<_, SDOT, TWO>(blocks, act, |b| {
        let [lo, hi] = nibbles(&b.qs);
        let w = [vqtbl1q_s8(table, lo), vqtbl1q_s8(table, hi)];
        (w, b.d.to_f32(), 0.0)
    })
}

/// Views a row as blocks, or `None` when it is not 2-byte aligned.
fn cast<B: Pod>(row: &[u8]) -> Option<&[B]> {
    bytemuck::try_cast_slice(row).ok()
}

/// Safe entry points for a dot-product kernel over blocks of `$block`, with
/// (`$dot`) and without (`$plain`) `sdot`, falling back to the scalar
/// reference for unaligned rows.
macro_rules! safe_dots {
    ($($plain:ident, $dot:ident, $imp:ident, $block:ty, $reference:path;)*) => {$(
        pub(super) fn $plain(row: &[u8], act: ActRow<'_>) -> f32 {
            match cast::<$block>(row) {
                // SAFETY: NEON is part of the aarch64 base instruction set.
                Some(blocks) if act.qs2.is_empty() => unsafe { $imp::<false, false>(blocks, act) },
                // SAFETY: as above.
                Some(blocks) => unsafe { $imp::<false, true>(blocks, act) },
                None => $reference(row, act),
            }
        }

        pub(super) fn $dot(row: &[u8], act: ActRow<'_>) -> f32 {
            match cast::<$block>(row) {
                // SAFETY: only reachable after the dot-product extension was
                // detected (see `super::Isa::NeonDot`).
                Some(blocks) if act.qs2.is_empty() => unsafe { $imp::<true, false>(blocks, act) },
                // SAFETY: as above.
                Some(blocks) => unsafe { $imp::<true, true>(blocks, act) },
                None => $reference(row, act),
            }
        }
    )*};
}

safe_dots! {
    dot_q4_0, dot_q4_0_sdot, dot_q4_0_impl, BlockQ4_0, crate::dot::reference::q4_0;
    dot_q4_1, dot_q4_1_sdot, dot_q4_1_impl, BlockQ4_1, crate::dot::reference::q4_1;
    dot_q5_0, dot_q5_0_sdot, dot_q5_0_impl, BlockQ5_0, crate::dot::reference::q5_0;
    dot_q5_1, dot_q5_1_sdot, dot_q5_1_impl, BlockQ5_1, crate::dot::reference::q5_1;
    dot_q8_0, dot_q8_0_sdot, dot_q8_0_impl, BlockQ8_0, crate::dot::reference::q8_0;
    dot_iq4_nl, dot_iq4_nl_sdot, dot_iq4_nl_impl, BlockIq4Nl, crate::dot::reference::iq4_nl;
}

#[target_feature(enable = "neon")]
fn dot_f32_impl(a: &[f32], b: &[f32]) -> f32 {
    let (ac, at) = a.as_chunks::<8>();
    let (bc, bt) = b.as_chunks::<8>();
    let mut acc = [vdupq_n_f32(0.0); 2];
    for (x, y) in ac.iter().zip(bc) {
        // SAFETY: `x` and `y` are 8 readable floats each; the loads have no
        // alignment requirement.
        let (x0, x1, y0, y1) = unsafe {
            (
                vld1q_f32(x.as_ptr()),
                vld1q_f32(x.as_ptr().add(4)),
                vld1q_f32(y.as_ptr()),
                vld1q_f32(y.as_ptr().add(4)),
            )
        };
        acc[0] = vfmaq_f32(acc[0], x0, y0);
        acc[1] = vfmaq_f32(acc[1], x1, y1);
    }
    let tail: f32 = at.iter().zip(bt).map(|(x, y)| x * y).sum();
    vaddvq_f32(vaddq_f32(acc[0], acc[1])) + tail
}

/// Dot product of two f32 slices (over the shorter length).
pub(super) fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    // SAFETY: NEON is part of the aarch64 base instruction set.
    unsafe { dot_f32_impl(&a[..n], &b[..n]) }
}

#[target_feature(enable = "neon")]
fn gemm_f32_impl(xp: &[f32], w: &[f32], cols: usize, out: &mut [f32]) {
    const V: usize = GEMM_LANES / 4;
    let (xc, _) = xp[..cols * GEMM_LANES].as_chunks::<4>();
    let wr: [&[f32]; GEMM_WROWS] = std::array::from_fn(|j| &w[j * cols..(j + 1) * cols]);
    let mut acc = [[vdupq_n_f32(0.0); V]; GEMM_WROWS];
    for k in 0..cols {
        // SAFETY: `xc[V·k + v]` are 4 readable floats each.
        let x: [float32x4_t; V] =
            std::array::from_fn(|v| unsafe { vld1q_f32(xc[V * k + v].as_ptr()) });
        for (acc, w) in acc.iter_mut().zip(&wr) {
            for (a, &x) in acc.iter_mut().zip(&x) {
                *a = vfmaq_n_f32(*a, x, w[k]);
            }
        }
    }
    let (oc, _) = out[..GEMM_WROWS * GEMM_LANES].as_chunks_mut::<4>();
    for (j, acc) in acc.iter().enumerate() {
        for (v, a) in acc.iter().enumerate() {
            // SAFETY: `oc[V·j + v]` is 4 writable floats.
            unsafe { vst1q_f32(oc[V * j + v].as_mut_ptr(), *a) };
        }
    }
}

/// Four weight rows against 16 packed activation rows (see `super::F32Gemm`).
pub(super) fn gemm_f32(xp: &[f32], w: &[f32], cols: usize, out: &mut [f32]) {
    // SAFETY: NEON is part of the aarch64 base instruction set.
    unsafe { gemm_f32_impl(xp, w, cols, out) }
}
