//! `Ledger::health` on the `postgres` backend: healthy against a live database (the
//! writer answers, the database answers the ping), degraded when the ledger had to start
//! on the memory fallback because the database was unreachable.

mod common;

use std::time::Duration;

use common::TestContext;
use ledger_actors::{Backend, Dsn, HealthStatus, Ledger, LedgerConfig};
use ledger_entities::NewRecord;
use serde_json::json;
use uuid::Uuid;

/// A PostgreSQL ledger with a reachable database is healthy: postgres configured
/// and active, database reachable, writer responding, nothing buffered.
#[actix_rt::test]
async fn postgres_ledger_with_live_database_is_healthy() {
    let ctx = TestContext::new("health_pg").await;
    let ledger = Ledger::start(LedgerConfig {
        backend: Backend::Postgres,
        dsn: Some(Dsn::parse(&ctx.dsn).expect("TestContext DSN parses")),
        pool_size: 2,
        timeout: Duration::from_secs(10),
        workers: 2,
        ..LedgerConfig::default()
    })
    .await
    .expect("ledger starts");
    let anchor = Uuid::new_v4();
    for i in 0..10 {
        ledger
            .append(NewRecord::new(
                anchor,
                "slot",
                "event",
                json!({ "i": i }),
                "test",
            ))
            .await
            .expect("append");
    }
    let h = ledger.health().await;
    assert_eq!(h.status, HealthStatus::Healthy, "{h}");
    assert_eq!(h.backend_configured, Backend::Postgres);
    assert_eq!(h.backend_active, Backend::Postgres);
    assert_eq!(h.database_reachable, Some(true));
    assert_eq!(h.buffered_records, 0);
    assert!(h.storage_responding);
    ledger.shutdown().await.expect("clean shutdown");
    ctx.teardown().await;
}

/// A `postgres` ledger whose database is unreachable at start runs on the memory fallback:
/// degraded (not down: appends work), memory active, database not reachable, with the
/// fallback named in the reasons.
#[actix_rt::test]
async fn postgres_ledger_started_on_the_fallback_is_degraded() {
    let ledger = Ledger::start(LedgerConfig {
        backend: Backend::Postgres,
        dsn: Some(Dsn::parse("postgres://avl@127.0.0.1:1/avl").expect("parses")),
        timeout: Duration::from_millis(500),
        workers: 1,
        ..LedgerConfig::default()
    })
    .await
    .expect("falls back to memory");
    let h = ledger.health().await;
    assert_eq!(h.status, HealthStatus::Degraded, "{h}");
    assert_eq!(h.backend_configured, Backend::Postgres);
    assert_eq!(h.backend_active, Backend::Memory);
    assert_eq!(h.database_reachable, Some(false));
    assert!(h.reasons[0].contains("memory fallback"), "{h}");
    assert!(h.reasons[1].contains("unreachable at start"), "{h}");
    ledger.shutdown().await.expect("clean shutdown");
}
