//! The database refuses a record whose predecessor is not stored in its anchor.
//!
//! The fork guard (`ledger_records_no_fork`) refuses a second successor of a record and a
//! second genesis, but not a record whose `prev_hash` names nothing: a gap. This migration
//! adds a foreign key from `(anchor_id, prev_hash)` to `(anchor_id, hash)`, backed by the
//! unique constraint `ledger_records_anchor_hash` that a composite foreign key needs. A
//! genesis record (`prev_hash` NULL) is not checked (`MATCH SIMPLE`). PostgreSQL checks the
//! key at the end of each statement, so one multi-row `INSERT` may carry a predecessor and
//! its successors together. The cost is measured in `docs/ARCHITECTURE.md`.

use sea_orm_migration::prelude::*;

/// The migration; its name (the file name) is what `seaql_migrations` records.
#[derive(DeriveMigrationName)]
pub struct Migration;

/// Statements run by `up`, in order. Adding the foreign key validates every stored row: a
/// database that already holds a gap refuses the migration (and names the constraint).
const UP: &[&str] = &[
    "ALTER TABLE ledger_records \
     ADD CONSTRAINT ledger_records_anchor_hash UNIQUE (anchor_id, hash)",
    "ALTER TABLE ledger_records \
     ADD CONSTRAINT ledger_records_prev_fk FOREIGN KEY (anchor_id, prev_hash) \
     REFERENCES ledger_records (anchor_id, hash)",
];

/// Statements run by `down`: `UP` undone in reverse order.
const DOWN: &[&str] = &[
    "ALTER TABLE ledger_records DROP CONSTRAINT ledger_records_prev_fk",
    "ALTER TABLE ledger_records DROP CONSTRAINT ledger_records_anchor_hash",
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

/// Runs the statements in order, inside the migration's transaction.
async fn run_all(manager: &SchemaManager<'_>, statements: &[&str]) -> Result<(), DbErr> {
    let db = manager.get_connection();
    for sql in statements {
        db.execute_unprepared(sql).await?;
    }
    Ok(())
}
