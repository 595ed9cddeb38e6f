//! What the engine counts: requests, tokens, slots and the prefix cache ([`Stats`]), and the
//! latency [`Histogram`]s of time to first token and time per output token.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// A snapshot of an engine's counters, all since it started except the gauges `active` and
/// `queued`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Sequence slots (jobs generated at once).
    pub slots: usize,
    /// Jobs in a slot now.
    pub active: usize,
    /// Jobs waiting for a slot now.
    pub queued: usize,
    /// Generation jobs ended, for any reason (including cancelled and failed ones).
    pub finished: u64,
    /// Generation jobs that ended in a failure.
    pub failed: u64,
    /// Tokens generated.
    pub generated_tokens: u64,
    /// Prompt tokens of the jobs ended.
    pub prompt_tokens: u64,
    /// Jobs that started from a prompt prefix an earlier job left in a slot's cache.
    pub prefix_hits: u64,
    /// Jobs that found no such prefix.
    pub prefix_misses: u64,
    /// Prompt tokens not run again because their keys and values were in the cache.
    pub prefix_reused_tokens: u64,
    /// Hits whose prefix another slot holds (a running sequence, or a free slot whose cache is
    /// kept for later jobs), shared block by block rather than copied or run again.
    pub prefix_shared: u64,
    /// Blocks of the KV cache, of `kv_block_tokens` positions each.
    pub kv_blocks_total: usize,
    /// Blocks holding positions of a sequence or of a kept cache.
    pub kv_blocks_used: usize,
    /// Blocks several sequences hold (shared prompt prefixes).
    pub kv_blocks_shared: usize,
    /// Positions per block.
    pub kv_block_tokens: usize,
}

/// The live counters, shared by the engine thread (which writes them) and every handle.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) active: AtomicUsize,
    pub(crate) finished: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) generated: AtomicU64,
    pub(crate) prompt_tokens: AtomicU64,
    pub(crate) prefix_hits: AtomicU64,
    pub(crate) prefix_misses: AtomicU64,
    pub(crate) prefix_reused_tokens: AtomicU64,
    pub(crate) prefix_shared: AtomicU64,
    pub(crate) kv_blocks_total: AtomicUsize,
    pub(crate) kv_blocks_used: AtomicUsize,
    pub(crate) kv_blocks_shared: AtomicUsize,
    pub(crate) kv_block_tokens: AtomicUsize,
    /// From a job's submission to its first sampled token.
    pub(crate) ttft: Histogram,
    /// From the first sampled token to the last, per token after the first.
    pub(crate) tpot: Histogram,
}

impl Counters {
    /// Records how the KV cache's blocks are used now.
    pub(crate) fn note_kv(&self, blocks: ferrolm_transformer::KvBlocks) {
        self.kv_blocks_total.store(blocks.total, Ordering::Relaxed);
        self.kv_blocks_used.store(blocks.used, Ordering::Relaxed);
        self.kv_blocks_shared
            .store(blocks.shared, Ordering::Relaxed);
        self.kv_block_tokens
            .store(blocks.block_tokens, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self, slots: usize, queued: usize) -> Stats {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            slots,
            active: self.active.load(Ordering::Relaxed),
            queued,
            finished: load(&self.finished),
            failed: load(&self.failed),
            generated_tokens: load(&self.generated),
            prompt_tokens: load(&self.prompt_tokens),
            prefix_hits: load(&self.prefix_hits),
            prefix_misses: load(&self.prefix_misses),
            prefix_reused_tokens: load(&self.prefix_reused_tokens),
            prefix_shared: load(&self.prefix_shared),
            kv_blocks_total: self.kv_blocks_total.load(Ordering::Relaxed),
            kv_blocks_used: self.kv_blocks_used.load(Ordering::Relaxed),
            kv_blocks_shared: self.kv_blocks_shared.load(Ordering::Relaxed),
            kv_block_tokens: self.kv_block_tokens.load(Ordering::Relaxed),
        }
    }
}

/// Upper bounds of the latency buckets, in seconds.
const BOUNDS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A latency histogram with fixed buckets, updated without locks.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations at most each bound (not cumulative; the last counts the rest).
    counts: [AtomicU64; BOUNDS.len() + 1],
    /// Sum of the observations, microseconds.
    sum_us: AtomicU64,
}

impl Histogram {
    /// Upper bounds of the buckets, in seconds, ascending; a last bucket, unbounded, counts
    /// what is above them all.
    pub const BOUNDS: &'static [f64] = &BOUNDS;

    /// Records one observation of `seconds`.
    pub fn observe(&self, seconds: f64) {
        let bucket = BOUNDS
            .iter()
            .position(|&b| seconds <= b)
            .unwrap_or(BOUNDS.len());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add((seconds * 1e6).max(0.0) as u64, Ordering::Relaxed);
    }

    /// Observations per bucket (not cumulative): one count per bound of [`Histogram::BOUNDS`]
    /// (above the previous bound, at most this one), then the count above the last bound.
    pub fn counts(&self) -> Vec<u64> {
        self.counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect()
    }

    /// Sum of the observations, seconds (kept to the microsecond).
    pub fn sum_seconds(&self) -> f64 {
        self.sum_us.load(Ordering::Relaxed) as f64 / 1e6
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_that_bounds_them_and_the_sum_is_kept() {
        let h = Histogram::default();
        for s in [0.0005, 0.001, 0.02, 0.02, 3.0, 100.0] {
            h.observe(s);
        }
        let mut expected = vec![0; Histogram::BOUNDS.len() + 1];
        expected[0] = 2; // 0.0005 and 0.001 (a bound is inclusive)
        expected[4] = 2; // 0.02 <= 0.025
        expected[11] = 1; // 3.0 <= 5.0
        expected[14] = 1; // above 30
        assert_eq!(h.counts(), expected);
        assert!(
            (h.sum_seconds() - 103.0415).abs() < 1e-9,
            "{}",
            h.sum_seconds()
        );
    }
}
