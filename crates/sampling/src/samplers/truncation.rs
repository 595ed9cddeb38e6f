//! Samplers that drop unlikely candidates.

use std::cmp::Ordering;

use crate::candidates::{rank_order, sort_prefix_by};
use crate::samplers::{check_parameter, is_probability};
use crate::softmax::max_logit;
use crate::{Candidate, Candidates, Sampler, SamplingError};

/// Keeps the `k` best-ranked candidates (ties broken by smaller token id), sorted.
/// `k = 0` disables it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopK {
    k: usize,
}

impl TopK {
    /// Keep `k` candidates; 0 keeps all.
    pub fn new(k: usize) -> Self {
        Self { k }
    }
}

impl Sampler for TopK {
    fn name(&self) -> &'static str {
        "top-k"
    }

    fn apply(&mut self, candidates: &mut Candidates) -> Result<(), SamplingError> {
        if self.k > 0 {
            candidates.keep_top_k(self.k);
        }
        Ok(())
    }

    fn fill_from_row(
        &mut self,
        row: &[f32],
        candidates: &mut Candidates,
    ) -> Result<(), SamplingError> {
        if self.k == 0 {
            candidates.fill(row)
        } else {
            candidates.fill_top_k(row, self.k)
        }
    }
}

/// Nucleus sampling: keeps the smallest set of best-ranked candidates whose
/// probabilities sum to at least `p` (and at least `min_keep` of them).
/// `p = 1` disables it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TopP {
    p: f32,
    min_keep: usize,
}

impl TopP {
    /// `p` in `[0, 1]`; `min_keep` of 0 counts as 1.
    pub fn new(p: f32, min_keep: usize) -> Result<Self, SamplingError> {
        check_parameter(
            is_probability(p),
            "top-p",
            "p",
            p,
            "a probability in [0, 1]",
        )?;
        Ok(Self {
            p,
            min_keep: min_keep.max(1),
        })
    }
}

impl Sampler for TopP {
    fn name(&self) -> &'static str {
        "top-p"
    }

    fn apply(&mut self, candidates: &mut Candidates) -> Result<(), SamplingError> {
        if self.p < 1.0 {
            candidates.keep_mass(f64::from(self.p), self.min_keep);
        }
        Ok(())
    }
}

/// Keeps the candidates whose probability is at least `p` times the largest
/// one, tested in log space as `logit >= max_logit + ln p` (no softmax needed).
///
/// `p = 0` disables it; `p = 1` keeps exactly one token, the greedy one (the
/// smallest id among tied maxima), so that min-p 1.0 is greedy decoding.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MinP {
    p: f32,
    min_keep: usize,
}

impl MinP {
    /// `p` in `[0, 1]`; `min_keep` of 0 counts as 1.
    pub fn new(p: f32, min_keep: usize) -> Result<Self, SamplingError> {
        check_parameter(
            is_probability(p),
            "min-p",
            "p",
            p,
            "a probability in [0, 1]",
        )?;
        Ok(Self {
            p,
            min_keep: min_keep.max(1),
        })
    }
}

impl Sampler for MinP {
    fn name(&self) -> &'static str {
        "min-p"
    }

    fn apply(&mut self, candidates: &mut Candidates) -> Result<(), SamplingError> {
        if self.p <= 0.0 {
            return Ok(());
        }
        if self.p >= 1.0 {
            candidates.keep_top_k(1);
            return Ok(());
        }
        let max = candidates.max_logit();
        if max == f32::NEG_INFINITY {
            return Ok(());
        }
        // With max = +inf the threshold is +inf and only the infinite logits stay.
        let threshold = max + self.p.ln();
        if self.min_keep > 1 {
            let passing = candidates
                .as_slice()
                .iter()
                .filter(|c| c.logit >= threshold)
                .count();
            if passing < self.min_keep {
                candidates.keep_top_k(self.min_keep);
                return Ok(());
            }
        }
        candidates.keep_logit_at_least(threshold);
        Ok(())
    }

    fn fill_from_row(
        &mut self,
        row: &[f32],
        candidates: &mut Candidates,
    ) -> Result<(), SamplingError> {
        let max = max_logit(row);
        if self.p <= 0.0 || self.min_keep > 1 || max == f32::NEG_INFINITY {
            candidates.fill(row)?;
            return self.apply(candidates);
        }
        if self.p >= 1.0 {
            return candidates.fill_top_k(row, 1);
        }
        candidates.fill_logit_at_least(row, max + self.p.ln())
    }
}

/// Locally typical sampling (Meister et al., 2022): ranks candidates by how
/// close their surprisal `−ln p` is to the entropy `H` of the distribution,
/// `|−ln p − H|` ascending (ties by rank), and keeps the smallest such prefix
/// whose probability reaches `p` (at least `min_keep` candidates).
/// The survivors are returned in rank order. `p = 1` disables it.
#[derive(Debug, Clone, PartialEq)]
pub struct TypicalP {
    p: f32,
    min_keep: usize,
    scratch: Vec<(f32, u32)>,
    kept: Vec<Candidate>,
}

impl TypicalP {
    /// `p` in `[0, 1]`; `min_keep` of 0 counts as 1.
    pub fn new(p: f32, min_keep: usize) -> Result<Self, SamplingError> {
        check_parameter(
            is_probability(p),
            "typical-p",
            "p",
            p,
            "a probability in [0, 1]",
        )?;
        Ok(Self {
            p,
            min_keep: min_keep.max(1),
            scratch: Vec::new(),
            kept: Vec::new(),
        })
    }
}

impl Sampler for TypicalP {
    fn name(&self) -> &'static str {
        "typical-p"
    }

    fn apply(&mut self, candidates: &mut Candidates) -> Result<(), SamplingError> {
        if self.p >= 1.0 || candidates.len() <= self.min_keep {
            return Ok(());
        }
        candidates.softmax();
        let data = candidates.as_slice();
        let entropy: f64 = data
            .iter()
            .filter(|c| c.prob > 0.0)
            .map(|c| {
                let p = f64::from(c.prob);
                -p * p.ln()
            })
            .sum();
        self.scratch.clear();
        self.scratch.extend(data.iter().enumerate().map(|(i, c)| {
            let distance = if c.prob > 0.0 {
                (-f64::from(c.prob).ln() - entropy).abs() as f32
            } else {
                f32::INFINITY
            };
            (distance, i as u32)
        }));
        let order = |a: &(f32, u32), b: &(f32, u32)| match a.0.partial_cmp(&b.0) {
            Some(Ordering::Equal) | None => rank_order(&data[a.1 as usize], &data[b.1 as usize]),
            Some(o) => o,
        };
        let n = self.scratch.len();
        let target = f64::from(self.p);
        let mut cum = 0.0_f64;
        let mut i = 0;
        let mut step = 64;
        let keep = loop {
            let end = (i + step).min(n);
            sort_prefix_by(&mut self.scratch, i, end, order);
            let mut reached = None;
            while i < end {
                cum += f64::from(data[self.scratch[i].1 as usize].prob);
                i += 1;
                if cum >= target && i >= self.min_keep {
                    reached = Some(i);
                    break;
                }
            }
            if let Some(k) = reached {
                break k;
            }
            if end == n {
                break n;
            }
            step *= 4;
        };
        if keep == n {
            return Ok(());
        }
        self.kept.clear();
        self.kept
            .extend(self.scratch[..keep].iter().map(|&(_, i)| data[i as usize]));
        self.kept.sort_unstable_by(rank_order);
        candidates.replace_sorted(self.kept.iter().copied());
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ids(c: &Candidates) -> Vec<u32> {
        c.as_slice().iter().map(|c| c.id).collect()
    }

    #[test]
    fn top_k_zero_is_disabled_and_k_keeps_k() {
        let logits = [0.5, 2.0, -1.0, 3.0, 1.0];
        let mut c = Candidates::from_logits(&logits).unwrap();
        TopK::new(0).apply(&mut c).unwrap();
        assert_eq!(c.len(), 5);
        TopK::new(3).apply(&mut c).unwrap();
        assert_eq!(ids(&c), [3, 1, 4]);
    }

    #[test]
    fn top_p_keeps_the_nucleus() {
        // Probabilities 0.5, 0.25, 0.125, 0.125 (logits are their logs).
        let logits = [0.125_f32.ln(), 0.5_f32.ln(), 0.25_f32.ln(), 0.125_f32.ln()];
        let mut c = Candidates::from_logits(&logits).unwrap();
        TopP::new(0.7, 1).unwrap().apply(&mut c).unwrap();
        assert_eq!(ids(&c), [1, 2]);
        let mut c = Candidates::from_logits(&logits).unwrap();
        TopP::new(0.0, 1).unwrap().apply(&mut c).unwrap();
        assert_eq!(ids(&c), [1]);
        let mut c = Candidates::from_logits(&logits).unwrap();
        TopP::new(0.0, 3).unwrap().apply(&mut c).unwrap();
        assert_eq!(ids(&c), [1, 2, 0]);
        assert!(TopP::new(1.5, 1).is_err());
    }

    #[test]
    fn min_p_cuts_relative_to_the_best() {
        // Probabilities proportional to 1, 0.5, 0.09, 0.2.
        let logits = [0.0_f32, 0.5_f32.ln(), 0.09_f32.ln(), 0.2_f32.ln()];
        let mut c = Candidates::from_logits(&logits).unwrap();
        MinP::new(0.1, 1).unwrap().apply(&mut c).unwrap();
        assert_eq!(ids(&c), [0, 1, 3]);
        let mut c = Candidates::from_logits(&logits).unwrap();
        MinP::new(0.6, 3).unwrap().apply(&mut c).unwrap();
        assert_eq!(ids(&c), [0, 1, 3]);
    }

    #[test]
    fn min_p_one_keeps_only_the_greedy_token_among_ties() {
        let mut c = Candidates::from_logits(&[1.0, 4.0, 4.0, 2.0]).unwrap();
        MinP::new(1.0, 1).unwrap().apply(&mut c).unwrap();
        assert_eq!(ids(&c), [1]);
    }

    #[test]
    fn typical_prefers_tokens_near_the_entropy() {
        // p = 0.4, 0.3, 0.2, 0.1: H ≈ 1.2799 nats; |−ln p − H| ≈ 0.364, 0.076, 0.330, 1.023,
        // so the typical order is 1, 2, 0, 3.
        let logits = [0.4_f32.ln(), 0.3_f32.ln(), 0.2_f32.ln(), 0.1_f32.ln()];
        let mut c = Candidates::from_logits(&logits).unwrap();
        TypicalP::new(0.45, 1).unwrap().apply(&mut c).unwrap();
        assert_eq!(ids(&c), [1, 2]);
        let mut c = Candidates::from_logits(&logits).unwrap();
        TypicalP::new(0.85, 1).unwrap().apply(&mut c).unwrap();
        assert_eq!(ids(&c), [0, 1, 2]);
        assert!(c.is_sorted());
    }
}
