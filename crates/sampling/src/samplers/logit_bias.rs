use crate::samplers::check_parameter;
use crate::{Candidates, RowEdit, Sampler, SamplingError};

/// Adds a fixed bias to the logits of chosen tokens; a bias of −∞ bans a token.
/// Tokens outside the candidate set are ignored.
#[derive(Debug, Clone, PartialEq)]
pub struct LogitBias {
    // Sorted by token, one entry per token.
    table: Vec<(u32, f32)>,
}

impl LogitBias {
    /// Biases as `(token, bias)` pairs; repeated tokens add up. A bias may be
    /// finite or −∞, not NaN or +∞.
    pub fn new(biases: impl IntoIterator<Item = (u32, f32)>) -> Result<Self, SamplingError> {
        let mut table: Vec<(u32, f32)> = biases.into_iter().collect();
        for &(_, b) in &table {
            check_parameter(
                !b.is_nan() && b != f32::INFINITY,
                "logit-bias",
                "bias",
                b,
                "a finite value or -inf",
            )?;
        }
        table.sort_unstable_by_key(|e| e.0);
        table.dedup_by(|later, kept| {
            if later.0 == kept.0 {
                kept.1 += later.1;
                true
            } else {
                false
            }
        });
        Ok(Self { table })
    }
}

impl Sampler for LogitBias {
    fn name(&self) -> &'static str {
        "logit-bias"
    }

    fn apply(&mut self, candidates: &mut Candidates) -> Result<(), SamplingError> {
        if !self.table.is_empty() {
            candidates.for_each_listed(&self.table, |c, b| c.logit += b);
            candidates.logits_changed();
        }
        Ok(())
    }

    fn row_edit(&self) -> RowEdit {
        if self.table.is_empty() {
            RowEdit::Nothing
        } else {
            RowEdit::Edit
        }
    }

    fn edit_row(&mut self, row: &mut [f32]) {
        for &(token, b) in &self.table {
            if let Some(l) = row.get_mut(token as usize) {
                *l += b;
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn adds_biases_and_bans() {
        let mut s = LogitBias::new([(2, 1.5), (0, f32::NEG_INFINITY), (2, 0.5), (9, 3.0)]).unwrap();
        let mut c = Candidates::from_logits(&[5.0, 1.0, 1.0]).unwrap();
        s.apply(&mut c).unwrap();
        let got: Vec<f32> = c.as_slice().iter().map(|c| c.logit).collect();
        assert_eq!(got, [f32::NEG_INFINITY, 1.0, 3.0]);
        assert!(LogitBias::new([(1, f32::INFINITY)]).is_err());
        assert!(LogitBias::new([(1, f32::NAN)]).is_err());
    }
}
