//! [`MemoryLog`]: the transparency log of the memory backend, beside its
//! [`MemoryLedgerStore`]. Leaf order is the store's commit order.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ledger_entities::LedgerRecord;
use ledger_tlog::Hash;
use ledger_tlog::tile::{TileId, TileSet, edge_tiles};
use uuid::Uuid;

use super::log::{
    Commit, LeafEntry, LogState, LogStore, Pending, PendingRecord, StoredCheckpoint, Unlogged,
    Watermark,
};
use crate::error::LedgerError;
use crate::store::MemoryLedgerStore;

/// The log's own state. Its leaves are the store's first `size` records in commit order
/// (each commit checks that), so rids and leaf indexes are read from the store's order and
/// its rid index ([`MemoryLedgerStore::position`]) instead of copies kept here.
#[derive(Default)]
struct State {
    size: u64,
    tiles: HashMap<TileId, Vec<Hash>>,
    checkpoints: Vec<StoredCheckpoint>,
    /// Witness cosignature lines by checkpoint, by witness key.
    cosignatures: HashMap<Uuid, std::collections::BTreeMap<String, String>>,
}

/// The memory backend's log. One process, so the lease is always held.
pub struct MemoryLog {
    store: Arc<MemoryLedgerStore>,
    state: Mutex<State>,
}

impl MemoryLog {
    /// An empty log over `store`.
    pub fn new(store: Arc<MemoryLedgerStore>) -> Self {
        Self {
            store,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-applied commit: commit checks
        // first and then only pushes, so carry on with the inner state.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl LogStore for MemoryLog {
    async fn acquire(&self, _holder: Uuid, _lease: Duration) -> Result<bool, LedgerError> {
        Ok(true)
    }

    async fn release(&self, _holder: Uuid) -> Result<(), LedgerError> {
        Ok(())
    }

    async fn load(&self) -> Result<LogState, LedgerError> {
        let s = self.state();
        let size = s.size;
        let mut edge = TileSet::default();
        for (id, _) in edge_tiles(size) {
            if let Some(t) = s.tiles.get(&id) {
                edge.insert(id, t.clone());
            }
        }
        Ok(LogState {
            size,
            watermark: Watermark {
                tx: 0,
                seq: i64::try_from(size).unwrap_or(i64::MAX),
            },
            edge_tiles: edge,
            checkpoint: s.checkpoints.last().cloned(),
        })
    }

    async fn pending(&self, watermark: Watermark, limit: usize) -> Result<Pending, LedgerError> {
        let from = u64::try_from(watermark.seq).unwrap_or(0);
        let records: Vec<PendingRecord> = self
            .store
            .committed(from, limit)
            .iter()
            .map(|r| PendingRecord {
                rid: r.rid,
                hash: r.hash,
                ts: r.ts,
            })
            .collect();
        Ok(Pending {
            full: records.len() == limit,
            watermark: Watermark {
                tx: 0,
                seq: watermark.seq + records.len() as i64,
            },
            records,
        })
    }

    async fn backlog(
        &self,
        watermark: Watermark,
        cap: u64,
    ) -> Result<(u64, Option<DateTime<Utc>>), LedgerError> {
        let from = u64::try_from(watermark.seq).unwrap_or(0);
        let total = self.store.committed_len();
        let first = self.store.committed(from, 1).first().map(|r| r.ts);
        Ok((total.saturating_sub(from).min(cap), first))
    }

    async fn commit(
        &self,
        _holder: Uuid,
        _lease: Duration,
        step: Commit,
    ) -> Result<(), LedgerError> {
        let mut s = self.state();
        if s.size != step.first_index {
            return Err(LedgerError::Internal(format!(
                "log size is {}, the integrator expected {}",
                s.size, step.first_index
            )));
        }
        let stored = self.store.committed(step.first_index, step.rids.len());
        if stored.len() != step.rids.len()
            || stored.iter().zip(&step.rids).any(|(r, rid)| r.rid != *rid)
        {
            return Err(LedgerError::Internal(
                "the integrator's leaves are not the store's commit order".into(),
            ));
        }
        s.size += step.rids.len() as u64;
        for (id, hashes) in step.tiles {
            s.tiles.insert(id, hashes);
        }
        if let Some(c) = step.checkpoint {
            s.checkpoints.push(c);
        }
        Ok(())
    }

    async fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, LedgerError> {
        let s = self.state();
        let Some(mut c) = s.checkpoints.last().cloned() else {
            return Ok(None);
        };
        if let (Some(note), Some(lines)) = (c.note.as_mut(), s.cosignatures.get(&c.cid)) {
            for line in lines.values() {
                note.push_str(line);
                note.push('\n');
            }
        }
        Ok(Some(c))
    }

    async fn add_cosignature(
        &self,
        cid: Uuid,
        witness: &str,
        line: &str,
        _cosigned_at: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        let mut s = self.state();
        if !s.checkpoints.iter().any(|c| c.cid == cid) {
            return Err(LedgerError::Internal(format!("no checkpoint {cid}")));
        }
        s.cosignatures
            .entry(cid)
            .or_default()
            .entry(witness.to_owned())
            .or_insert_with(|| line.to_owned());
        Ok(())
    }

    async fn checkpoints(&self) -> Result<Vec<StoredCheckpoint>, LedgerError> {
        Ok(self.state().checkpoints.clone())
    }

    async fn leaf_index(&self, rid: Uuid) -> Result<Option<u64>, LedgerError> {
        let size = self.state().size;
        Ok(self.store.position(rid).filter(|p| *p < size))
    }

    async fn read_tiles(&self, ids: &[TileId]) -> Result<TileSet, LedgerError> {
        let s = self.state();
        let mut set = TileSet::default();
        for id in ids {
            if let Some(t) = s.tiles.get(id) {
                set.insert(*id, t.clone());
            }
        }
        Ok(set)
    }

    async fn leaves(&self, from: u64, limit: usize) -> Result<Vec<LeafEntry>, LedgerError> {
        let size = self.state().size;
        let limit = limit.min(usize::try_from(size.saturating_sub(from)).unwrap_or(usize::MAX));
        Ok(self
            .store
            .committed(from, limit)
            .iter()
            .enumerate()
            .map(|(i, r)| LeafEntry {
                index: from + i as u64,
                rid: r.rid,
                hash: Some(r.hash.to_hex()),
            })
            .collect())
    }

    async fn records(
        &self,
        from: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Arc<LedgerRecord>)>, LedgerError> {
        let size = self.state().size;
        let limit = limit.min(usize::try_from(size.saturating_sub(from)).unwrap_or(usize::MAX));
        Ok(self
            .store
            .committed(from, limit)
            .into_iter()
            .enumerate()
            .map(|(i, r)| (from + i as u64, r))
            .collect())
    }

    async fn size(&self) -> Result<u64, LedgerError> {
        Ok(self.state().size)
    }

    async fn unlogged(&self, limit: usize) -> Result<Vec<Unlogged>, LedgerError> {
        // The memory store only grows and the log follows its order: records past the log
        // are waiting for the integrator; none can be logged after an unlogged one.
        let size = self.state().size;
        Ok(self
            .store
            .committed(size, limit)
            .into_iter()
            .map(|r| Unlogged {
                rid: r.rid,
                successor_logged: false,
            })
            .collect())
    }

    async fn unfaithful_payloads(&self, _limit: usize) -> Result<Vec<(Uuid, String)>, LedgerError> {
        // Every payload here passed the append checks and is kept as its canonical text.
        Ok(Vec::new())
    }

    async fn misordered(&self, _limit: usize) -> Result<Vec<(Uuid, Uuid)>, LedgerError> {
        // Leaf order is the store's commit order, which has predecessors first.
        Ok(Vec::new())
    }
}
