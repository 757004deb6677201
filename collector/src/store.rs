//! The span store: an in-memory ring of the most recent spans.
//!
//! A later version keeps spans in SQLite; this one forgets the oldest span once the
//! ring is full, which is enough to watch a program's LLM calls while developing it.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

use crate::model::SpanRecord;

/// How many spans the store keeps by default.
pub const DEFAULT_CAPACITY: usize = 10_000;

/// A bounded, thread-safe ring of the most recent spans.
#[derive(Debug)]
pub struct SpanStore {
    capacity: usize,
    spans: Mutex<VecDeque<SpanRecord>>,
}

impl Default for SpanStore {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

impl SpanStore {
    /// A store keeping the last `capacity` spans (at least one).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            capacity,
            spans: Mutex::new(VecDeque::with_capacity(capacity.min(1024))),
        }
    }

    /// Adds spans in order, dropping the oldest ones beyond the capacity.
    pub fn extend(&self, records: impl IntoIterator<Item = SpanRecord>) {
        let mut spans = self.spans.lock().unwrap_or_else(PoisonError::into_inner);
        for record in records {
            if spans.len() == self.capacity {
                spans.pop_front();
            }
            spans.push_back(record);
        }
    }

    /// Up to `limit` spans, newest first.
    pub fn newest(&self, limit: usize) -> Vec<SpanRecord> {
        let spans = self.spans.lock().unwrap_or_else(PoisonError::into_inner);
        spans.iter().rev().take(limit).cloned().collect()
    }

    /// How many spans are kept now.
    pub fn len(&self) -> usize {
        self.spans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether no span is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
