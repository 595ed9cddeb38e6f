//! `ferrolm tokenize -m MODEL [--no-bos] [--parse-special] [--json] (TEXT | -f FILE)`:
//! the token ids of a text under a model's vocabulary. Works on vocabulary-only files.

use std::fmt::Write as _;
use std::io::Read as _;
use std::path::PathBuf;

use anyhow::{Context, Result};
use ferrolm_gguf::GgufFile;
use ferrolm_tokenizer::{EncodeOptions, Tokenizer};

use super::perplexity::read_text;
use crate::models;
use crate::output::{UsageError, print_stdout};

/// Arguments of `ferrolm tokenize`.
#[derive(Debug, clap::Args)]
pub struct TokenizeArgs {
    /// Path to a .gguf file or a known model name; without it the default model.
    #[arg(short = 'm', long = "model", value_name = "MODEL")]
    pub model: Option<String>,
    /// Do not add the BOS/EOS tokens the model's metadata asks for.
    #[arg(long)]
    pub no_bos: bool,
    /// Turn special-token text such as `<|im_start|>` into its token.
    #[arg(long)]
    pub parse_special: bool,
    /// Print a JSON array of token ids instead of one line per token.
    #[arg(long)]
    pub json: bool,
    /// Read the text from a file.
    #[arg(
        short = 'f',
        long = "file",
        value_name = "FILE",
        conflicts_with = "text"
    )]
    pub file: Option<PathBuf>,
    /// The text to tokenize.
    pub text: Option<String>,
}

/// Tokenizes the text and prints the ids.
pub fn run(args: &TokenizeArgs) -> Result<()> {
    let text = match (&args.text, &args.file) {
        (Some(text), None) => text.clone(),
        (None, Some(path)) if path.as_os_str() == "-" => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("cannot read the text from stdin")?;
            text
        }
        (None, Some(path)) => read_text(path)?,
        _ => {
            return Err(UsageError(
                "give the text to tokenize, or a file with -f FILE (-f - reads stdin)".into(),
            )
            .into());
        }
    };
    let path = models::resolve(args.model.as_deref().unwrap_or(models::DEFAULT_MODEL))?;
    // The reader's errors name the file.
    let file = GgufFile::open(&path).context("cannot open the model")?;
    let gguf = file.gguf()?;
    let tokenizer = Tokenizer::from_gguf_if_present(&gguf)?.with_context(|| {
        format!(
            "{} has no vocabulary (tokenizer.ggml.model is no_vocab or absent)",
            path.display()
        )
    })?;
    let options = EncodeOptions {
        add_special: !args.no_bos,
        parse_special: args.parse_special,
    };
    let ids = tokenizer.encode(&text, options);
    if args.json {
        return print_stdout(&format!("{}\n", serde_json::to_string(&ids)?));
    }
    let mut out = String::new();
    for &id in &ids {
        let piece = tokenizer.token_to_piece(id, true)?;
        let _ = writeln!(out, "{id:>7} {:?}", String::from_utf8_lossy(&piece));
    }
    let _ = writeln!(out, "{} tokens", ids.len());
    print_stdout(&out)
}
