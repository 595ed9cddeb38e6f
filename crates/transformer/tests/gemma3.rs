//! Gemma 3 270M against llama.cpp's golden outputs.
mod common;

use common::{GEMMA3, argmax, cpu_model, golden, ids, logits_at_every_position};
use ferrolm_transformer::Precision;

/// See tests/smollm2.rs: a differing greedy choice within this many logits is a near tie.
const NEAR_TIE: f32 = 0.5;

#[test]
fn greedy_continuations_match_llama_cpp_except_at_near_ties() {
    let file = common::open_model(GEMMA3);
    let gguf = file.gguf().expect("parses");
    let model = cpu_model(&gguf, Precision::Q8);
    let gold = golden("gemma3.json");
    for case in gold["greedy"].as_array().expect("cases") {
        let divergences = common::greedy_divergences(&model, case);
        eprintln!("{:?}: {divergences:?}", case["prompt"]);
        for d in &divergences {
            assert!(
                d.gap < NEAR_TIE,
                "{:?}: {d:?} is not a near tie",
                case["prompt"]
            );
        }
        // Each flip lets one of two near-equal tokens win; many of them would mean drift.
        let steps = case["ids"].as_array().expect("ids").len();
        assert!(
            divergences.len() * 10 <= steps,
            "{:?}: {divergences:?}",
            case["prompt"]
        );
    }
}

#[test]
fn logits_track_llama_cpp_top10() {
    let file = common::open_model(GEMMA3);
    let gguf = file.gguf().expect("parses");
    let model = cpu_model(&gguf, Precision::Q8);
    let gold = golden("gemma3.json");
    for case in gold["logits_top10"].as_array().expect("cases") {
        let logits = logits_at_every_position(&model, &ids(&case["ids"]));
        for p in case["positions"].as_array().expect("positions") {
            let row = &logits[p["pos"].as_u64().expect("pos") as usize];
            let top = p["top"].as_array().expect("top");
            let id0 = top[0][0].as_u64().expect("id") as u32;
            // Same winner, or a near tie with it.
            assert!(
                row[argmax(row) as usize] - row[id0 as usize] < 0.5,
                "position {}",
                p["pos"]
            );
            // Distances between the listed logits are kept (a constant shift does not change
            // the distribution); llama.cpp's own error bounds the tolerance.
            let v0 = top[0][1].as_f64().expect("logit") as f32;
            for pair in top {
                let (id, value) = (
                    pair[0].as_u64().expect("id") as usize,
                    pair[1].as_f64().expect("logit") as f32,
                );
                let ours = row[id] - row[id0 as usize];
                assert!(
                    (ours - (value - v0)).abs() < 1.0,
                    "position {} id {id}: {ours} vs {}",
                    p["pos"],
                    value - v0
                );
            }
        }
    }
}
