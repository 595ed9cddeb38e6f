//! `ferrolm`: run and inspect GGUF language models from the command line.
//!
//! Each subcommand lives in its own module under `commands/`; adding one means
//! a module there and one variant in [`Command`]. Logs and progress go to
//! stderr, results to stdout, and every error ends the process with one line on
//! stderr and a non-zero exit code.

mod commands;
mod constrain;
mod download;
mod fetch;
mod file_type;
mod hub;
mod interrupt;
mod models;
mod output;
mod sampling;
mod serve;
mod split;

use clap::{ArgAction, Parser, Subcommand};
use std::io::IsTerminal;
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

/// Run GGUF language models locally.
#[derive(Debug, Parser)]
#[command(name = "ferrolm", version, about, propagate_version = true)]
struct Cli {
    /// Log more on stderr (-v info, -vv debug, -vvv trace); RUST_LOG overrides it.
    #[arg(short, long, action = ArgAction::Count, global = true)]
    verbose: u8,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Download a model into the model cache (unless it is already there): a known name, an
    /// https:// link to a .gguf file, or hf:OWNER/REPO[:QUANT].
    Pull(commands::pull::PullArgs),
    /// The models in the model cache: name, size, quantization, architecture and path.
    List(commands::cache::ListArgs),
    /// Remove models from the model cache.
    Rm(commands::cache::RmArgs),
    /// Show a model's metadata, hyperparameters, tokenizer, tensors, types and sizes.
    Inspect(commands::inspect::InspectArgs),
    /// Token ids of a text under a model's vocabulary.
    Tokenize(commands::tokenize::TokenizeArgs),
    /// Vocabulary tools: `tokenizer train` learns a BPE vocabulary from text files.
    Tokenizer(commands::tokenizer::TokenizerArgs),
    /// Requantize a model's weight matrices to another type.
    Quantize(commands::quantize::QuantizeArgs),
    /// Generate a continuation of a prompt.
    Run(commands::run::RunArgs),
    /// Talk with a model through its chat template.
    Chat(commands::chat::ChatArgs),
    /// A text's embedding: the model's final hidden states, pooled and normalised.
    Embed(commands::embed::EmbedArgs),
    /// Measure prefill and decode speed (llama-bench's protocol).
    Bench(commands::bench::BenchArgs),
    /// Serve the model over an OpenAI-compatible HTTP API.
    Serve(commands::serve::ServeArgs),
    /// Perplexity of a text file, by llama.cpp's protocol.
    Perplexity(commands::perplexity::PerplexityArgs),
    /// KL divergence of one model's next-token distributions from another's on a text.
    KlDivergence(commands::kl_divergence::KlDivergenceArgs),
    /// Per-token entropy and surprisal, attention health and transfer entropy of a prompt.
    Analyze(commands::analyze::AnalyzeArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let result = match &cli.command {
        Command::Pull(args) => commands::pull::run(args),
        Command::List(args) => commands::cache::list(args),
        Command::Rm(args) => commands::cache::rm(args),
        Command::Inspect(args) => commands::inspect::run(args),
        Command::Tokenize(args) => commands::tokenize::run(args),
        Command::Tokenizer(args) => commands::tokenizer::run(args),
        Command::Quantize(args) => commands::quantize::run(args),
        Command::Run(args) => commands::run::run(args),
        Command::Chat(args) => commands::chat::run(args),
        Command::Embed(args) => commands::embed::run(args),
        Command::Bench(args) => commands::bench::run(args),
        Command::Serve(args) => commands::serve::run(args),
        Command::Perplexity(args) => commands::perplexity::run(args),
        Command::KlDivergence(args) => commands::kl_divergence::run(args),
        Command::Analyze(args) => commands::analyze::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", output::error_line(&err));
            if err.downcast_ref::<output::UsageError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Logs go to stderr; `RUST_LOG` wins over `-v` when it is set and valid.
fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}
