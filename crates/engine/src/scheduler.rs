//! The engine thread: it owns the model, the KV cache and the run state, and advances every
//! active sequence together.
//!
//! Jobs arrive over a bounded channel and are admitted into a free sequence slot between
//! steps. Each step builds one [`Batch`]: the last sampled token of every decoding sequence,
//! then prompt chunks of newly admitted ones up to the batch budget. A sequence whose tokens
//! are all in the cache after the step has an output row; its next token is sampled from it
//! and sent to the job's own channel. A sequence that ends (end of generation, stop string,
//! token limit) or whose caller went away (its [`crate::Events`] dropped) gives its slot back
//! at once, and the slot's cache keeps its tokens for a later job with the same prefix.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use ferrolm_gguf::GgufFile;
use ferrolm_tokenizer::{StreamingDecoder, Tokenizer};
use ferrolm_transformer::{Backend, Batch, Model, Pooling, SeqId, State};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::job::Work;
use crate::stats::Counters;
use crate::stop::StopMatcher;
use crate::token::{TokenOut, token_out};
use crate::{
    Done, EngineError, EngineOptions, Event, Failure, Finish, GenerateJob, ModelInfo, context_size,
    model_pooling,
};

/// Prompt tokens run again even when the cache holds them. The CPU multiplies a batch of
/// many rows exactly (f32) and a single row with 8-bit activations, so a prompt whose last
/// token alone were run would get other last-bit logits than the same prompt run whole; with
/// its last 32 tokens run as one batch, a repeated prompt gives the same tokens as the first.
pub(crate) const RECOMPUTED: usize = 32;

/// Where the engine thread says whether the model loaded.
pub(crate) type Ready = std::sync::mpsc::SyncSender<Result<Arc<ModelInfo>, EngineError>>;

/// The engine thread's body: makes the backend, loads the model, says so on `ready`, then
/// runs jobs until the queue is closed and the last active one is done.
pub(crate) fn run<B, F>(
    path: &Path,
    options: &EngineOptions,
    make_backend: F,
    jobs: mpsc::Receiver<Work>,
    counters: &Counters,
    ready: &Ready,
) where
    B: for<'w> Backend<'w>,
    F: FnOnce() -> Result<B, EngineError>,
{
    let loaded = make_backend().and_then(|backend| {
        let file = GgufFile::open(path).map_err(|source| EngineError::Open {
            path: path.to_owned(),
            source,
        })?;
        Ok((backend, file))
    });
    let (backend, file) = match loaded {
        Ok(l) => l,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    if let Err(e) = serve_file(path, options, &file, backend, jobs, counters, ready) {
        // Once ready has been sent (and its receiver dropped) this is a failure of the
        // running engine.
        if let Err(std::sync::mpsc::SendError(Err(e))) = ready.send(Err(e)) {
            warn!("the engine stopped: {}", with_causes(&e));
        }
    }
}

fn serve_file<'w, B: Backend<'w>>(
    path: &Path,
    options: &EngineOptions,
    file: &'w GgufFile,
    backend: B,
    jobs: mpsc::Receiver<Work>,
    counters: &Counters,
    ready: &Ready,
) -> Result<(), EngineError> {
    let gguf = file.gguf().map_err(|source| EngineError::Read {
        path: path.to_owned(),
        source,
    })?;
    let tokenizer = Tokenizer::from_gguf(&gguf).map_err(|source| EngineError::Tokenizer {
        path: path.to_owned(),
        source,
    })?;
    let tokenizer = Arc::new(tokenizer);
    let model = Model::load(&gguf, backend).map_err(|source| EngineError::Load {
        path: path.to_owned(),
        source,
    })?;
    let pooling = options
        .pooling
        .or_else(|| model_pooling(&gguf))
        .unwrap_or(Pooling::Mean);
    let n_ctx = context_size(options.n_ctx, model.config().n_ctx_train)?;
    let slots = options.slots;
    let max_batch = options.max_batch.max(slots);
    let mut scheduler = Scheduler {
        model: &model,
        tokenizer: &tokenizer,
        kv: model.kv_cache(n_ctx, slots)?,
        state: model.state(max_batch, slots)?,
        n_ctx,
        max_batch,
        free: (0..slots as SeqId).rev().collect(),
        cached: vec![Vec::new(); slots],
        active: Vec::with_capacity(slots),
        counters,
        batch: BatchBuf::default(),
        pooling,
    };
    let info = Arc::new(ModelInfo {
        path: path.to_owned(),
        backend: model.backend().name(),
        n_ctx,
        n_vocab: model.config().vocab,
        d_model: model.config().d_model,
        pooling,
        tokenizer: Arc::clone(&tokenizer),
    });
    info!(
        "{} loaded on {}: {slots} slots of {n_ctx} positions, batches of up to {max_batch} tokens",
        path.display(),
        model.backend().name(),
    );
    scheduler
        .counters
        .note_kv(model.backend().kv_blocks(&scheduler.kv));
    if ready.send(Ok(info)).is_err() {
        return Ok(());
    }
    scheduler.run(jobs);
    Ok(())
}

/// One job in a slot.
struct Sequence<'t> {
    seq: SeqId,
    job: GenerateJob,
    events: mpsc::UnboundedSender<Event>,
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
        self.events.send(event).is_ok()
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

struct Scheduler<'m, 'w, 't, B: Backend<'w>> {
    model: &'m Model<'w, B>,
    tokenizer: &'t Tokenizer,
    kv: B::Kv,
    state: State<'w, B>,
    n_ctx: usize,
    max_batch: usize,
    free: Vec<SeqId>,
    active: Vec<Sequence<'t>>,
    counters: &'m Counters,
    batch: BatchBuf,
    pooling: Pooling,
    /// For each free slot, the tokens whose keys and values its cache still holds (the last
    /// job's prompt and reply), so that a job with the same prefix reuses them.
    cached: Vec<Vec<u32>>,
}

/// What sampling one token did to a sequence.
enum Outcome {
    Continue,
    Finished(Finish),
    Cancelled,
    Failed(Failure),
}

impl<'w, 't, B: Backend<'w>> Scheduler<'_, 'w, 't, B> {
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

    /// Moves queued jobs into free slots; waits for one when nothing is active.
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
            let (job, events) = match work {
                Work::Generate { job, events } => (job, events),
                Work::Embed { inputs, reply } => {
                    self.embed(&inputs, reply);
                    continue;
                }
            };
            if events.is_closed() {
                continue;
            }
            let Some((seq, fed)) = self.take_slot(&job.prompt) else {
                break;
            };
            self.counters
                .note_kv(self.model.backend().kv_blocks(&self.kv));
            let n_prompt = job.prompt.len();
            let mut tokens = Vec::with_capacity(n_prompt + job.max_tokens);
            tokens.extend_from_slice(&job.prompt);
            let stop = StopMatcher::new(job.stop.iter().cloned());
            self.active.push(Sequence {
                seq,
                job,
                events,
                tokens,
                n_prompt,
                fed,
                decoder: StreamingDecoder::new(self.tokenizer, false),
                stop,
                first_token_at: None,
            });
            self.counters
                .active
                .store(self.active.len(), Ordering::Relaxed);
        }
        true
    }

    /// Embeds each of `inputs` (in a cache of its own, so running sequences are untouched)
    /// and sends the unit vectors back.
    fn embed(&self, inputs: &[Vec<u32>], reply: oneshot::Sender<Result<Vec<Vec<f32>>, Failure>>) {
        if reply.is_closed() {
            return;
        }
        let vectors = inputs
            .iter()
            .map(|tokens| ferrolm_transformer::embed(self.model, tokens, self.pooling, true))
            .collect::<Result<_, _>>()
            .map_err(|err| Failure::Embedding(err.to_string()));
        let _ = reply.send(vectors);
    }

    fn drop_cancelled(&mut self) {
        let mut i = 0;
        while i < self.active.len() {
            if self.active[i].events.is_closed() {
                debug!("sequence {} cancelled by its caller", self.active[i].seq);
                self.release(i);
            } else {
                i += 1;
            }
        }
    }

    /// Runs one batch and samples every sequence that has an output row.
    fn step(&mut self) {
        self.step_batch();
        self.counters
            .note_kv(self.model.backend().kv_blocks(&self.kv));
    }

    fn step_batch(&mut self) {
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
            let failure = Failure::Model(e.to_string());
            let mut failed: Vec<usize> = self.batch.takes.iter().map(|&(i, _)| i).collect();
            failed.sort_unstable();
            for &i in failed.iter().rev() {
                let s = self.release(i);
                s.send(Event::Failed(failure.clone()));
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
            let before = self.active[i].generated();
            let outcome = sample(self.tokenizer, &mut self.active[i], logits, self.n_ctx);
            // Every token that entered the reply, the last one of a job included.
            let added = self.active[i].generated() - before;
            self.counters
                .generated
                .fetch_add(added as u64, Ordering::Relaxed);
            match outcome {
                Outcome::Continue => {}
                Outcome::Finished(finish) => ended.push((i, Some(Ok(finish)))),
                Outcome::Cancelled => ended.push((i, None)),
                Outcome::Failed(failure) => ended.push((i, Some(Err(failure)))),
            }
        }
        // The slot is freed and counted before the caller hears that its job ended, so
        // the stats read after a reply already include it.
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
                Some(Err(failure)) => {
                    s.send(Event::Failed(failure));
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

    /// Counts an ended job in the counters and logs its line.
    fn record(&self, s: &Sequence<'_>, how: &str) {
        let st = self.counters;
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
            s.job.name,
            s.n_prompt,
            ttft.unwrap_or(0.0) * 1e3,
            per_token.map_or(0.0, |t| 1.0 / t),
        );
    }

    /// Takes a free slot for `prompt` and returns it with the number of prompt tokens whose
    /// keys and values it already holds. The longest prefix of the prompt held anywhere (a
    /// free slot's cache, or a running sequence) is kept: in place when it is the slot taken,
    /// else shared block by block from the slot that holds it, so that slot keeps its own.
    /// The slot taken is the source itself only when no other is free; otherwise the free
    /// slot with the least cached, whose cache is the one given up.
    fn take_slot(&mut self, prompt: &[u32]) -> Option<(SeqId, usize)> {
        if self.free.is_empty() {
            return None;
        }
        let common = |held: &[u32]| held.iter().zip(prompt).take_while(|(a, b)| a == b).count();
        let backend = self.model.backend();
        let mut source: Option<(SeqId, usize)> = None;
        let mut consider = |seq: SeqId, n: usize| {
            if source.is_none_or(|(_, best)| n > best) {
                source = Some((seq, n));
            }
        };
        for &seq in &self.free {
            consider(seq, common(&self.cached[seq as usize]));
        }
        for s in &self.active {
            let held = s
                .fed
                .min(s.tokens.len())
                .min(backend.kv_len(&self.kv, s.seq));
            consider(s.seq, common(&s.tokens[..held]));
        }
        let (src, n_common) = source?;
        let wanted = n_common.min(prompt.len().saturating_sub(RECOMPUTED));
        let dst_at = (0..self.free.len())
            .filter(|&i| self.free[i] != src || self.free.len() == 1)
            .min_by_key(|&i| self.cached[self.free[i] as usize].len())?;
        let dst = self.free.swap_remove(dst_at);
        let result = if wanted == 0 || dst == src {
            backend.kv_truncate(&mut self.kv, dst, wanted)
        } else {
            backend.kv_share(&mut self.kv, dst, src, wanted)
        };
        let mut keep = wanted;
        if let Err(e) = result {
            warn!(
                "cannot reuse {wanted} cached positions in sequence {dst}: {e}; starting it empty"
            );
            keep = 0;
            if let Err(e) = backend.kv_truncate(&mut self.kv, dst, 0) {
                warn!("cannot free the KV positions of sequence {dst}: {e}");
            }
        }
        self.cached[dst as usize].clear();
        let counter = if keep > 0 {
            self.counters
                .prefix_reused_tokens
                .fetch_add(keep as u64, Ordering::Relaxed);
            if dst != src {
                self.counters.prefix_shared.fetch_add(1, Ordering::Relaxed);
            }
            &self.counters.prefix_hits
        } else {
            &self.counters.prefix_misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Some((dst, keep))
    }

    /// Frees the slot of `active[i]`, keeping in its cache what the sequence put there for
    /// a later job with the same prefix, and hands the sequence back for its last event.
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
        self.counters
            .active
            .store(self.active.len(), Ordering::Relaxed);
        self.counters.finished.fetch_add(1, Ordering::Relaxed);
        s
    }
}

/// Samples the next token of `s` from its logits row and sends what it releases.
fn sample(tokenizer: &Tokenizer, s: &mut Sequence<'_>, logits: &[f32], n_ctx: usize) -> Outcome {
    let token = match s.job.sampler.sample(logits) {
        Ok(t) => t,
        Err(e) => return Outcome::Failed(Failure::Sampling(e.to_string())),
    };
    s.first_token_at.get_or_insert_with(Instant::now);
    if tokenizer.is_eog(token) {
        return Outcome::Finished(Finish::Stop);
    }
    s.job.sampler.accept(token);
    s.tokens.push(token);
    let piece = match s.decoder.push(token) {
        Ok(p) => p,
        Err(e) => {
            return Outcome::Failed(Failure::Decode {
                token,
                message: e.to_string(),
            });
        }
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

/// `e` and each of its causes, joined with `: `.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}
