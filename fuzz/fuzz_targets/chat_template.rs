//! Chat templates on arbitrary conversations: the real models' templates (through
//! `Tokenizer::apply_chat_template`, the prompt then encoded as `ferrolm chat` encodes it),
//! the built-in ones, and arbitrary template source. Rendering gives text or an error.
//!
//! Input: byte 0 picks the template (see `Source`), bit 0 of byte 1 is
//! `add_generation_prompt`; the rest, as lossy UTF-8, is fields separated by U+001E. With an
//! arbitrary template the first field is its source. Every other field is a message:
//! `role` U+001F `content`, or only content (role `user`).
#![no_main]

use ferrolm_fuzz::{GEMMA3, SMOLLM2};
use ferrolm_tokenizer::{ChatMessage, ChatTemplate, EncodeOptions, Tokenizer};
use libfuzzer_sys::fuzz_target;

const FIELD: char = '\u{1e}';
const ROLE: char = '\u{1f}';

/// Where the template comes from.
enum Source {
    Model(&'static Tokenizer),
    Builtin(&'static str),
    Arbitrary,
}

fn source(byte: u8) -> Source {
    match byte % 6 {
        0 => Source::Model(&SMOLLM2),
        1 => Source::Model(&GEMMA3),
        2 => Source::Builtin("gemma"),
        3 => Source::Builtin("chatml"),
        4 => Source::Builtin("llama3"),
        _ => Source::Arbitrary,
    }
}

fn message(field: &str) -> ChatMessage {
    match field.split_once(ROLE) {
        Some((role, content)) => ChatMessage::new(role, content),
        None => ChatMessage::user(field),
    }
}

fuzz_target!(|data: &[u8]| {
    let [pick, flags, rest @ ..] = data else {
        return;
    };
    let add_generation_prompt = flags & 1 != 0;
    let text = String::from_utf8_lossy(rest);
    let mut fields = text.split(FIELD);
    let template = match source(*pick) {
        Source::Model(tokenizer) => {
            let messages: Vec<ChatMessage> = fields.map(message).collect();
            let Ok(prompt) = tokenizer.apply_chat_template(&messages, add_generation_prompt) else {
                return;
            };
            let ids = tokenizer.encode(
                &prompt,
                EncodeOptions {
                    add_special: true,
                    parse_special: true,
                },
            );
            assert!(ids.iter().all(|&id| (id as usize) < tokenizer.n_vocab()));
            return;
        }
        Source::Builtin(name) => ChatTemplate::builtin(name).expect("a built-in template"),
        Source::Arbitrary => {
            ChatTemplate::new(fields.next().unwrap_or_default()).with_tokens("<s>", "</s>")
        }
    };
    let messages: Vec<ChatMessage> = fields.map(message).collect();
    let _ = template.render(&messages, add_generation_prompt);
});
