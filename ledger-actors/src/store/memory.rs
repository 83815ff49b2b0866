//! [`MemoryLedgerStore`]: records in process memory, concurrent through `DashMap`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use dashmap::DashMap;
use ledger_entities::{LedgerRecord, RecordHash};
use smallvec::SmallVec;
use uuid::Uuid;

use super::{Head, LedgerStore, RecordRange};
use crate::config::Backend;
use crate::error::LedgerError;

/// An in-memory store. Reads are lock-free across anchors; writes check the fork guard and
/// uniqueness under a single writer lock, so a batch is applied all-or-nothing.
///
/// Lean by design (a million anchors × 2 records within 1.5 GB): each record is
/// held once (`order`, shared by `chains`), and the rid and hash indexes hold its position
/// in `order` (8 bytes) rather than another copy of a key; the hash index is keyed by the
/// hash's first 8 bytes (16-byte slots instead of 48), and the rare hash whose prefix is
/// already taken goes to `by_hash_overflow`, so a lookup is exact whatever the hashes.
#[derive(Default)]
pub struct MemoryLedgerStore {
    /// rid → position in `order`.
    by_rid: DashMap<Uuid, u64>,
    /// First 8 bytes of a hash → position in `order` of the first record stored with them.
    by_hash: DashMap<u64, u64>,
    /// Full hash → position, for a record whose hash prefix `by_hash` already holds for
    /// another record (empty unless prefixes collide).
    by_hash_overflow: DashMap<RecordHash, u64>,
    /// Each anchor's records in chain order; up to two inline (no allocation of its own:
    /// most anchors of a large ledger are short).
    chains: DashMap<Uuid, SmallVec<[Arc<LedgerRecord>; 2]>>,
    count: AtomicU64,
    /// Every record in commit order (predecessors first): the memory backend's source for
    /// the transparency log's integrator (its leaf order), and what the indexes point into.
    /// Records enter it before the indexes, so an indexed position is always in it.
    order: std::sync::RwLock<Vec<Arc<LedgerRecord>>>,
    /// Serializes writers: check-then-apply of a batch must not interleave with another
    /// batch. In the ledger the chain actors write through the memory driver, one worker
    /// thread per core, so it is held only for one check-and-apply.
    write: std::sync::Mutex<()>,
}

impl MemoryLedgerStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// [`LedgerStore::insert`] without the `async`: memory inserts never wait, so the memory
    /// driver calls this directly from the chain actor's handler.
    pub fn insert_now(&self, records: &[Arc<LedgerRecord>]) -> Result<(), LedgerError> {
        // A poisoned lock only means another writer panicked between batches' checks and
        // applies; each map entry is still consistent, so carry on with the inner guard.
        let _guard = self.write.lock().unwrap_or_else(|p| p.into_inner());
        self.check_batch(records)?;
        let first = {
            let mut order = self.order.write().unwrap_or_else(|p| p.into_inner());
            let first = order.len() as u64;
            order.extend(records.iter().cloned());
            first
        };
        // One anchor's batch (an atomic append): its chain entry is taken once and grown
        // once, instead of per record.
        let one_anchor = records
            .first()
            .map(|f| f.anchor_id)
            .filter(|a| records.iter().all(|r| r.anchor_id == *a));
        for (pos, r) in (first..).zip(records) {
            self.by_rid.insert(r.rid, pos);
            // Only this writer inserts (the lock above), so the prefix test cannot race.
            match self.by_hash.entry(hash_prefix(&r.hash)) {
                dashmap::mapref::entry::Entry::Vacant(v) => {
                    v.insert(pos);
                }
                dashmap::mapref::entry::Entry::Occupied(_) => {
                    self.by_hash_overflow.insert(r.hash, pos);
                }
            }
            if one_anchor.is_none() {
                self.chains
                    .entry(r.anchor_id)
                    .or_default()
                    .push(Arc::clone(r));
            }
        }
        // After the indexes, as for single records: a record in a chain is always indexed.
        if let Some(anchor) = one_anchor {
            self.chains
                .entry(anchor)
                .or_default()
                .extend(records.iter().cloned());
        }
        self.count
            .fetch_add(records.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// The record at commit position `pos`.
    fn at(&self, pos: u64) -> Option<Arc<LedgerRecord>> {
        let order = self.order.read().unwrap_or_else(|p| p.into_inner());
        usize::try_from(pos)
            .ok()
            .and_then(|i| order.get(i))
            .cloned()
    }

    /// Commit position of the record `rid` (its leaf index in the memory backend's
    /// transparency log once logged), if stored.
    pub fn position(&self, rid: Uuid) -> Option<u64> {
        self.by_rid.get(&rid).map(|p| *p.value())
    }

    /// The stored record whose hash is `hash`.
    fn by_hash(&self, hash: &RecordHash) -> Option<Arc<LedgerRecord>> {
        // Copied out first: no map guard is held while `order` is locked.
        let pos = self.by_hash.get(&hash_prefix(hash)).map(|p| *p.value());
        if let Some(r) = pos.and_then(|p| self.at(p))
            && r.hash == *hash
        {
            return Some(r);
        }
        let pos = self.by_hash_overflow.get(hash).map(|p| *p.value());
        pos.and_then(|p| self.at(p))
    }

    /// Records committed so far (the length of the commit order).
    pub fn committed_len(&self) -> u64 {
        self.order.read().unwrap_or_else(|p| p.into_inner()).len() as u64
    }

    /// Up to `limit` records in commit order from position `from` (0-based).
    pub fn committed(&self, from: u64, limit: usize) -> Vec<Arc<LedgerRecord>> {
        let order = self.order.read().unwrap_or_else(|p| p.into_inner());
        let from = usize::try_from(from).unwrap_or(usize::MAX).min(order.len());
        order[from..].iter().take(limit).cloned().collect()
    }

    fn check_batch(&self, records: &[Arc<LedgerRecord>]) -> Result<(), LedgerError> {
        let stored_head = |anchor: &Uuid| {
            self.chains
                .get(anchor)
                .and_then(|c| c.last().map(|l| l.hash))
        };
        if let [r] = records {
            // One record (a single append, the common case): no bookkeeping maps needed.
            return self.check_one(r, stored_head(&r.anchor_id));
        }
        // Heads and rids as they will be after the earlier records of this batch.
        let mut heads: HashMap<Uuid, Option<RecordHash>> = HashMap::new();
        let mut rids = std::collections::HashSet::with_capacity(records.len());
        for r in records {
            let head = heads
                .entry(r.anchor_id)
                .or_insert_with(|| stored_head(&r.anchor_id));
            self.check_one(r, *head)?;
            if !rids.insert(r.rid) {
                return Err(LedgerError::Conflict {
                    rid: r.rid,
                    reason: "rid appears twice in one batch".into(),
                });
            }
            *head = Some(r.hash);
        }
        Ok(())
    }

    /// The fork guard and uniqueness checks for one record given its anchor's head.
    fn check_one(&self, r: &LedgerRecord, head: Option<RecordHash>) -> Result<(), LedgerError> {
        if head != r.prev_hash {
            return Err(LedgerError::ForkRefused {
                anchor_id: r.anchor_id,
                prev_hash: r.prev_hash,
            });
        }
        if self.by_rid.contains_key(&r.rid) {
            return Err(LedgerError::Conflict {
                rid: r.rid,
                reason: "rid already stored".into(),
            });
        }
        if self.by_hash(&r.hash).is_some() {
            return Err(LedgerError::Conflict {
                rid: r.rid,
                reason: format!("hash {} already stored", r.hash),
            });
        }
        Ok(())
    }
}

/// The first 8 bytes of a hash, the key of [`MemoryLedgerStore`]'s hash index.
fn hash_prefix(hash: &RecordHash) -> u64 {
    let mut prefix = [0u8; 8];
    prefix.copy_from_slice(&hash.0[..8]);
    u64::from_be_bytes(prefix)
}

#[async_trait]
impl LedgerStore for MemoryLedgerStore {
    fn backend(&self) -> Backend {
        Backend::Memory
    }

    async fn insert(&self, records: &[Arc<LedgerRecord>]) -> Result<(), LedgerError> {
        self.insert_now(records)
    }

    async fn get(&self, rid: Uuid) -> Result<Option<Arc<LedgerRecord>>, LedgerError> {
        Ok(self.position(rid).and_then(|p| self.at(p)))
    }

    async fn get_by_hash(
        &self,
        hash: RecordHash,
    ) -> Result<Option<Arc<LedgerRecord>>, LedgerError> {
        Ok(self.by_hash(&hash))
    }

    async fn records(
        &self,
        anchor_id: Uuid,
        range: &RecordRange,
    ) -> Result<Vec<Arc<LedgerRecord>>, LedgerError> {
        let Some(chain) = self.chains.get(&anchor_id) else {
            return Ok(Vec::new());
        };
        // Timestamps strictly increase along a chain, so the window starts at a binary-search
        // position.
        let start = match range.since {
            Some(since) => chain.partition_point(|r| r.ts < since),
            None => 0,
        };
        Ok(chain[start..]
            .iter()
            .take_while(|r| range.contains(r.ts))
            .take(range.limit)
            .cloned()
            .collect())
    }

    async fn head(&self, anchor_id: Uuid) -> Result<Option<Head>, LedgerError> {
        Ok(self
            .chains
            .get(&anchor_id)
            .and_then(|c| c.last().map(|r| Head::of(r))))
    }

    async fn anchors(&self, after: Option<Uuid>, limit: usize) -> Result<Vec<Uuid>, LedgerError> {
        let mut ids: Vec<Uuid> = self
            .chains
            .iter()
            .map(|e| *e.key())
            .filter(|id| after.is_none_or(|a| *id > a))
            .collect();
        ids.sort_unstable();
        ids.truncate(limit);
        Ok(ids)
    }

    async fn count(&self) -> Result<u64, LedgerError> {
        Ok(self.count.load(Ordering::Relaxed))
    }

    async fn count_anchor(&self, anchor_id: Uuid) -> Result<u64, LedgerError> {
        Ok(self.chains.get(&anchor_id).map_or(0, |c| c.len() as u64))
    }
}
