//! Sequence slots: a fixed number of sequences, numbered `0..n_slots`, each continuing where it
//! ends, over any KV store. The bookkeeping every backend needs between a batch of tokens and
//! its storage: slot numbers, position checks, a full context, and undoing a batch that failed.

use thiserror::Error;

use crate::{BlockCopy, BlockLedger, KvCacheError, PagedKvCache, SeqId};

/// What [`Slots`] needs of a KV store: a ledger of sequences whose appends carry out their
/// copy-on-writes.
pub trait KvStore {
    /// A new empty sequence.
    fn create(&mut self) -> SeqId;
    /// Positions held by `seq`.
    fn len(&self, seq: SeqId) -> Result<usize, KvCacheError>;
    /// Reserves `n_tokens` positions at the end of `seq`, after any copy-on-write its last
    /// block needs.
    fn append(&mut self, seq: SeqId, n_tokens: usize) -> Result<(), KvCacheError>;
    /// Shortens `seq` to `n_tokens` (no-op if it is not longer).
    fn truncate(&mut self, seq: SeqId, n_tokens: usize) -> Result<(), KvCacheError>;
    /// A new sequence sharing every block of `seq` (copied when either writes into a shared
    /// block).
    fn fork(&mut self, seq: SeqId) -> Result<SeqId, KvCacheError>;
    /// Drops `seq`, freeing the blocks no other sequence shares.
    fn free(&mut self, seq: SeqId) -> Result<(), KvCacheError>;
}

impl<T: crate::KvElement> KvStore for PagedKvCache<T> {
    fn create(&mut self) -> SeqId {
        self.create_sequence()
    }
    fn len(&self, seq: SeqId) -> Result<usize, KvCacheError> {
        PagedKvCache::len(self, seq)
    }
    fn append(&mut self, seq: SeqId, n_tokens: usize) -> Result<(), KvCacheError> {
        PagedKvCache::append(self, seq, n_tokens).map(|_| ())
    }
    fn truncate(&mut self, seq: SeqId, n_tokens: usize) -> Result<(), KvCacheError> {
        PagedKvCache::truncate(self, seq, n_tokens)
    }
    fn fork(&mut self, seq: SeqId) -> Result<SeqId, KvCacheError> {
        PagedKvCache::fork(self, seq)
    }
    fn free(&mut self, seq: SeqId) -> Result<(), KvCacheError> {
        PagedKvCache::free(self, seq)
    }
}

/// A [`BlockLedger`] whose block copies are left for the caller: a store whose memory the
/// ledger cannot reach (a GPU's). Each append's copy-on-write is queued in
/// [`PendingCopies::copies`], to be carried out before the appended positions are written —
/// also after a failed batch, whose undone sequences may keep a block that was copied.
#[derive(Debug)]
pub struct PendingCopies {
    /// The ledger.
    pub ledger: BlockLedger,
    /// Copies not yet carried out, oldest first.
    pub copies: Vec<BlockCopy>,
}

impl KvStore for PendingCopies {
    fn create(&mut self) -> SeqId {
        self.ledger.create()
    }
    fn len(&self, seq: SeqId) -> Result<usize, KvCacheError> {
        self.ledger.len(seq)
    }
    fn append(&mut self, seq: SeqId, n_tokens: usize) -> Result<(), KvCacheError> {
        let appended = self.ledger.append(seq, n_tokens)?;
        self.copies.extend(appended.copy);
        Ok(())
    }
    fn truncate(&mut self, seq: SeqId, n_tokens: usize) -> Result<(), KvCacheError> {
        self.ledger.truncate(seq, n_tokens)
    }
    fn fork(&mut self, seq: SeqId) -> Result<SeqId, KvCacheError> {
        self.ledger.fork(seq)
    }
    fn free(&mut self, seq: SeqId) -> Result<(), KvCacheError> {
        self.ledger.free(seq)
    }
}

/// What can go wrong placing a batch in [`Slots`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SlotError {
    /// A slot number past the last slot.
    #[error("sequence {slot} is not in a cache of {n_slots}")]
    UnknownSlot {
        /// The slot asked for.
        slot: u32,
        /// Slots of the cache.
        n_slots: usize,
    },
    /// A token that does not continue its sequence.
    #[error("a token of sequence {slot} is at position {position}, expected {expected}")]
    Position {
        /// The slot.
        slot: u32,
        /// The token's position.
        position: u32,
        /// Where the sequence continues.
        expected: usize,
    },
    /// A sequence would grow past the context.
    #[error("the context is full: {needed} positions needed, {n_ctx} available")]
    ContextFull {
        /// Positions the sequence would hold.
        needed: usize,
        /// Positions per sequence.
        n_ctx: usize,
    },
    /// The store's own error (out of blocks, say).
    #[error(transparent)]
    Cache(#[from] KvCacheError),
}

/// `n_slots` sequences of at most `n_ctx` positions each, over a store `S`.
#[derive(Debug)]
pub struct Slots<S> {
    store: S,
    ids: Vec<SeqId>,
    n_ctx: usize,
}

impl<S: KvStore> Slots<S> {
    /// Makes `n_slots` empty sequences in `store`, each of at most `n_ctx` positions.
    pub fn new(mut store: S, n_slots: usize, n_ctx: usize) -> Self {
        let ids = (0..n_slots).map(|_| store.create()).collect();
        Self { store, ids, n_ctx }
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The store, to write into (its sequences are [`Slots::id`]'s).
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// Number of slots.
    pub fn n_slots(&self) -> usize {
        self.ids.len()
    }

    /// Positions per sequence.
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// The store's sequence of `slot`.
    pub fn id(&self, slot: u32) -> Result<SeqId, SlotError> {
        self.ids
            .get(slot as usize)
            .copied()
            .ok_or(SlotError::UnknownSlot {
                slot,
                n_slots: self.ids.len(),
            })
    }

    /// Positions held by `slot` (0 for an unknown one).
    pub fn len(&self, slot: u32) -> usize {
        self.id(slot)
            .ok()
            .and_then(|id| self.store.len(id).ok())
            .unwrap_or(0)
    }

    /// Whether no slot holds any position.
    pub fn is_empty(&self) -> bool {
        self.ids
            .iter()
            .all(|&id| self.store.len(id).unwrap_or(0) == 0)
    }

    /// Checks that every slot of `slots` exists.
    pub fn check(&self, slots: &[u32]) -> Result<(), SlotError> {
        slots.iter().try_for_each(|&s| self.id(s).map(|_| ()))
    }

    /// Appends a batch's tokens: `slots[i]` and `positions[i]` for token `i`, each run of one
    /// slot continuing where that sequence ends. On any error every sequence the batch
    /// touched is back at the length it had before, and the error names the first problem.
    pub fn reserve(&mut self, slots: &[u32], positions: &[u32]) -> Result<(), SlotError> {
        if slots.len() != positions.len() {
            return Err(SlotError::Cache(KvCacheError::ShapeMismatch {
                what: "positions",
                len: positions.len(),
                row: slots.len(),
            }));
        }
        let mut done = 0;
        while done < slots.len() {
            let slot = slots[done];
            let run = slots[done..].iter().take_while(|&&s| s == slot).count();
            if let Err(e) = self.append_run(slot, &positions[done..done + run]) {
                self.undo(slots, positions, done);
                return Err(e);
            }
            done += run;
        }
        Ok(())
    }

    fn append_run(&mut self, slot: u32, positions: &[u32]) -> Result<(), SlotError> {
        let id = self.id(slot)?;
        let len = self.store.len(id)?;
        if let Some((i, &p)) = positions
            .iter()
            .enumerate()
            .find(|&(i, &p)| p as usize != len + i)
        {
            return Err(SlotError::Position {
                slot,
                position: p,
                expected: len + i,
            });
        }
        let needed = len + positions.len();
        if needed > self.n_ctx {
            return Err(SlotError::ContextFull {
                needed,
                n_ctx: self.n_ctx,
            });
        }
        match self.store.append(id, positions.len()) {
            Ok(()) => Ok(()),
            Err(KvCacheError::ContextFull { .. }) => Err(SlotError::ContextFull {
                needed,
                n_ctx: self.n_ctx,
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Takes every run of tokens `..done` (all appended) back off its sequence: each run's
    /// first position is where its sequence ended before the batch.
    fn undo(&mut self, slots: &[u32], positions: &[u32], done: usize) {
        // Backwards, so a slot with several runs ends at its first run's start.
        let mut end = done;
        while end > 0 {
            let slot = slots[end - 1];
            let run = slots[..end]
                .iter()
                .rev()
                .take_while(|&&s| s == slot)
                .count();
            let start = end - run;
            if let Ok(id) = self.id(slot) {
                let _ = self.store.truncate(id, positions[start] as usize);
            }
            end = start;
        }
    }

    /// Keeps only the first `len` positions of `slot` (all of them if it holds fewer).
    pub fn truncate(&mut self, slot: u32, len: usize) -> Result<(), SlotError> {
        let id = self.id(slot)?;
        let len = len.min(self.store.len(id)?);
        Ok(self.store.truncate(id, len)?)
    }

    /// Makes `dst` hold the first `len` positions of `src` (all of them if it holds fewer),
    /// sharing their blocks instead of copying them: a block is copied only when one of the
    /// two writes into it (a prompt prefix that several sequences share is stored once).
    /// What `dst` held before is dropped. On an error `dst` is as it was.
    pub fn share(&mut self, dst: u32, src: u32, len: usize) -> Result<(), SlotError> {
        let (src_id, dst_id) = (self.id(src)?, self.id(dst)?);
        if src == dst {
            return self.truncate(dst, len);
        }
        let len = len.min(self.store.len(src_id)?);
        let new = self.store.fork(src_id)?;
        if let Err(e) = self.store.truncate(new, len) {
            let _ = self.store.free(new);
            return Err(e.into());
        }
        self.ids[dst as usize] = new;
        // The old sequence of dst only frees blocks; the slot already points at the new one.
        let _ = self.store.free(dst_id);
        Ok(())
    }

    /// Empties every slot.
    pub fn clear(&mut self) -> Result<(), SlotError> {
        for &id in &self.ids {
            self.store.truncate(id, 0)?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::KvCacheConfig;

    /// 3 slots of 40 positions over blocks of 16 (7 blocks: less than 3 × 3 full slots need).
    fn slots() -> Slots<PendingCopies> {
        let config = KvCacheConfig::new(1, 1, 4, 16, 7).unwrap();
        let store = PendingCopies {
            ledger: BlockLedger::new(&config),
            copies: Vec::new(),
        };
        Slots::new(store, 3, 40)
    }

    fn lens(s: &Slots<PendingCopies>) -> Vec<usize> {
        (0..3).map(|i| s.len(i)).collect()
    }

    #[test]
    fn runs_of_each_slot_continue_where_it_ends() {
        let mut s = slots();
        s.reserve(&[0, 0, 0, 2, 2], &[0, 1, 2, 0, 1]).unwrap();
        s.reserve(&[2, 0], &[2, 3]).unwrap();
        assert_eq!(lens(&s), [4, 0, 3]);
        assert_eq!(
            s.reserve(&[1, 1], &[0, 2]),
            Err(SlotError::Position {
                slot: 1,
                position: 2,
                expected: 1
            })
        );
        assert_eq!(
            s.reserve(&[3], &[0]),
            Err(SlotError::UnknownSlot {
                slot: 3,
                n_slots: 3
            })
        );
        assert_eq!(s.len(7), 0);
    }

    #[test]
    fn a_failed_batch_leaves_every_sequence_as_it_was() {
        let mut s = slots();
        s.reserve(&[0, 1], &[0, 0]).unwrap();
        // Slot 0 gets a run of five, slot 1 a run of three, slot 0 again, then slot 2 skips
        // a position: everything the batch appended is taken back, not one token per run.
        let slots_of = [0, 0, 0, 0, 0, 1, 1, 1, 0, 2];
        let positions = [1, 2, 3, 4, 5, 1, 2, 3, 6, 1];
        assert!(matches!(
            s.reserve(&slots_of, &positions),
            Err(SlotError::Position { slot: 2, .. })
        ));
        assert_eq!(lens(&s), [1, 1, 0]);
        // A run past the context fails the same way.
        let long: Vec<u32> = (1..41).collect();
        let mut batch_slots = vec![1, 1];
        batch_slots.extend(std::iter::repeat_n(0, long.len()));
        let mut batch_pos = vec![1, 2];
        batch_pos.extend(&long);
        assert_eq!(
            s.reserve(&batch_slots, &batch_pos),
            Err(SlotError::ContextFull {
                needed: 41,
                n_ctx: 40
            })
        );
        assert_eq!(lens(&s), [1, 1, 0]);
    }

    #[test]
    fn running_out_of_blocks_is_the_stores_error_and_undoes_the_batch() {
        let mut s = slots();
        // 40 + 40 positions take 3 + 3 blocks; the third slot's 32 more need 2 of the 1 left.
        let mut slots_of = vec![0; 40];
        slots_of.extend([1; 40]);
        let mut positions: Vec<u32> = (0..40).collect();
        positions.extend(0..40);
        s.reserve(&slots_of, &positions).unwrap();
        let err = s
            .reserve(&[2; 32], &(0..32).collect::<Vec<_>>())
            .unwrap_err();
        assert!(
            matches!(err, SlotError::Cache(KvCacheError::OutOfBlocks { .. })),
            "{err}"
        );
        assert_eq!(lens(&s), [40, 40, 0]);
        assert_eq!(s.store().ledger.free_blocks(), 1);
    }

    #[test]
    fn truncate_clamps_and_clear_empties_everything() {
        let mut s = slots();
        s.reserve(&[0, 0, 1], &[0, 1, 0]).unwrap();
        s.truncate(0, 10).unwrap();
        assert_eq!(lens(&s), [2, 1, 0]);
        s.truncate(0, 1).unwrap();
        assert_eq!(lens(&s), [1, 1, 0]);
        assert!(s.truncate(5, 0).is_err());
        s.clear().unwrap();
        assert!(s.is_empty());
        assert_eq!(s.store().ledger.free_blocks(), 7);
    }

    #[test]
    fn a_shared_prefix_is_stored_once_and_copied_on_write() {
        let mut s = slots();
        // 37 positions in slot 0: blocks of 16, 16 and 5.
        s.reserve(&[0; 37], &(0..37).collect::<Vec<_>>()).unwrap();
        s.reserve(&[1; 3], &[0, 1, 2]).unwrap();
        assert_eq!(s.store().ledger.used_blocks(), 4);
        // Slot 1 drops its 3 positions and shares 35 of slot 0's: no new block.
        s.share(1, 0, 35).unwrap();
        assert_eq!(lens(&s), [37, 35, 0]);
        assert_eq!(s.store().ledger.used_blocks(), 3);
        assert_eq!(s.store().ledger.shared_blocks(), 3);
        // Slot 1 continues at 35: its last block is shared and partly filled, so it is copied
        // (35 - 32 = 3 positions) before the new one is written; slot 0 is unchanged.
        s.reserve(&[1], &[35]).unwrap();
        assert_eq!(
            s.store().copies.last().map(|c| c.n_tokens),
            Some(3),
            "{:?}",
            s.store().copies
        );
        assert_eq!(lens(&s), [37, 36, 0]);
        assert_eq!(s.store().ledger.shared_blocks(), 2);
        // Sharing more than the source holds takes all of it; sharing with itself truncates.
        s.share(2, 1, 100).unwrap();
        assert_eq!(lens(&s), [37, 36, 36]);
        s.share(2, 2, 10).unwrap();
        assert_eq!(lens(&s), [37, 36, 10]);
        assert!(s.share(2, 9, 1).is_err());
        assert_eq!(lens(&s), [37, 36, 10]);
        // Emptying everything frees every block.
        s.clear().unwrap();
        assert_eq!(s.store().ledger.free_blocks(), 7);
    }

    #[test]
    fn copies_of_shared_blocks_are_queued_for_the_store() {
        let config = KvCacheConfig::new(1, 1, 4, 16, 8).unwrap();
        let mut store = PendingCopies {
            ledger: BlockLedger::new(&config),
            copies: Vec::new(),
        };
        let seq = store.create();
        store.append(seq, 5).unwrap();
        let fork = store.ledger.fork(seq).unwrap();
        store.append(fork, 1).unwrap();
        assert_eq!(store.copies.len(), 1);
        assert_eq!(store.copies[0].n_tokens, 5);
    }
}
