//! [`LogStore`]: where the transparency log lives (leaf order, tiles, checkpoints, the
//! integrator's lease and watermark), and the types the integrator exchanges with it.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ledger_entities::{LedgerRecord, RecordHash};
use ledger_tlog::Hash;
use ledger_tlog::tile::{TileId, TileSet};
use uuid::Uuid;

use crate::error::LedgerError;

/// Where the integrator has read up to in the store's commit order: PostgreSQL's
/// `(tx_id, seq)` of the last record taken; for memory, `seq` is the next position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, PartialOrd, Ord)]
pub struct Watermark {
    /// Transaction id (`xid8`) of the last record read; 0 for memory.
    pub tx: u64,
    /// Its identity value (memory: the count of records taken).
    pub seq: i64,
}

/// A checkpoint as stored in `ledger_checkpoints`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    /// Row id.
    pub cid: Uuid,
    /// Tree size (`record_count`).
    pub size: u64,
    /// Root of the whole tree at that size (`merkle_root`).
    pub root: Hash,
    /// First leaf index this checkpoint added (`range_start`); `size` when it added none.
    pub range_start: u64,
    /// The signed note (`sig`, UTF-8), `None` when the ledger has no signing key.
    pub note: Option<String>,
    /// When it was written.
    pub created_at: Option<DateTime<Utc>>,
}

/// The log's state as the integrator resumes it.
#[derive(Debug, Clone, Default)]
pub struct LogState {
    /// Leaves in the log.
    pub size: u64,
    /// Read position in the store.
    pub watermark: Watermark,
    /// The partial tiles of the right edge.
    pub edge_tiles: TileSet,
    /// The latest checkpoint.
    pub checkpoint: Option<StoredCheckpoint>,
}

/// What the integrator needs of a committed record: the leaf is `leaf_hash(hash)`, `ts`
/// measures how long the record waited for a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingRecord {
    /// The record's id (the log's entry).
    pub rid: Uuid,
    /// The record's hash.
    pub hash: RecordHash,
    /// The record's timestamp.
    pub ts: DateTime<Utc>,
}

/// Records ready to integrate.
#[derive(Debug, Default)]
pub struct Pending {
    /// In log order; each one's predecessor is in the log or earlier in this list.
    pub records: Vec<PendingRecord>,
    /// The watermark after them (it stops before any record held back because its
    /// predecessor was not integrable yet; such a record is read again next time).
    pub watermark: Watermark,
    /// True when the read returned a full batch (more are probably waiting).
    pub full: bool,
}

/// One integration step, written atomically and only while the lease is held.
#[derive(Debug, Default)]
pub struct Commit {
    /// Leaf index of `rids[0]` (the tree size before this step).
    pub first_index: u64,
    /// Records added, in leaf order.
    pub rids: Vec<Uuid>,
    /// Their hashes, in the same order (a store may remember them as logged once the step
    /// is written).
    pub hashes: Vec<RecordHash>,
    /// Tiles that changed.
    pub tiles: Vec<(TileId, Vec<Hash>)>,
    /// New watermark.
    pub watermark: Watermark,
    /// A checkpoint to store with it.
    pub checkpoint: Option<StoredCheckpoint>,
}

/// Storage of the transparency log. Every method is safe to call from any process; only
/// the lease holder calls [`LogStore::commit`], and the store refuses it otherwise.
#[async_trait]
pub trait LogStore: Send + Sync + 'static {
    /// Takes or renews the integrator lease for `holder` (true when held after the call).
    async fn acquire(&self, holder: Uuid, lease: Duration) -> Result<bool, LedgerError>;
    /// Gives the lease up (a clean stop), so a standby takes over at once.
    async fn release(&self, holder: Uuid) -> Result<(), LedgerError>;
    /// The state to resume from.
    async fn load(&self) -> Result<LogState, LedgerError>;
    /// Committed records after `watermark` that may be integrated now, at most `limit`.
    async fn pending(&self, watermark: Watermark, limit: usize) -> Result<Pending, LedgerError>;
    /// Records committed after `watermark` (not yet in the log, or logged past a held-back
    /// one), counted up to `cap`, and the `ts` of the first of them in commit order.
    async fn backlog(
        &self,
        watermark: Watermark,
        cap: u64,
    ) -> Result<(u64, Option<DateTime<Utc>>), LedgerError>;
    /// Writes one step. Fails with [`LedgerError::Conflict`]-free
    /// [`LedgerError::Internal`] when the lease was lost or the stored size moved (another
    /// integrator wrote): the caller must reload.
    async fn commit(&self, holder: Uuid, lease: Duration, step: Commit) -> Result<(), LedgerError>;
    /// The latest checkpoint; its note carries the stored witness cosignatures
    /// ([`LogStore::add_cosignature`]) after the log's own signature line, one line per
    /// witness, ordered by the witness's key.
    async fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, LedgerError>;
    /// Stores a witness's cosignature `line` (a signature line without its newline, already
    /// verified by the caller) of the checkpoint `cid`; `witness` is its verifier key string,
    /// `cosigned_at` the cosignature's timestamp. A witness's first cosignature of a
    /// checkpoint is kept (a repeat changes nothing); an unknown `cid` is an error.
    async fn add_cosignature(
        &self,
        cid: Uuid,
        witness: &str,
        line: &str,
        cosigned_at: DateTime<Utc>,
    ) -> Result<(), LedgerError>;
    /// Every checkpoint, by size.
    async fn checkpoints(&self) -> Result<Vec<StoredCheckpoint>, LedgerError>;
    /// A record's leaf index.
    async fn leaf_index(&self, rid: Uuid) -> Result<Option<u64>, LedgerError>;
    /// The stored tiles among `ids` (missing ones are absent from the set).
    async fn read_tiles(&self, ids: &[TileId]) -> Result<TileSet, LedgerError>;
    /// The log's entries from leaf `from`, at most `limit`, in leaf order, each with the
    /// stored record's hash (`None` when the record is gone).
    async fn leaves(&self, from: u64, limit: usize) -> Result<Vec<LeafEntry>, LedgerError>;
    /// The logged records from leaf `from`, at most `limit`, in leaf order, each with its
    /// leaf index (what a subscription delivers; one query per page on PostgreSQL). The
    /// indexes are consecutive from `from`; a leaf whose record is gone (a tampered
    /// database) or does not decode is never skipped: the records before it are returned,
    /// and a read that starts at it fails ([`LedgerError::Log`], [`LedgerError::Database`]).
    async fn records(
        &self,
        from: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Arc<LedgerRecord>)>, LedgerError>;
    /// Leaves in the log now (as stored; every index below it has its record).
    async fn size(&self) -> Result<u64, LedgerError>;
    /// A listener told when any process's integrator grows the log (PostgreSQL: `LISTEN`
    /// on [`LOG_CHANNEL`], on a connection of this store's pool held by the listener);
    /// `None` where the store has none (memory: the integrator's progress tells the one
    /// process). A hint only: a notification may be lost, so readers still poll.
    async fn listen(&self) -> Result<Option<Box<dyn LogListener>>, LedgerError> {
        Ok(None)
    }
    /// Records that are not in the log, each with whether a record that follows it in its
    /// chain is in the log (which no integrator can cause: it means an inserted record).
    async fn unlogged(&self, limit: usize) -> Result<Vec<Unlogged>, LedgerError>;
    /// Logged records whose chain predecessor has a larger leaf index (or is not logged):
    /// `(record, predecessor)`.
    async fn misordered(&self, limit: usize) -> Result<Vec<(Uuid, Uuid)>, LedgerError>;
    /// Records whose stored payload text holds a number a double does not hold exactly
    /// (refused at append by the number rule; decoding would hide it as the nearest double):
    /// `(record, reason)`, at most `limit`. The memory backend only holds appended payloads.
    async fn unfaithful_payloads(&self, limit: usize) -> Result<Vec<(Uuid, String)>, LedgerError>;
}

/// The channel the PostgreSQL integrator notifies (with the new tree size) in the same
/// transaction as each step that adds leaves, so listeners hear of it once it is committed.
pub const LOG_CHANNEL: &str = "avl_ledger_log";

/// What [`LogStore::listen`] returns.
#[async_trait]
pub trait LogListener: Send + Sync {
    /// Waits until the log may have grown: a notification, or a lost connection (whose
    /// notifications are lost, so the caller should read again); reconnects on the next call.
    /// An error (the database is unreachable): wait before calling again.
    async fn changed(&mut self) -> Result<(), LedgerError>;
}

/// One leaf of the log, with the record it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafEntry {
    /// Leaf index.
    pub index: u64,
    /// The record's id.
    pub rid: Uuid,
    /// The stored record's hash; `None` when no record has this rid any more.
    pub hash: Option<String>,
}

/// A record not in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unlogged {
    /// The record's id.
    pub rid: Uuid,
    /// True when its successor in the chain is in the log.
    pub successor_logged: bool,
}
