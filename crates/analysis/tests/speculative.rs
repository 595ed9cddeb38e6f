//! Speculative decoding on real models: with a greedy chain the output is plain greedy
//! decoding's, whatever the drafter (n-grams, another model, the target's first layers).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::ops::ControlFlow;

use ferrolm_analysis::speculative::Drafter;
use ferrolm_analysis::{
    ModelDrafter, NGramDrafter, SelfDrafter, SpeculativeDecoder, SpeculativeOptions,
};
use ferrolm_sampling::{Preset, SamplingConfig};
use ferrolm_tokenizer::{DecodeOptions, Tokenizer};
use ferrolm_transformer::{CpuBackend, GenerateOptions, Model, Session};

const N_CTX: usize = 256;
const MAX_TOKENS: usize = 40;

fn greedy() -> ferrolm_sampling::SamplerChain {
    SamplingConfig::preset(Preset::Greedy).build().unwrap()
}

fn plain(model: &Model<'_, CpuBackend>, tokenizer: &Tokenizer, prompt: &[u32]) -> Vec<u32> {
    let mut session = Session::new(model, N_CTX, 512).unwrap();
    let options = GenerateOptions {
        max_tokens: MAX_TOKENS,
    };
    let g = session
        .generate(
            prompt,
            &mut greedy(),
            options,
            |t| tokenizer.is_eog(t),
            |_| Ok(ControlFlow::Continue(())),
        )
        .unwrap();
    g.ids
}

fn speculative(
    model: &Model<'_, CpuBackend>,
    tokenizer: &Tokenizer,
    prompt: &[u32],
    drafter: &mut dyn Drafter,
) -> (Vec<u32>, ferrolm_analysis::SpeculativeStats) {
    let mut dec =
        SpeculativeDecoder::new(model, N_CTX, 512, SpeculativeOptions::default()).unwrap();
    let mut streamed = vec![];
    let options = GenerateOptions {
        max_tokens: MAX_TOKENS,
    };
    let (g, stats) = dec
        .generate(
            prompt,
            &mut greedy(),
            drafter,
            options,
            |t| tokenizer.is_eog(t),
            |t| {
                streamed.push(t);
                Ok(ControlFlow::Continue(()))
            },
        )
        .unwrap();
    assert_eq!(streamed, g.ids);
    (g.ids, stats)
}

fn prompts(golden: &str) -> Vec<Vec<u32>> {
    let gold = common::golden(golden);
    gold["greedy"]
        .as_array()
        .unwrap()
        .iter()
        .take(2)
        .map(|c| {
            c["prompt_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect()
        })
        .collect()
}

#[test]
fn smollm2_greedy_speculation_is_lossless() {
    let (ft, fd) = (
        common::open_model(common::SMOLLM2),
        common::open_model(common::SMOLLM2),
    );
    let (gt, gd) = (ft.gguf().unwrap(), fd.gguf().unwrap());
    let (target, draft) = (common::cpu_model(&gt), common::cpu_model(&gd));
    let tokenizer = Tokenizer::from_gguf(&gt).unwrap();
    for prompt in prompts("smollm2.json") {
        let want = plain(&target, &tokenizer, &prompt);
        let (ngram, ns) = speculative(&target, &tokenizer, &prompt, &mut NGramDrafter::default());
        assert_eq!(ngram, want, "n-gram drafts");
        assert!(ns.rounds < want.len() + 1 && ns.accepted <= ns.drafted);
        // The model drafting for itself is right but for rare rounding differences between
        // single-token decode steps and the batched check.
        let mut same = ModelDrafter::new(&draft, N_CTX, greedy()).unwrap();
        let (own, os) = speculative(&target, &tokenizer, &prompt, &mut same);
        assert_eq!(own, want, "self drafts");
        assert!(os.drafted > 0);
        assert!(os.accepted * 10 >= os.drafted * 9, "{os:?}");
        assert!(os.rounds * 2 <= want.len(), "{os:?}");
        // Early exits draft worse than the whole model but never change greedy output; more
        // layers agree with the target more often.
        let mut rates = vec![];
        for n in [10, 20] {
            let mut early = SelfDrafter::new(&target, n, N_CTX, greedy()).unwrap();
            let (got, st) = speculative(&target, &tokenizer, &prompt, &mut early);
            assert_eq!(got, want, "self:{n} drafts");
            assert!(st.drafted > 0 && st.accepted <= st.drafted, "{st:?}");
            rates.push(st.acceptance_rate());
        }
        assert!(rates[1] > rates[0], "{rates:?}");
    }
}

#[test]
fn gemma3_greedy_speculation_with_ngrams_is_lossless() {
    let f = common::open_model(common::GEMMA3);
    let g = f.gguf().unwrap();
    let model = common::cpu_model(&g);
    let tokenizer = Tokenizer::from_gguf(&g).unwrap();
    let prompt = &prompts("gemma3.json")[0];
    let want = plain(&model, &tokenizer, prompt);
    let (got, _) = speculative(&model, &tokenizer, prompt, &mut NGramDrafter::default());
    assert_eq!(got, want);

    // The streamed text is the decoded ids.
    let mut dec =
        SpeculativeDecoder::new(&model, N_CTX, 512, SpeculativeOptions::default()).unwrap();
    let mut text = String::new();
    let options = GenerateOptions {
        max_tokens: MAX_TOKENS,
    };
    let (g, _) = dec
        .generate_text(
            &tokenizer,
            prompt,
            &mut greedy(),
            &mut NGramDrafter::default(),
            options,
            |piece| {
                text.push_str(piece);
                Ok(ControlFlow::Continue(()))
            },
        )
        .unwrap();
    assert_eq!(g.ids, want);
    assert_eq!(
        text,
        tokenizer.decode(&want, DecodeOptions::default()).unwrap()
    );
}

#[test]
fn drafters_named_on_the_command_line() {
    use ferrolm_analysis::AnalysisError;
    use ferrolm_analysis::speculative::{SpecKind, SpeculativeRun, generate_text_speculative};
    use ferrolm_transformer::CpuOptions;

    let f = common::open_model(common::SMOLLM2);
    let g = f.gguf().unwrap();
    let model = common::cpu_model(&g);
    let tokenizer = Tokenizer::from_gguf(&g).unwrap();
    let prompt = &prompts("smollm2.json")[0];
    let options = GenerateOptions { max_tokens: 12 };
    let run = |kind: &SpecKind| {
        let mut text = String::new();
        let spec = SpeculativeRun {
            kind,
            n_ctx: N_CTX,
            max_batch: 512,
            options: SpeculativeOptions::default(),
            draft_sampler: greedy(),
            draft_backend: CpuOptions {
                threads: 2,
                ..CpuOptions::default()
            },
        };
        generate_text_speculative(
            &model,
            &tokenizer,
            prompt,
            &mut greedy(),
            options,
            spec,
            |p| {
                text.push_str(p);
                Ok(ControlFlow::Continue(()))
            },
        )
        .map(|(g, s)| (g.ids, s, text))
    };
    let (ids, stats, text) = run(&SpecKind::Draft(common::model_path(common::SMOLLM2))).unwrap();
    assert_eq!(ids.len(), 12);
    assert!(stats.accepted > 0 && !text.is_empty());
    let gemma = SpecKind::Draft(common::model_path(common::GEMMA3));
    assert!(matches!(
        run(&gemma),
        Err(AnalysisError::VocabularyMismatch { .. })
    ));
    let (self_ids, self_stats, self_text) = run(&SpecKind::SelfLayers(20)).unwrap();
    assert_eq!(self_ids, ids);
    assert!(self_stats.drafted > 0 && !self_text.is_empty());
    let n_layer = model.config().n_layer;
    for bad in [n_layer, n_layer + 5] {
        let err = run(&SpecKind::SelfLayers(bad)).unwrap_err();
        assert!(
            matches!(err, AnalysisError::InvalidInput { .. }),
            "self:{bad}: {err}"
        );
        assert!(
            err.to_string().contains(&format!("{n_layer} layers")),
            "{err}"
        );
    }
    assert!(SelfDrafter::new(&model, 0, N_CTX, greedy()).is_err());
}
