//! Behaviour on the two reference vocabularies beyond the golden ids:
//! metadata, special tokens, invalid bytes, decoding, streaming, chat
//! templates, vocabulary-only files.

mod common;

use common::{GEMMA3, SMOLLM2, golden, load, model_path};
use ferrolm_gguf::{GgufFile, GgufWriter, keys};
use ferrolm_tokenizer::{
    ChatMessage, DecodeOptions, EncodeOptions, PreTokenizer, StreamingDecoder, TokenizerError,
    VocabKind,
};
use proptest::prelude::*;

const RAW: EncodeOptions = EncodeOptions {
    add_special: false,
    parse_special: false,
};
const SPECIAL: EncodeOptions = EncodeOptions {
    add_special: true,
    parse_special: true,
};

#[test]
fn smollm2_metadata_follows_llama_cpp() {
    let t = load(SMOLLM2);
    assert_eq!(t.kind(), VocabKind::Bpe);
    assert_eq!(t.pre_tokenizer(), Some(PreTokenizer::DigitsThenGpt2));
    assert_eq!(t.pre_name(), Some("smollm"));
    assert_eq!(t.n_vocab(), 49152);
    assert!(!t.add_bos());
    assert_eq!(
        (t.bos(), t.eos(), t.unk(), t.pad()),
        (Some(1), Some(2), Some(0), Some(2))
    );
    assert!(
        t.is_eog(2) && t.is_eog(0),
        "<|im_end|> and <|endoftext|> end generation"
    );
    assert!(!t.is_eog(1));
    assert!(t.is_control(1));
    assert_eq!(t.token_text(216).expect("id"), "Ġ");
    assert_eq!(t.token_text(256).expect("id"), "ĠĠ");
}

#[test]
fn gemma3_metadata_follows_llama_cpp() {
    let t = load(GEMMA3);
    assert_eq!(t.kind(), VocabKind::Spm);
    assert_eq!(t.pre_tokenizer(), None);
    assert_eq!(t.n_vocab(), 262_144);
    assert!(t.add_bos() && !t.add_eos() && !t.add_space_prefix());
    assert_eq!(
        (t.bos(), t.eos(), t.unk(), t.pad()),
        (Some(2), Some(1), Some(3), Some(0))
    );
    assert_eq!(t.eot(), Some(106), "<end_of_turn> found by its text");
    assert!(t.is_eog(106) && t.is_eog(1));
    assert_eq!(t.token_text(493).expect("id"), "<0xFF>");
    assert_eq!(t.token_score(236743).expect("id"), -236_280.0);
}

#[test]
fn user_defined_tokens_match_without_parse_special_but_control_tokens_do_not() {
    let t = load(GEMMA3);
    assert_eq!(t.encode("<table>", RAW), vec![168]);
    assert_eq!(
        t.encode("\n\n\n", RAW),
        vec![109],
        "the longest newline run wins"
    );
    let raw = t.encode("<start_of_turn>", RAW);
    assert!(!raw.contains(&105), "{raw:?}");
    assert_eq!(
        t.encode("<start_of_turn><start_of_turn>", SPECIAL),
        vec![2, 105, 105]
    );
    assert_eq!(t.encode("<eos>", SPECIAL), vec![2, 1]);
}

#[test]
fn invalid_utf8_is_tokenized_as_llama_cpp_does() {
    let smol = load(SMOLLM2);
    // Byte-level BPE sees undecodable bytes as U+FFFD.
    assert_eq!(
        smol.encode_bytes(b"a\xFFb", RAW),
        smol.encode("a\u{FFFD}b", RAW)
    );
    assert_eq!(
        smol.encode_bytes(b"caf\xC3", RAW),
        smol.encode("caf\u{FFFD}", RAW)
    );
    let gemma = load(GEMMA3);
    // SentencePiece keeps the bytes: a lead byte swallows what follows, and
    // what is no token falls back to <0xNN>.
    let a = gemma.token_id("a").expect("a");
    assert_eq!(
        gemma.encode_bytes(b"a\xFFb", RAW),
        vec![a, 238 + 0xFF, 238 + u32::from(b'b')]
    );
    assert_eq!(gemma.encode_bytes(b"\x80", RAW), vec![238 + 0x80]);
    assert_eq!(
        gemma
            .decode_bytes(&[238 + 0xFF, 238 + 0x80], DecodeOptions::default())
            .expect("decode"),
        b"\xFF\x80"
    );
}

#[test]
fn empty_input_gives_only_the_special_tokens() {
    let gemma = load(GEMMA3);
    assert_eq!(gemma.encode("", SPECIAL), vec![2]);
    assert!(gemma.encode("", RAW).is_empty());
    assert!(load(SMOLLM2).encode("", SPECIAL).is_empty());
}

#[test]
fn decode_renders_or_hides_special_tokens() {
    let gemma = load(GEMMA3);
    let ids = [2, 105, 2364, 107, 9259, 1902];
    let hidden = DecodeOptions {
        render_special: false,
        strip_space_prefix: true,
    };
    let shown = DecodeOptions {
        render_special: true,
        strip_space_prefix: true,
    };
    assert_eq!(
        gemma.decode(&ids, hidden).expect("decode"),
        "user\nHello world"
    );
    assert_eq!(
        gemma.decode(&ids, shown).expect("decode"),
        "<bos><start_of_turn>user\nHello world"
    );
    let smol = load(SMOLLM2);
    assert_eq!(
        smol.decode(&[1, 4093, 198], shown).expect("decode"),
        "<|im_start|>user\n"
    );
    assert_eq!(
        smol.decode(&[1, 4093, 198], hidden).expect("decode"),
        "user\n"
    );
}

#[test]
fn out_of_range_ids_are_errors() {
    let smol = load(SMOLLM2);
    let err = smol
        .decode(&[19556, 49152], DecodeOptions::default())
        .expect_err("out of range");
    assert!(
        matches!(
            err,
            TokenizerError::TokenOutOfRange {
                id: 49152,
                n_vocab: 49152
            }
        ),
        "{err}"
    );
    assert!(smol.token_to_piece(u32::MAX, true).is_err());
    let mut stream = StreamingDecoder::new(&smol, false);
    assert!(stream.push(60_000).is_err());
}

#[test]
fn streaming_decoder_only_emits_whole_characters() {
    let gemma = load(GEMMA3);
    // U+2FFF is no token: it falls back to its three bytes E2 BF BF.
    let ids = gemma.encode("x\u{2FFF}y", RAW);
    assert_eq!(&ids[1..4], &[238 + 0xE2, 238 + 0xBF, 238 + 0xBF]);
    let mut stream = StreamingDecoder::new(&gemma, false);
    let pieces: Vec<String> = ids
        .iter()
        .map(|&id| stream.push(id).expect("push"))
        .collect();
    assert_eq!(pieces, vec!["x", "", "", "\u{2FFF}", "y"]);
    assert!(!stream.has_pending());

    let smol = load(SMOLLM2);
    let text = "日本語のテキストです。😀👨\u{200D}👩";
    let ids = smol.encode(text, RAW);
    let mut stream = StreamingDecoder::new(&smol, false);
    let mut out = String::new();
    let mut empty_pushes = 0;
    for &id in &ids {
        let piece = stream.push(id).expect("push");
        empty_pushes += usize::from(piece.is_empty());
        out += &piece;
    }
    out += &stream.finish();
    assert_eq!(out, text);
    assert!(empty_pushes > 0, "some characters span several tokens");
}

#[test]
fn streaming_decoder_flushes_an_unfinished_character_as_replacement() {
    let gemma = load(GEMMA3);
    let mut stream = StreamingDecoder::new(&gemma, false);
    assert_eq!(stream.push(238 + 0xE6).expect("push"), "");
    assert_eq!(
        stream.push(238 + 0x41).expect("push"),
        "\u{FFFD}A",
        "a lead byte followed by ASCII cannot complete"
    );
    assert_eq!(stream.push(238 + 0xE6).expect("push"), "");
    assert_eq!(stream.finish(), "\u{FFFD}");
}

#[test]
fn smollm2_chat_template_renders_its_system_prompt_and_tokenizes_like_llama_cpp() {
    let smol = load(SMOLLM2);
    let template = smol.chat_template().expect("template");
    assert_eq!(template.builtin_name(), None);
    let question = "What is the largest planet in the solar system?";
    let text = template
        .render(&[ChatMessage::user(question)], true)
        .expect("render");
    assert_eq!(
        text,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
         <|im_start|>user\nWhat is the largest planet in the solar system?<|im_end|>\n<|im_start|>assistant\n"
    );
    let reference = golden("smollm2")
        .greedy
        .into_iter()
        .find(|c| c.parse_special)
        .expect("chat case");
    assert_eq!(text, reference.prompt);
    let ids = smol.encode(
        &text,
        EncodeOptions {
            add_special: reference.add_special,
            parse_special: true,
        },
    );
    assert_eq!(ids, reference.prompt_ids);
    let without_prompt = template
        .render(&[ChatMessage::user(question)], false)
        .expect("render");
    assert!(without_prompt.ends_with("<|im_end|>\n"));
    let with_system = smol
        .apply_chat_template(
            &[ChatMessage::system("Be terse."), ChatMessage::user("Hi")],
            true,
        )
        .expect("render");
    assert_eq!(
        with_system,
        "<|im_start|>system\nBe terse.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn gemma3_gets_the_builtin_gemma_template() {
    let gemma = load(GEMMA3);
    assert_eq!(
        gemma.chat_template_source(),
        None,
        "the 270M file has no template"
    );
    let template = gemma.chat_template().expect("template");
    assert_eq!(template.builtin_name(), Some("gemma"));
    let reference = golden("gemma3")
        .greedy
        .into_iter()
        .find(|c| c.parse_special)
        .expect("chat case");
    let text = gemma
        .apply_chat_template(
            &[ChatMessage::user(
                "What is the largest planet in the solar system?",
            )],
            true,
        )
        .expect("render");
    assert_eq!(text, reference.prompt);
    assert_eq!(gemma.encode(&text, SPECIAL), reference.prompt_ids);
}

/// Copies a model's metadata (none of its tensors) into a new file.
fn vocabulary_only(
    file: &str,
    edit: impl Fn(&str) -> Option<ferrolm_gguf::OwnedMetadataValue>,
) -> Vec<u8> {
    let src = GgufFile::open(model_path(file)).expect("open");
    let g = src.gguf().expect("parse");
    let mut w = GgufWriter::new();
    for (key, value) in g.metadata() {
        let v = edit(key).unwrap_or_else(|| value.to_owned_value());
        w.add_metadata(key, v);
    }
    let mut out = Vec::new();
    w.write_to(&mut out).expect("write");
    out
}

#[test]
fn vocabulary_only_files_load_and_tokenize_the_same() {
    let bytes = vocabulary_only(SMOLLM2, |_| None);
    let g = ferrolm_gguf::Gguf::parse(&bytes).expect("parse");
    assert!(g.tensors().is_empty());
    let t = ferrolm_tokenizer::Tokenizer::from_gguf(&g).expect("tokenizer");
    for case in golden("smollm2").tokenize {
        let opts = EncodeOptions {
            add_special: case.add_special,
            parse_special: case.parse_special,
        };
        assert_eq!(t.encode(&case.text, opts), case.ids);
    }
}

#[test]
fn no_vocab_models_are_reported_and_unknown_pre_tokenizers_rejected() {
    let no_vocab = vocabulary_only(SMOLLM2, |k| {
        (k == keys::tokenizer::MODEL).then(|| "no_vocab".into())
    });
    let g = ferrolm_gguf::Gguf::parse(&no_vocab).expect("parse");
    assert!(matches!(
        ferrolm_tokenizer::Tokenizer::from_gguf(&g),
        Err(TokenizerError::NoVocabulary { .. })
    ));
    assert!(
        ferrolm_tokenizer::Tokenizer::from_gguf_if_present(&g)
            .expect("no error")
            .is_none()
    );

    let unknown = vocabulary_only(SMOLLM2, |k| {
        (k == keys::tokenizer::PRE).then(|| "smollm-9000".into())
    });
    let g = ferrolm_gguf::Gguf::parse(&unknown).expect("parse");
    let err = ferrolm_tokenizer::Tokenizer::from_gguf(&g).expect_err("unknown pre");
    assert!(
        matches!(&err, TokenizerError::UnknownPreTokenizer { pre, .. } if pre == "smollm-9000"),
        "{err}"
    );
    assert!(err.to_string().contains("smollm-9000"));
}

const ROUND_TRIP_POOL: &[&str] = &[
    "a",
    "Z",
    "the",
    " ",
    "  ",
    "\t",
    "\n",
    "\r\n",
    "'s",
    "0",
    "42",
    ".",
    ",",
    "!",
    "<",
    "|",
    "é",
    "ß",
    "日本",
    "한국",
    "Привет",
    "😀",
    "👨\u{200D}👩",
    "\u{301}",
    "\u{A0}",
    "\u{3000}",
    "\u{E000}",
    "<|im_start|>",
    "<start_of_turn>",
    "<table>",
    "\u{FEFF}",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64)
    ))]

    #[test]
    fn decode_inverts_encode(ix in prop::collection::vec(0..ROUND_TRIP_POOL.len(), 0..40)) {
        let text: String = ix.into_iter().map(|i| ROUND_TRIP_POOL[i]).collect();
        let keep = DecodeOptions { render_special: true, strip_space_prefix: false };
        for t in [&*SMOL, &*GEMMA] {
            let ids = t.encode(&text, RAW);
            prop_assert_eq!(t.decode(&ids, keep).expect("decode"), text.clone());
        }
    }
}

static SMOL: std::sync::LazyLock<ferrolm_tokenizer::Tokenizer> =
    std::sync::LazyLock::new(|| load(SMOLLM2));
static GEMMA: std::sync::LazyLock<ferrolm_tokenizer::Tokenizer> =
    std::sync::LazyLock::new(|| load(GEMMA3));
