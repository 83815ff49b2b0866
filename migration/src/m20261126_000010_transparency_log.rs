//! The transparency log: leaf order, stored tree hashes (tlog-tiles), the
//! integrator's lease and watermark, and the columns that let the integrator find committed
//! records in a stable, gap-free order without scanning. Every addition is explained in
//! `docs/ARCHITECTURE.md` ("Schema additions").
//!
//! - `ledger_records.tx_id xid8 DEFAULT pg_current_xact_id()` and `ledger_records.seq`
//!   (identity): the integrator reads rows with `tx_id < pg_snapshot_xmin(...)` (every
//!   transaction that could still commit such a row has finished) in `(tx_id, seq)` order after
//!   its watermark, through `ledger_records_integration (tx_id, seq)`.
//! - `ledger_log (leaf_index PK, rid UNIQUE)`: the log's order; a leaf index is never reused
//!   and a record is never logged twice.
//! - `ledger_tiles (level, idx, width, hashes)`: the tree's stored hashes, C2SP tlog-tiles of
//!   height 8 (256 hashes of 32 bytes at most per tile).
//! - `ledger_integrator`: one row, the lease (holder, `lease_until`) that makes one
//!   integrator per database, the tree size and the watermark.

use sea_orm_migration::prelude::*;

use crate::run_all;

/// The migration; its name (the file name) is what `seaql_migrations` records.
#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &[&str] = &[
    "ALTER TABLE ledger_records
        ADD COLUMN tx_id xid8 NOT NULL DEFAULT pg_current_xact_id(),
        ADD COLUMN seq BIGINT GENERATED ALWAYS AS IDENTITY",
    "CREATE INDEX ledger_records_integration ON ledger_records (tx_id, seq)",
    "CREATE TABLE ledger_log (
        leaf_index BIGINT PRIMARY KEY CHECK (leaf_index >= 0),
        rid UUID NOT NULL UNIQUE
    )",
    "CREATE TABLE ledger_tiles (
        level SMALLINT NOT NULL CHECK (level >= 0),
        idx BIGINT NOT NULL CHECK (idx >= 0),
        width SMALLINT NOT NULL CHECK (width BETWEEN 1 AND 256),
        hashes BYTEA NOT NULL CHECK (length(hashes) = 32 * width),
        PRIMARY KEY (level, idx)
    )",
    "CREATE TABLE ledger_integrator (
        id SMALLINT PRIMARY KEY CHECK (id = 1),
        holder UUID,
        lease_until TIMESTAMPTZ,
        tree_size BIGINT NOT NULL DEFAULT 0,
        wm_tx xid8 NOT NULL DEFAULT '0'::xid8,
        wm_seq BIGINT NOT NULL DEFAULT 0
    )",
    "INSERT INTO ledger_integrator (id) VALUES (1)",
];

const DOWN: &[&str] = &[
    "DROP TABLE ledger_integrator",
    "DROP TABLE ledger_tiles",
    "DROP TABLE ledger_log",
    "DROP INDEX ledger_records_integration",
    "ALTER TABLE ledger_records DROP COLUMN seq, DROP COLUMN tx_id",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_all(manager, UP).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_all(manager, DOWN).await
    }
}
