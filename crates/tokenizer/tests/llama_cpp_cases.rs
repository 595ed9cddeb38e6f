//! Ids and detokenized text for several hundred generated inputs, compared
//! with what llama.cpp produced for them (`tests/data/llama_cpp_cases.json`):
//! GPL paragraphs, mixes of words, whitespace runs, digits, many scripts,
//! emoji sequences, special-token text, and invalid UTF-8.

mod common;

use common::{GEMMA3, SMOLLM2, load};
use ferrolm_tokenizer::{DecodeOptions, EncodeOptions};
use serde::Deserialize;

#[derive(Deserialize)]
struct Expected {
    ids: Vec<u32>,
    text_hex: String,
    special_hex: Option<String>,
}

#[derive(Deserialize)]
struct Case {
    hex: String,
    add_special: bool,
    parse_special: bool,
    smollm2: Expected,
    gemma3: Expected,
}

#[derive(Deserialize)]
struct Cases {
    cases: Vec<Case>,
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn cases() -> Vec<Case> {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/llama_cpp_cases.json");
    let text = std::fs::read_to_string(&path).expect("read cases");
    serde_json::from_str::<Cases>(&text)
        .expect("parse cases")
        .cases
}

fn check(file: &str, pick: fn(&Case) -> &Expected) {
    let tok = load(file);
    let all = cases();
    assert!(all.len() > 500);
    let mut failures = Vec::new();
    for case in &all {
        let input = unhex(&case.hex);
        let want = pick(case);
        let opts = EncodeOptions {
            add_special: case.add_special,
            parse_special: case.parse_special,
        };
        let ids = tok.encode_bytes(&input, opts);
        if ids != want.ids {
            failures.push(format!(
                "{:?} {opts:?}\n  expected {:?}\n       got {:?}",
                String::from_utf8_lossy(&input),
                want.ids,
                ids
            ));
            continue;
        }
        for (render_special, hex) in [
            (false, &want.text_hex),
            (true, want.special_hex.as_ref().unwrap_or(&want.text_hex)),
        ] {
            let opts = DecodeOptions {
                render_special,
                strip_space_prefix: true,
            };
            let bytes = tok.decode_bytes(&want.ids, opts).expect("decode");
            if bytes != unhex(hex) {
                failures.push(format!(
                    "decode {:?} (render_special {render_special}): expected {:?}, got {:?}",
                    want.ids,
                    String::from_utf8_lossy(&unhex(hex)),
                    String::from_utf8_lossy(&bytes)
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
}

#[test]
fn smollm2_matches_llama_cpp_on_generated_inputs() {
    check(SMOLLM2, |c| &c.smollm2);
}

#[test]
fn gemma3_matches_llama_cpp_on_generated_inputs() {
    check(GEMMA3, |c| &c.gemma3);
}
