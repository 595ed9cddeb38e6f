//! `ferrolm perplexity -m MODEL -f FILE -c CTX [--json]`: perplexity of a text by
//! llama.cpp's protocol, with a progress bar on stderr.

use std::path::PathBuf;

use anyhow::{Context, Result};
use ferrolm_analysis::perplexity::{ChunkProgress, tokenize_text};
use ferrolm_analysis::{Perplexity, PerplexityOptions, perplexity};
use ferrolm_gguf::Gguf;
use ferrolm_tokenizer::Tokenizer;
use ferrolm_transformer::{Backend, Model};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use tracing::info;

use super::run::{Device, Loaded, ModelArgs};
use crate::output::print_stdout;

/// Arguments of `ferrolm perplexity`.
#[derive(Debug, clap::Args)]
pub struct PerplexityArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The text file to score.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: PathBuf,
    /// Tokens per chunk.
    #[arg(short = 'c', long = "ctx-size", default_value_t = 512)]
    pub ctx_size: usize,
    /// Tokens per forward pass (0: a whole chunk, up to 512); does not change the figure.
    #[arg(short = 'b', long = "batch-size", default_value_t = 0)]
    pub batch_size: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// A bar over the chunks of a text, on stderr (hidden when stderr is not a terminal).
pub fn chunk_bar(total: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(total as u64).with_message(what.to_owned());
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] chunk {pos}/{len} {elapsed}<{eta} {prefix}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar
}

/// Reads a text file, with an error naming it.
pub fn read_text(path: &PathBuf) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    String::from_utf8(bytes).with_context(|| format!("{} is not UTF-8 text", path.display()))
}

/// Scores the file and prints the result.
pub fn run(args: &PerplexityArgs) -> Result<()> {
    let text = read_text(&args.file)?;
    let loaded = Loaded::open(&args.model)?;
    let gguf = loaded.file.gguf()?;
    let tokenizer = Tokenizer::from_gguf(&gguf)?;
    match args.model.device {
        Device::Cpu => score_on(args, &text, &gguf, &tokenizer, args.model.backend()?),
        Device::Cuda => score_on(args, &text, &gguf, &tokenizer, ModelArgs::cuda_backend()?),
    }
}

fn score_on<'w, B: Backend<'w>>(
    args: &PerplexityArgs,
    text: &str,
    gguf: &Gguf<'w>,
    tokenizer: &Tokenizer,
    backend: B,
) -> Result<()> {
    let model = Model::load(gguf, backend)?;
    let (tokens, bos) = tokenize_text(tokenizer, text);
    info!(
        "{} tokens, {} chunks of {}",
        tokens.len(),
        tokens.len() / args.ctx_size.max(1),
        args.ctx_size
    );
    let options = PerplexityOptions {
        n_ctx: args.ctx_size,
        batch: args.batch_size,
    };
    let bar = chunk_bar(tokens.len() / args.ctx_size.max(1), "perplexity");
    let result = perplexity(&model, &tokens, bos, options, |p: ChunkProgress| {
        bar.set_position(p.done as u64);
        bar.set_prefix(format!("PPL {:.4}", p.ppl));
        info!("[{}/{}] PPL {:.4}", p.done, p.total, p.ppl);
    });
    bar.finish_and_clear();
    let result = result.with_context(|| format!("cannot score {}", args.file.display()))?;
    print_stdout(&report(&result, args.json))
}

fn report(r: &Perplexity, as_json: bool) -> String {
    if as_json {
        let line = json!({
            "ppl": r.ppl,
            "chunks": r.chunks,
            "tokens_scored": r.tokens_scored,
            "ppl_stderr": r.ppl_stderr,
            "n_ctx": r.n_ctx,
            "mean_nll": r.mean_nll,
        });
        format!("{line}\n")
    } else {
        format!(
            "PPL = {:.4} +/- {:.5} ({} chunks of {} tokens, {} tokens scored)\n",
            r.ppl, r.ppl_stderr, r.chunks, r.n_ctx, r.tokens_scored
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_report_has_the_contract_keys() {
        let r = Perplexity {
            ppl: 20.5,
            chunks: 3,
            tokens_scored: 381,
            ppl_stderr: 0.9,
            mean_nll: 20.5f64.ln(),
            n_ctx: 256,
        };
        let v: serde_json::Value = serde_json::from_str(&report(&r, true)).unwrap_or_default();
        assert_eq!(v["ppl"], 20.5);
        assert_eq!(v["chunks"], 3);
        assert_eq!(v["tokens_scored"], 381);
        assert_eq!(v["ppl_stderr"], 0.9);
        assert!(report(&r, false).starts_with("PPL = 20.5000 +/- 0.90000"));
    }
}
