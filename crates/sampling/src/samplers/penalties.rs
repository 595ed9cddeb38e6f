use std::collections::VecDeque;

use crate::samplers::check_parameter;
use crate::{Candidates, RowEdit, Sampler, SamplingError};

/// Repetition, frequency and presence penalties over the last `last_n`
/// accepted tokens, with llama.cpp's semantics. For a token seen `n > 0` times:
///
/// - repetition: a positive logit is divided by `repeat`, a non-positive one
///   multiplied by it (so `repeat > 1` always makes the token less likely);
/// - then `logit -= n * frequency + presence`.
///
/// Neutral values (`repeat = 1`, `frequency = presence = 0`) or `last_n = 0` disable it.
#[derive(Debug, Clone, PartialEq)]
pub struct Penalties {
    last_n: usize,
    repeat: f32,
    frequency: f32,
    presence: f32,
    history: VecDeque<u32>,
    counts: Vec<(u32, u32)>,
}

impl Penalties {
    /// Penalties over the last `last_n` tokens; `repeat > 0`, all finite.
    pub fn new(
        last_n: usize,
        repeat: f32,
        frequency: f32,
        presence: f32,
    ) -> Result<Self, SamplingError> {
        check_parameter(
            repeat.is_finite() && repeat > 0.0,
            "penalties",
            "repeat",
            repeat,
            "a finite value > 0",
        )?;
        check_parameter(
            frequency.is_finite(),
            "penalties",
            "frequency",
            frequency,
            "a finite value",
        )?;
        check_parameter(
            presence.is_finite(),
            "penalties",
            "presence",
            presence,
            "a finite value",
        )?;
        // The window fills up to last_n entries; reserve what a typical window needs.
        let reserve = last_n.min(4096);
        Ok(Self {
            last_n,
            repeat,
            frequency,
            presence,
            history: VecDeque::with_capacity(reserve),
            counts: Vec::with_capacity(reserve),
        })
    }

    /// Fills `counts` with `(token, occurrences)` over the window, sorted by token.
    fn count_history(&mut self) {
        self.counts.clear();
        self.counts.extend(self.history.iter().map(|&t| (t, 1)));
        self.counts.sort_unstable_by_key(|e| e.0);
        self.counts.dedup_by(|later, kept| {
            if later.0 == kept.0 {
                kept.1 += 1;
                true
            } else {
                false
            }
        });
    }

    fn is_neutral(&self) -> bool {
        self.last_n == 0 || (self.repeat == 1.0 && self.frequency == 0.0 && self.presence == 0.0)
    }
}

impl Sampler for Penalties {
    fn name(&self) -> &'static str {
        "penalties"
    }

    fn apply(&mut self, candidates: &mut Candidates) -> Result<(), SamplingError> {
        if self.is_neutral() || self.history.is_empty() {
            return Ok(());
        }
        self.count_history();
        let (repeat, frequency, presence) = (self.repeat, self.frequency, self.presence);
        candidates.for_each_listed(&self.counts, |c, n| {
            c.logit = penalize(c.logit, n, repeat, frequency, presence);
        });
        candidates.logits_changed();
        Ok(())
    }

    fn row_edit(&self) -> RowEdit {
        if self.is_neutral() || self.history.is_empty() {
            RowEdit::Nothing
        } else {
            RowEdit::Edit
        }
    }

    fn edit_row(&mut self, row: &mut [f32]) {
        self.count_history();
        for &(token, n) in &self.counts {
            if let Some(l) = row.get_mut(token as usize) {
                *l = penalize(*l, n, self.repeat, self.frequency, self.presence);
            }
        }
    }

    fn accept(&mut self, token: u32) {
        if self.last_n == 0 {
            return;
        }
        if self.history.len() == self.last_n {
            self.history.pop_front();
        }
        self.history.push_back(token);
    }

    fn reset(&mut self) {
        self.history.clear();
    }
}

fn penalize(logit: f32, n: u32, repeat: f32, frequency: f32, presence: f32) -> f32 {
    let scaled = if logit <= 0.0 {
        logit * repeat
    } else {
        logit / repeat
    };
    scaled - (n as f32 * frequency + presence)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn logits_after(p: &mut Penalties, logits: &[f32]) -> Vec<f32> {
        let mut c = Candidates::from_logits(logits).unwrap();
        p.apply(&mut c).unwrap();
        let mut out = vec![0.0; logits.len()];
        for c in c.as_slice() {
            out[c.id as usize] = c.logit;
        }
        out
    }

    #[test]
    fn repetition_divides_positive_and_multiplies_negative() {
        let mut p = Penalties::new(64, 2.0, 0.0, 0.0).unwrap();
        p.accept(0);
        p.accept(1);
        assert_eq!(logits_after(&mut p, &[4.0, -3.0, 5.0]), [2.0, -6.0, 5.0]);
    }

    #[test]
    fn frequency_and_presence_use_counts_in_the_window() {
        let mut p = Penalties::new(3, 1.0, 0.5, 1.0).unwrap();
        for t in [2, 0, 0, 0] {
            p.accept(t);
        }
        // The window holds 0, 0, 0: token 2 fell out of it.
        assert_eq!(
            logits_after(&mut p, &[1.0, 1.0, 1.0]),
            [1.0 - 1.5 - 1.0, 1.0, 1.0]
        );
        p.reset();
        assert_eq!(logits_after(&mut p, &[1.0, 1.0, 1.0]), [1.0, 1.0, 1.0]);
    }

    #[test]
    fn works_on_a_reduced_candidate_set() {
        let mut p = Penalties::new(8, 2.0, 0.0, 0.0).unwrap();
        p.accept(3);
        let mut c = Candidates::from_logits(&[0.0, 1.0, 2.0, 6.0]).unwrap();
        c.keep_top_k(2);
        p.apply(&mut c).unwrap();
        let got: Vec<(u32, f32)> = c.as_slice().iter().map(|c| (c.id, c.logit)).collect();
        assert_eq!(got, [(3, 3.0), (2, 2.0)]);
    }

    #[test]
    fn rejects_bad_parameters() {
        assert!(Penalties::new(64, 0.0, 0.0, 0.0).is_err());
        assert!(Penalties::new(64, 1.1, f32::NAN, 0.0).is_err());
    }
}
