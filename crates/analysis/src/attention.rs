//! Attention diagnostics: entropy per head, collapse detection, and how much attention each
//! token receives.
//!
//! The input is [`LayerAttention`]: for one layer, every head's attention distribution of
//! every query position over the key positions it can see (causal, and inside the sliding
//! window if the layer has one).
//!
//! For each query row with at least [`HealthThresholds::min_keys`] visible keys:
//! - its entropy `H = −Σ w ln w` (nats), and its normalized entropy `H / ln n` with `n`
//!   the number of visible keys (0: all weight on one key, 1: uniform);
//! - its largest weight and the key that holds it.
//!
//! A head is then classified, first match wins:
//! 1. [`HeadHealth::Collapsed`]: at least `collapse_share` (90%) of its rows put at least
//!    `collapse_weight` (0.5) of their weight on the *same* key, typically the first token
//!    acting as an attention sink: the head's output barely depends on the query.
//! 2. [`HeadHealth::TooFocused`]: mean normalized entropy below `focused_entropy` (0.1):
//!    every row is nearly one-hot (on different keys), the head copies single tokens.
//! 3. [`HeadHealth::TooDiffuse`]: mean normalized entropy above `diffuse_entropy` (0.9):
//!    rows are close to uniform, the head averages its context.
//! 4. [`HeadHealth::Healthy`] otherwise.
//!
//! Token importance is the share of all attention (over layers, heads and query rows) that
//! lands on each key position; the shares sum to 1.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;

use serde::Serialize;

use crate::error::{AnalysisError, Result};

/// Attention weights of one layer: `n_head` heads, each with one row per query position.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerAttention {
    n_head: usize,
    n_key: usize,
    visible: Vec<Range<usize>>, // per query: the keys it can see
    weights: Vec<f32>,          // (n_head, n_query, n_key), 0 outside `visible`
}

impl LayerAttention {
    /// An all-zero layer of `n_head` heads whose query `i` sees the keys `visible[i]`, out of
    /// `n_key` key positions.
    pub fn new(n_head: usize, n_key: usize, visible: Vec<Range<usize>>) -> Result<Self> {
        if let Some(r) = visible.iter().find(|r| r.is_empty() || r.end > n_key) {
            return Err(AnalysisError::InvalidInput {
                what: "attention layer",
                reason: format!("query sees keys {r:?} of {n_key}"),
            });
        }
        Ok(Self {
            n_head,
            n_key,
            weights: vec![0.0; n_head * visible.len() * n_key],
            visible,
        })
    }

    /// A causal layer over `n` positions: query `i` sees keys `0..=i`.
    pub fn causal(n_head: usize, n: usize) -> Result<Self> {
        Self::new(n_head, n, (0..n).map(|i| 0..i + 1).collect())
    }

    /// Heads.
    pub fn n_head(&self) -> usize {
        self.n_head
    }

    /// Query rows per head.
    pub fn n_query(&self) -> usize {
        self.visible.len()
    }

    /// Key positions.
    pub fn n_key(&self) -> usize {
        self.n_key
    }

    /// The keys query `q` sees.
    pub fn visible(&self, q: usize) -> Range<usize> {
        self.visible[q].clone()
    }

    /// The weights of head `h` for query `q` over its visible keys.
    pub fn row(&self, h: usize, q: usize) -> &[f32] {
        let start = (h * self.n_query() + q) * self.n_key;
        &self.weights[start..start + self.n_key][self.visible[q].clone()]
    }

    /// Sets the weights of head `h` for query `q` over its visible keys.
    pub fn set_row(&mut self, h: usize, q: usize, weights: &[f32]) -> Result<()> {
        let vis = self
            .visible
            .get(q)
            .cloned()
            .ok_or_else(|| AnalysisError::InvalidInput {
                what: "attention layer",
                reason: format!("query {q} of {}", self.n_query()),
            })?;
        if h >= self.n_head || weights.len() != vis.len() {
            return Err(AnalysisError::InvalidInput {
                what: "attention layer",
                reason: format!(
                    "head {h} of {}, {} weights for {} visible keys",
                    self.n_head,
                    weights.len(),
                    vis.len()
                ),
            });
        }
        let start = (h * self.n_query() + q) * self.n_key;
        self.weights[start + vis.start..start + vis.end].copy_from_slice(weights);
        Ok(())
    }
}

/// Entropy of a weight row, nats, after normalizing it to sum 1 (0 for an all-zero row).
pub fn entropy(row: &[f32]) -> f64 {
    let total: f64 = row.iter().map(|&w| f64::from(w.max(0.0))).sum();
    if total <= 0.0 {
        return 0.0;
    }
    let mut h = 0.0;
    for &w in row {
        let p = f64::from(w.max(0.0)) / total;
        if p > 0.0 {
            h -= p * p.ln();
        }
    }
    h.max(0.0)
}

/// Where the health categories begin (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct HealthThresholds {
    /// Rows with fewer visible keys are left out of a head's statistics.
    pub min_keys: usize,
    /// Share of rows that must favour the same key for a collapse.
    pub collapse_share: f64,
    /// Weight a row must give that key to count.
    pub collapse_weight: f64,
    /// Mean normalized entropy below which a head is too focused.
    pub focused_entropy: f64,
    /// Mean normalized entropy above which a head is too diffuse.
    pub diffuse_entropy: f64,
}

impl Default for HealthThresholds {
    fn default() -> Self {
        Self {
            min_keys: 2,
            collapse_share: 0.9,
            collapse_weight: 0.5,
            focused_entropy: 0.1,
            diffuse_entropy: 0.9,
        }
    }
}

/// The verdict on one head.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HeadHealth {
    /// Content-dependent attention between the extremes.
    Healthy,
    /// Nearly every query attends to the same single key.
    Collapsed,
    /// Nearly one-hot rows on varying keys.
    TooFocused,
    /// Nearly uniform rows.
    TooDiffuse,
}

impl fmt::Display for HeadHealth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Healthy => "healthy",
            Self::Collapsed => "collapsed",
            Self::TooFocused => "too focused",
            Self::TooDiffuse => "too diffuse",
        })
    }
}

/// Statistics and verdict of one head.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HeadStats {
    /// Layer index.
    pub layer: usize,
    /// Head index within the layer.
    pub head: usize,
    /// Query rows that entered the statistics.
    pub rows: usize,
    /// Mean entropy of those rows, nats.
    pub mean_entropy: f64,
    /// Mean normalized entropy (0 one-hot, 1 uniform).
    pub mean_normalized_entropy: f64,
    /// Mean of each row's largest weight.
    pub mean_max_weight: f64,
    /// The key most often holding a row's largest weight (at least `collapse_weight`).
    pub dominant_key: Option<usize>,
    /// Share of rows whose largest weight (at least `collapse_weight`) is on `dominant_key`.
    pub dominant_share: f64,
    /// The verdict.
    pub health: HeadHealth,
}

/// Statistics of head `h` of `layer` (numbered `layer_index`).
pub fn head_stats(
    layer: &LayerAttention,
    layer_index: usize,
    h: usize,
    t: &HealthThresholds,
) -> HeadStats {
    let (mut rows, mut sum_h, mut sum_hn, mut sum_max) = (0usize, 0.0, 0.0, 0.0);
    let mut peaks: HashMap<usize, usize> = HashMap::new();
    for q in 0..layer.n_query() {
        let vis = layer.visible(q);
        if vis.len() < t.min_keys.max(1) {
            continue;
        }
        let row = layer.row(h, q);
        let total: f64 = row.iter().map(|&w| f64::from(w.max(0.0))).sum();
        let (arg, max) =
            row.iter().enumerate().fold(
                (0, f32::NEG_INFINITY),
                |b, (i, &w)| if w > b.1 { (i, w) } else { b },
            );
        let max = if total > 0.0 {
            f64::from(max) / total
        } else {
            0.0
        };
        let e = entropy(row);
        rows += 1;
        sum_h += e;
        sum_hn += if vis.len() > 1 {
            e / (vis.len() as f64).ln()
        } else {
            0.0
        };
        sum_max += max;
        if max >= t.collapse_weight {
            *peaks.entry(vis.start + arg).or_default() += 1;
        }
    }
    let n = rows.max(1) as f64;
    let dominant = peaks
        .iter()
        .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
        .map(|(&k, &c)| (k, c));
    let dominant_share = dominant.map_or(0.0, |(_, c)| c as f64 / n);
    let mean_hn = sum_hn / n;
    let health = if rows > 0 && dominant_share >= t.collapse_share {
        HeadHealth::Collapsed
    } else if rows > 0 && mean_hn < t.focused_entropy {
        HeadHealth::TooFocused
    } else if rows > 0 && mean_hn > t.diffuse_entropy {
        HeadHealth::TooDiffuse
    } else {
        HeadHealth::Healthy
    };
    HeadStats {
        layer: layer_index,
        head: h,
        rows,
        mean_entropy: sum_h / n,
        mean_normalized_entropy: mean_hn,
        mean_max_weight: sum_max / n,
        dominant_key: dominant.map(|(k, _)| k),
        dominant_share,
        health,
    }
}

/// Entropy of every visible row of `layer`, averaged over heads: one value per query (nats).
pub fn mean_query_entropy(layer: &LayerAttention) -> Vec<f64> {
    (0..layer.n_query())
        .map(|q| {
            let s: f64 = (0..layer.n_head()).map(|h| entropy(layer.row(h, q))).sum();
            s / layer.n_head().max(1) as f64
        })
        .collect()
}

/// The share of all attention over `layers` (every head and query row, each row normalized
/// to sum 1) that lands on each key position. The shares sum to 1 when any row has weight.
pub fn attention_received(layers: &[LayerAttention]) -> Vec<f64> {
    let n_key = layers.iter().map(LayerAttention::n_key).max().unwrap_or(0);
    let mut received = vec![0.0f64; n_key];
    for layer in layers {
        for h in 0..layer.n_head() {
            for q in 0..layer.n_query() {
                let row = layer.row(h, q);
                let total: f64 = row.iter().map(|&w| f64::from(w.max(0.0))).sum();
                if total <= 0.0 {
                    continue;
                }
                for (k, &w) in layer.visible(q).zip(row) {
                    received[k] += f64::from(w.max(0.0)) / total;
                }
            }
        }
    }
    let all: f64 = received.iter().sum();
    if all > 0.0 {
        for r in &mut received {
            *r /= all;
        }
    }
    received
}

/// The health of every head of every layer.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AttentionHealth {
    /// The thresholds used.
    pub thresholds: HealthThresholds,
    /// One entry per head, layer by layer.
    pub heads: Vec<HeadStats>,
    /// Share of attention received by each position.
    pub received: Vec<f64>,
}

impl AttentionHealth {
    /// Diagnoses every head of `layers`.
    pub fn of(layers: &[LayerAttention], thresholds: HealthThresholds) -> Self {
        let heads = layers
            .iter()
            .enumerate()
            .flat_map(|(l, layer)| (0..layer.n_head()).map(move |h| (l, layer, h)))
            .map(|(l, layer, h)| head_stats(layer, l, h, &thresholds))
            .collect();
        Self {
            thresholds,
            heads,
            received: attention_received(layers),
        }
    }

    /// Heads of each verdict in `layer`: (healthy, collapsed, too focused, too diffuse).
    pub fn counts(&self, layer: usize) -> [usize; 4] {
        let mut c = [0; 4];
        for h in self.heads.iter().filter(|h| h.layer == layer) {
            c[match h.health {
                HeadHealth::Healthy => 0,
                HeadHealth::Collapsed => 1,
                HeadHealth::TooFocused => 2,
                HeadHealth::TooDiffuse => 3,
            }] += 1;
        }
        c
    }

    /// Positions by attention received, most first, with their shares.
    pub fn most_received(&self, n: usize) -> Vec<(usize, f64)> {
        let mut v: Vec<(usize, f64)> = self.received.iter().copied().enumerate().collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        v.truncate(n);
        v
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn layer_with(n: usize, f: impl Fn(usize) -> Vec<f32>) -> LayerAttention {
        let mut l = LayerAttention::causal(1, n).unwrap();
        for q in 0..n {
            l.set_row(0, q, &f(q)).unwrap();
        }
        l
    }

    fn one_hot(len: usize, at: usize) -> Vec<f32> {
        (0..len).map(|k| if k == at { 1.0 } else { 0.0 }).collect()
    }

    #[test]
    fn entropy_of_known_rows() {
        assert!((entropy(&[0.25; 4]) - 4f64.ln()).abs() < 1e-12);
        assert_eq!(entropy(&[0.0, 1.0, 0.0]), 0.0);
        assert!(
            (entropy(&[2.0, 2.0]) - 2f64.ln()).abs() < 1e-12,
            "rows are normalized"
        );
        assert_eq!(entropy(&[0.0, 0.0]), 0.0);
    }

    #[test]
    fn uniform_attention_is_too_diffuse() {
        let l = layer_with(16, |q| vec![1.0 / (q + 1) as f32; q + 1]);
        let s = head_stats(&l, 0, 0, &HealthThresholds::default());
        assert_eq!(s.health, HeadHealth::TooDiffuse);
        assert_eq!(s.rows, 15);
        assert!((s.mean_normalized_entropy - 1.0).abs() < 1e-6);
        let want: f64 = (2..=16).map(|n| f64::from(n).ln()).sum::<f64>() / 15.0;
        assert!((s.mean_entropy - want).abs() < 1e-6);
    }

    #[test]
    fn sink_attention_is_collapsed() {
        let l = layer_with(12, |q| one_hot(q + 1, 0));
        let s = head_stats(&l, 3, 0, &HealthThresholds::default());
        assert_eq!(s.health, HeadHealth::Collapsed);
        assert_eq!(
            (s.layer, s.dominant_key, s.dominant_share),
            (3, Some(0), 1.0)
        );
        assert_eq!(s.mean_entropy, 0.0);
    }

    #[test]
    fn previous_token_attention_is_too_focused() {
        let l = layer_with(12, |q| one_hot(q + 1, q.saturating_sub(1)));
        let s = head_stats(&l, 0, 0, &HealthThresholds::default());
        assert_eq!(s.health, HeadHealth::TooFocused);
        assert!(s.dominant_share < 0.2);
        assert!((s.mean_max_weight - 1.0).abs() < 1e-12);
    }

    #[test]
    fn mixed_attention_is_healthy() {
        // Half the weight on the previous token, the rest spread evenly.
        let l = layer_with(12, |q| {
            let n = q + 1;
            let mut r = vec![0.5 / n as f32; n];
            r[q.saturating_sub(1)] += 0.5;
            r
        });
        let s = head_stats(&l, 0, 0, &HealthThresholds::default());
        assert_eq!(s.health, HeadHealth::Healthy, "{s:?}");
    }

    #[test]
    fn attention_received_counts_shares() {
        // Two rows: query 0 sees itself; query 1 splits 0.25/0.75.
        let mut l = LayerAttention::causal(1, 2).unwrap();
        l.set_row(0, 0, &[1.0]).unwrap();
        l.set_row(0, 1, &[0.25, 0.75]).unwrap();
        let r = attention_received(&[l.clone(), l]);
        assert!((r[0] - 0.625).abs() < 1e-12 && (r[1] - 0.375).abs() < 1e-12);
    }

    #[test]
    fn sliding_window_rows_cover_only_their_keys() {
        let visible = vec![0..1, 0..2, 1..3, 2..4];
        let mut l = LayerAttention::new(2, 4, visible).unwrap();
        l.set_row(1, 3, &[0.5, 0.5]).unwrap();
        assert_eq!(l.row(1, 3), [0.5, 0.5]);
        assert!(l.set_row(1, 3, &[1.0, 0.0, 0.0]).is_err());
        assert!(l.set_row(2, 0, &[1.0]).is_err());
        let health = AttentionHealth::of(&[l], HealthThresholds::default());
        assert_eq!(health.heads.len(), 2);
        assert_eq!(health.most_received(1), vec![(2, 0.5)]);
        assert!(LayerAttention::new(1, 2, std::iter::once(0..3).collect()).is_err());
    }

    #[test]
    fn counts_per_layer() {
        let a = layer_with(8, |q| one_hot(q + 1, 0));
        let b = layer_with(8, |q| vec![1.0; q + 1]);
        let health = AttentionHealth::of(&[a, b], HealthThresholds::default());
        assert_eq!(health.counts(0), [0, 1, 0, 0]);
        assert_eq!(health.counts(1), [0, 0, 0, 1]);
    }
}
