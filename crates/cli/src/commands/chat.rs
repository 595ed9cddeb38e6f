//! `ferrolm chat [-m MODEL]`: an interactive conversation with the model's chat template.
//! Each turn only runs the new tokens: the KV cache keeps the conversation so far.
//!
//! Ctrl-C stops a reply and keeps the conversation; at an empty prompt, a second Ctrl-C (or
//! Ctrl-D) leaves. A turn that would not fit the context drops the oldest turns (never the system
//! message) and says so, unless `--no-context-shift`. Lines starting with `/` are commands
//! (`/help` lists them) and never reach the model.

use std::io::{BufRead as _, Write as _};
use std::ops::ControlFlow;
use std::path::Path;

use anyhow::{Context as _, Result, bail};
use ferrolm_gguf::Gguf;
use ferrolm_sampling::SamplerChain;
use ferrolm_tokenizer::{ChatMessage, Tokenizer};
use ferrolm_transformer::{Backend, GenerateOptions, Model, Session, StopReason};

use super::run::{Device, Loaded, ModelArgs, context_size};
use crate::interrupt::Interrupt;
use crate::sampling::SamplingArgs;
use crate::serve::prompt::chat_prompt;

const HELP: &str = "\
/help          this list
/reset         forget the conversation (the system message stays)
/system TEXT   set the system message and start over
/save FILE     write the conversation to FILE as JSON messages
/load FILE     continue the conversation saved in FILE
/exit          leave (also Ctrl-D, or Ctrl-C twice at an empty prompt)";

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
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// When a turn would overflow the context, say so and stay at the prompt instead of
    /// dropping the oldest turns.
    #[arg(long)]
    pub no_context_shift: bool,
    #[command(flatten)]
    pub constraint: crate::constrain::ConstraintArgs,
}

/// Runs the conversation until end of input.
pub fn run(args: &ChatArgs) -> Result<()> {
    // Bad sampling flags are reported before the model loads.
    let sampler = args.sampling.chain()?;
    let loaded = Loaded::open(&args.model)?;
    let gguf = loaded.file.gguf()?;
    let tokenizer = Tokenizer::from_gguf(&gguf)?;
    // A model without a usable template fails here, before the model loads.
    let template = tokenizer.chat_template()?;
    if let Some(name) = template.builtin_name() {
        eprintln!("(the model has no chat template; using the built-in {name} template)");
    }
    match args.model.device {
        Device::Cpu => chat_on(args, sampler, &gguf, &tokenizer, args.model.backend()?),
        Device::Cuda => chat_on(args, sampler, &gguf, &tokenizer, ModelArgs::cuda_backend()?),
    }
}

fn chat_on<'w, B: Backend<'w>>(
    args: &ChatArgs,
    mut sampler: SamplerChain,
    gguf: &Gguf<'w>,
    tokenizer: &Tokenizer,
    backend: B,
) -> Result<()> {
    let model = Model::load(gguf, backend)?;
    let n_ctx = context_size(args.ctx_size, model.config().n_ctx_train)?;
    crate::commands::log_weight_copies(model.backend());
    let mut session = Session::new(&model, n_ctx, 512)?;
    // With a grammar, each reply gets a fresh constraint (and a fresh chain under it).
    let constrained = crate::constrain::Constrained::new(&args.constraint, gguf)?;
    let mut turns = 0u64;
    let mut messages: Vec<ChatMessage> = args.system.iter().map(ChatMessage::system).collect();
    let interrupt = Interrupt::install()?;
    eprintln!(
        "chatting with {} ({n_ctx} tokens of context); /help lists commands, Ctrl-D leaves",
        gguf.architecture()?
    );

    let stdin = std::io::stdin();
    let mut line = String::new();
    loop {
        interrupt.at_prompt();
        eprint!("> ");
        line.clear();
        if stdin.lock().read_line(&mut line)? == 0 {
            eprintln!();
            return Ok(());
        }
        interrupt.busy();
        let input = line.trim_end_matches(['\n', '\r']);
        if input.trim().is_empty() {
            continue;
        }
        if let Some(command) = input.trim().strip_prefix('/') {
            match run_command(command, &mut messages) {
                Ok(Command::Exit) => return Ok(()),
                Ok(Command::Restart) => {
                    session.reset();
                    sampler.reset();
                }
                Ok(Command::Keep) => {}
                Err(e) => eprintln!("error: {e:#}"),
            }
            continue;
        }
        messages.push(ChatMessage::user(input));
        let Some(prompt) = fit_context(
            tokenizer,
            &mut messages,
            n_ctx,
            args.n_predict,
            args.no_context_shift,
        )?
        else {
            messages.pop();
            continue;
        };
        let mut reply = String::new();
        let mut turn_sampler;
        let reply_sampler = match &constrained {
            Some(c) => {
                turns += 1;
                let mut config = args.sampling.config()?;
                config.seed = config.seed.wrapping_add(turns);
                turn_sampler = c.chain(config.build()?)?;
                &mut turn_sampler
            }
            None => &mut sampler,
        };
        let mut stdout = std::io::stdout().lock();
        let generation = session.generate_text(
            tokenizer,
            &prompt,
            reply_sampler,
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
                    || interrupt.pressed()
                {
                    return Ok(ControlFlow::Break(()));
                }
                Ok(ControlFlow::Continue(()))
            },
        )?;
        writeln!(stdout)?;
        if interrupt.pressed() {
            eprintln!("(reply stopped)");
        } else if generation.stop == StopReason::ContextFull {
            eprintln!("(the context of {n_ctx} tokens is full; the next turn drops the oldest)");
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

/// What the conversation loop does after a command.
enum Command {
    /// Go on with the conversation as it is.
    Keep,
    /// The messages changed: the cached prompt no longer applies.
    Restart,
    /// Leave.
    Exit,
}

fn run_command(command: &str, messages: &mut Vec<ChatMessage>) -> Result<Command> {
    let (name, arg) = command
        .split_once(char::is_whitespace)
        .map_or((command, ""), |(n, a)| (n, a.trim()));
    let system = |m: &Vec<ChatMessage>| m.first().filter(|m| m.role == "system").cloned();
    match name {
        "help" => eprintln!("{HELP}"),
        "exit" | "quit" => return Ok(Command::Exit),
        "reset" => {
            *messages = system(messages).into_iter().collect();
            eprintln!("(conversation cleared)");
            return Ok(Command::Restart);
        }
        "system" => {
            if arg.is_empty() {
                bail!("/system needs the text of the system message");
            }
            *messages = vec![ChatMessage::system(arg)];
            eprintln!("(system message set; conversation cleared)");
            return Ok(Command::Restart);
        }
        "save" => {
            if arg.is_empty() {
                bail!("/save needs a file name");
            }
            let json = serde_json::to_string_pretty(messages)?;
            std::fs::write(arg, json + "\n").with_context(|| format!("cannot write {arg}"))?;
            eprintln!("({} messages saved to {arg})", messages.len());
        }
        "load" => {
            if arg.is_empty() {
                bail!("/load needs a file name");
            }
            *messages = load_messages(Path::new(arg))?;
            eprintln!("({} messages loaded from {arg})", messages.len());
            return Ok(Command::Restart);
        }
        _ => bail!("unknown command /{name}; /help lists them"),
    }
    Ok(Command::Keep)
}

/// Messages saved by `/save`: a JSON array of `{"role": .., "content": ..}`.
fn load_messages(path: &Path) -> Result<Vec<ChatMessage>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    let items = value
        .as_array()
        .with_context(|| format!("{} is not a JSON array of messages", path.display()))?;
    items
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let field = |k: &str| {
                m.get(k)
                    .and_then(serde_json::Value::as_str)
                    .with_context(|| {
                        format!("message {i} of {} has no string {k:?}", path.display())
                    })
            };
            Ok(ChatMessage::new(field("role")?, field("content")?))
        })
        .collect()
}

/// The prompt of `messages`, made to fit the context with room for a reply: the oldest turns
/// after the system message are dropped (and said so) until it fits, unless `no_shift`. `None`
/// when it cannot fit; the reason is on stderr.
fn fit_context(
    tokenizer: &Tokenizer,
    messages: &mut Vec<ChatMessage>,
    n_ctx: usize,
    n_predict: usize,
    no_shift: bool,
) -> Result<Option<Vec<u32>>> {
    let room = n_predict.clamp(1, (n_ctx / 4).max(1));
    let mut dropped = 0;
    loop {
        let prompt = chat_prompt(tokenizer, messages)?;
        if prompt.len() + room <= n_ctx {
            if dropped > 0 {
                eprintln!(
                    "(the conversation outgrew the context of {n_ctx} tokens: dropped the oldest {dropped} messages)"
                );
            }
            return Ok(Some(prompt));
        }
        let first = usize::from(messages.first().is_some_and(|m| m.role == "system"));
        // The newest message is the one being sent; only earlier turns can go.
        let droppable = messages.len().saturating_sub(first + 1);
        if no_shift || droppable == 0 {
            let what = if droppable == 0 {
                "your message"
            } else {
                "the conversation"
            };
            eprintln!(
                "error: {what} needs {} tokens with room for a reply, the context holds {n_ctx}; {}",
                prompt.len() + room,
                if droppable == 0 {
                    "shorten it or raise -c"
                } else {
                    "/reset or raise -c"
                }
            );
            return Ok(None);
        }
        // A user turn and the reply to it go together.
        let n = if droppable >= 2 { 2 } else { 1 };
        messages.drain(first..first + n);
        dropped += n;
    }
}
