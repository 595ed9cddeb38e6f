//! `ferrolm analyze -m MODEL -p PROMPT [--json]`: per-token surprisal and entropy, attention
//! health per layer, the most attended tokens, transfer entropy between per-position
//! signals of the prompt, and (with `--influence`) the tokens with the most influence on
//! later ones.

use anyhow::{Result, bail};
use ferrolm_analysis::analyzer::{MetricsOptions, TransferEntropyOptions};
use ferrolm_analysis::influence::InfluenceOptions;
use ferrolm_analysis::{AnalysisOptions, Analyzer, HealthThresholds};
use ferrolm_tokenizer::{EncodeOptions, Tokenizer};
use ferrolm_transformer::Model;

use super::run::{Loaded, ModelArgs};
use crate::output::{UsageError, print_stdout};

/// Arguments of `ferrolm analyze` (flags are independent switches).
#[derive(Debug, clap::Args)]
#[allow(clippy::struct_excessive_bools)]
pub struct AnalyzeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The prompt to analyse.
    #[arg(short = 'p', long)]
    pub prompt: String,
    /// The k of the top-k probability mass.
    #[arg(long, default_value_t = 10)]
    pub top_k: usize,
    /// Leave out the attention diagnostics.
    #[arg(long)]
    pub no_attention: bool,
    /// Leave out transfer entropy.
    #[arg(long)]
    pub no_transfer_entropy: bool,
    /// History length k of transfer entropy.
    #[arg(long, default_value_t = 1)]
    pub history: usize,
    /// Equal-frequency bins per signal for transfer entropy.
    #[arg(long, default_value_t = 2)]
    pub bins: u32,
    /// List the N prompt tokens (10 without a value) with the most influence on the tokens
    /// after them. Influence is the transfer entropy, in bits, from the attention later
    /// positions pay to a token (mean over layers and heads) to the surprisal of the token
    /// each of them predicts, beyond what the recent surprisals already tell; both series are
    /// binned (--bins, --history) and tokens are ranked by how far their TE exceeds the
    /// largest of 100 shuffles of the attention series. It is a statistical estimate from one
    /// prompt, not a causal one: short prompts give few samples and noisy figures, and tokens
    /// with fewer than 8 later positions are not ranked.
    #[arg(long, value_name = "N", num_args = 0..=1, default_missing_value = "10")]
    pub influence: Option<usize>,
    /// Do not add the BOS token even if the model asks for it.
    #[arg(long)]
    pub no_bos: bool,
    /// Turn special-token text such as `<|im_start|>` into its token.
    #[arg(long)]
    pub parse_special: bool,
    /// Print one JSON object instead of the report.
    #[arg(long)]
    pub json: bool,
}

/// Analyses the prompt and prints the report.
pub fn run(args: &AnalyzeArgs) -> Result<()> {
    if args.bins < 2 {
        bail!("--bins must be at least 2");
    }
    if args.influence == Some(0) {
        return Err(UsageError("--influence 0 lists nothing; give 1 or more".into()).into());
    }
    let loaded = Loaded::open(&args.model)?;
    let gguf = loaded.file.gguf()?;
    let tokenizer = Tokenizer::from_gguf(&gguf)?;
    let model = Model::load(&gguf, args.model.backend()?)?;
    let options = EncodeOptions {
        add_special: !args.no_bos,
        parse_special: args.parse_special,
    };
    let tokens = tokenizer.encode(&args.prompt, options);
    if tokens.len() < 2 {
        bail!(
            "the prompt gives {} token(s); analysis needs at least 2",
            tokens.len()
        );
    }
    if tokens.len() > model.config().n_ctx_train {
        bail!(
            "the prompt has {} tokens, more than the model's context of {}",
            tokens.len(),
            model.config().n_ctx_train
        );
    }
    let estimate = TransferEntropyOptions {
        history: args.history,
        bins: args.bins,
        ..TransferEntropyOptions::default()
    };
    let analyzer = Analyzer::new(AnalysisOptions {
        metrics: Some(MetricsOptions { top_k: args.top_k }),
        attention: (!args.no_attention).then(HealthThresholds::default),
        transfer_entropy: (!args.no_transfer_entropy).then_some(estimate),
        influence: args.influence.map(|top| InfluenceOptions {
            top,
            estimate,
            ..InfluenceOptions::default()
        }),
    });
    let analysis = analyzer.analyze(&model, &tokens, |t| {
        tokenizer
            .token_to_piece(t, true)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    })?;
    if args.json {
        print_stdout(&format!("{}\n", serde_json::to_string(&analysis)?))
    } else {
        print_stdout(&analysis.to_text())
    }
}
