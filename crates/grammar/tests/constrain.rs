//! Constraints on the real vocabularies (SmolLM2's byte-level BPE, Gemma 3's SentencePiece of
//! 262,144 tokens) with logits drawn at random: whatever the logits, the output must be a
//! sentence of the grammar, so each output is parsed and checked against its schema here.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;

use ferrolm_grammar::{Grammar, GrammarCompiler};
use ferrolm_sampling::SamplingConfig;
use ferrolm_tokenizer::{DecodeOptions, Tokenizer};
use serde_json::{Value, json};

fn model(file: &str) -> PathBuf {
    let dir = match std::env::var_os("FERROLM_HOME").filter(|h| !h.is_empty()) {
        Some(home) => PathBuf::from(home).join("models"),
        None => dirs::cache_dir().unwrap().join("ferrolm").join("models"),
    };
    let path = dir.join(file);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo xtask fetch-models` first",
        path.display()
    );
    path
}

fn tokenizer(file: &str) -> Arc<Tokenizer> {
    let f = ferrolm_gguf::GgufFile::open(model(file)).unwrap();
    Arc::new(Tokenizer::from_gguf(&f.gguf().unwrap()).unwrap())
}

/// xorshift64*: logits without a dependency.
struct Rng(u64);

impl Rng {
    fn f32(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        ((self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32) * 8.0
    }
}

/// Generates under `grammar` from random logits with the chain `config` describes (the
/// constraint at its head); returns the text and whether it ended with the end token.
fn generate(
    tok: &Arc<Tokenizer>,
    compiler: &GrammarCompiler,
    grammar: &Grammar,
    config: &SamplingConfig,
    seed: u64,
) -> (String, bool) {
    let constraint = compiler.compile(grammar).unwrap();
    let mut chain = config.build().unwrap().with_head(constraint);
    assert_eq!(chain.is_masked_greedy(), config.temperature == 0.0);
    // Prompt tokens accepted before generation are not part of the output.
    for t in tok.encode(
        "Answer in JSON:",
        ferrolm_tokenizer::EncodeOptions::default(),
    ) {
        chain.accept(t);
    }
    let mut rng = Rng(seed | 1);
    let mut ids = Vec::new();
    // Rows longer than the vocabulary, as an output matrix padded past it gives.
    let mut logits = vec![0.0f32; tok.n_vocab() + 7];
    let mut allowed = Vec::new();
    for _ in 0..600 {
        for l in &mut logits {
            *l = rng.f32();
        }
        // Greedy under the grammar may instead take the mask to where the logits are.
        let masked = chain.is_masked_greedy().then(|| {
            chain.allowed(logits.len(), &mut allowed).unwrap();
            masked_argmax(&logits, &allowed)
        });
        let t = chain.sample(&logits).unwrap();
        if let Some(m) = masked {
            assert_eq!(m, Some(t), "the mask's argmax is not the chain's choice");
        }
        if tok.is_eog(t) {
            return (tok.decode(&ids, DecodeOptions::default()).unwrap(), true);
        }
        chain.accept(t);
        ids.push(t);
    }
    (tok.decode(&ids, DecodeOptions::default()).unwrap(), false)
}

/// The largest logit among those whose bit is set (bit `k % 32` of word `k / 32`).
fn masked_argmax(logits: &[f32], allowed: &[u32]) -> Option<u32> {
    assert_eq!(allowed.len(), logits.len().div_ceil(32));
    let mut best: Option<(usize, f32)> = None;
    for (k, &l) in logits.iter().enumerate() {
        if (allowed[k / 32] >> (k % 32)) & 1 == 1 && best.is_none_or(|(_, b)| l > b) {
            best = Some((k, l));
        }
    }
    best.map(|(k, _)| k as u32)
}

/// A schema and a check that a value satisfies it.
type Case = (Value, fn(&Value) -> bool);

fn schemas() -> Vec<Case> {
    vec![
        (
            json!({
                "type": "object",
                "properties": {
                    "name": {"type": "string", "maxLength": 8},
                    "age": {"type": "integer", "minimum": 0, "maximum": 120},
                    "color": {"enum": ["red", "green", "blue"]}
                },
                "required": ["name", "age", "color"],
                "additionalProperties": false
            }),
            |v| {
                let o = v.as_object().unwrap();
                o.len() == 3
                    && o["name"].as_str().is_some_and(|s| s.chars().count() <= 8)
                    && o["age"].as_i64().is_some_and(|a| (0..=120).contains(&a))
                    && ["red", "green", "blue"].contains(&o["color"].as_str().unwrap_or(""))
            },
        ),
        (
            json!({
                "type": "object",
                "properties": {
                    "points": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "x": {"type": "number", "minimum": -1, "maximum": 1},
                                "ok": {"type": "boolean"}
                            },
                            "required": ["x", "ok"],
                            "additionalProperties": false
                        },
                        "minItems": 1,
                        "maxItems": 3
                    }
                },
                "required": ["points"],
                "additionalProperties": false
            }),
            |v| {
                let points = v["points"].as_array().unwrap();
                (1..=3).contains(&points.len())
                    && points.iter().all(|p| {
                        p.as_object().unwrap().len() == 2
                            && p["x"].as_f64().is_some_and(|x| (-1.0..=1.0).contains(&x))
                            && p["ok"].is_boolean()
                    })
            },
        ),
    ]
}

fn check_vocabulary(file: &str) {
    let tok = tokenizer(file);
    let compiler = GrammarCompiler::new(tok.clone()).unwrap();
    let greedy = SamplingConfig {
        temperature: 0.0,
        ..SamplingConfig::default()
    };
    let warm = SamplingConfig {
        temperature: 0.8,
        top_k: 0,
        top_p: 1.0,
        min_p: 0.0,
        seed: 5,
        ..SamplingConfig::default()
    };
    for (schema, valid) in schemas() {
        for (config, seed) in [(&greedy, 3), (&warm, 4), (&warm, 9)] {
            let (text, ended) = generate(
                &tok,
                &compiler,
                &Grammar::JsonSchema(schema.clone()),
                config,
                seed,
            );
            assert!(ended, "{file}: no end within 600 tokens: {text}");
            let value: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{file}: not JSON ({e}): {text}"));
            assert!(valid(&value), "{file}: {value} breaks {schema}");
        }
    }
    // Any JSON object: parses, and is an object.
    let (text, _) = generate(&tok, &compiler, &Grammar::JsonObject, &greedy, 11);
    if let Ok(v) = serde_json::from_str::<Value>(&text) {
        assert!(v.is_object(), "{text}");
    } else {
        // Unbounded strings may not end within the step limit; the text must still be a
        // prefix of an object.
        assert!(text.trim_start().starts_with('{'), "{text}");
    }
    // A Lark grammar.
    let lark = Grammar::Lark("start: (\"yes\" | \"no\") \"!\"".into());
    for seed in 1..6 {
        let (text, ended) = generate(&tok, &compiler, &lark, &warm, seed);
        assert!(ended && (text == "yes!" || text == "no!"), "{text}");
    }
}

#[test]
fn smollm2_outputs_are_valid_under_every_grammar_whatever_the_logits() {
    check_vocabulary("SmolLM2-135M-Instruct.Q4_1.gguf");
}

#[test]
fn gemma3_outputs_are_valid_under_every_grammar_whatever_the_logits() {
    check_vocabulary("gemma-3-270m-q4_k_m.gguf");
}

#[test]
fn invalid_grammars_and_schemas_are_errors_that_name_the_problem() {
    let tok = tokenizer("SmolLM2-135M-Instruct.Q4_1.gguf");
    let compiler = GrammarCompiler::new(tok).unwrap();
    let err = compiler
        .compile(&Grammar::JsonSchema(json!({"type": "strnig"})))
        .unwrap_err()
        .to_string();
    assert!(err.contains("strnig"), "{err}");
    let err = compiler
        .compile(&Grammar::JsonSchema(json!([1, 2])))
        .unwrap_err()
        .to_string();
    assert!(err.contains("must be an object"), "{err}");
    let err = compiler
        .compile(&Grammar::Lark("start: undefined_rule".into()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("undefined_rule"), "{err}");
    assert!(compiler.compile(&Grammar::Lark("  ".into())).is_err());
}
