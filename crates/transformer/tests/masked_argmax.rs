//! Greedy steps under a token mask ([`Model::forward_argmax_masked`], what a grammar's greedy
//! decoding runs): the token read back is the largest logit of an ordinary forward pass among
//! the allowed tokens, on SmolLM2 with masks that allow few, many or only padding-adjacent
//! tokens, and a mask that allows nothing is an error rather than a token.
#![allow(clippy::unwrap_used)]

mod common;

use common::{SMOLLM2, cpu_model, open_model};
use ferrolm_transformer::backend::argmax_row_masked;
use ferrolm_transformer::{Batch, Precision};

/// Masks over `n` tokens: every 7th token, all but the best few, a random tenth, one token.
fn masks(n: usize, best: u32) -> Vec<Vec<u32>> {
    let words = n.div_ceil(32);
    let from = |f: &dyn Fn(usize) -> bool| -> Vec<u32> {
        let mut m = vec![0u32; words];
        for k in (0..n).filter(|&k| f(k)) {
            m[k / 32] |= 1 << (k % 32);
        }
        m
    };
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut tenth = vec![false; n];
    for t in &mut tenth {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *t = state.is_multiple_of(10);
    }
    vec![
        from(&|k| k % 7 == 3),
        from(&|k| k.abs_diff(best as usize) > 2),
        from(&|k| tenth[k]),
        from(&|k| k == n - 1),
    ]
}

#[test]
fn masked_greedy_steps_pick_the_best_allowed_token() {
    let file = open_model(SMOLLM2);
    let gguf = file.gguf().unwrap();
    let model = cpu_model(&gguf, Precision::Q8);
    let vocab = model.config().vocab;
    let prompt = [1u32, 504, 3575, 282, 4649, 314];
    let positions: Vec<u32> = (0..prompt.len() as u32).collect();
    let batch = Batch {
        tokens: &prompt,
        positions: &positions,
        seqs: &[0; 6],
        outputs: &[5],
    };
    let mut kv = model.kv_cache(16, 1).unwrap();
    let mut state = model.state(6, 1).unwrap();
    model.forward(&mut state, &mut kv, &batch).unwrap();
    let logits = state.logits().to_vec();
    let best = common::argmax(&logits);
    for mask in masks(vocab, best) {
        let want = argmax_row_masked(&logits, &mask).unwrap();
        assert_ne!(want, best, "the masks exclude the unmasked best token");
        let mut kv = model.kv_cache(16, 1).unwrap();
        model
            .forward_argmax_masked(&mut state, &mut kv, &batch, |m| {
                m.extend_from_slice(&mask);
                Ok(())
            })
            .unwrap();
        assert_eq!(state.argmax(), [want]);
    }
    let mut kv = model.kv_cache(16, 1).unwrap();
    let nothing = model.forward_argmax_masked(&mut state, &mut kv, &batch, |m| {
        m.resize(vocab.div_ceil(32), 0);
        Ok(())
    });
    assert!(nothing.is_err(), "a mask that allows nothing chose a token");
}
