//! The engine: one thread that owns the model, the KV cache and the run state, and advances
//! every active sequence together.
//!
//! Requests arrive over a bounded channel ([`EngineHandle::submit`]) and are admitted into a
//! free sequence slot between steps. Each step builds one [`Batch`]: the last sampled token
//! of every decoding sequence, then prompt chunks of newly admitted ones up to the batch
//! budget. A sequence whose tokens are all in the cache after the step has an output row;
//! its next token is sampled from it and sent to the request's own channel. A sequence
//! that ends (end of generation, stop sequence, token limit) or whose client went away
//! (its receiver is dropped) gives its KV positions back at once.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use ferrolm_gguf::GgufFile;
use ferrolm_sampling::SamplerChain;
use ferrolm_tokenizer::{StreamingDecoder, Tokenizer};
use ferrolm_transformer::{Backend, Batch, Model, Pooling, SeqId, State};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::stop::StopMatcher;
use super::token::{TokenOut, token_out};
use crate::commands::run::context_size;

/// How the engine is set up.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The GGUF model file.
    pub model_path: PathBuf,
    /// The name clients use for the model.
    pub model_id: String,
    /// Positions per sequence (prompt and generated tokens together).
    pub n_ctx: usize,
    /// Sequences generated at once.
    pub slots: usize,
    /// Requests that may wait for a slot.
    pub queue: usize,
    /// Most tokens run in one step (decode tokens and prompt chunks together).
    pub max_batch: usize,
    /// How `/v1/embeddings` pools hidden states (`None`: the model's `pooling_type`, else
    /// mean).
    pub pooling: Option<Pooling>,
}

/// What the handlers need to know about the served model.
#[derive(Debug)]
pub struct ModelInfo {
    /// The name clients use for it.
    pub id: String,
    /// The file it was loaded from.
    pub path: PathBuf,
    /// Positions per sequence.
    pub n_ctx: usize,
    /// Rows of logits (may exceed the tokenizer's vocabulary).
    pub n_vocab: usize,
    /// Unix time the server loaded it.
    pub created: u64,
    /// Its tokenizer, shared with the engine.
    pub tokenizer: Arc<Tokenizer>,
    /// Width of its embeddings.
    pub d_model: usize,
    /// How it writes tool calls (from its chat template).
    pub tool_format: super::tools::CallFormat,
    /// The grammar compiler for its vocabulary, made on the first constrained request.
    pub grammar: std::sync::OnceLock<Result<ferrolm_grammar::GrammarCompiler, String>>,
}

/// Counters the engine keeps for `/health`.
#[derive(Debug, Default)]
pub struct EngineStats {
    /// Sequences in a slot now.
    pub active: AtomicUsize,
    /// Requests finished (any reason).
    pub finished: AtomicU64,
    /// Tokens generated since start.
    pub generated: AtomicU64,
    /// Requests that started from a prompt prefix left in a slot's cache by an earlier one.
    pub prefix_hits: AtomicU64,
    /// Requests that found no such prefix.
    pub prefix_misses: AtomicU64,
    /// Prompt tokens not run again because their keys and values were in the cache.
    pub prefix_tokens_reused: AtomicU64,
    /// Prompt tokens of the requests finished.
    pub prompt_tokens: AtomicU64,
    /// Requests that ended in an error.
    pub failed: AtomicU64,
    /// From a request's arrival to its first sampled token.
    pub ttft: super::metrics::Histogram,
    /// From the first sampled token to the last, per token after the first.
    pub tpot: super::metrics::Histogram,
}

/// Prompt tokens run again even when the cache holds them. The CPU multiplies a batch of
/// many rows exactly (f32) and a single row with 8-bit activations, so a prompt whose last
/// token alone were run would get other last-bit logits than the same prompt run whole; with
/// its last 32 tokens run as one batch, a repeated request gives the same tokens as the first.
const RECOMPUTED: usize = 32;

/// What the engine is asked to do.
#[derive(Debug)]
pub enum Work {
    /// Generate a continuation.
    Generate(Job),
    /// Embed texts.
    Embed(EmbedJob),
}

/// Texts to embed, answered at once (between generation steps).
#[derive(Debug)]
pub struct EmbedJob {
    /// Each text's tokens, each fewer than the context size and not empty.
    pub inputs: Vec<Vec<u32>>,
    /// Where the vectors (unit length, one per input) or the failure go.
    pub reply: tokio::sync::oneshot::Sender<Result<Vec<Vec<f32>>, String>>,
}

/// One request for the engine: a tokenized prompt and how to continue it.
#[derive(Debug)]
pub struct Job {
    /// The response id, for the log.
    pub id: String,
    /// When the request arrived.
    pub submitted: Instant,
    /// Prompt tokens, fewer than the context size.
    pub prompt: Vec<u32>,
    /// Most tokens to generate (already limited to what the context leaves).
    pub max_tokens: usize,
    /// The sampler chain, built from the request's settings.
    pub sampler: SamplerChain,
    /// Stop sequences.
    pub stop: Vec<String>,
    /// Alternatives to report with each token's log-probability, if log-probabilities are wanted.
    pub logprobs: Option<usize>,
    /// Report entropy and surprisal per token.
    pub metrics: bool,
    /// Where the request's events go; dropping the receiver cancels the request.
    pub events: mpsc::UnboundedSender<Event>,
}

/// What the engine tells a request.
#[derive(Debug, Clone)]
pub enum Event {
    /// Text that is ready (possibly empty), and the token that produced it (none for text
    /// released at the end).
    Token {
        /// Released text.
        text: String,
        /// The sampled token and what was asked about it.
        token: Option<TokenOut>,
    },
    /// The request is complete.
    Done(Done),
    /// The model failed; nothing more follows.
    Failed(String),
}

/// Why and after how many tokens a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Done {
    /// `stop` or `length`.
    pub finish: Finish,
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Generated tokens (an end-of-generation token is not counted).
    pub completion_tokens: usize,
}

/// OpenAI's `finish_reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// End of generation or a stop sequence.
    Stop,
    /// The token limit or the context size.
    Length,
}

impl Finish {
    /// The `finish_reason` string.
    pub fn as_str(self) -> &'static str {
        match self {
            Finish::Stop => "stop",
            Finish::Length => "length",
        }
    }
}

/// The handlers' side of the engine.
#[derive(Debug, Clone)]
pub struct EngineHandle {
    /// Bounded queue of requests.
    pub submit: mpsc::Sender<Work>,
    /// The served model.
    pub info: Arc<ModelInfo>,
    /// Live counters.
    pub stats: Arc<EngineStats>,
    /// Sequence slots.
    pub slots: usize,
}

impl EngineHandle {
    /// Requests waiting for a slot.
    pub fn queued(&self) -> usize {
        self.submit.max_capacity() - self.submit.capacity()
    }
}

/// Makes the backend (on the engine thread, which then owns it), loads the model and starts
/// the engine; returns once the model is ready (or failed to load). The thread ends when
/// every [`EngineHandle`] is dropped and the last active sequence is done.
pub fn start<B, F>(config: EngineConfig, make_backend: F) -> Result<(EngineHandle, JoinHandle<()>)>
where
    B: for<'w> Backend<'w>,
    F: FnOnce() -> Result<B> + Send + 'static,
{
    let (submit, jobs) = mpsc::channel(config.queue.max(1));
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
    let stats = Arc::new(EngineStats::default());
    let engine_stats = Arc::clone(&stats);
    let slots = config.slots;
    let thread = std::thread::Builder::new()
        .name("ferrolm-engine".into())
        .spawn(move || run(&config, make_backend, jobs, &engine_stats, &ready_tx))
        .context("cannot start the engine thread")?;
    match ready_rx.recv() {
        Ok(Ok(info)) => Ok((
            EngineHandle {
                submit,
                info,
                stats,
                slots,
            },
            thread,
        )),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => {
            let _ = thread.join();
            anyhow::bail!("the engine thread stopped while loading the model")
        }
    }
}

type Ready = std::sync::mpsc::SyncSender<Result<Arc<ModelInfo>>>;

fn run<B, F>(
    config: &EngineConfig,
    make_backend: F,
    jobs: mpsc::Receiver<Work>,
    stats: &EngineStats,
    ready: &Ready,
) where
    B: for<'w> Backend<'w>,
    F: FnOnce() -> Result<B>,
{
    let loaded = make_backend().and_then(|backend| {
        let file = GgufFile::open(&config.model_path).context("cannot open the model")?;
        Ok((backend, file))
    });
    let (backend, file) = match loaded {
        Ok(l) => l,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    if let Err(e) = serve_file(config, &file, backend, jobs, stats, ready) {
        // Once ready has been sent this is a failure of the running engine.
        if ready.send(Err(anyhow::anyhow!("{e:#}"))).is_err() {
            warn!("the engine stopped: {e:#}");
        }
    }
}

fn serve_file<'w, B: Backend<'w>>(
    config: &EngineConfig,
    file: &'w GgufFile,
    backend: B,
    jobs: mpsc::Receiver<Work>,
    stats: &EngineStats,
    ready: &Ready,
) -> Result<()> {
    let path = config.model_path.display();
    let gguf = file.gguf().with_context(|| format!("cannot read {path}"))?;
    let tokenizer = Arc::new(
        Tokenizer::from_gguf(&gguf)
            .with_context(|| format!("cannot read the tokenizer of {path}"))?,
    );
    let model = Model::load(&gguf, backend).with_context(|| format!("cannot load {path}"))?;
    let pooling = config
        .pooling
        .or_else(|| crate::commands::embed::model_pooling(&gguf));
    let n_vocab = model.config().vocab;
    let n_ctx = context_size(config.n_ctx, model.config().n_ctx_train)?;
    let max_batch = config.max_batch.max(config.slots);
    let mut engine = Engine {
        model: &model,
        tokenizer: &tokenizer,
        kv: model.kv_cache(n_ctx, config.slots)?,
        state: model.state(max_batch, config.slots)?,
        n_ctx,
        max_batch,
        free: (0..config.slots as SeqId).rev().collect(),
        cached: vec![Vec::new(); config.slots],
        active: Vec::with_capacity(config.slots),
        stats,
        batch: BatchBuf::default(),
        pooling: pooling.unwrap_or(Pooling::Mean),
    };
    let info = Arc::new(ModelInfo {
        id: config.model_id.clone(),
        path: config.model_path.clone(),
        n_ctx,
        n_vocab,
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        tokenizer: Arc::clone(&tokenizer),
        d_model: model.config().d_model,
        tool_format: tokenizer
            .chat_template()
            .map_or(super::tools::CallFormat::Generic, |t| {
                super::tools::CallFormat::of_template(t.source())
            }),
        grammar: std::sync::OnceLock::new(),
    });
    info!(
        "{} loaded on {}: {} slots of {n_ctx} positions, batches of up to {max_batch} tokens",
        config.model_id,
        model.backend().name(),
        config.slots,
    );
    if ready.send(Ok(info)).is_err() {
        return Ok(());
    }
    engine.run(jobs);
    Ok(())
}

/// One request in a slot.
struct Sequence<'t> {
    seq: SeqId,
    job: Job,
    /// The prompt, then every generated token; the last one may not be in the cache yet.
    tokens: Vec<u32>,
    n_prompt: usize,
    /// Tokens already in the cache.
    fed: usize,
    decoder: StreamingDecoder<'t>,
    stop: StopMatcher,
    /// When its first token was sampled.
    first_token_at: Option<Instant>,
}

impl Sequence<'_> {
    fn generated(&self) -> usize {
        self.tokens.len() - self.n_prompt
    }

    fn send(&self, event: Event) -> bool {
        self.job.events.send(event).is_ok()
    }
}

/// The batch being built, reused from step to step.
#[derive(Default)]
struct BatchBuf {
    tokens: Vec<u32>,
    positions: Vec<u32>,
    seqs: Vec<SeqId>,
    outputs: Vec<usize>,
    /// For each output row, the index of its sequence in `active` (`None` for a row the
    /// batch only asks for because it must ask for one).
    output_of: Vec<Option<usize>>,
    /// For each sequence in the batch, its index in `active` and how many tokens it runs.
    takes: Vec<(usize, usize)>,
}

struct Engine<'m, 'w, 't, B: Backend<'w>> {
    model: &'m Model<'w, B>,
    tokenizer: &'t Tokenizer,
    kv: B::Kv,
    state: State<'w, B>,
    n_ctx: usize,
    max_batch: usize,
    free: Vec<SeqId>,
    active: Vec<Sequence<'t>>,
    stats: &'m EngineStats,
    batch: BatchBuf,
    pooling: Pooling,
    /// For each free slot, the tokens whose keys and values its cache still holds (the last
    /// request's prompt and reply), so that a request with the same prefix reuses them.
    cached: Vec<Vec<u32>>,
}

/// What sampling one token did to a sequence.
enum Outcome {
    Continue,
    Finished(Finish),
    Cancelled,
    Failed(String),
}

impl<'w, 't, B: Backend<'w>> Engine<'_, 'w, 't, B> {
    fn run(&mut self, mut jobs: mpsc::Receiver<Work>) {
        let mut open = true;
        loop {
            open = open && self.admit(&mut jobs);
            self.drop_cancelled();
            if self.active.is_empty() {
                if !open {
                    break;
                }
                continue;
            }
            self.step();
        }
        debug!("the engine is done");
    }

    /// Moves queued requests into free slots; waits for one when nothing is active.
    /// Returns false once the queue is closed.
    fn admit(&mut self, jobs: &mut mpsc::Receiver<Work>) -> bool {
        while !self.free.is_empty() {
            let work = if self.active.is_empty() {
                match jobs.blocking_recv() {
                    Some(work) => work,
                    None => return false,
                }
            } else {
                match jobs.try_recv() {
                    Ok(work) => work,
                    Err(mpsc::error::TryRecvError::Empty) => return true,
                    Err(mpsc::error::TryRecvError::Disconnected) => return false,
                }
            };
            let job = match work {
                Work::Generate(job) => job,
                Work::Embed(e) => {
                    self.embed(e);
                    continue;
                }
            };
            if job.events.is_closed() {
                continue;
            }
            let Some((seq, fed)) = self.take_slot(&job.prompt) else {
                break;
            };
            let n_prompt = job.prompt.len();
            let mut tokens = Vec::with_capacity(n_prompt + job.max_tokens);
            tokens.extend_from_slice(&job.prompt);
            let stop = StopMatcher::new(job.stop.iter().cloned());
            self.active.push(Sequence {
                seq,
                job,
                tokens,
                n_prompt,
                fed,
                decoder: StreamingDecoder::new(self.tokenizer, false),
                stop,
                first_token_at: None,
            });
            self.stats
                .active
                .store(self.active.len(), Ordering::Relaxed);
        }
        true
    }

    /// Embeds each input of `e` (in a cache of its own, so running sequences are untouched)
    /// and sends the vectors back.
    fn embed(&mut self, e: EmbedJob) {
        if e.reply.is_closed() {
            return;
        }
        let vectors: Result<Vec<Vec<f32>>, String> = e
            .inputs
            .iter()
            .map(|tokens| ferrolm_transformer::embed(self.model, tokens, self.pooling, true))
            .collect::<Result<_, _>>()
            .map_err(|err| format!("embedding failed: {err}"));
        let _ = e.reply.send(vectors);
    }

    fn drop_cancelled(&mut self) {
        let mut i = 0;
        while i < self.active.len() {
            if self.active[i].job.events.is_closed() {
                debug!("sequence {} cancelled by its client", self.active[i].seq);
                self.release(i);
            } else {
                i += 1;
            }
        }
    }

    /// Runs one batch and samples every sequence that has an output row.
    fn step(&mut self) {
        self.build_batch();
        let b = &self.batch;
        let batch = Batch {
            tokens: &b.tokens,
            positions: &b.positions,
            seqs: &b.seqs,
            outputs: &b.outputs,
        };
        let result = self.model.forward(&mut self.state, &mut self.kv, &batch);
        if let Err(e) = result {
            warn!("a batch of {} tokens failed: {e}", batch.len());
            let message = format!("the model failed: {e}");
            let mut failed: Vec<usize> = self.batch.takes.iter().map(|&(i, _)| i).collect();
            failed.sort_unstable();
            for &i in failed.iter().rev() {
                let s = self.release(i);
                s.send(Event::Failed(message.clone()));
            }
            return;
        }
        for &(i, n) in &self.batch.takes {
            self.active[i].fed += n;
        }
        let vocab = self.model.config().vocab;
        let mut ended = Vec::new();
        for (row, &wanted) in self.batch.output_of.iter().enumerate() {
            let Some(i) = wanted else { continue };
            let logits = &self.state.logits()[row * vocab..(row + 1) * vocab];
            match sample(self.tokenizer, &mut self.active[i], logits, self.n_ctx) {
                Outcome::Continue => {
                    self.stats.generated.fetch_add(1, Ordering::Relaxed);
                }
                Outcome::Finished(finish) => ended.push((i, Some(Ok(finish)))),
                Outcome::Cancelled => ended.push((i, None)),
                Outcome::Failed(message) => ended.push((i, Some(Err(message)))),
            }
        }
        // The slot is freed and counted before the client hears that its request ended, so
        // what `/health` reports after a reply already includes it.
        ended.sort_unstable_by_key(|&(i, _)| i);
        for (i, ending) in ended.into_iter().rev() {
            let mut s = self.release(i);
            let how = match &ending {
                Some(Ok(Finish::Stop)) => "stop",
                Some(Ok(Finish::Length)) => "length",
                Some(Err(_)) => "error",
                None => "cancelled",
            };
            self.record(&s, how);
            match ending {
                Some(Ok(finish)) => finish_sequence(&mut s, finish),
                Some(Err(message)) => {
                    s.send(Event::Failed(message));
                }
                None => {}
            }
        }
    }

    /// Decoding sequences first (one token each), then prompt chunks in arrival order.
    fn build_batch(&mut self) {
        let b = &mut self.batch;
        b.tokens.clear();
        b.positions.clear();
        b.seqs.clear();
        b.outputs.clear();
        b.output_of.clear();
        b.takes.clear();
        let mut budget = self.max_batch;
        for decoding in [true, false] {
            for (i, s) in self.active.iter().enumerate() {
                let pending = s.tokens.len() - s.fed;
                if budget == 0 || pending == 0 || (s.fed >= s.n_prompt) != decoding {
                    continue;
                }
                let take = pending.min(budget);
                budget -= take;
                b.takes.push((i, take));
                b.tokens.extend_from_slice(&s.tokens[s.fed..s.fed + take]);
                b.positions.extend(s.fed as u32..(s.fed + take) as u32);
                b.seqs.extend(std::iter::repeat_n(s.seq, take));
                if take == pending {
                    b.outputs.push(b.tokens.len() - 1);
                    b.output_of.push(Some(i));
                }
            }
        }
        // A forward pass must produce at least one row of logits, even for a step that only
        // prefills part of a prompt.
        if b.outputs.is_empty() {
            b.outputs.push(b.tokens.len() - 1);
            b.output_of.push(None);
        }
    }

    /// Counts an ended request in the metrics and logs its line.
    fn record(&self, s: &Sequence<'_>, how: &str) {
        let st = self.stats;
        st.prompt_tokens
            .fetch_add(s.n_prompt as u64, Ordering::Relaxed);
        if how == "error" {
            st.failed.fetch_add(1, Ordering::Relaxed);
        }
        let now = Instant::now();
        let generated = s.generated();
        let ttft = s
            .first_token_at
            .map(|t| t.duration_since(s.job.submitted).as_secs_f64());
        let decode = s
            .first_token_at
            .map(|t| now.duration_since(t).as_secs_f64());
        if let Some(t) = ttft {
            st.ttft.observe(t);
        }
        let per_token = decode
            .filter(|_| generated > 1)
            .map(|d| d / (generated - 1) as f64);
        if let Some(t) = per_token {
            st.tpot.observe(t);
        }
        info!(
            "{}: {} prompt tokens, {generated} completion tokens, first token after {:.0} ms, {:.1} tokens/s, {how}",
            s.job.id,
            s.n_prompt,
            ttft.unwrap_or(0.0) * 1e3,
            per_token.map_or(0.0, |t| 1.0 / t),
        );
    }

    /// A free slot for a request with `prompt`: the one whose cache holds the longest prefix
    /// of it, cut to that prefix (at most all but the last [`RECOMPUTED`] prompt tokens), and
    /// the number of prompt tokens already in the cache.
    fn take_slot(&mut self, prompt: &[u32]) -> Option<(SeqId, usize)> {
        let common = |seq: SeqId| {
            self.cached[seq as usize]
                .iter()
                .zip(prompt)
                .take_while(|(a, b)| a == b)
                .count()
        };
        let best = (0..self.free.len()).max_by_key(|&i| common(self.free[i]))?;
        let seq = self.free.swap_remove(best);
        let mut keep = common(seq).min(prompt.len().saturating_sub(RECOMPUTED));
        if let Err(e) = self.model.backend().kv_truncate(&mut self.kv, seq, keep) {
            warn!("cannot cut the cache of sequence {seq}: {e}; starting it empty");
            keep = 0;
            if let Err(e) = self.model.backend().kv_truncate(&mut self.kv, seq, 0) {
                warn!("cannot free the KV positions of sequence {seq}: {e}");
            }
        }
        self.cached[seq as usize].clear();
        let counter = if keep > 0 {
            self.stats
                .prefix_tokens_reused
                .fetch_add(keep as u64, Ordering::Relaxed);
            &self.stats.prefix_hits
        } else {
            &self.stats.prefix_misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Some((seq, keep))
    }

    /// Frees the slot of `active[i]`, keeping in its cache what the sequence put there for
    /// a later request with the same prefix, and hands the sequence back for its last event.
    fn release(&mut self, i: usize) -> Sequence<'t> {
        let s = self.active.swap_remove(i);
        let in_cache = s
            .fed
            .min(s.tokens.len())
            .min(self.model.backend().kv_len(&self.kv, s.seq));
        let cached = &mut self.cached[s.seq as usize];
        cached.clear();
        cached.extend_from_slice(&s.tokens[..in_cache]);
        self.free.push(s.seq);
        self.stats
            .active
            .store(self.active.len(), Ordering::Relaxed);
        self.stats.finished.fetch_add(1, Ordering::Relaxed);
        s
    }
}

/// Samples the next token of `s` from its logits row and sends what it releases.
fn sample(tokenizer: &Tokenizer, s: &mut Sequence<'_>, logits: &[f32], n_ctx: usize) -> Outcome {
    let token = match s.job.sampler.sample(logits) {
        Ok(t) => t,
        Err(e) => return Outcome::Failed(format!("sampling failed: {e}")),
    };
    s.first_token_at.get_or_insert_with(Instant::now);
    if tokenizer.is_eog(token) {
        return Outcome::Finished(Finish::Stop);
    }
    s.job.sampler.accept(token);
    s.tokens.push(token);
    let piece = match s.decoder.push(token) {
        Ok(p) => p,
        Err(e) => return Outcome::Failed(format!("cannot decode token {token}: {e}")),
    };
    let released = s.stop.push(&piece);
    let wants_info = s.job.logprobs.is_some() || s.job.metrics;
    let info = if wants_info {
        token_out(tokenizer, logits, token, s.job.logprobs, s.job.metrics)
    } else {
        TokenOut::plain(token)
    };
    if !s.send(Event::Token {
        text: released.text,
        token: Some(info),
    }) {
        return Outcome::Cancelled;
    }
    if released.stopped {
        // The stop sequence's text (and any held-back text) is dropped.
        s.decoder.finish();
        s.stop = StopMatcher::default();
        return Outcome::Finished(Finish::Stop);
    }
    if s.generated() >= s.job.max_tokens || s.tokens.len() >= n_ctx {
        return Outcome::Finished(Finish::Length);
    }
    Outcome::Continue
}

/// Sends the text still held back and the final counts.
fn finish_sequence(s: &mut Sequence<'_>, finish: Finish) {
    let mut rest = s.decoder.finish();
    if !rest.is_empty() {
        let released = s.stop.push(&rest);
        rest = released.text;
    }
    rest.push_str(&s.stop.finish());
    if !rest.is_empty() {
        s.send(Event::Token {
            text: rest,
            token: None,
        });
    }
    s.send(Event::Done(Done {
        finish,
        prompt_tokens: s.n_prompt,
        completion_tokens: s.generated(),
    }));
}
