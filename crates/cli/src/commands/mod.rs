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
