//! One module per subcommand: each has an `Args` struct (clap) and a `run` function.

pub mod inspect;
pub mod pull;
