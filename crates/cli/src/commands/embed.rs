//! `ferrolm embed`: a text's embedding, the model's final hidden states pooled into one vector.

use std::io::Read as _;

use anyhow::{Context, Result, bail};
use ferrolm_engine::model_pooling;
use ferrolm_gguf::Gguf;
use ferrolm_tokenizer::{EncodeOptions, Tokenizer};
use ferrolm_transformer::{Backend, Model, Pooling, embed};

use super::run::{Device, Loaded, ModelArgs};
use crate::output::print_stdout;

/// `--pooling`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PoolingArg {
    /// The mean over every token.
    Mean,
    /// The last token's state (it has seen the whole text).
    Last,
    /// The first token's state.
    Cls,
}

impl From<PoolingArg> for Pooling {
    fn from(p: PoolingArg) -> Self {
        match p {
            PoolingArg::Mean => Pooling::Mean,
            PoolingArg::Last => Pooling::Last,
            PoolingArg::Cls => Pooling::Cls,
        }
    }
}

/// Arguments of `ferrolm embed`.
#[derive(Debug, clap::Args)]
pub struct EmbedArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The text (or -f FILE; -f - reads stdin).
    #[arg(conflicts_with = "file")]
    pub text: Option<String>,
    /// Read the text from a file (- for stdin).
    #[arg(short = 'f', long)]
    pub file: Option<std::path::PathBuf>,
    /// How the per-token hidden states become one vector: mean, last or cls (first token).
    /// Default: the model's `pooling_type`, else mean.
    #[arg(long, value_enum)]
    pub pooling: Option<PoolingArg>,
    /// Keep the vector's length instead of scaling it to 1.
    #[arg(long)]
    pub no_normalize: bool,
    /// Print a JSON object (`embedding`, `n_tokens`, `pooling`) instead of the values.
    #[arg(long)]
    pub json: bool,
}

/// The name of a pooling, as the flag spells it.
pub fn pooling_name(p: Pooling) -> &'static str {
    match p {
        Pooling::Mean => "mean",
        Pooling::Last => "last",
        Pooling::Cls => "cls",
    }
}

/// Prints the embedding of the text.
pub fn run(args: &EmbedArgs) -> Result<()> {
    let text = match (&args.text, &args.file) {
        (Some(text), None) => text.clone(),
        (None, Some(path)) if path.as_os_str() == "-" => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("cannot read the text from stdin")?;
            text
        }
        (None, Some(path)) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?,
        _ => {
            return Err(crate::output::UsageError(
                "give the text to embed, or a file with -f FILE (-f - reads stdin)".into(),
            )
            .into());
        }
    };
    let loaded = Loaded::open(&args.model)?;
    let gguf = loaded.file.gguf()?;
    let tokenizer = Tokenizer::from_gguf(&gguf)?;
    match args.model.device {
        Device::Cpu => embed_on(args, &gguf, &tokenizer, &text, args.model.backend()?),
        Device::Cuda => embed_on(args, &gguf, &tokenizer, &text, ModelArgs::cuda_backend()?),
    }
}

fn embed_on<'w, B: Backend<'w>>(
    args: &EmbedArgs,
    gguf: &Gguf<'w>,
    tokenizer: &Tokenizer,
    text: &str,
    backend: B,
) -> Result<()> {
    let model = Model::load(gguf, backend)?;
    let ids = tokenizer.encode(text, EncodeOptions::default());
    if ids.is_empty() {
        bail!("the text gives no tokens");
    }
    let n_ctx = model.config().n_ctx_train;
    if ids.len() > n_ctx {
        bail!(
            "the text has {} tokens, more than the model's context of {n_ctx}",
            ids.len()
        );
    }
    let pooling = args
        .pooling
        .map(Pooling::from)
        .or_else(|| model_pooling(gguf))
        .unwrap_or(Pooling::Mean);
    let vector = embed(&model, &ids, pooling, !args.no_normalize)?;
    if args.json {
        let value = serde_json::json!({
            "embedding": vector,
            "n_tokens": ids.len(),
            "pooling": pooling_name(pooling),
            "normalized": !args.no_normalize,
        });
        return print_stdout(&format!("{value}\n"));
    }
    let mut out = String::with_capacity(vector.len() * 12);
    for (i, v) in vector.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(&v.to_string());
    }
    out.push('\n');
    print_stdout(&out)
}
