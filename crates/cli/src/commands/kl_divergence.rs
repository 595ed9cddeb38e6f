//! `ferrolm kl-divergence --base A -m B -f FILE -c CTX [--json]`: how far model B's
//! next-token distributions are from model A's on a text, both run chunk by chunk.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context, Result};
use ferrolm_analysis::kl_divergence::{KlDivergence, KlProgress, Quantiles};
use ferrolm_analysis::perplexity::tokenize_text;
use ferrolm_analysis::{PerplexityOptions, kl_divergence};
use ferrolm_gguf::{Gguf, GgufFile};
use ferrolm_tokenizer::Tokenizer;
use ferrolm_transformer::{Backend, Model};
use serde_json::json;

use super::perplexity::{chunk_bar, read_text};
use super::run::{Device, Loaded, ModelArgs};
use crate::models;
use crate::output::print_stdout;

/// Arguments of `ferrolm kl-divergence`.
#[derive(Debug, clap::Args)]
pub struct KlDivergenceArgs {
    /// The reference model (path or known name), whose distributions are `P`.
    #[arg(long, value_name = "MODEL")]
    pub base: String,
    #[command(flatten)]
    pub model: ModelArgs,
    /// The text file to compare on.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: PathBuf,
    /// Tokens per chunk.
    #[arg(short = 'c', long = "ctx-size", default_value_t = 512)]
    pub ctx_size: usize,
    /// Tokens per forward pass (0: a whole chunk, up to 512).
    #[arg(short = 'b', long = "batch-size", default_value_t = 0)]
    pub batch_size: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Compares the models and prints the result.
pub fn run(args: &KlDivergenceArgs) -> Result<()> {
    let text = read_text(&args.file)?;
    let base_path = models::resolve(&args.base)?;
    let base_file = GgufFile::open(&base_path).context("cannot open the model")?;
    let base_gguf = base_file.gguf()?;
    let tokenizer = Tokenizer::from_gguf(&base_gguf)?;
    let loaded = Loaded::open(&args.model)?;
    let gguf = loaded.file.gguf()?;
    let models = (&base_gguf, &gguf);
    match args.model.device {
        Device::Cpu => {
            let backends = (args.model.backend()?, args.model.backend()?);
            compare_on(args, &text, models, &tokenizer, backends)
        }
        Device::Cuda => {
            let backends = (ModelArgs::cuda_backend()?, ModelArgs::cuda_backend()?);
            compare_on(args, &text, models, &tokenizer, backends)
        }
    }
}

fn compare_on<'w, B: Backend<'w>>(
    args: &KlDivergenceArgs,
    text: &str,
    (base_gguf, gguf): (&Gguf<'w>, &Gguf<'w>),
    tokenizer: &Tokenizer,
    (base_backend, backend): (B, B),
) -> Result<()> {
    let base = Model::load(base_gguf, base_backend)?;
    let model = Model::load(gguf, backend)?;

    let (tokens, bos) = tokenize_text(tokenizer, text);
    let options = PerplexityOptions {
        n_ctx: args.ctx_size,
        batch: args.batch_size,
    };
    let bar = chunk_bar(tokens.len() / args.ctx_size.max(1), "kl-divergence");
    let result = kl_divergence(&base, &model, &tokens, bos, options, |p: KlProgress| {
        bar.set_position(p.done as u64);
        bar.set_prefix(format!("mean KLD {:.6}", p.mean_kld));
    });
    bar.finish_and_clear();
    let result = result.with_context(|| format!("cannot compare on {}", args.file.display()))?;
    print_stdout(&if args.json {
        json_report(&result)
    } else {
        text_report(&result)
    })
}

fn json_report(r: &KlDivergence) -> String {
    let mut v = serde_json::to_value(r).unwrap_or_default();
    if let Some(map) = v.as_object_mut() {
        // The contract's keys come first in the reader's eye; serde keeps field order.
        map.insert("mean_kld".into(), json!(r.mean_kld));
        map.insert("median_kld".into(), json!(r.median_kld));
    }
    format!("{v}\n")
}

fn quantile_lines(out: &mut String, name: &str, unit: &str, q: &Quantiles) {
    for (label, x) in [
        ("Maximum", q.max),
        ("99.9%", q.p99_9),
        ("99.0%", q.p99),
        ("95.0%", q.p95),
        ("90.0%", q.p90),
        ("Median", q.median),
        ("10.0%", q.p10),
        ("5.0%", q.p5),
        ("1.0%", q.p1),
        ("0.1%", q.p0_1),
        ("Minimum", q.min),
    ] {
        let _ = writeln!(out, "{label:>7} {name}: {x:10.6}{unit}");
    }
}

fn text_report(r: &KlDivergence) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} chunks of {} tokens, {} positions scored\n",
        r.chunks, r.n_ctx, r.tokens_scored
    );
    let _ = writeln!(s, "====== Perplexity statistics ======");
    let _ = writeln!(
        s,
        "Mean PPL(Q)                 : {:10.6} ± {:.6}",
        r.ppl_model, r.ppl_model_stderr
    );
    let _ = writeln!(
        s,
        "Mean PPL(base)              : {:10.6} ± {:.6}",
        r.ppl_base, r.ppl_base_stderr
    );
    let _ = writeln!(
        s,
        "Cor(ln PPL(Q), ln PPL(base)): {:10.2}%",
        100.0 * r.nll_correlation
    );
    let _ = writeln!(
        s,
        "Mean ln(PPL(Q)/PPL(base))   : {:10.6} ± {:.6}",
        r.ln_ppl_ratio, r.ln_ppl_ratio_stderr
    );
    let _ = writeln!(s, "Mean PPL(Q)/PPL(base)       : {:10.6}\n", r.ppl_ratio);
    let _ = writeln!(s, "====== KL divergence statistics ======");
    let _ = writeln!(
        s,
        "   Mean KLD: {:10.6} ± {:.6}",
        r.mean_kld, r.mean_kld_stderr
    );
    quantile_lines(&mut s, "KLD", "", &r.kld);
    let _ = writeln!(s, "\n====== Token probability statistics ======");
    let _ = writeln!(
        s,
        "    Mean Δp: {:10.4}% ± {:.4}%",
        r.mean_dp_percent, r.mean_dp_stderr_percent
    );
    quantile_lines(&mut s, " Δp", "%", &r.dp_percent);
    let _ = writeln!(s, "     RMS Δp: {:10.4}%", r.rms_dp_percent);
    let _ = writeln!(
        s,
        "Same top p: {:.3} ± {:.3} %",
        r.same_top_p_percent, r.same_top_p_stderr_percent
    );
    s
}
