//! Mixture-of-experts layers on the CPU: routing, and products with only the chosen experts,
//! each expert's rows gathered so it multiplies all of its tokens in one pass.

use ferrolm_quant::dot::Planes;
use ferrolm_quant::{Input, Precision, QMatrix, QuantizedActivations};

use super::{CpuBuffer, CpuPrepared, check, shape_error};
use crate::backend::MoeRouting;
use crate::config::MAX_EXPERTS;
use crate::error::Result;

/// Smallest sum the chosen weights are divided by when renormalized (llama.cpp's clamp).
const MIN_WEIGHT_SUM: f32 = 6.103_515_6e-5;

/// Buffers reused by every [`matmul`]; they grow to the largest batch once.
#[derive(Debug, Default)]
pub(super) struct Scratch {
    rows: Vec<usize>, // output rows routed to the current expert
    x: Vec<f32>,      // their inputs, gathered
    y: Vec<f32>,      // their outputs
    acts: Option<QuantizedActivations>,
}

/// Fills one token's `choice` (`2 · n_used`: indices as f32, then weights) from its router
/// `logits`: softmax, the `n_used` largest (lowest index first on ties), renormalized and scaled.
pub(super) fn route(logits: &[f32], routing: &MoeRouting, choice: &mut [f32]) {
    let k = routing.n_used;
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut probs = [0.0f32; MAX_EXPERTS];
    let probs = &mut probs[..logits.len()];
    let mut sum = 0.0f64;
    for (p, &l) in probs.iter_mut().zip(logits) {
        *p = (l - max).exp();
        sum += f64::from(*p);
    }
    let inv = (1.0 / sum) as f32;
    for p in probs.iter_mut() {
        *p *= inv;
    }

    let (ids, weights) = choice.split_at_mut(k);
    let mut taken = [false; MAX_EXPERTS];
    for (id, w) in ids.iter_mut().zip(weights.iter_mut()) {
        let mut best: Option<usize> = None;
        for (e, &p) in probs.iter().enumerate() {
            if !taken[e] && best.is_none_or(|b| p > probs[b]) {
                best = Some(e);
            }
        }
        let e = best.unwrap_or(0);
        taken[e] = true;
        *id = e as f32;
        *w = probs[e];
    }
    if routing.norm_weights {
        let total: f32 = weights.iter().sum();
        let inv = 1.0 / total.max(MIN_WEIGHT_SUM);
        for w in weights.iter_mut() {
            *w *= inv;
        }
    }
    if routing.weights_scale != 1.0 {
        for w in weights.iter_mut() {
            *w *= routing.weights_scale;
        }
    }
}

/// `out[t·k + j] = expert(choice[t][j]) · x[t or t·k + j]` (see `Backend::matmul_experts`).
pub(super) fn matmul(
    s: &mut Scratch,
    precision: Precision,
    experts: &QMatrix<'_>,
    n_expert: usize,
    choice: &CpuBuffer,
    x: &CpuPrepared,
    out: &mut CpuBuffer,
) -> Result<()> {
    let k = choice.cols / 2;
    let n = choice.rows;
    let cols = experts.cols();
    if n_expert == 0 || experts.rows() % n_expert != 0 {
        return Err(shape_error(
            "matmul_experts",
            "rows of the stacked experts",
            n_expert,
            experts.rows(),
        ));
    }
    let rows = experts.rows() / n_expert;
    check("matmul_experts", "input width", cols, x.cols)?;
    check("matmul_experts", "output width", rows, out.cols)?;
    check("matmul_experts", "output rows", n * k, out.rows)?;
    let x_rows = x.x.len() / cols.max(1);
    let per_slot = match x_rows {
        r if r == n * k && k != 1 => true,
        r if r == n => false,
        r => return Err(shape_error("matmul_experts", "input rows", n, r)),
    };
    let row_bytes = experts.data().len() / experts.rows().max(1);
    let planes = match precision {
        Precision::Q8 => Some(Planes::One),
        Precision::Q16 => Some(Planes::Two),
        Precision::F32 => None,
    };
    for e in 0..n_expert {
        s.rows.clear();
        for (t, c) in choice.data.chunks_exact(choice.cols).enumerate() {
            for (j, &id) in c[..k].iter().enumerate() {
                if id as usize == e {
                    s.rows.push(t * k + j);
                }
            }
        }
        if s.rows.is_empty() {
            continue;
        }
        let m = s.rows.len();
        s.x.clear();
        for &r in &s.rows {
            let src = if per_slot { r } else { r / k };
            s.x.extend_from_slice(&x.x[src * cols..(src + 1) * cols]);
        }
        let data = &experts.data()[e * rows * row_bytes..(e + 1) * rows * row_bytes];
        let w = QMatrix::new(experts.ty(), rows, cols, data)?;
        s.y.clear();
        s.y.resize(m * rows, 0.0);
        let input = match planes {
            Some(planes) if cols.is_multiple_of(ferrolm_quant::dot::ACT_BLOCK) => {
                let acts = s.acts.get_or_insert_with(QuantizedActivations::new);
                acts.quantize_planes(&s.x, cols, planes)?;
                Input::with_quantized(&s.x, acts)?
            }
            _ => Input::f32(&s.x, cols)?,
        };
        w.forward(&input, &mut s.y)?;
        for (i, &r) in s.rows.iter().enumerate() {
            out.data[r * rows..(r + 1) * rows].copy_from_slice(&s.y[i * rows..(i + 1) * rows]);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_picks_the_largest_probabilities_and_renormalizes() {
        let routing = MoeRouting {
            n_used: 2,
            norm_weights: true,
            weights_scale: 1.0,
        };
        let mut choice = [0.0f32; 4];
        route(&[0.0, 2.0, -1.0, 1.0], &routing, &mut choice);
        assert_eq!(&choice[..2], &[1.0, 3.0]);
        // e² / (e² + e¹) and e¹ / (e² + e¹)
        let (a, b) = (2.0f32.exp(), 1.0f32.exp());
        assert!((choice[2] - a / (a + b)).abs() < 1e-6);
        assert!((choice[3] - b / (a + b)).abs() < 1e-6);
    }

    #[test]
    fn route_without_renormalizing_keeps_softmax_probabilities_and_scales() {
        let routing = MoeRouting {
            n_used: 1,
            norm_weights: false,
            weights_scale: 2.0,
        };
        let mut choice = [0.0f32; 2];
        route(&[1.0, 1.0, 0.0], &routing, &mut choice);
        // A tie goes to the lower index.
        assert_eq!(choice[0], 0.0);
        let p = 1.0f32.exp() / (2.0 * 1.0f32.exp() + 1.0);
        assert!((choice[1] - 2.0 * p).abs() < 1e-6);
    }
}
