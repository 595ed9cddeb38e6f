//! `ferrolm tokenizer train --vocab-size N FILES... -o OUT`: learn a byte-level BPE
//! vocabulary from text files and write it as a vocabulary-only GGUF file, which
//! `ferrolm tokenize -m OUT` reads like a model's vocabulary.

use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use ferrolm_gguf::GgufWriter;
use ferrolm_tokenizer::{BpeTrainer, TrainProgress};
use indicatif::{ProgressBar, ProgressStyle};

use super::perplexity::read_text;
use crate::output::{UsageError, print_stdout};

/// Arguments of `ferrolm tokenizer`.
#[derive(Debug, clap::Args)]
pub struct TokenizerArgs {
    #[command(subcommand)]
    pub command: TokenizerCommand,
}

/// What `ferrolm tokenizer` does.
#[derive(Debug, clap::Subcommand)]
pub enum TokenizerCommand {
    /// Learn a byte-level BPE vocabulary (GPT-2 pre-tokenizer) from text files and write it
    /// as a vocabulary-only GGUF file.
    Train(TrainArgs),
}

/// Arguments of `ferrolm tokenizer train`.
#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// Tokens in the vocabulary: the special token <|endoftext|> (id 0, BOS and EOS), the 256
    /// byte tokens, and one token per learned merge; at least 258. Training stops earlier
    /// when no pair of tokens occurs twice.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub vocab_size: u32,
    /// UTF-8 text files to learn from; each is one document.
    #[arg(value_name = "FILES", required = true, num_args = 1..)]
    pub files: Vec<PathBuf>,
    /// The GGUF file to write (replaced if it exists).
    #[arg(short = 'o', long = "output", value_name = "OUT")]
    pub output: PathBuf,
}

/// The special tokens of a trained vocabulary, first in it.
const SPECIAL_TOKENS: [&str; 1] = ["<|endoftext|>"];
/// Byte tokens every byte-level vocabulary has.
const BYTE_TOKENS: usize = 256;

/// Runs `ferrolm tokenizer ...`.
pub fn run(args: &TokenizerArgs) -> Result<()> {
    match &args.command {
        TokenizerCommand::Train(train) => run_train(train),
    }
}

fn run_train(args: &TrainArgs) -> Result<()> {
    let fixed = SPECIAL_TOKENS.len() + BYTE_TOKENS;
    let vocab_size = args.vocab_size as usize;
    if vocab_size <= fixed {
        return Err(UsageError(format!(
            "--vocab-size {} is too small: the vocabulary holds {} special token(s) and {BYTE_TOKENS} \
             byte tokens before any merge, so give at least {}",
            args.vocab_size,
            SPECIAL_TOKENS.len(),
            fixed + 1
        ))
        .into());
    }
    let mut documents = Vec::with_capacity(args.files.len());
    for path in &args.files {
        let text = read_text(path)?;
        if text.trim().is_empty() {
            bail!(
                "{} is empty: there is no text to learn from",
                path.display()
            );
        }
        documents.push(text);
    }
    let total_bytes: usize = documents.iter().map(String::len).sum();
    let n_merges = vocab_size - fixed;
    let trainer = BpeTrainer {
        special_tokens: SPECIAL_TOKENS.map(str::to_owned).to_vec(),
        ..BpeTrainer::new(n_merges)
    };

    let bar = ProgressBar::new(total_bytes as u64);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message("count words (bytes)");
    let mut counting = true;
    let config =
        trainer.train_with_progress(documents.iter().map(String::as_str), |p| match p {
            TrainProgress::Counted { bytes } => bar.inc(bytes as u64),
            TrainProgress::Merged { merges } => {
                if counting {
                    counting = false;
                    bar.set_message("learn merges");
                    bar.set_length(n_merges as u64);
                }
                bar.set_position(merges as u64);
            }
        })?;
    bar.finish_and_clear();

    let learned = config.merges.as_ref().map_or(0, Vec::len);
    if learned < n_merges {
        eprintln!(
            "note: no pair of tokens occurs twice after {learned} merges; the vocabulary has {} \
             tokens, not {}",
            config.tokens.len(),
            args.vocab_size
        );
    }
    let mut writer = GgufWriter::new();
    config.add_to_gguf(&mut writer);
    writer
        .write_file(&args.output)
        .context("cannot write the vocabulary")?;
    print_stdout(&format!(
        "{}: {} tokens ({learned} merges) learned from {} file(s), {total_bytes} bytes\n",
        args.output.display(),
        config.tokens.len(),
        args.files.len(),
    ))
}
