//! A server that answers but refuses writes — a standby the endpoint points at, or a
//! database set read-only — is an outage until it takes writes again: the writer fails over
//! once and stays on the fallback, instead of taking `SELECT 1` for recovery, starting a
//! drain that fails with 25006 and failing over again, in a loop.

#![allow(clippy::unwrap_used, reason = "a test fails loudly by design")]

mod common;

use std::time::{Duration, Instant};

use common::TestContext;
use ledger_actors::writer::Mode;
use ledger_actors::{Backend, Dsn, Durability, Ledger, LedgerConfig, LedgerStore};
use ledger_entities::NewRecord;
use sea_orm::ConnectionTrait;
use serde_json::json;
use uuid::Uuid;

fn rec(anchor: Uuid, i: u64) -> NewRecord {
    NewRecord::new(anchor, "slot", "event", json!({ "i": i }), "read-only-test")
}

/// Sets the test database's default read-only flag and ends every other session on it, so
/// that the ledger's pool reconnects under the new default (as connections to a standby do).
async fn set_read_only(ctx: &TestContext, on: bool) {
    let flag = if on { "on" } else { "off" };
    // One statement string, so one session: the pooled session may itself be read-only
    // (opened while the flag was on), and `BEGIN READ WRITE` overrides its default.
    ctx.db
        .execute_unprepared(&format!(
            "BEGIN READ WRITE; ALTER DATABASE \"{}\" SET default_transaction_read_only = {flag}; COMMIT",
            ctx.db_name
        ))
        .await
        .unwrap();
    ctx.db
        .execute_unprepared(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = '{}' AND pid <> pg_backend_pid()",
            ctx.db_name
        ))
        .await
        .unwrap();
}

#[actix_rt::test]
async fn a_read_only_server_is_one_outage_not_a_failover_loop() {
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    }
    let ctx = TestContext::new("read_only").await;
    let ledger = Ledger::start(LedgerConfig {
        backend: Backend::Postgres,
        dsn: Some(Dsn::parse(&ctx.dsn).unwrap()),
        pool_size: 2,
        failover_after: Duration::from_secs(1),
        checkpoint_interval: Duration::ZERO,
        ..LedgerConfig::default()
    })
    .await
    .unwrap();
    let anchor = Uuid::now_v7();
    let mut i = 0;
    for _ in 0..10 {
        let ack = ledger.append(rec(anchor, i)).await.unwrap();
        assert_eq!(ack.durability, Durability::Committed);
        i += 1;
    }

    set_read_only(&ctx, true).await;
    // Appends go on through the read-only window: none fails, and after the first refused
    // INSERT they are buffered.
    let window = Instant::now();
    let mut buffered = 0;
    while window.elapsed() < Duration::from_secs(4) {
        let ack = ledger.append(rec(anchor, i)).await.unwrap();
        if ack.durability == Durability::Buffered {
            buffered += 1;
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(buffered > 0, "no append was buffered on a read-only server");
    let status = ledger.outage_status().await.unwrap();
    assert_eq!(status.mode, Mode::Outage, "{status:?}");
    assert_eq!(status.failovers, 1, "{status:?}");
    assert_eq!(
        status.drains, 0,
        "the writer took the read-only server for recovered and drained into it: {status:?}"
    );

    set_read_only(&ctx, false).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = ledger.outage_status().await.unwrap();
        if status.mode == Mode::Primary && status.buffered == 0 {
            assert_eq!(status.failovers, 1, "{status:?}");
            assert_eq!(
                status.drains, 1,
                "one drain once it takes writes: {status:?}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the drain did not finish: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = ledger.append(rec(anchor, i)).await.unwrap();
    assert_eq!(after.durability, Durability::Committed);
    i += 1;

    // Every acknowledged record is in PostgreSQL, once, on one unbroken chain.
    let store: std::sync::Arc<dyn LedgerStore> =
        ledger_actors::create_ledger_store(&LedgerConfig {
            backend: Backend::Postgres,
            dsn: Some(Dsn::parse(&ctx.dsn).unwrap()),
            pool_size: 1,
            ..LedgerConfig::default()
        })
        .await
        .unwrap();
    let stored = store.records(anchor, &Default::default()).await.unwrap();
    assert_eq!(stored.len() as u64, i);
    let report = ledger.verify(anchor).await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.records, i);
    ledger.shutdown().await.unwrap();
    ctx.teardown().await;
}
