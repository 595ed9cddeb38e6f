//! Token ids for the reference models are exactly llama.cpp's.

mod common;

use common::{GEMMA3, SMOLLM2, golden, load};
use ferrolm_tokenizer::{DecodeOptions, EncodeOptions, Tokenizer};

fn check_model(tok: &Tokenizer, name: &str) {
    let g = golden(name);
    assert_eq!(g.tokenize.len(), 28);
    let mut failures = Vec::new();
    for case in &g.tokenize {
        let opts = EncodeOptions {
            add_special: case.add_special,
            parse_special: case.parse_special,
        };
        let ids = tok.encode(&case.text, opts);
        if ids != case.ids {
            failures.push(format!(
                "{:?} {opts:?}\n  expected {:?}\n       got {:?}",
                case.text, case.ids, ids
            ));
        }
    }
    for case in &g.greedy {
        let opts = EncodeOptions {
            add_special: case.add_special,
            parse_special: case.parse_special,
        };
        let ids = tok.encode(&case.prompt, opts);
        if ids != case.prompt_ids {
            failures.push(format!(
                "{:?} {opts:?}\n  expected {:?}\n       got {:?}",
                case.prompt, case.prompt_ids, ids
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn smollm2_ids_match_llama_cpp() {
    check_model(&load(SMOLLM2), "smollm2");
}

#[test]
fn gemma3_ids_match_llama_cpp() {
    check_model(&load(GEMMA3), "gemma3");
}

#[test]
fn golden_texts_round_trip_through_decode() {
    for (file, name) in [(SMOLLM2, "smollm2"), (GEMMA3, "gemma3")] {
        let tok = load(file);
        for case in golden(name).tokenize.iter().filter(|c| !c.parse_special) {
            let ids = tok.encode(
                &case.text,
                EncodeOptions {
                    add_special: false,
                    parse_special: false,
                },
            );
            let text = tok.decode(&ids, DecodeOptions::default()).expect("decode");
            assert_eq!(text, case.text, "{name}");
        }
    }
}
