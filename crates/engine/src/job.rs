//! The work an engine takes — a [`GenerateJob`] or inputs to embed — and what comes back: a
//! job's [`Events`] and an [`EmbedReply`].

use std::time::Instant;

use ferrolm_sampling::SamplerChain;
use tokio::sync::{mpsc, oneshot};

use crate::{Failure, TokenOut};

/// A prompt to continue, and how.
#[derive(Debug)]
pub struct GenerateJob {
    /// Prompt tokens: at least one, fewer than the context size, each below the vocabulary
    /// size.
    pub prompt: Vec<u32>,
    /// Most tokens to generate; generation also ends when the context is full. At least one
    /// token is sampled whatever this says.
    pub max_tokens: usize,
    /// The sampler chain (a plain [`ferrolm_sampling::Greedy`] chain for greedy decoding).
    pub sampler: SamplerChain,
    /// Stop strings: generation ends before the first one the text contains, and no part of
    /// it is sent (empty strings are ignored).
    pub stop: Vec<String>,
    /// Alternatives to report with each token's log-probability, if log-probabilities are
    /// wanted.
    pub logprobs: Option<usize>,
    /// Report entropy, surprisal, varentropy and rank per token.
    pub metrics: bool,
    /// A name for the engine's log line about the job.
    pub name: String,
    /// When the job arrived; time to first token is counted from here.
    pub submitted: Instant,
}

impl GenerateJob {
    /// A job that continues `prompt` by up to `max_tokens` tokens chosen by `sampler`, with no
    /// stop strings and nothing reported beyond each token, submitted now.
    pub fn new(prompt: Vec<u32>, max_tokens: usize, sampler: SamplerChain) -> Self {
        Self {
            prompt,
            max_tokens,
            sampler,
            stop: Vec::new(),
            logprobs: None,
            metrics: false,
            name: "job".to_owned(),
            submitted: Instant::now(),
        }
    }
}

/// What the engine tells a generation job, in order: tokens, then exactly one [`Event::Done`]
/// or [`Event::Failed`].
#[derive(Debug, Clone)]
pub enum Event {
    /// Text that is ready (possibly empty), and the token that produced it (none for text
    /// released at the end).
    Token {
        /// Released text: complete UTF-8 characters, never part of a stop string.
        text: String,
        /// The sampled token and what was asked about it.
        token: Option<TokenOut>,
    },
    /// The job is complete.
    Done(Done),
    /// The job failed; nothing more follows.
    Failed(Failure),
}

/// Why and after how many tokens a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Done {
    /// Why generation ended.
    pub finish: Finish,
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Generated tokens (an end-of-generation token is not counted).
    pub completion_tokens: usize,
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// An end-of-generation token or a stop string.
    Stop,
    /// The token limit or the context size.
    Length,
}

/// A whole generation, gathered from a job's events by [`Events::collect`].
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// The generated tokens, in order.
    pub tokens: Vec<u32>,
    /// The generated text, without any stop string.
    pub text: String,
    /// How it ended.
    pub done: Done,
}

/// The events of one generation job. Dropping it cancels the job: the engine notices before
/// its next step and frees the job's slot.
#[derive(Debug)]
pub struct Events {
    rx: mpsc::UnboundedReceiver<Event>,
}

impl Events {
    pub(crate) fn new(rx: mpsc::UnboundedReceiver<Event>) -> Self {
        Self { rx }
    }

    /// The next event; `None` once the last one was received, or if the engine stopped
    /// before the job was complete.
    pub async fn recv(&mut self) -> Option<Event> {
        self.rx.recv().await
    }

    /// [`Events::recv`], blocking the thread (not for use inside an async runtime).
    pub fn blocking_recv(&mut self) -> Option<Event> {
        self.rx.blocking_recv()
    }

    /// Waits for the whole generation.
    pub async fn collect(mut self) -> Result<Completion, Failure> {
        let mut gathered = Gathered::default();
        loop {
            if let Some(done) = gathered.add(self.rx.recv().await)? {
                return Ok(gathered.finish(done));
            }
        }
    }

    /// [`Events::collect`], blocking the thread (not for use inside an async runtime).
    pub fn blocking_collect(mut self) -> Result<Completion, Failure> {
        let mut gathered = Gathered::default();
        loop {
            if let Some(done) = gathered.add(self.rx.blocking_recv())? {
                return Ok(gathered.finish(done));
            }
        }
    }
}

/// Tokens and text received so far.
#[derive(Default)]
struct Gathered {
    tokens: Vec<u32>,
    text: String,
}

impl Gathered {
    fn add(&mut self, event: Option<Event>) -> Result<Option<Done>, Failure> {
        match event {
            Some(Event::Token { text, token }) => {
                self.text.push_str(&text);
                self.tokens.extend(token.map(|t| t.id));
                Ok(None)
            }
            Some(Event::Done(done)) => Ok(Some(done)),
            Some(Event::Failed(failure)) => Err(failure),
            None => Err(Failure::Stopped),
        }
    }

    fn finish(self, done: Done) -> Completion {
        Completion {
            tokens: self.tokens,
            text: self.text,
            done,
        }
    }
}

/// The answer to an embedding job: one unit vector per input, in order.
#[derive(Debug)]
pub struct EmbedReply {
    rx: oneshot::Receiver<Result<Vec<Vec<f32>>, Failure>>,
}

impl EmbedReply {
    pub(crate) fn new(rx: oneshot::Receiver<Result<Vec<Vec<f32>>, Failure>>) -> Self {
        Self { rx }
    }

    /// Waits for the vectors ([`Failure::Stopped`] if the engine stopped first).
    pub async fn wait(self) -> Result<Vec<Vec<f32>>, Failure> {
        self.rx.await.unwrap_or(Err(Failure::Stopped))
    }

    /// [`EmbedReply::wait`], blocking the thread (not for use inside an async runtime).
    pub fn blocking_wait(self) -> Result<Vec<Vec<f32>>, Failure> {
        self.rx.blocking_recv().unwrap_or(Err(Failure::Stopped))
    }
}

/// What the engine's queue carries.
#[derive(Debug)]
pub(crate) enum Work {
    /// Generate a continuation, sending its events to `events`.
    Generate {
        job: GenerateJob,
        events: mpsc::UnboundedSender<Event>,
    },
    /// Embed each input (tokens, checked), answered at once between generation steps.
    Embed {
        inputs: Vec<Vec<u32>>,
        reply: oneshot::Sender<Result<Vec<Vec<f32>>, Failure>>,
    },
}
