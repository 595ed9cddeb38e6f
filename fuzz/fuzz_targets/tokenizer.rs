//! Both kinds of vocabulary on arbitrary input: byte-level BPE (SmolLM2) and SentencePiece
//! (Gemma 3), loaded once per process from the real models.
//!
//! The first byte chooses: bit 0 the vocabulary, bit 1 encoding (the rest is text) or
//! decoding (the rest is little-endian u32 token ids, in range unless their top bit is set).
//!
//! - Encoding text or raw bytes, with and without BOS/EOS and special-token parsing, gives
//!   ids inside the vocabulary that decode, and plain text comes back from decoding as it
//!   went in.
//! - Decoding fails exactly when an id is outside the vocabulary, and streaming decode
//!   gives the same text as decoding at once.
#![no_main]

use ferrolm_fuzz::{GEMMA3, SMOLLM2, selector};
use ferrolm_tokenizer::{DecodeOptions, EncodeOptions, StreamingDecoder, Tokenizer, VocabKind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((select, rest)) = selector(data) else {
        return;
    };
    let tokenizer: &Tokenizer = if select & 1 == 0 { &SMOLLM2 } else { &GEMMA3 };
    if select & 2 == 0 {
        encode(tokenizer, rest);
    } else {
        decode(tokenizer, rest);
    }
});

/// Decoding as it was encoded: no special tokens rendered, no space prefix dropped.
const VERBATIM: DecodeOptions = DecodeOptions {
    render_special: false,
    strip_space_prefix: false,
};

fn encode(tokenizer: &Tokenizer, bytes: &[u8]) {
    let n_vocab = tokenizer.n_vocab();
    let text = String::from_utf8_lossy(bytes);
    for add_special in [false, true] {
        for parse_special in [false, true] {
            let opts = EncodeOptions {
                add_special,
                parse_special,
            };
            for ids in [
                tokenizer.encode(&text, opts),
                tokenizer.encode_bytes(bytes, opts),
            ] {
                assert!(ids.iter().all(|&id| (id as usize) < n_vocab));
                for render_special in [false, true] {
                    let opts = DecodeOptions {
                        render_special,
                        strip_space_prefix: true,
                    };
                    tokenizer.decode(&ids, opts).expect("encoded ids decode");
                }
            }
        }
    }

    let plain = EncodeOptions {
        add_special: false,
        parse_special: false,
    };
    let ids = tokenizer.encode(&text, plain);
    let back = tokenizer
        .decode(&ids, VERBATIM)
        .expect("encoded ids decode");
    match tokenizer.kind() {
        // Invalid UTF-8 is not given back: like llama.cpp, the tokenizer reads each byte
        // that is not part of a character as U+FFFD. Nor are bytes without a token (SmolLM2
        // has none for 0x04, 0x06, 0x13, 0x14, 0x16, 0x1D, ...): llama.cpp drops them too.
        VocabKind::Bpe => {
            if text
                .bytes()
                .all(|b| tokenizer.token_id(&gpt2_char(b).to_string()).is_some())
            {
                assert_eq!(back, text, "byte-level BPE gives the text back");
            }
        }
        // SentencePiece stores spaces as U+2581, so the two read alike once decoded.
        VocabKind::Spm => assert_eq!(
            back.replace('\u{2581}', " "),
            text.replace('\u{2581}', " "),
            "SentencePiece gives the text back"
        ),
    }
}

/// The character GPT-2's byte-level BPE stands byte `b` for: printable Latin-1 as itself,
/// the other bytes as U+0100 onwards, in order.
fn gpt2_char(b: u8) -> char {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    if printable(b) {
        return char::from(b);
    }
    let shifted = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + shifted).expect("below U+0200")
}

fn decode(tokenizer: &Tokenizer, bytes: &[u8]) {
    let n_vocab = tokenizer.n_vocab() as u32;
    let ids: Vec<u32> = bytes
        .chunks_exact(4)
        .map(|c| {
            let raw = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            // Mostly ids in range (and just past it); any id when the top bit is set.
            if raw & 0x8000_0000 == 0 {
                raw % (n_vocab + 4)
            } else {
                raw
            }
        })
        .collect();
    let in_range = ids.iter().all(|&id| id < n_vocab);
    for render_special in [false, true] {
        for strip_space_prefix in [false, true] {
            let opts = DecodeOptions {
                render_special,
                strip_space_prefix,
            };
            let decoded = tokenizer.decode(&ids, opts);
            assert_eq!(decoded.is_ok(), in_range, "{decoded:?}");
        }

        let mut stream = StreamingDecoder::new(tokenizer, render_special);
        let mut streamed = String::new();
        for &id in &ids {
            match stream.push(id) {
                Ok(piece) => streamed += &piece,
                Err(_) => assert!(id >= n_vocab, "id {id} of {n_vocab} refused"),
            }
        }
        streamed += &stream.finish();
        assert!(!stream.has_pending());
        if in_range {
            let opts = DecodeOptions {
                render_special,
                ..VERBATIM
            };
            let at_once = tokenizer.decode(&ids, opts).expect("ids in range");
            assert_eq!(streamed, at_once, "streaming decodes as decoding at once");
        }
    }
    for &id in &ids {
        let valid = id < n_vocab;
        assert_eq!(tokenizer.token_to_piece(id, true).is_ok(), valid);
        assert_eq!(tokenizer.token_text(id).is_ok(), valid);
        assert_eq!(tokenizer.token_score(id).is_ok(), valid);
        assert_eq!(tokenizer.token_type(id).is_ok(), valid);
        let _ = (tokenizer.is_control(id), tokenizer.is_eog(id));
    }
}
