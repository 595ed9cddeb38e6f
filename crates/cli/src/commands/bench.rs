//! `ferrolm bench -m MODEL [-p 512] [-n 128] [-r 3] [--depth D] [--no-kv-cache] [--json]`:
//! llama-bench's protocol. `ppN` runs one batch of N random tokens from an empty cache;
//! `tgN` runs N single-token decode steps; `--depth D` first fills the cache with D tokens
//! (not timed); `--no-kv-cache` recomputes the whole prefix at every decode step instead of
//! reusing the cache. Works on models without a vocabulary.
//!
//! `--attention` runs the decode test a second time, interleaved with the first, with the
//! CPU backend recording every attention weight, so the table shows what capture costs and
//! that leaving it off costs nothing. `--spec KIND` replaces the random-token tests with
//! greedy decoding of a real prompt, plain and speculative (see [`speculative`]).

mod grammar;
mod parallel;
mod speculative;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, bail};
use ferrolm_analysis::SpecKind;
use ferrolm_gguf::{Gguf, keys::general};
use ferrolm_tokenizer::{EncodeOptions, Tokenizer};
use ferrolm_transformer::{Backend, Batch, CpuBackend, CpuOptions, CudaBackend, Model};
use serde_json::json;

use super::perplexity::read_text;
use super::run::{Device, Loaded, ModelArgs};
use crate::output::print_stdout;
use speculative::{SpecBench, SpecSummary};

/// The `--spec` prompt when none is given: open-ended text.
const DEFAULT_SPEC_PROMPT: &str =
    "Write a short story about a lighthouse keeper who finds a message in a bottle.";

/// Arguments of `ferrolm bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Prompt tokens of the prefill test (0: skip it).
    #[arg(short = 'p', long = "n-prompt", default_value_t = 512)]
    pub n_prompt: usize,
    /// Generated tokens of the decode test (0: skip it).
    #[arg(short = 'n', long = "n-gen", default_value_t = 128)]
    pub n_gen: usize,
    /// Repetitions of each test.
    #[arg(short = 'r', long = "repetitions", default_value_t = 3)]
    pub repetitions: usize,
    /// Tokens already in the cache when each test starts.
    #[arg(short = 'd', long, default_value_t = 0)]
    pub depth: usize,
    /// Decode by recomputing the whole prefix at every step (no KV cache reuse).
    #[arg(long)]
    pub no_kv_cache: bool,
    /// Largest batch of one forward pass.
    #[arg(short = 'b', long = "batch-size", default_value_t = 512)]
    pub batch_size: usize,
    /// Print a JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also run the decode test with the attention weights recorded (CPU only).
    #[arg(long, conflicts_with = "spec")]
    pub attention: bool,
    /// Compare greedy decoding of a real prompt with speculative decoding by this drafter
    /// (ngram, self:N or draft:PATH) instead of the random-token tests; needs a vocabulary.
    #[arg(long, value_name = "KIND", conflicts_with_all = ["depth", "no_kv_cache"])]
    pub spec: Option<SpecKind>,
    /// The prompt of --spec (default: a short open-ended request).
    #[arg(
        long,
        value_name = "TEXT",
        requires = "spec",
        conflicts_with = "spec_prompt_file"
    )]
    pub spec_prompt: Option<String>,
    /// A file holding the prompt of --spec.
    #[arg(long, value_name = "FILE", requires = "spec")]
    pub spec_prompt_file: Option<PathBuf>,
    /// Most tokens drafted per round with --spec.
    #[arg(long, default_value_t = 4, requires = "spec")]
    pub draft_len: usize,
    /// Measure what holding the output to this JSON schema (a file, or the schema itself)
    /// costs per token: greedy generation of up to -n tokens under it, -r times.
    #[arg(long, value_name = "FILE|JSON", conflicts_with_all = ["spec", "attention"])]
    pub json_schema: Option<String>,
    /// llama-batched-bench's test: for each count of parallel sequences (`1,8,32`), their
    /// prompts of -p tokens in batches of -b, then -n steps of one token per sequence; prints
    /// S_PP, S_TG and S per row (--json: llama-batched-bench's keys).
    #[arg(long, value_name = "LIST", value_delimiter = ',',
          conflicts_with_all = ["spec", "attention", "json_schema", "depth", "no_kv_cache"])]
    pub parallel: Vec<usize>,
}

struct TestResult {
    name: String,
    n_prompt: usize,
    n_gen: usize,
    /// Tokens in the cache when the timed part starts.
    depth: usize,
    samples: Vec<f64>, // tokens per second, one per repetition
    /// Attention rows recorded per repetition, when capture was on.
    attention_rows: Option<usize>,
    speculative: Option<SpecSummary>,
}

impl TestResult {
    fn new(name: String, n_prompt: usize, n_gen: usize, depth: usize) -> Self {
        Self {
            name,
            n_prompt,
            n_gen,
            depth,
            samples: vec![],
            attention_rows: None,
            speculative: None,
        }
    }

    fn mean(&self) -> f64 {
        self.samples.iter().sum::<f64>() / self.samples.len().max(1) as f64
    }

    fn stddev(&self) -> f64 {
        let n = self.samples.len();
        if n < 2 {
            return 0.0;
        }
        let m = self.mean();
        (self.samples.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
    }
}

/// A tiny deterministic generator of token ids (llama-bench also feeds random tokens).
struct TokenStream(u64);

impl TokenStream {
    fn next(&mut self, vocab: usize) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % vocab as u64) as u32
    }
}

/// Starts (`true`) or stops (`false`) recording attention weights; on stopping, drops
/// what was recorded and returns how many rows that was.
type Capture<B> = fn(&B, bool) -> usize;

fn cpu_capture(backend: &CpuBackend, on: bool) -> usize {
    let rows = backend.take_attention().len();
    backend.record_attention(on);
    rows
}

/// Runs the tests and prints the table (or JSON).
pub fn run(args: &BenchArgs) -> Result<()> {
    if args.repetitions == 0 {
        bail!("-r must be at least 1");
    }
    if args.batch_size == 0 {
        bail!("-b must be at least 1");
    }
    if args.attention && args.model.device != Device::Cpu {
        bail!("--attention records attention weights on the CPU backend only");
    }
    let loaded = Loaded::open(&args.model)?;
    let gguf = loaded.file.gguf()?;
    let spec = match &args.spec {
        Some(kind) => Some(spec_bench(args, kind, &gguf)?),
        None => None,
    };
    let spec = spec.as_ref();
    match args.model.device {
        Device::Cpu => {
            let backend = args.model.backend()?;
            let threads = backend.threads();
            let capture = args.attention.then_some(cpu_capture as Capture<CpuBackend>);
            bench_on(
                args,
                &loaded,
                &gguf,
                backend,
                threads,
                |_| None,
                capture,
                spec,
            )
        }
        Device::Cuda => bench_on(
            args,
            &loaded,
            &gguf,
            ModelArgs::cuda_backend()?,
            0,
            |b: &CudaBackend| {
                b.memory_in_use()
                    .ok()
                    .map(|bytes| bytes as f64 / (1024.0 * 1024.0))
            },
            None,
            spec,
        ),
    }
}

/// The `--spec` comparison the flags describe, with its prompt tokenized.
fn spec_bench<'a>(args: &BenchArgs, kind: &'a SpecKind, gguf: &Gguf<'_>) -> Result<SpecBench<'a>> {
    if args.n_gen < 2 {
        bail!("--spec needs -n of at least 2 (decode speed is timed after the first token)");
    }
    let Some(tokenizer) = Tokenizer::from_gguf_if_present(gguf)? else {
        bail!(
            "--spec needs a vocabulary to tokenize its prompt, and {} has none \
             (tokenizer.ggml.model is no_vocab or absent); bench it without --spec",
            args.model.path()?.display()
        );
    };
    let text = match (&args.spec_prompt, &args.spec_prompt_file) {
        (Some(text), _) => text.clone(),
        (None, Some(path)) => read_text(path)?,
        (None, None) => DEFAULT_SPEC_PROMPT.to_owned(),
    };
    let prompt = tokenizer.encode(
        &text,
        EncodeOptions {
            add_special: true,
            parse_special: false,
        },
    );
    if prompt.is_empty() {
        bail!("the --spec prompt gives no tokens");
    }
    Ok(SpecBench {
        kind,
        prompt,
        n_gen: args.n_gen,
        repetitions: args.repetitions,
        batch_size: args.batch_size,
        draft_len: args.draft_len,
        draft_backend: CpuOptions {
            threads: args.model.threads.unwrap_or(0),
            precision: args.model.precision.into(),
        },
    })
}

/// Runs the tests on `backend`; `device_mib` reads the device memory in use, where there
/// is one; `capture` switches attention recording, where `--attention` asks for it.
#[allow(clippy::too_many_arguments)]
fn bench_on<'w, B: Backend<'w>>(
    args: &BenchArgs,
    loaded: &Loaded,
    gguf: &Gguf<'w>,
    backend: B,
    threads: usize,
    device_mib: impl Fn(&B) -> Option<f64>,
    capture: Option<Capture<B>>,
    spec: Option<&SpecBench<'_>>,
) -> Result<()> {
    let model = Model::load(gguf, backend)?;
    let load_ms = loaded.started.elapsed().as_secs_f64() * 1e3;
    if !args.parallel.is_empty() {
        if args.parallel.contains(&0) {
            bail!("--parallel counts must be at least 1");
        }
        let rows = parallel::measure(
            &model,
            args.n_prompt,
            args.n_gen,
            &args.parallel,
            args.batch_size,
        )?;
        if args.json {
            let rows: Vec<_> = rows.iter().map(parallel::Row::to_json).collect();
            return print_stdout(&format!("{}\n", serde_json::Value::Array(rows)));
        }
        let mut out = format!(
            "{} on {} ({threads} threads), batches of up to {} tokens\n\n",
            ModelInfo::new(gguf).name,
            model.backend().name(),
            args.batch_size
        );
        parallel::write_table(&rows, &mut out);
        return print_stdout(&out);
    }
    if let Some(schema) = &args.json_schema {
        let constraint = crate::constrain::ConstraintArgs {
            json_schema: Some(schema.clone()),
            ..Default::default()
        };
        let grammar = constraint
            .grammar()?
            .ok_or_else(|| anyhow::anyhow!("no schema"))?;
        let tokenizer = std::sync::Arc::new(Tokenizer::from_gguf(gguf)?);
        let cost = grammar::measure(&model, &tokenizer, &grammar, args.n_gen, args.repetitions)?;
        if args.json {
            return print_stdout(&format!("{}\n", json!({"grammar": cost.to_json()})));
        }
        let mut out = String::new();
        cost.write(&mut out);
        return print_stdout(&out);
    }
    let (results, ttft_ms) = match spec {
        Some(spec) => (spec.measure(&model)?.into(), None),
        None => random_token_tests(args, &model, capture)?,
    };
    let rss = peak_rss_mib();
    let info = ModelInfo::new(gguf);
    let device_mib = device_mib(model.backend());
    // Decode reads every weight once per token (only one row of the embeddings); a
    // speculative pass checks several tokens per read, so the figure means nothing there.
    let gbs = |r: &TestResult| {
        (r.n_gen > 0 && r.speculative.is_none())
            .then(|| r.mean() * info.bytes_per_token as f64 / 1e9)
    };
    // The CPU kernel set dispatch chose on this machine (CPUs of one kind differ).
    let cpu_kernels = (model.backend().name() == "cpu").then(ferrolm_quant::kernel_set);
    // Weights copied beside the mapped file (interleaved for the CPU kernels): extra memory.
    let copy_mib = model.backend().weight_copy_bytes() as f64 / (1024.0 * 1024.0);
    if args.json {
        let entries: Vec<_> = results
            .iter()
            .map(|r| {
                json!({
                    "test": r.name,
                    "n_prompt": r.n_prompt,
                    "n_gen": r.n_gen,
                    "n_depth": r.depth,
                    "kv_cache": !args.no_kv_cache,
                    "avg_ts": round(r.mean()),
                    "stddev_ts": round(r.stddev()),
                    "samples_ts": r.samples.iter().map(|&x| round(x)).collect::<Vec<_>>(),
                    "model": info.name,
                    "model_size": info.bytes,
                    "model_n_params": info.params,
                    "backend": model.backend().name(),
                    "cpu_kernels": cpu_kernels,
                    "weight_copies_mib": round(copy_mib),
                    "n_threads": threads,
                    "load_ms": round(load_ms),
                    "ttft_ms": ttft_ms.map(round),
                    "peak_rss_mib": rss.map(round),
                    "weights_bytes_per_token": info.bytes_per_token,
                    "bandwidth_gbs": gbs(r).map(round),
                    "device_mib": device_mib.map(round),
                    "attention_capture": r.attention_rows.is_some(),
                    "attention_rows": r.attention_rows,
                    "speculative": r.speculative.as_ref().map(SpecSummary::to_json),
                })
            })
            .collect();
        return print_stdout(&format!("{}\n", serde_json::Value::Array(entries)));
    }
    let mut out = String::new();
    out.push_str("| model | size | params | backend | threads | test | t/s | weights GB/s |\n");
    out.push_str("| --- | ---: | ---: | --- | ---: | --- | ---: | ---: |\n");
    for r in &results {
        let _ = writeln!(
            out,
            "| {} | {:.2} MiB | {:.2} M | {} | {threads} | {} | {:.2} ± {:.2} | {} |",
            info.name,
            info.bytes as f64 / (1024.0 * 1024.0),
            info.params as f64 / 1e6,
            model.backend().name(),
            r.name,
            r.mean(),
            r.stddev(),
            gbs(r).map_or_else(|| "-".to_owned(), |g| format!("{g:.0}"))
        );
    }
    if let Some(s) = results.iter().find_map(|r| r.speculative.as_ref()) {
        out.push('\n');
        s.write_table(&mut out, args.repetitions);
    }
    if let Some(rows) = results.iter().find_map(|r| r.attention_rows) {
        let _ = write!(
            out,
            "\nattention capture recorded {rows} rows (layer × head × query) per repetition\n"
        );
    }
    if let Some(k) = cpu_kernels {
        let _ = write!(out, "\nCPU kernels: {k}");
        if copy_mib > 0.0 {
            let _ = write!(
                out,
                " | weights repacked for them: {copy_mib:.0} MiB beside the mapped file"
            );
        }
    }
    let _ = write!(out, "\nload time: {load_ms:.0} ms");
    if let Some(t) = ttft_ms {
        let _ = write!(
            out,
            " | time to first token (pp{}): {t:.0} ms",
            args.n_prompt
        );
    }
    if let Some(m) = rss {
        let _ = write!(out, " | peak RSS: {m:.0} MiB");
    }
    if let Some(m) = device_mib {
        let _ = write!(out, " | device memory in use: {m:.0} MiB");
    }
    out.push('\n');
    print_stdout(&out)
}

/// llama-bench's `ppN` and `tgN` tests on random tokens (and `tgN` with attention capture);
/// returns the results and the time to the first token of the first prefill.
fn random_token_tests<'w, B: Backend<'w>>(
    args: &BenchArgs,
    model: &Model<'w, B>,
    capture: Option<Capture<B>>,
) -> Result<(Vec<TestResult>, Option<f64>)> {
    let n_ctx = args.depth + args.n_prompt.max(args.n_gen) + 1;
    if n_ctx > model.config().n_ctx_train {
        eprintln!(
            "note: depth + test length {n_ctx} exceeds the training context {}",
            model.config().n_ctx_train
        );
    }
    let mut bench = Bench::new(model, n_ctx, args.batch_size)?;

    let mut results = Vec::new();
    let mut ttft_ms = None;
    let suffix = if args.depth > 0 {
        format!(" @ d{}", args.depth)
    } else {
        String::new()
    };
    // One untimed run first, as llama-bench does: library handles, kernel compilation, the
    // step graph's capture and the caches' first touch stay out of the figures.
    if args.n_prompt > 0 {
        bench.prefill_from_empty(args.depth)?;
        bench.run_tokens(args.n_prompt)?;
    }
    bench.prefill_from_empty(args.depth)?;
    for _ in 0..WARMUP_DECODE_STEPS.min(args.n_gen) {
        bench.run_tokens(1)?;
    }
    if args.n_prompt > 0 {
        let mut r = TestResult::new(
            format!("pp{}{suffix}", args.n_prompt),
            args.n_prompt,
            0,
            args.depth,
        );
        for _ in 0..args.repetitions {
            bench.prefill_from_empty(args.depth)?;
            let t = Instant::now();
            bench.run_tokens(args.n_prompt)?;
            let secs = t.elapsed().as_secs_f64();
            let first = bench.argmax();
            ttft_ms.get_or_insert(t.elapsed().as_secs_f64() * 1e3);
            std::hint::black_box(first);
            r.samples.push(args.n_prompt as f64 / secs);
        }
        results.push(r);
    }
    if args.n_gen > 0 {
        let cache = if args.no_kv_cache {
            " (no KV cache)"
        } else {
            ""
        };
        let name = format!("tg{}{suffix}{cache}", args.n_gen);
        let mut off = TestResult::new(name.clone(), 0, args.n_gen, args.depth);
        let mut on = TestResult::new(
            format!("{name} (attention capture)"),
            0,
            args.n_gen,
            args.depth,
        );
        // Interleaved, so a change in the machine's load hits both alike.
        for _ in 0..args.repetitions {
            off.samples.push(bench.decode_test(args, None)?.0);
            if let Some(capture) = capture {
                let (ts, rows) = bench.decode_test(args, Some(capture))?;
                on.samples.push(ts);
                on.attention_rows = Some(rows);
            }
        }
        results.push(off);
        if capture.is_some() {
            results.push(on);
        }
    }
    Ok((results, ttft_ms))
}

/// Single-token steps of the untimed warm-up run.
const WARMUP_DECODE_STEPS: usize = 4;

/// A model with one sequence's cache and activations, fed random tokens.
struct Bench<'m, 'w, B: Backend<'w>> {
    model: &'m Model<'w, B>,
    kv: B::Kv,
    state: ferrolm_transformer::State<'w, B>,
    tokens: TokenStream,
    len: usize,
    batch_size: usize,
    ids: Vec<u32>,
    positions: Vec<u32>,
    seqs: Vec<u32>,
}

impl<'m, 'w, B: Backend<'w>> Bench<'m, 'w, B> {
    fn new(model: &'m Model<'w, B>, n_ctx: usize, batch_size: usize) -> Result<Self> {
        let batch_size = batch_size.min(n_ctx);
        Ok(Self {
            model,
            kv: model.kv_cache(n_ctx, 1)?,
            state: model.state(batch_size, 1)?,
            tokens: TokenStream(0x9E37_79B9_7F4A_7C15),
            len: 0,
            batch_size,
            ids: Vec::with_capacity(batch_size),
            positions: Vec::with_capacity(batch_size),
            seqs: vec![0; batch_size],
        })
    }

    fn prefill_from_empty(&mut self, n: usize) -> Result<()> {
        self.model.backend().kv_clear(&mut self.kv);
        self.len = 0;
        self.run_tokens(n)
    }

    /// Runs `n` random tokens after the cached ones, in batches of at most `batch_size`.
    fn run_tokens(&mut self, n: usize) -> Result<()> {
        let vocab = self.model.config().vocab;
        let mut left = n;
        while left > 0 {
            let chunk = left.min(self.batch_size);
            self.ids.clear();
            self.positions.clear();
            for i in 0..chunk {
                self.ids.push(self.tokens.next(vocab));
                self.positions.push((self.len + i) as u32);
            }
            let outputs = [chunk - 1];
            let batch = Batch {
                tokens: &self.ids,
                positions: &self.positions,
                seqs: &self.seqs[..chunk],
                outputs: &outputs,
            };
            self.model.forward(&mut self.state, &mut self.kv, &batch)?;
            self.len += chunk;
            left -= chunk;
        }
        Ok(())
    }

    /// One repetition of the decode test: tokens per second, and the attention rows
    /// recorded when `capture` is given (it is on for the timed steps only).
    fn decode_test(
        &mut self,
        args: &BenchArgs,
        capture: Option<Capture<B>>,
    ) -> Result<(f64, usize)> {
        self.prefill_from_empty(args.depth)?;
        if let Some(capture) = capture {
            capture(self.model.backend(), true);
        }
        let t = Instant::now();
        if args.no_kv_cache {
            self.decode_without_cache(args.depth, args.n_gen)?;
        } else {
            for _ in 0..args.n_gen {
                self.run_tokens(1)?;
            }
        }
        let ts = args.n_gen as f64 / t.elapsed().as_secs_f64();
        let rows = capture.map_or(0, |capture| capture(self.model.backend(), false));
        Ok((ts, rows))
    }

    /// Generation without reusing the cache: step `i` runs the whole prefix of
    /// `depth + i + 1` tokens from an empty cache.
    fn decode_without_cache(&mut self, depth: usize, n_gen: usize) -> Result<()> {
        for i in 0..n_gen {
            self.prefill_from_empty(depth + i + 1)?;
        }
        Ok(())
    }

    fn argmax(&self) -> u32 {
        let l = self.state.logits();
        l.iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map_or(0, |(i, _)| i as u32)
    }
}

struct ModelInfo {
    name: String,
    bytes: u64,
    params: u64,
    /// Weight bytes a decode step reads: all tensors but the embeddings, unless tied.
    bytes_per_token: u64,
}

impl ModelInfo {
    fn new(gguf: &Gguf<'_>) -> Self {
        let name = gguf
            .get(general::NAME)
            .and_then(ferrolm_gguf::MetadataValue::as_str)
            .or_else(|| gguf.architecture().ok())
            .unwrap_or("model")
            .to_owned();
        let views: Vec<_> = gguf.tensor_views().collect();
        let tied = gguf.tensor("output.weight").is_none();
        Self {
            name,
            bytes_per_token: views
                .iter()
                .filter(|v| tied || v.name != "token_embd.weight")
                .map(|v| v.data.len() as u64)
                .sum(),
            bytes: views.iter().map(|v| v.data.len() as u64).sum(),
            params: views.iter().map(ferrolm_gguf::TensorView::n_elements).sum(),
        }
    }
}

/// Peak resident memory of this process (Linux), MiB.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
