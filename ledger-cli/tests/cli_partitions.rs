//! The CLI over a partitioned ledger (`LEDGER_PARTITIONS`: a database on the shared server
//! and one on a second server this test makes with `pg_createcluster`; the outage behaviour
//! is integration-tests' `partitions`): `migrate up`
//! records each partition and refuses a reordered list; `loadtest` writes every anchor to
//! its partition and verifies; `verify` names partitions; `checkpoint` needs
//! `--partition`; and the documented change of the partition count, 2 → 3, by export,
//! `migrate up` of the new list and import, moves every anchor whole.

#![allow(clippy::unwrap_used, reason = "a test fails loudly by design")]

#[path = "../../integration-tests/tests/support/cluster.rs"]
mod cluster;
#[path = "../../integration-tests/tests/common/mod.rs"]
mod common;
mod support;

use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Output};

use common::TestContext;
use ledger_actors::partition::partition_of;
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use serde_json::Value;
use support::{stderr, stdout, temp_dir};
use uuid::Uuid;

/// `ledger ARGS` over the partitions `dsns`, keys under `keys/p<N>/`.
fn ledger(dsns: &[&str], keys: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ledger"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("LEDGER_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("LEDGER_BACKEND", "postgres")
        .env("LEDGER_PARTITIONS", dsns.join(" "))
        .env("LEDGER_POOL_SIZE", "4")
        .env("LEDGER_TIMEOUT", "10")
        .env(
            "LEDGER_CHECKPOINT_KEY",
            keys.join("p{partition}/checkpoint.key"),
        )
        .args(args)
        .output()
        .expect("ledger runs")
}

fn keygen(keys: &Path, n: usize) {
    for i in 0..n {
        let out = Command::new(env!("CARGO_BIN_EXE_ledger"))
            .args(["keygen", "--origin", &format!("avl.test/cli/p{i}")])
            .arg("--out")
            .arg(keys.join(format!("p{i}")))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
}

async fn anchors_of(db: &sea_orm::DatabaseConnection) -> (HashSet<Uuid>, i64) {
    let rows = db
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT anchor_id, count(*) AS n FROM ledger_records GROUP BY anchor_id",
        ))
        .await
        .unwrap();
    let mut anchors = HashSet::new();
    let mut total = 0;
    for r in rows {
        anchors.insert(r.try_get::<Uuid>("", "anchor_id").unwrap());
        total += r.try_get::<i64>("", "n").unwrap();
    }
    (anchors, total)
}

#[actix_rt::test]
async fn cli_over_partitions_and_a_change_of_the_partition_count() {
    let server = cluster::Cluster::primary("cliparts", &[]);
    server.sql("CREATE DATABASE ledger");
    let second = server.dsn("ledger");
    let a = TestContext::new_unmigrated("cli_parts_a").await;
    let b = sea_orm::Database::connect(second.as_str()).await.unwrap();
    let new = [
        TestContext::new_unmigrated("cli_parts_x").await,
        TestContext::new_unmigrated("cli_parts_y").await,
        TestContext::new_unmigrated("cli_parts_z").await,
    ];
    let old_dsns: Vec<&str> = vec![a.dsn.as_str(), second.as_str()];
    let new_dsns: Vec<&str> = new.iter().map(|c| c.dsn.as_str()).collect();
    let dir = temp_dir("partitions");
    let (old_keys, new_keys) = (dir.join("old"), dir.join("new"));
    keygen(&old_keys, 2);
    keygen(&new_keys, 3);

    let out = ledger(&old_dsns, &old_keys, &["migrate", "up"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).matches("partition record written").count(),
        2,
        "{}",
        stdout(&out)
    );
    // The same list again: the records match; the list reordered: refused, named.
    let out = ledger(&old_dsns, &old_keys, &["migrate", "up"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let swapped = [old_dsns[1], old_dsns[0]];
    let out = ledger(&swapped, &old_keys, &["loadtest", "--anchors", "2"]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("partition 0 (") && stderr(&out).contains("records partition 1 of 2"),
        "{}",
        stderr(&out)
    );

    let out = ledger(
        &old_dsns,
        &old_keys,
        &[
            "loadtest",
            "--anchors",
            "50",
            "--appends-per-anchor",
            "20",
            "--concurrency",
            "32",
            "--json",
        ],
    );
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let result: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(result["errors"], 0, "{result}");
    assert_eq!(result["continuity_breaks"], 0, "{result}");
    assert_eq!(result["partitions"], 2, "{result}");
    let by: Vec<u64> = result["records_by_partition"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["committed"].as_u64().unwrap())
        .collect();
    assert!(
        by.iter().all(|n| *n > 0) && by.iter().sum::<u64>() == 1000,
        "{result}"
    );
    assert_eq!(
        result["checkpoint"].as_array().unwrap().len(),
        2,
        "{result}"
    );

    // Each anchor wholly in its partition.
    let mut all_anchors = HashSet::new();
    for (p, db) in [&a.db, &b].into_iter().enumerate() {
        let (anchors, n) = anchors_of(db).await;
        assert_eq!(n as u64, by[p]);
        for a in &anchors {
            assert_eq!(partition_of(*a, 2), p);
        }
        all_anchors.extend(anchors);
    }
    assert_eq!(all_anchors.len(), 50);

    let out = ledger(&old_dsns, &old_keys, &["verify"]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    for p in ["partition 0 ", "partition 1 "] {
        assert!(stdout(&out).contains(p), "{}", stdout(&out));
    }
    let out = ledger(&old_dsns, &old_keys, &["health", "--json"]);
    let health: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(
        health["partitions"].as_array().unwrap().len(),
        2,
        "{health}"
    );
    let out = ledger(&old_dsns, &old_keys, &["checkpoint"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--partition"), "{}", stderr(&out));
    let out = ledger(&old_dsns, &old_keys, &["checkpoint", "--partition", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("avl.test/cli/p1\n"),
        "{}",
        stdout(&out)
    );

    // The partition count 2 -> 3 (docs/OPERATIONS.md, "Changing the partition count"):
    // export the whole ledger, migrate the new list's fresh databases, import.
    let export = dir.join("all.jsonl");
    let out = ledger(
        &old_dsns,
        &old_keys,
        &["export", "-o", export.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = ledger(&new_dsns, &new_keys, &["migrate", "up"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = ledger(&new_dsns, &new_keys, &["import", export.to_str().unwrap()]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("imported 1000"), "{}", stdout(&out));
    let mut moved = HashSet::new();
    let mut total = 0;
    for (p, ctx) in new.iter().enumerate() {
        let (anchors, n) = anchors_of(&ctx.db).await;
        assert!(n > 0, "new partition {p} is empty");
        total += n;
        for a in &anchors {
            assert_eq!(partition_of(*a, 3), p, "anchor {a} in new partition {p}");
            assert!(!moved.contains(a), "anchor {a} split");
        }
        moved.extend(anchors);
    }
    assert_eq!((moved, total), (all_anchors, 1000));
    let out = ledger(&new_dsns, &new_keys, &["verify", "--json"]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let report: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(report["records"], 1000, "{report}");
    assert_eq!(report["partitions"].as_array().unwrap().len(), 3);
    // The old list no longer fits the new databases.
    let out = ledger(&new_dsns[..1], &new_keys, &["verify"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("partition 0 of 3"),
        "{}",
        stderr(&out)
    );

    let _ = std::fs::remove_dir_all(&dir);
    let _ = b.close().await;
    drop(server);
    for ctx in std::iter::once(a).chain(new) {
        ctx.teardown().await;
    }
}
