//! A multi-host DSN (`h1:p1,h2:p2` with `target_session_attrs=read-write`) on real
//! servers: the ledger connects to whichever host takes writes (the standby is listed
//! first), and when the primary crashes and the standby is promoted, the writer follows it
//! by itself — no proxy, no DNS change — with no failed append and no `Committed` record
//! lost (the primary replicates synchronously on the server side).

#![allow(clippy::unwrap_used, reason = "a test fails loudly by design")]

#[path = "support/appenders.rs"]
mod appenders;
#[path = "support/cluster.rs"]
mod cluster;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use appenders::{Appenders, wait_primary_and_drained};
use cluster::Cluster;
use ledger_actors::{Backend, Dsn, Durability, Ledger, LedgerConfig};
use ledger_entities::NewRecord;
use serde_json::json;
use uuid::Uuid;

fn rec(anchor: Uuid, i: u64) -> NewRecord {
    NewRecord::new(
        anchor,
        "slot",
        "event",
        json!({ "i": i }),
        "multi-host-test",
    )
}

#[actix_rt::test]
async fn a_multi_host_dsn_follows_the_promoted_standby() {
    let primary = Cluster::primary("mhp", &["synchronous_standby_names = '*'"]);
    let standby = Cluster::standby_of(&primary, "mhs", &[]);
    primary.wait_sync_standbys(1);
    primary.sql("CREATE DATABASE ledger");
    // The standby first: the ledger must skip it for the host that takes writes.
    let dsn = format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/ledger?target_session_attrs=read-write",
        standby.port, primary.port
    );
    let parsed = Dsn::parse(&dsn).unwrap();
    assert_eq!(parsed.hosts().len(), 2);
    let ledger = Ledger::start(LedgerConfig {
        backend: Backend::Postgres,
        dsn: Some(parsed),
        pool_size: 4,
        auto_migrate: true,
        failover_after: Duration::from_secs(1),
        checkpoint_interval: Duration::ZERO,
        ..LedgerConfig::default()
    })
    .await
    .unwrap();
    let anchor = Uuid::now_v7();
    for i in 0..20 {
        let ack = ledger.append(rec(anchor, i)).await.unwrap();
        assert_eq!(ack.durability, Durability::Committed);
    }
    let on_primary: u64 = primary
        .sql_in("ledger", "SELECT count(*) FROM ledger_records")
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        on_primary, 20,
        "the records went elsewhere than the primary"
    );

    // Appends under way while the primary crashes and the standby is promoted.
    let appenders = Appenders::start(&ledger, 8, "multi-host-test");
    tokio::time::sleep(Duration::from_secs(1)).await;
    primary.crash();
    let crashed = Instant::now();
    let before: HashSet<Uuid> = appenders
        .acks()
        .iter()
        .filter(|(_, (d, _))| *d == Durability::Committed)
        .map(|(rid, _)| *rid)
        .collect();
    standby.promote();
    let promoted = Instant::now();
    // The failover time: from the crash to the first append, called after the crash, that
    // was acknowledged Committed (on the promoted standby: the old primary is down).
    let deadline = Instant::now() + Duration::from_secs(90);
    let first_committed = loop {
        let first = appenders
            .acks()
            .values()
            .filter(|(d, called)| *d == Durability::Committed && *called > crashed)
            .map(|(_, called)| *called)
            .min();
        if let Some(at) = first {
            break at;
        }
        assert!(
            Instant::now() < deadline,
            "no append was Committed after the promotion: {:?}",
            ledger.outage_status().await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!(
        "multi-host failover: primary crashed -> promoted after {:?} -> an append called {:?} after the crash was Committed",
        promoted - crashed,
        first_committed - crashed
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (failed, acked) = appenders.stop().await;
    assert!(failed.is_empty(), "appends failed: {failed:?}");
    wait_primary_and_drained(&ledger, "after the failover").await;

    let stored: HashSet<Uuid> = standby
        .sql_in("ledger", "SELECT rid FROM ledger_records")
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    let lost: Vec<&Uuid> = before.iter().filter(|r| !stored.contains(r)).collect();
    assert!(lost.is_empty(), "{} Committed records lost", lost.len());
    let missing: Vec<(f64, Durability)> = acked
        .iter()
        .filter(|(r, _)| !stored.contains(r))
        .map(|(_, (d, at))| (at.duration_since(crashed).as_secs_f64(), *d))
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged records not stored (seconds after the crash, durability): {missing:?}; failover at {:?}",
        first_committed - crashed
    );
    assert!(
        acked
            .values()
            .any(|(d, at)| *d == Durability::Committed && *at > promoted),
        "no append was Committed on the promoted standby"
    );
    ledger.shutdown().await.unwrap();
}
