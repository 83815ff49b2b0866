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
//!
//! A batch whose records must re-chain (their predecessors moved, or the database refused
//! the batch because an anchor moved) is first re-chained whole onto the anchors' current
//! heads, read in one query, and written in one statement ([`rechain_batch`]); only when that
//! fails [`BATCH_RECHAIN_TRIES`] times (other processes keep extending the anchors), or a rid
//! of the batch is already stored, is it settled one unit at a time. Several processes
//! draining onto the same anchors would otherwise write one statement per record.

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

/// Attempts to re-chain and write a whole batch onto freshly read heads before the drain
/// settles it one unit at a time. Two processes draining onto the same anchors refuse each
/// other's batches about every other time; a random pause between tries (growing up to
/// [`BATCH_RECHAIN_PAUSE_MAX`]) breaks the symmetry.
const BATCH_RECHAIN_TRIES: usize = 10;
/// Longest random pause between two tries of a batch re-chain.
const BATCH_RECHAIN_PAUSE_MAX: std::time::Duration = std::time::Duration::from_millis(100);

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

/// `unit` (one record, or an atomic batch in chain order) with its first record moved onto
/// `head` and each later one onto the one before it.
fn rechain_unit(
    unit: &[Arc<LedgerRecord>],
    head: Option<&Head>,
) -> Result<Vec<Arc<LedgerRecord>>, ledger_entities::Error> {
    let mut out: Vec<Arc<LedgerRecord>> = Vec::with_capacity(unit.len());
    for r in unit {
        let n = match out.last() {
            None => relinked(r, head)?,
            Some(prev) => r.rechained(prev.hash, prev.ts)?,
        };
        out.push(Arc::new(n));
    }
    Ok(out)
}

/// Writes one unit in one statement (an atomic batch in a transaction, rolled back whole if
/// one of its records is skipped). Returns the indexes of records whose rid is stored.
async fn insert_unit(
    pool: &PgPool,
    unit: &[Arc<LedgerRecord>],
    replication: crate::config::Replication,
) -> Result<Vec<usize>, sea_orm::DbErr> {
    if unit.len() > 1 {
        crate::pg::insert_records_unless(pool, unit, replication, |_| true)
            .await
            .map(|(taken, _)| taken)
    } else {
        insert_records(pool, unit, replication).await
    }
}

/// Writes `batch` (in buffer order; `units` are its units' sizes, an atomic batch being one
/// unit written whole or not at all); see the module doc.
pub async fn drain_batch(
    pool: &PgPool,
    store: &PostgresLedgerStore,
    batch: &[Arc<LedgerRecord>],
    units: &[usize],
    state: &mut DrainState,
) -> DrainOutcome {
    let mut out = DrainOutcome::default();
    if batch.iter().any(|r| state.affects(r.prev_hash)) {
        if !rechain_batch(pool, store, batch, units, state, &mut out).await {
            one_by_one(pool, store, batch, units, state, &mut out).await;
        }
        return out;
    }
    let atomic = units.iter().any(|&u| u > 1);
    let written = retry_contention(CONTENTION_RETRY, || async {
        if atomic {
            // Rolled back if any rid is stored: the units are then settled one by one, so
            // no atomic batch is written without one of its records.
            crate::pg::insert_records_unless(pool, batch, store.replication_mode(), |_| true).await
        } else {
            insert_records(pool, batch, store.replication_mode())
                .await
                .map(|taken| (taken, true))
        }
    })
    .await;
    match written {
        Ok((taken, _)) => {
            if taken.is_empty() {
                out.settled = batch.len();
                return out;
            }
            // Some rid is stored with other content (or re-chained by an earlier drain): the
            // rows inserted above are in (none if the batch held an atomic batch: rolled
            // back); settle the rest one by one below, where stored records are recognised.
        }
        Err(e) => match classify(&e, None) {
            e @ (LedgerError::Unavailable(_) | LedgerError::Contention(_)) => {
                out.unavailable = Some(e);
                return out;
            }
            // An anchor moved: nothing of the batch is written (one statement); re-chain it.
            LedgerError::ForkRefused { .. } => {
                if rechain_batch(pool, store, batch, units, state, &mut out).await {
                    return out;
                }
            }
            e => tracing::debug!(error = %e, "drain batch refused as a whole"),
        },
    }
    tracing::debug!(
        records = batch.len(),
        "drain batch falls back to one unit at a time"
    );
    one_by_one(pool, store, batch, units, state, &mut out).await;
    out
}

/// Notes every record of `written` (the records as stored, in the order of `originals`)
/// whose hash differs from the one it was buffered with: its successors follow it
/// (`moved`), and the writer reports it re-chained (`out`).
fn note_moves(
    originals: &[Arc<LedgerRecord>],
    written: impl IntoIterator<Item = Arc<LedgerRecord>>,
    moved: &mut HashMap<RecordHash, Head>,
    out: &mut DrainOutcome,
) {
    for (o, r) in originals.iter().zip(written) {
        if r.hash != o.hash {
            moved.insert(o.hash, Head::of(&r));
            out.rechained.push((o.hash, r));
        }
    }
}

/// Re-chains `batch` whole onto the current heads of its anchors (one query) — each unit
/// onto the one before it in its anchor, the first onto the database's head, a unit already
/// linked to it left as it is — and writes it in one statement, up to
/// [`BATCH_RECHAIN_TRIES`] times. True when the batch is settled (written; `out` and
/// `state.moved` name every record that moved) or the database became unreachable
/// (`out.unavailable`); false when the caller must settle it one unit at a time: a rid of
/// the batch is stored (rows of a non-atomic batch may be in: the unit-at-a-time path
/// recognises them as stored), a refusal other than a moved anchor, or the tries ran out.
async fn rechain_batch(
    pool: &PgPool,
    store: &PostgresLedgerStore,
    batch: &[Arc<LedgerRecord>],
    units: &[usize],
    state: &mut DrainState,
    out: &mut DrainOutcome,
) -> bool {
    let mut anchors: Vec<uuid::Uuid> = batch.iter().map(|r| r.anchor_id).collect();
    anchors.sort_unstable();
    anchors.dedup();
    let atomic = units.iter().any(|&u| u > 1);
    for attempt in 0..BATCH_RECHAIN_TRIES {
        if attempt > 0 {
            let most = (10 * attempt as u64).min(BATCH_RECHAIN_PAUSE_MAX.as_millis() as u64);
            let pause = rand::random_range(0..=most);
            tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
        }
        let heads = match store.heads(&anchors).await {
            Ok(h) => h,
            Err(e @ (LedgerError::Unavailable(_) | LedgerError::Contention(_))) => {
                out.unavailable = Some(e);
                return true;
            }
            Err(_) => return false,
        };
        let mut tips: HashMap<uuid::Uuid, Option<Head>> = HashMap::new();
        let mut linked: Vec<Arc<LedgerRecord>> = Vec::with_capacity(batch.len());
        let mut at = 0;
        // Sizes past the end of `units` (never, when the writer passes them) count as one.
        for size in units.iter().copied().chain(std::iter::repeat(1)) {
            if at >= batch.len() {
                break;
            }
            let unit = &batch[at..(at + size.max(1)).min(batch.len())];
            at += unit.len();
            let tip = tips
                .entry(unit[0].anchor_id)
                .or_insert_with(|| heads.get(&unit[0].anchor_id).cloned());
            let unit = if unit[0].prev_hash == tip.as_ref().map(|h| h.hash) {
                unit.to_vec()
            } else {
                match rechain_unit(unit, tip.as_ref()) {
                    Ok(n) => n,
                    // A record that cannot be hashed again: the unit path quarantines it.
                    Err(_) => return false,
                }
            };
            *tip = unit.last().map(|r| Head::of(r));
            linked.extend(unit);
        }
        let written = if atomic {
            crate::pg::insert_records_unless(pool, &linked, store.replication_mode(), |_| true)
                .await
                .map(|(taken, _)| taken)
        } else {
            insert_records(pool, &linked, store.replication_mode()).await
        };
        match written {
            Ok(taken) if taken.is_empty() => {
                note_moves(batch, linked, &mut state.moved, out);
                out.settled = batch.len();
                return true;
            }
            Ok(_) => return false,
            Err(e) => match classify(&e, None) {
                e @ (LedgerError::Unavailable(_) | LedgerError::Contention(_)) => {
                    out.unavailable = Some(e);
                    return true;
                }
                // Another writer extended an anchor between the read and the write.
                LedgerError::ForkRefused { .. } => continue,
                _ => return false,
            },
        }
    }
    false
}

/// Quarantines every record of `unit` (an atomic batch goes whole or not at all): the first
/// refused with `why`, the others because they go with it.
fn quarantine_unit(
    unit: &[Arc<LedgerRecord>],
    why: LedgerError,
    dropped: &mut HashSet<RecordHash>,
    out: &mut DrainOutcome,
) {
    for (i, r) in unit.iter().enumerate() {
        let e = if i == 0 {
            why.clone()
        } else {
            LedgerError::Aborted {
                anchor_id: r.anchor_id,
            }
        };
        out.quarantined.push((Arc::clone(r), e));
        dropped.insert(r.hash);
    }
}

async fn one_by_one(
    pool: &PgPool,
    store: &PostgresLedgerStore,
    batch: &[Arc<LedgerRecord>],
    units: &[usize],
    state: &mut DrainState,
    out: &mut DrainOutcome,
) {
    let DrainState { moved, dropped } = state;
    let mut at = 0;
    // Sizes past the end of `units` (never, when the writer passes them) count as one.
    let sizes = units.iter().copied().chain(std::iter::repeat(1));
    for size in sizes {
        if at >= batch.len() {
            break;
        }
        let originals = &batch[at..(at + size.max(1)).min(batch.len())];
        let mut unit: Vec<Arc<LedgerRecord>> = originals.to_vec();
        let mut attempts = 0;
        loop {
            // Follow the predecessor if it moved or was dropped.
            if let Some(prev) = unit[0].prev_hash {
                let new_prev = if let Some(h) = moved.get(&prev) {
                    Some(Some(h.clone()))
                } else if dropped.contains(&prev) {
                    match store.head(unit[0].anchor_id).await {
                        Ok(h) => Some(h),
                        Err(e) => {
                            out.unavailable = Some(e);
                            return;
                        }
                    }
                } else {
                    None
                };
                if let Some(h) = new_prev {
                    match rechain_unit(&unit, h.as_ref()) {
                        Ok(n) => unit = n,
                        Err(e) => {
                            quarantine_unit(originals, e.into(), dropped, out);
                            break;
                        }
                    }
                }
            }
            match retry_contention(CONTENTION_RETRY, || {
                insert_unit(pool, &unit, store.replication_mode())
            })
            .await
            {
                Ok(taken) if taken.is_empty() => {
                    note_moves(originals, unit, moved, out);
                    break;
                }
                Ok(_) => {
                    // A rid is stored: the same records (perhaps re-chained before a crash)
                    // or a different one. Nothing of this unit was written by this call.
                    let mut stored_all = Vec::with_capacity(unit.len());
                    let mut conflict = None;
                    for r in &unit {
                        match store.get(r.rid).await {
                            Ok(Some(stored)) if same_record(&stored, r) => stored_all.push(stored),
                            Ok(_) => {
                                conflict = Some(r.rid);
                                break;
                            }
                            Err(e) => {
                                out.unavailable = Some(e);
                                return;
                            }
                        }
                    }
                    match conflict {
                        None => note_moves(originals, stored_all, moved, out),
                        Some(rid) => quarantine_unit(
                            originals,
                            LedgerError::Conflict {
                                rid,
                                reason: "stored in PostgreSQL with different content".into(),
                            },
                            dropped,
                            out,
                        ),
                    }
                    break;
                }
                Err(e) => match classify(&e, (unit.len() == 1).then(|| unit[0].as_ref())) {
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
                        match store.head(unit[0].anchor_id).await {
                            Ok(h) => match rechain_unit(&unit, h.as_ref()) {
                                Ok(n) => unit = n,
                                Err(e) => {
                                    quarantine_unit(originals, e.into(), dropped, out);
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
                        quarantine_unit(originals, other, dropped, out);
                        break;
                    }
                },
            }
        }
        at += originals.len();
        out.settled += originals.len();
    }
}
