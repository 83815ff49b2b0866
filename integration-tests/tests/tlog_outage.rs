//! The transparency log's integrator through a PostgreSQL outage, injected with the test TCP
//! proxy (as `outage.rs` does): appends go on (acknowledged on the memory fallback), the
//! integrator cannot reach the database either, and once PostgreSQL is back and the outage
//! buffer has drained, it catches up on its own.

#![allow(clippy::unwrap_used, reason = "a test fails loudly by design")]

mod common;
#[path = "support/proxy.rs"]
mod proxy;

use std::collections::HashSet;
use std::time::Duration;

use common::{TestContext, key_file};
use ledger_actors::log_verify::verify_log;
use ledger_actors::tlog::open_log;
use ledger_actors::{Backend, Dsn, Durability, Ledger, LedgerConfig};
use ledger_entities::NewRecord;
use ledger_tlog::note::NoteSigner;
use proxy::{Mode, Proxy, upstream};
use serde_json::json;
use uuid::Uuid;

/// The test database's DSN, reached through `proxy`.
fn proxied(ctx: &TestContext, proxy: &Proxy) -> Dsn {
    Dsn::parse(&proxy.dsn(&ctx.dsn)).unwrap()
}

fn rec(anchor: Uuid, i: u64) -> NewRecord {
    NewRecord::new(anchor, "slot", "event", json!({ "i": i }), "tlog-outage")
}

/// Records appended before, during (on the memory fallback) and after a PostgreSQL outage
/// all end up in the log exactly once, with no gap and each predecessor first, and a new
/// signed checkpoint covers every one of them: the integrator catches up after the outage
/// and after the outage buffer drains, without a restart.
#[actix_rt::test]
async fn integrator_catches_up_after_an_outage_and_the_drain() {
    let ctx = TestContext::new("tlog_outage").await;
    let proxy = Proxy::start(upstream());
    let signer = NoteSigner::from_seed("example.com/avl-outage", &[7; 32]).unwrap();
    let ledger = Ledger::start(LedgerConfig {
        backend: Backend::Postgres,
        dsn: Some(proxied(&ctx, &proxy)),
        pool_size: 4,
        failover_after: Duration::from_secs(1),
        checkpoint_interval: Duration::from_millis(200),
        checkpoint_key: Some(key_file(&signer)),
        ..LedgerConfig::default()
    })
    .await
    .unwrap();
    let anchors: Vec<Uuid> = (0..5).map(|_| Uuid::now_v7()).collect();
    let mut acked = Vec::new();
    for i in 0..4 {
        for a in &anchors {
            acked.push(ledger.append(rec(*a, i)).await.unwrap());
        }
    }
    let before = ledger
        .await_checkpoint(acked.len() as u64, Duration::from_secs(30))
        .await
        .unwrap()
        .expect("a checkpoint before the outage");
    assert_eq!(before.size, acked.len() as u64);

    // Outage: open connections cut, new ones refused. Appends go on, on the fallback.
    proxy.set(Mode::Refuse);
    proxy.cut_all();
    for i in 4..12 {
        for a in &anchors {
            acked.push(ledger.append(rec(*a, i)).await.unwrap());
        }
    }
    assert!(
        acked.iter().any(|a| a.durability == Durability::Buffered),
        "no append was acknowledged on the fallback"
    );
    // Long enough for the integrator's rounds to fail and back off.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    proxy.set(Mode::Pass);

    let status = ledger.await_drain(Duration::from_secs(60)).await.unwrap();
    assert_eq!(status.buffered, 0, "outage buffer drained");
    for i in 12..14 {
        for a in &anchors {
            acked.push(ledger.append(rec(*a, i)).await.unwrap());
        }
    }
    let total = acked.len() as u64;
    let after = ledger
        .await_checkpoint(total, Duration::from_secs(60))
        .await
        .unwrap()
        .expect("a checkpoint after the outage");
    assert_eq!(after.size, total, "one checkpoint covers every record");
    assert!(after.note.is_some(), "signed");
    ledger.shutdown().await.unwrap();
    drop(proxy);

    // Read back directly: every acknowledged record once, leaves 0..total, predecessors
    // first, every checkpoint signed and consistent with the one before.
    let config = LedgerConfig {
        backend: Backend::Postgres,
        dsn: Some(Dsn::parse(&ctx.dsn).unwrap()),
        checkpoint_interval: Duration::ZERO,
        ..LedgerConfig::default()
    };
    let log = open_log(&config).unwrap();
    let leaves = log.leaves(0, 100_000).await.unwrap();
    assert_eq!(leaves.len() as u64, total);
    assert!(leaves.iter().enumerate().all(|(i, l)| l.index == i as u64));
    let logged: HashSet<Uuid> = leaves.iter().map(|l| l.rid).collect();
    let want: HashSet<Uuid> = acked.iter().map(|a| a.record.rid).collect();
    assert_eq!(
        logged, want,
        "the log holds exactly the acknowledged records"
    );
    assert_eq!(log.misordered(10).await.unwrap(), vec![]);
    // The backlog count behind the lag metrics: from the start, every record, the first
    // committed one's ts first.
    let (backlog, first) = log
        .backlog(ledger_actors::integrator::Watermark::default(), 1_000)
        .await
        .unwrap();
    assert_eq!(backlog, total);
    assert_eq!(first, Some(acked[0].record.ts));
    let (capped, _) = log
        .backlog(ledger_actors::integrator::Watermark::default(), 10)
        .await
        .unwrap();
    assert_eq!(capped, 10);
    let report = verify_log(log.as_ref(), Some(&signer.verifier()), None)
        .await
        .unwrap();
    assert_eq!(report.problems, vec![], "the log verifies");
    assert_eq!(report.pending, 0);
    assert_eq!(report.latest.as_ref().unwrap().0, total);
    ctx.teardown().await;
}
