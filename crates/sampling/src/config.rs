//! Sampling settings as the command line spells them, and named presets.

use std::fmt;
use std::str::FromStr;

use crate::{
    Distribution, EntropyGuided, Greedy, LogitBias, MinP, Penalties, SamplerChain, SamplingError,
    Temperature, TopK, TopP, TypicalP,
};

/// Every sampling setting, with the command-line flag it comes from.
///
/// [`SamplingConfig::build`] turns it into a chain, leaving out every stage
/// whose setting is neutral, in this order:
///
/// ```text
/// logit-bias -> penalties -> top-k -> typical-p -> top-p -> min-p -> temperature -> entropy-guided -> dist
/// ```
///
/// When [`SamplingConfig::is_greedy`] holds (temperature 0, top-k 1 or
/// min-p 1.0) the chain is `logit-bias -> penalties -> greedy`, which picks
/// exactly the token the full chain would (each of those settings leaves only
/// the best-ranked token), without drawing a random number.
///
/// [`Default`] is the [`Preset::Standard`] preset.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingConfig {
    /// `--temp`: logits are divided by it; 0 means greedy.
    pub temperature: f32,
    /// `--top-k`: keep this many best tokens; 0 disables.
    pub top_k: usize,
    /// `--top-p`: nucleus mass; 1.0 disables.
    pub top_p: f32,
    /// `--min-p`: keep tokens with `p >= min_p * p_max`; 0 disables, 1.0 is greedy.
    pub min_p: f32,
    /// `--typical`: locally typical mass; 1.0 disables.
    pub typical_p: f32,
    /// `--repeat-penalty`: llama.cpp's repetition penalty; 1.0 disables.
    pub repeat_penalty: f32,
    /// How many recent tokens the penalties look at; 0 disables them.
    pub repeat_last_n: usize,
    /// Subtracted once per occurrence in the window.
    pub frequency_penalty: f32,
    /// Subtracted once if the token occurs in the window.
    pub presence_penalty: f32,
    /// `--entropy-weight`: entropy-guided weight `w` in `[0, 1]`; 0 disables (see [`EntropyGuided`]).
    pub entropy_weight: f32,
    /// `--entropy-order`: entropy-guided n-gram order.
    pub entropy_order: usize,
    /// `--entropy-window`: entropy-guided history window in tokens.
    pub entropy_window: usize,
    /// `(token, bias)` pairs added to the logits.
    pub logit_bias: Vec<(u32, f32)>,
    /// `--seed`: the distribution draw's seed.
    pub seed: u64,
}

/// A named set of sampling values.
///
/// | preset | temp | top-k | top-p | min-p | repeat penalty (last 64) |
/// |---|---|---|---|---|---|
/// | `greedy` | 0 | – | – | – | 1.0 |
/// | `standard` | 0.8 | 40 | 0.95 | 0.05 | 1.0 |
/// | `creative` | 1.1 | 100 | 0.98 | 0.02 | 1.05 |
/// | `precise` | 0.3 | 20 | 0.8 | 0.1 | 1.1 |
/// | `min-p` | 1.0 | off | off | 0.1 | 1.0 |
///
/// Every preset has typical-p off, no frequency or presence penalty, no
/// entropy guidance (order 3, window 256 when turned on), no logit bias and seed 0.
/// `standard` is llama.cpp's default chain; `min-p` relies on min-p alone at
/// full temperature, as its authors recommend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Preset {
    /// Always the most likely token.
    Greedy,
    /// A balanced default.
    Standard,
    /// More varied output.
    Creative,
    /// Close to greedy, with a little variety.
    Precise,
    /// Min-p truncation alone.
    MinP,
}

impl Preset {
    /// Every preset, in documentation order.
    pub const ALL: [Preset; 5] = [
        Preset::Greedy,
        Preset::Standard,
        Preset::Creative,
        Preset::Precise,
        Preset::MinP,
    ];

    /// The preset's name as [`FromStr`] accepts it.
    pub fn name(self) -> &'static str {
        match self {
            Preset::Greedy => "greedy",
            Preset::Standard => "standard",
            Preset::Creative => "creative",
            Preset::Precise => "precise",
            Preset::MinP => "min-p",
        }
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Preset {
    type Err = SamplingError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Preset::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| SamplingError::UnknownPreset { name: s.to_owned() })
    }
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self::preset(Preset::Standard)
    }
}

impl SamplingConfig {
    /// The values of a preset.
    pub fn preset(preset: Preset) -> Self {
        let base = Self {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            typical_p: 1.0,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            entropy_weight: 0.0,
            entropy_order: 3,
            entropy_window: 256,
            logit_bias: Vec::new(),
            seed: 0,
        };
        match preset {
            Preset::Greedy => Self {
                temperature: 0.0,
                ..base
            },
            Preset::Standard => base,
            Preset::Creative => Self {
                temperature: 1.1,
                top_k: 100,
                top_p: 0.98,
                min_p: 0.02,
                repeat_penalty: 1.05,
                ..base
            },
            Preset::Precise => Self {
                temperature: 0.3,
                top_k: 20,
                top_p: 0.8,
                min_p: 0.1,
                repeat_penalty: 1.1,
                ..base
            },
            Preset::MinP => Self {
                temperature: 1.0,
                top_k: 0,
                top_p: 1.0,
                min_p: 0.1,
                ..base
            },
        }
    }

    /// Whether these settings always choose the best-ranked token.
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0 || self.top_k == 1 || self.min_p >= 1.0
    }

    /// Builds the chain these settings describe; errors name the first invalid value.
    pub fn build(&self) -> Result<SamplerChain, SamplingError> {
        let mut chain = SamplerChain::new();
        if !self.logit_bias.is_empty() {
            chain.push(LogitBias::new(self.logit_bias.iter().copied())?);
        }
        let penalties = Penalties::new(
            self.repeat_last_n,
            self.repeat_penalty,
            self.frequency_penalty,
            self.presence_penalty,
        )?;
        if self.repeat_last_n > 0
            && (self.repeat_penalty != 1.0
                || self.frequency_penalty != 0.0
                || self.presence_penalty != 0.0)
        {
            chain.push(penalties);
        }
        // Validate everything, even the stages a greedy chain leaves out.
        let temperature = Temperature::new(self.temperature)?;
        let typical = TypicalP::new(self.typical_p, 1)?;
        let top_p = TopP::new(self.top_p, 1)?;
        let min_p = MinP::new(self.min_p, 1)?;
        let entropy =
            EntropyGuided::new(self.entropy_weight, self.entropy_order, self.entropy_window)?;
        if self.is_greedy() {
            chain.push(Greedy);
            return Ok(chain);
        }
        if self.top_k > 0 {
            chain.push(TopK::new(self.top_k));
        }
        if self.typical_p < 1.0 {
            chain.push(typical);
        }
        if self.top_p < 1.0 {
            chain.push(top_p);
        }
        if self.min_p > 0.0 {
            chain.push(min_p);
        }
        if self.temperature != 1.0 {
            chain.push(temperature);
        }
        if self.entropy_weight > 0.0 {
            chain.push(entropy);
        }
        chain.push(Distribution::new(self.seed));
        Ok(chain)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn presets_build_the_documented_chains() {
        let names: Vec<String> = Preset::ALL
            .iter()
            .map(|&p| SamplingConfig::preset(p).build().unwrap().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "greedy",
                "top-k -> top-p -> min-p -> temperature -> dist",
                "penalties -> top-k -> top-p -> min-p -> temperature -> dist",
                "penalties -> top-k -> top-p -> min-p -> temperature -> dist",
                "min-p -> dist",
            ]
        );
    }

    #[test]
    fn preset_names_round_trip() {
        for p in Preset::ALL {
            assert_eq!(p.name().parse::<Preset>().unwrap(), p);
        }
        assert!(matches!(
            "wild".parse::<Preset>(),
            Err(SamplingError::UnknownPreset { .. })
        ));
    }

    #[test]
    fn invalid_values_are_reported_even_when_greedy() {
        let c = SamplingConfig {
            temperature: 0.0,
            top_p: 2.0,
            ..SamplingConfig::default()
        };
        assert!(matches!(
            c.build(),
            Err(SamplingError::InvalidParameter {
                sampler: "top-p",
                ..
            })
        ));
    }

    #[test]
    fn greedy_settings_are_recognised() {
        for c in [
            SamplingConfig {
                temperature: 0.0,
                ..SamplingConfig::default()
            },
            SamplingConfig {
                top_k: 1,
                ..SamplingConfig::default()
            },
            SamplingConfig {
                min_p: 1.0,
                ..SamplingConfig::default()
            },
        ] {
            assert!(c.is_greedy());
            assert_eq!(c.build().unwrap().to_string(), "greedy");
            assert!(c.build().unwrap().is_greedy());
        }
        assert!(!SamplingConfig::default().is_greedy());
        assert!(!SamplingConfig::default().build().unwrap().is_greedy());
        // A penalty in front of greedy selection can move the choice off the raw argmax.
        let penalised = SamplingConfig {
            temperature: 0.0,
            repeat_penalty: 1.3,
            ..SamplingConfig::default()
        };
        assert!(penalised.is_greedy());
        assert!(!penalised.build().unwrap().is_greedy());
    }
}
