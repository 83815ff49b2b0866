//! Where records live: the [`LedgerStore`] trait and its implementations.
//!
//! Stores hold *hashed* records; they never assign hashes or timestamps. Every store enforces
//! the fork guard itself (a record's `prev_hash` must be its anchor's current head), so no
//! writer — not even a second process — can fork a chain.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ledger_entities::{LedgerRecord, RecordHash};
use uuid::Uuid;

use crate::config::{Backend, LedgerConfig};
use crate::error::LedgerError;

pub mod memory;
pub mod postgres;

pub use memory::MemoryLedgerStore;
pub use postgres::PostgresLedgerStore;

/// How durable an acknowledged record is.
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

    /// Checks that the database behind the store answers (for PostgreSQL, a `SELECT 1`
    /// through the pool), for [`crate::Ledger::health`]. Stores without a database answer at
    /// once: the default is `Ok(())`.
    ///
    /// # Errors
    /// [`LedgerError::Unavailable`] when the database cannot be reached.
    async fn ping(&self) -> Result<(), LedgerError> {
        Ok(())
    }
}

/// The store `config` names, ready for reads and [`LedgerStore::insert`]: a fresh
/// [`MemoryLedgerStore`] for `backend: memory` (no network access at all), or for
/// `backend: postgres` a [`PostgresLedgerStore`] over a new pool, after checking that the
/// schema is up to date (or migrating it when `auto_migrate` is set).
///
/// Errors: [`LedgerError::Config`] (bad configuration), [`LedgerError::Unavailable`] (the
/// database cannot be reached), [`LedgerError::SchemaMissing`] (run `ledger migrate up`).
/// Unlike [`crate::Ledger::start`] it never falls back to memory.
pub async fn create_ledger_store(
    config: &LedgerConfig,
) -> Result<Arc<dyn LedgerStore>, LedgerError> {
    config.check()?;
    match config.backend {
        Backend::Memory => Ok(Arc::new(MemoryLedgerStore::new())),
        Backend::Postgres => Ok(Arc::new(postgres::open(config).await?)),
    }
}
