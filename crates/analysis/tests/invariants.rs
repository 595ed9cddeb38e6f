//! Properties every distribution metric keeps on random logits.
#![allow(clippy::unwrap_used)]

use ferrolm_analysis::kl_divergence::position_kl;
use ferrolm_analysis::{logits, token_metrics};
use proptest::prelude::*;

fn row() -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(-30.0f32..30.0, 2..300)
}

proptest! {
    #[test]
    fn token_metrics_stay_in_range(r in row(), pick in any::<prop::sample::Index>(), k in 1usize..20) {
        let token = pick.index(r.len()) as u32;
        let m = token_metrics(&r, token, k).unwrap();
        let n = r.len() as f64;
        prop_assert!(m.surprisal >= -1e-9);
        prop_assert!(m.entropy >= 0.0 && m.entropy <= n.ln() + 1e-6);
        prop_assert!(m.varentropy >= 0.0);
        prop_assert!(m.top_k_mass > 0.0 && m.top_k_mass <= 1.0 + 1e-9);
        prop_assert!(m.rank < r.len());
        // The top-k mass grows with k and the most likely token has the lowest surprisal.
        let more = token_metrics(&r, token, k + 1).unwrap();
        prop_assert!(more.top_k_mass >= m.top_k_mass - 1e-9);
        let best = token_metrics(&r, logits::argmax(&r) as u32, k).unwrap();
        prop_assert!(best.surprisal <= m.surprisal + 1e-9);
    }

    #[test]
    fn kl_divergence_is_non_negative_and_zero_on_itself(
        pq in (2usize..300).prop_flat_map(|n| (
            prop::collection::vec(-30.0f32..30.0, n),
            prop::collection::vec(-30.0f32..30.0, n),
        )),
    ) {
        let (p, q) = pq;
        let k = position_kl(&p, &q, 0).unwrap();
        prop_assert!(k.kld >= -1e-6, "{}", k.kld);
        prop_assert!(k.delta_p.abs() <= 1.0);
        prop_assert_eq!(position_kl(&p, &p, 1).unwrap().kld, 0.0);
        // Shifting a row does not change its distribution.
        let shifted: Vec<f32> = q.iter().map(|x| x + 7.5).collect();
        prop_assert!((position_kl(&p, &shifted, 0).unwrap().kld - k.kld).abs() < 1e-4 * (1.0 + k.kld));
    }
}
