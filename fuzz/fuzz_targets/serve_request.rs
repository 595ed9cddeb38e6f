//! The server's request handling up to the engine, on arbitrary bodies: `request::parse`
//! gives a request or an OpenAI-shaped error, and for a request it accepts, what the route
//! does next works too: the prompt becomes token ids with SmolLM2's tokenizer and chat
//! template (`prompt::prompt_ids`), the sampling settings build a sampler chain that samples
//! from a row of logits, and the stop sequences cut the prompt's text where they first occur.
//!
//! A request with a grammar (`response_format`, `grammar`, `tools`) has it compiled against
//! SmolLM2's vocabulary as the route does: a grammar the engine rejects is an error, never a
//! panic.
//!
//! Input: bit 0 of byte 0 picks the endpoint (chat or completions), bits 1 and 2 the
//! server's context size, bits 3 and 4 the tool-call format of the model's template; the
//! rest is the body.
//!
//! The server's modules live in the `ferrolm` binary, which has no library target, so their
//! files are compiled in here as they are.
#![no_main]

#[allow(dead_code)]
#[path = "../../crates/cli/src/serve/error.rs"]
mod error;
#[allow(dead_code)]
#[path = "../../crates/cli/src/serve/prompt.rs"]
mod prompt;
#[allow(dead_code)]
#[path = "../../crates/cli/src/serve/request.rs"]
mod request;
#[allow(dead_code)]
#[path = "../../crates/engine/src/stop.rs"]
mod stop;
#[allow(dead_code)]
#[path = "../../crates/cli/src/serve/tools.rs"]
mod tools;

use ferrolm_fuzz::{SMOLLM2, selector};
use ferrolm_tokenizer::StreamingDecoder;
use libfuzzer_sys::fuzz_target;
use request::{Endpoint, Request};
use stop::StopMatcher;

/// Context sizes a server may run with (`-c` is at least 2).
const N_CTX: [usize; 4] = [2, 64, 2048, 131_072];

/// The grammar compiler for SmolLM2's vocabulary, built once.
static GRAMMAR: std::sync::LazyLock<ferrolm_grammar::GrammarCompiler> =
    std::sync::LazyLock::new(|| {
        ferrolm_grammar::GrammarCompiler::new(std::sync::Arc::new(load_smollm2()))
            .expect("SmolLM2's vocabulary")
    });

/// SmolLM2's tokenizer, owned (the compiler keeps it).
fn load_smollm2() -> ferrolm_tokenizer::Tokenizer {
    let path = ferrolm_fuzz::models_dir().join(ferrolm_fuzz::SMOLLM2_FILE);
    let file = ferrolm_gguf::GgufFile::open(path).expect("SmolLM2");
    ferrolm_tokenizer::Tokenizer::from_gguf(&file.gguf().expect("parses")).expect("vocabulary")
}

/// Width of the logits row sampled from: small, so that sampling stays cheap.
const N_LOGITS: usize = 256;

fuzz_target!(|data: &[u8]| {
    let Some((select, body)) = selector(data) else {
        return;
    };
    let endpoint = if select & 1 == 0 {
        Endpoint::Chat
    } else {
        Endpoint::Completion
    };
    let n_ctx = N_CTX[usize::from(select >> 1) % N_CTX.len()];
    let format = [
        tools::CallFormat::Generic,
        tools::CallFormat::Hermes,
        tools::CallFormat::Llama,
    ][usize::from(select >> 3) % 3];
    let req = match request::parse_with(body, endpoint, n_ctx, format) {
        Ok(req) => req,
        Err(e) => {
            assert!(e.status.is_client_error(), "{e:?}");
            let _ = e.body();
            return;
        }
    };
    assert!(req.max_tokens.is_none_or(|n| (1..=n_ctx).contains(&n)));
    assert!(req.stop.len() <= 4 && req.stop.iter().all(|s| !s.is_empty()));
    sample(&req);
    if let Some((grammar, _)) = &req.grammar {
        // An error is an answer (a 400); a constraint must allow at least one token.
        if let Ok(mut constraint) = GRAMMAR.compile(grammar) {
            let mut row = vec![0.0f32; SMOLLM2.n_vocab()];
            ferrolm_sampling::Sampler::edit_row(&mut constraint, &mut row);
        }
    }

    let tokenizer = &*SMOLLM2;
    let Ok(ids) = prompt::prompt_ids(
        tokenizer,
        &req.prompt,
        req.template_tools.as_ref(),
        tokenizer.n_vocab(),
        n_ctx,
    ) else {
        return;
    };
    assert!(!ids.is_empty() && ids.len() < n_ctx);
    cut_at_stops(&req, &ids);
});

/// Builds the request's sampler as the route does (after refusing biases of tokens outside
/// the vocabulary, here one of `N_LOGITS`) and samples a few tokens.
fn sample(req: &Request) {
    if req
        .sampling
        .logit_bias
        .iter()
        .any(|&(id, _)| id as usize >= N_LOGITS)
    {
        return;
    }
    let Ok(mut chain) = req.sampling.build() else {
        return;
    };
    let logits: Vec<f32> = (0..N_LOGITS)
        .map(|i| ((i * 7919) % N_LOGITS) as f32 / 32.0)
        .collect();
    for _ in 0..3 {
        let Ok(token) = chain.sample(&logits) else {
            return;
        };
        assert!((token as usize) < N_LOGITS);
        chain.accept(token);
    }
}

/// Streams the prompt's text token by token through the request's stop sequences: the text
/// let through is the text up to the first stop sequence, or all of it.
fn cut_at_stops(req: &Request, ids: &[u32]) {
    let tokenizer = &*SMOLLM2;
    let mut decoder = StreamingDecoder::new(tokenizer, true);
    let mut matcher = StopMatcher::new(req.stop.iter().cloned());
    let (mut full, mut released, mut stopped) = (String::new(), String::new(), false);
    for &id in ids {
        let piece = decoder
            .push(id)
            .expect("the prompt's ids are in the vocabulary");
        full += &piece;
        if !stopped {
            let out = matcher.push(&piece);
            released += &out.text;
            stopped = out.stopped;
        }
    }
    if !stopped {
        released += &matcher.finish();
    }
    let first = req.stop.iter().filter_map(|s| full.find(s.as_str())).min();
    assert_eq!(stopped, first.is_some(), "a stop sequence is found");
    assert_eq!(released, full[..first.unwrap_or(full.len())]);
}
