//! `ferrolm pull [MODEL]`: fetch a model into the model cache and print its path.

use anyhow::Result;

use crate::models::{self, DEFAULT_MODEL};
use crate::output::print_stdout;

/// Arguments of `ferrolm pull`.
#[derive(Debug, clap::Args)]
pub struct PullArgs {
    /// What to fetch: a known model (smollm2-135m, gemma3-270m), an https:// link to a .gguf
    /// file, or a Hugging Face reference: hf:OWNER/REPO[:QUANT] (the file whose name carries
    /// QUANT, e.g. Q4_K_M; without QUANT the repository's only model, else its Q4_K_M) or
    /// hf:OWNER/REPO/FILE.gguf. HF_TOKEN is sent to the Hub; HF_ENDPOINT replaces
    /// https://huggingface.co. A partial download is resumed.
    #[arg(default_value = DEFAULT_MODEL, value_name = "MODEL")]
    pub name: String,
    /// Compute the SHA-256 of a present copy again, even when nothing about it changed.
    #[arg(long)]
    pub verify: bool,
}

/// Downloads the model unless a verified copy is present; prints its path on stdout.
pub fn run(args: &PullArgs) -> Result<()> {
    if crate::hub::parse(&args.name).is_none() && models::known(&args.name).is_none() {
        anyhow::bail!(
            "`{}` is not a known model (known models: {}), an http(s):// link to a .gguf file or a Hugging Face reference (hf:OWNER/REPO[:QUANT])",
            args.name,
            models::known_names()
        );
    }
    let path = models::resolve_with(&args.name, args.verify)?;
    print_stdout(&format!("{}\n", path.display()))
}
