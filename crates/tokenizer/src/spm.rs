//! SentencePiece-style BPE (`tokenizer.ggml.model = "llama"`).
//!
//! Spaces become `▁` (and a leading space is added when the vocabulary asks
//! for it); the text starts as one symbol per UTF-8 character; the adjacent
//! pair whose concatenation is the highest-scoring token is merged (leftmost
//! first among equal scores) until no pair forms a token. A symbol that is no
//! token is written as its bytes' `<0xNN>` tokens.

use std::collections::BinaryHeap;

use rustc_hash::{FxHashMap, FxHashSet};

use crate::TokenId;
use crate::unicode::utf8_len;
use crate::vocab::Vocab;

pub(crate) struct SpmModel {
    /// The `<0xNN>` token of each byte (or the one-byte token, or UNK).
    byte_token: Box<[Option<TokenId>; 256]>,
    /// Characters that some token has directly before a `▁`.
    joins_space: FxHashSet<char>,
}

/// How SentencePiece writes a space.
const SPACE: &str = "\u{2581}";
const MAX_CACHED_PIECE: usize = 64;
const MAX_CACHE_ENTRIES: usize = 1 << 16;

#[derive(Clone, Copy)]
struct Symbol {
    start: u32,
    len: u32,
    prev: u32,
    next: u32,
}

/// Working memory reused across calls.
#[derive(Default)]
pub(crate) struct SpmScratch {
    text: Vec<u8>,
    /// Token ids of pieces already seen (for one vocabulary).
    cache: FxHashMap<Box<[u8]>, Box<[TokenId]>>,
    symbols: Vec<Symbol>,
    /// (score key << 32 | !left, right, size)
    heap: BinaryHeap<(u64, u32, u32)>,
}

const END: u32 = u32::MAX;

/// Maps a score to bits whose unsigned order is the float order.
fn score_key(score: f32) -> u64 {
    let b = score.to_bits();
    u64::from(if b & 0x8000_0000 != 0 {
        !b
    } else {
        b | 0x8000_0000
    })
}

impl SpmModel {
    pub fn new(vocab: &Vocab) -> SpmModel {
        let mut byte_token = Box::new([None; 256]);
        for (b, slot) in byte_token.iter_mut().enumerate() {
            *slot = vocab
                .id_of(format!("<0x{b:02X}>").as_bytes())
                .or_else(|| vocab.id_of(&[b as u8]))
                .or(vocab.ids.unk);
        }
        let mut joins_space = FxHashSet::default();
        for text in vocab.texts.iter() {
            for (at, _) in text.match_indices(SPACE).filter(|&(at, _)| at > 0) {
                if let Some(c) = text[..at].chars().next_back() {
                    joins_space.insert(c);
                }
            }
        }
        SpmModel {
            byte_token,
            joins_space,
        }
    }

    /// Tokenizes one fragment of raw text (`space_prefix`: prepend a space first).
    pub fn encode(
        &self,
        vocab: &Vocab,
        raw: &[u8],
        space_prefix: bool,
        s: &mut SpmScratch,
        out: &mut Vec<TokenId>,
    ) {
        let mut text = std::mem::take(&mut s.text);
        text.clear();
        if space_prefix {
            text.extend_from_slice(SPACE.as_bytes());
        }
        for &b in raw {
            if b == b' ' {
                text.extend_from_slice(SPACE.as_bytes());
            } else {
                text.push(b);
            }
        }
        // Cut before each `▁` that no token joins to the character before it:
        // no merge can cross such a point, so the pieces are independent.
        let mut piece_start = 0;
        let mut prev_joins = true;
        let mut offs = 0;
        while offs < text.len() {
            let len = utf8_len(text[offs]).min(text.len() - offs);
            let sym = &text[offs..offs + len];
            if sym == SPACE.as_bytes() && !prev_joins {
                self.encode_piece(vocab, &text[piece_start..offs], s, out);
                piece_start = offs;
            }
            prev_joins = match std::str::from_utf8(sym).ok().and_then(|c| c.chars().next()) {
                Some(c) => self.joins_space.contains(&c),
                None => true,
            };
            offs += len;
        }
        self.encode_piece(vocab, &text[piece_start..], s, out);
        s.text = text;
    }

    fn encode_piece(&self, vocab: &Vocab, text: &[u8], s: &mut SpmScratch, out: &mut Vec<TokenId>) {
        if text.is_empty() {
            return;
        }
        if let Some(ids) = s.cache.get(text) {
            out.extend_from_slice(ids);
            return;
        }
        let start = out.len();
        self.merge(vocab, text, s, out);
        if text.len() <= MAX_CACHED_PIECE && s.cache.len() < MAX_CACHE_ENTRIES {
            s.cache.insert(text.into(), out[start..].into());
        }
    }

    fn merge(&self, vocab: &Vocab, text: &[u8], s: &mut SpmScratch, out: &mut Vec<TokenId>) {
        let n = text.len();
        s.symbols.clear();
        let mut offs = 0;
        while offs < n {
            let len = utf8_len(text[offs]).min(n - offs);
            let index = s.symbols.len() as u32;
            s.symbols.push(Symbol {
                start: offs as u32,
                len: len as u32,
                prev: if index == 0 { END } else { index - 1 },
                next: if offs + len == n { END } else { index + 1 },
            });
            offs += len;
        }
        s.heap.clear();
        for i in 1..s.symbols.len() as u32 {
            try_pair(vocab, text, &s.symbols, &mut s.heap, i - 1, i);
        }
        while let Some((key, right, size)) = s.heap.pop() {
            let left = !(key as u32);
            let (l, r) = (s.symbols[left as usize], s.symbols[right as usize]);
            if l.len == 0 || r.len == 0 || l.len + r.len != size {
                continue;
            }
            s.symbols[left as usize].len += r.len;
            s.symbols[right as usize].len = 0;
            s.symbols[left as usize].next = r.next;
            if r.next != END {
                s.symbols[r.next as usize].prev = left;
            }
            if l.prev != END {
                try_pair(vocab, text, &s.symbols, &mut s.heap, l.prev, left);
            }
            if r.next != END {
                try_pair(vocab, text, &s.symbols, &mut s.heap, left, r.next);
            }
        }
        let mut i = 0;
        while i != END {
            let sym = s.symbols[i as usize];
            let piece = &text[sym.start as usize..(sym.start + sym.len) as usize];
            match vocab.id_of(piece) {
                Some(id) => out.push(id),
                None => out.extend(piece.iter().filter_map(|&b| self.byte_token[b as usize])),
            }
            i = sym.next;
        }
    }

    /// The reference algorithm on the whole fragment, without cutting it into
    /// pieces or caching (for tests).
    #[cfg(test)]
    pub fn encode_uncut(
        &self,
        vocab: &Vocab,
        raw: &[u8],
        space_prefix: bool,
        out: &mut Vec<TokenId>,
    ) {
        let mut text = Vec::new();
        if space_prefix {
            text.extend_from_slice(SPACE.as_bytes());
        }
        for &b in raw {
            if b == b' ' {
                text.extend_from_slice(SPACE.as_bytes());
            } else {
                text.push(b);
            }
        }
        if !text.is_empty() {
            self.merge(vocab, &text, &mut SpmScratch::default(), out);
        }
    }
}

/// Queues the merge of two adjacent symbols if their text is a token.
fn try_pair(
    vocab: &Vocab,
    text: &[u8],
    symbols: &[Symbol],
    heap: &mut BinaryHeap<(u64, u32, u32)>,
    left: u32,
    right: u32,
) {
    let (l, r) = (symbols[left as usize], symbols[right as usize]);
    let joined = &text[l.start as usize..(r.start + r.len) as usize];
    if let Some(id) = vocab.id_of(joined) {
        let key = (score_key(vocab.scores[id as usize]) << 32) | u64::from(!left);
        heap.push((key, right, joined.len() as u32));
    }
}

impl SpmScratch {
    /// Forgets cached pieces (they belong to another vocabulary).
    pub fn clear_cache(&mut self) {
        self.cache = FxHashMap::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::{TokenizerConfig, select_kind};

    fn gemma_vocab() -> Vocab {
        let dir = match std::env::var_os("FERROLM_HOME") {
            Some(home) => std::path::PathBuf::from(home).join("models"),
            None => dirs::cache_dir()
                .expect("no cache directory")
                .join("ferrolm")
                .join("models"),
        };
        let path = dir.join("gemma-3-270m-q4_k_m.gguf");
        assert!(
            path.is_file(),
            "{} is missing: run `cargo xtask fetch-models` first",
            path.display()
        );
        let file = ferrolm_gguf::GgufFile::open(path).expect("open");
        let cfg = TokenizerConfig::from_gguf(&file.gguf().expect("parse")).expect("metadata");
        let (kind, preset) = select_kind(&cfg.model, cfg.pre.as_deref()).expect("kind");
        Vocab::build(&cfg, &cfg.tokens, kind, preset).expect("vocabulary")
    }

    #[test]
    fn cutting_at_spaces_and_caching_give_the_uncut_ids_on_gemma() {
        let vocab = gemma_vocab();
        let spm = SpmModel::new(&vocab);
        let gpl = include_str!("../../../fixtures/golden/texts/gpl-3.txt");
        let mut texts: Vec<String> = gpl.split('\n').map(str::to_owned).collect();
        texts.push(gpl.to_owned());
        texts.extend(
            [
                "  a  b   c ",
                ">  </ x",
                "x>  </y",
                "日本語 の テキスト",
                "😀 👨\u{200D}👩 family",
                "\u{FF} \u{80}",
            ]
            .map(String::from),
        );
        let mut scratch = SpmScratch::default();
        for prefix in [false, true] {
            for text in &texts {
                let (mut cut, mut whole) = (Vec::new(), Vec::new());
                spm.encode(&vocab, text.as_bytes(), prefix, &mut scratch, &mut cut);
                spm.encode_uncut(&vocab, text.as_bytes(), prefix, &mut whole);
                assert_eq!(cut, whole, "{text:?}");
            }
        }
        assert!(spm.joins_space.contains(&'>'), "{:?}", spm.joins_space);
    }
}
