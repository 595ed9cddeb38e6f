//! The bookkeeping of a paged cache, independent of where the blocks live.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;

use crate::{KvCacheConfig, KvCacheError};

/// A sequence's handle. Ids are never reused within one ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeqId(u64);

impl SeqId {
    /// The id as a number.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for SeqId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// A copy the storage must make before a sequence writes into a block that it
/// shares with another sequence (copy-on-write): slots `0..n_tokens` of block
/// `src`, in every layer, K and V, all heads, go to the same slots of `dst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockCopy {
    /// The shared block.
    pub src: u32,
    /// The sequence's new private block.
    pub dst: u32,
    /// Leading slots to copy.
    pub n_tokens: usize,
}

/// What [`BlockLedger::append`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// The positions the caller now writes.
    pub positions: Range<usize>,
    /// A copy-on-write the storage must perform first, if the sequence's last
    /// block was shared and partly filled.
    pub copy: Option<BlockCopy>,
}

#[derive(Debug, Clone)]
struct Sequence {
    len: usize,
    // Always exactly ceil(len / block_tokens) entries.
    blocks: Vec<u32>,
}

/// Which blocks are free, which sequence holds which blocks in which order,
/// and how many sequences share each block.
///
/// It knows nothing of the stored values, so a host cache
/// ([`crate::PagedKvCache`]) and a device cache can both be driven by it: the
/// storage only has to perform the [`BlockCopy`]s it hands out.
///
/// Blocks are reference counted. [`BlockLedger::fork`] shares every block of
/// a sequence; a shared block is copied before either sequence writes into
/// it, so forked sequences never see each other's later tokens. Freed blocks
/// go on a stack and are reused first.
#[derive(Debug, Clone)]
pub struct BlockLedger {
    block_tokens: usize,
    max_sequence_tokens: usize,
    refs: Vec<u32>,
    // Stack of free blocks: the most recently freed is reused first.
    free: Vec<u32>,
    sequences: BTreeMap<SeqId, Sequence>,
    next_id: u64,
}

impl BlockLedger {
    /// A ledger for the pool that `config` describes, all blocks free.
    pub fn new(config: &KvCacheConfig) -> Self {
        let n = config.n_blocks();
        Self {
            block_tokens: config.block_tokens(),
            max_sequence_tokens: config.max_sequence_tokens(),
            refs: vec![0; n],
            free: (0..n as u32).rev().collect(),
            sequences: BTreeMap::new(),
            next_id: 0,
        }
    }

    /// Starts an empty sequence.
    pub fn create(&mut self) -> SeqId {
        let id = SeqId(self.next_id);
        self.next_id += 1;
        let reserve = self
            .max_sequence_tokens
            .div_ceil(self.block_tokens)
            .min(self.refs.len());
        self.sequences.insert(
            id,
            Sequence {
                len: 0,
                blocks: Vec::with_capacity(reserve),
            },
        );
        id
    }

    /// Grows `seq` by `n_tokens` positions, taking the blocks they need (and
    /// one more if the last block is shared and partly filled: see
    /// [`Appended::copy`]). Nothing changes on error.
    pub fn append(&mut self, seq: SeqId, n_tokens: usize) -> Result<Appended, KvCacheError> {
        let bt = self.block_tokens;
        let max = self.max_sequence_tokens;
        let Self {
            refs,
            free,
            sequences,
            ..
        } = self;
        let s = sequences
            .get_mut(&seq)
            .ok_or(KvCacheError::UnknownSequence { seq })?;
        let len = s.len;
        let new_len =
            len.checked_add(n_tokens)
                .filter(|&l| l <= max)
                .ok_or(KvCacheError::ContextFull {
                    seq,
                    len,
                    requested: n_tokens,
                    max,
                })?;
        let extra = new_len.div_ceil(bt) - s.blocks.len();
        let partial = len % bt;
        let shared_tail = s
            .blocks
            .last()
            .copied()
            .filter(|&b| n_tokens > 0 && partial != 0 && refs[b as usize] > 1);
        let needed = extra + usize::from(shared_tail.is_some());
        if needed > free.len() {
            return Err(KvCacheError::OutOfBlocks {
                needed,
                free: free.len(),
            });
        }
        let mut take = || {
            let b = free.pop().unwrap_or_default();
            refs[b as usize] = 1;
            b
        };
        let mut copy = None;
        if let (Some(src), Some(last)) = (shared_tail, s.blocks.last_mut()) {
            let dst = take();
            *last = dst;
            copy = Some(BlockCopy {
                src,
                dst,
                n_tokens: partial,
            });
        }
        for _ in 0..extra {
            s.blocks.push(take());
        }
        if let Some(c) = copy {
            refs[c.src as usize] -= 1;
        }
        s.len = new_len;
        Ok(Appended {
            positions: len..new_len,
            copy,
        })
    }

    /// Makes the blocks holding `positions` of `seq` private to it, pushing a
    /// [`BlockCopy`] for each shared one onto `copies` (the storage performs
    /// them before writing), and returns the sequence's block table. Copies
    /// are needed only to overwrite positions filled before a
    /// [`BlockLedger::fork`]; positions handed out by [`BlockLedger::append`]
    /// are already private. Nothing changes on error.
    pub fn make_private(
        &mut self,
        seq: SeqId,
        positions: Range<usize>,
        copies: &mut Vec<BlockCopy>,
    ) -> Result<&[u32], KvCacheError> {
        let bt = self.block_tokens;
        let Self {
            refs,
            free,
            sequences,
            ..
        } = self;
        let s = sequences
            .get_mut(&seq)
            .ok_or(KvCacheError::UnknownSequence { seq })?;
        if positions.start > positions.end || positions.end > s.len {
            return Err(KvCacheError::PositionOutOfRange {
                seq,
                start: positions.start,
                end: positions.end,
                len: s.len,
            });
        }
        if positions.is_empty() {
            return Ok(&s.blocks);
        }
        let range = positions.start / bt..positions.end.div_ceil(bt);
        let shared = s.blocks[range.clone()]
            .iter()
            .filter(|&&b| refs[b as usize] > 1)
            .count();
        if shared > free.len() {
            return Err(KvCacheError::OutOfBlocks {
                needed: shared,
                free: free.len(),
            });
        }
        for i in range {
            let src = s.blocks[i];
            if refs[src as usize] > 1 {
                let dst = free.pop().unwrap_or_default();
                refs[dst as usize] = 1;
                refs[src as usize] -= 1;
                s.blocks[i] = dst;
                // The last block holds only the sequence's remaining tokens.
                let n_tokens = (s.len - i * bt).min(bt);
                copies.push(BlockCopy { src, dst, n_tokens });
            }
        }
        Ok(&s.blocks)
    }

    /// Shortens `seq` to `n_tokens` (rollback); blocks no longer needed are
    /// released. Does nothing if the sequence is not longer than that.
    pub fn truncate(&mut self, seq: SeqId, n_tokens: usize) -> Result<(), KvCacheError> {
        let bt = self.block_tokens;
        let Self {
            refs,
            free,
            sequences,
            ..
        } = self;
        let s = sequences
            .get_mut(&seq)
            .ok_or(KvCacheError::UnknownSequence { seq })?;
        if n_tokens >= s.len {
            return Ok(());
        }
        // Released last to first, so the stack hands them out again in order.
        for b in s.blocks.drain(n_tokens.div_ceil(bt)..).rev() {
            release(refs, free, b);
        }
        s.len = n_tokens;
        Ok(())
    }

    /// A new sequence with the same tokens as `seq`, sharing its blocks.
    pub fn fork(&mut self, seq: SeqId) -> Result<SeqId, KvCacheError> {
        let s = self
            .sequences
            .get(&seq)
            .ok_or(KvCacheError::UnknownSequence { seq })?;
        let mut blocks = Vec::with_capacity(s.blocks.capacity());
        blocks.extend_from_slice(&s.blocks);
        let len = s.len;
        for &b in &blocks {
            self.refs[b as usize] += 1;
        }
        let id = SeqId(self.next_id);
        self.next_id += 1;
        self.sequences.insert(id, Sequence { len, blocks });
        Ok(id)
    }

    /// Ends `seq`, releasing its blocks.
    pub fn free(&mut self, seq: SeqId) -> Result<(), KvCacheError> {
        let s = self
            .sequences
            .remove(&seq)
            .ok_or(KvCacheError::UnknownSequence { seq })?;
        for &b in s.blocks.iter().rev() {
            release(&mut self.refs, &mut self.free, b);
        }
        Ok(())
    }

    /// Ends every sequence; all blocks become free.
    pub fn clear(&mut self) {
        self.sequences.clear();
        self.refs.iter_mut().for_each(|r| *r = 0);
        self.free.clear();
        self.free.extend((0..self.refs.len() as u32).rev());
    }

    /// Whether `seq` exists.
    pub fn contains(&self, seq: SeqId) -> bool {
        self.sequences.contains_key(&seq)
    }

    /// Tokens held by `seq`.
    pub fn len(&self, seq: SeqId) -> Result<usize, KvCacheError> {
        Ok(self.sequence(seq)?.len)
    }

    /// The blocks of `seq` in position order: position `p` is in
    /// `table[p / block_tokens]`, slot `p % block_tokens`.
    pub fn block_table(&self, seq: SeqId) -> Result<&[u32], KvCacheError> {
        Ok(&self.sequence(seq)?.blocks)
    }

    /// Every live sequence and its length, in creation order.
    pub fn sequences(&self) -> impl Iterator<Item = (SeqId, usize)> + '_ {
        self.sequences.iter().map(|(&id, s)| (id, s.len))
    }

    /// Number of live sequences.
    pub fn n_sequences(&self) -> usize {
        self.sequences.len()
    }

    /// How many sequences hold `block` (0 when free or out of range).
    pub fn ref_count(&self, block: u32) -> u32 {
        self.refs.get(block as usize).copied().unwrap_or(0)
    }

    /// Tokens per block.
    pub fn block_tokens(&self) -> usize {
        self.block_tokens
    }

    /// Blocks in the pool.
    pub fn n_blocks(&self) -> usize {
        self.refs.len()
    }

    /// Blocks not held by any sequence.
    pub fn free_blocks(&self) -> usize {
        self.free.len()
    }

    /// Blocks held by at least one sequence.
    pub fn used_blocks(&self) -> usize {
        self.refs.len() - self.free.len()
    }

    /// Blocks held by more than one sequence.
    pub fn shared_blocks(&self) -> usize {
        self.refs.iter().filter(|&&r| r > 1).count()
    }

    /// Filled slots, counting a shared slot once: for each block, the most
    /// tokens any of its sequences keeps in it.
    pub fn unique_tokens(&self) -> usize {
        let bt = self.block_tokens;
        let mut fill = vec![0usize; self.refs.len()];
        for s in self.sequences.values() {
            for (i, &b) in s.blocks.iter().enumerate() {
                let used = (s.len - i * bt).min(bt);
                fill[b as usize] = fill[b as usize].max(used);
            }
        }
        fill.iter().sum()
    }

    fn sequence(&self, seq: SeqId) -> Result<&Sequence, KvCacheError> {
        self.sequences
            .get(&seq)
            .ok_or(KvCacheError::UnknownSequence { seq })
    }
}

fn release(refs: &mut [u32], free: &mut Vec<u32>, block: u32) {
    let r = &mut refs[block as usize];
    *r -= 1;
    if *r == 0 {
        free.push(block);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ledger(block_tokens: usize, n_blocks: usize) -> BlockLedger {
        BlockLedger::new(&KvCacheConfig::new(1, 1, 1, block_tokens, n_blocks).unwrap())
    }

    #[test]
    fn append_takes_blocks_as_positions_cross_block_boundaries() {
        let mut l = ledger(4, 8);
        let s = l.create();
        assert_eq!(l.append(s, 3).unwrap().positions, 0..3);
        assert_eq!(l.block_table(s).unwrap(), [0]);
        assert_eq!(l.append(s, 6).unwrap().positions, 3..9);
        assert_eq!(l.block_table(s).unwrap(), [0, 1, 2]);
        assert_eq!(l.used_blocks(), 3);
        assert_eq!(l.unique_tokens(), 9);
    }

    #[test]
    fn fork_shares_and_the_first_writer_of_a_partial_block_copies_it() {
        let mut l = ledger(4, 8);
        let a = l.create();
        l.append(a, 6).unwrap();
        let b = l.fork(a).unwrap();
        assert_eq!(l.block_table(b).unwrap(), [0, 1]);
        assert_eq!(l.shared_blocks(), 2);
        let appended = l.append(b, 1).unwrap();
        assert_eq!(
            appended.copy,
            Some(BlockCopy {
                src: 1,
                dst: 2,
                n_tokens: 2
            })
        );
        assert_eq!(l.block_table(b).unwrap(), [0, 2]);
        assert_eq!(l.block_table(a).unwrap(), [0, 1]);
        // a's last block is now private again: no copy.
        assert_eq!(l.append(a, 1).unwrap().copy, None);
        assert_eq!(l.unique_tokens(), 4 + 3 + 3);
    }

    #[test]
    fn full_shared_blocks_are_not_copied() {
        let mut l = ledger(4, 8);
        let a = l.create();
        l.append(a, 8).unwrap();
        let b = l.fork(a).unwrap();
        let appended = l.append(b, 1).unwrap();
        assert_eq!(appended.copy, None);
        assert_eq!(l.block_table(b).unwrap(), [0, 1, 2]);
    }

    #[test]
    fn truncate_and_free_return_blocks_for_reuse() {
        let mut l = ledger(2, 4);
        let a = l.create();
        l.append(a, 8).unwrap();
        assert!(matches!(
            l.append(a, 1),
            Err(KvCacheError::ContextFull { .. })
        ));
        let b = l.create();
        assert_eq!(
            l.append(b, 1),
            Err(KvCacheError::OutOfBlocks { needed: 1, free: 0 })
        );
        l.truncate(a, 3).unwrap();
        assert_eq!(l.block_table(a).unwrap(), [0, 1]);
        assert_eq!(l.free_blocks(), 2);
        l.append(b, 3).unwrap();
        // Freed blocks come back first, in their old order.
        assert_eq!(l.block_table(b).unwrap(), [2, 3]);
        l.free(a).unwrap();
        assert_eq!(l.free_blocks(), 2);
        assert_eq!(l.len(a), Err(KvCacheError::UnknownSequence { seq: a }));
        l.clear();
        assert_eq!(l.free_blocks(), 4);
        assert_eq!(l.n_sequences(), 0);
    }

    #[test]
    fn failed_append_changes_nothing() {
        let config = KvCacheConfig::new(1, 1, 1, 4, 2)
            .unwrap()
            .with_max_sequence_tokens(100);
        let mut l = BlockLedger::new(&config);
        let a = l.create();
        l.append(a, 6).unwrap();
        let b = l.fork(a).unwrap();
        // b needs a copy of block 1 and one more block: only 0 free.
        assert_eq!(
            l.append(b, 3),
            Err(KvCacheError::OutOfBlocks { needed: 2, free: 0 })
        );
        assert_eq!(l.len(b).unwrap(), 6);
        assert_eq!(l.block_table(b).unwrap(), [0, 1]);
        assert_eq!(l.ref_count(1), 2);
    }

    #[test]
    fn make_private_copies_only_shared_blocks_in_range() {
        let mut l = ledger(4, 8);
        let a = l.create();
        l.append(a, 10).unwrap();
        let b = l.fork(a).unwrap();
        let mut copies = Vec::new();
        assert_eq!(l.make_private(b, 5..10, &mut copies).unwrap(), [0, 3, 4]);
        assert_eq!(
            copies,
            [
                BlockCopy {
                    src: 1,
                    dst: 3,
                    n_tokens: 4
                },
                BlockCopy {
                    src: 2,
                    dst: 4,
                    n_tokens: 2
                }
            ]
        );
        assert_eq!(l.block_table(b).unwrap(), [0, 3, 4]);
        assert!(matches!(
            l.make_private(b, 5..11, &mut copies),
            Err(KvCacheError::PositionOutOfRange { .. })
        ));
    }
}
