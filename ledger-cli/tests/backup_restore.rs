//! The backup and restore procedures of docs/OPERATIONS.md ("Backup and restore"), executed
//! step by step against real PostgreSQL: back up, drop the database, restore, `ledger verify`
//! passes, and new appends continue the restored chains.

#![allow(clippy::unwrap_used, reason = "a test fails loudly by design")]

#[path = "../../integration-tests/tests/common/mod.rs"]
mod common;
mod support;

use std::process::Command;

use common::TestContext;
use serde_json::{Value, json};
use support::{json_lines, ledger, stderr, stdout, temp_dir};
use uuid::Uuid;

/// The server's maintenance database (`postgres`) for `dsn`, as `dropdb`/`createdb` take it.
fn maintenance_dsn(dsn: &str) -> String {
    let mut url = url::Url::parse(dsn).unwrap();
    url.set_path("/postgres");
    url.into()
}

/// Runs a PostgreSQL client program; fails the test with its stderr unless it succeeds.
fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} (PostgreSQL client programs on PATH): {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Appends `per_anchor` records to each of `anchors` new anchors through `ledger append`;
/// returns each anchor's head hash.
fn fill(dsn: &str, anchors: usize, per_anchor: usize) -> Vec<(Uuid, String)> {
    let ids: Vec<Uuid> = (0..anchors).map(|_| Uuid::new_v4()).collect();
    let lines: Vec<String> = (0..per_anchor)
        .flat_map(|i| {
            ids.iter().map(move |a| {
                json!({ "anchor_id": a, "slot": "s", "kind": "k", "payload": { "i": i }, "producer": "backup-test" })
                    .to_string()
            })
        })
        .collect();
    let out = ledger(dsn, &["append"], &lines.join("\n"));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let acks = json_lines(&out);
    ids.iter()
        .enumerate()
        .map(|(k, a)| {
            let head = &acks[(per_anchor - 1) * anchors + k];
            (*a, head["hash"].as_str().unwrap().to_owned())
        })
        .collect()
}

/// `ledger verify --json` passes and counts `records`.
fn assert_verified(dsn: &str, records: u64) {
    let out = ledger(dsn, &["verify", "--json"], "");
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let summary: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(summary["records"], records);
    assert_eq!(summary["continuity_breaks"], 0);
}

/// New appends to every restored anchor link onto its head from before the backup.
fn assert_chains_continue(dsn: &str, heads: &[(Uuid, String)]) {
    let lines: Vec<String> = heads
        .iter()
        .map(|(a, _)| json!({ "anchor_id": a, "slot": "s", "kind": "after-restore", "payload": {}, "producer": "p" }).to_string())
        .collect();
    let out = ledger(dsn, &["append"], &lines.join("\n"));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for (ack, (_, head)) in json_lines(&out).iter().zip(heads) {
        assert_eq!(
            ack["prev_hash"],
            json!(head),
            "the chain continues from its restored head"
        );
    }
}

/// Procedure 1 (pg_dump/pg_restore): `pg_dump --format=custom`, `dropdb --force`,
/// `createdb`, `pg_restore --exit-on-error --no-owner`; then `ledger verify` passes and
/// the chains continue.
#[actix_rt::test]
async fn pg_dump_backup_drop_restore_verify_and_continue() {
    let ctx = TestContext::new("backup_pgdump").await;
    let heads = fill(&ctx.dsn, 20, 15);
    let dir = temp_dir("pgdump");
    let dump = dir.join("avl.dump");
    let admin = maintenance_dsn(&ctx.dsn);
    run(
        "pg_dump",
        &[
            "--format=custom",
            "--file",
            dump.to_str().unwrap(),
            &ctx.dsn,
        ],
    );
    run(
        "dropdb",
        &["--force", "--maintenance-db", &admin, &ctx.db_name],
    );
    assert_eq!(
        ledger(&ctx.dsn, &["anchors"], "").status.code(),
        Some(2),
        "the database is gone"
    );
    run("createdb", &["--maintenance-db", &admin, &ctx.db_name]);
    run(
        "pg_restore",
        &[
            "--exit-on-error",
            "--no-owner",
            "--dbname",
            &ctx.dsn,
            dump.to_str().unwrap(),
        ],
    );
    assert_eq!(
        ledger(&ctx.dsn, &["migrate", "status"], "").status.code(),
        Some(0)
    );
    assert_verified(&ctx.dsn, 300);
    assert_chains_continue(&ctx.dsn, &heads);
    assert_verified(&ctx.dsn, 320);
    std::fs::remove_dir_all(dir).unwrap();
    ctx.teardown().await;
}

/// Procedure 2 (export/import): `ledger export -o`, `dropdb --force`, `createdb`,
/// `ledger migrate up`, `ledger import`; then `ledger verify` passes and the chains
/// continue.
#[actix_rt::test]
async fn export_backup_drop_restore_verify_and_continue() {
    let ctx = TestContext::new("backup_export").await;
    let heads = fill(&ctx.dsn, 20, 15);
    let dir = temp_dir("export");
    let file = dir.join("avl.jsonl");
    let admin = maintenance_dsn(&ctx.dsn);
    let out = ledger(&ctx.dsn, &["export", "-o", file.to_str().unwrap()], "");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    run(
        "dropdb",
        &["--force", "--maintenance-db", &admin, &ctx.db_name],
    );
    run("createdb", &["--maintenance-db", &admin, &ctx.db_name]);
    assert_eq!(
        ledger(&ctx.dsn, &["migrate", "up"], "").status.code(),
        Some(0)
    );
    let out = ledger(&ctx.dsn, &["import", file.to_str().unwrap(), "--json"], "");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_verified(&ctx.dsn, 300);
    assert_chains_continue(&ctx.dsn, &heads);
    assert_verified(&ctx.dsn, 320);
    std::fs::remove_dir_all(dir).unwrap();
    ctx.teardown().await;
}
