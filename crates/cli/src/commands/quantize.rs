//! `ferrolm quantize IN.gguf OUT.gguf TYPE`: requantizes a model with one of
//! llama.cpp's mixes (`q4_k_m`, `q3_k_s`, ...), choosing each tensor's type
//! by llama-quantize's rules, and writes it atomically.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Result;
use ferrolm_gguf::GgufFile;
use ferrolm_quant::mix::{Mix, MixOptions, QuantPlan};
use ferrolm_quant::requantize::requantize_file;
use indicatif::{ProgressBar, ProgressStyle};

use crate::output::print_stdout;

/// Arguments of `ferrolm quantize`.
#[derive(Debug, clap::Args)]
pub struct QuantizeArgs {
    /// The model to read.
    pub input: PathBuf,
    /// Where to write the requantized model (written as OUTPUT.tmp, then renamed).
    pub output: PathBuf,
    /// The mix, by llama-quantize's name: q4_k_m q4_k_s q5_k_m q5_k_s q3_k_m q3_k_s q3_k_l
    /// q2_k q6_k q8_0 q4_0 q4_1 q5_0 q5_1 iq4_nl iq4_xs f16 bf16 f32 (q3_k, q4_k and q5_k
    /// mean the _m mixes).
    #[arg(value_name = "TYPE", value_parser = parse_mix)]
    pub mix: Mix,
    /// Give every matrix the mix's base type, without llama.cpp's per-tensor promotions.
    #[arg(long)]
    pub pure: bool,
    /// Print the type each tensor would get and write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

fn parse_mix(name: &str) -> Result<Mix, String> {
    Mix::from_name(name).ok_or_else(|| {
        let names: Vec<String> = Mix::ALL.iter().map(|m| m.name().to_lowercase()).collect();
        format!("unknown type; choose one of: {}", names.join(" "))
    })
}

/// Requantizes the file, with a progress bar over its tensors, then prints
/// how many tensors each output type got.
pub fn run(args: &QuantizeArgs) -> Result<()> {
    let options = MixOptions { pure: args.pure };
    if args.dry_run {
        let file = GgufFile::open(&args.input)?;
        let plan = QuantPlan::new(&file.gguf()?, args.mix, &options)?;
        let mut text = String::new();
        for t in &plan.tensors {
            writeln!(
                text,
                "{:<40} {:>7} -> {}",
                t.name,
                t.from.name(),
                t.to.name()
            )?;
        }
        print_stdout(&text)?;
        return print_summary(&format!("{} (dry run)", args.input.display()), &plan);
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("quantize [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let plan = requantize_file(&args.input, &args.output, args.mix, &options, |p| {
        bar.set_length(p.total as u64);
        bar.set_position(p.index as u64);
        let t = p.tensor;
        bar.set_message(format!("{} {} -> {}", t.name, t.from.name(), t.to.name()));
    })?;
    bar.finish_and_clear();
    print_summary(&args.output.display().to_string(), &plan)
}

/// One note per kind of fallback on stderr, then the mix, file type and
/// tensors per output type on stdout.
fn print_summary(what: &str, plan: &QuantPlan) -> Result<()> {
    let mut kinds: BTreeMap<(u64, &str, &str), usize> = BTreeMap::new();
    for t in plan.fallbacks() {
        *kinds
            .entry((t.row_len(), t.chosen.name(), t.to.name()))
            .or_default() += 1;
    }
    for ((row_len, wanted, used), count) in kinds {
        eprintln!(
            "note: {count} tensors have rows of {row_len} values, not a multiple of {wanted}'s block: written as {used}"
        );
    }
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let mut text = format!(
        "{what}: {} (general.file_type {}), {} tensors, {:.1} MiB -> {:.1} MiB\n",
        plan.mix.name(),
        plan.mix.file_type(),
        plan.tensors.len(),
        mib(plan.bytes_in()),
        mib(plan.bytes_out()),
    );
    for c in plan.type_counts() {
        let copied = c.tensors - c.converted;
        writeln!(
            text,
            "  {:<7} {:>5} tensors {:>9.1} MiB  ({} requantized, {copied} copied)",
            c.ty.name(),
            c.tensors,
            mib(c.bytes),
            c.converted,
        )?;
    }
    print_stdout(&text)
}
