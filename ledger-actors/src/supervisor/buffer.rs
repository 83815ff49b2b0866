//! [`OutageBuffer`]: records acknowledged during a PostgreSQL outage and not yet written
//! to it, in the order they must reach the database.
//!
//! Shared between the supervisor (the only writer) and the store reads go through, so heads
//! and reads see buffered records.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use ledger_entities::LedgerRecord;
use uuid::Uuid;

use crate::store::{Head, RecordRange};

#[derive(Default)]
struct Inner {
    /// Every buffered record, oldest first: the drain order.
    queue: VecDeque<Arc<LedgerRecord>>,
    /// Each anchor's buffered records in chain order.
    by_anchor: HashMap<Uuid, VecDeque<Arc<LedgerRecord>>>,
    by_rid: HashMap<Uuid, Arc<LedgerRecord>>,
}

/// The outage buffer. Bounded by the supervisor (`buffer_capacity`).
#[derive(Default)]
pub struct OutageBuffer {
    inner: Mutex<Inner>,
}

impl OutageBuffer {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every mutation below completes before the guard drops, so a poisoned lock still
        // guards consistent data.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records buffered.
    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    /// True when nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.lock().queue.is_empty()
    }

    /// Appends a record behind everything buffered.
    pub fn push_back(&self, record: Arc<LedgerRecord>) {
        let mut b = self.lock();
        b.by_anchor
            .entry(record.anchor_id)
            .or_default()
            .push_back(Arc::clone(&record));
        b.by_rid.insert(record.rid, Arc::clone(&record));
        b.queue.push_back(record);
    }

    /// The oldest `n` records (not removed).
    pub fn front(&self, n: usize) -> Vec<Arc<LedgerRecord>> {
        self.lock().queue.iter().take(n).cloned().collect()
    }

    /// Removes the oldest `n` records (after they reached the database).
    pub fn pop_front(&self, n: usize) {
        let mut b = self.lock();
        for _ in 0..n {
            let Some(r) = b.queue.pop_front() else { break };
            b.by_rid.remove(&r.rid);
            if let Some(chain) = b.by_anchor.get_mut(&r.anchor_id) {
                chain.retain(|x| x.rid != r.rid);
                if chain.is_empty() {
                    b.by_anchor.remove(&r.anchor_id);
                }
            }
        }
    }

    /// Replaces buffered records by rid with new versions (re-chained), keeping positions.
    pub fn replace(&self, updated: &[Arc<LedgerRecord>]) {
        let mut b = self.lock();
        let by_rid: HashMap<Uuid, &Arc<LedgerRecord>> =
            updated.iter().map(|r| (r.rid, r)).collect();
        let Inner {
            queue,
            by_anchor,
            by_rid: index,
        } = &mut *b;
        for slot in queue.iter_mut().chain(by_anchor.values_mut().flatten()) {
            if let Some(new) = by_rid.get(&slot.rid) {
                *slot = Arc::clone(new);
            }
        }
        for r in updated {
            if index.contains_key(&r.rid) {
                index.insert(r.rid, Arc::clone(r));
            }
        }
    }

    /// One anchor's buffered records, in chain order.
    pub fn anchor_records(&self, anchor_id: Uuid) -> Vec<Arc<LedgerRecord>> {
        self.lock()
            .by_anchor
            .get(&anchor_id)
            .map(|c| c.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The anchor's last buffered record.
    pub fn head(&self, anchor_id: Uuid) -> Option<Head> {
        self.lock()
            .by_anchor
            .get(&anchor_id)
            .and_then(|c| c.back().map(|r| Head::of(r)))
    }

    /// The buffered record with this rid.
    pub fn get(&self, rid: Uuid) -> Option<Arc<LedgerRecord>> {
        self.lock().by_rid.get(&rid).cloned()
    }

    /// The buffered record with this hash.
    pub fn get_by_hash(&self, hash: &str) -> Option<Arc<LedgerRecord>> {
        self.lock().queue.iter().find(|r| r.hash == hash).cloned()
    }

    /// One anchor's buffered records within `range`.
    pub fn records(&self, anchor_id: Uuid, range: &RecordRange) -> Vec<Arc<LedgerRecord>> {
        self.lock()
            .by_anchor
            .get(&anchor_id)
            .map(|c| {
                c.iter()
                    .filter(|r| range.contains(r.ts))
                    .take(range.limit)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Anchors with buffered records.
    pub fn anchors(&self) -> Vec<Uuid> {
        self.lock().by_anchor.keys().copied().collect()
    }
}
