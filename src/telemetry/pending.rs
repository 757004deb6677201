//! The span ids whose Tracia upload is still on its way, so that `spans().evaluate`
//! can wait for its span to exist on the server instead of racing it to a 404 (the Node
//! SDK waits, Python does not: tracia-api.md §4.4, §13.6).
//!
//! Bounded like the Tracia SDKs' map: past the capacity the oldest entry is dropped
//! (its upload still runs, nothing waits for it). A span dropped by a full export
//! queue never settles, so every wait has a deadline.

use std::collections::{BTreeMap, HashMap};
use std::sync::{LazyLock, Mutex, PoisonError};

use opentelemetry::trace::SpanId;
use tokio::sync::Notify;

/// The Tracia SDKs track 1000; export batches are up to 512 spans, so a few batches fit.
const CAPACITY: usize = 4096;

static PENDING: LazyLock<Pending> = LazyLock::new(|| Pending::new(CAPACITY));

/// Marks a span's upload as pending (again marking it is a no-op).
pub(crate) fn mark(id: SpanId) {
    PENDING.mark(id);
}

/// The span's upload is over, delivered or not.
pub(crate) fn settle(id: SpanId) {
    PENDING.settle(id);
}

/// Whether the span's upload is pending.
pub(crate) fn is_pending(id: SpanId) -> bool {
    PENDING.is_pending(id)
}

/// Returns once the span's upload is no longer pending.
pub(crate) async fn settled(id: SpanId) {
    PENDING.settled(id).await;
}

struct Pending {
    capacity: usize,
    state: Mutex<State>,
    changed: Notify,
}

/// Each id with its insertion number, and the ids by insertion number (oldest first).
#[derive(Default)]
struct State {
    next: u64,
    ids: HashMap<SpanId, u64>,
    order: BTreeMap<u64, SpanId>,
}

impl Pending {
    fn new(capacity: usize) -> Self {
        Self {
            capacity,
            state: Mutex::default(),
            changed: Notify::new(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn mark(&self, id: SpanId) {
        let evicted = {
            let mut state = self.state();
            if state.ids.contains_key(&id) {
                return;
            }
            let n = state.next;
            state.next += 1;
            state.ids.insert(id, n);
            state.order.insert(n, id);
            let evicted = state.ids.len() > self.capacity;
            if evicted && let Some((_, oldest)) = state.order.pop_first() {
                state.ids.remove(&oldest);
            }
            evicted
        };
        if evicted {
            // Whoever waits for the evicted span stops waiting.
            self.changed.notify_waiters();
        }
    }

    fn settle(&self, id: SpanId) {
        let removed = {
            let mut state = self.state();
            let n = state.ids.remove(&id);
            n.and_then(|n| state.order.remove(&n)).is_some()
        };
        if removed {
            self.changed.notify_waiters();
        }
    }

    fn is_pending(&self, id: SpanId) -> bool {
        self.state().ids.contains_key(&id)
    }

    async fn settled(&self, id: SpanId) {
        loop {
            // Registered before the check, so a settle in between is not missed.
            let changed = self.changed.notified();
            let mut changed = std::pin::pin!(changed);
            changed.as_mut().enable();
            if !self.is_pending(id) {
                return;
            }
            changed.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    fn id(n: u64) -> SpanId {
        SpanId::from(n)
    }

    #[test]
    fn the_oldest_entry_is_evicted_past_capacity() {
        let pending = Pending::new(2);
        pending.mark(id(1));
        pending.mark(id(2));
        pending.mark(id(1)); // already pending: neither renewed nor counted twice
        pending.mark(id(3));
        assert!(!pending.is_pending(id(1)));
        assert!(pending.is_pending(id(2)));
        assert!(pending.is_pending(id(3)));

        pending.settle(id(2));
        pending.mark(id(4));
        assert!(pending.is_pending(id(3)), "a settled entry frees its place");
        assert!(pending.is_pending(id(4)));
        pending.settle(id(7)); // never marked: nothing happens
        let state = pending.state();
        assert_eq!((state.ids.len(), state.order.len()), (2, 2));
    }

    #[tokio::test]
    async fn a_wait_ends_when_its_span_settles_and_not_before() {
        let pending = Arc::new(Pending::new(8));
        pending.settled(id(1)).await; // not pending: returns at once

        pending.mark(id(1));
        pending.mark(id(2));
        let waiter = tokio::spawn({
            let pending = pending.clone();
            async move { pending.settled(id(1)).await }
        });
        tokio::task::yield_now().await;
        pending.settle(id(2));
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "another span settling is not enough");

        pending.settle(id(1));
        tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("the wait ends once the span settles")
            .unwrap();
    }

    #[tokio::test]
    async fn eviction_ends_the_wait() {
        let pending = Arc::new(Pending::new(1));
        pending.mark(id(1));
        let waiter = tokio::spawn({
            let pending = pending.clone();
            async move { pending.settled(id(1)).await }
        });
        tokio::task::yield_now().await;
        pending.mark(id(2));
        tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("an evicted span is no longer waited for")
            .unwrap();
    }
}
