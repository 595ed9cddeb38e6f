//! Byte-level BPE (`tokenizer.ggml.model = "gpt2"`).
//!
//! Text is split into words by the pre-tokenizer; each byte of a word starts
//! as the symbol of its GPT-2 character, and adjacent symbols are merged,
//! lowest merge rank first (leftmost first among equal ranks), until no ranked
//! pair is left. Symbols are interned strings: the vocabulary's tokens keep
//! their ids, and the few strings that merges name but the vocabulary lacks get
//! ids after them, so the merge loop compares integers, never strings.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rustc_hash::FxHashMap;

use crate::TokenId;
use crate::pretokenizer::{PreTokenizer, Units};
use crate::unicode::{canonical_utf8, gpt2_byte_char, gpt2_char_byte};
use crate::vocab::Vocab;

/// A symbol: a token id, or an interned string past the vocabulary.
type Sym = u32;

pub(crate) struct BpeModel {
    pre: PreTokenizer,
    ignore_merges: bool,
    n_vocab: u32,
    /// Texts of the symbols past the vocabulary.
    extra_texts: Vec<Box<[u8]>>,
    /// The symbol of each byte's GPT-2 character.
    byte_sym: [Sym; 256],
    /// (left << 32 | right) -> (rank, merged symbol).
    merges: FxHashMap<u64, (u32, Sym)>,
    /// Token ids by the raw bytes they stand for, for `ignore_merges`.
    raw_to_id: FxHashMap<Box<[u8]>, TokenId>,
    /// Tokens whose text is a single byte, for the last-resort fallback.
    single_byte_token: [Option<TokenId>; 256],
}

/// Per-call working memory.
#[derive(Default)]
pub(crate) struct BpeScratch {
    units: Units,
    words: Vec<(usize, usize)>,
    cache: FxHashMap<Box<[u8]>, Box<[TokenId]>>,
    syms: Vec<Sym>,
    next: Vec<u32>,
    prev: Vec<u32>,
    ranks: Vec<(u32, Sym)>,
    heap: BinaryHeap<Reverse<(u64, Sym, Sym)>>,
}

const END: u32 = u32::MAX;
/// Words up to this many bytes merge on a plain vector rather than a heap.
const SHORT_WORD: usize = 32;
const NO_MERGE: (u32, Sym) = (u32::MAX, 0);

struct Interner<'v> {
    vocab: &'v Vocab,
    extra: FxHashMap<Box<[u8]>, Sym>,
    extra_texts: Vec<Box<[u8]>>,
}

impl Interner<'_> {
    fn intern(&mut self, text: &[u8]) -> Sym {
        if let Some(id) = self.vocab.id_of(text) {
            return id;
        }
        if let Some(&s) = self.extra.get(text) {
            return s;
        }
        let s = (self.vocab.n_tokens() + self.extra_texts.len()) as Sym;
        self.extra.insert(text.into(), s);
        self.extra_texts.push(text.into());
        s
    }
}

impl BpeScratch {
    /// Forgets cached words (they belong to another vocabulary).
    pub fn clear_cache(&mut self) {
        self.cache = FxHashMap::default();
    }
}

impl BpeModel {
    pub fn new<M: AsRef<str>>(
        vocab: &Vocab,
        merges: &[M],
        pre: PreTokenizer,
        ignore_merges: bool,
    ) -> BpeModel {
        let mut interner = Interner {
            vocab,
            extra: FxHashMap::default(),
            extra_texts: Vec::new(),
        };
        let mut byte_sym = [0; 256];
        for (b, slot) in byte_sym.iter_mut().enumerate() {
            let mut buf = [0u8; 4];
            *slot = interner.intern(gpt2_byte_char(b as u8).encode_utf8(&mut buf).as_bytes());
        }
        let mut merge_map =
            FxHashMap::with_capacity_and_hasher(merges.len(), rustc_hash::FxBuildHasher);
        for (rank, line) in merges.iter().enumerate() {
            // The separator is the first space after the first character, so a
            // merge may start with a space; a line without one names ("", "").
            let bytes = line.as_ref().as_bytes();
            let (left, right): (&[u8], &[u8]) = match bytes.iter().skip(1).position(|&b| b == b' ')
            {
                Some(p) => (&bytes[..=p], &bytes[p + 2..]),
                None => (b"", b""),
            };
            let l = interner.intern(left);
            let r = interner.intern(right);
            let mut joined = Vec::with_capacity(left.len() + right.len());
            joined.extend_from_slice(left);
            joined.extend_from_slice(right);
            let m = interner.intern(&joined);
            merge_map
                .entry((u64::from(l) << 32) | u64::from(r))
                .or_insert((rank as u32, m));
        }
        let raw_to_id = if ignore_merges {
            vocab
                .texts
                .iter()
                .enumerate()
                .filter_map(|(id, t)| {
                    let raw: Option<Vec<u8>> = t.chars().map(gpt2_char_byte).collect();
                    raw.map(|r| (r.into_boxed_slice(), id as TokenId))
                })
                .collect()
        } else {
            FxHashMap::default()
        };
        let mut single_byte_token = [None; 256];
        for (b, slot) in single_byte_token.iter_mut().enumerate() {
            *slot = vocab.id_of(&[b as u8]);
        }
        BpeModel {
            pre,
            ignore_merges,
            n_vocab: vocab.n_tokens() as u32,
            extra_texts: interner.extra_texts,
            byte_sym,
            merges: merge_map,
            raw_to_id,
            single_byte_token,
        }
    }

    pub fn pre_tokenizer(&self) -> PreTokenizer {
        self.pre
    }

    /// Tokenizes one fragment of raw text.
    pub fn encode(&self, text: &[u8], scratch: &mut BpeScratch, out: &mut Vec<TokenId>) {
        let text = canonical_utf8(text);
        let text: &[u8] = &text;
        scratch.words.clear();
        let words = &mut scratch.words;
        scratch
            .units
            .split(self.pre, text, |a, b| words.push((a, b)));
        let words = std::mem::take(&mut scratch.words);
        for &(a, b) in &words {
            let word = &text[a..b];
            if let Some(ids) = scratch.cache.get(word) {
                out.extend_from_slice(ids);
                continue;
            }
            let start = out.len();
            self.encode_word(word, scratch, out);
            if scratch.cache.len() < 1 << 16 {
                scratch.cache.insert(word.into(), out[start..].into());
            }
        }
        scratch.words = words;
    }

    fn encode_word(&self, word: &[u8], s: &mut BpeScratch, out: &mut Vec<TokenId>) {
        if self.ignore_merges
            && let Some(&id) = self.raw_to_id.get(word)
        {
            out.push(id);
            return;
        }
        if word.len() <= SHORT_WORD {
            self.merge_short(word, s, out);
        } else {
            self.merge_heap(word, s, out);
        }
    }

    /// Merges with a priority queue of (rank, position) over a linked list of
    /// symbols: O(n log n) for words of any length.
    fn merge_heap(&self, word: &[u8], s: &mut BpeScratch, out: &mut Vec<TokenId>) {
        let n = word.len();
        s.syms.clear();
        s.syms
            .extend(word.iter().map(|&b| self.byte_sym[b as usize]));
        s.next.clear();
        s.next
            .extend((1..=n as u32).map(|i| if i as usize == n { END } else { i }));
        s.prev.clear();
        s.prev
            .extend((0..n as u32).map(|i| if i == 0 { END } else { i - 1 }));
        s.heap.clear();
        for i in 1..n {
            self.push_pair(s, i as u32 - 1, i as u32);
        }
        while let Some(Reverse((key, ls, rs))) = s.heap.pop() {
            let left = key as u32;
            let right = s.next[left as usize];
            // Stale: one side was merged away or into something else since the push.
            if right == END || s.syms[left as usize] != ls || s.syms[right as usize] != rs {
                continue;
            }
            let (rank, merged) = self.pair(ls, rs);
            if rank == NO_MERGE.0 {
                continue;
            }
            s.syms[left as usize] = merged;
            s.syms[right as usize] = END;
            let after = s.next[right as usize];
            s.next[left as usize] = after;
            if after != END {
                s.prev[after as usize] = left;
            }
            let before = s.prev[left as usize];
            if before != END {
                self.push_pair(s, before, left);
            }
            if after != END {
                self.push_pair(s, left, after);
            }
        }
        let mut i = if n == 0 { END } else { 0 };
        while i != END {
            self.emit(s.syms[i as usize], out);
            i = s.next[i as usize];
        }
    }

    /// The same merges for a short word, on a plain vector: each step merges
    /// the leftmost pair of lowest rank, which is the order the heap gives.
    fn merge_short(&self, word: &[u8], s: &mut BpeScratch, out: &mut Vec<TokenId>) {
        let syms = &mut s.syms;
        syms.clear();
        syms.extend(word.iter().map(|&b| self.byte_sym[b as usize]));
        // ranks[i]: (rank, merged) of the pair (syms[i], syms[i + 1]).
        let ranks = &mut s.ranks;
        ranks.clear();
        ranks.extend(syms.windows(2).map(|p| self.pair(p[0], p[1])));
        loop {
            let mut best = NO_MERGE;
            let mut at = 0;
            for (i, &(rank, _)) in ranks.iter().enumerate() {
                if rank < best.0 {
                    best = ranks[i];
                    at = i;
                }
            }
            if best.0 == NO_MERGE.0 {
                break;
            }
            syms[at] = best.1;
            syms.remove(at + 1);
            ranks.remove(at);
            if at > 0 {
                ranks[at - 1] = self.pair(syms[at - 1], syms[at]);
            }
            if at + 1 < syms.len() {
                ranks[at] = self.pair(syms[at], syms[at + 1]);
            }
        }
        for &sym in syms.iter() {
            self.emit(sym, out);
        }
    }

    #[inline]
    fn pair(&self, left: Sym, right: Sym) -> (u32, Sym) {
        self.merges
            .get(&((u64::from(left) << 32) | u64::from(right)))
            .copied()
            .unwrap_or(NO_MERGE)
    }

    fn emit(&self, sym: Sym, out: &mut Vec<TokenId>) {
        if sym < self.n_vocab {
            out.push(sym);
        } else {
            // A merge result the vocabulary lacks: llama.cpp looks up each
            // byte of its text as a one-byte token and drops the rest.
            let text = &self.extra_texts[(sym - self.n_vocab) as usize];
            out.extend(
                text.iter()
                    .filter_map(|&b| self.single_byte_token[b as usize]),
            );
        }
    }

    fn push_pair(&self, s: &mut BpeScratch, left: u32, right: u32) {
        let (ls, rs) = (s.syms[left as usize], s.syms[right as usize]);
        if let Some(&(rank, _)) = self.merges.get(&((u64::from(ls) << 32) | u64::from(rs))) {
            s.heap
                .push(Reverse(((u64::from(rank) << 32) | u64::from(left), ls, rs)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::{TokenizerConfig, Vocab, select_kind};

    #[test]
    fn short_word_merging_matches_the_heap_on_smollm2() {
        let dir = match std::env::var_os("FERROLM_HOME") {
            Some(home) => std::path::PathBuf::from(home).join("models"),
            None => dirs::cache_dir()
                .expect("no cache directory")
                .join("ferrolm")
                .join("models"),
        };
        let path = dir.join("SmolLM2-135M-Instruct.Q4_1.gguf");
        assert!(
            path.is_file(),
            "{} is missing: run `cargo xtask fetch-models` first",
            path.display()
        );
        let file = ferrolm_gguf::GgufFile::open(path).expect("open");
        let cfg = TokenizerConfig::from_gguf(&file.gguf().expect("parse")).expect("metadata");
        let (kind, preset) = select_kind(&cfg.model, cfg.pre.as_deref()).expect("kind");
        let vocab = Vocab::build(&cfg, &cfg.tokens, kind, preset).expect("vocabulary");
        let merges = cfg.merges.as_deref().expect("merges");
        let bpe = BpeModel::new(&vocab, merges, PreTokenizer::DigitsThenGpt2, false);
        let gpl = include_str!("../../../fixtures/golden/texts/gpl-3.txt");
        let mut s = BpeScratch::default();
        let mut words: Vec<&[u8]> = gpl
            .split_inclusive([' ', '\n', ','])
            .map(str::as_bytes)
            .collect();
        words.extend(
            [
                "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                " unbelievably",
                "日本語のテキスト",
                "😀👨\u{200D}👩",
                "",
            ]
            .map(str::as_bytes),
        );
        for word in words.into_iter().filter(|w| w.len() <= SHORT_WORD) {
            let (mut short, mut heap) = (Vec::new(), Vec::new());
            bpe.merge_short(word, &mut s, &mut short);
            bpe.merge_heap(word, &mut s, &mut heap);
            assert_eq!(short, heap, "{:?}", String::from_utf8_lossy(word));
        }
    }
}
