//! Token texts in one buffer, and a hash table from text to id over it.
//!
//! A 262,144-token vocabulary then costs two allocations instead of half a
//! million, which is most of what loading one takes.

use std::fmt::Write as _;
use std::hash::BuildHasher;

use rustc_hash::FxBuildHasher;

use crate::TokenId;

const EMPTY: u32 = u32::MAX;

/// Texts by id, and ids by text (open addressing with linear probing).
pub(crate) struct TextTable {
    bytes: String,
    /// Start of each text in `bytes`, plus the end of the last.
    offsets: Vec<u32>,
    slots: Vec<u32>,
    mask: usize,
}

impl TextTable {
    /// The table of `texts`; `Err((first, second))` names two ids with the same text.
    pub fn new<S: AsRef<str>>(
        texts: &[S],
        rename_empty: bool,
    ) -> Result<TextTable, (TokenId, TokenId)> {
        let total: usize = texts.iter().map(|t| t.as_ref().len().max(16)).sum();
        let mut bytes = String::with_capacity(total);
        let mut offsets = Vec::with_capacity(texts.len() + 1);
        offsets.push(0);
        for (i, t) in texts.iter().enumerate() {
            let t = t.as_ref();
            if t.is_empty() && rename_empty {
                // llama.cpp gives empty tokens a placeholder text so they stay unique.
                let _ = write!(bytes, "[EMPTY_{i}]");
            } else {
                bytes.push_str(t);
            }
            offsets.push(bytes.len() as u32);
        }
        let n_slots = (texts.len() * 2).next_power_of_two().max(2);
        let mut table = TextTable {
            bytes,
            offsets,
            slots: vec![EMPTY; n_slots],
            mask: n_slots - 1,
        };
        for id in 0..texts.len() as TokenId {
            let text = table.text(id).as_bytes();
            let mut slot = table.home(text);
            loop {
                let here = table.slots[slot];
                if here == EMPTY {
                    table.slots[slot] = id;
                    break;
                }
                if table.text(here).as_bytes() == text {
                    return Err((here, id));
                }
                slot = (slot + 1) & table.mask;
            }
        }
        Ok(table)
    }

    fn home(&self, text: &[u8]) -> usize {
        (FxBuildHasher.hash_one(text) as usize) & self.mask
    }

    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    /// The text of an id (which must be in range).
    pub fn text(&self, id: TokenId) -> &str {
        let (a, b) = (
            self.offsets[id as usize] as usize,
            self.offsets[id as usize + 1] as usize,
        );
        &self.bytes[a..b]
    }

    /// The id of a text.
    #[inline]
    pub fn id(&self, text: &[u8]) -> Option<TokenId> {
        let mut slot = self.home(text);
        loop {
            let here = self.slots[slot];
            if here == EMPTY {
                return None;
            }
            if self.text(here).as_bytes() == text {
                return Some(here);
            }
            slot = (slot + 1) & self.mask;
        }
    }

    /// All texts in id order.
    pub fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        (0..self.len() as TokenId).map(|id| self.text(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_text_and_nothing_else() {
        let texts: Vec<String> = (0..1000)
            .map(|i| format!("t{i}"))
            .chain([String::new(), "é".into()])
            .collect();
        let table = TextTable::new(&texts, true).expect("unique");
        for (i, t) in texts.iter().enumerate() {
            if !t.is_empty() {
                assert_eq!(table.id(t.as_bytes()), Some(i as TokenId));
            }
        }
        assert_eq!(table.text(1000), "[EMPTY_1000]");
        assert_eq!(table.id(b"t1000"), None);
        assert_eq!(table.id(b""), None);
        assert_eq!(TextTable::new(&["a", "b", "a"], true).err(), Some((0, 2)));
    }
}
