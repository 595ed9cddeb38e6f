//! Acceptance and speed of speculative decoding against plain decoding.
//!
//! `cargo run --release -p ferrolm-analysis --example speculative -- TARGET.gguf [DRAFT.gguf] [PROMPT]`

use std::ops::ControlFlow;
use std::time::Instant;

use ferrolm_analysis::speculative::Drafter;
use ferrolm_analysis::{ModelDrafter, NGramDrafter, SpeculativeDecoder, SpeculativeOptions};
use ferrolm_gguf::GgufFile;
use ferrolm_sampling::{Preset, SamplingConfig};
use ferrolm_tokenizer::{EncodeOptions, Tokenizer};
use ferrolm_transformer::{CpuBackend, CpuOptions, GenerateOptions, Model, Session};

type Error = Box<dyn std::error::Error>;

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let target_path = args
        .first()
        .ok_or("usage: speculative TARGET.gguf [DRAFT.gguf] [PROMPT]")?;
    let prompt_text = args.get(2).map_or(
        "Here is a Python function that checks whether a number is prime, followed by a test:\n\n",
        String::as_str,
    );
    let file = GgufFile::open(target_path)?;
    let gguf = file.gguf()?;
    let tokenizer = Tokenizer::from_gguf(&gguf)?;
    let target = Model::load(&gguf, CpuBackend::new(CpuOptions::default())?)?;
    let prompt = tokenizer.encode(prompt_text, EncodeOptions::default());
    let options = GenerateOptions { max_tokens: 128 };
    let greedy = || SamplingConfig::preset(Preset::Greedy).build();

    let t = Instant::now();
    let mut session = Session::new(&target, 1024, 512)?;
    let plain = session.generate(
        &prompt,
        &mut greedy()?,
        options,
        |t| tokenizer.is_eog(t),
        |_| Ok(ControlFlow::Continue(())),
    )?;
    let plain_time = t.elapsed().as_secs_f64();
    println!("plain: {} tokens in {plain_time:.2} s", plain.ids.len());

    let draft_file = args.get(1).map(GgufFile::open).transpose()?;
    let draft_gguf = draft_file.as_ref().map(GgufFile::gguf).transpose()?;
    let draft_model = draft_gguf
        .as_ref()
        .map(|g| Model::load(g, CpuBackend::new(CpuOptions::default())?).map_err(Error::from))
        .transpose()?;
    let mut drafters: Vec<(&str, Box<dyn Drafter>)> =
        vec![("ngram", Box::new(NGramDrafter::default()))];
    if let Some(m) = &draft_model {
        drafters.push(("draft", Box::new(ModelDrafter::new(m, 1024, greedy()?)?)));
    }
    for (name, mut drafter) in drafters {
        let t = Instant::now();
        let mut dec = SpeculativeDecoder::new(&target, 1024, 512, SpeculativeOptions::default())?;
        let (g, stats) = dec.generate(
            &prompt,
            &mut greedy()?,
            drafter.as_mut(),
            options,
            |t| tokenizer.is_eog(t),
            |_| Ok(ControlFlow::Continue(())),
        )?;
        let secs = t.elapsed().as_secs_f64();
        println!(
            "{name}: {} tokens in {secs:.2} s (x{:.2}), same as plain: {}, drafted {}, accepted {} ({:.1}%), {} target passes",
            g.ids.len(),
            plain_time / secs,
            g.ids == plain.ids,
            stats.drafted,
            stats.accepted,
            100.0 * stats.acceptance_rate(),
            stats.rounds
        );
    }
    Ok(())
}
