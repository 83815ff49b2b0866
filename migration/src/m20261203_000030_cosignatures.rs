//! Witness cosignatures of checkpoints (C2SP tlog-cosignature), explained in
//! `docs/ARCHITECTURE.md` ("Schema additions").
//!
//! `ledger_cosignatures (cid, witness, line, cosigned_at, received_at)`: one verified
//! cosignature line per checkpoint and witness. `cid` references the checkpoint it signs
//! (a cosignature is over that checkpoint's exact text), `witness` is the witness's verifier
//! key string (name, key id and key: a witness whose key changed is another witness),
//! `line` the signature line as the witness returned it (without its newline),
//! `cosigned_at` the timestamp inside the cosignature. The checkpoint's note is read back
//! with these lines appended after the log's own signature, so `ledger checkpoint` and
//! receipts carry them.

use sea_orm_migration::prelude::*;

use crate::run_all;

/// The migration; its name (the file name) is what `seaql_migrations` records.
#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &[&str] = &["CREATE TABLE ledger_cosignatures (
        cid UUID NOT NULL REFERENCES ledger_checkpoints (cid),
        witness TEXT NOT NULL,
        line TEXT NOT NULL CHECK (line <> '' AND position(E'\\n' IN line) = 0),
        cosigned_at TIMESTAMPTZ NOT NULL,
        received_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        PRIMARY KEY (cid, witness)
    )"];

const DOWN: &[&str] = &["DROP TABLE ledger_cosignatures"];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_all(manager, UP).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_all(manager, DOWN).await
    }
}
