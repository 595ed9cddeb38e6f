//! The candidate set that samplers transform.

use std::cmp::Ordering;

use crate::SamplingError;
use crate::exp::softmax_weight;
use crate::softmax::argmax;

/// One token of the candidate set.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Candidate {
    /// Token id.
    pub id: u32,
    /// Logit: the log of an unnormalized probability. Never NaN inside a
    /// [`Candidates`] filled by this crate (NaN is stored as −∞).
    pub logit: f32,
    /// Probability; meaningful only while [`Candidates::has_probabilities`] is true.
    pub prob: f32,
}

/// NaN ranks as −∞.
#[inline]
fn rank_key(logit: f32) -> f32 {
    if logit.is_nan() {
        f32::NEG_INFINITY
    } else {
        logit
    }
}

/// Whether `a` ranks before `b`: larger logit first, equal logits by smaller id.
/// This total order is the one every sampler uses, which makes ties deterministic.
#[inline]
pub fn ranks_before(a: &Candidate, b: &Candidate) -> bool {
    let (x, y) = (rank_key(a.logit), rank_key(b.logit));
    x > y || (x == y && a.id < b.id)
}

/// [`ranks_before`] as an [`Ordering`] (`Less` means "ranks first").
#[inline]
pub fn rank_order(a: &Candidate, b: &Candidate) -> Ordering {
    match rank_key(b.logit).partial_cmp(&rank_key(a.logit)) {
        Some(Ordering::Equal) | None => a.id.cmp(&b.id),
        Some(order) => order,
    }
}

/// The candidate set: `(token, logit, probability)` triples that samplers
/// narrow down and reshape, and that a selector finally picks one token from.
///
/// It tracks what is known about its contents so samplers skip work: how long
/// a prefix is already sorted by rank (see [`ranks_before`]), whether the
/// probabilities are the softmax of the current logits, and whether entry `i`
/// still holds token `i` (a freshly filled vocabulary), which lets samplers that
/// touch a few tokens address them directly.
///
/// The buffer is reused: refilling it for the next token does not allocate once
/// its capacity has reached the vocabulary size.
#[derive(Clone, Debug, Default)]
pub struct Candidates {
    data: Vec<Candidate>,
    // data[..sorted_prefix] are the best-ranked entries, in rank order.
    sorted_prefix: usize,
    probs_valid: bool,
    full_vocabulary: bool,
    selected: Option<u32>,
}

impl Candidates {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty set with room for `n_vocab` candidates.
    pub fn with_capacity(n_vocab: usize) -> Self {
        Self {
            data: Vec::with_capacity(n_vocab),
            ..Self::default()
        }
    }

    /// A set holding every token of a logits row.
    pub fn from_logits(logits: &[f32]) -> Result<Self, SamplingError> {
        let mut c = Self::with_capacity(logits.len());
        c.fill(logits)?;
        Ok(c)
    }

    /// Replaces the contents by every token of `logits` (token `i` has logit
    /// `logits[i]`, NaN stored as −∞) and clears any selection.
    pub fn fill(&mut self, logits: &[f32]) -> Result<(), SamplingError> {
        check_row(logits)?;
        self.data.clear();
        self.data
            .extend(logits.iter().enumerate().map(|(i, &l)| Candidate {
                id: i as u32,
                logit: rank_key(l),
                prob: 0.0,
            }));
        self.reset_state(0, true);
        Ok(())
    }

    /// The same as [`Self::fill`] followed by [`Self::keep_top_k`], without
    /// materializing the whole vocabulary: one pass over the row that skips
    /// blocks of logits below the running threshold.
    pub fn fill_top_k(&mut self, logits: &[f32], k: usize) -> Result<(), SamplingError> {
        check_row(logits)?;
        if k >= logits.len() {
            return self.fill(logits);
        }
        self.data.clear();
        if k > 0 {
            threshold_select_row(logits, k, &mut self.data);
            self.data.sort_unstable_by(rank_order);
        }
        self.reset_state(self.data.len(), false);
        Ok(())
    }

    /// The same as [`Self::fill`] followed by [`Self::keep_logit_at_least`],
    /// without materializing the tokens that are cut.
    pub fn fill_logit_at_least(
        &mut self,
        logits: &[f32],
        threshold: f32,
    ) -> Result<(), SamplingError> {
        check_row(logits)?;
        self.data.clear();
        for (block, chunk) in logits.chunks(BLOCK).enumerate() {
            if !any_not_below(chunk, threshold) {
                continue;
            }
            for (j, &l) in chunk.iter().enumerate() {
                let l = rank_key(l);
                if l >= threshold {
                    self.data.push(Candidate {
                        id: (block * BLOCK + j) as u32,
                        logit: l,
                        prob: 0.0,
                    });
                }
            }
        }
        let full = self.data.len() == logits.len();
        self.reset_state(0, full);
        Ok(())
    }

    /// Replaces the contents by the single best-ranked token of `logits` and
    /// selects it: [`Self::fill`] followed by greedy selection, in two
    /// vectorized passes. Errors when no token is selectable.
    pub fn fill_greedy(&mut self, logits: &[f32]) -> Result<u32, SamplingError> {
        check_row(logits)?;
        let best = argmax(logits).ok_or(SamplingError::NoSelectableToken {
            n_candidates: logits.len(),
        })?;
        self.data.clear();
        self.data.push(Candidate {
            id: best as u32,
            logit: logits[best],
            prob: 0.0,
        });
        self.reset_state(1, false);
        self.selected = Some(best as u32);
        Ok(best as u32)
    }

    fn reset_state(&mut self, sorted_prefix: usize, full_vocabulary: bool) {
        self.sorted_prefix = sorted_prefix;
        self.probs_valid = false;
        self.full_vocabulary = full_vocabulary;
        self.selected = None;
    }

    /// Number of candidates.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether no candidate is left.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The candidates, in their current order.
    pub fn as_slice(&self) -> &[Candidate] {
        &self.data
    }

    /// Mutable access for samplers written outside this crate. The set forgets
    /// its order and probabilities, since the caller may change any logit.
    /// Ids must stay unique; NaN logits rank as −∞.
    pub fn as_mut_slice(&mut self) -> &mut [Candidate] {
        self.sorted_prefix = 0;
        self.probs_valid = false;
        self.full_vocabulary = false;
        &mut self.data
    }

    /// Whether entry `i` holds token `i` for every `i` (nothing removed or reordered since [`Self::fill`]).
    pub fn is_full_vocabulary(&self) -> bool {
        self.full_vocabulary
    }

    /// Whether every candidate is in rank order (see [`ranks_before`]).
    pub fn is_sorted(&self) -> bool {
        self.sorted_prefix == self.data.len()
    }

    /// Whether the `prob` fields are the softmax of the current logits.
    pub fn has_probabilities(&self) -> bool {
        self.probs_valid
    }

    /// The token a selector chose, if any.
    pub fn selected(&self) -> Option<u32> {
        self.selected
    }

    /// Records `token` as the chosen one.
    pub fn select(&mut self, token: u32) {
        self.selected = Some(token);
    }

    /// The largest logit (−∞ for an empty set).
    pub fn max_logit(&self) -> f32 {
        if self.sorted_prefix > 0 {
            return self.data[0].logit;
        }
        self.data
            .iter()
            .fold(f32::NEG_INFINITY, |m, c| m.max(c.logit))
    }

    /// The best-ranked candidate (largest logit, smallest id among ties).
    pub fn best(&self) -> Option<Candidate> {
        if self.sorted_prefix > 0 {
            return self.data.first().copied();
        }
        let mut iter = self.data.iter();
        let first = *iter.next()?;
        Some(iter.fold(first, |b, c| if ranks_before(c, &b) { *c } else { b }))
    }

    /// Sorts the whole set in rank order.
    pub fn sort(&mut self) {
        self.sort_prefix(self.data.len());
    }

    /// Moves the `m` best-ranked candidates to the front, in rank order, without
    /// sorting the rest (partial selection: linear in the set's size).
    pub fn sort_prefix(&mut self, m: usize) {
        let m = m.min(self.data.len());
        if self.sorted_prefix >= m {
            return;
        }
        sort_prefix_by(&mut self.data, self.sorted_prefix, m, rank_order);
        self.sorted_prefix = m;
    }

    /// Keeps the `k` best-ranked candidates, sorted; does nothing when `k >= len`.
    ///
    /// One pass over the set with a rising threshold: a candidate is copied only
    /// if it beats the k-th best seen so far, and a buffer of survivors is cut
    /// back to `k` by partial selection whenever it fills up.
    pub fn keep_top_k(&mut self, k: usize) {
        let n = self.data.len();
        if k >= n {
            return;
        }
        if k == 0 {
            self.clear_keeping_selection();
            return;
        }
        if self.sorted_prefix < k {
            if self.sorted_prefix > 0 {
                self.sort_prefix(k);
            } else {
                threshold_select(&mut self.data, k);
                self.data.sort_unstable_by(rank_order);
            }
        }
        self.data.truncate(k);
        self.sorted_prefix = k;
        self.probs_valid = false;
        self.full_vocabulary = false;
    }

    /// Computes each candidate's probability (softmax over the set's logits),
    /// unless they are already current.
    ///
    /// A set whose logits are all −∞ gets probability 0 everywhere; the
    /// selectors report it as [`SamplingError::NoSelectableToken`].
    pub fn softmax(&mut self) {
        if self.probs_valid {
            return;
        }
        self.probs_valid = true;
        let m = self.max_logit();
        if m == f32::NEG_INFINITY {
            self.data.iter_mut().for_each(|c| c.prob = 0.0);
            return;
        }
        if m == f32::INFINITY {
            let count = self
                .data
                .iter()
                .filter(|c| c.logit == f32::INFINITY)
                .count();
            let share = 1.0 / count as f32;
            for c in &mut self.data {
                c.prob = if c.logit == f32::INFINITY { share } else { 0.0 };
            }
            return;
        }
        let mut acc = [0.0_f64; 4];
        let mut chunks = self.data.chunks_exact_mut(4);
        for chunk in &mut chunks {
            for (a, c) in acc.iter_mut().zip(chunk) {
                c.prob = softmax_weight(c.logit - m);
                *a += f64::from(c.prob);
            }
        }
        let mut tail = 0.0_f64;
        for c in chunks.into_remainder() {
            c.prob = softmax_weight(c.logit - m);
            tail += f64::from(c.prob);
        }
        let inv = (1.0 / ((acc[0] + acc[1]) + (acc[2] + acc[3]) + tail)) as f32;
        self.data.iter_mut().for_each(|c| c.prob *= inv);
    }

    /// Keeps the smallest rank-ordered prefix whose probability reaches `p`
    /// (at least `min_keep` candidates); returns how many were kept.
    ///
    /// Sorts only as much of the set as it needs: on a large set it first cuts
    /// the tokens far below the best one when the rest already hold the mass
    /// (one pass), then sorts a prefix that grows fourfold until the mass is reached.
    pub fn keep_mass(&mut self, p: f64, min_keep: usize) -> usize {
        self.softmax();
        let before = self.data.len();
        self.cut_outside_mass(p, min_keep);
        let n = self.data.len();
        let mut cum = 0.0_f64;
        let mut i = 0;
        let mut step = 64;
        let keep = loop {
            let end = (i + step).min(n);
            self.sort_prefix(end);
            let mut reached = None;
            while i < end {
                cum += f64::from(self.data[i].prob);
                i += 1;
                if cum >= p && i >= min_keep {
                    reached = Some(i);
                    break;
                }
            }
            if let Some(k) = reached {
                break k;
            }
            if end == n {
                break n;
            }
            step *= 4;
        };
        self.truncate_sorted(keep);
        if keep < before {
            self.probs_valid = false;
        }
        keep
    }

    /// On a large unsorted set, drops the tokens below `max − d` for the
    /// smallest `d` in 8, 16, 32, 64 whose survivors carry more than `p` (with
    /// a margin far above rounding) and number at least `min_keep`. Survivors
    /// are an upper set of the rank order, so the smallest prefix reaching `p`
    /// lies among them; their probabilities stay those of the whole set.
    fn cut_outside_mass(&mut self, p: f64, min_keep: usize) {
        const LARGE: usize = 4096;
        let max = self.max_logit();
        if self.data.len() < LARGE || self.sorted_prefix >= LARGE || !max.is_finite() {
            return;
        }
        for depth in [8.0_f32, 16.0, 32.0, 64.0] {
            let floor = max - depth;
            let (count, mass) = self
                .data
                .iter()
                .filter(|c| c.logit >= floor)
                .fold((0usize, 0.0_f64), |(n, m), c| {
                    (n + 1, m + f64::from(c.prob))
                });
            if mass >= p + 1e-6 && count >= min_keep {
                self.cut_below(floor);
                return;
            }
        }
    }

    /// Keeps the candidates whose logit is at least `threshold`, in their order.
    pub fn keep_logit_at_least(&mut self, threshold: f32) {
        if self.cut_below(threshold) {
            self.probs_valid = false;
        }
    }

    /// [`Self::keep_logit_at_least`] without touching the probabilities;
    /// returns whether anything was dropped.
    fn cut_below(&mut self, threshold: f32) -> bool {
        let before = self.data.len();
        let mut kept_from_prefix = 0;
        let prefix = self.sorted_prefix;
        let mut w = 0;
        for r in 0..before {
            let c = self.data[r];
            if c.logit >= threshold {
                if r < prefix {
                    kept_from_prefix += 1;
                }
                self.data[w] = c;
                w += 1;
            }
        }
        self.data.truncate(w);
        // Survivors keep their relative order; those from the sorted prefix are
        // the best-ranked survivors, since the cut is monotone in the logit.
        self.sorted_prefix = kept_from_prefix;
        if w < before {
            self.full_vocabulary = false;
        }
        w < before
    }

    /// Keeps only `data[..n]`, which must be a rank-sorted prefix.
    fn truncate_sorted(&mut self, n: usize) {
        if n < self.data.len() {
            self.data.truncate(n);
            self.sorted_prefix = self.sorted_prefix.min(n);
            self.probs_valid = false;
            self.full_vocabulary = false;
        }
    }

    fn clear_keeping_selection(&mut self) {
        self.data.clear();
        self.sorted_prefix = 0;
        self.probs_valid = false;
        self.full_vocabulary = false;
    }

    /// Replaces the contents by `kept`, already sorted in rank order.
    pub(crate) fn replace_sorted(&mut self, kept: impl IntoIterator<Item = Candidate>) {
        self.data.clear();
        self.data.extend(kept);
        self.sorted_prefix = self.data.len();
        self.probs_valid = false;
        self.full_vocabulary = false;
    }

    /// Calls `f` with every candidate whose id is listed in `table` (sorted by
    /// id, unique) and its entry's value. The caller declares what changed.
    pub(crate) fn for_each_listed<T: Copy>(
        &mut self,
        table: &[(u32, T)],
        mut f: impl FnMut(&mut Candidate, T),
    ) {
        if table.is_empty() {
            return;
        }
        if self.full_vocabulary {
            for &(id, value) in table {
                if let Some(c) = self.data.get_mut(id as usize) {
                    f(c, value);
                }
            }
        } else {
            for c in &mut self.data {
                if let Ok(i) = table.binary_search_by_key(&c.id, |e| e.0) {
                    f(c, table[i].1);
                }
            }
        }
    }

    /// Mutable access for in-crate samplers; they say what they preserved.
    pub(crate) fn data_mut(&mut self) -> &mut [Candidate] {
        &mut self.data
    }

    /// Logits changed in a way that may reorder candidates.
    pub(crate) fn logits_changed(&mut self) {
        self.sorted_prefix = 0;
        self.probs_valid = false;
    }

    /// Logits changed by an order-preserving map (such as a positive scale).
    pub(crate) fn logits_rescaled(&mut self) {
        self.probs_valid = false;
    }
}

/// Logits are scanned in blocks of this many: a block entirely below the
/// running threshold is skipped after one vectorized comparison.
const BLOCK: usize = 16;

fn check_row(logits: &[f32]) -> Result<(), SamplingError> {
    if logits.is_empty() {
        return Err(SamplingError::EmptyLogits);
    }
    if u32::try_from(logits.len()).is_err() {
        return Err(SamplingError::VocabularyTooLarge { len: logits.len() });
    }
    Ok(())
}

/// Whether some entry of `chunk` is not below `threshold` (NaN counts as not below).
// A non-short-circuit `|` lets the block test vectorize; `!(l < t)` holds for NaN.
#[allow(clippy::needless_bitwise_bool, clippy::neg_cmp_op_on_partial_ord)]
#[inline]
fn any_not_below(chunk: &[f32], threshold: f32) -> bool {
    chunk.iter().fold(false, |any, &l| any | !(l < threshold))
}

/// Pushes the `k` best-ranked tokens of `logits` into `out` (unordered);
/// `0 < k < logits.len()`.
fn threshold_select_row(logits: &[f32], k: usize, out: &mut Vec<Candidate>) {
    let limit = (2 * k).max(k + 256);
    // No token has id u32::MAX (rows are shorter), so this sentinel lets
    // every token through until the buffer first fills.
    let mut threshold = Candidate {
        id: u32::MAX,
        logit: f32::NEG_INFINITY,
        prob: 0.0,
    };
    for (block, chunk) in logits.chunks(BLOCK).enumerate() {
        if !any_not_below(chunk, threshold.logit) {
            continue;
        }
        for (j, &l) in chunk.iter().enumerate() {
            let c = Candidate {
                id: (block * BLOCK + j) as u32,
                logit: rank_key(l),
                prob: 0.0,
            };
            if ranks_before(&c, &threshold) {
                out.push(c);
                if out.len() == limit {
                    out.select_nth_unstable_by(k - 1, rank_order);
                    threshold = out[k - 1];
                    out.truncate(k);
                }
            }
        }
    }
    if out.len() > k {
        out.select_nth_unstable_by(k - 1, rank_order);
        out.truncate(k);
    }
}

/// Makes `items[..m]` the `m` smallest items under `cmp`, sorted, given that
/// `items[..sorted]` already are the `sorted` smallest, sorted.
pub(crate) fn sort_prefix_by<T>(
    items: &mut [T],
    sorted: usize,
    m: usize,
    mut cmp: impl FnMut(&T, &T) -> Ordering,
) {
    let m = m.min(items.len());
    if sorted >= m {
        return;
    }
    let rest = &mut items[sorted..];
    let want = m - sorted;
    if want < rest.len() {
        rest.select_nth_unstable_by(want - 1, &mut cmp);
    }
    rest[..want].sort_unstable_by(cmp);
}

/// Moves the `k` best-ranked candidates into `data[..k]` (unordered) and
/// truncates to them; `0 < k < data.len()`.
fn threshold_select(data: &mut Vec<Candidate>, k: usize) {
    let n = data.len();
    let limit = (2 * k).max(k + 256).min(n);
    let mut written = 0;
    // Until the buffer first fills, every candidate is kept; afterwards only
    // those that rank before the current k-th best.
    let mut threshold: Option<Candidate> = None;
    for r in 0..n {
        let c = data[r];
        if threshold.is_none_or(|t| ranks_before(&c, &t)) {
            data[written] = c;
            written += 1;
            if written == limit {
                data[..written].select_nth_unstable_by(k - 1, rank_order);
                threshold = Some(data[k - 1]);
                written = k;
            }
        }
    }
    if written > k {
        data[..written].select_nth_unstable_by(k - 1, rank_order);
    }
    data.truncate(k);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ids(c: &Candidates) -> Vec<u32> {
        c.as_slice().iter().map(|c| c.id).collect()
    }

    #[test]
    fn fill_stores_nan_as_minus_infinity() {
        let c = Candidates::from_logits(&[1.0, f32::NAN, -2.0]).unwrap();
        assert_eq!(c.as_slice()[1].logit, f32::NEG_INFINITY);
        assert!(c.is_full_vocabulary());
        assert_eq!(
            Candidates::from_logits(&[]).unwrap_err(),
            SamplingError::EmptyLogits
        );
    }

    #[test]
    fn top_k_breaks_ties_by_smaller_id() {
        let mut c = Candidates::from_logits(&[1.0, 3.0, 3.0, 2.0, 3.0, 0.0]).unwrap();
        c.keep_top_k(2);
        assert_eq!(ids(&c), [1, 2]);
        assert!(c.is_sorted());
    }

    #[test]
    fn threshold_selection_matches_full_sort_on_a_large_row() {
        let n = 5000;
        let logits: Vec<f32> = (0..n).map(|i| ((i * 7919) % 1013) as f32 * 0.01).collect();
        for k in [1, 7, 40, 300, 1000, 4999] {
            let mut c = Candidates::from_logits(&logits).unwrap();
            c.keep_top_k(k);
            let mut all = Candidates::from_logits(&logits).unwrap();
            all.sort();
            assert_eq!(ids(&c), ids(&all)[..k], "k = {k}");
        }
    }

    #[test]
    fn keep_mass_keeps_smallest_prefix() {
        let mut c = Candidates::from_logits(&[0.0, 2.0, 1.0, -1.0]).unwrap();
        c.softmax();
        let p: Vec<f32> = c.as_slice().iter().map(|c| c.prob).collect();
        // p[1] ≈ 0.644, p[2] ≈ 0.237, together ≈ 0.881.
        let kept = c.keep_mass(0.8, 1);
        assert_eq!(kept, 2);
        assert_eq!(ids(&c), [1, 2]);
        assert!(f64::from(p[1]) < 0.8 && f64::from(p[1] + p[2]) >= 0.8);
    }

    #[test]
    fn keep_logit_at_least_preserves_sorted_prefix() {
        let mut c = Candidates::from_logits(&[0.0, 5.0, 4.0, 1.0, 3.0]).unwrap();
        c.sort_prefix(2);
        c.keep_logit_at_least(3.5);
        assert_eq!(ids(&c), [1, 2]);
        assert!(c.is_sorted());
    }

    #[test]
    fn softmax_of_a_set_sums_to_one() {
        let mut c = Candidates::from_logits(&[0.3, -1.0, 2.0, 7.5, f32::NAN]).unwrap();
        c.softmax();
        let s: f32 = c.as_slice().iter().map(|c| c.prob).sum();
        assert!((s - 1.0).abs() < 1e-6);
        assert_eq!(c.as_slice()[4].prob, 0.0);
    }
}
