//! The samplers that end a chain by choosing one token.

use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};

use crate::{Candidates, Sampler, SamplingError};

/// Selects the best-ranked candidate: the largest logit, the smallest token id
/// among ties. Needs no probabilities and no sort.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Greedy;

impl Sampler for Greedy {
    fn name(&self) -> &'static str {
        "greedy"
    }

    fn apply(&mut self, candidates: &mut Candidates) -> Result<(), SamplingError> {
        let n_candidates = candidates.len();
        match candidates.best() {
            Some(best) if best.logit > f32::NEG_INFINITY => {
                candidates.select(best.id);
                Ok(())
            }
            _ => Err(SamplingError::NoSelectableToken { n_candidates }),
        }
    }

    fn fill_from_row(
        &mut self,
        row: &[f32],
        candidates: &mut Candidates,
    ) -> Result<(), SamplingError> {
        candidates.fill_greedy(row).map(|_| ())
    }
}

/// Draws a token from the softmax of the candidates' logits with a seeded
/// ChaCha20 stream, so a seed gives the same tokens on every run and platform.
///
/// The stream's key is the seed's eight little-endian bytes followed by zeros;
/// each draw takes one 64-bit output `x` and forms `u = (x >> 11) · 2⁻⁵³` in
/// `[0, 1)`. Walking the candidates in their current order, it selects the
/// first whose cumulative probability (summed in `f64`) exceeds `u`; a token
/// of probability 0 is never chosen. Probabilities come from a max-shifted
/// softmax, so nothing underflows to an all-zero row.
#[derive(Debug, Clone)]
pub struct Distribution {
    seed: u64,
    rng: ChaCha20Rng,
}

impl Distribution {
    /// A selector whose stream starts from `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            rng: stream(seed),
        }
    }

    /// The seed this selector started from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The next uniform number in `[0, 1)` from the stream.
    fn next_unit(&mut self) -> f64 {
        (self.rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

fn stream(seed: u64) -> ChaCha20Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    ChaCha20Rng::from_seed(key)
}

impl Sampler for Distribution {
    fn name(&self) -> &'static str {
        "dist"
    }

    fn apply(&mut self, candidates: &mut Candidates) -> Result<(), SamplingError> {
        let n_candidates = candidates.len();
        if n_candidates == 0 || candidates.max_logit() == f32::NEG_INFINITY {
            return Err(SamplingError::NoSelectableToken { n_candidates });
        }
        candidates.softmax();
        let u = self.next_unit();
        let mut cum = 0.0_f64;
        let mut last_possible = None;
        let mut chosen = None;
        for c in candidates.as_slice() {
            if c.prob > 0.0 {
                cum += f64::from(c.prob);
                last_possible = Some(c.id);
                if cum > u {
                    chosen = Some(c.id);
                    break;
                }
            }
        }
        // Rounding can leave the total a hair below u; the mass then belongs to
        // the last token that has any.
        match chosen.or(last_possible) {
            Some(id) => {
                candidates.select(id);
                Ok(())
            }
            None => Err(SamplingError::NoSelectableToken { n_candidates }),
        }
    }

    fn reset(&mut self) {
        self.rng = stream(self.seed);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn greedy_picks_the_smallest_id_among_tied_maxima() {
        let mut c = Candidates::from_logits(&[1.0, 7.0, 3.0, 7.0]).unwrap();
        Greedy.apply(&mut c).unwrap();
        assert_eq!(c.selected(), Some(1));
    }

    #[test]
    fn all_nan_row_is_an_error_for_both_selectors() {
        let logits = [f32::NAN; 5];
        let mut c = Candidates::from_logits(&logits).unwrap();
        assert_eq!(
            Greedy.apply(&mut c),
            Err(SamplingError::NoSelectableToken { n_candidates: 5 })
        );
        let mut c = Candidates::from_logits(&logits).unwrap();
        assert_eq!(
            Distribution::new(1).apply(&mut c),
            Err(SamplingError::NoSelectableToken { n_candidates: 5 })
        );
    }

    #[test]
    fn distribution_never_picks_masked_tokens() {
        let logits = [f32::NEG_INFINITY, 0.0, f32::NAN, 0.0, f32::NEG_INFINITY];
        let mut d = Distribution::new(3);
        for _ in 0..2000 {
            let mut c = Candidates::from_logits(&logits).unwrap();
            d.apply(&mut c).unwrap();
            assert!(matches!(c.selected(), Some(1 | 3)));
        }
    }

    #[test]
    fn frequencies_follow_the_probabilities() {
        // p = 0.5, 0.3, 0.15, 0.05
        let logits = [0.5_f32.ln(), 0.3_f32.ln(), 0.15_f32.ln(), 0.05_f32.ln()];
        let mut d = Distribution::new(2024);
        let mut counts = [0u32; 4];
        let n = 40_000;
        for _ in 0..n {
            let mut c = Candidates::from_logits(&logits).unwrap();
            d.apply(&mut c).unwrap();
            counts[c.selected().unwrap() as usize] += 1;
        }
        for (count, p) in counts.iter().zip([0.5, 0.3, 0.15, 0.05]) {
            let f = f64::from(*count) / f64::from(n);
            // Five standard deviations of a binomial proportion.
            let tolerance = 5.0 * (p * (1.0 - p) / f64::from(n)).sqrt();
            assert!((f - p).abs() < tolerance, "frequency {f} for p = {p}");
        }
    }

    #[test]
    fn reset_restarts_the_stream() {
        let logits: Vec<f32> = (0..50).map(|i| (i % 7) as f32 * 0.3).collect();
        let mut d = Distribution::new(99);
        let draw = |d: &mut Distribution| {
            let mut c = Candidates::from_logits(&logits).unwrap();
            d.apply(&mut c).unwrap();
            c.selected().unwrap()
        };
        let first: Vec<u32> = (0..20).map(|_| draw(&mut d)).collect();
        d.reset();
        let again: Vec<u32> = (0..20).map(|_| draw(&mut d)).collect();
        assert_eq!(first, again);
    }
}
