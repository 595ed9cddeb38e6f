//! Text embeddings from a language model: the final hidden states (after the output norm, the
//! vectors the output head multiplies, as llama.cpp's `--embeddings` takes them) of a token
//! sequence, pooled into one vector and optionally scaled to unit length.

use crate::backend::{Backend, Batch};
use crate::error::{Result, TransformerError};
use crate::models::Model;

/// How the per-position hidden states become one vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// The mean over every position.
    Mean,
    /// The last position's (it has seen the whole text).
    Last,
    /// The first position's (the `[CLS]` convention of encoder models).
    Cls,
}

impl Pooling {
    /// The pooling a GGUF file's `{arch}.pooling_type` names (llama.cpp's numbering:
    /// 1 mean, 2 cls, 3 last), if it names one of these.
    pub fn from_gguf(value: u32) -> Option<Pooling> {
        match value {
            1 => Some(Pooling::Mean),
            2 => Some(Pooling::Cls),
            3 => Some(Pooling::Last),
            _ => None,
        }
    }
}

/// Tokens run per forward pass.
const CHUNK: usize = 512;

/// The pooled final hidden state of `tokens` (`d_model` values), scaled to unit Euclidean
/// length when `normalize`. The text runs in chunks of up to 512 tokens through a cache of its
/// own length, so it must fit the model's context window.
pub fn embed<'w, B: Backend<'w>>(
    model: &Model<'w, B>,
    tokens: &[u32],
    pooling: Pooling,
    normalize: bool,
) -> Result<Vec<f32>> {
    let n = tokens.len();
    if n == 0 {
        return Err(TransformerError::InvalidBatch {
            reason: "there is no token to embed".into(),
        });
    }
    let d = model.config().d_model;
    let mut kv = model.kv_cache(n, 1)?;
    let chunk = n.min(CHUNK);
    let mut state = model.state(chunk, chunk)?;
    let positions: Vec<u32> = (0..n as u32).collect();
    let seqs = vec![0; chunk];
    let all: Vec<usize> = (0..chunk).collect();
    let mut sum = vec![0.0f64; d];
    let mut out = vec![0.0f32; d];
    for start in (0..n).step_by(chunk) {
        let end = (start + chunk).min(n);
        let len = end - start;
        // The rows whose hidden states pooling needs from this chunk.
        let wanted: &[usize] = match pooling {
            Pooling::Mean => &all[..len],
            Pooling::Cls if start == 0 => &all[..1],
            Pooling::Last if end == n => &all[len - 1..len],
            // Other chunks only fill the cache; one row is read and ignored.
            _ => &all[len - 1..len],
        };
        let batch = Batch {
            tokens: &tokens[start..end],
            positions: &positions[start..end],
            seqs: &seqs[..len],
            outputs: wanted,
        };
        model.forward_hidden(&mut state, &mut kv, &batch)?;
        let hidden = state.hidden();
        match pooling {
            Pooling::Mean => {
                for row in hidden.chunks_exact(d) {
                    for (s, &h) in sum.iter_mut().zip(row) {
                        *s += f64::from(h);
                    }
                }
            }
            Pooling::Cls if start == 0 => out.copy_from_slice(&hidden[..d]),
            Pooling::Last if end == n => out.copy_from_slice(&hidden[..d]),
            _ => {}
        }
    }
    if pooling == Pooling::Mean {
        for (o, s) in out.iter_mut().zip(&sum) {
            *o = (s / n as f64) as f32;
        }
    }
    if normalize {
        let norm = out
            .iter()
            .map(|&v| f64::from(v) * f64::from(v))
            .sum::<f64>()
            .sqrt();
        if norm > 0.0 {
            for v in &mut out {
                *v = (f64::from(*v) / norm) as f32;
            }
        }
    }
    Ok(out)
}
