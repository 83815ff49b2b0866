//! Writing buffered records to PostgreSQL after an outage.
//!
//! Records are written in buffer order, a batch at a time, skipping rids already stored: a
//! record whose batch committed just before the connection died is found (same rid, same
//! content) and not written twice. When the database refuses a record because its anchor was
//! extended meanwhile (the fork guard, e.g. by another process), the policy is **re-chain**:
//! the record and the anchor's later buffered records move onto the database's head (same
//! rid and content, new `prev_hash`, `ts` and `hash`); each is reported. It re-chains as
//! often as it takes (pausing briefly after `RECHAIN_EAGER` attempts in a row): an
//! acknowledged record is never given up because its anchor moved. A record refused for any
//! other reason (its rid is stored with other content) is **quarantined**: not written, but
//! kept by the writer (listed, counted in `ledger_records_kept`, reported by health and
//! written to the kept file of the spool directory), and its anchor's later records re-chain
//! onto the database head.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use ledger_entities::{LedgerRecord, RecordHash};
use sea_orm::sqlx::PgPool;

use crate::error::LedgerError;
use crate::pg::insert_records;
use crate::pg::store::{PostgresLedgerStore, classify, retry_contention};
use crate::store::{Head, LedgerStore};

/// After this many re-chains of one record in a row, the drain pauses between attempts
/// (growing to [`RECHAIN_PAUSE_MAX`]) so that it does not hammer an anchor other processes
/// are busy extending. It never gives up: the record is acknowledged and must be written.
const RECHAIN_EAGER: usize = 5;
/// Longest pause between two re-chains of one record.
const RECHAIN_PAUSE_MAX: std::time::Duration = std::time::Duration::from_millis(200);

/// How long a drain statement aborted by a deadlock or serialization failure is retried
/// before the drain gives up on this pass (and probes again, as after an outage).
const CONTENTION_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

/// What the drain remembers between batches (and the writer between records): buffered
/// hashes whose records were written under another hash, and hashes never to be written.
#[derive(Debug, Default)]
pub struct DrainState {
    /// Buffered hash -> the head it was written as.
    pub moved: HashMap<RecordHash, Head>,
    /// Hashes of quarantined records.
    pub dropped: HashSet<RecordHash>,
}

impl DrainState {
    /// True when a record with this `prev_hash` must be re-chained before it is written.
    pub fn affects(&self, prev_hash: Option<RecordHash>) -> bool {
        prev_hash.is_some_and(|p| self.moved.contains_key(&p) || self.dropped.contains(&p))
    }
}

/// What happened to a drain batch.
#[derive(Debug, Default)]
pub struct DrainOutcome {
    /// Records from the front of the batch now in PostgreSQL (or quarantined): settled.
    pub settled: usize,
    /// Records written under a new hash: (hash they were buffered with, record as written).
    pub rechained: Vec<(RecordHash, Arc<LedgerRecord>)>,
    /// Records refused for good, with the reason (they are not in PostgreSQL).
    pub quarantined: Vec<(Arc<LedgerRecord>, LedgerError)>,
    /// The database became unreachable; records from `settled` on are still to be written.
    pub unavailable: Option<LedgerError>,
}

/// True when `stored` is the same record as `r`, possibly re-chained (same rid, anchor and
/// content; `prev_hash`/`ts`/`hash` may differ).
fn same_record(stored: &LedgerRecord, r: &LedgerRecord) -> bool {
    stored.same_record(r)
}

/// `r` moved onto `head` (the anchor's first record when `None`): same rid and content, new
/// `prev_hash`, `ts` and hash.
fn relinked(r: &LedgerRecord, head: Option<&Head>) -> Result<LedgerRecord, ledger_entities::Error> {
    match head {
        Some(h) => r.rechained(h.hash, h.ts),
        None => {
            let mut n = r.clone();
            n.prev_hash = None;
            n.hash = ledger_entities::record::record_hash(&n)?;
            Ok(n)
        }
    }
}

/// Writes `batch` (in buffer order); see the module doc.
pub async fn drain_batch(
    pool: &PgPool,
    store: &PostgresLedgerStore,
    batch: &[Arc<LedgerRecord>],
    state: &mut DrainState,
) -> DrainOutcome {
    let mut out = DrainOutcome::default();
    if batch.iter().any(|r| state.affects(r.prev_hash)) {
        one_by_one(pool, store, batch, state, &mut out).await;
        return out;
    }
    match retry_contention(CONTENTION_RETRY, || {
        insert_records(pool, batch, store.replication_mode())
    })
    .await
    {
        Ok(taken) => {
            if taken.is_empty() {
                out.settled = batch.len();
                return out;
            }
            // Some rid is stored with other content (or re-chained by an earlier drain): the
            // rows inserted above are in; settle the rest one by one below, where stored
            // records are recognised.
        }
        Err(e) => match classify(&e, None) {
            e @ (LedgerError::Unavailable(_) | LedgerError::Contention(_)) => {
                out.unavailable = Some(e);
                return out;
            }
            e => tracing::debug!(error = %e, "drain batch refused as a whole"),
        },
    }
    tracing::debug!(
        records = batch.len(),
        "drain batch falls back to one record at a time"
    );
    one_by_one(pool, store, batch, state, &mut out).await;
    out
}

async fn one_by_one(
    pool: &PgPool,
    store: &PostgresLedgerStore,
    batch: &[Arc<LedgerRecord>],
    state: &mut DrainState,
    out: &mut DrainOutcome,
) {
    let DrainState { moved, dropped } = state;
    for original in batch {
        let mut r = Arc::clone(original);
        let mut attempts = 0;
        loop {
            // Follow the predecessor if it moved or was dropped.
            if let Some(prev) = r.prev_hash {
                let new_prev = if let Some(h) = moved.get(&prev) {
                    Some(h.clone())
                } else if dropped.contains(&prev) {
                    match store.head(r.anchor_id).await {
                        Ok(h) => h,
                        Err(e) => {
                            out.unavailable = Some(e);
                            return;
                        }
                    }
                } else {
                    None
                };
                if let Some(h) = new_prev {
                    match r.rechained(h.hash, h.ts) {
                        Ok(n) => r = Arc::new(n),
                        Err(e) => {
                            out.quarantined.push((Arc::clone(original), e.into()));
                            dropped.insert(original.hash);
                            break;
                        }
                    }
                }
            }
            let one = std::slice::from_ref(&r);
            match retry_contention(CONTENTION_RETRY, || {
                insert_records(pool, one, store.replication_mode())
            })
            .await
            {
                Ok(taken) if taken.is_empty() => {
                    if r.hash != original.hash {
                        moved.insert(original.hash, Head::of(&r));
                        out.rechained.push((original.hash, Arc::clone(&r)));
                    }
                    break;
                }
                Ok(_) => {
                    // The rid is stored: the same record (perhaps re-chained before a crash)
                    // or a different one.
                    match store.get(r.rid).await {
                        Ok(Some(stored)) if same_record(&stored, &r) => {
                            if stored.hash != original.hash {
                                moved.insert(original.hash, Head::of(&stored));
                                out.rechained.push((original.hash, stored));
                            }
                        }
                        Ok(_) => {
                            out.quarantined.push((
                                Arc::clone(original),
                                LedgerError::Conflict {
                                    rid: r.rid,
                                    reason: "stored in PostgreSQL with different content".into(),
                                },
                            ));
                            dropped.insert(original.hash);
                        }
                        Err(e) => {
                            out.unavailable = Some(e);
                            return;
                        }
                    }
                    break;
                }
                Err(e) => match classify(&e, Some(&r)) {
                    // Contention beyond the retry window: try again on the next pass, never
                    // quarantine a record for it.
                    e @ (LedgerError::Unavailable(_) | LedgerError::Contention(_)) => {
                        out.unavailable = Some(e);
                        return;
                    }
                    // The anchor moved (another writer extended it, or the predecessor is not
                    // stored): re-chain onto the database's head, as often as it takes.
                    LedgerError::ForkRefused { .. } => {
                        attempts += 1;
                        if attempts > RECHAIN_EAGER {
                            let pause = std::time::Duration::from_millis(
                                5 * (attempts - RECHAIN_EAGER) as u64,
                            );
                            tokio::time::sleep(pause.min(RECHAIN_PAUSE_MAX)).await;
                        }
                        match store.head(r.anchor_id).await {
                            Ok(h) => match relinked(&r, h.as_ref()) {
                                Ok(n) => r = Arc::new(n),
                                Err(e) => {
                                    out.quarantined.push((Arc::clone(original), e.into()));
                                    dropped.insert(original.hash);
                                    break;
                                }
                            },
                            Err(e) => {
                                out.unavailable = Some(e);
                                return;
                            }
                        }
                    }
                    other => {
                        out.quarantined.push((Arc::clone(original), other));
                        dropped.insert(original.hash);
                        break;
                    }
                },
            }
        }
        out.settled += 1;
    }
}
