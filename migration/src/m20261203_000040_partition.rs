//! The partition record: which partition of a partitioned ledger this database is,
//! explained in `docs/ARCHITECTURE.md` ("Schema additions" and "Scaling over several
//! servers").
//!
//! `ledger_partition (singleton, partition_index, partition_count, recorded_at)`: at most
//! one row (the `singleton` key can only be `true`). The migration creates the table empty;
//! `ledger migrate up` over a `partitions:` list writes each database's row (its index in
//! the list and the list's length), and a partitioned ledger refuses to start when a
//! database's row is missing or differs from its place in the configured list. A database
//! of an unpartitioned ledger keeps the table empty.

use sea_orm_migration::prelude::*;

use crate::run_all;

/// The migration; its name (the file name) is what `seaql_migrations` records.
#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &[&str] = &["CREATE TABLE ledger_partition (
        singleton BOOLEAN PRIMARY KEY DEFAULT true CHECK (singleton),
        partition_index INTEGER NOT NULL CHECK (partition_index >= 0),
        partition_count INTEGER NOT NULL CHECK (partition_index < partition_count),
        recorded_at TIMESTAMPTZ NOT NULL DEFAULT now()
    )"];

const DOWN: &[&str] = &["DROP TABLE ledger_partition"];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_all(manager, UP).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_all(manager, DOWN).await
    }
}
