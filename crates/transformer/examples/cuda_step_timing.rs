//! Where a decode step's time goes on the GPU: `cuda_step_timing MODEL.gguf [steps]`.
//!
//! Runs a short prompt, then `steps` greedy single-token steps (each reads the logits back and
//! picks the next token on the host, as generation does), and compares the wall time of a step
//! with the GPU time of one replay of its graph. The difference is the host's share: running
//! the forward code to match each launch against the graph, uploading the position and token,
//! and copying the logits back. The same steps then run reading back only the chosen token id
//! ([`Model::forward_argmax`], greedy generation's path).
use std::time::Instant;

use ferrolm_gguf::GgufFile;
use ferrolm_transformer::{Batch, CudaBackend, Model};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let Some(path) = args.get(1) else {
        return Err("usage: cuda_step_timing MODEL.gguf [steps]".into());
    };
    let steps: usize = args.get(2).map_or(Ok(128), |s| s.parse())?;
    let file = GgufFile::open(path)?;
    let gguf = file.gguf()?;
    let model = Model::load(&gguf, CudaBackend::new(0)?)?;
    let n_prompt = 16;
    let mut kv = model.kv_cache(n_prompt + 2 * steps + 8, 1)?;
    let mut state = model.state(n_prompt, 1)?;
    let prompt: Vec<u32> = (0..n_prompt as u32)
        .map(|i| (i * 7919 + 11) % 1000)
        .collect();
    let positions: Vec<u32> = (0..n_prompt as u32).collect();
    let seqs = vec![0; n_prompt];
    model.forward(
        &mut state,
        &mut kv,
        &Batch {
            tokens: &prompt,
            positions: &positions,
            seqs: &seqs,
            outputs: &[n_prompt - 1],
        },
    )?;
    let argmax = |l: &[f32]| {
        l.iter()
            .enumerate()
            .fold(
                (0, f32::NEG_INFINITY),
                |m, (i, &v)| if v > m.1 { (i, v) } else { m },
            )
            .0 as u32
    };
    let mut token = argmax(state.logits());
    let mut per_step = Vec::with_capacity(steps);
    for i in 0..steps {
        let t = Instant::now();
        model.forward(
            &mut state,
            &mut kv,
            &Batch {
                tokens: &[token],
                positions: &[(n_prompt + i) as u32],
                seqs: &[0],
                outputs: &[0],
            },
        )?;
        token = argmax(state.logits());
        per_step.push(t.elapsed().as_secs_f64() * 1e6);
    }
    // The first steps record and capture the graph.
    let median = |v: &[f64]| {
        let mut steady: Vec<f64> = v.iter().skip(4).copied().collect();
        steady.sort_by(f64::total_cmp);
        (
            steady.get(steady.len() / 2).copied().unwrap_or(f64::NAN),
            steady.len(),
        )
    };
    let (wall, n_steady) = median(&per_step);
    // The same steps with only the chosen token id read back (greedy generation's path).
    let mut per_step_ids = Vec::with_capacity(steps);
    for i in 0..steps {
        let t = Instant::now();
        model.forward_argmax(
            &mut state,
            &mut kv,
            &Batch {
                tokens: &[token],
                positions: &[(n_prompt + steps + i) as u32],
                seqs: &[0],
                outputs: &[0],
            },
        )?;
        token = state.argmax()[0];
        per_step_ids.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let (wall_ids, _) = median(&per_step_ids);
    let backend = model.backend();
    let graph = backend.time_step_graph(50)?;
    let kernels = backend.graph_kernels().unwrap_or(0);
    println!("model: {path}");
    println!(
        "step wall time (median of {n_steady}): {wall:.1} us reading the logits back, {wall_ids:.1} us reading only the token id"
    );
    match graph {
        Some(g) => println!(
            "graph replay (GPU only): {g:.1} us for {kernels} kernels ({:.2} us per kernel); host share {:.1} us ({:.0}%)",
            g / kernels.max(1) as f64,
            wall - g,
            (wall - g) / wall * 100.0
        ),
        None => println!("no step graph was built"),
    }
    Ok(())
}
