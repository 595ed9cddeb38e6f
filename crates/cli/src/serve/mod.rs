//! `ferrolm serve`: an OpenAI-compatible HTTP server.
//!
//! A [`ferrolm_engine::Engine`] owns the model and advances every active sequence together
//! (continuous batching); the [`routes`] run on a small tokio runtime, translate requests into
//! the engine's jobs and stream its events back as JSON or server-sent events.

mod embeddings;
pub mod error;
mod metrics;
pub mod model;
pub mod prompt;
pub mod request;
pub mod response;
pub mod routes;
pub mod tools;

use std::path::Path;

use anyhow::{Context, Result};
use ferrolm_engine::{Engine, EngineOptions};
use ferrolm_transformer::Backend;
use tracing::info;

use crate::models;
use crate::output::print_stdout;
use model::ServedModel;

/// How to run the server.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// A .gguf path or a known model name.
    pub model: String,
    /// Address to listen on.
    pub host: String,
    /// Port (0: any free port).
    pub port: u16,
    /// Positions per sequence.
    pub n_ctx: usize,
    /// Sequences generated at once.
    pub slots: usize,
    /// Requests that may wait for a slot.
    pub queue: usize,
    /// Most tokens per step.
    pub max_batch: usize,
    /// Pooling of `/v1/embeddings` (`None`: the model's, else mean).
    pub pooling: Option<ferrolm_transformer::Pooling>,
}

/// Loads the model on the backend `make_backend` makes, listens, and serves until SIGINT or SIGTERM; then stops taking
/// connections, lets the replies in progress finish, and returns.
pub fn serve<B, F>(options: &ServerOptions, make_backend: F) -> Result<()>
where
    B: for<'w> Backend<'w>,
    F: FnOnce() -> Result<B> + Send + 'static,
{
    let path = models::resolve(&options.model)?;
    let id = model_id(&options.model, &path);
    let engine = Engine::start(
        path,
        EngineOptions {
            n_ctx: options.n_ctx,
            slots: options.slots,
            queue: options.queue,
            max_batch: options.max_batch,
            pooling: options.pooling,
        },
        make_backend,
    )?;
    let handle = engine.handle().clone();
    let served = ServedModel::new(id, handle.info());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("ferrolm-http")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind((options.host.as_str(), options.port))
            .await
            .with_context(|| format!("cannot listen on {}:{}", options.host, options.port))?;
        let addr = listener.local_addr()?;
        print_stdout(&format!("listening on http://{addr}\n"))?;
        info!("serving {} on http://{addr}", served.id);
        axum::serve(listener, routes::router(routes::App::new(handle, served)))
            .with_graceful_shutdown(shutdown_signal())
            .await
            .context("the server failed")
    });
    drop(runtime);
    // Every other handle is gone now, so the engine ends once its last sequence is done.
    engine.join()?;
    info!("stopped");
    result
}

/// The name clients use: a known model's name, or the file's stem.
fn model_id(spec: &str, path: &Path) -> String {
    if let Some(known) = models::known(spec) {
        return known.name.to_owned();
    }
    path.file_stem()
        .and_then(|s| s.to_str())
        .map_or_else(|| spec.to_owned(), str::to_owned)
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => info!("SIGINT: finishing the replies in progress"),
        () = terminate => info!("SIGTERM: finishing the replies in progress"),
    }
}
