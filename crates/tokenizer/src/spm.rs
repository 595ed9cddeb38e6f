//! SentencePiece-style BPE (`tokenizer.ggml.model = "llama"`).
//!
//! Spaces become `▁` (and a leading space is added when the vocabulary asks
//! for it); the text starts as one symbol per UTF-8 character; the adjacent
//! pair whose concatenation is the highest-scoring token is merged (leftmost
//! first among equal scores) until no pair forms a token. A symbol that is no
//! token is written as its bytes' `<0xNN>` tokens.

use std::collections::BinaryHeap;

use crate::TokenId;
use crate::unicode::utf8_len;
use crate::vocab::Vocab;

pub(crate) struct SpmModel {
    /// The `<0xNN>` token of each byte (or the one-byte token, or UNK).
    byte_token: Box<[Option<TokenId>; 256]>,
}

#[derive(Clone, Copy)]
struct Symbol {
    start: u32,
    len: u32,
    prev: u32,
    next: u32,
}

/// Per-call working memory.
#[derive(Default)]
pub(crate) struct SpmScratch {
    text: Vec<u8>,
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
        SpmModel { byte_token }
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
        s.text.clear();
        if space_prefix {
            s.text.extend_from_slice("▁".as_bytes());
        }
        for &b in raw {
            if b == b' ' {
                s.text.extend_from_slice("▁".as_bytes());
            } else {
                s.text.push(b);
            }
        }
        let text = &s.text;
        let n = text.len();
        if n == 0 {
            return;
        }
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
