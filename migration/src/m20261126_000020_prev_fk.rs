//! The database refuses a record whose predecessor is not stored in its anchor.
//!
//! The fork guard (`ledger_records_no_fork`) refuses a second successor of a record and a
//! second genesis, but not a record whose `prev_hash` names nothing: a gap. This migration adds
//! a statement-level constraint check: after every `INSERT` statement, the trigger
//! `ledger_records_prev_fk` looks up, in one set-based query over the statement's new rows
//! (a transition table), each row's predecessor by `hash` (the existing unique index) in the
//! same anchor, and fails the statement with SQLSTATE 23503 (`foreign_key_violation`, constraint
//! name `ledger_records_prev_fk`) naming the first orphan. A genesis record (`prev_hash` NULL)
//! is not checked. Rows of the same statement are visible to the check, so one multi-row
//! `INSERT` may carry a predecessor and its successors.
//!
//! The function's plan is made once per connection, often while the table is still empty, and
//! then reused; the planner settings on the function (no sequential scans, no hash or merge
//! joins) keep it a nested loop of index probes on `ledger_records_hash_key` whatever the
//! table's size was then (without them W1 lost 43 % as the reused plan scanned the table).
//!
//! Why not a foreign key `(anchor_id, prev_hash) REFERENCES (anchor_id, hash)`: it needs a
//! second unique index on `(anchor_id, hash)` and checks each row with its own query; measured
//! in W1 it cost about 28 % of the PostgreSQL append rate (`docs/ARCHITECTURE.md`). The trigger
//! uses the existing hash index and one query per statement. What it does not do that a key
//! would: refuse an `UPDATE` of `prev_hash` or a `DELETE` of a predecessor — the ledger never
//! updates or deletes records (an operator editing rows by hand is what `ledger verify`
//! detects).

use sea_orm_migration::prelude::*;

use crate::run_all;

/// The migration; its name (the file name) is what `seaql_migrations` records.
#[derive(DeriveMigrationName)]
pub struct Migration;

/// Statements run by `up`, in order. Existing rows are not re-checked (run `ledger verify`).
const UP: &[&str] = &[
    r#"CREATE FUNCTION ledger_records_check_prev() RETURNS trigger
       LANGUAGE plpgsql
       SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off
       AS $$
       DECLARE orphan record;
       BEGIN
           SELECT n.rid, n.anchor_id, n.prev_hash INTO orphan
           FROM ledger_records_new n
           WHERE n.prev_hash IS NOT NULL
             AND NOT EXISTS (SELECT 1 FROM ledger_records r
                             WHERE r.hash = n.prev_hash AND r.anchor_id = n.anchor_id)
           LIMIT 1;
           IF FOUND THEN
               RAISE EXCEPTION 'record % of anchor % names predecessor %, which is not stored in that anchor',
                   orphan.rid, orphan.anchor_id, orphan.prev_hash
                   USING ERRCODE = 'foreign_key_violation',
                         CONSTRAINT = 'ledger_records_prev_fk',
                         TABLE = 'ledger_records';
           END IF;
           RETURN NULL;
       END
       $$"#,
    "CREATE TRIGGER ledger_records_prev_fk AFTER INSERT ON ledger_records      REFERENCING NEW TABLE AS ledger_records_new      FOR EACH STATEMENT EXECUTE FUNCTION ledger_records_check_prev()",
];

/// Statements run by `down`: `UP` undone in reverse order.
const DOWN: &[&str] = &[
    "DROP TRIGGER ledger_records_prev_fk ON ledger_records",
    "DROP FUNCTION ledger_records_check_prev()",
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
