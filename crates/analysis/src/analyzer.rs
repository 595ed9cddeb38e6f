//! One handle for the per-prompt diagnostics: an [`Analyzer`] runs a prompt through a model
//! once and reports the features its [`AnalysisOptions`] switch on. Every feature is an
//! `Option`: one that is `None` does no work and its part of the [`Analysis`] is absent.
//!
//! - token metrics: for each position, the distribution over the next token and the token
//!   that came (see [`crate::token_metrics`]);
//! - attention: per-head entropy and health, and attention received per token (see
//!   [`crate::attention`]), when the backend can record attention weights
//!   ([`AttentionSource`]);
//! - transfer entropy between per-position signals of the prompt (see below).
//!
//! Transfer entropy runs on series indexed by position `t` (time is the position in the
//! prompt), each cut into equal-frequency bins: `surprisal[t]` of the token at `t + 1`,
//! `entropy[t]` of the distribution at `t`, and, with attention, `attention[t]`, the mean
//! normalized attention entropy of query `t` over every layer and head. `TE(A→B)` then
//! says how much `A`'s recent values predict `B`'s next one beyond `B`'s own history;
//! each figure comes with a shuffled-source baseline (the bias of the plug-in estimator
//! on this many samples), and the excess over it is the evidence of flow.
//!
//! Token influence ranks the prompt's tokens by the transfer entropy from the attention
//! later positions pay to each of them to the surprisal of the tokens that follow (see
//! [`crate::influence`]); it needs attention weights, as attention health does.

use std::fmt::Write as _;

use ferrolm_transformer::{AttentionRow, Backend, Batch, CpuBackend, Model};
use serde::Serialize;

use crate::attention::{AttentionHealth, HealthThresholds, LayerAttention, entropy};
use crate::error::{AnalysisError, Result};
use crate::influence::{InfluenceOptions, TokenInfluence, token_influence};
use crate::token_metrics::{TokenMetrics, token_metrics};
use crate::transfer_entropy::{discretize, shuffled_baseline, transfer_entropy};

/// A backend that may record the attention weights of the forward passes it runs.
pub trait AttentionSource {
    /// Starts recording attention weights; returns whether this backend can.
    fn start_attention_capture(&self) -> bool {
        false
    }

    /// Stops recording and returns, for sequence 0, one [`LayerAttention`] per layer over
    /// the `n_pos` positions run since recording started (`None` when nothing was recorded).
    fn finish_attention_capture(
        &self,
        n_layer: usize,
        n_pos: usize,
    ) -> Result<Option<Vec<LayerAttention>>> {
        let _ = (n_layer, n_pos);
        Ok(None)
    }
}

/// The CPU backend records attention weights on request
/// ([`CpuBackend::record_attention`]).
impl AttentionSource for CpuBackend {
    fn start_attention_capture(&self) -> bool {
        self.record_attention(true);
        drop(self.take_attention());
        true
    }

    fn finish_attention_capture(
        &self,
        n_layer: usize,
        n_pos: usize,
    ) -> Result<Option<Vec<LayerAttention>>> {
        self.record_attention(false);
        layers_from_rows(&self.take_attention(), n_layer, n_pos).map(Some)
    }
}

/// Arranges recorded attention rows of sequence 0 into one [`LayerAttention`] per layer
/// over positions `0..n_pos`. Every layer, head and position must be present.
pub fn layers_from_rows(
    rows: &[AttentionRow],
    n_layer: usize,
    n_pos: usize,
) -> Result<Vec<LayerAttention>> {
    let rows: Vec<&AttentionRow> = rows.iter().filter(|r| r.seq == 0).collect();
    let n_head = rows.iter().map(|r| r.head + 1).max().unwrap_or(0);
    let bad = |reason: String| AnalysisError::InvalidInput {
        what: "recorded attention",
        reason,
    };
    if rows.len() != n_layer * n_head * n_pos || n_head == 0 {
        return Err(bad(format!(
            "{} rows for {n_layer} layers, {n_head} heads and {n_pos} positions",
            rows.len()
        )));
    }
    let mut visible = vec![vec![0..0; n_pos]; n_layer];
    for r in &rows {
        if r.layer >= n_layer || r.position >= n_pos || r.first_key > r.position {
            return Err(bad(format!(
                "row of layer {} at position {} (keys from {})",
                r.layer, r.position, r.first_key
            )));
        }
        visible[r.layer][r.position] = r.first_key..r.position + 1;
    }
    let mut layers = visible
        .into_iter()
        .map(|v| LayerAttention::new(n_head, n_pos, v))
        .collect::<Result<Vec<_>>>()?;
    for r in rows {
        layers[r.layer].set_row(r.head, r.position, &r.weights)?;
    }
    Ok(layers)
}

/// Options of the token metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct MetricsOptions {
    /// The `k` of the top-k mass.
    pub top_k: usize,
}

impl Default for MetricsOptions {
    fn default() -> Self {
        Self { top_k: 10 }
    }
}

/// Options of the transfer-entropy summary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct TransferEntropyOptions {
    /// History length `k`.
    pub history: usize,
    /// Equal-frequency bins per signal.
    pub bins: u32,
    /// Shuffles of the source for the baseline.
    pub shuffles: usize,
    /// Seed of the shuffles.
    pub seed: u64,
}

impl Default for TransferEntropyOptions {
    fn default() -> Self {
        Self {
            history: 1,
            bins: 2,
            shuffles: 100,
            seed: 0x5eed,
        }
    }
}

/// Which diagnostics to compute; `None` switches one off.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AnalysisOptions {
    /// Per-token surprisal, entropy, varentropy and top-k mass.
    pub metrics: Option<MetricsOptions>,
    /// Attention health per head and attention received per token.
    pub attention: Option<HealthThresholds>,
    /// Transfer entropy between per-position signals (needs `metrics`).
    pub transfer_entropy: Option<TransferEntropyOptions>,
    /// The prompt tokens with the most influence on the ones after them.
    pub influence: Option<InfluenceOptions>,
}

impl AnalysisOptions {
    /// Everything on, with default settings.
    pub fn all() -> Self {
        Self {
            metrics: Some(MetricsOptions::default()),
            attention: Some(HealthThresholds::default()),
            transfer_entropy: Some(TransferEntropyOptions::default()),
            influence: Some(InfluenceOptions::default()),
        }
    }

    /// Everything off.
    pub fn none() -> Self {
        Self {
            metrics: None,
            attention: None,
            transfer_entropy: None,
            influence: None,
        }
    }
}

/// Transfer entropy from one signal to another.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SignalFlow {
    /// The source signal.
    pub source: &'static str,
    /// The target signal.
    pub target: &'static str,
    /// `TE(source→target)`, bits.
    pub te_bits: f64,
    /// Mean TE with the source shuffled, bits.
    pub baseline_bits: f64,
    /// Largest TE with the source shuffled, bits.
    pub baseline_max_bits: f64,
    /// `te_bits − baseline_bits`.
    pub excess_bits: f64,
    /// Samples in each series.
    pub samples: usize,
}

/// What an [`Analyzer`] found in a prompt.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Analysis {
    /// The prompt's token ids.
    pub tokens: Vec<u32>,
    /// Text of each token, when a decoder was given.
    pub pieces: Vec<String>,
    /// Metrics of the token at each position `t + 1` given the prefix up to `t`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Vec<TokenMetrics>>,
    /// Entropy of the distribution after the last token, nats.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_entropy: Option<f64>,
    /// Head health and attention received.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attention: Option<AttentionHealth>,
    /// Why attention (or token influence, which needs it) is absent although it was asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attention_unavailable: Option<String>,
    /// Transfer entropy between per-position signals.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transfer_entropy: Option<Vec<SignalFlow>>,
    /// The most influential prompt tokens, most influential first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub influence: Option<Vec<TokenInfluence>>,
}

/// Runs prompts through a model and computes the diagnostics its options ask for.
#[derive(Clone, Copy, Debug)]
pub struct Analyzer {
    options: AnalysisOptions,
}

impl Analyzer {
    /// An analyzer computing what `options` switch on.
    pub fn new(options: AnalysisOptions) -> Self {
        Self { options }
    }

    /// The options.
    pub fn options(&self) -> &AnalysisOptions {
        &self.options
    }

    /// Runs `tokens` through `model` as one batch from an empty cache and analyses them.
    /// `piece` gives each token's text for the report.
    pub fn analyze<'w, B>(
        &self,
        model: &Model<'w, B>,
        tokens: &[u32],
        piece: impl Fn(u32) -> String,
    ) -> Result<Analysis>
    where
        B: Backend<'w> + AttentionSource,
    {
        let n = tokens.len();
        if n == 0 {
            return Err(AnalysisError::InvalidInput {
                what: "analysis",
                reason: "the prompt has no tokens".into(),
            });
        }
        let o = &self.options;
        let want_logits =
            o.metrics.is_some() || o.transfer_entropy.is_some() || o.influence.is_some();
        let want_attention = o.attention.is_some() || o.influence.is_some();
        let capturing = want_attention && model.backend().start_attention_capture();
        let outputs: Vec<usize> = if want_logits {
            (0..n).collect()
        } else {
            vec![n - 1]
        };
        let mut kv = model.kv_cache(n, 1)?;
        let mut state = model.state(n, outputs.len())?;
        let positions: Vec<u32> = (0..n as u32).collect();
        let seqs = vec![0; n];
        let batch = Batch {
            tokens,
            positions: &positions,
            seqs: &seqs,
            outputs: &outputs,
        };
        let ran = model.forward(&mut state, &mut kv, &batch);
        let layers = if capturing {
            model
                .backend()
                .finish_attention_capture(model.config().n_layer, n)?
        } else {
            None
        };
        ran?;

        let vocab = model.config().vocab;
        let rows: Vec<&[f32]> = state.logits().chunks_exact(vocab).collect();
        let top_k = o
            .metrics
            .map_or(MetricsOptions::default().top_k, |m| m.top_k);
        let (metrics, next_entropy) = if want_logits {
            let m = (0..n - 1)
                .map(|t| token_metrics(rows[t], tokens[t + 1], top_k))
                .collect::<Result<Vec<_>>>()?;
            let last = token_metrics(rows[n - 1], 0, 1)?.entropy;
            (Some(m), Some(last))
        } else {
            (None, None)
        };
        let attention = match (&o.attention, &layers) {
            (Some(t), Some(layers)) => Some(AttentionHealth::of(layers, *t)),
            _ => None,
        };
        let attention_unavailable = (want_attention && layers.is_none()).then(|| {
            format!(
                "the {} backend does not record attention weights",
                model.backend().name()
            )
        });
        let transfer_entropy = match (o.transfer_entropy, &metrics) {
            (Some(te), Some(m)) => Some(signal_flows(m, layers.as_deref(), &te)?),
            _ => None,
        };
        let influence = match (&o.influence, &metrics, &layers) {
            (Some(opts), Some(m), Some(layers)) => Some(token_influence(tokens, m, layers, opts)?),
            _ => None,
        };
        Ok(Analysis {
            tokens: tokens.to_vec(),
            pieces: tokens.iter().map(|&t| piece(t)).collect(),
            metrics: metrics.filter(|_| o.metrics.is_some()),
            next_entropy: next_entropy.filter(|_| o.metrics.is_some()),
            attention,
            attention_unavailable,
            transfer_entropy,
            influence,
        })
    }
}

/// Mean normalized attention entropy of each query position over every layer and head.
pub fn attention_entropy_signal(layers: &[LayerAttention]) -> Vec<f64> {
    let n = layers
        .iter()
        .map(LayerAttention::n_query)
        .min()
        .unwrap_or(0);
    (0..n)
        .map(|q| {
            let (mut sum, mut count) = (0.0, 0usize);
            for layer in layers {
                let keys = layer.visible(q).len();
                if keys < 2 {
                    continue;
                }
                for h in 0..layer.n_head() {
                    sum += entropy(layer.row(h, q)) / (keys as f64).ln();
                    count += 1;
                }
            }
            if count == 0 { 0.0 } else { sum / count as f64 }
        })
        .collect()
}

/// Transfer entropy between every ordered pair of the per-position signals.
pub fn signal_flows(
    metrics: &[TokenMetrics],
    layers: Option<&[LayerAttention]>,
    o: &TransferEntropyOptions,
) -> Result<Vec<SignalFlow>> {
    let mut signals: Vec<(&'static str, Vec<f64>)> = vec![
        ("surprisal", metrics.iter().map(|m| m.surprisal).collect()),
        ("entropy", metrics.iter().map(|m| m.entropy).collect()),
    ];
    if let Some(layers) = layers {
        let mut a = attention_entropy_signal(layers);
        a.truncate(metrics.len());
        signals.push(("attention", a));
    }
    let n = metrics.len();
    let mut flows = Vec::new();
    if n <= o.history + 1 {
        return Ok(flows);
    }
    let symbols: Vec<Vec<u32>> = signals.iter().map(|(_, s)| discretize(s, o.bins)).collect();
    for (i, (source, _)) in signals.iter().enumerate() {
        for (j, (target, _)) in signals.iter().enumerate() {
            if i == j || symbols[i].len() != symbols[j].len() {
                continue;
            }
            let te = transfer_entropy(&symbols[i], &symbols[j], o.history)?;
            let (base, base_max) =
                shuffled_baseline(&symbols[i], &symbols[j], o.history, o.shuffles, o.seed)?;
            flows.push(SignalFlow {
                source,
                target,
                te_bits: te,
                baseline_bits: base,
                baseline_max_bits: base_max,
                excess_bits: te - base,
                samples: n,
            });
        }
    }
    Ok(flows)
}

impl Analysis {
    /// A readable report: per-token metrics, attention health per layer, the tokens that
    /// receive most attention, and the transfer-entropy summary.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let piece = |i: usize| self.pieces.get(i).cloned().unwrap_or_default();
        let _ = writeln!(s, "{} prompt tokens", self.tokens.len());
        if let Some(metrics) = &self.metrics {
            let _ = writeln!(
                s,
                "\nPer-token metrics (nats; each token given the ones before it)"
            );
            let k = metrics.first().map_or(0, |m| m.top_k);
            let _ = writeln!(
                s,
                "{:>4}  {:<20} {:>9} {:>8} {:>10} {:>7} {:>6}",
                "pos",
                "token",
                "surprisal",
                "entropy",
                "varentropy",
                format!("top{k}"),
                "rank"
            );
            for (t, m) in metrics.iter().enumerate() {
                let _ = writeln!(
                    s,
                    "{:>4}  {:<20} {:>9.3} {:>8.3} {:>10.3} {:>7.3} {:>6}",
                    t + 1,
                    format!("{:?}", piece(t + 1)),
                    m.surprisal,
                    m.entropy,
                    m.varentropy,
                    m.top_k_mass,
                    m.rank
                );
            }
            if !metrics.is_empty() {
                let mean = |f: fn(&TokenMetrics) -> f64| {
                    metrics.iter().map(f).sum::<f64>() / metrics.len() as f64
                };
                let _ = writeln!(
                    s,
                    "mean surprisal {:.3}, mean entropy {:.3} (perplexity of the prompt {:.2})",
                    mean(|m| m.surprisal),
                    mean(|m| m.entropy),
                    mean(|m| m.surprisal).exp()
                );
            }
            if let Some(h) = self.next_entropy {
                let _ = writeln!(s, "entropy of the next token after the prompt: {h:.3}");
            }
        }
        if let Some(a) = &self.attention {
            let _ = writeln!(
                s,
                "\nAttention health per layer (healthy / collapsed / too focused / too diffuse)"
            );
            let n_layer = a.heads.iter().map(|h| h.layer + 1).max().unwrap_or(0);
            for l in 0..n_layer {
                let c = a.counts(l);
                let heads: Vec<_> = a.heads.iter().filter(|h| h.layer == l).collect();
                let mean_h = heads.iter().map(|h| h.mean_normalized_entropy).sum::<f64>()
                    / heads.len().max(1) as f64;
                let _ = writeln!(
                    s,
                    "layer {l:>2}: {:>2} / {:>2} / {:>2} / {:>2}   mean normalized entropy {mean_h:.3}",
                    c[0], c[1], c[2], c[3]
                );
            }
            let t = &a.thresholds;
            let _ = writeln!(
                s,
                "(collapsed: ≥{:.0}% of rows put ≥{:.2} on one key; too focused: normalized entropy < {}; too diffuse: > {})",
                100.0 * t.collapse_share,
                t.collapse_weight,
                t.focused_entropy,
                t.diffuse_entropy
            );
            let _ = writeln!(s, "\nMost attended tokens (share of all attention)");
            for (pos, share) in a.most_received(8) {
                let _ = writeln!(
                    s,
                    "{pos:>4}  {:<20} {:>6.2}%",
                    format!("{:?}", piece(pos)),
                    100.0 * share
                );
            }
        } else if let Some(why) = &self.attention_unavailable {
            let _ = writeln!(s, "\nAttention: {why}");
        }
        if let Some(flows) = &self.transfer_entropy {
            let _ = writeln!(s, "\nTransfer entropy between per-position signals (bits)");
            for f in flows {
                let _ = writeln!(
                    s,
                    "{:>9} → {:<9} TE {:.3}  shuffled {:.3} (max {:.3})  excess {:+.3}",
                    f.source,
                    f.target,
                    f.te_bits,
                    f.baseline_bits,
                    f.baseline_max_bits,
                    f.excess_bits
                );
            }
            if flows.is_empty() {
                let _ = writeln!(s, "(the prompt is too short)");
            }
        }
        if let Some(ranked) = &self.influence {
            let _ = writeln!(
                s,
                "\nMost influential tokens (bits; TE from the attention paid to the token to the \
                 surprisal of the next tokens, ranked by the margin over the largest shuffled TE)"
            );
            for r in ranked {
                let _ = writeln!(
                    s,
                    "{:>4}  {:<20} TE {:.3}  shuffled {:.3} (max {:.3})  margin {:+.3}  ({} samples)",
                    r.position,
                    format!("{:?}", piece(r.position)),
                    r.te_bits,
                    r.baseline_bits,
                    r.baseline_max_bits,
                    r.margin_bits,
                    r.samples
                );
            }
            if ranked.is_empty() {
                let _ = writeln!(s, "(the prompt is too short)");
            }
        }
        s
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn metric(surprisal: f64, entropy: f64) -> TokenMetrics {
        TokenMetrics {
            token: 0,
            surprisal,
            entropy,
            varentropy: 0.0,
            top_k_mass: 1.0,
            top_k: 1,
            rank: 0,
        }
    }

    #[test]
    fn flows_find_a_lagged_copy_between_signals() {
        // Entropy at t+1 copies the surprisal's high/low state at t.
        let mut x = 0x2545f491u32;
        let surprisal: Vec<f64> = (0..400)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                f64::from(x % 1000)
            })
            .collect();
        let mut m: Vec<TokenMetrics> = surprisal.iter().map(|&s| metric(s, 0.0)).collect();
        for t in 1..m.len() {
            m[t].entropy = surprisal[t - 1];
        }
        m[0].entropy = 500.0;
        let flows = signal_flows(&m, None, &TransferEntropyOptions::default()).unwrap();
        assert_eq!(flows.len(), 2);
        let fwd = flows.iter().find(|f| f.source == "surprisal").unwrap();
        let back = flows.iter().find(|f| f.source == "entropy").unwrap();
        assert!(fwd.te_bits > 0.9 && fwd.excess_bits > 0.85, "{fwd:?}");
        assert!(back.te_bits < 0.05, "{back:?}");
    }

    #[test]
    fn attention_signal_averages_normalized_entropy() {
        let mut l = LayerAttention::causal(2, 3).unwrap();
        l.set_row(0, 0, &[1.0]).unwrap();
        l.set_row(1, 0, &[1.0]).unwrap();
        l.set_row(0, 1, &[0.5, 0.5]).unwrap();
        l.set_row(1, 1, &[1.0, 0.0]).unwrap();
        l.set_row(0, 2, &[1.0, 1.0, 1.0]).unwrap();
        l.set_row(1, 2, &[1.0, 1.0, 1.0]).unwrap();
        let a = attention_entropy_signal(&[l]);
        assert_eq!(a[0], 0.0);
        assert!((a[1] - 0.5).abs() < 1e-12 && (a[2] - 1.0).abs() < 1e-12);
    }

    #[test]
    fn recorded_rows_become_layers() {
        let row = |layer, head, position, first_key, weights: &[f32]| AttentionRow {
            layer,
            seq: 0,
            position,
            head,
            first_key,
            weights: weights.to_vec(),
        };
        let rows = vec![
            row(0, 0, 1, 0, &[0.25, 0.75]),
            row(0, 0, 0, 0, &[1.0]),
            row(0, 1, 0, 0, &[1.0]),
            row(0, 1, 1, 0, &[0.0, 1.0]),
            AttentionRow {
                seq: 1,
                ..row(0, 0, 0, 0, &[1.0])
            },
        ];
        let layers = layers_from_rows(&rows, 1, 2).unwrap();
        assert_eq!(layers[0].n_head(), 2);
        assert_eq!(layers[0].row(0, 1), [0.25, 0.75]);
        assert_eq!(layers[0].visible(1), 0..2);
        assert!(layers_from_rows(&rows[..3], 1, 2).is_err());
        assert!(layers_from_rows(&rows, 2, 2).is_err());
    }

    #[test]
    fn text_report_shows_each_part() {
        let a = Analysis {
            tokens: vec![1, 2, 3],
            pieces: vec!["<s>".into(), "Hi".into(), "\n".into()],
            metrics: Some(vec![metric(1.0, 2.0), metric(3.0, 2.0)]),
            next_entropy: Some(0.5),
            attention: None,
            attention_unavailable: Some("no weights".into()),
            transfer_entropy: Some(vec![]),
            influence: Some(vec![TokenInfluence {
                position: 1,
                token: 2,
                te_bits: 0.5,
                baseline_bits: 0.125,
                baseline_max_bits: 0.25,
                excess_bits: 0.375,
                margin_bits: 0.25,
                samples: 9,
            }]),
        };
        let t = a.to_text();
        assert!(t.contains("\"Hi\"") && t.contains("\"\\n\""), "{t}");
        assert!(t.contains("mean surprisal 2.000"));
        assert!(t.contains("Attention: no weights"));
        assert!(t.contains("too short"));
        assert!(
            t.contains("   1  \"Hi\"                 TE 0.500  shuffled 0.125 (max 0.250)  margin +0.250  (9 samples)"),
            "{t}"
        );
        let j = serde_json::to_value(&a).unwrap();
        assert_eq!(j["metrics"][1]["surprisal"], 3.0);
        assert!(j.get("attention").is_none());
        assert_eq!(j["influence"][0]["position"], 1);
    }
}
