//! Attention weights recorded on request, for diagnostics. Off by default: the attention
//! kernel then checks one flag per layer and records nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::backend::SeqId;

/// The attention weights of one query row of one head.
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionRow {
    /// Layer index.
    pub layer: usize,
    /// The query's sequence.
    pub seq: SeqId,
    /// The query's position.
    pub position: usize,
    /// Query head.
    pub head: usize,
    /// The first key position it saw (after a sliding window); the keys are
    /// `first_key..=position`.
    pub first_key: usize,
    /// One weight per key, summing to 1.
    pub weights: Vec<f32>,
}

#[derive(Debug, Default)]
pub(crate) struct AttentionLog {
    on: AtomicBool,
    rows: Mutex<Vec<AttentionRow>>,
}

impl AttentionLog {
    pub(crate) fn set(&self, on: bool) {
        self.on.store(on, Ordering::Relaxed);
    }

    /// `Some(self)` while recording.
    pub(crate) fn active(&self) -> Option<&Self> {
        self.on.load(Ordering::Relaxed).then_some(self)
    }

    pub(crate) fn push(&self, row: AttentionRow) {
        self.rows
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(row);
    }

    pub(crate) fn take(&self) -> Vec<AttentionRow> {
        std::mem::take(&mut *self.rows.lock().unwrap_or_else(PoisonError::into_inner))
    }
}
