//! Learning a byte-level BPE vocabulary from a corpus.
//!
//! The corpus is split into words by a pre-tokenizer and counted; every word
//! starts as its bytes; the most frequent adjacent pair (weighted by word
//! counts) becomes a new token, again and again. Pair counts are kept up to
//! date incrementally: a merge only revisits the words that contain the pair.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rustc_hash::{FxHashMap, FxHashSet};

use crate::pretokenizer::{PreTokenizer, Units};
use crate::unicode::{canonical_utf8, gpt2_byte_char};
use crate::vocab::{SpecialTokenIds, TokenType, TokenizerConfig};
use crate::{TokenId, TokenizerError};

/// How far [`BpeTrainer::train_with_progress`] has got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrainProgress {
    /// The words of one more document were counted.
    Counted {
        /// The document's length in bytes.
        bytes: usize,
    },
    /// One more merge was learned.
    Merged {
        /// Merges learned so far (at most [`BpeTrainer::n_merges`]).
        merges: usize,
    },
}

/// Settings for BPE training.
#[derive(Clone, Debug)]
pub struct BpeTrainer {
    /// How many merges to learn (the vocabulary gets 256 byte tokens, the
    /// special tokens, and one token per merge).
    pub n_merges: usize,
    /// Stop early when the most frequent pair occurs fewer times than this.
    pub min_frequency: u64,
    /// How the corpus is split into words (the trained vocabulary uses it too).
    pub pre: PreTokenizer,
    /// Control tokens placed first in the vocabulary; the first is BOS and EOS.
    pub special_tokens: Vec<String>,
}

impl BpeTrainer {
    /// `n_merges` merges with the GPT-2 pre-tokenizer, pairs seen at least
    /// twice, and `<|endoftext|>` as the only special token.
    pub fn new(n_merges: usize) -> BpeTrainer {
        BpeTrainer {
            n_merges,
            min_frequency: 2,
            pre: PreTokenizer::Gpt2,
            special_tokens: vec!["<|endoftext|>".to_owned()],
        }
    }

    /// Learns merges from the documents of a corpus and returns the
    /// vocabulary as metadata (`gpt2` model), ready for
    /// [`crate::Tokenizer::from_config`] or for writing into a GGUF file
    /// ([`TokenizerConfig::add_to_gguf`]).
    pub fn train<'a>(
        &self,
        corpus: impl IntoIterator<Item = &'a str>,
    ) -> Result<TokenizerConfig, TokenizerError> {
        self.train_with_progress(corpus, |_| {})
    }

    /// [`BpeTrainer::train`], telling `progress` about each document counted
    /// and each merge learned.
    pub fn train_with_progress<'a>(
        &self,
        corpus: impl IntoIterator<Item = &'a str>,
        mut progress: impl FnMut(TrainProgress),
    ) -> Result<TokenizerConfig, TokenizerError> {
        let pre_name = self.pre.name();
        let mut units = Units::default();
        let mut word_counts: FxHashMap<Vec<u8>, u64> = FxHashMap::default();
        for doc in corpus {
            let text = canonical_utf8(doc.as_bytes());
            units.split(self.pre, &text, |a, b| {
                *word_counts.entry(text[a..b].to_vec()).or_insert(0) += 1;
            });
            progress(TrainProgress::Counted { bytes: doc.len() });
        }
        let mut entries: Vec<(Vec<u8>, u64)> = word_counts.into_iter().collect();
        entries.sort_unstable();
        let counts: Vec<u64> = entries.iter().map(|e| e.1).collect();
        let mut words: Vec<Vec<u32>> = entries
            .iter()
            .map(|e| e.0.iter().map(|&b| u32::from(b)).collect())
            .collect();

        let mut sym_bytes: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        let mut pair_count: FxHashMap<(u32, u32), u64> = FxHashMap::default();
        let mut pair_words: FxHashMap<(u32, u32), Vec<u32>> = FxHashMap::default();
        for (w, word) in words.iter().enumerate() {
            for p in word.windows(2) {
                *pair_count.entry((p[0], p[1])).or_insert(0) += counts[w];
                pair_words.entry((p[0], p[1])).or_default().push(w as u32);
            }
        }
        // Most frequent first; among equals the smallest pair, so training is deterministic.
        let mut heap: BinaryHeap<(u64, Reverse<(u32, u32)>)> =
            pair_count.iter().map(|(&p, &c)| (c, Reverse(p))).collect();
        // A corpus runs out of pairs long before a huge n_merges: reserve modestly.
        let mut merges: Vec<(u32, u32)> = Vec::with_capacity(self.n_merges.min(1 << 16));
        let mut touched: FxHashSet<(u32, u32)> = FxHashSet::default();

        while merges.len() < self.n_merges {
            let Some((count, Reverse(pair))) = heap.pop() else {
                break;
            };
            if pair_count.get(&pair).copied().unwrap_or(0) != count {
                continue;
            }
            if count < self.min_frequency.max(1) {
                break;
            }
            let new = sym_bytes.len() as u32;
            let mut joined = sym_bytes[pair.0 as usize].clone();
            joined.extend_from_slice(&sym_bytes[pair.1 as usize]);
            sym_bytes.push(joined);
            merges.push(pair);
            progress(TrainProgress::Merged {
                merges: merges.len(),
            });

            let mut affected = pair_words.remove(&pair).unwrap_or_default();
            affected.sort_unstable();
            affected.dedup();
            touched.clear();
            for &w in &affected {
                let word = &mut words[w as usize];
                let freq = counts[w as usize];
                if !word.windows(2).any(|p| (p[0], p[1]) == pair) {
                    continue;
                }
                for p in word.windows(2) {
                    let key = (p[0], p[1]);
                    if let Some(c) = pair_count.get_mut(&key) {
                        *c -= freq;
                    }
                    touched.insert(key);
                }
                let mut merged = Vec::with_capacity(word.len());
                let mut i = 0;
                while i < word.len() {
                    if i + 1 < word.len() && (word[i], word[i + 1]) == pair {
                        merged.push(new);
                        i += 2;
                    } else {
                        merged.push(word[i]);
                        i += 1;
                    }
                }
                *word = merged;
                for p in word.windows(2) {
                    let key = (p[0], p[1]);
                    *pair_count.entry(key).or_insert(0) += freq;
                    pair_words.entry(key).or_default().push(w);
                    touched.insert(key);
                }
            }
            pair_count.remove(&pair);
            for key in &touched {
                match pair_count.get(key) {
                    Some(&c) if c > 0 => heap.push((c, Reverse(*key))),
                    Some(_) => {
                        pair_count.remove(key);
                    }
                    None => {}
                }
            }
        }

        if self.special_tokens.iter().any(String::is_empty) {
            return Err(TokenizerError::Training {
                reason: "a special token is empty".to_owned(),
            });
        }
        let encode = |bytes: &[u8]| bytes.iter().map(|&b| gpt2_byte_char(b)).collect::<String>();
        let n_special = self.special_tokens.len();
        let mut tokens: Vec<String> = self.special_tokens.clone();
        let mut types: Vec<i32> = vec![TokenType::Control.to_gguf(); n_special];
        let mut seen: FxHashSet<String> = tokens.iter().cloned().collect();
        for sym in &sym_bytes {
            let text = encode(sym);
            if !seen.insert(text.clone()) {
                return Err(TokenizerError::Training {
                    reason: format!("special token {text:?} collides with a learned token"),
                });
            }
            tokens.push(text);
            types.push(TokenType::Normal.to_gguf());
        }
        let merge_lines = merges
            .iter()
            .map(|&(a, b)| {
                format!(
                    "{} {}",
                    encode(&sym_bytes[a as usize]),
                    encode(&sym_bytes[b as usize])
                )
            })
            .collect();
        let first_special = (n_special > 0).then_some(0 as TokenId);
        Ok(TokenizerConfig {
            model: "gpt2".to_owned(),
            pre: Some(pre_name.to_owned()),
            tokens,
            scores: None,
            token_types: Some(types),
            merges: Some(merge_lines),
            special: SpecialTokenIds {
                bos: first_special,
                eos: first_special,
                ..SpecialTokenIds::default()
            },
            add_bos: Some(false),
            add_eos: Some(false),
            ..TokenizerConfig::default()
        })
    }
}
