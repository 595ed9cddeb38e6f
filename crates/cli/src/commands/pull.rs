//! `ferrolm pull [NAME]`: fetch a known model into the model cache and print its path.

use anyhow::{Context, Result};

use crate::models::{self, DEFAULT_MODEL};
use crate::output::print_stdout;

/// Arguments of `ferrolm pull`.
#[derive(Debug, clap::Args)]
pub struct PullArgs {
    /// Known model to fetch: smollm2-135m or gemma3-270m.
    #[arg(default_value = DEFAULT_MODEL, value_name = "NAME")]
    pub name: String,
    /// Compute the SHA-256 of a present copy again, even when nothing about it changed.
    #[arg(long)]
    pub verify: bool,
}

/// Downloads the model unless a verified copy is present; prints its path on stdout.
pub fn run(args: &PullArgs) -> Result<()> {
    let model = models::known(&args.name).with_context(|| {
        format!(
            "`{}` is not a known model (known models: {})",
            args.name,
            models::known_names()
        )
    })?;
    let path = models::ensure_present(model, &models::models_dir()?, args.verify)?;
    print_stdout(&format!("{}\n", path.display()))
}
