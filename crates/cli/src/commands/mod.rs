//! One module per subcommand: each has an `Args` struct (clap) and a `run` function.

pub mod analyze;
pub mod bench;
pub mod cache;
pub mod chat;
pub mod embed;
pub mod inspect;
pub mod kl_divergence;
pub mod perplexity;
pub mod pull;
pub mod quantize;
pub mod run;
pub mod serve;
pub mod tokenize;
pub mod tokenizer;

/// Logs (at info, shown by `-v`) the memory a backend took for copies of the weights
/// beside the mapped file: the CPU backend repacks rows for its integer kernels.
pub(crate) fn log_weight_copies<'w>(backend: &impl ferrolm_transformer::Backend<'w>) {
    let bytes = backend.weight_copy_bytes();
    if bytes > 0 {
        tracing::info!(
            "{} backend: {:.0} MiB of weights repacked for the {} kernels, beside the mapped file",
            backend.name(),
            bytes as f64 / (1024.0 * 1024.0),
            ferrolm_quant::kernel_set()
        );
    }
}
