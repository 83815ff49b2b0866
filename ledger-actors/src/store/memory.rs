//! [`MemoryLedgerStore`]: records in process memory, concurrent through `DashMap`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use dashmap::DashMap;
use ledger_entities::{LedgerRecord, RecordHash};
use uuid::Uuid;

use super::{Head, LedgerStore, RecordRange};
use crate::config::Backend;
use crate::error::LedgerError;

/// An in-memory store. Reads are lock-free across anchors; writes check the fork guard and
/// uniqueness under a single writer lock, so a batch is applied all-or-nothing.
#[derive(Default)]
pub struct MemoryLedgerStore {
    by_rid: DashMap<Uuid, Arc<LedgerRecord>>,
    by_hash: DashMap<RecordHash, Uuid>,
    chains: DashMap<Uuid, Vec<Arc<LedgerRecord>>>,
    count: AtomicU64,
    /// Every record in commit order (predecessors first): the memory backend's source for
    /// the transparency log's integrator.
    order: std::sync::RwLock<Vec<Arc<LedgerRecord>>>,
    /// Serializes writers: check-then-apply of a batch must not interleave with another
    /// batch. In the ledger only the persistence actor writes, so it is uncontended.
    write: std::sync::Mutex<()>,
}

impl MemoryLedgerStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// [`LedgerStore::insert`] without the `async`: memory inserts never wait, so the memory
    /// persistence actor calls this directly from its handler.
    pub fn insert_now(&self, records: &[Arc<LedgerRecord>]) -> Result<(), LedgerError> {
        // A poisoned lock only means another writer panicked between batches' checks and
        // applies; each map entry is still consistent, so carry on with the inner guard.
        let _guard = self.write.lock().unwrap_or_else(|p| p.into_inner());
        self.check_batch(records)?;
        for r in records {
            self.by_rid.insert(r.rid, Arc::clone(r));
            self.by_hash.insert(r.hash, r.rid);
            self.chains
                .entry(r.anchor_id)
                .or_default()
                .push(Arc::clone(r));
        }
        self.count
            .fetch_add(records.len() as u64, Ordering::Relaxed);
        self.order
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .extend(records.iter().cloned());
        Ok(())
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
            // One record (the persistence actor's case): no bookkeeping maps needed.
            return self.check_one(r, stored_head(&r.anchor_id));
        }
        // Heads and rids as they will be after the earlier records of this batch.
        let mut heads: HashMap<Uuid, Option<RecordHash>> = HashMap::new();
        let mut rids = std::collections::HashSet::new();
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
        if self.by_hash.contains_key(&r.hash) {
            return Err(LedgerError::Conflict {
                rid: r.rid,
                reason: format!("hash {} already stored", r.hash),
            });
        }
        Ok(())
    }
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
        Ok(self.by_rid.get(&rid).map(|r| Arc::clone(r.value())))
    }

    async fn get_by_hash(
        &self,
        hash: RecordHash,
    ) -> Result<Option<Arc<LedgerRecord>>, LedgerError> {
        let Some(rid) = self.by_hash.get(&hash).map(|r| *r.value()) else {
            return Ok(None);
        };
        self.get(rid).await
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
