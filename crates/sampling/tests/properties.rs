//! Property tests of the samplers against plain reference computations.

#![allow(clippy::unwrap_used)]

use ferrolm_sampling::{
    Candidates, Distribution, Greedy, MinP, Sampler, SamplerChain, SamplingConfig, Temperature,
    TopK, TopP, rank_order,
};
use proptest::prelude::*;

/// Rows that mix continuous values, small integers (so ties happen) and the odd −∞.
fn logits_row() -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(
        prop_oneof![
            6 => -20.0_f32..20.0,
            3 => (-4i32..4).prop_map(|v| v as f32),
            1 => Just(f32::NEG_INFINITY),
        ],
        1..400,
    )
    .prop_filter("at least one selectable token", |row| {
        row.iter().any(|v| v.is_finite())
    })
}

/// Rows longer than the size at which top-p starts cutting by logit.
fn long_row() -> impl Strategy<Value = Vec<f32>> {
    (
        prop::collection::vec(-12.0_f32..12.0, 4096..6000),
        0.5_f32..3.0,
    )
        .prop_map(|(row, scale)| row.into_iter().map(|v| v * scale).collect())
}

/// Like [`logits_row`], with NaN too.
fn noisy_row() -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(
        prop_oneof![
            6 => -20.0_f32..20.0,
            3 => (-4i32..4).prop_map(|v| v as f32),
            1 => Just(f32::NEG_INFINITY),
            1 => Just(f32::NAN),
        ],
        1..600,
    )
    .prop_filter("at least one selectable token", |row| {
        row.iter().any(|v| v.is_finite())
    })
}

fn config() -> impl Strategy<Value = SamplingConfig> {
    (
        prop_oneof![Just(0.0_f32), Just(0.5), Just(1.0), Just(1.7)],
        prop_oneof![Just(0usize), Just(1), Just(5), Just(40)],
        prop_oneof![Just(1.0_f32), Just(0.9), Just(0.3)],
        prop_oneof![Just(0.0_f32), Just(0.05), Just(0.5), Just(1.0)],
        prop_oneof![Just(1.0_f32), Just(1.3), Just(0.8)],
        prop_oneof![Just(0.0_f32), Just(0.4)],
        prop::collection::vec((0u32..600, -3.0_f32..3.0), 0..4),
        any::<u64>(),
    )
        .prop_map(
            |(
                temperature,
                top_k,
                top_p,
                min_p,
                repeat_penalty,
                presence_penalty,
                logit_bias,
                seed,
            )| {
                SamplingConfig {
                    temperature,
                    top_k,
                    top_p,
                    min_p,
                    repeat_penalty,
                    presence_penalty,
                    logit_bias,
                    seed,
                    ..SamplingConfig::default()
                }
            },
        )
}

/// 128 cases unless PROPTEST_CASES says otherwise.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(128)
}

fn ids(c: &Candidates) -> Vec<u32> {
    c.as_slice().iter().map(|c| c.id).collect()
}

/// Every token of the row, best first, by the crate's documented order.
fn reference_ranking(row: &[f32]) -> Vec<u32> {
    let mut order: Vec<u32> = (0..row.len() as u32).collect();
    order.sort_by(|&a, &b| row[b as usize].total_cmp(&row[a as usize]).then(a.cmp(&b)));
    order
}

fn draw(chain: &mut SamplerChain, row: &[f32], steps: usize) -> Vec<u32> {
    (0..steps)
        .map(|_| {
            let t = chain.sample(row).unwrap();
            chain.accept(t);
            t
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn probabilities_sum_to_one(row in logits_row()) {
        let mut c = Candidates::from_logits(&row).unwrap();
        c.softmax();
        let total: f64 = c.as_slice().iter().map(|c| f64::from(c.prob)).sum();
        prop_assert!((total - 1.0).abs() < 1e-5, "sum {total}");
        let mut p = row.clone();
        ferrolm_sampling::softmax_in_place(&mut p).unwrap();
        let total: f64 = p.iter().map(|&v| f64::from(v)).sum();
        prop_assert!((total - 1.0).abs() < 1e-5, "sum {total}");
        prop_assert!(p.iter().all(|&v| (0.0..=1.0).contains(&v)));
    }

    #[test]
    fn top_k_keeps_exactly_the_k_best(row in logits_row(), k in 1usize..60) {
        let mut c = Candidates::from_logits(&row).unwrap();
        TopK::new(k).apply(&mut c).unwrap();
        let want = reference_ranking(&row);
        let kept = ids(&c);
        prop_assert_eq!(kept.len(), k.min(row.len()));
        if k < row.len() {
            prop_assert_eq!(&kept[..], &want[..k]);
        }
    }

    #[test]
    fn top_p_keeps_the_smallest_prefix_reaching_p(
        row in prop_oneof![3 => logits_row(), 1 => long_row()],
        p in prop_oneof![0.0_f32..1.0, 0.99_f32..1.0],
    ) {
        let mut full = Candidates::from_logits(&row).unwrap();
        full.softmax();
        full.sort();
        let mut cum = 0.0_f64;
        let mut want = Vec::new();
        for c in full.as_slice() {
            want.push(c.id);
            cum += f64::from(c.prob);
            if cum >= f64::from(p) {
                break;
            }
        }
        let mut c = Candidates::from_logits(&row).unwrap();
        TopP::new(p, 1).unwrap().apply(&mut c).unwrap();
        prop_assert_eq!(ids(&c), want);
    }

    #[test]
    fn min_p_keeps_tokens_above_the_relative_floor(row in logits_row(), min_p in 0.001_f32..0.999) {
        let mut p = row.clone();
        ferrolm_sampling::softmax_in_place(&mut p).unwrap();
        let p_max = p.iter().copied().fold(0.0_f32, f32::max);
        let floor = f64::from(min_p) * f64::from(p_max);
        let mut c = Candidates::from_logits(&row).unwrap();
        MinP::new(min_p, 1).unwrap().apply(&mut c).unwrap();
        let kept = ids(&c);
        for (t, &pt) in p.iter().enumerate() {
            let pt = f64::from(pt);
            // Away from the boundary the decision must match the definition exactly.
            if pt >= floor * (1.0 + 1e-4) && pt > 0.0 {
                prop_assert!(kept.contains(&(t as u32)), "token {t} (p = {pt}) dropped, floor {floor}");
            } else if pt <= floor * (1.0 - 1e-4) {
                prop_assert!(!kept.contains(&(t as u32)), "token {t} (p = {pt}) kept, floor {floor}");
            }
        }
    }

    #[test]
    fn a_seed_reproduces_and_other_seeds_differ(seed in any::<u64>()) {
        let row: Vec<f32> = (0..64).map(|i| ((i * 37) % 11) as f32 * 0.1).collect();
        let config = SamplingConfig { seed, top_k: 0, top_p: 1.0, min_p: 0.0, temperature: 1.0, ..SamplingConfig::default() };
        let a = draw(&mut config.build().unwrap(), &row, 40);
        let b = draw(&mut config.build().unwrap(), &row, 40);
        prop_assert_eq!(&a, &b);
        let other = SamplingConfig { seed: seed.wrapping_add(1), ..config };
        let c = draw(&mut other.build().unwrap(), &row, 40);
        prop_assert_ne!(a, c);
    }

    #[test]
    fn top_k_one_and_min_p_one_equal_greedy(row in logits_row(), seed in any::<u64>(), t in 0.1_f32..3.0) {
        let mut greedy = SamplerChain::new().with(Greedy);
        let want = greedy.sample(&row).unwrap();
        let mut by_top_k = SamplerChain::new()
            .with(TopK::new(1))
            .with(TopP::new(0.9, 1).unwrap())
            .with(Temperature::new(t).unwrap())
            .with(Distribution::new(seed));
        let mut by_min_p = SamplerChain::new()
            .with(MinP::new(1.0, 1).unwrap())
            .with(Temperature::new(t).unwrap())
            .with(Distribution::new(seed));
        prop_assert_eq!(by_top_k.sample(&row).unwrap(), want);
        prop_assert_eq!(by_min_p.sample(&row).unwrap(), want);
        for flags in [
            SamplingConfig { top_k: 1, seed, ..SamplingConfig::default() },
            SamplingConfig { min_p: 1.0, seed, ..SamplingConfig::default() },
            SamplingConfig { temperature: 0.0, seed, ..SamplingConfig::default() },
        ] {
            prop_assert_eq!(flags.build().unwrap().sample(&row).unwrap(), want);
        }
    }

    #[test]
    fn the_standard_chain_selects_a_token_the_truncation_kept(row in logits_row(), seed in any::<u64>()) {
        let mut chain = SamplingConfig { seed, ..SamplingConfig::default() }.build().unwrap();
        let token = chain.sample(&row).unwrap();
        let mut ranked = Candidates::from_logits(&row).unwrap();
        ranked.keep_top_k(40);
        prop_assert!(ids(&ranked).contains(&token));
        prop_assert!(row[token as usize].is_finite());
        let survivors = chain.candidates().as_slice();
        prop_assert!(survivors.windows(2).all(|w| rank_order(&w[0], &w[1]).is_lt()));
    }

    #[test]
    fn row_fast_paths_equal_filling_and_applying_each_sampler(
        row in noisy_row(),
        config in config(),
        history in prop::collection::vec(0u32..600, 0..30),
    ) {
        let mut fast = config.build().unwrap();
        let mut slow = config.build().unwrap();
        for &t in &history {
            fast.accept(t);
            slow.accept(t);
        }
        let mut slow_candidates = Candidates::from_logits(&row).unwrap();
        let slow_result = Sampler::apply(&mut slow, &mut slow_candidates).map(|()| slow_candidates.selected());
        let fast_result = fast.sample(&row).map(Some);
        prop_assert_eq!(&fast_result, &slow_result);
        if fast_result.is_ok() && !config.is_greedy() {
            let fast_kept: Vec<(u32, u32)> =
                fast.candidates().as_slice().iter().map(|c| (c.id, c.logit.to_bits())).collect();
            let slow_kept: Vec<(u32, u32)> =
                slow_candidates.as_slice().iter().map(|c| (c.id, c.logit.to_bits())).collect();
            prop_assert_eq!(fast_kept, slow_kept);
        }
    }
}
