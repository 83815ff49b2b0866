//! [`PostgresLog`]: the transparency log in PostgreSQL (`ledger_log`, `ledger_tiles`,
//! `ledger_integrator`, `ledger_checkpoints`; see the migration
//! `m20261126_000010_transparency_log`).
//!
//! Finding committed records without scanning: `ledger_records.tx_id` (`xid8`, the inserting
//! transaction) and `seq` (identity). Rows with `tx_id` below the horizon (the oldest
//! transaction of the read's snapshot still running, not counting other databases' ones: see
//! `horizon!`) belong to transactions that have all finished, and any transaction still to
//! commit a row has a larger `tx_id`, so reading in `(tx_id, seq)` order after a watermark
//! never skips a row that commits later.
//!
//! The read takes only what the log needs (rid, hash, prev_hash, ts, position). A record
//! waits until its predecessor is in the log or taken earlier in the batch (a successor read
//! before its predecessor is taken right after it); "predecessor in the log" is answered from
//! the hashes this process logged recently (`Known`), and by one query per batch for the
//! rest. A record whose predecessor is not integrable yet is held back (the watermark stops
//! before it) and read again next round; while records past the watermark may already be in
//! the log (after such a hold-back, or after a takeover) the read also skips logged rows.
//!
//! One integrator per database: the lease row `ledger_integrator` (holder, `lease_until` on
//! the server's clock). Every commit locks that row and checks holder, lease and tree size in
//! the same transaction, so an integrator that lost its lease (paused, partitioned) can never
//! write.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ledger_entities::{LedgerRecord, RecordHash};
use ledger_tlog::tile::{TileId, TileSet, decode, edge_tiles, encode};
use sea_orm::sqlx::postgres::{PgListener, PgPoolOptions};
use sea_orm::sqlx::{self, PgPool, Row};
use uuid::Uuid;

use super::log::{
    Commit, LeafEntry, LogListener, LogState, LogStore, Pending, PendingRecord, StoredCheckpoint,
    Unlogged, Watermark,
};
use crate::config::LedgerConfig;
use crate::error::LedgerError;

/// The log in PostgreSQL, over its own small pool.
pub struct PostgresLog {
    pool: PgPool,
    known: std::sync::Mutex<Known>,
}

fn err(e: sqlx::Error) -> LedgerError {
    use crate::pg::store::{ACCESS_STATES, UNAVAILABLE_STATES};
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Protocol(_) => LedgerError::Unavailable(e.to_string()),
        sqlx::Error::Database(ref d) => match d.code() {
            Some(c) if ACCESS_STATES.contains(&&*c) => LedgerError::AccessDenied(e.to_string()),
            Some(c) if c.starts_with("08") || UNAVAILABLE_STATES.contains(&&*c) => {
                LedgerError::Unavailable(e.to_string())
            }
            _ => LedgerError::Database(e.to_string()),
        },
        other => LedgerError::Database(other.to_string()),
    }
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

const LATEST_CHECKPOINT_SQL: &str = "SELECT c.cid, range_start, range_end, merkle_root, sig, \
     created_at, record_count, \
     (SELECT string_agg(w.line || E'\\n', '' ORDER BY w.witness) FROM ledger_cosignatures w \
      WHERE w.cid = c.cid) AS cosignatures \
     FROM ledger_checkpoints c \
     ORDER BY range_end::numeric DESC, created_at DESC LIMIT 1";

const ALL_CHECKPOINTS_SQL: &str = "SELECT cid, range_start, range_end, merkle_root, sig, \
     created_at, record_count FROM ledger_checkpoints ORDER BY range_end::numeric, created_at";

fn checkpoint_from(row: &sqlx::postgres::PgRow) -> Result<StoredCheckpoint, LedgerError> {
    let bad = |what: String| LedgerError::Log(ledger_tlog::Error::Malformed(what));
    let cid: Uuid = row.try_get("cid").map_err(err)?;
    let range_start: String = row.try_get("range_start").map_err(err)?;
    let range_end: String = row.try_get("range_end").map_err(err)?;
    let root: Option<String> = row.try_get("merkle_root").map_err(err)?;
    let sig: Option<Vec<u8>> = row.try_get("sig").map_err(err)?;
    let created_at: Option<DateTime<Utc>> = row.try_get("created_at").map_err(err)?;
    let count: Option<i32> = row.try_get("record_count").map_err(err)?;
    let size = range_end
        .parse::<u64>()
        .map_err(|_| bad(format!("checkpoint {cid}: range_end {range_end:?}")))?;
    if count.map(i64::from) != Some(to_i64(size)) && size <= i32::MAX as u64 {
        return Err(bad(format!(
            "checkpoint {cid}: record_count {count:?} differs from range_end {size}"
        )));
    }
    let root = root.ok_or_else(|| bad(format!("checkpoint {cid}: merkle_root is NULL")))?;
    let note = sig
        .map(String::from_utf8)
        .transpose()
        .map_err(|_| bad(format!("checkpoint {cid}: sig is not UTF-8")))?;
    Ok(StoredCheckpoint {
        cid,
        size,
        root: ledger_tlog::merkle::parse_hash(&root)?,
        range_start: range_start
            .parse()
            .map_err(|_| bad(format!("checkpoint {cid}: range_start {range_start:?}")))?,
        note,
        created_at,
    })
}

impl PostgresLog {
    /// Opens a pool of two connections with the ledger's connection settings.
    pub fn connect(config: &LedgerConfig) -> Result<Self, LedgerError> {
        Ok(Self::over(
            crate::pg::store::sqlx_options(config)?,
            2,
            config,
        ))
    }

    /// The log a subscription reads, over a pool of three connections (two readers and a
    /// listener) that never start parallel workers: a page is a few thousand primary-key
    /// probes, and a parallel plan (chosen on stale statistics) only adds a worker's start
    /// to every page.
    pub fn for_subscription(config: &LedgerConfig) -> Result<Self, LedgerError> {
        let options = crate::pg::store::sqlx_options(config)?
            .options([("max_parallel_workers_per_gather", "0")]);
        Ok(Self::over(options, 3, config))
    }

    fn over(
        options: sqlx::postgres::PgConnectOptions,
        connections: u32,
        config: &LedgerConfig,
    ) -> Self {
        let mut pool_options = PgPoolOptions::new()
            .max_connections(connections)
            .min_connections(0)
            .acquire_timeout(config.timeout);
        if let Some(dsn) = config.dsn.as_ref().filter(|d| d.hosts().len() > 1) {
            // A multi-host DSN: follow the writer's switch to another host.
            pool_options = pool_options.before_acquire(crate::pg::endpoints::guard(dsn));
        }
        let pool = pool_options.connect_lazy_with(options);
        if let Some(dsn) = &config.dsn {
            crate::pg::endpoints::register(dsn, &pool);
        }
        Self {
            pool,
            known: std::sync::Mutex::new(Known::default()),
        }
    }

    fn known(&self) -> std::sync::MutexGuard<'_, Known> {
        // Every update of `Known` leaves it consistent at each step; carry on after a panic.
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The pool (for tests and tools).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// The pending read (see the module doc): only the columns the log needs, in
/// `(tx_id, seq)` order through `ledger_records_integration`, below [`HORIZON`]. `$1`/`$2`:
/// watermark, `$3`: limit.
macro_rules! pending_sql {
    ($extra:literal) => {
        concat!(
            "SELECT r.rid, r.hash, r.prev_hash, r.ts, r.tx_id::text AS tx, r.seq \
             FROM ledger_records r \
             WHERE (r.tx_id, r.seq) > ($1::text::xid8, $2) AND r.tx_id < ",
            horizon!(),
            $extra,
            " ORDER BY r.tx_id, r.seq LIMIT $3"
        )
    };
}

/// The horizon: the oldest transaction of the statement's snapshot still running, leaving
/// out those known to belong to another database of the cluster (a backend stays in one
/// database, and their rows are never in this one's tables). Transaction ids are
/// cluster-wide, so without that a long writing transaction anywhere on the server (another
/// application, a bulk load) would stall integration here. A running transaction
/// `pg_stat_activity` does not show (ended meanwhile, or hidden from a role without
/// `pg_read_all_stats`) is kept, which is only slower, never wrong.
macro_rules! horizon {
    () => {
        "(SELECT COALESCE(min(x), pg_snapshot_xmax(pg_current_snapshot())) \
          FROM pg_snapshot_xip(pg_current_snapshot()) AS x \
          WHERE NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.backend_xid = x::xid \
            AND a.datname IS DISTINCT FROM current_database()))"
    };
}

const PENDING_SQL: &str = pending_sql!("");

/// [`PENDING_SQL`] that also skips records already in the log, for when some may lie past
/// the watermark (see `Known::clean`).
const PENDING_CHECKED_SQL: &str =
    pending_sql!(" AND NOT EXISTS (SELECT 1 FROM ledger_log l WHERE l.rid = r.rid)");

/// Which of the hashes `$1` are records in the log (the fallback of the predecessor check).
const LOGGED_SQL: &str = "SELECT r.hash FROM ledger_records r \
     JOIN ledger_log l ON l.rid = r.rid WHERE r.hash = ANY($1::text[])";

/// Hashes of records this process knows to be in the log, at most this many (the oldest
/// are forgotten first; a forgotten one is looked up with [`LOGGED_SQL`]). About 10 MB.
const KNOWN_CAPACITY: usize = 1 << 17;

/// What this process knows about the log beyond the database, to keep the pending read
/// cheap. Everything here is a fact that stays true (a logged record stays logged) except
/// `clean`, which [`LogStore::load`] forgets whenever an integrator (re)starts leading.
#[derive(Default)]
struct Known {
    /// Hashes of records known to be logged, and their insertion order for eviction.
    logged: std::collections::HashSet<RecordHash>,
    order: std::collections::VecDeque<RecordHash>,
    /// A watermark after which no record is in the log; while `None` (after a takeover, or
    /// after a step that logged records past a held-back one) the checked read is used.
    clean: Option<Watermark>,
    /// What `clean` becomes if the step prepared by the last pending read is written.
    staged: Option<(Watermark, bool)>,
}

impl Known {
    fn remember(&mut self, hash: RecordHash) {
        if self.logged.insert(hash) {
            self.order.push_back(hash);
            if self.order.len() > KNOWN_CAPACITY
                && let Some(old) = self.order.pop_front()
            {
                self.logged.remove(&old);
            }
        }
    }
}

/// One row of the pending read.
struct PendingRow {
    record: PendingRecord,
    prev: Option<RecordHash>,
    at: Watermark,
}

fn pending_row(row: &sqlx::postgres::PgRow) -> Result<PendingRow, LedgerError> {
    let tx: String = row.try_get("tx").map_err(err)?;
    Ok(PendingRow {
        record: PendingRecord {
            rid: row.try_get("rid").map_err(err)?,
            hash: RecordHash::parse("hash", &row.try_get::<String, _>("hash").map_err(err)?)?,
            ts: row.try_get("ts").map_err(err)?,
        },
        prev: row
            .try_get::<Option<String>, _>("prev_hash")
            .map_err(err)?
            .map(|h| RecordHash::parse("prev_hash", &h))
            .transpose()?,
        at: Watermark {
            tx: tx
                .parse()
                .map_err(|_| LedgerError::Database(format!("tx_id {tx:?}")))?,
            seq: row.try_get("seq").map_err(err)?,
        },
    })
}

/// Orders `rows` for the log: a record is taken once its predecessor is logged (`ready`) or
/// taken earlier in this batch; one whose predecessor comes later in the batch waits for it.
/// Returns the records in leaf order, the watermark (the last row of the taken prefix in
/// `(tx_id, seq)` order), and whether any record after that prefix was taken.
fn order_batch(
    rows: Vec<PendingRow>,
    start: Watermark,
    ready: impl Fn(&RecordHash) -> bool,
) -> (Vec<PendingRecord>, Watermark, bool) {
    use std::collections::{HashMap, HashSet};
    let mut taken_hashes: HashSet<RecordHash> = HashSet::with_capacity(rows.len());
    let mut waiting: HashMap<RecordHash, Vec<usize>> = HashMap::new();
    let mut taken = vec![false; rows.len()];
    let mut out = Vec::with_capacity(rows.len());
    for i in 0..rows.len() {
        let ok = rows[i]
            .prev
            .is_none_or(|p| taken_hashes.contains(&p) || ready(&p));
        if !ok {
            if let Some(p) = rows[i].prev {
                waiting.entry(p).or_default().push(i);
            }
            continue;
        }
        // Take it, then whatever waited for it (and for those, transitively).
        let mut stack = vec![i];
        while let Some(j) = stack.pop() {
            taken[j] = true;
            let h = rows[j].record.hash;
            taken_hashes.insert(h);
            out.push(rows[j].record);
            if let Some(next) = waiting.remove(&h) {
                stack.extend(next);
            }
        }
    }
    let prefix = taken.iter().take_while(|t| **t).count();
    let watermark = if prefix == 0 {
        start
    } else {
        rows[prefix - 1].at
    };
    let ahead = taken[prefix..].iter().any(|t| *t);
    (out, watermark, ahead)
}

/// [`LogStore::listen`] on PostgreSQL.
struct Listener(PgListener);

#[async_trait]
impl LogListener for Listener {
    async fn changed(&mut self) -> Result<(), LedgerError> {
        // `None`: the connection was lost (with any notification meanwhile); the next call
        // reconnects and listens again.
        self.0.try_recv().await.map(|_| ()).map_err(err)
    }
}

/// The records of leaves `[$1, $2)`, in leaf order (see [`LogStore::records`]). The plan
/// is pinned by the query's shape, whatever the statistics say (a fresh or just-grown table
/// had the planner hash-join whole-table scans, 5x slower per page and growing with the
/// log): the leaves come from an ordered range of `ledger_log_pkey` with a `LIMIT`, and the
/// record of each through a lateral subquery with its own `LIMIT`, which PostgreSQL does not
/// flatten into a join, so each is one primary-key probe (a nested loop, no sort). The left
/// join keeps a leaf whose record is gone.
const RECORDS_SQL: &str = "SELECT l.leaf_index, l.rid AS leaf_rid, r.rid, r.anchor_id, r.slot, \
     r.kind, r.ts, r.prev_hash, r.hash, r.payload, r.sig, r.producer, r.version \
     FROM (SELECT leaf_index, rid FROM ledger_log WHERE leaf_index >= $1 AND leaf_index < $2 \
        ORDER BY leaf_index LIMIT $2 - $1) l \
     LEFT JOIN LATERAL (SELECT rid, anchor_id, slot, kind, ts, prev_hash, hash, payload, sig, \
        producer, version FROM ledger_records WHERE rid = l.rid LIMIT 1) r ON true \
     ORDER BY l.leaf_index";

/// A row of [`RECORDS_SQL`] as a record, through the one row conversion
/// (`LedgerRecord::try_from(ledger_records::Model)`).
fn logged_record(row: &sqlx::postgres::PgRow, index: u64) -> Result<LedgerRecord, LedgerError> {
    // By position (the order of `RECORDS_SQL`'s select list): a name is a lookup per column
    // per row, on the catch-up's hot path.
    let rid: Option<Uuid> = row.try_get(2).map_err(err)?;
    let Some(rid) = rid else {
        let leaf_rid: Uuid = row.try_get(1).map_err(err)?;
        return Err(LedgerError::Log(ledger_tlog::Error::Invalid(format!(
            "leaf {index} names record {leaf_rid}, which is not stored"
        ))));
    };
    let model = ledger_entities::entity::ledger_records::Model {
        rid,
        anchor_id: row.try_get(3).map_err(err)?,
        slot: row.try_get(4).map_err(err)?,
        kind: row.try_get(5).map_err(err)?,
        ts: row.try_get(6).map_err(err)?,
        prev_hash: row.try_get(7).map_err(err)?,
        hash: row.try_get(8).map_err(err)?,
        payload: row.try_get(9).map_err(err)?,
        sig: row.try_get(10).map_err(err)?,
        producer: row.try_get(11).map_err(err)?,
        version: row.try_get(12).map_err(err)?,
    };
    LedgerRecord::try_from(model).map_err(|e| LedgerError::Database(e.to_string()))
}

#[async_trait]
impl LogStore for PostgresLog {
    async fn acquire(&self, holder: Uuid, lease: Duration) -> Result<bool, LedgerError> {
        let row = sqlx::query(
            "UPDATE ledger_integrator SET holder = $1, \
                lease_until = clock_timestamp() + $2 * interval '1 millisecond' \
             WHERE id = 1 AND (holder = $1 OR holder IS NULL OR lease_until IS NULL \
                OR lease_until < clock_timestamp()) RETURNING id",
        )
        .bind(holder)
        .bind(lease.as_millis() as f64)
        .fetch_optional(&self.pool)
        .await
        .map_err(err)?;
        Ok(row.is_some())
    }

    async fn release(&self, holder: Uuid) -> Result<(), LedgerError> {
        sqlx::query(
            "UPDATE ledger_integrator SET holder = NULL, lease_until = NULL \
             WHERE id = 1 AND holder = $1",
        )
        .bind(holder)
        .execute(&self.pool)
        .await
        .map_err(err)?;
        Ok(())
    }

    async fn load(&self) -> Result<LogState, LedgerError> {
        {
            let mut known = self.known();
            known.clean = None;
            known.staged = None;
        }
        let row = sqlx::query(
            "SELECT tree_size, wm_tx::text AS tx, wm_seq FROM ledger_integrator WHERE id = 1",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(err)?;
        let size = to_u64(row.try_get("tree_size").map_err(err)?);
        let tx: String = row.try_get("tx").map_err(err)?;
        let watermark = Watermark {
            tx: tx
                .parse()
                .map_err(|_| LedgerError::Database(format!("wm_tx {tx:?}")))?,
            seq: row.try_get("wm_seq").map_err(err)?,
        };
        let ids: Vec<TileId> = edge_tiles(size).into_iter().map(|(id, _)| id).collect();
        Ok(LogState {
            size,
            watermark,
            edge_tiles: self.read_tiles(&ids).await?,
            checkpoint: self.latest_checkpoint().await?,
        })
    }

    async fn pending(&self, watermark: Watermark, limit: usize) -> Result<Pending, LedgerError> {
        let checked = self.known().clean.is_none_or(|c| c > watermark);
        let rows = sqlx::query(if checked {
            PENDING_CHECKED_SQL
        } else {
            PENDING_SQL
        })
        .bind(watermark.tx.to_string())
        .bind(watermark.seq)
        .bind(to_i64(limit as u64))
        .fetch_all(&self.pool)
        .await
        .map_err(err)?;
        let full = rows.len() == limit;
        let rows = rows
            .iter()
            .map(pending_row)
            .collect::<Result<Vec<_>, _>>()?;
        // Predecessors neither known as logged nor in this batch: ask the database.
        let unknown: Vec<String> = {
            let known = self.known();
            let in_batch: std::collections::HashSet<RecordHash> =
                rows.iter().map(|r| r.record.hash).collect();
            rows.iter()
                .filter_map(|r| r.prev)
                .filter(|p| !known.logged.contains(p) && !in_batch.contains(p))
                .map(|p| p.to_hex())
                .collect()
        };
        if !unknown.is_empty() {
            let found = sqlx::query(LOGGED_SQL)
                .bind(&unknown)
                .fetch_all(&self.pool)
                .await
                .map_err(err)?;
            let mut known = self.known();
            for row in &found {
                known.remember(RecordHash::parse(
                    "hash",
                    &row.try_get::<String, _>("hash").map_err(err)?,
                )?);
            }
        }
        let mut known = self.known();
        let (records, new_watermark, ahead) =
            order_batch(rows, watermark, |p| known.logged.contains(p));
        // Nothing past the new watermark is logged after this step unless it takes records
        // past a held-back one, or (checked read) a full batch left rows unread.
        known.staged = Some((new_watermark, !ahead && (!checked || !full)));
        Ok(Pending {
            records,
            watermark: new_watermark,
            full,
        })
    }

    async fn backlog(
        &self,
        watermark: Watermark,
        cap: u64,
    ) -> Result<(u64, Option<DateTime<Utc>>), LedgerError> {
        // Through `ledger_records_integration`; the cap bounds the work when far behind.
        let row = sqlx::query(
            "SELECT (SELECT count(*) FROM (SELECT 1 FROM ledger_records \
                 WHERE (tx_id, seq) > ($1::text::xid8, $2) LIMIT $3) s) AS n, \
               (SELECT ts FROM ledger_records WHERE (tx_id, seq) > ($1::text::xid8, $2) \
                 ORDER BY tx_id, seq LIMIT 1) AS first",
        )
        .bind(watermark.tx.to_string())
        .bind(watermark.seq)
        .bind(to_i64(cap))
        .fetch_one(&self.pool)
        .await
        .map_err(err)?;
        Ok((
            to_u64(row.try_get("n").map_err(err)?),
            row.try_get("first").map_err(err)?,
        ))
    }

    async fn commit(&self, holder: Uuid, lease: Duration, step: Commit) -> Result<(), LedgerError> {
        let mut tx = self.pool.begin().await.map_err(err)?;
        let row = sqlx::query(
            "SELECT tree_size FROM ledger_integrator WHERE id = 1 AND holder = $1 \
             AND lease_until > clock_timestamp() FOR UPDATE",
        )
        .bind(holder)
        .fetch_optional(&mut *tx)
        .await
        .map_err(err)?;
        let Some(row) = row else {
            return Err(LedgerError::Internal("integrator lease lost".into()));
        };
        let size: i64 = row.try_get("tree_size").map_err(err)?;
        if to_u64(size) != step.first_index {
            return Err(LedgerError::Internal(format!(
                "stored tree size is {size}, this integrator expected {}",
                step.first_index
            )));
        }
        let new_size = step.first_index + step.rids.len() as u64;
        if !step.rids.is_empty() {
            let indexes: Vec<i64> = (step.first_index..new_size).map(to_i64).collect();
            sqlx::query(
                "INSERT INTO ledger_log (leaf_index, rid) \
                 SELECT * FROM UNNEST($1::bigint[], $2::uuid[])",
            )
            .bind(&indexes)
            .bind(&step.rids)
            .execute(&mut *tx)
            .await
            .map_err(err)?;
        }
        if !step.tiles.is_empty() {
            let levels: Vec<i16> = step
                .tiles
                .iter()
                .map(|(id, _)| i16::from(id.level))
                .collect();
            let idxs: Vec<i64> = step.tiles.iter().map(|(id, _)| to_i64(id.index)).collect();
            let widths: Vec<i16> = step
                .tiles
                .iter()
                .map(|(_, h)| i16::try_from(h.len()).unwrap_or(i16::MAX))
                .collect();
            let bytes: Vec<Vec<u8>> = step.tiles.iter().map(|(_, h)| encode(h)).collect();
            sqlx::query(
                "INSERT INTO ledger_tiles (level, idx, width, hashes) \
                 SELECT * FROM UNNEST($1::smallint[], $2::bigint[], $3::smallint[], $4::bytea[]) \
                 ON CONFLICT (level, idx) DO UPDATE SET width = EXCLUDED.width, \
                    hashes = EXCLUDED.hashes WHERE ledger_tiles.width <= EXCLUDED.width",
            )
            .bind(&levels)
            .bind(&idxs)
            .bind(&widths)
            .bind(&bytes)
            .execute(&mut *tx)
            .await
            .map_err(err)?;
        }
        if !step.rids.is_empty() {
            // Delivered to listeners when (and only if) this step commits.
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(super::log::LOG_CHANNEL)
                .bind(new_size.to_string())
                .execute(&mut *tx)
                .await
                .map_err(err)?;
        }
        sqlx::query(
            "UPDATE ledger_integrator SET tree_size = $1, wm_tx = $2::text::xid8, wm_seq = $3, \
                lease_until = clock_timestamp() + $4 * interval '1 millisecond' WHERE id = 1",
        )
        .bind(to_i64(new_size))
        .bind(step.watermark.tx.to_string())
        .bind(step.watermark.seq)
        .bind(lease.as_millis() as f64)
        .execute(&mut *tx)
        .await
        .map_err(err)?;
        if let Some(c) = &step.checkpoint {
            sqlx::query(
                "INSERT INTO ledger_checkpoints \
                 (cid, range_start, range_end, merkle_root, sig, record_count) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(c.cid)
            .bind(c.range_start.to_string())
            .bind(c.size.to_string())
            .bind(hex::encode(c.root))
            .bind(c.note.as_ref().map(|n| n.as_bytes().to_vec()))
            .bind(i32::try_from(c.size).unwrap_or(i32::MAX))
            .execute(&mut *tx)
            .await
            .map_err(err)?;
        }
        tx.commit().await.map_err(err)?;
        let mut known = self.known();
        for h in &step.hashes {
            known.remember(*h);
        }
        known.clean = match known.staged.take() {
            Some((w, true)) if w == step.watermark => Some(w),
            _ => None,
        };
        Ok(())
    }

    async fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, LedgerError> {
        let row = sqlx::query(LATEST_CHECKPOINT_SQL)
            .fetch_optional(&self.pool)
            .await
            .map_err(err)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let mut c = checkpoint_from(&row)?;
        let lines: Option<String> = row.try_get("cosignatures").map_err(err)?;
        if let (Some(note), Some(lines)) = (c.note.as_mut(), lines) {
            note.push_str(&lines);
        }
        Ok(Some(c))
    }

    async fn add_cosignature(
        &self,
        cid: Uuid,
        witness: &str,
        line: &str,
        cosigned_at: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        sqlx::query(
            "INSERT INTO ledger_cosignatures (cid, witness, line, cosigned_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (cid, witness) DO NOTHING",
        )
        .bind(cid)
        .bind(witness)
        .bind(line)
        .bind(cosigned_at)
        .execute(&self.pool)
        .await
        .map_err(err)?;
        Ok(())
    }

    async fn checkpoints(&self) -> Result<Vec<StoredCheckpoint>, LedgerError> {
        let rows = sqlx::query(ALL_CHECKPOINTS_SQL)
            .fetch_all(&self.pool)
            .await
            .map_err(err)?;
        rows.iter().map(checkpoint_from).collect()
    }

    async fn leaf_index(&self, rid: Uuid) -> Result<Option<u64>, LedgerError> {
        let row = sqlx::query("SELECT leaf_index FROM ledger_log WHERE rid = $1")
            .bind(rid)
            .fetch_optional(&self.pool)
            .await
            .map_err(err)?;
        row.map(|r| r.try_get::<i64, _>("leaf_index").map(to_u64).map_err(err))
            .transpose()
    }

    async fn read_tiles(&self, ids: &[TileId]) -> Result<TileSet, LedgerError> {
        let mut set = TileSet::default();
        if ids.is_empty() {
            return Ok(set);
        }
        let levels: Vec<i16> = ids.iter().map(|id| i16::from(id.level)).collect();
        let idxs: Vec<i64> = ids.iter().map(|id| to_i64(id.index)).collect();
        let rows = sqlx::query(
            "SELECT t.level, t.idx, t.hashes FROM ledger_tiles t \
             JOIN UNNEST($1::smallint[], $2::bigint[]) AS w(level, idx) \
               ON t.level = w.level AND t.idx = w.idx",
        )
        .bind(&levels)
        .bind(&idxs)
        .fetch_all(&self.pool)
        .await
        .map_err(err)?;
        for row in rows {
            let level: i16 = row.try_get("level").map_err(err)?;
            let idx: i64 = row.try_get("idx").map_err(err)?;
            let bytes: Vec<u8> = row.try_get("hashes").map_err(err)?;
            set.insert(
                TileId {
                    level: u8::try_from(level).unwrap_or(u8::MAX),
                    index: to_u64(idx),
                },
                decode(&bytes)?,
            );
        }
        Ok(set)
    }

    async fn leaves(&self, from: u64, limit: usize) -> Result<Vec<LeafEntry>, LedgerError> {
        let rows = sqlx::query(
            "SELECT l.leaf_index, l.rid, r.hash FROM ledger_log l \
             LEFT JOIN ledger_records r ON r.rid = l.rid \
             WHERE l.leaf_index >= $1 ORDER BY l.leaf_index LIMIT $2",
        )
        .bind(to_i64(from))
        .bind(to_i64(limit as u64))
        .fetch_all(&self.pool)
        .await
        .map_err(err)?;
        rows.iter()
            .map(|r| {
                Ok(LeafEntry {
                    index: to_u64(r.try_get("leaf_index").map_err(err)?),
                    rid: r.try_get("rid").map_err(err)?,
                    hash: r.try_get("hash").map_err(err)?,
                })
            })
            .collect()
    }

    async fn records(
        &self,
        from: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Arc<LedgerRecord>)>, LedgerError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(RECORDS_SQL)
            .bind(to_i64(from))
            .bind(to_i64(from.saturating_add(limit as u64)))
            .fetch_all(&self.pool)
            .await
            .map_err(err)?;
        let mut out = Vec::with_capacity(rows.len());
        for (i, row) in rows.iter().enumerate() {
            let index = to_u64(row.try_get(0).map_err(err)?);
            let expected = from + i as u64;
            if index != expected {
                return Err(LedgerError::Log(ledger_tlog::Error::Invalid(format!(
                    "the log has no leaf {expected} but has leaf {index}"
                ))));
            }
            match logged_record(row, index) {
                Ok(r) => out.push((index, Arc::new(r))),
                // The records before a bad one first; the next read starts at it and fails.
                Err(_) if !out.is_empty() => break,
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    async fn size(&self) -> Result<u64, LedgerError> {
        let row = sqlx::query("SELECT tree_size FROM ledger_integrator WHERE id = 1")
            .fetch_one(&self.pool)
            .await
            .map_err(err)?;
        Ok(to_u64(row.try_get("tree_size").map_err(err)?))
    }

    async fn listen(&self) -> Result<Option<Box<dyn LogListener>>, LedgerError> {
        let mut listener = PgListener::connect_with(&self.pool).await.map_err(err)?;
        listener
            .listen(super::log::LOG_CHANNEL)
            .await
            .map_err(err)?;
        Ok(Some(Box::new(Listener(listener))))
    }

    async fn unlogged(&self, limit: usize) -> Result<Vec<Unlogged>, LedgerError> {
        let rows = sqlx::query(
            "SELECT r.rid, EXISTS (SELECT 1 FROM ledger_records s JOIN ledger_log sl \
                ON sl.rid = s.rid WHERE s.anchor_id = r.anchor_id AND s.prev_hash = r.hash) \
                AS successor_logged \
             FROM ledger_records r \
             WHERE NOT EXISTS (SELECT 1 FROM ledger_log l WHERE l.rid = r.rid) \
             ORDER BY successor_logged DESC, r.tx_id, r.seq LIMIT $1",
        )
        .bind(to_i64(limit as u64))
        .fetch_all(&self.pool)
        .await
        .map_err(err)?;
        rows.iter()
            .map(|r| {
                Ok(Unlogged {
                    rid: r.try_get("rid").map_err(err)?,
                    successor_logged: r.try_get("successor_logged").map_err(err)?,
                })
            })
            .collect()
    }

    async fn unfaithful_payloads(&self, limit: usize) -> Result<Vec<(Uuid, String)>, LedgerError> {
        use futures::TryStreamExt;
        // JSONB prints numbers in plain decimal notation, digits kept. A number of at most
        // 15 digits is exactly what JCS writes for its double, so only payloads with a run of
        // 16 digits are candidates; each is parsed with the append's rules (`parse_payload`).
        let mut rows = sqlx::query(
            "SELECT rid, payload::text AS text FROM ledger_records \
             WHERE payload::text ~ '[0-9]{16}'",
        )
        .fetch(&self.pool);
        let mut out = Vec::new();
        while let Some(row) = rows.try_next().await.map_err(err)? {
            let text: String = row.try_get("text").map_err(err)?;
            // JSONB has no duplicate keys; deep nesting the parser refuses is no finding.
            if let Err(e @ ledger_entities::Error::InexactNumber { .. }) =
                ledger_entities::validate::parse_payload(&text)
            {
                out.push((row.try_get("rid").map_err(err)?, e.to_string()));
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    async fn misordered(&self, limit: usize) -> Result<Vec<(Uuid, Uuid)>, LedgerError> {
        let rows = sqlx::query(
            "SELECT s.rid AS rid, p.rid AS pred FROM ledger_log sl \
             JOIN ledger_records s ON s.rid = sl.rid \
             JOIN ledger_records p ON p.anchor_id = s.anchor_id AND p.hash = s.prev_hash \
             LEFT JOIN ledger_log pl ON pl.rid = p.rid \
             WHERE pl.leaf_index IS NULL OR pl.leaf_index > sl.leaf_index LIMIT $1",
        )
        .bind(to_i64(limit as u64))
        .fetch_all(&self.pool)
        .await
        .map_err(err)?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("rid").map_err(err)?,
                    r.try_get("pred").map_err(err)?,
                ))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(n: u8) -> RecordHash {
        RecordHash([n; 32])
    }

    fn row(n: u8, prev: Option<u8>) -> PendingRow {
        PendingRow {
            record: PendingRecord {
                rid: Uuid::from_bytes([n; 16]),
                hash: h(n),
                ts: DateTime::<Utc>::UNIX_EPOCH,
            },
            prev: prev.map(h),
            at: Watermark {
                tx: 10,
                seq: i64::from(n),
            },
        }
    }

    /// A successor read before its predecessor is taken right after it; a record whose
    /// predecessor is neither logged nor in the batch stops the watermark, and records taken
    /// after it are reported as ahead of the watermark.
    #[test]
    fn order_batch_puts_predecessors_first_and_stops_the_watermark_at_a_held_back_record() {
        let start = Watermark { tx: 9, seq: 0 };
        // 2 follows 3 (read later), 1 follows logged 0.
        let rows = vec![row(1, Some(0)), row(2, Some(3)), row(3, None)];
        let (out, wm, ahead) = order_batch(rows, start, |p| *p == h(0));
        let order: Vec<RecordHash> = out.iter().map(|r| r.hash).collect();
        assert_eq!(order, vec![h(1), h(3), h(2)]);
        assert_eq!(wm, Watermark { tx: 10, seq: 3 });
        assert!(!ahead);

        // 4 follows 9, which is nowhere: held back; 5 is taken past it.
        let rows = vec![row(1, None), row(4, Some(9)), row(5, None)];
        let (out, wm, ahead) = order_batch(rows, start, |_| false);
        assert_eq!(out.len(), 2);
        assert_eq!(wm, Watermark { tx: 10, seq: 1 });
        assert!(ahead);

        // Held back first: the watermark does not move.
        let (out, wm, ahead) = order_batch(vec![row(4, Some(9))], start, |_| false);
        assert!(out.is_empty());
        assert_eq!(wm, start);
        assert!(!ahead);
    }
}
