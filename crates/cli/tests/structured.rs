//! Structured output on the real models: `run` and `chat` with `--json-schema`, `--json-object`
//! and `--grammar`, and the server's `response_format` and `grammar` fields. Every output is
//! parsed and checked against its schema; generation must stop when the grammar is complete.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};

fn gemma3() -> String {
    common::smollm2().replace(
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "gemma-3-270m-q4_k_m.gguf",
    )
}

fn ferrolm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferrolm"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

/// SmolLM2's chat template around `question`, so the model answers as an assistant.
fn chatml(question: &str) -> String {
    format!("<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n")
}

/// A person: bounded strings, an integer range, an enum and an array of objects.
fn person_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 24},
            "age": {"type": "integer", "minimum": 0, "maximum": 150},
            "role": {"enum": ["engineer", "doctor", "artist"]},
            "pets": {
                "type": "array",
                "maxItems": 3,
                "items": {
                    "type": "object",
                    "properties": {
                        "kind": {"enum": ["cat", "dog"]},
                        "weight": {"type": "number", "minimum": 0, "maximum": 100}
                    },
                    "required": ["kind", "weight"],
                    "additionalProperties": false
                }
            }
        },
        "required": ["name", "age", "role", "pets"],
        "additionalProperties": false
    })
}

fn valid_person(v: &Value) -> bool {
    let Some(o) = v.as_object() else { return false };
    o.len() == 4
        && o["name"].as_str().is_some_and(|s| s.chars().count() <= 24)
        && o["age"].as_i64().is_some_and(|a| (0..=150).contains(&a))
        && ["engineer", "doctor", "artist"].contains(&o["role"].as_str().unwrap_or(""))
        && o["pets"].as_array().is_some_and(|pets| {
            pets.len() <= 3
                && pets.iter().all(|p| {
                    p.as_object().is_some_and(|p| p.len() == 2)
                        && ["cat", "dog"].contains(&p["kind"].as_str().unwrap_or(""))
                        && p["weight"]
                            .as_f64()
                            .is_some_and(|w| (0.0..=100.0).contains(&w))
                })
        })
}

/// A list of numbers and a flag.
fn numbers_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "primes": {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 6},
            "done": {"type": "boolean"}
        },
        "required": ["primes", "done"],
        "additionalProperties": false
    })
}

fn valid_numbers(v: &Value) -> bool {
    v["primes"]
        .as_array()
        .is_some_and(|p| (2..=6).contains(&p.len()) && p.iter().all(Value::is_i64))
        && v["done"].is_boolean()
}

/// `run` under `schema`: the output parses, passes `valid`, and ended before `-n`.
fn run_schema(model: &str, prompt: &str, schema: &Value, temp: &str, valid: fn(&Value) -> bool) {
    let schema_text = schema.to_string();
    let out = ferrolm(&[
        "run",
        "-m",
        model,
        "-p",
        prompt,
        "--parse-special",
        "-n",
        "300",
        "--temp",
        temp,
        "--seed",
        "7",
        "--json-schema",
        &schema_text,
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let text = report["text"].as_str().unwrap();
    let value: Value = serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("not JSON at temperature {temp} ({e}): {text}"));
    assert!(valid(&value), "{value} breaks {schema}");
    assert_eq!(
        report["stop"], "end_of_generation",
        "generation ends with the grammar: {report}"
    );
}

#[test]
fn run_holds_both_models_to_json_schemas_at_any_temperature() {
    let smollm2 = common::smollm2();
    let person = chatml("Describe a person with pets as JSON.");
    let primes = chatml("List some prime numbers as JSON.");
    for temp in ["0", "0.8"] {
        run_schema(&smollm2, &person, &person_schema(), temp, valid_person);
        run_schema(&smollm2, &primes, &numbers_schema(), temp, valid_numbers);
    }
    run_schema(
        &gemma3(),
        "<start_of_turn>user\nDescribe a person with pets as JSON.<end_of_turn>\n<start_of_turn>model\n",
        &person_schema(),
        "0",
        valid_person,
    );
}

#[test]
fn run_follows_a_lark_grammar_and_any_json_object() {
    let dir = tempfile::tempdir().unwrap();
    let grammar = dir.path().join("answer.lark");
    std::fs::write(
        &grammar,
        "start: (\"yes\" | \"no\") \", because \" /[a-z ]{1,30}/ \".\"\n",
    )
    .unwrap();
    let out = ferrolm(&[
        "run",
        "-m",
        &common::smollm2(),
        "-p",
        &chatml("Is the sky blue?"),
        "--parse-special",
        "--temp",
        "0",
        "-n",
        "60",
        "--grammar",
        grammar.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let text = text.trim_end_matches('\n');
    let rest = text
        .strip_prefix("yes, because ")
        .or_else(|| text.strip_prefix("no, because "))
        .unwrap_or_else(|| panic!("{text:?}"));
    let reason = rest.strip_suffix('.').unwrap_or_else(|| panic!("{text:?}"));
    assert!(
        (1..=30).contains(&reason.len())
            && reason.bytes().all(|b| b == b' ' || b.is_ascii_lowercase()),
        "{text:?}"
    );

    let out = ferrolm(&[
        "run",
        "-m",
        &common::smollm2(),
        "-p",
        &chatml("Give me a JSON object about Paris."),
        "--parse-special",
        "--temp",
        "0.8",
        "--seed",
        "3",
        "-n",
        "300",
        "--json-object",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let value: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert!(value.is_object(), "{value}");
}

#[test]
fn bad_constraints_are_one_line_errors() {
    let model = common::smollm2();
    let out = ferrolm(&[
        "run",
        "-m",
        &model,
        "-p",
        "x",
        "--json-schema",
        r#"{"type": "strnig"}"#,
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("strnig"), "{err}");
    let out = ferrolm(&[
        "run",
        "-m",
        &model,
        "-p",
        "x",
        "--json-schema",
        "missing.json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot read the JSON schema missing.json")
    );
    let out = ferrolm(&[
        "run",
        "-m",
        &model,
        "-p",
        "x",
        "--json-object",
        "--json-schema",
        "{}",
    ]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "two constraints are a usage error"
    );
    let out = ferrolm(&[
        "run",
        "-m",
        &model,
        "-p",
        "x",
        "--json-object",
        "--spec",
        "ngram",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--spec cannot be combined"));
}

#[test]
fn chat_replies_are_json_objects_turn_after_turn() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferrolm"))
        .args([
            "chat",
            "-m",
            &common::smollm2(),
            "--temp",
            "0",
            "-n",
            "200",
            "--json-object",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(
            b"Describe a cat as a JSON object with a name and an age.\n\
              Now describe a dog as a JSON object with a name and an age.\n",
        )
        .unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    // Each reply is one JSON value; together they are a stream of values.
    let replies: Vec<Value> = serde_json::Deserializer::from_slice(&out.stdout)
        .into_iter::<Value>()
        .map(|r| r.unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout))))
        .collect();
    assert_eq!(replies.len(), 2, "{replies:?}");
    assert!(!replies.is_empty());
    assert!(replies.iter().all(Value::is_object), "{replies:?}");
}

#[test]
fn bench_reports_the_mask_cost_per_token() {
    let schema = numbers_schema().to_string();
    let out = ferrolm(&[
        "bench",
        "-m",
        &common::smollm2(),
        "--json-schema",
        &schema,
        "-n",
        "40",
        "-r",
        "2",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let g = &report["grammar"];
    assert_eq!(g["runs"], 2, "{report}");
    assert!(g["tokens"].as_u64().is_some_and(|t| t > 4), "{report}");
    let mask = g["mask_us_per_token"].as_f64().unwrap();
    let step = g["decode_step_us"].as_f64().unwrap();
    assert!(mask > 0.0 && step > 0.0, "{report}");
    assert_eq!(
        g["outputs_parsed"], 2,
        "greedy output under the schema is JSON: {report}"
    );
}
