//! The samplers: transforms of the candidate set and the selectors that end a chain.

mod entropy_guided;
mod logit_bias;
mod penalties;
mod selector;
mod temperature;
mod truncation;

pub use entropy_guided::EntropyGuided;
pub use logit_bias::LogitBias;
pub use penalties::Penalties;
pub use selector::{Distribution, Greedy};
pub use temperature::Temperature;
pub use truncation::{MinP, TopK, TopP, TypicalP};

use crate::SamplingError;

/// Ok when `ok`, else an [`SamplingError::InvalidParameter`] naming the value.
fn check_parameter(
    ok: bool,
    sampler: &'static str,
    parameter: &'static str,
    value: f32,
    expected: &'static str,
) -> Result<(), SamplingError> {
    if ok {
        Ok(())
    } else {
        Err(SamplingError::InvalidParameter {
            sampler,
            parameter,
            value: f64::from(value),
            expected,
        })
    }
}

/// Whether `p` is a probability in `[0, 1]` (NaN is not).
fn is_probability(p: f32) -> bool {
    (0.0..=1.0).contains(&p)
}
