use std::collections::VecDeque;

use crate::exp::exp_f32;
use crate::samplers::{check_parameter, is_probability};
use crate::{Candidates, Sampler, SamplingError};

/// Entropy-guided selection: trades the model's log-probability against the
/// information a token adds given the recent context.
///
/// # Definition
///
/// Let `r` be the last `window` accepted tokens, `m` the n-gram `order` and `h`
/// the last `m − 1` tokens of `r` (empty when `m = 1`). An *occurrence* of `h`
/// is a position `j` with `r[j .. j+m−1] = h` and a following token
/// `r[j+m−1]` inside `r`. Let `c(h)` count the occurrences and `c(h, t)` those
/// followed by `t`. The information token `t` adds is its surprisal under
/// Laplace's rule of succession for the event "`h` is followed by `t`":
///
/// ```text
/// I(t) = −ln( (c(h, t) + 1) / (c(h) + 2) ) = ln(c(h) + 2) − ln(c(h, t) + 1)
/// ```
///
/// so a continuation the recent context has already made predictable adds
/// little, and a new one adds `ln(c(h) + 2)`. Each candidate's logit becomes
/// its score
///
/// ```text
/// score(t) = (1 − w) · ln p(t) + w · I(t)
/// ```
///
/// with `p` the softmax of the candidates as this sampler receives them (after
/// any temperature), and the selector that follows draws from the softmax of
/// the scores: `∝ p(t)^(1−w) · e^(w·I(t))`. Candidates at −∞ stay there.
///
/// `w = 0` leaves the candidates untouched (plain sampling); `w = 1` ignores
/// the model and picks by novelty alone, so keep it well below 1 and after the
/// truncation samplers. Note that `(1 − w)` also flattens the model's
/// distribution, like a temperature of `1/(1 − w)`; the `e^(w·I)` factor then
/// moves mass from continuations the context keeps repeating to new ones.
#[derive(Debug, Clone, PartialEq)]
pub struct EntropyGuided {
    weight: f32,
    order: usize,
    window: usize,
    history: VecDeque<u32>,
    followers: Vec<(u32, u32)>,
}

impl EntropyGuided {
    /// Weight `w` in `[0, 1]`, n-gram `order >= 1`, `window >= order` tokens of history.
    pub fn new(weight: f32, order: usize, window: usize) -> Result<Self, SamplingError> {
        check_parameter(
            is_probability(weight),
            "entropy-guided",
            "weight",
            weight,
            "a value in [0, 1]",
        )?;
        check_parameter(
            order >= 1,
            "entropy-guided",
            "order",
            order as f32,
            "at least 1",
        )?;
        check_parameter(
            window >= order,
            "entropy-guided",
            "window",
            window as f32,
            "at least the order",
        )?;
        let reserve = window.min(4096);
        Ok(Self {
            weight,
            order,
            window,
            history: VecDeque::with_capacity(reserve),
            followers: Vec::with_capacity(reserve),
        })
    }

    /// Fills `followers` with `(token, c(h, token))` sorted by token; returns `c(h)`.
    fn count_followers(&mut self) -> u32 {
        self.followers.clear();
        let r = self.history.make_contiguous();
        let ctx = self.order - 1;
        if r.len() < self.order {
            return 0;
        }
        let h = &r[r.len() - ctx..];
        for j in 0..=r.len() - self.order {
            if &r[j..j + ctx] == h {
                self.followers.push((r[j + ctx], 1));
            }
        }
        let total = self.followers.len() as u32;
        self.followers.sort_unstable_by_key(|e| e.0);
        self.followers.dedup_by(|later, kept| {
            if later.0 == kept.0 {
                kept.1 += 1;
                true
            } else {
                false
            }
        });
        total
    }
}

impl Sampler for EntropyGuided {
    fn name(&self) -> &'static str {
        "entropy-guided"
    }

    fn apply(&mut self, candidates: &mut Candidates) -> Result<(), SamplingError> {
        if self.weight == 0.0 {
            return Ok(());
        }
        let max = candidates.max_logit();
        if max == f32::NEG_INFINITY {
            return Ok(());
        }
        let w = self.weight;
        let c_h = self.count_followers();
        let novelty = w * (c_h as f32 + 2.0).ln();
        let data = candidates.data_mut();
        if max == f32::INFINITY {
            let log_share = -(data.iter().filter(|c| c.logit == f32::INFINITY).count() as f32).ln();
            for c in data.iter_mut() {
                c.logit = if c.logit == f32::INFINITY {
                    (1.0 - w) * log_share + novelty
                } else {
                    f32::NEG_INFINITY
                };
            }
        } else {
            let z: f64 = data.iter().map(|c| f64::from(exp_f32(c.logit - max))).sum();
            let lse = max + z.ln() as f32;
            for c in data.iter_mut() {
                if c.logit > f32::NEG_INFINITY {
                    c.logit = (1.0 - w) * (c.logit - lse) + novelty;
                }
            }
        }
        candidates.for_each_listed(&self.followers, |c, n| {
            if c.logit > f32::NEG_INFINITY {
                c.logit -= w * (n as f32 + 1.0).ln();
            }
        });
        candidates.logits_changed();
        Ok(())
    }

    fn accept(&mut self, token: u32) {
        if self.history.len() == self.window {
            self.history.pop_front();
        }
        self.history.push_back(token);
    }

    fn reset(&mut self) {
        self.history.clear();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn scores_follow_the_definition() {
        let mut s = EntropyGuided::new(0.5, 2, 64).unwrap();
        for t in [1, 2, 3, 1, 2, 4, 1] {
            s.accept(t);
        }
        // h = [1]; it occurs twice with a follower, both times followed by 2.
        let mut c = Candidates::from_logits(&[0.0; 5]).unwrap();
        s.apply(&mut c).unwrap();
        let lp = 0.2_f32.ln();
        for cand in c.as_slice() {
            let c_ht: f32 = if cand.id == 2 { 2.0 } else { 0.0 };
            let want = 0.5 * lp + 0.5 * (4.0_f32.ln() - (c_ht + 1.0).ln());
            assert!(
                (cand.logit - want).abs() < 1e-6,
                "token {}: {} vs {want}",
                cand.id,
                cand.logit
            );
        }
    }

    #[test]
    fn unigram_order_counts_the_whole_window() {
        let mut s = EntropyGuided::new(1.0, 1, 4).unwrap();
        for t in [0, 0, 0, 1, 1, 1] {
            s.accept(t);
        }
        // Window holds 0, 1, 1, 1: c(h) = 4, c(0) = 1, c(1) = 3, c(2) = 0; w = 1 ignores the model.
        let mut c = Candidates::from_logits(&[5.0, 0.0, -3.0]).unwrap();
        s.apply(&mut c).unwrap();
        let got: Vec<f32> = c.as_slice().iter().map(|c| c.logit).collect();
        let want = [
            6.0_f32.ln() - 2.0_f32.ln(),
            6.0_f32.ln() - 4.0_f32.ln(),
            6.0_f32.ln(),
        ];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-6);
        }
    }

    #[test]
    fn zero_weight_changes_nothing_and_masked_tokens_stay_masked() {
        let logits = [1.0, f32::NEG_INFINITY, 2.0];
        let mut s = EntropyGuided::new(0.0, 2, 8).unwrap();
        s.accept(0);
        s.accept(2);
        let mut c = Candidates::from_logits(&logits).unwrap();
        s.apply(&mut c).unwrap();
        assert_eq!(
            c.as_slice().iter().map(|c| c.logit).collect::<Vec<_>>(),
            logits
        );
        let mut s = EntropyGuided::new(1.0, 2, 8).unwrap();
        s.accept(0);
        s.accept(2);
        let mut c = Candidates::from_logits(&logits).unwrap();
        s.apply(&mut c).unwrap();
        assert_eq!(c.as_slice()[1].logit, f32::NEG_INFINITY);
        assert!(EntropyGuided::new(1.5, 2, 8).is_err());
        assert!(EntropyGuided::new(0.5, 0, 8).is_err());
        assert!(EntropyGuided::new(0.5, 4, 3).is_err());
    }
}
