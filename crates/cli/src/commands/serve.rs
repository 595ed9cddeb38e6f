//! `ferrolm serve`: an OpenAI-compatible server with streaming and continuous batching.

use anyhow::Result;

use ferrolm_transformer::backend::cuda::CudaBackend;

use crate::commands::run::{Device, ModelArgs};
use crate::models::DEFAULT_MODEL;
use crate::serve::{ServerOptions, serve};

/// Arguments of `ferrolm serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0: any free port; the address is printed on stdout).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Context size of each sequence, prompt and reply together (at most the model's
    /// training context).
    #[arg(short = 'c', long = "ctx-size", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(2..))]
    pub ctx_size: u32,
    /// Sequences generated at once (continuous batching).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub parallel: u32,
    /// Requests that may wait for a free sequence; beyond that requests get a 503.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub queue: u32,
    /// Most tokens run in one step (decode tokens plus prompt chunks).
    #[arg(short = 'b', long = "batch-size", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub batch_size: u32,
    /// How /v1/embeddings pools the hidden states: mean, last or cls. Default: the model's
    /// `pooling_type`, else mean.
    #[arg(long, value_enum)]
    pub pooling: Option<super::embed::PoolingArg>,
}

/// Serves until SIGINT or SIGTERM.
pub fn run(args: &ServeArgs) -> Result<()> {
    let spec = args.model.model.as_deref().unwrap_or(DEFAULT_MODEL);
    let options = ServerOptions {
        model: spec.to_owned(),
        host: args.host.clone(),
        port: args.port,
        n_ctx: args.ctx_size as usize,
        slots: args.parallel as usize,
        queue: args.queue as usize,
        max_batch: args.batch_size as usize,
        pooling: args.pooling.map(Into::into),
    };
    let model = args.model.clone();
    match args.model.device {
        Device::Cpu => serve(&options, move || model.backend()),
        Device::Cuda => serve(&options, || Ok(CudaBackend::new(0)?)),
    }
}
