//! Splitting input text at special tokens before the tokenizer proper runs.
//!
//! llama.cpp takes the control, user-defined and unknown tokens longest text
//! first and, for each, cuts every leftmost non-overlapping occurrence out of
//! the text that no longer-or-earlier token has claimed. Control and unknown
//! tokens take part only when special parsing is on; user-defined tokens always
//! do. The same result comes here from one scan: a trie finds every occurrence
//! of every special text, and the occurrences are then accepted in that
//! priority order unless they overlap one already accepted.

use rustc_hash::FxHashMap;

use crate::TokenId;
use crate::vocab::{Vocab, attr};

/// A piece of the input: text for the tokenizer, or a special token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fragment {
    /// A byte range of the input.
    Text(usize, usize),
    /// A special token.
    Token(TokenId),
}

const NO_TOKEN: u32 = u32::MAX;

/// Byte states while occurrences are accepted.
const FREE: u8 = 0;
const TAKEN: u8 = 1;
const STRIPPED: u8 = 2;

/// A byte trie over the texts of the special tokens.
pub(crate) struct SpecialMatcher {
    /// Child of (node, byte), keyed `node << 8 | byte`.
    edges: FxHashMap<u64, u32>,
    /// The priority rank of the token whose text ends at each node.
    terminal: Vec<u32>,
    /// Which bytes start some special text.
    first: [bool; 256],
    /// Special tokens in priority order: longest text first.
    order: Vec<TokenId>,
}

impl SpecialMatcher {
    pub fn new(vocab: &Vocab) -> SpecialMatcher {
        let mut m = SpecialMatcher {
            edges: FxHashMap::default(),
            terminal: vec![NO_TOKEN],
            first: [false; 256],
            order: vocab.special_order.clone(),
        };
        for (rank, &id) in vocab.special_order.iter().enumerate() {
            let text = vocab.text(id).as_bytes();
            m.first[text[0] as usize] = true;
            let mut node = 0u32;
            for &b in text {
                let key = (u64::from(node) << 8) | u64::from(b);
                let fresh = m.terminal.len() as u32;
                node = *m.edges.entry(key).or_insert(fresh);
                if node == fresh {
                    m.terminal.push(NO_TOKEN);
                }
            }
            m.terminal[node as usize] = rank as u32;
        }
        m
    }

    /// Splits `text` into fragments, appending them to `out`.
    pub fn partition(
        &self,
        vocab: &Vocab,
        text: &[u8],
        parse_special: bool,
        out: &mut Vec<Fragment>,
    ) {
        let allowed = |id: TokenId| {
            parse_special || vocab.attrs[id as usize] & (attr::CONTROL | attr::UNKNOWN) == 0
        };
        // Every occurrence as rank << 32 | start, so sorting gives llama.cpp's order.
        let mut found: Vec<u64> = Vec::new();
        for start in 0..text.len() {
            if !self.first[text[start] as usize] {
                continue;
            }
            let mut node = 0u32;
            for &b in &text[start..] {
                match self.edges.get(&((u64::from(node) << 8) | u64::from(b))) {
                    Some(&next) => node = next,
                    None => break,
                }
                let rank = self.terminal[node as usize];
                if rank != NO_TOKEN && allowed(self.order[rank as usize]) {
                    found.push((u64::from(rank) << 32) | start as u64);
                }
            }
        }
        if found.is_empty() {
            if !text.is_empty() {
                out.push(Fragment::Text(0, text.len()));
            }
            return;
        }
        found.sort_unstable();

        let mut state = vec![FREE; text.len()];
        let mut accepted: Vec<(usize, usize, TokenId)> = Vec::new();
        for &key in &found {
            let id = self.order[(key >> 32) as usize];
            let start = (key & 0xFFFF_FFFF) as usize;
            let end = start + vocab.text(id).len();
            if state[start..end].iter().any(|&s| s != FREE) {
                continue;
            }
            state[start..end].fill(TAKEN);
            accepted.push((start, end, id));
            let a = vocab.attrs[id as usize];
            if a & attr::LSTRIP != 0 {
                let mut i = start;
                while i > 0 && state[i - 1] == FREE && is_c_space(text[i - 1]) {
                    i -= 1;
                    state[i] = STRIPPED;
                }
            }
            if a & attr::RSTRIP != 0 {
                let mut i = end;
                while i < text.len() && state[i] == FREE && is_c_space(text[i]) {
                    state[i] = STRIPPED;
                    i += 1;
                }
            }
        }
        accepted.sort_unstable();

        let push_free = |from: usize, to: usize, out: &mut Vec<Fragment>| {
            let mut i = from;
            while i < to {
                if state[i] != FREE {
                    i += 1;
                    continue;
                }
                let s = i;
                while i < to && state[i] == FREE {
                    i += 1;
                }
                out.push(Fragment::Text(s, i));
            }
        };
        let mut pos = 0;
        for &(start, end, id) in &accepted {
            push_free(pos, start, out);
            out.push(Fragment::Token(id));
            pos = end;
        }
        push_free(pos, text.len(), out);
    }
}

/// C's `isspace` in the "C" locale.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r')
}
