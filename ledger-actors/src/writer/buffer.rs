//! [`OutageBuffer`]: records acknowledged during a PostgreSQL outage and not yet written
//! to it, in the order they must reach the database.
//!
//! Shared between the writer (the only writer) and the store reads go through, so heads
//! and reads see buffered records.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use ledger_entities::{LedgerRecord, RecordHash};
use uuid::Uuid;

use crate::store::{Head, RecordRange};

#[derive(Default)]
struct Inner {
    /// Every buffered record, oldest first: the drain order.
    queue: VecDeque<Arc<LedgerRecord>>,
    /// Records per unit along `queue` (1, or an atomic batch's size): the drain takes whole
    /// units, so a batch reaches the database in one statement or not at all.
    units: VecDeque<usize>,
    /// Each anchor's buffered records in chain order.
    by_anchor: HashMap<Uuid, VecDeque<Arc<LedgerRecord>>>,
    by_rid: HashMap<Uuid, Arc<LedgerRecord>>,
    /// Hash → rid, for reads by hash during an outage.
    by_hash: HashMap<RecordHash, Uuid>,
}

/// The outage buffer. Bounded by the writer (`buffer_capacity`).
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
        b.units.push_back(1);
        b.add(record);
    }

    /// Appends an atomic batch (one unit, in chain order) behind everything buffered.
    pub fn push_unit(&self, records: &[Arc<LedgerRecord>]) {
        if records.is_empty() {
            return;
        }
        let mut b = self.lock();
        b.units.push_back(records.len());
        for r in records {
            b.add(Arc::clone(r));
        }
    }

    /// The oldest whole units holding at least `n` records (or all), not removed, with
    /// each unit's size: a unit is never cut.
    pub fn front_units(&self, n: usize) -> (Vec<Arc<LedgerRecord>>, Vec<usize>) {
        let b = self.lock();
        let mut units = Vec::new();
        let mut total = 0;
        for &u in &b.units {
            if total >= n.max(1) {
                break;
            }
            units.push(u);
            total += u;
        }
        (b.queue.iter().take(total).cloned().collect(), units)
    }
}

impl Inner {
    fn add(&mut self, record: Arc<LedgerRecord>) {
        let b = self;
        b.by_anchor
            .entry(record.anchor_id)
            .or_default()
            .push_back(Arc::clone(&record));
        b.by_rid.insert(record.rid, Arc::clone(&record));
        b.by_hash.insert(record.hash, record.rid);
        b.queue.push_back(record);
    }
}

impl OutageBuffer {
    /// The oldest `n` records (not removed).
    pub fn front(&self, n: usize) -> Vec<Arc<LedgerRecord>> {
        self.lock().queue.iter().take(n).cloned().collect()
    }

    /// Removes the oldest `n` records (after they reached the database). O(1) per record:
    /// the queue holds each anchor's records in chain order, so the oldest record overall is
    /// also the oldest of its anchor.
    pub fn pop_front(&self, n: usize) {
        let mut b = self.lock();
        for _ in 0..n {
            let Some(r) = b.queue.pop_front() else { break };
            // Callers pop whole units; a count cut inside one shrinks it (stays consistent).
            match b.units.front_mut() {
                Some(u) if *u > 1 => *u -= 1,
                Some(_) => {
                    b.units.pop_front();
                }
                None => {}
            }
            b.by_rid.remove(&r.rid);
            if b.by_hash.get(&r.hash) == Some(&r.rid) {
                b.by_hash.remove(&r.hash);
            }
            if let Some(chain) = b.by_anchor.get_mut(&r.anchor_id) {
                if chain.front().is_some_and(|x| x.rid == r.rid) {
                    chain.pop_front();
                } else {
                    // Unreachable while the order invariant holds; stay correct regardless.
                    chain.retain(|x| x.rid != r.rid);
                }
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
            by_hash,
            ..
        } = &mut *b;
        for slot in queue.iter_mut().chain(by_anchor.values_mut().flatten()) {
            if let Some(new) = by_rid.get(&slot.rid) {
                *slot = Arc::clone(new);
            }
        }
        for r in updated {
            if let Some(old) = index.insert(r.rid, Arc::clone(r)) {
                by_hash.remove(&old.hash);
                by_hash.insert(r.hash, r.rid);
            } else {
                index.remove(&r.rid);
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

    /// The buffered record with this hash (an index look-up).
    pub fn get_by_hash(&self, hash: RecordHash) -> Option<Arc<LedgerRecord>> {
        let b = self.lock();
        b.by_hash
            .get(&hash)
            .and_then(|rid| b.by_rid.get(rid))
            .cloned()
    }

    /// Number of one anchor's buffered records.
    pub fn anchor_len(&self, anchor_id: Uuid) -> usize {
        self.lock()
            .by_anchor
            .get(&anchor_id)
            .map_or(0, VecDeque::len)
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
