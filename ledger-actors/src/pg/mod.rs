//! All of the ledger's PostgreSQL SQL but the transparency log's: connecting, error
//! classification, the one batch insert ([`insert_records`]), head loads and reads
//! ([`store`]), and the liveness probes the writer fails over by.
//!
//! Group commit, the outage drain, spool recovery and [`crate::LedgerStore::insert`] all
//! write through it (and import will), so every record reaches `ledger_records` through the
//! same statement and is refused by the same constraints:
//! - `ledger_records_pkey` (rid) — a rid already stored is *skipped*, not an error; the
//!   caller learns which records' rids are stored under another hash;
//! - `ledger_records_hash_key` (hash), `ledger_records_no_fork` (no second successor, no
//!   second genesis) and `ledger_records_prev_fk` (the predecessor must be stored in the same
//!   anchor, see migration `m20261126_000020_prev_fk`) — the whole statement fails.
//!
//! # Layout
//! - [`partition_record`]: the `ledger_partition` row a partitioned ledger's databases keep.
//! - [`store`]: connect ([`store::open`], [`store::sqlx_options`]), error classification
//!   ([`store::classify`], contention retry), [`store::PostgresLedgerStore`] (batched head
//!   loads, reads).
//! - [`answers`], [`unreachable_over`]: the probes behind the writer's failover and
//!   return.
//! - [`insert_records`]: one binary `COPY ledger_records FROM STDIN` per call (one
//!   statement, so one transaction; [`COPY_SQL`]). A COPY cannot skip a row, so when it is
//!   refused for its data (a rid already stored, a fork, a missing predecessor, a value the
//!   server rejects) nothing was written and the call is made again as one
//!   `INSERT ... SELECT FROM UNNEST(...) ON CONFLICT (rid) DO NOTHING` ([`INSERT_SQL`]), the
//!   columns bound as 11 arrays (a fixed parameter count whatever the batch size, so the
//!   prepared statement is reused): that statement skips stored rids and names the refused
//!   row exactly as before. Both carry the same replication guard; the constraints and the
//!   predecessor trigger hold for both (a COPY fires statement triggers with their
//!   transition table). Rows are sent sorted by (anchor, chain position): every writer takes
//!   its row locks in that one global order, so two processes' batches cannot deadlock.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use ledger_entities::LedgerRecord;
use sea_orm::sqlx::{self, PgPool};
use sea_orm::{DbErr, RuntimeErr};
use uuid::Uuid;

pub mod endpoints;
pub mod partition_record;
pub mod replication;
pub mod store;

/// The liveness probes' statement: does the server take writes (not in recovery,
/// `transaction_read_only` off), and, for a session under `replication: synchronous`
/// (`replication::MODE_SETTING`), does it have synchronous standbys configured. A standby
/// (in recovery) or a server or database set read-only answers `SELECT 1` as readily as the
/// primary, but every INSERT there fails with 25006; a probe that accepted it would start a
/// drain that fails over again at once, in a loop, for as long as the endpoint points there.
/// The same holds for a synchronous session whose INSERT guard would refuse.
const WRITABLE_SQL: &str = "SELECT NOT pg_is_in_recovery() AND current_setting('transaction_read_only') = 'off', \
     current_setting('avl.replication', true) IS NOT DISTINCT FROM 'synchronous' \
       AND current_setting('synchronous_standby_names') = ''";

/// What a probe found on a server that answered.
async fn writable<'e, E>(executor: E) -> Result<Result<(), String>, sqlx::Error>
where
    E: sqlx::PgExecutor<'e>,
{
    let (takes_writes, unreplicated): (bool, bool) =
        sqlx::query_as(WRITABLE_SQL).fetch_one(executor).await?;
    Ok(if !takes_writes {
        Err("the server answers but is read-only (a standby, or transaction_read_only on)".into())
    } else if unreplicated {
        Err("the server answers but has no synchronous_standby_names (replication: synchronous): it takes no writes the ledger could call Committed".into())
    } else {
        Ok(())
    })
}

/// True if the server answers on `pool` within `limit` and takes writes (the outage
/// probe: a black-holed connection must not hang for the full timeout, and a read-only
/// server is no end of the outage).
pub async fn answers(pool: &PgPool, limit: std::time::Duration) -> bool {
    tokio::time::timeout(limit, writable(pool))
        .await
        .is_ok_and(|r| matches!(r, Ok(Ok(()))))
}

/// True when `e` shows the server gone rather than slow: the connection was refused, reset
/// or closed under us, or the server said it is shutting down or starting up (57P01, 57P02,
/// 57P03) or broke the connection (class 08). A timeout, a full pool, or too many
/// connections (53300) show only slowness or load.
pub fn server_gone(e: &sqlx::Error) -> bool {
    use std::io::ErrorKind as K;
    match e {
        sqlx::Error::Io(io) => matches!(
            io.kind(),
            K::ConnectionRefused
                | K::ConnectionReset
                | K::ConnectionAborted
                | K::NotConnected
                | K::BrokenPipe
                | K::UnexpectedEof
                | K::AddrNotAvailable
        ),
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("08") || matches!(&*c, "57P01" | "57P02" | "57P03")),
        _ => false,
    }
}

/// The evidence a failover needs: probes on *new* connections (not a busy pool's), one
/// after the other with a short pause, until one finds the server answering and taking
/// writes (`Ok`: it is slow, not gone), one finds it gone ([`server_gone`]) or read-only
/// (`Err` at once), or `window` passes without any probe answering (`Err`). A starved
/// machine answers some probe within the window; an unreachable server refuses, resets,
/// or never answers.
pub async fn unreachable_over(
    options: sqlx::postgres::PgConnectOptions,
    window: std::time::Duration,
) -> Result<(), String> {
    use sqlx::Connection as _;
    let until = tokio::time::Instant::now() + window;
    let mut pause = std::time::Duration::from_millis(50);
    let mut probes = 0u32;
    let mut last = String::from("no probe finished");
    loop {
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return Err(format!(
                "{probes} probes on new connections over {window:?} found no server answering (last: {last})"
            ));
        }
        probes += 1;
        let probe = async {
            let mut conn = sqlx::PgConnection::connect_with(&options).await?;
            let found = writable(&mut conn).await?;
            // The answer is in; a slow close changes nothing.
            let _ = conn.close().await;
            Ok::<_, sqlx::Error>(found)
        };
        match tokio::time::timeout(left, probe).await {
            Ok(Ok(found)) => return found,
            Ok(Err(e)) if server_gone(&e) => {
                return Err(format!("a new connection failed: {e}"));
            }
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = "no answer".into(),
        }
        tokio::time::sleep(pause.min(left)).await;
        pause = (pause * 2).min(std::time::Duration::from_millis(500));
    }
}

/// Writes a batch; rows whose rid is already stored are skipped. `p` arrives as text (the
/// canonical payload) and is parsed into JSONB by the server.
///
/// The `WHERE` is the replicated-durability guard (`replication::MODE_SETTING`,
/// `replication::GUARD_SETTING`): a synchronous session on a server without synchronous
/// standbys asks for a setting that does not exist, so the statement fails and writes
/// nothing; any other session asks for `server_version`, which always exists.
const INSERT_SQL: &str = "INSERT INTO ledger_records \
     (rid, anchor_id, slot, kind, ts, prev_hash, hash, payload, sig, producer, version) \
     SELECT r, a, s, k, t, ph, h, p::jsonb, sg, pr, v FROM UNNEST($1::uuid[], $2::uuid[], \
     $3::text[], $4::text[], $5::timestamptz[], $6::text[], $7::text[], $8::text[], \
     $9::bytea[], $10::text[], $11::text[]) AS u(r, a, s, k, t, ph, h, p, sg, pr, v) \
     WHERE current_setting(CASE WHEN current_setting('avl.replication', true) = 'synchronous' \
       AND current_setting('synchronous_standby_names') = '' \
       THEN 'avl.no_synchronous_standby' ELSE 'server_version' END) IS NOT NULL \
     ON CONFLICT (rid) DO NOTHING";

/// The records' INSERT, for the tests that check its guard against `replication`.
#[cfg(test)]
pub(crate) fn insert_sql_for_tests() -> &'static str {
    INSERT_SQL
}

/// The stored hash of each of these rids.
const STORED_HASHES_SQL: &str = "SELECT rid, hash FROM ledger_records WHERE rid = ANY($1::uuid[])";

/// Writes `records` (in order; one anchor's records in chain order) in one statement.
///
/// Returns the indexes of the records that were *not* written because their rid is already
/// stored with another hash (a record whose rid is stored with the same hash is the same
/// record: it counts as written). Any constraint violation fails the whole statement
/// (nothing written); classify the error with [`crate::pg::store::classify`].
///
/// Under `replication: synchronous` the commit is confirmed afterwards
/// ([`replication::confirm`]): an `Err` then means "maybe stored on the primary only", a
/// connectivity error, so the records wait for the outage drain.
pub async fn insert_records(
    pool: &PgPool,
    records: &[Arc<LedgerRecord>],
    replication: crate::config::Replication,
) -> Result<Vec<usize>, DbErr> {
    if records.is_empty() {
        return Ok(Vec::new());
    }
    let mut conn = pool.acquire().await.map_err(exec_err)?;
    let taken = match copy_records(&mut conn, records).await {
        Ok(n) if n == records.len() as u64 => Vec::new(),
        Err(e) if !falls_back(&e) => return Err(exec_err(e)),
        // Refused for its data (nothing written): the INSERT skips stored rids and names the
        // refused row. (A COPY that wrote fewer rows than sent cannot happen — the guard
        // refuses all or none — and would be completed by the INSERT, which skips the rows
        // written, same rid and hash.)
        _ => insert_records_on(&mut conn, records).await?,
    };
    drop(conn);
    replication::confirm(pool, replication).await?;
    Ok(taken)
}

/// [`insert_records`]'s INSERT alone (no COPY: a refused COPY would abort the caller's
/// transaction) on one connection, inside a transaction the caller controls; it confirms
/// replication after its commit, [`replication::confirm`].
pub async fn insert_records_on(
    conn: &mut sqlx::PgConnection,
    records: &[Arc<LedgerRecord>],
) -> Result<Vec<usize>, DbErr> {
    if records.is_empty() {
        return Ok(Vec::new());
    }
    let done = bind(records).execute(&mut *conn).await.map_err(exec_err)?;
    if done.rows_affected() == records.len() as u64 {
        return Ok(Vec::new());
    }
    // Some rids were stored already: find those stored under another hash.
    let rids: Vec<Uuid> = records.iter().map(|r| r.rid).collect();
    let stored: HashMap<Uuid, String> = sqlx::query_as::<_, (Uuid, String)>(STORED_HASHES_SQL)
        .bind(rids)
        .fetch_all(&mut *conn)
        .await
        .map_err(exec_err)?
        .into_iter()
        .collect();
    Ok(records
        .iter()
        .enumerate()
        .filter(|(_, r)| {
            stored
                .get(&r.rid)
                .is_none_or(|h| h.as_bytes() != r.hash.hex_bytes().as_slice())
        })
        .map(|(i, _)| i)
        .collect())
}

/// [`insert_records`] in one transaction, committed only if `refuse(taken)` is false (the
/// indexes of the records whose rid is stored under another hash, which `ON CONFLICT`
/// skipped): an atomic batch with a skipped record is rolled back whole instead of being
/// written without it. Returns the taken indexes and whether the transaction committed.
/// Replication is confirmed after the commit as in [`insert_records`].
pub async fn insert_records_unless(
    pool: &PgPool,
    records: &[Arc<LedgerRecord>],
    replication: crate::config::Replication,
    refuse: impl Fn(&[usize]) -> bool,
) -> Result<(Vec<usize>, bool), DbErr> {
    if records.is_empty() {
        return Ok((Vec::new(), true));
    }
    {
        // A COPY writes every row or none, so it needs no transaction around it: when it
        // succeeds nothing was skipped. Refused for its data, it wrote nothing, and the
        // transaction below finds out what the INSERT skips.
        let mut conn = pool.acquire().await.map_err(exec_err)?;
        match copy_records(&mut conn, records).await {
            Ok(n) if n == records.len() as u64 => {
                drop(conn);
                replication::confirm(pool, replication).await?;
                return Ok((Vec::new(), true));
            }
            Err(e) if !falls_back(&e) => return Err(exec_err(e)),
            // Cannot happen (see `insert_records`); the INSERT below settles it.
            _ => {}
        }
    }
    let mut tx = pool.begin().await.map_err(exec_err)?;
    let taken = insert_records_on(&mut tx, records).await?;
    if !taken.is_empty() && refuse(&taken) {
        tx.rollback().await.map_err(exec_err)?;
        return Ok((taken, false));
    }
    tx.commit().await.map_err(exec_err)?;
    replication::confirm(pool, replication).await?;
    Ok((taken, true))
}

fn exec_err(e: sqlx::Error) -> DbErr {
    DbErr::Exec(RuntimeErr::SqlxError(Arc::new(e)))
}

/// The batch's COPY: the columns of [`INSERT_SQL`], binary rows ([`copy_data`]), and the
/// same replication guard (a COPY's `WHERE` takes the expression as is: under
/// `replication: synchronous` on a server without synchronous standbys its first row raises
/// SQLSTATE 42704, which fails the statement and writes nothing).
const COPY_SQL: &str = "COPY ledger_records \
     (rid, anchor_id, slot, kind, ts, prev_hash, hash, payload, sig, producer, version) \
     FROM STDIN (FORMAT binary) \
     WHERE current_setting(CASE WHEN current_setting('avl.replication', true) = 'synchronous' \
       AND current_setting('synchronous_standby_names') = '' \
       THEN 'avl.no_synchronous_standby' ELSE 'server_version' END) IS NOT NULL";

/// The COPY, for the tests that check its guard against `replication`.
#[cfg(test)]
pub(crate) fn copy_sql_for_tests() -> &'static str {
    COPY_SQL
}

/// Whether a failed COPY is made again as the INSERT: a refusal of the data (SQLSTATE
/// classes 22, 23, ... — nothing was written). Not for connectivity, a refused login,
/// contention (retried by the caller) or the replication guard: the INSERT would fail the
/// same way.
fn falls_back(e: &sqlx::Error) -> bool {
    use crate::error::LedgerError as L;
    matches!(e, sqlx::Error::Database(_))
        && matches!(
            store::classify_sqlx(e, None),
            L::Database(_) | L::ForkRefused { .. } | L::Conflict { .. }
        )
}

/// Writes `records` with one binary COPY ([`COPY_SQL`]) and nothing else (no fallback: a
/// stored rid fails it); returns the rows written. [`insert_records`] is the ledger's write;
/// this is public for the tests that check the COPY on its own.
pub async fn copy_records(
    conn: &mut sqlx::PgConnection,
    records: &[Arc<LedgerRecord>],
) -> Result<u64, sqlx::Error> {
    let data = copy_data(records)?;
    let mut copy = conn.copy_in_raw(COPY_SQL).await?;
    if let Err(e) = copy.send(data).await {
        // The connection is unusable now; abort (best effort) so it is not returned to the
        // pool in the middle of a COPY.
        let _ = copy.abort("send failed").await;
        return Err(e);
    }
    copy.finish().await
}

/// Microseconds from 2000-01-01 00:00 UTC (PostgreSQL's epoch) to `ts`, as sqlx encodes a
/// `TIMESTAMPTZ` parameter (so a COPY stores the same instant the INSERT would).
fn pg_micros(ts: &DateTime<Utc>) -> Result<i64, sqlx::Error> {
    let epoch = chrono::NaiveDate::from_ymd_opt(2000, 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .ok_or_else(|| sqlx::Error::Encode("PostgreSQL epoch".into()))?;
    (ts.naive_utc() - epoch)
        .num_microseconds()
        .ok_or_else(|| sqlx::Error::Encode(format!("timestamp out of range: {ts}").into()))
}

/// The binary COPY stream of `records` (PostgreSQL's binary COPY format: signature, flags,
/// header extension, then per row the field count and each field as a length and its binary
/// value, -1 for NULL; `jsonb` is its version byte 1 and the JSON text), rows in the order of
/// [`bind`].
fn copy_data(records: &[Arc<LedgerRecord>]) -> Result<Vec<u8>, sqlx::Error> {
    fn field(buf: &mut Vec<u8>, bytes: &[u8]) -> Result<(), sqlx::Error> {
        let len = i32::try_from(bytes.len())
            .map_err(|_| sqlx::Error::Encode("a value over 2 GiB".into()))?;
        buf.extend_from_slice(&len.to_be_bytes());
        buf.extend_from_slice(bytes);
        Ok(())
    }
    const NULL: [u8; 4] = (-1i32).to_be_bytes();
    let size: usize = records
        .iter()
        .map(|r| 300 + r.payload.as_str().len() + r.sig.as_ref().map_or(0, Vec::len))
        .sum();
    let mut buf = Vec::with_capacity(19 + size + 2);
    buf.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    buf.extend_from_slice(&0i32.to_be_bytes()); // flags
    buf.extend_from_slice(&0i32.to_be_bytes()); // header extension length
    for r in ordered(records) {
        buf.extend_from_slice(&11i16.to_be_bytes());
        field(&mut buf, r.rid.as_bytes())?;
        field(&mut buf, r.anchor_id.as_bytes())?;
        field(&mut buf, r.slot.as_bytes())?;
        field(&mut buf, r.kind.as_bytes())?;
        field(&mut buf, &pg_micros(&r.ts)?.to_be_bytes())?;
        match r.prev_hash {
            Some(h) => field(&mut buf, &h.hex_bytes())?,
            None => buf.extend_from_slice(&NULL),
        }
        field(&mut buf, &r.hash.hex_bytes())?;
        let payload = r.payload.as_str().as_bytes();
        let len = i32::try_from(payload.len() + 1)
            .map_err(|_| sqlx::Error::Encode("a payload over 2 GiB".into()))?;
        buf.extend_from_slice(&len.to_be_bytes());
        buf.push(1); // jsonb's binary format version
        buf.extend_from_slice(payload);
        match &r.sig {
            Some(sig) => field(&mut buf, sig)?,
            None => buf.extend_from_slice(&NULL),
        }
        field(&mut buf, r.producer.as_bytes())?;
        field(&mut buf, r.version.as_bytes())?;
    }
    buf.extend_from_slice(&(-1i16).to_be_bytes());
    Ok(buf)
}

/// `records` in the one global write order: by anchor, then chain position (the callers'
/// order within an anchor), so that two processes' statements take their row locks in the
/// same order and cannot deadlock each other.
fn ordered(records: &[Arc<LedgerRecord>]) -> impl Iterator<Item = &Arc<LedgerRecord>> {
    let mut order: Vec<usize> = (0..records.len()).collect();
    order.sort_by_key(|&i| (records[i].anchor_id, i));
    order.into_iter().map(move |i| &records[i])
}

/// Binds the 11 column arrays of `records` to [`INSERT_SQL`].
fn bind(
    records: &[Arc<LedgerRecord>],
) -> sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments> {
    let n = records.len();
    let mut rid = Vec::with_capacity(n);
    let mut anchor = Vec::with_capacity(n);
    let mut slot = Vec::with_capacity(n);
    let mut kind = Vec::with_capacity(n);
    let mut ts: Vec<DateTime<Utc>> = Vec::with_capacity(n);
    let mut prev: Vec<Option<String>> = Vec::with_capacity(n);
    let mut hash: Vec<String> = Vec::with_capacity(n);
    let mut payload = Vec::with_capacity(n);
    let mut sig = Vec::with_capacity(n);
    let mut producer = Vec::with_capacity(n);
    let mut version = Vec::with_capacity(n);
    for r in ordered(records) {
        rid.push(r.rid);
        anchor.push(r.anchor_id);
        slot.push(r.slot.as_str());
        kind.push(r.kind.as_str());
        ts.push(r.ts);
        prev.push(r.prev_hash.map(|h| h.to_hex()));
        hash.push(r.hash.to_hex());
        payload.push(r.payload.as_str());
        sig.push(r.sig.as_deref());
        producer.push(r.producer.as_str());
        version.push(r.version.as_str());
    }
    sqlx::query(INSERT_SQL)
        .bind(rid)
        .bind(anchor)
        .bind(slot)
        .bind(kind)
        .bind(ts)
        .bind(prev)
        .bind(hash)
        .bind(payload)
        .bind(sig)
        .bind(producer)
        .bind(version)
}
