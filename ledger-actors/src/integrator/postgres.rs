//! [`PostgresLog`]: the transparency log in PostgreSQL (`ledger_log`, `ledger_tiles`,
//! `ledger_integrator`, `ledger_checkpoints`; see the migration
//! `m20261126_000010_transparency_log`).
//!
//! Finding committed records without scanning: `ledger_records.tx_id` (`xid8`, the inserting
//! transaction) and `seq` (identity). Rows with `tx_id < pg_snapshot_xmin(pg_current_snapshot())`
//! belong to transactions that have all finished, and any transaction still to commit a row
//! has a larger `tx_id`, so reading in `(tx_id, seq)` order after a watermark never skips a
//! row that commits later. A record whose predecessor is neither in the log nor earlier in
//! the batch is held back (the watermark stops before it) and read again next round.
//!
//! One integrator per database: the lease row `ledger_integrator` (holder, `lease_until` on
//! the server's clock). Every commit locks that row and checks holder, lease and tree size in
//! the same transaction, so an integrator that lost its lease (paused, partitioned) can never
//! write.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ledger_entities::{LedgerRecord, Payload, RecordHash};
use ledger_tlog::tile::{TileId, TileSet, decode, edge_tiles, encode};
use sea_orm::sqlx::{self, PgPool, Row, postgres::PgPoolOptions};
use uuid::Uuid;

use super::log::{
    Commit, LeafEntry, LogState, LogStore, Pending, StoredCheckpoint, Unlogged, Watermark,
};
use crate::config::LedgerConfig;
use crate::error::LedgerError;

/// The log in PostgreSQL, over its own small pool.
pub struct PostgresLog {
    pool: PgPool,
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

const LATEST_CHECKPOINT_SQL: &str = "SELECT cid, range_start, range_end, merkle_root, sig, \
     created_at, record_count FROM ledger_checkpoints \
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
        let options = crate::pg::store::sqlx_options(config)?;
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .min_connections(0)
            .acquire_timeout(config.timeout)
            .connect_lazy_with(options);
        Ok(Self { pool })
    }

    /// The pool (for tests and tools).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// The pending read (see the module doc). `$1`/`$2`: watermark, `$3`: limit.
const PENDING_SQL: &str = "SELECT r.rid, r.anchor_id, r.slot, r.kind, r.ts, r.prev_hash, r.hash, \
        r.payload, r.sig, r.producer, r.version, r.tx_id::text AS tx, r.seq, \
        (r.prev_hash IS NULL OR EXISTS (SELECT 1 FROM ledger_records p JOIN ledger_log l \
            ON l.rid = p.rid WHERE p.hash = r.prev_hash)) AS pred_logged \
     FROM ledger_records r \
     WHERE (r.tx_id, r.seq) > ($1::text::xid8, $2) \
       AND r.tx_id < pg_snapshot_xmin(pg_current_snapshot()) \
       AND NOT EXISTS (SELECT 1 FROM ledger_log l WHERE l.rid = r.rid) \
     ORDER BY r.tx_id, r.seq LIMIT $3";

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
        let rows = sqlx::query(PENDING_SQL)
            .bind(watermark.tx.to_string())
            .bind(watermark.seq)
            .bind(to_i64(limit as u64))
            .fetch_all(&self.pool)
            .await
            .map_err(err)?;
        let full = rows.len() == limit;
        let mut out = Pending {
            records: Vec::with_capacity(rows.len()),
            watermark,
            full,
        };
        let mut taken: std::collections::HashSet<String> = std::collections::HashSet::new();
        let mut held_back = false;
        for row in &rows {
            let producer: Option<String> = row.try_get("producer").map_err(err)?;
            let version: Option<String> = row.try_get("version").map_err(err)?;
            let record = LedgerRecord {
                rid: row.try_get("rid").map_err(err)?,
                anchor_id: row.try_get("anchor_id").map_err(err)?,
                slot: row.try_get("slot").map_err(err)?,
                kind: row.try_get("kind").map_err(err)?,
                ts: row.try_get("ts").map_err(err)?,
                prev_hash: row
                    .try_get::<Option<String>, _>("prev_hash")
                    .map_err(err)?
                    .map(|h| RecordHash::parse("prev_hash", &h))
                    .transpose()?,
                hash: RecordHash::parse("hash", &row.try_get::<String, _>("hash").map_err(err)?)?,
                payload: Payload::from_value(
                    &row.try_get::<serde_json::Value, _>("payload")
                        .map_err(err)?,
                )?,
                sig: row.try_get("sig").map_err(err)?,
                // A NULL here is not the ledger's row; it is logged as stored (its hash
                // will not verify, which `ledger verify` reports).
                producer: producer.unwrap_or_default(),
                version: version.unwrap_or_default(),
            };
            let pred_logged: bool = row.try_get("pred_logged").map_err(err)?;
            let ready = pred_logged
                || record
                    .prev_hash
                    .as_ref()
                    .is_some_and(|p| taken.contains(&p.to_hex()));
            if !ready {
                held_back = true;
                continue;
            }
            if !held_back {
                let tx: String = row.try_get("tx").map_err(err)?;
                out.watermark = Watermark {
                    tx: tx
                        .parse()
                        .map_err(|_| LedgerError::Database(format!("tx_id {tx:?}")))?,
                    seq: row.try_get("seq").map_err(err)?,
                };
            }
            taken.insert(record.hash.to_hex());
            out.records.push(Arc::new(record));
        }
        Ok(out)
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
        tx.commit().await.map_err(err)
    }

    async fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, LedgerError> {
        let row = sqlx::query(LATEST_CHECKPOINT_SQL)
            .fetch_optional(&self.pool)
            .await
            .map_err(err)?;
        row.as_ref().map(checkpoint_from).transpose()
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
