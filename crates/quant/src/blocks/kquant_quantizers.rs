//! Quantizers for Q2_K … Q6_K.
//!
//! Each one first runs ggml's reference search: per sub-block, a weighted
//! least-squares search over candidate scales (and minimums) picks the
//! sub-block's real-valued scale; those are then stored as small integers
//! relative to an f16 super-scale, and every value is re-rounded against the
//! stored grid. Then, unlike the reference, each sub-block also tries the
//! neighbouring integer scales (and minimums) and keeps whichever gives the
//! smallest squared error. The reference choice is one of the candidates, so
//! the result is never worse than ggml's quantizer on the same data.

use half::f16;

use super::kquants::{
    BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, QK_K, pack_scale_min_k4, pack_scales_q3k,
    scale_q3k,
};
use crate::scale_search::{
    AffineCandidates, ErrorNorm, GROUP_MAX_EPS, MAX_GROUP, affine_search, nearest_int,
    symmetric_refine, symmetric_search,
};

/// Whether to try the neighbours of the reference integer scales.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refine {
    /// Keep ggml's reference choice exactly.
    #[cfg_attr(not(test), allow(dead_code))]
    No,
    /// Try neighbouring integer scales and keep the best.
    Yes,
}

/// Levels and squared error of `x` on the grid `d*q - dm`, `q` in `0..=nmax`,
/// rounded as the reference does. With `d == 0` every value decodes to `-dm`
/// and the levels are left as they are.
fn affine_fit(x: &[f32], d: f32, dm: f32, nmax: i32, levels: &mut [u8]) -> f32 {
    let mut err = 0.0f32;
    for (&v, l) in x.iter().zip(levels.iter_mut()) {
        let q = if d == 0.0 {
            0
        } else {
            let q = nearest_int((v + dm) / d).clamp(0, nmax);
            *l = q as u8;
            q
        };
        let diff = d * q as f32 - dm - v;
        err += diff * diff;
    }
    err
}

/// Levels (offset by `-lo`) and squared error of `x` on the grid `d*q`, `q` in `lo..=hi`.
fn symmetric_fit(x: &[f32], d: f32, lo: i32, hi: i32, levels: &mut [u8]) -> f32 {
    let mut err = 0.0f32;
    for (&v, l) in x.iter().zip(levels.iter_mut()) {
        let q = if d == 0.0 {
            0
        } else {
            let q = nearest_int(v / d).clamp(lo, hi);
            *l = (q - lo) as u8;
            q
        };
        let diff = d * q as f32 - v;
        err += diff * diff;
    }
    err
}

/// Candidate integers around `center` within `lo..=hi`, `center` first so
/// that ties keep the reference choice.
fn around(center: i32, lo: i32, hi: i32) -> impl Iterator<Item = i32> {
    [center, center - 1, center + 1]
        .into_iter()
        .filter(move |c| (lo..=hi).contains(c))
}

/// For an affine sub-block with integer scale `ls` and minimum `lm` (both in
/// `0..=max_int`) relative to super-scales `d` and `dmin`, the best pair
/// among the neighbours and the matching levels.
fn refine_affine(
    x: &[f32],
    (d, dmin): (f32, f32),
    (ls, lm): (u8, u8),
    max_int: u8,
    nmax: i32,
    levels: &mut [u8],
) -> (u8, u8) {
    let mut best = (ls, lm);
    let mut best_err = affine_fit(x, d * f32::from(ls), dmin * f32::from(lm), nmax, levels);
    let mut storage = [0u8; MAX_GROUP];
    let trial = &mut storage[..x.len().min(MAX_GROUP)];
    let max_int = i32::from(max_int);
    for cs in around(i32::from(ls), 0, max_int) {
        for cm in around(i32::from(lm), 0, max_int) {
            let (cs, cm) = (cs as u8, cm as u8);
            if (cs, cm) == (ls, lm) {
                continue;
            }
            trial.copy_from_slice(levels);
            let err = affine_fit(x, d * f32::from(cs), dmin * f32::from(cm), nmax, trial);
            if err < best_err {
                best_err = err;
                best = (cs, cm);
                levels.copy_from_slice(trial);
            }
        }
    }
    best
}

/// As [`refine_affine`] for a symmetric sub-block with signed integer scale
/// `ls` in `lo_s..=hi_s` and levels in `lo..=hi`.
fn refine_symmetric(
    x: &[f32],
    d: f32,
    ls: i32,
    (lo_s, hi_s): (i32, i32),
    (lo, hi): (i32, i32),
    levels: &mut [u8],
) -> i32 {
    let mut best = ls;
    let mut best_err = symmetric_fit(x, d * ls as f32, lo, hi, levels);
    let mut storage = [0u8; MAX_GROUP];
    let trial = &mut storage[..x.len().min(MAX_GROUP)];
    for cs in around(ls, lo_s, hi_s).skip(1) {
        trial.copy_from_slice(levels);
        let err = symmetric_fit(x, d * cs as f32, lo, hi, trial);
        if err < best_err {
            best_err = err;
            best = cs;
            levels.copy_from_slice(trial);
        }
    }
    best
}

/// Packs 2-bit levels as Q2_K/Q3_K store them: four 32-element runs per byte
/// column in each half of 128.
fn pack_2bit(levels: &[u8; QK_K]) -> [u8; QK_K / 4] {
    let mut qs = [0u8; QK_K / 4];
    for n in 0..2 {
        for l in 0..32 {
            let e = 128 * n + l;
            qs[32 * n + l] = (levels[e] & 3)
                | ((levels[e + 32] & 3) << 2)
                | ((levels[e + 64] & 3) << 4)
                | ((levels[e + 96] & 3) << 6);
        }
    }
    qs
}

/// Packs 4-bit levels as Q4_K/Q5_K store them.
fn pack_4bit(levels: &[u8; QK_K]) -> [u8; QK_K / 2] {
    let mut qs = [0u8; QK_K / 2];
    for n in 0..4 {
        for l in 0..32 {
            qs[32 * n + l] = (levels[64 * n + l] & 0x0F) | ((levels[64 * n + 32 + l] & 0x0F) << 4);
        }
    }
    qs
}

/// Affine K-quant with sub-blocks of `SUB` elements, levels `0..=nmax`, and
/// integer scales/minimums in `0..=max_int`: returns the f16 super-scales,
/// the integer scales and minimums, and the levels.
struct AffineSuperBlock<const S: usize> {
    d: f16,
    dmin: f16,
    sc: [u8; S],
    m: [u8; S],
    levels: [u8; QK_K],
}

fn quantize_affine<const S: usize>(
    src: &[f32; QK_K],
    nmax: u8,
    max_int: u8,
    weights_of: impl Fn(&[f32], &mut [f32]),
    candidates: AffineCandidates,
    norm: ErrorNorm,
    refine: Refine,
) -> AffineSuperBlock<S> {
    let sub = QK_K / S;
    let mut levels = [0u8; QK_K];
    let mut scales = [0.0f32; S];
    let mut mins = [0.0f32; S];
    let (mut max_scale, mut max_min) = (0.0f32, 0.0f32);
    for j in 0..S {
        let x = &src[sub * j..sub * (j + 1)];
        let mut weights = [0.0f32; MAX_GROUP];
        let weights = &mut weights[..sub];
        weights_of(x, weights);
        let (scale, min) = affine_search(
            x,
            weights,
            nmax,
            candidates,
            norm,
            &mut levels[sub * j..sub * (j + 1)],
        );
        scales[j] = scale;
        mins[j] = min;
        max_scale = max_scale.max(scale);
        max_min = max_min.max(min);
    }
    let max_intf = f32::from(max_int);
    let to_int = |inv: f32, v: f32| nearest_int(inv * v).clamp(0, i32::from(max_int)) as u8;
    let inv_scale = if max_scale > 0.0 {
        max_intf / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 {
        max_intf / max_min
    } else {
        0.0
    };
    let mut sc = scales.map(|s| to_int(inv_scale, s));
    let mut m = mins.map(|v| to_int(inv_min, v));
    let d = f16::from_f32(max_scale / max_intf);
    let dmin = f16::from_f32(max_min / max_intf);
    let (df, dminf) = (d.to_f32(), dmin.to_f32());
    for j in 0..S {
        let x = &src[sub * j..sub * (j + 1)];
        let lv = &mut levels[sub * j..sub * (j + 1)];
        match refine {
            Refine::No => {
                affine_fit(
                    x,
                    df * f32::from(sc[j]),
                    dminf * f32::from(m[j]),
                    nmax.into(),
                    lv,
                );
            }
            Refine::Yes => {
                (sc[j], m[j]) =
                    refine_affine(x, (df, dminf), (sc[j], m[j]), max_int, nmax.into(), lv);
            }
        }
    }
    AffineSuperBlock {
        d,
        dmin,
        sc,
        m,
        levels,
    }
}

/// ggml's weights for Q4_K/Q5_K sub-blocks: the group's RMS plus each |x|.
fn rms_plus_abs(x: &[f32], w: &mut [f32]) {
    let sum_x2: f32 = x.iter().map(|v| v * v).sum();
    let av = (sum_x2 / x.len() as f32).sqrt();
    for (w, v) in w.iter_mut().zip(x) {
        *w = av + v.abs();
    }
}

pub(crate) fn quantize_q2k(src: &[f32; QK_K], refine: Refine) -> BlockQ2K {
    let candidates = AffineCandidates {
        rmin: -0.5,
        rdelta: 0.1,
        steps: 15,
    };
    let weights = |x: &[f32], w: &mut [f32]| {
        for (w, v) in w.iter_mut().zip(x) {
            *w = v.abs();
        }
    };
    let b = quantize_affine::<16>(src, 3, 15, weights, candidates, ErrorNorm::Absolute, refine);
    let mut scales = [0u8; 16];
    for (s, (&sc, &m)) in scales.iter_mut().zip(b.sc.iter().zip(&b.m)) {
        *s = sc | (m << 4);
    }
    BlockQ2K {
        scales,
        qs: pack_2bit(&b.levels),
        d: b.d,
        dmin: b.dmin,
    }
}

pub(crate) fn quantize_q4k(src: &[f32; QK_K], refine: Refine) -> BlockQ4K {
    let candidates = AffineCandidates {
        rmin: -1.0,
        rdelta: 0.1,
        steps: 20,
    };
    let b = quantize_affine::<8>(
        src,
        15,
        63,
        rms_plus_abs,
        candidates,
        ErrorNorm::Squared,
        refine,
    );
    BlockQ4K {
        d: b.d,
        dmin: b.dmin,
        scales: pack_scale_min_k4(&b.sc, &b.m),
        qs: pack_4bit(&b.levels),
    }
}

pub(crate) fn quantize_q5k(src: &[f32; QK_K], refine: Refine) -> BlockQ5K {
    let candidates = AffineCandidates {
        rmin: -0.5,
        rdelta: 0.1,
        steps: 15,
    };
    let b = quantize_affine::<8>(
        src,
        31,
        63,
        rms_plus_abs,
        candidates,
        ErrorNorm::Squared,
        refine,
    );
    let mut qh = [0u8; QK_K / 8];
    for n in 0..4 {
        for (l, h) in qh.iter_mut().enumerate() {
            *h |= (b.levels[64 * n + l] >> 4) << (2 * n);
            *h |= (b.levels[64 * n + 32 + l] >> 4) << (2 * n + 1);
        }
    }
    BlockQ5K {
        d: b.d,
        dmin: b.dmin,
        scales: pack_scale_min_k4(&b.sc, &b.m),
        qh,
        qs: pack_4bit(&b.levels),
    }
}

pub(crate) fn quantize_q3k(src: &[f32; QK_K], refine: Refine) -> BlockQ3K {
    let mut levels = [0u8; QK_K];
    let mut scales = [0.0f32; 16];
    let (mut max_scale, mut amax) = (0.0f32, 0.0f32);
    for (j, scale) in scales.iter_mut().enumerate() {
        *scale = symmetric_refine(
            &src[16 * j..16 * j + 16],
            4,
            &mut levels[16 * j..16 * j + 16],
        );
        if scale.abs() > amax {
            amax = scale.abs();
            max_scale = *scale;
        }
    }
    let mut block = BlockQ3K {
        hmask: [0; QK_K / 8],
        qs: [0; QK_K / 4],
        scales: [0; 12],
        d: f16::ZERO,
    };
    if max_scale != 0.0 {
        let iscale = -32.0 / max_scale;
        let ls = scales.map(|s| (nearest_int(iscale * s).clamp(-32, 31) + 32) as u8);
        block.scales = pack_scales_q3k(&ls);
        block.d = f16::from_f32(1.0 / iscale);
    }
    let d = block.d.to_f32();
    let mut ls = [0u8; 16];
    for (j, l) in ls.iter_mut().enumerate() {
        let x = &src[16 * j..16 * j + 16];
        let lv = &mut levels[16 * j..16 * j + 16];
        let sc = i32::from(scale_q3k(j, &block.scales)) - 32;
        let sc = match refine {
            Refine::No => {
                symmetric_fit(x, d * sc as f32, -4, 3, lv);
                sc
            }
            Refine::Yes => refine_symmetric(x, d, sc, (-32, 31), (-4, 3), lv),
        };
        *l = (sc + 32) as u8;
    }
    block.scales = pack_scales_q3k(&ls);
    for (e, &level) in levels.iter().enumerate() {
        if level > 3 {
            block.hmask[e % 32] |= 1 << (e / 32);
        }
    }
    block.qs = pack_2bit(&levels.map(|l| l & 3));
    block
}

pub(crate) fn quantize_q6k(src: &[f32; QK_K], refine: Refine) -> BlockQ6K {
    let mut levels = [0u8; QK_K];
    let mut scales = [0.0f32; 16];
    let (mut max_scale, mut max_abs) = (0.0f32, 0.0f32);
    for (j, scale) in scales.iter_mut().enumerate() {
        *scale = symmetric_search(
            &src[16 * j..16 * j + 16],
            32,
            &mut levels[16 * j..16 * j + 16],
        );
        if scale.abs() > max_abs {
            max_abs = scale.abs();
            max_scale = *scale;
        }
    }
    let mut block = BlockQ6K {
        ql: [0; QK_K / 2],
        qh: [0; QK_K / 4],
        scales: [0; 16],
        d: f16::ZERO,
    };
    if max_abs < GROUP_MAX_EPS {
        return block;
    }
    let iscale = -128.0 / max_scale;
    block.d = f16::from_f32(1.0 / iscale);
    let d = block.d.to_f32();
    for (j, scale) in scales.iter().enumerate() {
        let x = &src[16 * j..16 * j + 16];
        let lv = &mut levels[16 * j..16 * j + 16];
        let sc = nearest_int(iscale * scale).clamp(-128, 127);
        let sc = match refine {
            Refine::No => {
                symmetric_fit(x, d * sc as f32, -32, 31, lv);
                sc
            }
            Refine::Yes => refine_symmetric(x, d, sc, (-128, 127), (-32, 31), lv),
        };
        block.scales[j] = sc as i8;
    }
    for n in 0..2 {
        for l in 0..32 {
            let e = 128 * n + l;
            let (q1, q2, q3, q4) = (levels[e], levels[e + 32], levels[e + 64], levels[e + 96]);
            block.ql[64 * n + l] = (q1 & 0x0F) | ((q3 & 0x0F) << 4);
            block.ql[64 * n + 32 + l] = (q2 & 0x0F) | ((q4 & 0x0F) << 4);
            block.qh[32 * n + l] =
                (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
        }
    }
    block
}

impl BlockQ2K {
    /// Encodes 256 values (reference search plus neighbour refinement).
    pub fn quantize(src: &[f32; QK_K]) -> Self {
        quantize_q2k(src, Refine::Yes)
    }
}

impl BlockQ3K {
    /// Encodes 256 values (reference search plus neighbour refinement).
    pub fn quantize(src: &[f32; QK_K]) -> Self {
        quantize_q3k(src, Refine::Yes)
    }
}

impl BlockQ4K {
    /// Encodes 256 values (reference search plus neighbour refinement).
    pub fn quantize(src: &[f32; QK_K]) -> Self {
        quantize_q4k(src, Refine::Yes)
    }
}

impl BlockQ5K {
    /// Encodes 256 values (reference search plus neighbour refinement).
    pub fn quantize(src: &[f32; QK_K]) -> Self {
        quantize_q5k(src, Refine::Yes)
    }
}

impl BlockQ6K {
    /// Encodes 256 values (reference search plus neighbour refinement).
    pub fn quantize(src: &[f32; QK_K]) -> Self {
        quantize_q6k(src, Refine::Yes)
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    fn sse(a: &[f32], b: &[f32]) -> f64 {
        a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum()
    }

    /// Super-blocks drawn from several shapes: Gaussian, heavy-tailed, all
    /// positive, with outliers, and near zero.
    fn samples() -> Vec<[f32; QK_K]> {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut out = Vec::new();
        for kind in 0..5 {
            for _ in 0..20 {
                let mut x = [0.0f32; QK_K];
                for v in &mut x {
                    let g: f32 = (0..4).map(|_| rng.random::<f32>() - 0.5).sum();
                    *v = match kind {
                        0 => g,
                        1 => g * g * g * 8.0,
                        2 => g.abs() + 0.3,
                        3 => {
                            if rng.random::<f32>() < 0.02 {
                                g * 30.0
                            } else {
                                g
                            }
                        }
                        _ => g * 1e-4,
                    };
                }
                out.push(x);
            }
        }
        out
    }

    type Codec = (&'static str, fn(&[f32; QK_K], Refine) -> [f32; QK_K]);

    fn codecs() -> [Codec; 5] {
        fn via<B>(
            q: fn(&[f32; QK_K], Refine) -> B,
            d: fn(&B, &mut [f32; QK_K]),
        ) -> impl Fn(&[f32; QK_K], Refine) -> [f32; QK_K] {
            move |x, r| {
                let mut out = [0.0; QK_K];
                d(&q(x, r), &mut out);
                out
            }
        }
        [
            ("q2_K", |x, r| via(quantize_q2k, BlockQ2K::dequantize)(x, r)),
            ("q3_K", |x, r| via(quantize_q3k, BlockQ3K::dequantize)(x, r)),
            ("q4_K", |x, r| via(quantize_q4k, BlockQ4K::dequantize)(x, r)),
            ("q5_K", |x, r| via(quantize_q5k, BlockQ5K::dequantize)(x, r)),
            ("q6_K", |x, r| via(quantize_q6k, BlockQ6K::dequantize)(x, r)),
        ]
    }

    #[test]
    fn refinement_is_never_worse_than_the_reference_choice() {
        for (name, codec) in codecs() {
            let (mut total_ref, mut total_refined) = (0.0, 0.0);
            for x in samples() {
                let reference = sse(&x, &codec(&x, Refine::No));
                let refined = sse(&x, &codec(&x, Refine::Yes));
                assert!(
                    refined <= reference * (1.0 + 1e-6),
                    "{name}: {refined} > {reference}"
                );
                total_ref += reference;
                total_refined += refined;
            }
            eprintln!(
                "{name}: reference search rmse {:.5}, refined {:.5}",
                (total_ref / (100.0 * QK_K as f64)).sqrt(),
                (total_refined / (100.0 * QK_K as f64)).sqrt()
            );
            assert!(total_refined < total_ref, "{name}: refinement never helped");
        }
    }

    #[test]
    fn zero_input_encodes_to_exact_zeros() {
        for (name, codec) in codecs() {
            for refine in [Refine::No, Refine::Yes] {
                let out = codec(&[0.0; QK_K], refine);
                assert!(out.iter().all(|&v| v == 0.0), "{name}");
            }
        }
    }
}
