//! Where records live: the [`LedgerStore`] trait and its implementations.
//!
//! Stores hold *hashed* records; they never assign hashes or timestamps. Every store enforces
//! the fork guard itself (a record's `prev_hash` must be its anchor's current head), so no
//! writer — not even a second process — can fork a chain.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ledger_entities::{LedgerRecord, RecordHash};
use uuid::Uuid;

use crate::config::{Backend, Replication};
use crate::error::LedgerError;

pub mod memory;

pub use memory::MemoryLedgerStore;

/// A record written to PostgreSQL under a new hash: its anchor was extended in the
/// database, so it moved onto the database's head (same rid and content; new `prev_hash`,
/// `ts` and hash).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RechainedRecord {
    /// The record's rid.
    pub rid: Uuid,
    /// Its anchor.
    pub anchor_id: Uuid,
    /// The hash it was acknowledged (and spooled) with.
    pub old_hash: RecordHash,
    /// The hash it has in PostgreSQL.
    pub new_hash: RecordHash,
}

/// How durable an acknowledged record is — and so whether its acknowledged hash is final.
///
/// `Committed` and `Volatile` records are stored as acknowledged: their hash (and `ts`,
/// `prev_hash`) is final. `Buffered` and `Spooled` records wait on the outage fallback; if
/// another process extends their anchor before the drain writes them, the drain re-chains
/// them (same rid and content, new `prev_hash`, `ts` and hash), so their acknowledged hash
/// is *provisional* ([`Durability::hash_is_final`]). The final record is what
/// `Ledger::get(rid)` returns once the drain has written it (`Ledger::await_drain`), and
/// `Ledger::rechained(rid)` names its acknowledged and final hash if it moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Durability {
    /// In this process's memory only (the `memory` backend): lost when the process exits.
    Volatile,
    /// Held on the memory fallback during a PostgreSQL outage; written to PostgreSQL when it
    /// returns. Lost if the process dies before that, unless spooled.
    Buffered,
    /// Held on the memory fallback and fsynced to the local spool file; survives a crash.
    Spooled,
    /// Committed in PostgreSQL.
    Committed,
}

impl Durability {
    /// True when the record is stored as acknowledged (`Committed`, `Volatile`): its hash is
    /// final. False for `Buffered` and `Spooled`: an outage drain may still re-chain it
    /// (see the type's documentation).
    pub fn hash_is_final(self) -> bool {
        matches!(self, Durability::Committed | Durability::Volatile)
    }
}

/// The durability of a record found in a store of this backend.
pub fn durability_of(backend: Backend) -> Durability {
    match backend {
        Backend::Memory => Durability::Volatile,
        Backend::Postgres => Durability::Committed,
    }
}

/// The last record of an anchor: what the next append links to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// The head record's id.
    pub rid: Uuid,
    /// The head record's hash (the next record's `prev_hash`).
    pub hash: RecordHash,
    /// The head record's timestamp (the next record's `ts` must be later).
    pub ts: DateTime<Utc>,
}

impl Head {
    /// The head formed by `record`.
    pub fn of(record: &LedgerRecord) -> Self {
        Self {
            rid: record.rid,
            hash: record.hash,
            ts: record.ts,
        }
    }
}

/// A window of one anchor's records, in chain order: `since` inclusive, `until` exclusive,
/// at most `limit` records. Page on by setting `since` to the last `ts` seen plus 1 µs
/// (timestamps strictly increase within an anchor).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordRange {
    /// Earliest `ts` included.
    pub since: Option<DateTime<Utc>>,
    /// First `ts` excluded.
    pub until: Option<DateTime<Utc>>,
    /// Most records returned.
    pub limit: usize,
}

impl Default for RecordRange {
    fn default() -> Self {
        Self {
            since: None,
            until: None,
            limit: 1000,
        }
    }
}

impl RecordRange {
    /// The range after `last` with the same bounds and limit (next page).
    pub fn after(&self, last: &LedgerRecord) -> Self {
        Self {
            since: Some(last.ts + chrono::Duration::microseconds(1)),
            ..self.clone()
        }
    }

    /// True when `ts` lies inside the range bounds.
    pub fn contains(&self, ts: DateTime<Utc>) -> bool {
        self.since.is_none_or(|s| ts >= s) && self.until.is_none_or(|u| ts < u)
    }
}

/// A position in the `(anchor_id, ts, rid)` order of [`LedgerStore::scan`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ScanKey {
    /// The anchor.
    pub anchor_id: Uuid,
    /// The record's timestamp.
    pub ts: DateTime<Utc>,
    /// The record id (orders records that share a timestamp, which a valid chain never has).
    pub rid: Uuid,
}

impl ScanKey {
    /// The position of `record`.
    pub fn of(record: &LedgerRecord) -> Self {
        Self {
            anchor_id: record.anchor_id,
            ts: record.ts,
            rid: record.rid,
        }
    }
}

/// Storage for hashed records. Implementations are concurrent and cheap to share
/// (`Arc<dyn LedgerStore>`).
#[async_trait]
pub trait LedgerStore: Send + Sync + 'static {
    /// Which backend this is.
    fn backend(&self) -> Backend;

    /// Inserts records atomically, in order: all of them or none. Records of one anchor must
    /// be in chain order; each one's `prev_hash` must be its anchor's head at that point
    /// (else [`LedgerError::ForkRefused`]) and its rid and hash new (else
    /// [`LedgerError::Conflict`]).
    async fn insert(&self, records: &[Arc<LedgerRecord>]) -> Result<(), LedgerError>;

    /// The record with this rid.
    async fn get(&self, rid: Uuid) -> Result<Option<Arc<LedgerRecord>>, LedgerError>;

    /// The record with this hash.
    async fn get_by_hash(&self, hash: RecordHash)
    -> Result<Option<Arc<LedgerRecord>>, LedgerError>;

    /// One anchor's records within `range`, in chain order (empty for an unknown anchor).
    async fn records(
        &self,
        anchor_id: Uuid,
        range: &RecordRange,
    ) -> Result<Vec<Arc<LedgerRecord>>, LedgerError>;

    /// The anchor's last record, `None` if it has none.
    async fn head(&self, anchor_id: Uuid) -> Result<Option<Head>, LedgerError>;

    /// Anchor ids in ascending order, after `after`, at most `limit`.
    async fn anchors(&self, after: Option<Uuid>, limit: usize) -> Result<Vec<Uuid>, LedgerError>;

    /// Number of records stored.
    async fn count(&self) -> Result<u64, LedgerError>;

    /// Number of records of one anchor.
    async fn count_anchor(&self, anchor_id: Uuid) -> Result<u64, LedgerError>;

    /// The records with these rids that are stored (in no particular order). The default
    /// asks [`LedgerStore::get`] for each; stores with a database answer in one query.
    async fn get_many(&self, rids: &[Uuid]) -> Result<Vec<Arc<LedgerRecord>>, LedgerError> {
        let found = futures::future::try_join_all(rids.iter().map(|rid| self.get(*rid))).await?;
        Ok(found.into_iter().flatten().collect())
    }

    /// The heads of these anchors (anchors without records are absent). The default asks
    /// [`LedgerStore::head`] for each, concurrently (the PostgreSQL store answers concurrent
    /// head lookups with one batched query).
    async fn heads(&self, anchors: &[Uuid]) -> Result<HashMap<Uuid, Head>, LedgerError> {
        let heads = futures::future::try_join_all(anchors.iter().map(|a| self.head(*a))).await?;
        Ok(anchors
            .iter()
            .zip(heads)
            .filter_map(|(a, h)| h.map(|h| (*a, h)))
            .collect())
    }

    /// Records of every anchor in `(anchor_id, ts, rid)` order, strictly after `after`
    /// (a position returned by [`ScanKey::of`] for the last record of the previous page),
    /// with `ts >= since` when given, at most `limit`: the pages of an export, each anchor's
    /// records in chain order. Records appended meanwhile to an anchor not yet passed are
    /// included; each anchor's records form a prefix of its chain (appends only add later
    /// `ts`). The default walks [`LedgerStore::anchors`] and [`LedgerStore::records`];
    /// stores with a database answer with one indexed query per page.
    async fn scan(
        &self,
        after: Option<&ScanKey>,
        since: Option<DateTime<Utc>>,
        limit: usize,
    ) -> Result<Vec<Arc<LedgerRecord>>, LedgerError> {
        let mut out: Vec<Arc<LedgerRecord>> = Vec::new();
        let mut next_anchor = after.map(|k| k.anchor_id);
        if let Some(key) = after {
            // The rest of the anchor the previous page ended in.
            let range = RecordRange {
                since: Some(since.map_or(key.ts, |s| s.max(key.ts))),
                until: None,
                limit: limit.saturating_add(1),
            };
            let rest = self.records(key.anchor_id, &range).await?;
            out.extend(rest.into_iter().filter(|r| ScanKey::of(r) > *key));
        }
        while out.len() < limit {
            let anchors = self.anchors(next_anchor, limit.clamp(100, 10_000)).await?;
            let Some(last) = anchors.last() else { break };
            next_anchor = Some(*last);
            for anchor in anchors {
                let range = RecordRange {
                    since,
                    until: None,
                    limit: limit - out.len(),
                };
                out.extend(self.records(anchor, &range).await?);
                if out.len() >= limit {
                    break;
                }
            }
        }
        out.truncate(limit);
        Ok(out)
    }

    /// Checks that the database behind the store answers (for PostgreSQL, a `SELECT 1`
    /// through the pool), for [`crate::Ledger::health`]. Stores without a database answer at
    /// once: the default is `Ok(())`.
    ///
    /// # Errors
    /// [`LedgerError::Unavailable`] when the database cannot be reached.
    async fn ping(&self) -> Result<(), LedgerError> {
        Ok(())
    }

    /// The server's replication under `replication: synchronous` (read within `limit`),
    /// for `health` and the metrics; `None` for a store that does not replicate or a
    /// ledger configured `replication: local`.
    async fn replication(
        &self,
        limit: std::time::Duration,
    ) -> Option<Result<ReplicationState, LedgerError>> {
        let _ = limit;
        None
    }
}

/// The server's replication as the ledger sees it. Serializes (in `health --json`) as
/// `{"mode", "synchronous_standby_names", "sync_standbys", "flush_lag_seconds"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationState {
    /// The configured mode.
    pub mode: Replication,
    /// The server's `synchronous_standby_names` (empty: none).
    pub standby_names: String,
    /// Standbys streaming with `sync_state` `sync` or `quorum`; `None` when the ledger's
    /// role may not read `pg_stat_replication` (needs `pg_monitor` or superuser).
    pub sync_standbys: Option<u32>,
    /// The largest `flush_lag` among those standbys (what a synchronous commit waits for).
    pub flush_lag: Option<std::time::Duration>,
}

impl ReplicationState {
    /// Why `Committed` appends cannot currently be replicated, if they cannot.
    pub fn problem(&self) -> Option<String> {
        if self.mode == Replication::Local {
            return None;
        }
        if self.standby_names.trim().is_empty() {
            return Some(
                "replication: synchronous, but the server has no synchronous_standby_names: writes wait in the outage buffer".into(),
            );
        }
        match self.sync_standbys {
            Some(0) => Some(
                "replication: synchronous, but no synchronous standby is streaming: commits wait for one".into(),
            ),
            _ => None,
        }
    }
}

impl serde::Serialize for ReplicationState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        let mut st = s.serialize_struct("ReplicationState", 4)?;
        st.serialize_field("mode", self.mode.as_str())?;
        st.serialize_field("synchronous_standby_names", &self.standby_names)?;
        st.serialize_field("sync_standbys", &self.sync_standbys)?;
        st.serialize_field(
            "flush_lag_seconds",
            &self.flush_lag.map(|d| d.as_secs_f64()),
        )?;
        st.end()
    }
}
