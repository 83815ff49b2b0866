//! Creates the two ledger tables, the anchor/time index and the database-enforced fork guard.
//!
//! The DDL is raw SQL rather than sea-query builders so the schema is exactly the design's,
//! including `CHAR(64)`, `JSONB`, the column defaults and `UNIQUE NULLS NOT DISTINCT`
//! (PostgreSQL 15+), which sea-query has no builder for.

use sea_orm_migration::prelude::*;

use crate::run_all;

/// The migration; its name (the file name) is what `seaql_migrations` records.
#[derive(DeriveMigrationName)]
pub struct Migration;

/// Statements run by `up`, in order.
///
/// `ledger_records_no_fork` is the fork guard: with `NULLS NOT DISTINCT` a NULL `prev_hash`
/// counts as a value, so one unique constraint gives both "no two records of an anchor
/// extend the same predecessor" and "at most one genesis record (`prev_hash` NULL) per
/// anchor". Enforcing it in the database keeps the chain linear even if two writers race
/// past the application's own ordering.
const UP: &[&str] = &[
    "CREATE TABLE ledger_records (
        rid UUID PRIMARY KEY,
        anchor_id UUID NOT NULL,
        slot TEXT NOT NULL,
        kind TEXT NOT NULL,
        ts TIMESTAMPTZ NOT NULL,
        prev_hash CHAR(64),
        hash CHAR(64) UNIQUE NOT NULL,
        payload JSONB NOT NULL,
        sig BYTEA,
        producer TEXT,
        version TEXT DEFAULT 'v1',
        CONSTRAINT ledger_records_no_fork UNIQUE NULLS NOT DISTINCT (anchor_id, prev_hash)
    )",
    "CREATE TABLE ledger_checkpoints (
        cid UUID PRIMARY KEY,
        range_start TEXT NOT NULL,
        range_end TEXT NOT NULL,
        merkle_root CHAR(64),
        sig BYTEA,
        created_at TIMESTAMPTZ DEFAULT now(),
        record_count INTEGER DEFAULT 0
    )",
    "CREATE INDEX idx_records_anchor_ts ON ledger_records (anchor_id, ts)",
];

/// Statements run by `down`: `UP` undone in reverse order. The fork guard and the unique
/// and primary-key indexes belong to their table and go with it.
const DOWN: &[&str] = &[
    "DROP INDEX idx_records_anchor_ts",
    "DROP TABLE ledger_checkpoints",
    "DROP TABLE ledger_records",
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
