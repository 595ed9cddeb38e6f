//! The algorithms on small hand-made vocabularies, where the expected ids
//! follow from the rules alone.

use ferrolm_tokenizer::{
    BpeTrainer, DecodeOptions, EncodeOptions, PreTokenizer, SpecialTokenIds, TokenType, Tokenizer,
    TokenizerConfig, TokenizerError, TrainProgress,
};

const RAW: EncodeOptions = EncodeOptions {
    add_special: false,
    parse_special: false,
};
const PARSE: EncodeOptions = EncodeOptions {
    add_special: false,
    parse_special: true,
};

fn gpt2_chars(s: &str) -> String {
    s.replace(' ', "Ġ")
}

/// A byte-level BPE vocabulary: the letters and space, the given merged
/// tokens, and merges (left, right) in priority order.
fn bpe(extra: &[&str], merges: &[(&str, &str)], pre: &str) -> Tokenizer {
    let mut tokens: Vec<String> = "abcdefghijklmnopqrstuvwxyz "
        .chars()
        .map(|c| gpt2_chars(&c.to_string()))
        .collect();
    tokens.extend(extra.iter().map(|t| gpt2_chars(t)));
    Tokenizer::from_config(TokenizerConfig {
        model: "gpt2".into(),
        pre: Some(pre.into()),
        tokens,
        merges: Some(
            merges
                .iter()
                .map(|(l, r)| format!("{} {}", gpt2_chars(l), gpt2_chars(r)))
                .collect(),
        ),
        ..TokenizerConfig::default()
    })
    .expect("vocabulary")
}

fn id_of(t: &Tokenizer, text: &str) -> u32 {
    t.token_id(&gpt2_chars(text))
        .unwrap_or_else(|| panic!("no token {text:?}"))
}

#[test]
fn bpe_applies_merges_by_rank_not_by_position() {
    let t = bpe(
        &["bc", "ab", "abc"],
        &[("b", "c"), ("a", "b"), ("a", "bc")],
        "gpt-2",
    );
    // "b c" has the best rank, so "abc" becomes a + bc, then abc.
    assert_eq!(t.encode("abc", RAW), vec![id_of(&t, "abc")]);
    let t = bpe(
        &["bc", "ab", "abc"],
        &[("a", "b"), ("b", "c"), ("a", "bc")],
        "gpt-2",
    );
    assert_eq!(t.encode("abc", RAW), vec![id_of(&t, "ab"), id_of(&t, "c")]);
}

#[test]
fn bpe_merges_equal_ranks_leftmost_first() {
    let t = bpe(&["aa"], &[("a", "a")], "gpt-2");
    let (aa, a) = (id_of(&t, "aa"), id_of(&t, "a"));
    assert_eq!(t.encode("aaa", RAW), vec![aa, a]);
    assert_eq!(t.encode("aaaaa", RAW), vec![aa, aa, a]);
}

#[test]
fn bpe_words_never_merge_across_pre_tokenizer_boundaries() {
    // Unsplit, "a " would merge first; the pre-tokenizer cuts "a b" into "a" and " b".
    let t = bpe(&["a ", " b"], &[("a", " "), (" ", "b")], "gpt-2");
    assert_eq!(t.encode("a b", RAW), vec![id_of(&t, "a"), id_of(&t, " b")]);
}

#[test]
fn ignore_merges_takes_whole_words_from_the_vocabulary() {
    // llama-bpe ignores merges for words that are tokens; gpt-2 does not.
    let merges = [("a", "b"), ("c", "d")];
    let with = bpe(&["ab", "cd", "abcd"], &merges, "llama-bpe");
    let without = bpe(&["ab", "cd", "abcd"], &merges, "dbrx");
    assert_eq!(with.encode("abcd", RAW), vec![id_of(&with, "abcd")]);
    assert_eq!(
        without.encode("abcd", RAW),
        vec![id_of(&without, "ab"), id_of(&without, "cd")]
    );
    assert!(with.add_bos(), "llama-bpe adds BOS by default");
    assert!(!without.add_bos());
}

#[test]
fn bpe_without_merges_is_an_error_naming_the_key() {
    let err = Tokenizer::from_config(TokenizerConfig {
        model: "gpt2".into(),
        pre: Some("gpt-2".into()),
        tokens: vec!["a".into()],
        ..TokenizerConfig::default()
    })
    .expect_err("no merges");
    assert!(err.to_string().contains("tokenizer.ggml.merges"), "{err}");
}

/// A SentencePiece vocabulary from (text, score) pairs plus byte tokens.
fn spm(pieces: &[(&str, f32)], user_defined: &[&str], add_space_prefix: bool) -> Tokenizer {
    let mut tokens = vec!["<unk>".to_owned(), "<s>".to_owned(), "</s>".to_owned()];
    let mut types = vec![
        TokenType::Unknown.to_gguf(),
        TokenType::Control.to_gguf(),
        TokenType::Control.to_gguf(),
    ];
    let mut scores = vec![0.0, 0.0, 0.0];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(TokenType::Byte.to_gguf());
        scores.push(0.0);
    }
    for &(t, s) in pieces {
        tokens.push(t.to_owned());
        types.push(TokenType::Normal.to_gguf());
        scores.push(s);
    }
    for &t in user_defined {
        tokens.push(t.to_owned());
        types.push(TokenType::UserDefined.to_gguf());
        scores.push(0.0);
    }
    Tokenizer::from_config(TokenizerConfig {
        model: "llama".into(),
        tokens,
        scores: Some(scores),
        token_types: Some(types),
        add_space_prefix: Some(add_space_prefix),
        ..TokenizerConfig::default()
    })
    .expect("vocabulary")
}

fn sid(t: &Tokenizer, text: &str) -> u32 {
    t.token_id(text)
        .unwrap_or_else(|| panic!("no token {text:?}"))
}

#[test]
fn spm_merges_the_highest_score_first() {
    let pieces = [
        ("a", -1.0),
        ("b", -1.0),
        ("c", -1.0),
        ("ab", -3.0),
        ("bc", -2.0),
    ];
    let t = spm(&pieces, &[], false);
    assert_eq!(t.encode("abc", RAW), vec![sid(&t, "a"), sid(&t, "bc")]);
    let pieces = [
        ("a", -1.0),
        ("b", -1.0),
        ("c", -1.0),
        ("ab", -2.0),
        ("bc", -2.0),
    ];
    let t = spm(&pieces, &[], false);
    assert_eq!(
        t.encode("abc", RAW),
        vec![sid(&t, "ab"), sid(&t, "c")],
        "equal scores: leftmost first"
    );
}

#[test]
fn spm_adds_the_space_prefix_and_bos() {
    let pieces = [
        ("▁", -1.0),
        ("h", -1.0),
        ("i", -1.0),
        ("▁h", -2.0),
        ("▁hi", -1.5),
    ];
    let t = spm(&pieces, &[], true);
    assert_eq!(
        t.encode("hi", EncodeOptions::default()),
        vec![1, sid(&t, "▁hi")]
    );
    // As in llama.cpp, only the first token's leading space goes (BOS has none).
    let hi = sid(&t, "▁hi");
    assert_eq!(
        t.decode(&[hi, hi], DecodeOptions::default())
            .expect("decode"),
        "hi hi"
    );
    assert_eq!(
        t.decode(&[1, hi], DecodeOptions::default())
            .expect("decode"),
        " hi"
    );
    let keep = DecodeOptions {
        render_special: false,
        strip_space_prefix: false,
    };
    assert_eq!(t.decode(&[sid(&t, "▁hi")], keep).expect("decode"), " hi");
}

#[test]
fn spm_falls_back_to_bytes_for_unknown_characters() {
    let t = spm(&[("a", -1.0)], &[], false);
    let e = "é".as_bytes();
    assert_eq!(
        t.encode("aé", RAW),
        vec![sid(&t, "a"), 3 + u32::from(e[0]), 3 + u32::from(e[1])]
    );
    assert_eq!(
        t.decode(&t.encode("aé", RAW), DecodeOptions::default())
            .expect("decode"),
        "aé"
    );
}

#[test]
fn spm_merges_cross_a_space_only_where_a_token_does() {
    // Tokens join `▁` to `x` and to `▁`, never to `a`.
    let pieces = [
        ("▁", -1.0),
        ("x", -1.0),
        ("y", -1.0),
        ("a", -1.0),
        ("x▁", -5.0),
        ("x▁▁", -4.0),
        ("x▁▁y", -3.0),
        ("▁▁", -2.0),
    ];
    let t = spm(&pieces, &[], false);
    assert_eq!(t.encode("x  y", RAW), vec![sid(&t, "x▁▁y")]);
    assert_eq!(
        t.encode("a  y", RAW),
        vec![sid(&t, "a"), sid(&t, "▁▁"), sid(&t, "y")]
    );
}

#[test]
fn special_tokens_are_taken_longest_first_not_leftmost_first() {
    let pieces = [("a", -1.0), ("b", -1.0), ("c", -1.0), ("d", -1.0)];
    let t = spm(&pieces, &["ab", "bcd"], false);
    assert_eq!(t.encode("abcd", RAW), vec![sid(&t, "a"), sid(&t, "bcd")]);
    assert_eq!(t.encode("abab", RAW), vec![sid(&t, "ab"), sid(&t, "ab")]);
}

#[test]
fn control_tokens_need_parse_special() {
    let t = spm(
        &[("<", -1.0), ("/", -1.0), ("s", -1.0), (">", -1.0)],
        &[],
        false,
    );
    assert_eq!(t.encode("</s>", PARSE), vec![2]);
    assert_eq!(
        t.encode("</s>", RAW),
        vec![sid(&t, "<"), sid(&t, "/"), sid(&t, "s"), sid(&t, ">")]
    );
}

#[test]
fn phi3_special_tokens_swallow_following_whitespace() {
    let pieces = [("▁", -1.0), ("h", -1.0), ("i", -1.0)];
    let mut tokens = vec![
        "<unk>".to_owned(),
        "<s>".to_owned(),
        "</s>".to_owned(),
        "<|user|>".to_owned(),
    ];
    let mut types = vec![2, 3, 3, 3];
    for (p, _) in pieces {
        tokens.push(p.to_owned());
        types.push(1);
    }
    let cfg = |name: &str| TokenizerConfig {
        model: "llama".into(),
        tokens: tokens.clone(),
        token_types: Some(types.clone()),
        add_space_prefix: Some(false),
        model_name: Some(name.into()),
        ..TokenizerConfig::default()
    };
    let phi = Tokenizer::from_config(cfg("Phi-3 mini")).expect("vocabulary");
    let other = Tokenizer::from_config(cfg("other")).expect("vocabulary");
    let (h, i) = (sid(&phi, "h"), sid(&phi, "i"));
    assert_eq!(phi.encode("<|user|>  \nhi", PARSE), vec![3, h, i]);
    assert_eq!(
        other.encode("<|user|> hi", PARSE),
        vec![3, sid(&other, "▁"), h, i]
    );
}

#[test]
fn unknown_models_and_pre_tokenizers_are_errors() {
    let base = TokenizerConfig {
        tokens: vec!["a".into()],
        merges: Some(vec![]),
        ..TokenizerConfig::default()
    };
    let err = Tokenizer::from_config(TokenizerConfig {
        model: "bert".into(),
        ..base.clone()
    })
    .expect_err("bert");
    assert!(
        matches!(err, TokenizerError::UnsupportedModel { .. }),
        "{err}"
    );
    let err = Tokenizer::from_config(TokenizerConfig {
        model: "gpt2".into(),
        pre: Some("qwen9".into()),
        ..base.clone()
    })
    .expect_err("unknown pre");
    assert_eq!(
        err.to_string(),
        "unknown pre-tokenizer \"qwen9\" for tokenizer model \"gpt2\""
    );
    let err = Tokenizer::from_config(TokenizerConfig {
        model: "llama".into(),
        pre: Some("qwen2".into()),
        ..base.clone()
    })
    .expect_err("BPE pre-tokenizer on a SentencePiece vocabulary");
    assert!(
        matches!(err, TokenizerError::UnknownPreTokenizer { .. }),
        "{err}"
    );
    let ok = Tokenizer::from_config(TokenizerConfig {
        model: "gpt2".into(),
        pre: None,
        ..base.clone()
    })
    .expect("a missing pre-tokenizer is llama.cpp's default");
    assert_eq!(ok.pre_tokenizer(), Some(PreTokenizer::Default));
    let err = Tokenizer::from_config(TokenizerConfig {
        model: "gpt2".into(),
        tokens: vec!["a".into(), "a".into()],
        merges: Some(vec![]),
        ..TokenizerConfig::default()
    })
    .expect_err("duplicate");
    assert!(
        matches!(
            err,
            TokenizerError::DuplicateToken {
                first: 0,
                second: 1,
                ..
            }
        ),
        "{err}"
    );
    let err = Tokenizer::from_config(TokenizerConfig {
        model: "gpt2".into(),
        merges: Some(vec![]),
        add_bos: Some(true),
        special: SpecialTokenIds {
            bos: Some(99),
            ..SpecialTokenIds::default()
        },
        tokens: vec!["a".into()],
        ..TokenizerConfig::default()
    })
    .expect_err("BOS required but absent");
    assert!(
        matches!(
            err,
            TokenizerError::MissingSpecialToken { token: "BOS", .. }
        ),
        "{err}"
    );
}

const CORPUS: &str = include_str!("../../../fixtures/golden/texts/gpl-3.txt");

#[test]
fn trained_vocabularies_round_trip_and_compress_better_with_more_merges() {
    let docs: Vec<&str> = CORPUS.split("\n\n").collect();
    let mut previous = usize::MAX;
    for n_merges in [0, 50, 300, 1000] {
        let cfg = BpeTrainer::new(n_merges)
            .train(docs.iter().copied())
            .expect("train");
        assert_eq!(cfg.merges.as_ref().map(Vec::len), Some(n_merges));
        assert_eq!(cfg.tokens.len(), 1 + 256 + n_merges);
        let t = Tokenizer::from_config(cfg).expect("vocabulary");
        let ids = t.encode(CORPUS, RAW);
        assert_eq!(
            t.decode(&ids, DecodeOptions::default()).expect("decode"),
            CORPUS
        );
        if n_merges == 0 {
            assert_eq!(ids.len(), CORPUS.len(), "bytes only");
        }
        assert!(
            ids.len() < previous,
            "{n_merges} merges: {} tokens, before {previous}",
            ids.len()
        );
        previous = ids.len();
        let unseen = "Zebras quietly juggle 42 émojis 😀 and ☃.";
        assert_eq!(
            t.decode(&t.encode(unseen, RAW), DecodeOptions::default())
                .expect("decode"),
            unseen
        );
    }
    assert!(
        previous * 3 < CORPUS.len(),
        "1000 merges compress English more than 3x: {previous}"
    );
}

#[test]
fn training_learns_the_most_frequent_pair_first_and_is_deterministic() {
    let corpus = ["low low low lower lowest", "newer newest new"];
    let a = BpeTrainer::new(5).train(corpus).expect("train");
    let b = BpeTrainer::new(5).train(corpus).expect("train");
    assert_eq!(a.merges, b.merges);
    let merges = a.merges.expect("merges");
    // "l o" and "o w" both occur 5 times; ties go to the smallest pair of byte values.
    assert_eq!(merges[0], "l o");
    assert_eq!(merges[1], "lo w");
    let t = Tokenizer::from_config(BpeTrainer::new(5).train(corpus).expect("train"))
        .expect("vocabulary");
    assert_eq!(t.encode("<|endoftext|>", PARSE), vec![0]);
}

#[test]
fn tokenizers_can_be_shared_across_threads() {
    fn shared<T: Send + Sync>() {}
    shared::<Tokenizer>();
    let t = std::sync::Arc::new(
        Tokenizer::from_config(BpeTrainer::new(100).train([CORPUS]).expect("train"))
            .expect("vocabulary"),
    );
    let expected = t.encode(CORPUS, RAW);
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let t = std::sync::Arc::clone(&t);
            std::thread::spawn(move || t.encode(CORPUS, RAW))
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().expect("thread"), expected);
    }
}

#[test]
fn two_vocabularies_on_one_thread_do_not_share_cached_words() {
    let a = Tokenizer::from_config(BpeTrainer::new(200).train([CORPUS]).expect("train"))
        .expect("vocabulary");
    let b = Tokenizer::from_config(BpeTrainer::new(20).train([CORPUS]).expect("train"))
        .expect("vocabulary");
    let text = "the License and the Program";
    let (a1, b1) = (a.encode(text, RAW), b.encode(text, RAW));
    assert_ne!(a1, b1);
    assert_eq!((a.encode(text, RAW), b.encode(text, RAW)), (a1, b1));
}

#[test]
fn a_trained_vocabulary_written_to_gguf_reads_back_equal_and_encodes_alike() {
    let docs: Vec<&str> = CORPUS.split("\n\n").collect();
    let mut counted = 0;
    let mut merged = Vec::new();
    let cfg = BpeTrainer::new(120)
        .train_with_progress(docs.iter().copied(), |p| match p {
            TrainProgress::Counted { bytes } => counted += bytes,
            TrainProgress::Merged { merges } => merged.push(merges),
        })
        .expect("train");
    assert_eq!(counted, docs.iter().map(|d| d.len()).sum::<usize>());
    assert_eq!(merged, (1..=120).collect::<Vec<_>>());

    let mut writer = ferrolm_gguf::GgufWriter::new();
    cfg.add_to_gguf(&mut writer);
    let mut bytes = Vec::new();
    writer.write_to(&mut bytes).expect("write");
    let gguf = ferrolm_gguf::Gguf::parse(&bytes).expect("parse");
    assert_eq!(
        gguf.get_str(ferrolm_gguf::keys::tokenizer::MODEL)
            .expect("model"),
        "gpt2"
    );
    assert_eq!(
        gguf.get_u32(ferrolm_gguf::keys::tokenizer::BOS_ID)
            .expect("bos"),
        0
    );
    let read = TokenizerConfig::from_gguf(&gguf).expect("read back");
    assert_eq!(read, cfg);

    let from_file = Tokenizer::from_gguf(&gguf).expect("vocabulary");
    let in_memory = Tokenizer::from_config(cfg).expect("vocabulary");
    let text = "This License applies to any program, émojis 😀 included.";
    let ids = from_file.encode(text, RAW);
    assert_eq!(ids, in_memory.encode(text, RAW));
    assert!(ids.len() < text.len());
    assert_eq!(
        from_file
            .decode(&ids, DecodeOptions::default())
            .expect("decode"),
        text
    );
}
