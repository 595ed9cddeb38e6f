//! Times prefill and decode of a model file: `decode_timing MODEL.gguf [threads]`.
use std::time::Instant;

use ferrolm_gguf::GgufFile;
use ferrolm_transformer::{Batch, CpuBackend, CpuOptions, Model};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let file = GgufFile::open(&args[1])?;
    let threads = args.get(2).map_or(Ok(2), |s| s.parse())?;
    let gguf = file.gguf()?;
    let model = Model::load(
        &gguf,
        CpuBackend::new(CpuOptions {
            threads,
            ..CpuOptions::default()
        })?,
    )?;
    let mut kv = model.kv_cache(1024, 1)?;
    let mut state = model.state(512, 1)?;
    let n: usize = args.get(3).map_or(Ok(512), |s| s.parse())?;
    let steps: usize = args.get(4).map_or(Ok(64), |s| s.parse())?;
    let tokens: Vec<u32> = (0..n as u32).map(|i| (i * 7919) % 1000 + 100).collect();
    let positions: Vec<u32> = (0..n as u32).collect();
    let seqs = vec![0; n];
    let t = Instant::now();
    model.forward(
        &mut state,
        &mut kv,
        &Batch {
            tokens: &tokens,
            positions: &positions,
            seqs: &seqs,
            outputs: &[n - 1],
        },
    )?;
    let pp = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for i in 0..steps {
        let p = [(n + i) as u32];
        model.forward(
            &mut state,
            &mut kv,
            &Batch {
                tokens: &[tokens[i % n]],
                positions: &p,
                seqs: &[0],
                outputs: &[0],
            },
        )?;
    }
    let tg = t.elapsed().as_secs_f64();
    println!(
        "pp{n}: {:.1} tok/s   tg{steps}: {:.1} tok/s",
        n as f64 / pp,
        steps as f64 / tg
    );
    Ok(())
}
