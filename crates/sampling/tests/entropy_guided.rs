//! Entropy-guided selection on a toy model that loves to repeat itself.

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;

use ferrolm_sampling::{Distribution, EntropyGuided, SamplerChain, Temperature};

const VOCAB: usize = 16;

/// A bigram "model": after token `t` it strongly prefers `(t + 1) % 4`, so
/// plain sampling loops through 0 1 2 3 0 1 2 3 ...
fn toy_logits(prev: u32, out: &mut [f32]) {
    for (t, v) in out.iter_mut().enumerate() {
        *v = if t as u32 == (prev + 1) % 4 { 8.0 } else { 0.0 };
    }
}

fn generate(chain: &mut SamplerChain, n: usize) -> Vec<u32> {
    let mut logits = [0.0_f32; VOCAB];
    let mut tokens = vec![0u32];
    chain.accept(0);
    for _ in 0..n {
        toy_logits(*tokens.last().unwrap(), &mut logits);
        let t = chain.sample(&logits).unwrap();
        chain.accept(t);
        tokens.push(t);
    }
    tokens
}

fn distinct_trigrams(tokens: &[u32]) -> usize {
    tokens.windows(3).collect::<HashSet<_>>().len()
}

fn plain(seed: u64) -> SamplerChain {
    SamplerChain::new().with(Distribution::new(seed))
}

fn guided(seed: u64, w: f32) -> SamplerChain {
    SamplerChain::new()
        .with(EntropyGuided::new(w, 2, 64).unwrap())
        .with(Distribution::new(seed))
}

#[test]
fn zero_weight_is_plain_sampling() {
    for seed in 0..5 {
        assert_eq!(
            generate(&mut guided(seed, 0.0), 300),
            generate(&mut plain(seed), 300)
        );
    }
}

#[test]
fn positive_weight_lowers_repetition() {
    let (mut plain_total, mut tempered_total, mut guided_total) = (0, 0, 0);
    for seed in 0..5 {
        plain_total += distinct_trigrams(&generate(&mut plain(seed), 200));
        // The (1 − w) factor alone acts as temperature 1 / (1 − w) = 2; the
        // information term must add diversity beyond that.
        let mut tempered = SamplerChain::new()
            .with(Temperature::new(2.0).unwrap())
            .with(Distribution::new(seed));
        tempered_total += distinct_trigrams(&generate(&mut tempered, 200));
        guided_total += distinct_trigrams(&generate(&mut guided(seed, 0.5), 200));
    }
    assert!(
        guided_total > tempered_total + tempered_total / 4 && tempered_total > plain_total,
        "distinct trigrams: plain {plain_total}, tempered {tempered_total}, guided {guided_total}"
    );
}
