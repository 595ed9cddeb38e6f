use crate::samplers::check_parameter;
use crate::{Candidates, Sampler, SamplingError};

/// Divides every logit by `t`: below 1 sharpens the distribution, above 1
/// flattens it. `t = 0` keeps only the best-ranked token (greedy).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Temperature {
    t: f32,
}

impl Temperature {
    /// A temperature `t`, finite and `>= 0`.
    pub fn new(t: f32) -> Result<Self, SamplingError> {
        check_parameter(
            t.is_finite() && t >= 0.0,
            "temperature",
            "t",
            t,
            "a finite value >= 0",
        )?;
        Ok(Self { t })
    }

    /// The temperature.
    pub fn value(&self) -> f32 {
        self.t
    }
}

impl Sampler for Temperature {
    fn name(&self) -> &'static str {
        "temperature"
    }

    fn apply(&mut self, candidates: &mut Candidates) -> Result<(), SamplingError> {
        if self.t == 0.0 {
            candidates.keep_top_k(1);
        } else if self.t != 1.0 {
            for c in candidates.data_mut() {
                c.logit /= self.t;
            }
            candidates.logits_rescaled();
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn divides_logits_and_keeps_order() {
        let mut c = Candidates::from_logits(&[1.0, 3.0, -2.0]).unwrap();
        c.sort();
        Temperature::new(0.5).unwrap().apply(&mut c).unwrap();
        let got: Vec<(u32, f32)> = c.as_slice().iter().map(|c| (c.id, c.logit)).collect();
        assert_eq!(got, [(1, 6.0), (0, 2.0), (2, -4.0)]);
        assert!(c.is_sorted());
    }

    #[test]
    fn zero_keeps_the_greedy_token() {
        let mut c = Candidates::from_logits(&[1.0, 3.0, 3.0]).unwrap();
        Temperature::new(0.0).unwrap().apply(&mut c).unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(c.as_slice()[0].id, 1);
    }

    #[test]
    fn rejects_negative_and_nan() {
        assert!(Temperature::new(-0.1).is_err());
        assert!(Temperature::new(f32::NAN).is_err());
        assert!(Temperature::new(f32::INFINITY).is_err());
    }
}
