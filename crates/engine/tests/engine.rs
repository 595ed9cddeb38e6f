//! The engine on the real SmolLM2 model on the CPU, without HTTP: concurrent jobs against a
//! lone [`Session`], prefix reuse, cancellation, embeddings and refused jobs.
//!
//! The model comes from `$FERROLM_HOME/models`, else `<cache>/ferrolm/models`
//! (`cargo xtask fetch-models` puts it there).

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::Duration;

use ferrolm_engine::{Completion, Engine, EngineError, EngineOptions, Event, Finish, GenerateJob};
use ferrolm_gguf::GgufFile;
use ferrolm_sampling::{Greedy, LogitBias, SamplerChain};
use ferrolm_tokenizer::{DecodeOptions, EncodeOptions, Tokenizer};
use ferrolm_transformer::{
    CpuBackend, CpuOptions, GenerateOptions, Model, Pooling, Precision, Session, StopReason, embed,
};

const SMOLLM2: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const N_CTX: usize = 256;

/// The SmolLM2 file, failing with the command that fetches it when it is absent.
fn model_path() -> PathBuf {
    let dir = match std::env::var_os("FERROLM_HOME") {
        Some(home) => PathBuf::from(home).join("models"),
        None => dirs::cache_dir()
            .expect("a cache directory")
            .join("ferrolm")
            .join("models"),
    };
    let path = dir.join(SMOLLM2);
    assert!(
        path.exists(),
        "{} is missing: run `cargo xtask fetch-models`",
        path.display()
    );
    path
}

fn cpu() -> Result<CpuBackend, ferrolm_transformer::TransformerError> {
    CpuBackend::new(CpuOptions {
        threads: 2,
        precision: Precision::Q8,
    })
}

fn start(slots: usize) -> Engine {
    let options = EngineOptions {
        n_ctx: N_CTX,
        slots,
        ..EngineOptions::default()
    };
    Engine::start(model_path(), options, cpu).expect("the engine starts")
}

fn greedy() -> SamplerChain {
    SamplerChain::new().with(Greedy)
}

/// A user turn in SmolLM2's ChatML, tokenized with its special tokens.
fn chat(tokenizer: &Tokenizer, question: &str) -> Vec<u32> {
    let text = format!("<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n");
    tokenizer.encode(
        &text,
        EncodeOptions {
            add_special: true,
            parse_special: true,
        },
    )
}

/// A lone greedy run of `prompt`: the tokens [`Session::generate`] produces, whether it ended
/// on an end-of-generation token, and for each of those tokens the gap between the best and
/// the second-best logit it was chosen with (from a second, logit-reading run that must
/// choose the same tokens).
struct Lone {
    ids: Vec<u32>,
    ended: bool,
    margins: Vec<f32>,
}

fn lone_run(
    model: &Model<'_, CpuBackend>,
    tokenizer: &Tokenizer,
    prompt: &[u32],
    n: usize,
) -> Lone {
    let mut session = Session::new(model, N_CTX, 256).expect("session");
    let generation = session
        .generate(
            prompt,
            &mut greedy(),
            GenerateOptions { max_tokens: n },
            |t| tokenizer.is_eog(t),
            |_| Ok(ControlFlow::Continue(())),
        )
        .expect("generate");
    let mut session = Session::new(model, N_CTX, 256).expect("session");
    session.feed(prompt).expect("prompt");
    let mut margins = Vec::new();
    for &id in &generation.ids {
        let logits = session.logits();
        let (best, best_logit) = logits
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0)))
            .expect("logits");
        assert_eq!(best as u32, id, "the logit-reading run chose otherwise");
        let second = logits
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != best)
            .map(|(_, &x)| x)
            .fold(f32::NEG_INFINITY, f32::max);
        margins.push(best_logit - second);
        session.feed(&[id]).expect("token");
    }
    Lone {
        ids: generation.ids,
        ended: matches!(generation.stop, StopReason::EndOfGeneration(_)),
        margins,
    }
}

/// Below this gap between the two best logits of the lone run, another batch shape's
/// summation order may pick the other token.
const NEAR_TIE: f32 = 0.05;

/// The loaded model and its tokenizer, for lone runs and direct embeddings.
struct Reference<'w> {
    model: Model<'w, CpuBackend>,
    tokenizer: Tokenizer,
}

fn reference<'w>(gguf: &ferrolm_gguf::Gguf<'w>) -> Reference<'w> {
    Reference {
        model: Model::load(gguf, cpu().expect("backend")).expect("load"),
        tokenizer: Tokenizer::from_gguf(gguf).expect("tokenizer"),
    }
}

/// `got` has the tokens of `lone` up to the lone run's first near tie ([`NEAR_TIE`]), which
/// must not come before the 12th token; without a near tie it is the whole lone run: the same
/// tokens, finish reason, counts and text.
fn assert_lone_tokens(got: &Completion, lone: &Lone, tokenizer: &Tokenizer) {
    let tie = lone.margins.iter().position(|&m| m < NEAR_TIE);
    assert!(
        tie.is_none_or(|k| k >= 12),
        "a near tie at token {tie:?}: {:?}",
        lone.margins
    );
    let Some(compared) = tie else {
        assert_eq!(got.tokens, lone.ids, "margins {:?}", lone.margins);
        let finish = if lone.ended {
            Finish::Stop
        } else {
            Finish::Length
        };
        assert_eq!(got.done.finish, finish);
        assert_eq!(got.done.completion_tokens, lone.ids.len());
        let text = tokenizer
            .decode(
                &lone.ids,
                DecodeOptions {
                    render_special: false,
                    strip_space_prefix: false,
                },
            )
            .expect("decode");
        assert_eq!(
            got.text, text,
            "the streamed text is the text of the tokens"
        );
        return;
    };
    assert_eq!(
        got.tokens[..compared.min(got.tokens.len())],
        lone.ids[..compared],
        "margins {:?}",
        lone.margins
    );
}

/// Several greedy jobs run together give each the tokens a lone [`Session::generate`] gives
/// its prompt. Up to the first near tie of the lone run's logits ([`NEAR_TIE`]) the tokens
/// must be equal; past it another batch shape's summation order could break the tie the
/// other way, so the comparison would stop there (the prompts here have no near tie, so
/// every token, the finish reason and the text are compared). The jobs are queued while the
/// engine embeds a text, so all three are admitted into the same step: their prompts are
/// prefilled together and their decode rows (three, fewer than the CPU's exact-batch
/// threshold) take the same 8-bit path as a lone row.
#[test]
fn concurrent_greedy_jobs_each_get_the_tokens_of_a_lone_session() {
    const N: usize = 24;
    let file = GgufFile::open(model_path()).expect("open");
    let gguf = file.gguf().expect("gguf");
    let r = reference(&gguf);
    let prompts: Vec<Vec<u32>> = [
        "What is the capital of France? Answer in one sentence.",
        "Translate 'good morning' into French and Spanish.",
        "List three prime numbers greater than ten, separated by commas.",
    ]
    .iter()
    .map(|q| chat(&r.tokenizer, q))
    .collect();
    let lone: Vec<Lone> = prompts
        .iter()
        .map(|p| lone_run(&r.model, &r.tokenizer, p, N))
        .collect();

    let engine = start(3);
    let handle = engine.handle();
    let busy = handle
        .blocking_embed(vec![prompts.concat()])
        .expect("embed job");
    let jobs: Vec<_> = prompts
        .iter()
        .map(|p| {
            handle
                .blocking_generate(GenerateJob::new(p.clone(), N, greedy()))
                .expect("queued")
        })
        .collect();
    let mut most_active = 0;
    while handle.stats().finished < 3 {
        most_active = most_active.max(handle.stats().active);
        std::thread::sleep(Duration::from_millis(1));
    }
    busy.blocking_wait().expect("embedding");
    assert_eq!(most_active, 3, "the jobs did not run side by side");
    for ((job, lone), prompt) in jobs.into_iter().zip(&lone).zip(&prompts) {
        let got = job.blocking_collect().expect("completion");
        assert_lone_tokens(&got, lone, &r.tokenizer);
        assert_eq!(got.done.prompt_tokens, prompt.len());
    }
    let stats = handle.stats();
    assert_eq!((stats.finished, stats.failed, stats.active), (3, 0, 0));
    assert_eq!((stats.prefix_hits, stats.prefix_misses), (0, 3));
    assert_eq!(
        stats.prompt_tokens,
        prompts.iter().map(|p| p.len() as u64).sum::<u64>()
    );
    engine.join().expect("join");
}

/// A user turn after a system prompt of ten rules (about 110 tokens), in SmolLM2's ChatML.
fn ask_with_rules(tokenizer: &Tokenizer, question: &str) -> Vec<u32> {
    let system = (0..10)
        .map(|i| format!("Rule {i}: answer briefly and politely."))
        .collect::<Vec<_>>()
        .join(" ");
    let text = format!(
        "<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
    );
    tokenizer.encode(
        &text,
        EncodeOptions {
            add_special: true,
            parse_special: true,
        },
    )
}

/// Tokens at the start of `a` and `b` that are equal.
fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// A job whose prompt starts like the last one in a slot takes that slot (of two) and runs
/// only the rest of its prompt, keeping all but the last 32 prompt tokens (which are run
/// again as one batch): the same prompt again gives the same tokens, and another question
/// after the same long system prompt gives a lone session's tokens.
#[test]
fn a_shared_prompt_prefix_is_reused_with_the_tokens_of_a_fresh_run() {
    const N: usize = 12;
    let file = GgufFile::open(model_path()).expect("open");
    let gguf = file.gguf().expect("gguf");
    let r = reference(&gguf);
    let ask = |question: &str| ask_with_rules(&r.tokenizer, question);
    let first = ask("What is the capital of France?");
    let other = ask("What is the largest ocean on Earth?");
    let shared = common_prefix(&first, &other);
    assert!(
        shared > 64 && other.len() - shared < 32,
        "{shared} of {}",
        other.len()
    );

    let engine = start(2);
    let handle = engine.handle();
    let run = |prompt: &[u32]| {
        handle
            .blocking_generate(GenerateJob::new(prompt.to_vec(), N, greedy()))
            .expect("queued")
            .blocking_collect()
            .expect("completion")
    };
    let one = run(&first);
    let stats = handle.stats();
    assert_eq!((stats.prefix_hits, stats.prefix_misses), (0, 1));
    assert_eq!(stats.prefix_reused_tokens, 0);

    let again = run(&first);
    assert_eq!(again, one, "the cached prompt gave other tokens");
    let stats = handle.stats();
    assert_eq!((stats.prefix_hits, stats.prefix_misses), (1, 1));
    let reused_again = first.len() - 32;
    assert_eq!(stats.prefix_reused_tokens, reused_again as u64);

    let lone = lone_run(&r.model, &r.tokenizer, &other, N);
    let got = run(&other);
    assert_lone_tokens(&got, &lone, &r.tokenizer);
    let stats = handle.stats();
    assert_eq!((stats.prefix_hits, stats.prefix_misses), (2, 1));
    let reused_other = shared.min(other.len() - 32);
    assert_eq!(
        stats.prefix_reused_tokens,
        (reused_again + reused_other) as u64
    );
    engine.join().expect("join");
}

/// A job that arrives while another with the same system prompt runs shares that prompt's
/// keys and values block by block (copy-on-write) instead of running it again, and both give
/// the tokens of a lone session: the sharer's writes never reach the running sequence. At
/// exact (f32) precision, so that the running job's rows give the same logits whether a step
/// also carries the new job's prompt or not (with 8-bit activations a step of many rows is
/// multiplied exactly and a single row is not).
#[test]
fn a_running_sequences_prefix_is_shared_with_a_new_job() {
    const N: usize = 24;
    let exact = || {
        CpuBackend::new(CpuOptions {
            threads: 2,
            precision: Precision::F32,
        })
    };
    let file = GgufFile::open(model_path()).expect("open");
    let gguf = file.gguf().expect("gguf");
    let r = Reference {
        model: Model::load(&gguf, exact().expect("backend")).expect("load"),
        tokenizer: Tokenizer::from_gguf(&gguf).expect("tokenizer"),
    };
    let ask = |question: &str| ask_with_rules(&r.tokenizer, question);
    let first = ask("Name three colours of the rainbow.");
    let other = ask("What is the largest ocean on Earth?");
    let shared = common_prefix(&first, &other);
    assert!(shared > 64, "{shared} of {}", other.len());

    let options = EngineOptions {
        n_ctx: N_CTX,
        slots: 3,
        ..EngineOptions::default()
    };
    let engine = Engine::start(model_path(), options, exact).expect("the engine starts");
    let handle = engine.handle();
    let mut running = handle
        .blocking_generate(GenerateJob::new(first.clone(), N, greedy()))
        .expect("queued");
    // Once the first job has a token, its whole prompt is in the cache.
    let mut first_tokens = Vec::new();
    while let Some(event) = running.blocking_recv() {
        if let Event::Token { token: Some(t), .. } = event {
            first_tokens.push(t.id);
            break;
        }
    }
    assert_eq!(first_tokens.len(), 1, "the first job gave no token");
    let second = handle
        .blocking_generate(GenerateJob::new(other.clone(), N, greedy()))
        .expect("queued");
    let got_other = second.blocking_collect().expect("completion");
    let rest = running.blocking_collect().expect("completion");
    first_tokens.extend(&rest.tokens);

    let stats = handle.stats();
    assert_eq!(stats.active, 0);
    assert_eq!((stats.prefix_hits, stats.prefix_misses), (1, 1));
    assert_eq!(stats.prefix_shared, 1, "{stats:?}");
    // Both slots keep their caches, so the shared prefix's full blocks are still held by
    // both (the partly filled one was copied when the new job first wrote into it).
    let wanted = shared.min(other.len() - 32);
    assert_eq!(stats.kv_block_tokens, 32);
    assert_eq!(stats.kv_blocks_shared, wanted / 32, "{stats:?}");
    assert!(
        stats.kv_blocks_used > stats.kv_blocks_shared
            && stats.kv_blocks_used <= stats.kv_blocks_total,
        "{stats:?}"
    );
    assert_eq!(
        stats.prefix_reused_tokens,
        shared.min(other.len() - 32) as u64
    );
    assert_lone_tokens(
        &got_other,
        &lone_run(&r.model, &r.tokenizer, &other, N),
        &r.tokenizer,
    );
    // The running job's own tokens, up to the lone run's first near tie.
    let lone_first = lone_run(&r.model, &r.tokenizer, &first, N);
    assert!(first_tokens.len() >= lone_first.ids.len().min(N));
    for (i, (&got, &want)) in first_tokens.iter().zip(&lone_first.ids).enumerate() {
        if got != want {
            assert!(
                lone_first.margins[i] < NEAR_TIE,
                "token {i} of the running job changed when its prefix was shared"
            );
            break;
        }
    }
    engine.join().expect("join");
}

/// A greedy chain that can never end generation: every end-of-generation token is banned.
fn endless(tokenizer: &Tokenizer, n_vocab: usize) -> SamplerChain {
    let banned = (0..n_vocab as u32)
        .filter(|&t| tokenizer.is_eog(t))
        .map(|t| (t, f32::NEG_INFINITY));
    SamplerChain::new()
        .with(LogitBias::new(banned).expect("bias"))
        .with(Greedy)
}

/// With one slot, a job whose events are dropped mid-generation, and a queued job whose
/// events are dropped before it starts, give the slot up: the next job runs at once, and the
/// engine generated far fewer tokens than the two endless jobs would have (200 each).
#[test]
fn dropping_a_jobs_events_cancels_it_and_frees_its_slot() {
    const ENDLESS: usize = 200;
    let engine = start(1);
    let handle = engine.handle();
    let info = handle.info();
    let tokenizer = &info.tokenizer;
    let long = |question: &str| {
        GenerateJob::new(
            chat(tokenizer, question),
            ENDLESS,
            endless(tokenizer, info.n_vocab),
        )
    };
    let mut running = handle
        .blocking_generate(long("Count from one to one hundred."))
        .expect("queued");
    let mut seen = 0;
    while seen < 2 {
        match running.blocking_recv() {
            Some(Event::Token { token: Some(_), .. }) => seen += 1,
            Some(Event::Token { .. }) => {}
            other => panic!("the endless job ended: {other:?}"),
        }
    }
    let waiting = handle
        .blocking_generate(long("Count from one hundred down to one."))
        .expect("queued");
    drop(waiting);
    drop(running);
    let next = handle
        .blocking_generate(GenerateJob::new(chat(tokenizer, "Hi!"), 4, greedy()))
        .expect("queued")
        .blocking_collect()
        .expect("the next job completes");
    assert!(next.done.completion_tokens <= 4 && !next.tokens.is_empty());
    let stats = handle.stats();
    assert_eq!((stats.active, stats.queued, stats.failed), (0, 0, 0));
    // The running job and the next one; the job cancelled in the queue never took a slot.
    assert_eq!(stats.finished, 2);
    assert!(
        stats.generated_tokens < 50,
        "{} tokens generated",
        stats.generated_tokens
    );
    engine.join().expect("join");
}

/// Embedding jobs return one unit vector of the model's width per input, equal to
/// `ferrolm_transformer::embed` with the model's pooling (mean: SmolLM2 names none).
#[test]
fn embedding_jobs_return_the_unit_vectors_of_the_model() {
    let file = GgufFile::open(model_path()).expect("open");
    let gguf = file.gguf().expect("gguf");
    let r = reference(&gguf);
    let engine = start(1);
    let handle = engine.handle();
    let info = handle.info();
    assert_eq!((info.d_model, info.pooling), (576, Pooling::Mean));
    let inputs: Vec<Vec<u32>> = ["The cat sat on the mat.", "Quantum chromodynamics"]
        .iter()
        .map(|t| r.tokenizer.encode(t, EncodeOptions::default()))
        .collect();
    let vectors = handle
        .blocking_embed(inputs.clone())
        .expect("queued")
        .blocking_wait()
        .expect("vectors");
    assert_eq!(vectors.len(), 2);
    for (v, input) in vectors.iter().zip(&inputs) {
        assert_eq!(v.len(), 576);
        let norm = v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
        let direct = embed(&r.model, input, Pooling::Mean, true).expect("embed");
        let worst = v
            .iter()
            .zip(&direct)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 1e-6, "differs from a direct embedding by {worst}");
    }
    let cosine: f32 = vectors[0].iter().zip(&vectors[1]).map(|(a, b)| a * b).sum();
    assert!(cosine < 0.99, "two unrelated texts embed alike: {cosine}");
    engine.join().expect("join");
}

/// Work the engine cannot run is refused when it is submitted, with a typed error, and the
/// engine goes on serving.
#[test]
fn invalid_jobs_are_refused_and_the_engine_keeps_serving() {
    let engine = start(1);
    let handle = engine.handle();
    let n_vocab = handle.info().n_vocab;
    let job = |prompt: Vec<u32>| GenerateJob::new(prompt, 4, greedy());
    assert!(matches!(
        handle.try_generate(job(Vec::new())),
        Err(EngineError::NoTokens)
    ));
    assert!(matches!(
        handle.try_generate(job(vec![28; N_CTX])),
        Err(EngineError::TooLong {
            tokens: N_CTX,
            n_ctx: N_CTX
        })
    ));
    assert!(matches!(
        handle.try_generate(job(vec![28, n_vocab as u32])),
        Err(EngineError::TokenOutOfRange { id, .. }) if id as usize == n_vocab
    ));
    assert!(matches!(
        handle.try_embed(vec![vec![28], Vec::new()]),
        Err(EngineError::NoTokens)
    ));
    let done = handle
        .try_generate(job(vec![28; N_CTX - 1]))
        .expect("a prompt one token short of the context is taken")
        .blocking_collect()
        .expect("completion")
        .done;
    assert_eq!((done.finish, done.completion_tokens), (Finish::Length, 1));
    engine.join().expect("join");
}

/// A missing file or a failing backend factory fails [`Engine::start`] with its cause.
#[test]
fn a_missing_model_or_a_failing_backend_fails_the_start() {
    let missing = Engine::start("/nonexistent/model.gguf", EngineOptions::default(), cpu);
    assert!(matches!(missing, Err(EngineError::Open { .. })));
    let failing = Engine::start(model_path(), EngineOptions::default(), || {
        Err::<CpuBackend, _>("no such device")
    });
    match failing {
        Err(e @ EngineError::Backend(_)) => assert_eq!(e.to_string(), "no such device"),
        other => panic!("{other:?}"),
    }
}
