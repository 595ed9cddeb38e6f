//! The sampling flags that `run` and `chat` share: a preset, flags that override its values,
//! and the choice of the entropy-guided sampler, turned into a [`SamplingConfig`].

use std::fmt::Write as _;

use anyhow::Result;
use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use ferrolm_sampling::{Preset, SamplerChain, SamplingConfig, SamplingError};

use crate::output::UsageError;

/// Entropy-guided weight when `--sampler entropy` is given without `--entropy-weight`.
pub const DEFAULT_ENTROPY_WEIGHT: f32 = 0.2;

/// `--sampler`: what selects the token at the end of the chain.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SamplerKind {
    /// A seeded draw from what the truncation samplers leave (greedy at temperature 0).
    #[default]
    Default,
    /// The same chain with entropy-guided selection before the draw (see --entropy-weight).
    Entropy,
}

/// Sampling options of `run` and `chat`. Every value flag overrides the preset's value.
#[derive(Debug, Clone, clap::Args)]
pub struct SamplingArgs {
    /// A named set of sampling values; the flags below override single values of it.
    #[arg(long, value_name = "NAME", value_parser = preset_parser(), default_value = "standard")]
    pub preset: Preset,
    /// Temperature; 0 is greedy [preset standard: 0.8].
    #[arg(long, value_name = "T")]
    pub temp: Option<f32>,
    /// Keep the K most likely tokens (0: off) [preset standard: 40].
    #[arg(long, value_name = "K")]
    pub top_k: Option<usize>,
    /// Nucleus sampling: keep the most likely tokens up to this probability mass (1: off)
    /// [preset standard: 0.95].
    #[arg(long, value_name = "P")]
    pub top_p: Option<f32>,
    /// Keep tokens at least this fraction as likely as the best (0: off) [preset standard: 0.05].
    #[arg(long, value_name = "P")]
    pub min_p: Option<f32>,
    /// Locally typical sampling: keep the tokens whose surprisal is closest to the
    /// distribution's entropy, up to this probability mass (1: off) [presets: 1].
    #[arg(long = "typical", value_name = "P")]
    pub typical_p: Option<f32>,
    /// Penalty on tokens among the last 64 (1: off) [preset standard: 1].
    #[arg(long, value_name = "R")]
    pub repeat_penalty: Option<f32>,
    /// Seed of the sampler (default: from the clock).
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,
    /// The selection at the end of the chain: `default`, or `entropy` to trade each
    /// token's log-probability against the information it adds given the recent tokens.
    #[arg(long, value_enum, value_name = "KIND")]
    pub sampler: Option<SamplerKind>,
    /// Entropy-guided weight w in [0, 1]: each token scores (1 − w)·ln p + w·I, where I is
    /// its surprisal under the n-gram counts of the recent tokens, so tokens the context has
    /// made predictable lose ground to new ones. 0 is plain sampling; keep it well below 1
    /// (w also flattens the distribution like a temperature of 1/(1 − w))
    /// [with --sampler entropy: 0.2].
    #[arg(long, value_name = "W")]
    pub entropy_weight: Option<f32>,
    /// Entropy-guided n-gram order (at least 1): a token's information is counted after
    /// the last order − 1 tokens [3].
    #[arg(long, value_name = "N")]
    pub entropy_order: Option<usize>,
    /// Entropy-guided history: how many recent tokens are counted (at least the order) [256].
    #[arg(long, value_name = "N")]
    pub entropy_window: Option<usize>,
}

/// The parser of `--preset`: the names of [`Preset::ALL`], each listed with its values.
fn preset_parser() -> impl TypedValueParser<Value = Preset> {
    PossibleValuesParser::new(
        Preset::ALL
            .map(|p| PossibleValue::new(p.name()).help(describe(&SamplingConfig::preset(p)))),
    )
    .try_map(|name| name.parse::<Preset>())
}

/// The values of a configuration in the flags' words, as `--help` and `-v` show them.
pub fn describe(c: &SamplingConfig) -> String {
    let off = |on: bool, value: String| if on { value } else { "off".to_owned() };
    let mut text = if c.is_greedy() {
        format!(
            "greedy (always the most likely token), repeat-penalty {}",
            c.repeat_penalty
        )
    } else {
        format!(
            "temp {}, top-k {}, top-p {}, min-p {}, typical {}, repeat-penalty {}",
            c.temperature,
            off(c.top_k > 0, c.top_k.to_string()),
            off(c.top_p < 1.0, c.top_p.to_string()),
            off(c.min_p > 0.0, c.min_p.to_string()),
            off(c.typical_p < 1.0, c.typical_p.to_string()),
            c.repeat_penalty,
        )
    };
    if c.entropy_weight > 0.0 {
        let _ = write!(
            text,
            ", entropy-guided w {} order {} window {}",
            c.entropy_weight, c.entropy_order, c.entropy_window
        );
    }
    text
}

impl SamplingArgs {
    /// The preset's values with every given flag in place of its value; the seed comes
    /// from the clock unless `--seed` was given. Errors (exit code 2) name the flag at fault.
    pub fn config(&self) -> Result<SamplingConfig> {
        let entropy = self.sampler == Some(SamplerKind::Entropy);
        if !entropy {
            let given = [
                ("--entropy-weight", self.entropy_weight.is_some()),
                ("--entropy-order", self.entropy_order.is_some()),
                ("--entropy-window", self.entropy_window.is_some()),
            ];
            if let Some((flag, _)) = given.iter().find(|(_, g)| *g) {
                return Err(UsageError(format!("{flag} needs --sampler entropy")).into());
            }
        }
        let base = SamplingConfig::preset(self.preset);
        let config = SamplingConfig {
            temperature: self.temp.unwrap_or(base.temperature),
            top_k: self.top_k.unwrap_or(base.top_k),
            top_p: self.top_p.unwrap_or(base.top_p),
            min_p: self.min_p.unwrap_or(base.min_p),
            typical_p: self.typical_p.unwrap_or(base.typical_p),
            repeat_penalty: self.repeat_penalty.unwrap_or(base.repeat_penalty),
            entropy_weight: if entropy {
                self.entropy_weight.unwrap_or(DEFAULT_ENTROPY_WEIGHT)
            } else {
                base.entropy_weight
            },
            entropy_order: self.entropy_order.unwrap_or(base.entropy_order),
            entropy_window: self.entropy_window.unwrap_or(base.entropy_window),
            seed: self.seed.unwrap_or_else(clock_seed),
            ..base
        };
        config.build().map_err(|e| usage_error(&e))?;
        if entropy && config.is_greedy() {
            return Err(UsageError(format!(
                "--sampler entropy needs a random draw, but these settings are greedy ({}); \
                 raise --temp, or choose another --preset",
                describe(&config)
            ))
            .into());
        }
        Ok(config)
    }

    /// The chain [`SamplingArgs::config`] describes; the chain and the values are logged
    /// at `-v`.
    pub fn chain(&self) -> Result<SamplerChain> {
        let config = self.config()?;
        let chain = config.build()?;
        tracing::info!("sampling: {} ({chain})", describe(&config));
        Ok(chain)
    }
}

/// A sampler's complaint about a value, as a usage error naming the flag that set it.
fn usage_error(e: &SamplingError) -> anyhow::Error {
    let flag = match e {
        SamplingError::InvalidParameter {
            sampler, parameter, ..
        } => match (*sampler, *parameter) {
            ("temperature", _) => Some("--temp"),
            ("top-p", _) => Some("--top-p"),
            ("min-p", _) => Some("--min-p"),
            ("typical-p", _) => Some("--typical"),
            ("penalties", "repeat") => Some("--repeat-penalty"),
            ("entropy-guided", "weight") => Some("--entropy-weight"),
            ("entropy-guided", "order") => Some("--entropy-order"),
            ("entropy-guided", "window") => Some("--entropy-window"),
            _ => None,
        },
        _ => None,
    };
    match flag {
        Some(flag) => UsageError(format!("invalid {flag}: {e}")).into(),
        None => anyhow::Error::new(e.clone()).context("invalid sampling settings"),
    }
}

/// A seed that differs from run to run.
fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Flags {
        #[command(flatten)]
        sampling: SamplingArgs,
    }

    fn config(args: &[&str]) -> Result<SamplingConfig> {
        let flags = Flags::try_parse_from(std::iter::once("x").chain(args.iter().copied()))?;
        flags.sampling.config()
    }

    fn usage_message(args: &[&str]) -> String {
        let err = config(args).unwrap_err();
        err.downcast_ref::<UsageError>()
            .unwrap_or_else(|| panic!("{args:?}: not a usage error: {err:#}"))
            .0
            .clone()
    }

    #[test]
    fn without_flags_the_standard_preset_applies() {
        let c = config(&["--seed", "3"]).unwrap();
        assert_eq!(
            c,
            SamplingConfig {
                seed: 3,
                ..SamplingConfig::preset(Preset::Standard)
            }
        );
    }

    #[test]
    fn each_preset_gives_its_values_and_flags_override_them() {
        for p in Preset::ALL {
            let c = config(&["--preset", p.name(), "--seed", "1"]).unwrap();
            assert_eq!(
                c,
                SamplingConfig {
                    seed: 1,
                    ..SamplingConfig::preset(p)
                },
                "{p}"
            );
        }
        let c = config(&["--preset", "creative", "--temp", "0.5", "--typical", "0.9"]).unwrap();
        assert_eq!((c.temperature, c.typical_p), (0.5, 0.9));
        // The rest stays creative.
        assert_eq!(
            (c.top_k, c.top_p, c.min_p, c.repeat_penalty),
            (100, 0.98, 0.02, 1.05)
        );
        let c = config(&["--preset", "greedy", "--temp", "0.7"]).unwrap();
        assert!(!c.is_greedy());
        assert!(Flags::try_parse_from(["x", "--preset", "wild"]).is_err());
    }

    #[test]
    fn entropy_sampler_turns_on_the_stage_with_its_flags() {
        let c = config(&["--sampler", "entropy"]).unwrap();
        assert_eq!(
            (c.entropy_weight, c.entropy_order, c.entropy_window),
            (DEFAULT_ENTROPY_WEIGHT, 3, 256)
        );
        let c = config(&[
            "--sampler",
            "entropy",
            "--entropy-weight",
            "0.4",
            "--entropy-order",
            "2",
            "--entropy-window",
            "32",
        ])
        .unwrap();
        assert_eq!(
            (c.entropy_weight, c.entropy_order, c.entropy_window),
            (0.4, 2, 32)
        );
        assert!(
            c.build()
                .unwrap()
                .to_string()
                .ends_with("entropy-guided -> dist")
        );
        assert_eq!(config(&[]).unwrap().entropy_weight, 0.0);
    }

    #[test]
    fn bad_values_are_usage_errors_naming_the_flag() {
        let cases: [(&[&str], &str); 9] = [
            (&["--top-p", "1.5"], "--top-p"),
            (&["--min-p=-1"], "--min-p"),
            (&["--typical", "2"], "--typical"),
            (&["--temp=-1"], "--temp"),
            (&["--repeat-penalty", "0"], "--repeat-penalty"),
            (
                &["--sampler", "entropy", "--entropy-weight", "1.5"],
                "--entropy-weight",
            ),
            (
                &["--sampler", "entropy", "--entropy-order", "0"],
                "--entropy-order",
            ),
            (
                &[
                    "--sampler",
                    "entropy",
                    "--entropy-order",
                    "4",
                    "--entropy-window",
                    "3",
                ],
                "--entropy-window",
            ),
            (
                &["--entropy-weight", "0.3"],
                "--entropy-weight needs --sampler entropy",
            ),
        ];
        for (args, expected) in cases {
            let message = usage_message(args);
            assert!(message.contains(expected), "{args:?}: {message}");
        }
        let message = usage_message(&["--sampler", "entropy", "--temp", "0"]);
        assert!(message.contains("greedy"), "{message}");
    }

    #[test]
    fn description_shows_what_is_on() {
        let c = SamplingConfig::preset(Preset::MinP);
        assert_eq!(
            describe(&c),
            "temp 1, top-k off, top-p off, min-p 0.1, typical off, repeat-penalty 1"
        );
        let c = SamplingConfig {
            entropy_weight: 0.25,
            ..SamplingConfig::preset(Preset::Standard)
        };
        assert!(
            describe(&c).ends_with("min-p 0.05, typical off, repeat-penalty 1, entropy-guided w 0.25 order 3 window 256"),
            "{}",
            describe(&c)
        );
        let c = SamplingConfig::preset(Preset::Greedy);
        assert_eq!(
            describe(&c),
            "greedy (always the most likely token), repeat-penalty 1"
        );
    }
}
