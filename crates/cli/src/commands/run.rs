//! `ferrolm run [-m MODEL] -p PROMPT ...`: generate a continuation of a prompt, streaming it
//! to stdout, or print one JSON object with `--json`.

use std::io::Write as _;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use ferrolm_analysis::MetricsProbe;
use ferrolm_analysis::speculative::{
    SpecKind, SpeculativeOptions, SpeculativeRun, generate_text_speculative,
};
use ferrolm_gguf::{Gguf, GgufFile};
use ferrolm_sampling::{SamplerChain, SamplingConfig};
use ferrolm_tokenizer::{EncodeOptions, Tokenizer};
use ferrolm_transformer::backend::cuda::CudaBackend;
use ferrolm_transformer::{
    Backend, CpuBackend, CpuOptions, GenerateOptions, Precision, Session, StopReason,
};
use serde_json::json;

use crate::interrupt::Interrupt;
use crate::models;
use crate::output::print_stdout;
use crate::sampling::SamplingArgs;

/// Where the model runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Device {
    /// The CPU, on `--threads` threads.
    Cpu,
    /// The first NVIDIA GPU (builds with the `cuda` feature).
    Cuda,
}

/// Model and device options shared by `run`, `chat` and `bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct ModelArgs {
    /// Path to a .gguf file or a known model name (smollm2-135m, gemma3-270m); without it
    /// the default model, fetched on first use.
    #[arg(short = 'm', long = "model", value_name = "MODEL")]
    pub model: Option<String>,
    /// Device to run on.
    #[arg(long, value_enum, default_value_t = Device::Cpu)]
    pub device: Device,
    /// CPU threads (default: one per core).
    #[arg(short = 't', long)]
    pub threads: Option<usize>,
    /// Activations in the CPU's matrix products: q8 (8-bit, llama.cpp's scheme; fastest),
    /// q16 (integer kernels on two 8-bit planes, within about 1e-4 of exact; 5-12% slower
    /// at decode) or f32 (exact, slowest).
    #[arg(long, value_enum, default_value_t = CpuPrecision::Q8)]
    pub precision: CpuPrecision,
}

/// `--precision`: how the CPU backend feeds activations to the weight products.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CpuPrecision {
    /// 8-bit activations.
    Q8,
    /// About 16-bit activations (two 8-bit planes).
    Q16,
    /// f32 activations.
    F32,
}

impl From<CpuPrecision> for Precision {
    fn from(p: CpuPrecision) -> Self {
        match p {
            CpuPrecision::Q8 => Precision::Q8,
            CpuPrecision::Q16 => Precision::Q16,
            CpuPrecision::F32 => Precision::F32,
        }
    }
}

impl ModelArgs {
    /// The model file named (or the default model).
    pub fn path(&self) -> Result<PathBuf> {
        models::resolve(self.model.as_deref().unwrap_or(models::DEFAULT_MODEL))
    }

    /// The CUDA backend on the first GPU, or the error saying why it cannot be used.
    pub fn cuda_backend() -> Result<CudaBackend> {
        Ok(CudaBackend::new(0)?)
    }

    /// The CPU backend; an error when `--device cuda` was asked of a command that runs on the
    /// CPU only.
    pub fn backend(&self) -> Result<CpuBackend> {
        if self.device == Device::Cuda {
            bail!(
                "this command runs on the CPU only (run, chat, bench, serve, perplexity and \
                 kl-divergence take --device cuda)"
            );
        }
        ferrolm_quant::requested_kernels().map_err(anyhow::Error::msg)?;
        let threads = self.threads.unwrap_or(0);
        let backend = CpuBackend::new(CpuOptions {
            threads,
            precision: self.precision.into(),
        })?;
        tracing::info!(
            "cpu backend: {} threads, {} kernels",
            backend.threads(),
            ferrolm_quant::kernel_set()
        );
        Ok(backend)
    }
}

/// Arguments of `ferrolm run`.
#[derive(Debug, clap::Args)]
#[allow(clippy::struct_excessive_bools)]
pub struct RunArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The prompt.
    #[arg(short = 'p', long)]
    pub prompt: String,
    /// Most tokens to generate (-1: until the end of generation or a full context).
    #[arg(short = 'n', long = "n-predict", default_value_t = -1, allow_negative_numbers = true)]
    pub n_predict: i64,
    /// Context size in tokens (at most the model's training context).
    #[arg(short = 'c', long = "ctx-size", default_value_t = 4096)]
    pub ctx_size: usize,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Do not add the BOS token even if the model asks for it.
    #[arg(long)]
    pub no_bos: bool,
    /// Turn special-token text such as `<|im_start|>` into its token.
    #[arg(long)]
    pub parse_special: bool,
    /// Print one JSON object on one line instead of streaming text.
    #[arg(long)]
    pub json: bool,
    /// Add each generated token's surprisal, entropy, varentropy and top-10 mass to --json.
    #[arg(long)]
    pub metrics: bool,
    /// Speculative decoding with a drafter: ngram, self:N or draft:PATH.
    #[arg(long, value_name = "KIND")]
    pub spec: Option<SpecKind>,
    #[command(flatten)]
    pub constraint: crate::constrain::ConstraintArgs,
}

/// A model file opened, with its tokenizer, ready for a backend.
pub struct Loaded {
    pub file: GgufFile,
    pub started: Instant,
}

impl Loaded {
    /// Opens (and maps) the model file.
    pub fn open(args: &ModelArgs) -> Result<Self> {
        let started = Instant::now();
        let path = args.path()?;
        let file = GgufFile::open(&path).context("cannot open the model")?;
        Ok(Self { file, started })
    }
}

/// The context size to use for `-c asked` ([`ferrolm_engine::context_size`]: at most the
/// training context, with a warning past it); too small a context is an error naming the flag.
pub fn context_size(asked: usize, n_ctx_train: usize) -> Result<usize> {
    ferrolm_engine::context_size(asked, n_ctx_train).map_err(|e| anyhow!("{e}; give -c 2 or more"))
}

/// Generates and prints the continuation.
pub fn run(args: &RunArgs) -> Result<()> {
    // Bad sampling flags are reported before the model loads.
    let sampler = args.sampling.chain()?;
    let loaded = Loaded::open(&args.model)?;
    let gguf = loaded.file.gguf()?;
    let tokenizer = Tokenizer::from_gguf(&gguf)?;
    match args.model.device {
        Device::Cpu => run_on(
            args,
            sampler,
            &loaded,
            &gguf,
            &tokenizer,
            args.model.backend()?,
        ),
        Device::Cuda => run_on(
            args,
            sampler,
            &loaded,
            &gguf,
            &tokenizer,
            ModelArgs::cuda_backend()?,
        ),
    }
}

fn run_on<'w, B: Backend<'w>>(
    args: &RunArgs,
    mut sampler: SamplerChain,
    loaded: &Loaded,
    gguf: &Gguf<'w>,
    tokenizer: &Tokenizer,
    backend: B,
) -> Result<()> {
    let model = ferrolm_transformer::Model::load(gguf, backend)?;
    let load_ms = loaded.started.elapsed().as_secs_f64() * 1e3;
    crate::commands::log_weight_copies(model.backend());

    let options = EncodeOptions {
        add_special: !args.no_bos,
        parse_special: args.parse_special,
    };
    let prompt = tokenizer.encode(&args.prompt, options);
    if prompt.is_empty() {
        bail!("the prompt gives no tokens; give some text with -p");
    }
    let n_ctx = context_size(args.ctx_size, model.config().n_ctx_train)?;
    if prompt.len() >= n_ctx {
        bail!(
            "the prompt has {} tokens, which fill the context of {n_ctx}; raise -c or shorten the prompt",
            prompt.len()
        );
    }
    let max_tokens = usize::try_from(args.n_predict).unwrap_or(usize::MAX);
    let constrained = crate::constrain::Constrained::new(&args.constraint, gguf)?;
    crate::constrain::refuse_with_speculation(constrained.is_some(), args.spec.is_some())?;
    if let Some(c) = &constrained {
        sampler = c.chain(sampler)?;
    }
    // Metrics come from a probe at the head of the chain; without --metrics there is none.
    let probe = args.metrics.then(|| MetricsProbe::new(10));
    if let Some(p) = &probe {
        sampler = SamplerChain::new().with(p.clone()).with(sampler);
    }

    // Ctrl-C ends the generation and still prints what was made and the timings.
    let interrupt = Interrupt::install()?;
    interrupt.busy();
    let mut text = String::new();
    let mut stdout = std::io::stdout().lock();
    let mut emit = |piece: &str| {
        text.push_str(piece);
        // A closed pipe ends the generation quietly.
        if interrupt.pressed()
            || (!args.json
                && stdout
                    .write_all(piece.as_bytes())
                    .and_then(|()| stdout.flush())
                    .is_err())
        {
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    };
    let options = GenerateOptions { max_tokens };
    let (generation, speculative) = match &args.spec {
        None => {
            let mut session = Session::new(&model, n_ctx, 512)?;
            let generation =
                session
                    .generate_text(tokenizer, &prompt, &mut sampler, options, |p| Ok(emit(p)))?;
            (generation, None)
        }
        Some(kind) => {
            let run = SpeculativeRun {
                kind,
                n_ctx,
                max_batch: 512,
                options: SpeculativeOptions {
                    seed: args.sampling.seed.unwrap_or(0),
                    ..SpeculativeOptions::default()
                },
                draft_sampler: draft_sampler(&args.sampling)?,
                draft_backend: CpuOptions {
                    threads: args.model.threads.unwrap_or(0),
                    precision: args.model.precision.into(),
                },
            };
            let (generation, stats) = generate_text_speculative(
                &model,
                tokenizer,
                &prompt,
                &mut sampler,
                options,
                run,
                |p| Ok(emit(p)),
            )?;
            (generation, Some(stats))
        }
    };
    drop(stdout);
    let timings = json!({
        "load_ms": round2(load_ms),
        "prompt_tokens": generation.prompt_tokens,
        "prompt_ms": round2(generation.prompt_time.as_secs_f64() * 1e3),
        "prompt_tokens_per_second": round2(generation.prompt_tokens_per_second()),
        "decode_tokens": generation.ids.len().saturating_sub(1),
        "decode_ms": round2(generation.decode_time.as_secs_f64() * 1e3),
        "decode_tokens_per_second": round2(generation.decode_tokens_per_second()),
    });
    if interrupt.pressed() {
        eprintln!("\n(interrupted)");
    } else if generation.stop == StopReason::ContextFull {
        eprintln!("\nstopped: the context of {n_ctx} tokens is full (raise -c for longer output)");
    }
    if args.json {
        let mut line = json!({
            "prompt_ids": prompt,
            "ids": generation.ids,
            "text": text,
            "stop": stop_name(generation.stop),
            "timings": timings,
        });
        if let Some(p) = &probe {
            line["metrics"] = json!(p.take());
        }
        if let Some(s) = &speculative {
            line["speculative"] =
                json!({"drafted": s.drafted, "accepted": s.accepted, "rounds": s.rounds});
        }
        print_stdout(&format!("{line}\n"))
    } else {
        print_stdout("\n")?;
        eprintln!(
            "load {load_ms:.0} ms | prompt {} tokens, {:.1} tokens/s | decode {} tokens, {:.1} tokens/s",
            generation.prompt_tokens,
            generation.prompt_tokens_per_second(),
            generation.ids.len().saturating_sub(1),
            generation.decode_tokens_per_second()
        );
        if let Some(s) = &speculative {
            eprintln!(
                "speculative: {} drafted, {} accepted ({:.1}%) in {} target passes",
                s.drafted,
                s.accepted,
                100.0 * s.acceptance_rate(),
                s.rounds
            );
        }
        Ok(())
    }
}

/// The draft model samples like the target but without the stages that look at the history
/// (penalties, entropy guidance), from a seed of its own.
fn draft_sampler(sampling: &SamplingArgs) -> Result<SamplerChain> {
    let target = sampling.config()?;
    let config = SamplingConfig {
        repeat_penalty: 1.0,
        frequency_penalty: 0.0,
        presence_penalty: 0.0,
        entropy_weight: 0.0,
        seed: target.seed.wrapping_add(1),
        ..target
    };
    Ok(config.build()?)
}

/// The name `--json` gives a stop reason.
pub fn stop_name(stop: StopReason) -> &'static str {
    match stop {
        StopReason::EndOfGeneration(_) => "end_of_generation",
        StopReason::MaxTokens => "max_tokens",
        StopReason::ContextFull => "context_full",
        StopReason::Stopped => "stopped",
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
