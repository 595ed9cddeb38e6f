//! `ferrolm quantize IN.gguf OUT.gguf TYPE`: requantizes every weight matrix of a model.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Result, bail};
use ferrolm_quant::GgmlType;
use ferrolm_quant::requantize::{REQUANTIZE_TARGETS, TensorAction, requantize_file};
use indicatif::{ProgressBar, ProgressStyle};

use crate::output::print_stdout;

/// Arguments of `ferrolm quantize`.
#[derive(Debug, clap::Args)]
pub struct QuantizeArgs {
    /// The model to read.
    pub input: PathBuf,
    /// Where to write the requantized model.
    pub output: PathBuf,
    /// Target type of the weight matrices (q4_0 q4_1 q5_0 q5_1 q8_0 q2_k q3_k q4_k q5_k
    /// q6_k iq4_nl iq4_xs f16 bf16 f32).
    pub ty: String,
}

/// Requantizes the file, with a progress bar over its tensors.
pub fn run(args: &QuantizeArgs) -> Result<()> {
    let Some(target) = GgmlType::from_name(&args.ty).filter(|t| REQUANTIZE_TARGETS.contains(t))
    else {
        let names: Vec<&str> = REQUANTIZE_TARGETS.iter().map(|t| t.name()).collect();
        bail!(
            "unknown target type {:?}; choose one of: {}",
            args.ty,
            names.join(" ")
        );
    };
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("quantize [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let report = requantize_file(&args.input, &args.output, target, |p| {
        bar.set_length(p.total as u64);
        bar.set_position(p.index as u64);
        bar.set_message(format!("{} {} -> {}", p.name, p.from.name(), p.to.name()));
        if p.action == TensorAction::Fallback {
            tracing::debug!(tensor = p.name, used = p.to.name(), "fallback type");
        }
    })?;
    bar.finish_and_clear();
    // One note per kind of fallback, not per tensor.
    let mut kinds: BTreeMap<(u64, &str, &str), usize> = BTreeMap::new();
    for f in &report.fallbacks {
        *kinds
            .entry((f.row_len, f.wanted.name(), f.used.name()))
            .or_default() += 1;
    }
    for ((row_len, wanted, used), count) in kinds {
        eprintln!(
            "note: {count} tensors have rows of {row_len} values, not a multiple of {wanted}'s block: written as {used}"
        );
    }
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    print_stdout(&format!(
        "{}: {} tensors ({} requantized to {}, {} copied, {} fallbacks), {:.1} MiB -> {:.1} MiB\n",
        args.output.display(),
        report.tensors,
        report.requantized,
        target.name(),
        report.copied,
        report.fallbacks.len(),
        mib(report.bytes_in),
        mib(report.bytes_out)
    ))
}
