//! Starting an engine on a model file, and the handle callers submit work through.

use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;

use ferrolm_transformer::{Backend, Pooling};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};

use crate::job::Work;
use crate::stats::Counters;
use crate::{EmbedReply, EngineError, Events, GenerateJob, Histogram, ModelInfo, Stats, scheduler};

/// How an engine is set up; every field has a default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineOptions {
    /// Positions per sequence, prompt and generated tokens together; at least 2, cut to the
    /// model's training context ([`crate::context_size`]).
    pub n_ctx: usize,
    /// Sequences generated at once (at least 1).
    pub slots: usize,
    /// Jobs that may wait for a slot (at least 1); beyond that `try_` submissions fail with
    /// [`EngineError::QueueFull`].
    pub queue: usize,
    /// Most tokens run in one step, decode tokens and prompt chunks together (at least the
    /// number of slots).
    pub max_batch: usize,
    /// How embedding jobs pool hidden states (`None`: the model's `pooling_type`, else mean).
    pub pooling: Option<Pooling>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            n_ctx: 4096,
            slots: 8,
            queue: 64,
            max_batch: 256,
            pooling: None,
        }
    }
}

/// A running engine: one thread that owns the model and advances every job together.
#[derive(Debug)]
pub struct Engine {
    handle: EngineHandle,
    thread: JoinHandle<()>,
}

impl Engine {
    /// Starts the engine thread, which makes the backend with `make_backend` (so the thread
    /// owns it), opens and loads the model at `model_path` and allocates a KV cache of
    /// `options.slots` sequences; returns once the model is ready or failed to load.
    pub fn start<B, F, E>(
        model_path: impl Into<PathBuf>,
        options: EngineOptions,
        make_backend: F,
    ) -> Result<Self, EngineError>
    where
        B: for<'w> Backend<'w>,
        F: FnOnce() -> Result<B, E> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let options = EngineOptions {
            slots: options.slots.max(1),
            queue: options.queue.max(1),
            ..options
        };
        let (submit, jobs) = mpsc::channel(options.queue);
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        let counters = Arc::new(Counters::default());
        let engine_counters = Arc::clone(&counters);
        let slots = options.slots;
        let path = model_path.into();
        let thread = std::thread::Builder::new()
            .name("ferrolm-engine".into())
            .spawn(move || {
                let make_backend = || make_backend().map_err(|e| EngineError::Backend(e.into()));
                scheduler::run(
                    &path,
                    &options,
                    make_backend,
                    jobs,
                    &engine_counters,
                    &ready_tx,
                );
            })
            .map_err(EngineError::Thread)?;
        match ready_rx.recv() {
            Ok(Ok(info)) => Ok(Self {
                handle: EngineHandle {
                    submit,
                    info,
                    counters,
                    slots,
                },
                thread,
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => Err(match thread.join() {
                Ok(()) => EngineError::Stopped,
                Err(_) => EngineError::Panicked,
            }),
        }
    }

    /// The handle to submit work through; clone it for other threads or tasks.
    pub fn handle(&self) -> &EngineHandle {
        &self.handle
    }

    /// Drops this engine's handle and waits for the thread, which ends once every clone of
    /// the handle is dropped and the jobs already taken are done.
    pub fn join(self) -> Result<(), EngineError> {
        drop(self.handle);
        self.thread.join().map_err(|_| EngineError::Panicked)
    }
}

/// Submits work to an engine and reads its state; cheap to clone.
#[derive(Debug, Clone)]
pub struct EngineHandle {
    submit: mpsc::Sender<Work>,
    info: Arc<ModelInfo>,
    counters: Arc<Counters>,
    slots: usize,
}

impl EngineHandle {
    /// The model the engine runs.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// Sequences generated at once.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Jobs waiting for a slot.
    pub fn queued(&self) -> usize {
        self.submit.max_capacity() - self.submit.capacity()
    }

    /// The counters now.
    pub fn stats(&self) -> Stats {
        self.counters.snapshot(self.slots, self.queued())
    }

    /// Seconds from each job's submission to its first sampled token.
    pub fn time_to_first_token(&self) -> &Histogram {
        &self.counters.ttft
    }

    /// Seconds per token after the first, one observation per job that generated two or
    /// more.
    pub fn time_per_output_token(&self) -> &Histogram {
        &self.counters.tpot
    }

    /// Queues `job` if there is room, without waiting.
    pub fn try_generate(&self, job: GenerateJob) -> Result<Events, EngineError> {
        let (work, events) = self.generate_work(job)?;
        self.try_send(work)?;
        Ok(events)
    }

    /// Queues `job`, waiting for room in the queue.
    pub async fn generate(&self, job: GenerateJob) -> Result<Events, EngineError> {
        let (work, events) = self.generate_work(job)?;
        self.submit
            .send(work)
            .await
            .map_err(|_| EngineError::Stopped)?;
        Ok(events)
    }

    /// [`EngineHandle::generate`], blocking the thread (not for use inside an async runtime).
    pub fn blocking_generate(&self, job: GenerateJob) -> Result<Events, EngineError> {
        let (work, events) = self.generate_work(job)?;
        self.submit
            .blocking_send(work)
            .map_err(|_| EngineError::Stopped)?;
        Ok(events)
    }

    /// Queues the embedding of each of `inputs` (token ids; each at least one and at most the
    /// context size) if there is room, without waiting. The engine answers it between two
    /// generation steps, in a cache of its own.
    pub fn try_embed(&self, inputs: Vec<Vec<u32>>) -> Result<EmbedReply, EngineError> {
        let (work, reply) = self.embed_work(inputs)?;
        self.try_send(work)?;
        Ok(reply)
    }

    /// Queues an embedding job like [`EngineHandle::try_embed`], waiting for room in the queue.
    pub async fn embed(&self, inputs: Vec<Vec<u32>>) -> Result<EmbedReply, EngineError> {
        let (work, reply) = self.embed_work(inputs)?;
        self.submit
            .send(work)
            .await
            .map_err(|_| EngineError::Stopped)?;
        Ok(reply)
    }

    /// [`EngineHandle::embed`], blocking the thread (not for use inside an async runtime).
    pub fn blocking_embed(&self, inputs: Vec<Vec<u32>>) -> Result<EmbedReply, EngineError> {
        let (work, reply) = self.embed_work(inputs)?;
        self.submit
            .blocking_send(work)
            .map_err(|_| EngineError::Stopped)?;
        Ok(reply)
    }

    fn try_send(&self, work: Work) -> Result<(), EngineError> {
        self.submit.try_send(work).map_err(|e| match e {
            TrySendError::Full(_) => EngineError::QueueFull {
                queued: self.queued(),
            },
            TrySendError::Closed(_) => EngineError::Stopped,
        })
    }

    fn generate_work(&self, job: GenerateJob) -> Result<(Work, Events), EngineError> {
        let n_ctx = self.info.n_ctx;
        self.check_tokens(&job.prompt, n_ctx - 1)?;
        let (events, rx) = mpsc::unbounded_channel();
        Ok((Work::Generate { job, events }, Events::new(rx)))
    }

    fn embed_work(&self, inputs: Vec<Vec<u32>>) -> Result<(Work, EmbedReply), EngineError> {
        for input in &inputs {
            self.check_tokens(input, self.info.n_ctx)?;
        }
        let (reply, rx) = oneshot::channel();
        Ok((Work::Embed { inputs, reply }, EmbedReply::new(rx)))
    }

    /// Checks that `tokens` is not empty, at most `most` long, and in the vocabulary.
    fn check_tokens(&self, tokens: &[u32], most: usize) -> Result<(), EngineError> {
        if tokens.is_empty() {
            return Err(EngineError::NoTokens);
        }
        if tokens.len() > most {
            return Err(EngineError::TooLong {
                tokens: tokens.len(),
                n_ctx: self.info.n_ctx,
            });
        }
        let n_vocab = self.info.n_vocab;
        match tokens.iter().find(|&&id| id as usize >= n_vocab) {
            Some(&id) => Err(EngineError::TokenOutOfRange { id, n_vocab }),
            None => Ok(()),
        }
    }
}
