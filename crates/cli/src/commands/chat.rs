//! `ferrolm chat [-m MODEL]`: an interactive conversation with the model's chat template.
//! Each turn only runs the new tokens: the KV cache keeps the conversation so far.
//! `/reset` starts over; Ctrl-D (end of input) leaves.

use std::io::{BufRead as _, Write as _};
use std::ops::ControlFlow;

use anyhow::{Result, bail};
use ferrolm_gguf::Gguf;
use ferrolm_tokenizer::{ChatMessage, Tokenizer};
use ferrolm_transformer::{Backend, GenerateOptions, Model, Session, StopReason};

use super::run::{Device, Loaded, ModelArgs, context_size, sampler};
use crate::serve::prompt::chat_prompt;

/// Arguments of `ferrolm chat`.
#[derive(Debug, clap::Args)]
pub struct ChatArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// A system message to start the conversation with.
    #[arg(long)]
    pub system: Option<String>,
    /// Context size in tokens.
    #[arg(short = 'c', long = "ctx-size", default_value_t = 4096)]
    pub ctx_size: usize,
    /// Most tokens per reply.
    #[arg(short = 'n', long = "n-predict", default_value_t = 1024)]
    pub n_predict: usize,
    /// Temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.8)]
    pub temp: f32,
    /// Keep the K most likely tokens (0: off).
    #[arg(long, default_value_t = 40)]
    pub top_k: usize,
    /// Nucleus sampling mass (1: off).
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    /// Keep tokens at least this fraction as likely as the best (0: off).
    #[arg(long, default_value_t = 0.05)]
    pub min_p: f32,
    /// Penalty on tokens among the last 64 (1: off).
    #[arg(long, default_value_t = 1.0)]
    pub repeat_penalty: f32,
    /// Seed of the sampler (default: from the clock).
    #[arg(long)]
    pub seed: Option<u64>,
}

/// Runs the conversation until end of input.
pub fn run(args: &ChatArgs) -> Result<()> {
    let loaded = Loaded::open(&args.model)?;
    let gguf = loaded.file.gguf()?;
    let tokenizer = Tokenizer::from_gguf(&gguf)?;
    // A model without a usable template fails here, before the model loads.
    tokenizer.chat_template()?;
    match args.model.device {
        Device::Cpu => chat_on(args, &gguf, &tokenizer, args.model.backend()?),
        Device::Cuda => chat_on(args, &gguf, &tokenizer, ModelArgs::cuda_backend()?),
    }
}

fn chat_on<'w, B: Backend<'w>>(
    args: &ChatArgs,
    gguf: &Gguf<'w>,
    tokenizer: &Tokenizer,
    backend: B,
) -> Result<()> {
    let model = Model::load(gguf, backend)?;
    let n_ctx = context_size(args.ctx_size, model.config().n_ctx_train)?;
    let mut session = Session::new(&model, n_ctx, 512)?;
    let mut sampler = sampler(
        args.temp,
        args.top_k,
        args.top_p,
        args.min_p,
        args.repeat_penalty,
        args.seed,
    )?;
    let start: Vec<ChatMessage> = args.system.iter().map(ChatMessage::system).collect();
    let mut messages = start.clone();
    eprintln!(
        "chatting with {} ({n_ctx} tokens of context); /reset starts over, Ctrl-D leaves",
        gguf.architecture()?
    );

    let stdin = std::io::stdin();
    let mut line = String::new();
    loop {
        eprint!("> ");
        line.clear();
        if stdin.lock().read_line(&mut line)? == 0 {
            eprintln!();
            return Ok(());
        }
        let input = line.trim_end_matches(['\n', '\r']);
        if input.trim().is_empty() {
            continue;
        }
        if input.trim() == "/reset" {
            messages.clone_from(&start);
            session.reset();
            sampler.reset();
            eprintln!("(conversation cleared)");
            continue;
        }
        messages.push(ChatMessage::user(input));
        // The same prompt `ferrolm serve` builds for these messages.
        let prompt = chat_prompt(tokenizer, &messages)?;
        if prompt.len() >= n_ctx {
            messages.pop();
            bail!(
                "the conversation has {} tokens, which fill the context of {n_ctx}; /reset or raise -c",
                prompt.len()
            );
        }
        let mut reply = String::new();
        let mut stdout = std::io::stdout().lock();
        let generation = session.generate_text(
            tokenizer,
            &prompt,
            &mut sampler,
            GenerateOptions {
                max_tokens: args.n_predict,
            },
            |piece| {
                reply.push_str(piece);
                // A closed stdout ends the reply; the next prompt notices the end of input.
                if stdout
                    .write_all(piece.as_bytes())
                    .and_then(|()| stdout.flush())
                    .is_err()
                {
                    return Ok(ControlFlow::Break(()));
                }
                Ok(ControlFlow::Continue(()))
            },
        )?;
        writeln!(stdout)?;
        if generation.stop == StopReason::ContextFull {
            eprintln!("(the context of {n_ctx} tokens is full: /reset to go on)");
        }
        tracing::info!(
            "prompt {} new tokens, {:.1} tokens/s; reply {} tokens, {:.1} tokens/s",
            generation.prompt_tokens,
            generation.prompt_tokens_per_second(),
            generation.ids.len(),
            generation.decode_tokens_per_second()
        );
        messages.push(ChatMessage::assistant(reply.trim()));
    }
}
