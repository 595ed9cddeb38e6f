use thiserror::Error;

/// Everything that can go wrong while building a sampler or drawing a token.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum SamplingError {
    /// The logits row handed to the sampler was empty.
    #[error("the logits row is empty")]
    EmptyLogits,

    /// The logits row is longer than token ids (`u32`) can address.
    #[error("the logits row has {len} entries, more than a u32 token id can address")]
    VocabularyTooLarge {
        /// Length of the row.
        len: usize,
    },

    /// Every remaining candidate has a NaN or −∞ logit, so no token can be chosen.
    #[error("no selectable token: all {n_candidates} candidates have NaN or -inf logits")]
    NoSelectableToken {
        /// How many candidates were left when selection was attempted.
        n_candidates: usize,
    },

    /// The chain ran to its end without any sampler selecting a token
    /// (a chain must end in a selector such as [`crate::Greedy`] or [`crate::Distribution`]).
    #[error("the sampler chain has no selector: no token was selected")]
    NoSelection,

    /// A sampler parameter is outside its allowed range.
    #[error("{sampler}: {parameter} = {value} is invalid (expected {expected})")]
    InvalidParameter {
        /// The sampler the parameter belongs to.
        sampler: &'static str,
        /// The parameter's name.
        parameter: &'static str,
        /// The value that was given.
        value: f64,
        /// The allowed range, in words.
        expected: &'static str,
    },

    /// A token id is outside the logits row.
    #[error("token {token} is outside the vocabulary of {n_vocab} entries")]
    TokenOutOfRange {
        /// The offending token id.
        token: u32,
        /// Length of the logits row.
        n_vocab: usize,
    },

    /// A preset name that is not one of the known presets.
    #[error(
        "unknown sampling preset {name:?} (expected greedy, standard, creative, precise or min-p)"
    )]
    UnknownPreset {
        /// The name that was given.
        name: String,
    },
}
