//! `bench --json-schema`: what the grammar mask costs per token, against the decode step it
//! runs beside. The model generates greedily under the schema, `-r` times; the constraint's
//! own time (computing each step's mask, applying it, and advancing the grammar by the chosen
//! token) is measured apart from the step. Greedy decoding under a grammar sends the mask to
//! where the logits are (a bit per token up to a GPU, made while the step runs); the same
//! generation is also timed with the logits copied down and masked on the host, the way every
//! sampling chain but greedy works.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::Result;
use ferrolm_grammar::{Constraint, Grammar, GrammarCompiler};
use ferrolm_sampling::{Candidates, Greedy, RowEdit, Sampler, SamplerChain, SamplingError};
use ferrolm_tokenizer::{EncodeOptions, Tokenizer};
use ferrolm_transformer::{Backend, GenerateOptions, Model, Session};
use serde_json::json;

/// A constraint that adds the time it takes to a shared counter (nanoseconds).
#[derive(Debug)]
struct Timed {
    inner: Constraint,
    nanos: Arc<AtomicU64>,
    /// Whether it offers its mask ([`Sampler::is_mask`]), so that greedy takes the mask up.
    as_mask: bool,
}

impl Timed {
    fn time<T>(&mut self, f: impl FnOnce(&mut Constraint) -> T) -> T {
        let start = Instant::now();
        let out = f(&mut self.inner);
        self.nanos
            .fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
        out
    }
}

impl Sampler for Timed {
    fn name(&self) -> &'static str {
        "grammar"
    }
    fn apply(&mut self, candidates: &mut Candidates) -> Result<(), SamplingError> {
        self.time(|c| c.apply(candidates))
    }
    fn row_edit(&self) -> RowEdit {
        self.inner.row_edit()
    }
    fn edit_row(&mut self, row: &mut [f32]) {
        self.time(|c| c.edit_row(row));
    }
    fn is_mask(&self) -> bool {
        self.as_mask
    }
    fn restrict(&mut self, allowed: &mut [u32]) -> Result<(), SamplingError> {
        self.time(|c| c.restrict(allowed))
    }
    fn accept(&mut self, token: u32) {
        self.time(|c| c.accept(token));
    }
    fn reset(&mut self) {
        self.inner.reset();
    }
}

/// The measured cost.
pub struct GrammarCost {
    /// Tokens generated over all repetitions (each with one mask).
    pub tokens: usize,
    /// Mean time of the constraint per token, µs.
    pub mask_us: f64,
    /// Mean decode step (model and sampling together) with the mask copied to the logits, µs.
    pub step_us: f64,
    /// The same with the logits copied down to the mask, µs.
    pub step_logits_down_us: f64,
    /// Time to build the vocabulary's token trie, ms.
    pub setup_ms: f64,
    /// How many of the outputs parsed as JSON.
    pub parsed: usize,
    /// Repetitions.
    pub runs: usize,
}

/// Generates `n_gen` tokens at most under `grammar`, `runs` times, from a short prompt.
pub fn measure<'w, B: Backend<'w>>(
    model: &Model<'w, B>,
    tokenizer: &Arc<Tokenizer>,
    grammar: &Grammar,
    n_gen: usize,
    runs: usize,
) -> Result<GrammarCost> {
    let start = Instant::now();
    let compiler = GrammarCompiler::new(Arc::clone(tokenizer))?;
    let setup_ms = start.elapsed().as_secs_f64() * 1e3;
    let prompt_text = match tokenizer.chat_template() {
        Ok(template) => template.render(
            &[ferrolm_tokenizer::ChatMessage::user(
                "Describe a person as JSON.",
            )],
            true,
        )?,
        Err(_) => "A person, as JSON:".to_owned(),
    };
    let prompt = tokenizer.encode(
        &prompt_text,
        EncodeOptions {
            // The template writes any BOS itself.
            add_special: false,
            parse_special: true,
        },
    );
    // One generation each way, added to `t`.
    let run = |as_mask: bool, t: &mut Totals| -> Result<()> {
        {
            let nanos = Arc::new(AtomicU64::new(0));
            let mut chain = SamplerChain::new()
                .with(Timed {
                    inner: compiler.compile(grammar)?,
                    nanos: Arc::clone(&nanos),
                    as_mask,
                })
                .with(Greedy);
            let mut session = Session::new(model, (prompt.len() + n_gen + 1).max(16), 512)?;
            let generation = session.generate(
                &prompt,
                &mut chain,
                GenerateOptions { max_tokens: n_gen },
                |t| tokenizer.is_eog(t),
                |_| Ok(std::ops::ControlFlow::Continue(())),
            )?;
            // One mask per generated token, and one more for the step that chose the end.
            t.tokens += generation.ids.len();
            t.mask_ns += nanos.load(Ordering::Relaxed);
            t.steps += generation.ids.len().saturating_sub(1);
            t.step_ns += generation.decode_time.as_secs_f64() * 1e9;
            let text =
                tokenizer.decode(&generation.ids, ferrolm_tokenizer::DecodeOptions::default())?;
            t.parsed += usize::from(serde_json::from_str::<serde_json::Value>(&text).is_ok());
            t.ids.push(generation.ids);
        }
        Ok(())
    };
    // An untimed generation first (the weights paged in, the buffers grown), then the two ways
    // in turn, so that neither gains from running after the other.
    run(false, &mut Totals::default())?;
    let (mut up, mut down) = (Totals::default(), Totals::default());
    for _ in 0..runs {
        run(true, &mut up)?;
        run(false, &mut down)?;
    }
    if up.ids != down.ids {
        anyhow::bail!("greedy under the grammar chose other tokens with the logits copied down");
    }
    Ok(GrammarCost {
        tokens: up.tokens,
        mask_us: up.mask_ns as f64 / 1e3 / (up.tokens + runs).max(1) as f64,
        step_us: up.step_ns / 1e3 / up.steps.max(1) as f64,
        step_logits_down_us: down.step_ns / 1e3 / down.steps.max(1) as f64,
        setup_ms,
        parsed: up.parsed,
        runs,
    })
}

/// Sums over the repetitions of one way of running.
#[derive(Default)]
struct Totals {
    tokens: usize,
    mask_ns: u64,
    step_ns: f64,
    steps: usize,
    parsed: usize,
    ids: Vec<Vec<u32>>,
}

impl GrammarCost {
    /// The figures as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "tokens": self.tokens,
            "mask_us_per_token": (self.mask_us * 10.0).round() / 10.0,
            "decode_step_us": (self.step_us * 10.0).round() / 10.0,
            "decode_step_us_logits_down": (self.step_logits_down_us * 10.0).round() / 10.0,
            "mask_share_of_step": (self.mask_us / self.step_us * 1e4).round() / 1e4,
            "setup_ms": (self.setup_ms * 10.0).round() / 10.0,
            "outputs_parsed": self.parsed,
            "runs": self.runs,
        })
    }

    /// The figures as a few lines of text.
    pub fn write(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "grammar mask: {:.1} µs per token ({:.1}% of a {:.0} µs decode step), over {} tokens in {} runs ({} parsed as JSON); vocabulary setup {:.0} ms",
            self.mask_us,
            100.0 * self.mask_us / self.step_us.max(1e-9),
            self.step_us,
            self.tokens,
            self.runs,
            self.parsed,
            self.setup_ms
        );
        let _ = writeln!(
            out,
            "decode step under the grammar: {:.0} µs with the mask copied up, {:.0} µs with the logits copied down",
            self.step_us, self.step_logits_down_us
        );
    }
}
