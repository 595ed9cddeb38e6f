//! `bench --parallel 1,8,32`: llama-batched-bench's protocol. For each count of parallel
//! sequences `pl`: from an empty cache, the prompts of `pl` sequences (`-p` random tokens each)
//! run as batches of at most `-b` tokens (`t_pp`), then `-n` steps each decode one token of
//! every sequence (`t_tg`). Reported as llama-batched-bench names them: `S_PP = pl·pp / t_pp`,
//! `S_TG = pl·tg / t_tg`, `S = pl·(pp + tg) / (t_pp + t_tg)`.

use std::fmt::Write as _;
use std::time::Instant;

use anyhow::{Result, bail};
use ferrolm_transformer::{Backend, Batch, Model};
use serde_json::{Value, json};

use super::TokenStream;

/// One row of the table.
#[derive(Debug, Clone)]
pub struct Row {
    /// Prompt tokens per sequence.
    pub pp: usize,
    /// Generated tokens per sequence.
    pub tg: usize,
    /// Parallel sequences.
    pub pl: usize,
    /// Prompt time, s.
    pub t_pp: f64,
    /// Generation time, s.
    pub t_tg: f64,
}

impl Row {
    fn speed_pp(&self) -> f64 {
        (self.pl * self.pp) as f64 / self.t_pp.max(1e-12)
    }
    fn speed_tg(&self) -> f64 {
        (self.pl * self.tg) as f64 / self.t_tg.max(1e-12)
    }
    fn t(&self) -> f64 {
        self.t_pp + self.t_tg
    }
    fn speed(&self) -> f64 {
        (self.pl * (self.pp + self.tg)) as f64 / self.t().max(1e-12)
    }

    /// The row with llama-batched-bench's JSONL keys.
    pub fn to_json(&self) -> Value {
        let r = |x: f64| (x * 1000.0).round() / 1000.0;
        json!({
            "pp": self.pp, "tg": self.tg, "pl": self.pl, "n_kv": self.pl * (self.pp + self.tg),
            "t_pp": r(self.t_pp), "speed_pp": r(self.speed_pp()),
            "t_tg": r(self.t_tg), "speed_tg": r(self.speed_tg()),
            "t": r(self.t()), "speed": r(self.speed()),
        })
    }
}

/// Runs the test for each count in `pls`.
pub fn measure<'w, B: Backend<'w>>(
    model: &Model<'w, B>,
    pp: usize,
    tg: usize,
    pls: &[usize],
    batch_size: usize,
) -> Result<Vec<Row>> {
    if pp == 0 {
        bail!("--parallel needs prompt tokens (-p at least 1)");
    }
    let vocab = model.config().vocab;
    let mut tokens = TokenStream(0x2545_F491_4F6C_DD1D);
    let mut rows = Vec::with_capacity(pls.len());
    // One small untimed run first: first touches and thread start-up stay out of the figures.
    let warm = pls.iter().copied().min().unwrap_or(1);
    run(
        model,
        &mut tokens,
        vocab,
        pp.min(16),
        tg.min(2),
        warm,
        batch_size,
    )?;
    for &pl in pls {
        rows.push(run(model, &mut tokens, vocab, pp, tg, pl, batch_size)?);
    }
    Ok(rows)
}

fn run<'w, B: Backend<'w>>(
    model: &Model<'w, B>,
    tokens: &mut TokenStream,
    vocab: usize,
    pp: usize,
    tg: usize,
    pl: usize,
    batch_size: usize,
) -> Result<Row> {
    let n_ctx = pp + tg;
    let mut kv = model.kv_cache(n_ctx, pl)?;
    let max_batch = batch_size.max(pl);
    let mut state = model.state(max_batch, pl)?;
    // Every sequence's prompt, one after another; a batch takes up to `max_batch` tokens and
    // reads the logits of the sequences whose prompt ends in it.
    let all: Vec<(u32, u32, u32)> = (0..pl as u32)
        .flat_map(|s| (0..pp as u32).map(move |p| (s, p)))
        .map(|(s, p)| (tokens.next(vocab), p, s))
        .collect();
    let t = Instant::now();
    for chunk in all.chunks(max_batch) {
        let ids: Vec<u32> = chunk.iter().map(|c| c.0).collect();
        let positions: Vec<u32> = chunk.iter().map(|c| c.1).collect();
        let seqs: Vec<u32> = chunk.iter().map(|c| c.2).collect();
        let mut outputs: Vec<usize> = (0..chunk.len())
            .filter(|&i| positions[i] as usize == pp - 1)
            .collect();
        if outputs.is_empty() {
            outputs.push(chunk.len() - 1);
        }
        let batch = Batch {
            tokens: &ids,
            positions: &positions,
            seqs: &seqs,
            outputs: &outputs,
        };
        model.forward(&mut state, &mut kv, &batch)?;
    }
    std::hint::black_box(state.logits().first());
    let t_pp = t.elapsed().as_secs_f64();
    let seqs: Vec<u32> = (0..pl as u32).collect();
    let outputs: Vec<usize> = (0..pl).collect();
    let mut ids = vec![0u32; pl];
    let t = Instant::now();
    for step in 0..tg {
        for id in &mut ids {
            *id = tokens.next(vocab);
        }
        let positions = vec![(pp + step) as u32; pl];
        let batch = Batch {
            tokens: &ids,
            positions: &positions,
            seqs: &seqs,
            outputs: &outputs,
        };
        model.forward(&mut state, &mut kv, &batch)?;
    }
    std::hint::black_box(state.logits().first());
    let t_tg = t.elapsed().as_secs_f64();
    Ok(Row {
        pp,
        tg,
        pl,
        t_pp,
        t_tg,
    })
}

/// The rows as llama-batched-bench's table.
pub fn write_table(rows: &[Row], out: &mut String) {
    out.push_str("|    PP |     TG |    B |   N_KV |   T_PP s | S_PP t/s |   T_TG s | S_TG t/s |      T s |    S t/s |\n");
    out.push_str("|-------|--------|------|--------|----------|----------|----------|----------|----------|----------|\n");
    for r in rows {
        let _ = writeln!(
            out,
            "| {:5} | {:6} | {:4} | {:6} | {:8.3} | {:8.2} | {:8.3} | {:8.2} | {:8.3} | {:8.2} |",
            r.pp,
            r.tg,
            r.pl,
            r.pl * (r.pp + r.tg),
            r.t_pp,
            r.speed_pp(),
            r.t_tg,
            r.speed_tg(),
            r.t(),
            r.speed()
        );
    }
}
