//! The live memory → PostgreSQL migration behind [`crate::Ledger::migrate_to_postgres`].
//!
//! The memory store keeps every record in commit order (predecessors first), so a copy is a
//! walk of that order from a position: each *round* copies the records committed since the
//! last one while appends continue, through [`crate::pg::insert_records`] (the statement the
//! writer, the drain and import use: a rid already stored with the same hash is skipped, so
//! an interrupted run is simply run again). The last round runs with appends quiesced, then
//! the ledger switches (see `Ledger::migrate_to_postgres`).
//!
//! # Layout
//! - [`MigrationReport`]: what a migration did.
//! - [`check_target`]: refuses a target whose chains conflict with the memory chains.
//! - [`copy_range`]: one round: verify and write the records between two positions.
//! - [`verify_heads`]: after the last round, every memory anchor's head is PostgreSQL's.

use std::sync::Arc;
use std::time::Duration;

use ledger_entities::LedgerRecord;
use sea_orm::sqlx::PgPool;
use serde::Serialize;
use uuid::Uuid;

use crate::error::LedgerError;
use crate::pg::store::PostgresLedgerStore;
use crate::store::{LedgerStore, MemoryLedgerStore};

/// Anchors whose heads are compared per query.
const HEADS_PER_QUERY: usize = 1000;

/// What [`crate::Ledger::migrate_to_postgres`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MigrationReport {
    /// Records in the memory store at the switch, all of them now in PostgreSQL (written by
    /// this run, or found stored by an earlier, interrupted run: same rid, same hash).
    pub records: u64,
    /// Anchors in the memory store at the switch (each head checked against PostgreSQL's).
    pub anchors: u64,
    /// Copy rounds while appends continued (the quiesced last round not counted).
    pub rounds: u32,
    /// Records copied in the quiesced last round.
    pub cutover_records: u64,
    /// How long appends were held back: from taking the last append permit to releasing
    /// them all, on the PostgreSQL ledger.
    #[serde(with = "humantime_serde_ms")]
    pub cutover_pause: Duration,
}

/// `Duration` as milliseconds (f64) in the JSON form.
mod humantime_serde_ms {
    use serde::Serializer;

    pub fn serialize<S: Serializer>(d: &std::time::Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64() * 1000.0)
    }
}

/// Refuses the target when a memory anchor's head in PostgreSQL is not a record of the
/// memory chain (another chain of that anchor is stored there). A PostgreSQL head that *is*
/// in the memory chain is a prefix an interrupted run copied: accepted.
pub async fn check_target(
    memory: &MemoryLedgerStore,
    target: &PostgresLedgerStore,
) -> Result<(), LedgerError> {
    let mut after = None;
    loop {
        let anchors = memory.anchors(after, HEADS_PER_QUERY).await?;
        let Some(last) = anchors.last().copied() else {
            return Ok(());
        };
        let heads = target.heads(&anchors).await?;
        for (anchor, head) in heads {
            let ours = memory.get(head.rid).await?;
            if ours.is_none_or(|r| r.hash != head.hash || r.anchor_id != anchor) {
                return Err(LedgerError::MigrationRefused(format!(
                    "the target database holds another chain of anchor {anchor} (its head {} is not a record of the in-memory chain)",
                    head.rid
                )));
            }
        }
        after = Some(last);
    }
}

/// Copies the records committed at positions `from..upto`, verified (each hash
/// recomputed), in batches of `batch_size`. Returns the next position (`upto`).
pub async fn copy_range(
    memory: &MemoryLedgerStore,
    pool: &PgPool,
    from: u64,
    upto: u64,
    batch_size: usize,
    replication: crate::config::Replication,
) -> Result<u64, LedgerError> {
    let mut at = from;
    loop {
        let want = usize::try_from(upto.saturating_sub(at)).unwrap_or(usize::MAX);
        let batch = memory.committed(at, batch_size.max(1).min(want));
        if batch.is_empty() || want == 0 {
            return Ok(at);
        }
        for r in &batch {
            verify_record(r)?;
        }
        let refused = crate::pg::insert_records(pool, &batch, replication)
            .await
            .map_err(|e| match crate::pg::store::classify(&e, None) {
                LedgerError::Database(m) => LedgerError::MigrationRefused(format!(
                    "the target database refused a batch (a conflicting chain or rid): {m}"
                )),
                other => other,
            })?;
        if let Some(&i) = refused.first() {
            return Err(LedgerError::MigrationRefused(format!(
                "the target database stores rid {} with different content",
                batch[i].rid
            )));
        }
        at += batch.len() as u64;
    }
}

/// A memory record whose hash is not the hash of its fields is never copied.
fn verify_record(r: &Arc<LedgerRecord>) -> Result<(), LedgerError> {
    let computed = ledger_entities::record::record_hash(r)?;
    if computed == r.hash {
        Ok(())
    } else {
        Err(LedgerError::Internal(format!(
            "in-memory record {} does not hash to its stored hash; not copied",
            r.rid
        )))
    }
}

/// After the last round (appends quiesced): every memory anchor's head is PostgreSQL's head
/// of that anchor (same rid, same hash). Returns the number of anchors checked.
pub async fn verify_heads(
    memory: &MemoryLedgerStore,
    target: &PostgresLedgerStore,
) -> Result<u64, LedgerError> {
    let mut after: Option<Uuid> = None;
    let mut checked = 0u64;
    loop {
        let anchors = memory.anchors(after, HEADS_PER_QUERY).await?;
        let Some(last) = anchors.last().copied() else {
            return Ok(checked);
        };
        let ours = memory.heads(&anchors).await?;
        let theirs = target.heads(&anchors).await?;
        for anchor in &anchors {
            let (a, b) = (ours.get(anchor), theirs.get(anchor));
            if a.map(|h| (h.rid, h.hash)) != b.map(|h| (h.rid, h.hash)) {
                return Err(LedgerError::Internal(format!(
                    "after the copy, anchor {anchor}'s head in PostgreSQL ({:?}) is not the in-memory head ({:?}); nothing switched",
                    b.map(|h| h.rid),
                    a.map(|h| h.rid)
                )));
            }
        }
        checked += anchors.len() as u64;
        after = Some(last);
    }
}
