//! `replication: synchronous` on real servers: a primary with a synchronous streaming
//! standby made for the test (`support/cluster.rs`), the ledger reaching it through a proxy
//! that a failover re-points, as a managed database's DNS name moves to the promoted
//! standby.
//!
//! What `Committed` promises under it: flushed by the standby too, so a crash of the primary
//! and the promotion of the standby lose no `Committed` record; a server whose synchronous
//! standbys are unconfigured (one `ALTER SYSTEM`) takes no write the ledger would call
//! `Committed` (the records wait, acknowledged `Buffered`); a server without any refuses the
//! start.

#![allow(clippy::unwrap_used, reason = "a test fails loudly by design")]

#[path = "support/appenders.rs"]
mod appenders;
#[path = "support/cluster.rs"]
mod cluster;
mod common;
#[path = "support/proxy.rs"]
mod proxy;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use appenders::{Appenders, wait_primary_and_drained};
use cluster::Cluster;
use common::TestContext;
use ledger_actors::writer::Mode;
use ledger_actors::{Backend, Dsn, Durability, Ledger, LedgerConfig, LedgerError, Replication};
use ledger_entities::NewRecord;
use proxy::Proxy;
use serde_json::json;
use uuid::Uuid;

fn rec(anchor: Uuid, i: u64) -> NewRecord {
    NewRecord::new(
        anchor,
        "slot",
        "event",
        json!({ "i": i }),
        "replication-test",
    )
}

fn sync_config(dsn: &str) -> LedgerConfig {
    LedgerConfig {
        backend: Backend::Postgres,
        dsn: Some(Dsn::parse(dsn).unwrap()),
        replication: Replication::Synchronous,
        pool_size: 4,
        auto_migrate: true,
        failover_after: Duration::from_secs(1),
        checkpoint_interval: Duration::ZERO,
        ..LedgerConfig::default()
    }
}

#[actix_rt::test]
async fn synchronous_replication_refuses_a_server_without_a_synchronous_standby() {
    // The shared server has no synchronous_standby_names.
    let ctx = TestContext::new("sync_refused").await;
    let err = Ledger::start(sync_config(&ctx.dsn)).await.err().unwrap();
    assert!(
        matches!(&err, LedgerError::NotReplicated(m) if m.contains("synchronous_standby_names is empty")),
        "{err}"
    );
    // The same configuration on memory is refused before anything starts.
    let err = LedgerConfig {
        backend: Backend::Memory,
        ..sync_config(&ctx.dsn)
    }
    .check()
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("replication: synchronous needs backend: postgres"),
        "{err}"
    );
    ctx.teardown().await;
}

#[actix_rt::test]
async fn synchronous_replication_loses_no_committed_record_in_a_failover() {
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    }
    // The server's own default is `local`: only the ledger's sessions ask for the standby,
    // so this also shows that a server-side `synchronous_commit` cannot weaken them.
    let primary = Cluster::primary(
        "syncp",
        &[
            "synchronous_standby_names = '*'",
            "synchronous_commit = local",
        ],
    );
    // The standby's own configuration names synchronous standbys too: once promoted, it
    // is a primary that waits for one of its own.
    let standby = Cluster::standby_of(&primary, "syncs", &["synchronous_standby_names = '*'"]);
    primary.wait_sync_standbys(1);
    primary.sql("CREATE DATABASE ledger");

    let proxy = Proxy::start(primary.addr());
    let ledger = Ledger::start(sync_config(&proxy.dsn(&primary.dsn("ledger"))))
        .await
        .unwrap();

    // 1. Steady: every append Committed, and health sees the synchronous standby.
    let anchor = Uuid::now_v7();
    let mut committed: Vec<Uuid> = Vec::new();
    let mut i = 0u64;
    for _ in 0..100 {
        let ack = ledger.append(rec(anchor, i)).await.unwrap();
        assert_eq!(ack.durability, Durability::Committed);
        committed.push(ack.record.rid);
        i += 1;
    }
    let health = ledger.health().await;
    let replication = health.replication.clone().unwrap();
    assert_eq!(replication.sync_standbys, Some(1), "{health:?}");
    assert!(health.reasons.is_empty(), "{health:?}");

    // 2. An operator empties synchronous_standby_names: PostgreSQL would now commit locally
    // without a word. The ledger's guard refuses those writes; appends go on, `Buffered`.
    primary.sql("ALTER SYSTEM SET synchronous_standby_names = ''");
    primary.sql("SELECT pg_reload_conf()");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stored_before: u64 = primary
        .sql_in("ledger", "SELECT count(*) FROM ledger_records")
        .trim()
        .parse()
        .unwrap();
    let mut unreplicated = Vec::new();
    for _ in 0..30 {
        let ack = ledger.append(rec(anchor, i)).await.unwrap();
        assert_ne!(
            ack.durability,
            Durability::Committed,
            "a record was acknowledged Committed while the server had no synchronous standby"
        );
        unreplicated.push(ack.record.rid);
        i += 1;
    }
    let stored_during: u64 = primary
        .sql_in("ledger", "SELECT count(*) FROM ledger_records")
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        stored_during, stored_before,
        "the guard let a write through to a server without synchronous standbys"
    );
    let health = ledger.health().await;
    assert!(
        health
            .reasons
            .iter()
            .any(|r| r.contains("no synchronous_standby_names")),
        "{health:?}"
    );
    let status = ledger.outage_status().await.unwrap();
    assert_eq!(status.mode, Mode::Outage, "{status:?}");
    // Back: the buffered records drain, and appends are Committed again.
    primary.sql("ALTER SYSTEM RESET synchronous_standby_names");
    primary.sql("SELECT pg_reload_conf()");
    wait_primary_and_drained(&ledger, "after the standby names returned").await;
    let status = ledger.outage_status().await.unwrap();
    assert_eq!(
        status.drains, 1,
        "the probe took a server without synchronous standbys for recovered: {status:?}"
    );
    let ack = ledger.append(rec(anchor, i)).await.unwrap();
    assert_eq!(ack.durability, Durability::Committed);
    committed.push(ack.record.rid);
    committed.extend(unreplicated);
    i += 1;

    // 3. Failover under load: appends go on while the primary crashes, the standby is
    // promoted, the endpoint moves to it, and a new standby is attached to it.
    let appenders = Appenders::start(&ledger, 8, "replication-test");
    tokio::time::sleep(Duration::from_secs(2)).await;
    primary.crash();
    let crashed_at: HashSet<Uuid> = appenders
        .acks()
        .iter()
        .filter(|(_, (d, _))| *d == Durability::Committed)
        .map(|(rid, _)| *rid)
        .collect();
    assert!(
        !crashed_at.is_empty(),
        "no append was committed before the crash"
    );
    standby.promote();
    proxy.retarget(standby.addr());
    proxy.cut_all();
    // The promoted server waits for a synchronous standby of its own.
    let second = Cluster::standby_of(&standby, "syncs2", &[]);
    standby.wait_sync_standbys(1);
    // Appends are Committed again on the new primary.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let status = ledger.outage_status().await.unwrap();
        let recent_committed = appenders
            .acks()
            .iter()
            .filter(|(rid, (d, _))| *d == Durability::Committed && !crashed_at.contains(rid))
            .count();
        if status.mode == Mode::Primary && status.buffered == 0 && recent_committed > 50 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "appends were not Committed on the new primary: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (failed, acked) = appenders.stop().await;
    assert!(
        failed.is_empty(),
        "appends failed during the failover: {failed:?}"
    );
    wait_primary_and_drained(&ledger, "after the failover").await;

    // Nothing acknowledged Committed is missing on the new primary: neither what was
    // committed before the crash nor anything since; and every acknowledged record is there.
    let stored: HashSet<Uuid> = standby
        .sql_in("ledger", "SELECT rid FROM ledger_records")
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    let lost_committed: Vec<&Uuid> = committed
        .iter()
        .chain(
            acked
                .iter()
                .filter(|(_, (d, _))| *d == Durability::Committed)
                .map(|(r, _)| r),
        )
        .filter(|rid| !stored.contains(rid))
        .collect();
    assert!(
        lost_committed.is_empty(),
        "{} records acknowledged Committed are not on the promoted standby (first: {:?})",
        lost_committed.len(),
        lost_committed.first()
    );
    let missing: Vec<&Uuid> = acked.keys().filter(|rid| !stored.contains(rid)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged records are not stored after the drain",
        missing.len()
    );
    let rows: u64 = standby
        .sql_in("ledger", "SELECT count(*) FROM ledger_records")
        .trim()
        .parse()
        .unwrap();
    assert_eq!(rows as usize, stored.len(), "a rid is stored twice");
    assert!(rows >= i, "{rows} rows, at least {i} expected");
    ledger.shutdown().await.unwrap();
    drop(second);
}
