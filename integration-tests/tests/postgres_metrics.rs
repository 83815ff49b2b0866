//! Database error metrics of the `postgres` backend, with the ledger's Prometheus recorder
//! installed process-wide. A separate test binary, so no other test's errors are counted.

mod common;

use std::time::Duration;

use common::TestContext;
use ledger_actors::{Backend, Dsn, Ledger, LedgerConfig, LedgerError};
use ledger_entities::NewRecord;
use serde_json::json;
use uuid::Uuid;

/// Records refused by validation never reach the database: `ledger_db_errors_total` stays
/// 0 for both classes, while the committed good records show up in `ledger_db_batch_size`.
#[actix_rt::test]
async fn invalid_records_do_not_count_as_database_errors() {
    let recorder = ledger_actors::metrics::builder()
        .expect("exporter configuration")
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).expect("first recorder of this binary");
    ledger_actors::metrics::register_counters();

    let ctx = TestContext::new("pg_metrics_invalid").await;
    let config = LedgerConfig {
        backend: Backend::Postgres,
        dsn: Some(Dsn::parse(&ctx.dsn).expect("TestContext DSN parses")),
        pool_size: 2,
        timeout: Duration::from_secs(10),
        max_payload_bytes: 1024,
        ..LedgerConfig::default()
    };
    let ledger = Ledger::start(config).await.expect("ledger starts");
    assert_eq!(ledger.store().backend(), Backend::Postgres);
    let anchor = Uuid::new_v4();
    let record = |payload| NewRecord::new(anchor, "slot", "kind", payload, "test");
    ledger
        .append(record(json!({ "ok": 1 })))
        .await
        .expect("append");
    for bad in [
        record(json!({ "nul": "\u{0}" })),
        record(json!({ "big": "x".repeat(4096) })),
    ] {
        assert!(matches!(
            ledger.append(bad).await,
            Err(LedgerError::Invalid(_))
        ));
    }
    ledger
        .append(record(json!({ "ok": 2 })))
        .await
        .expect("append");
    ledger.shutdown().await.expect("clean shutdown");
    assert_eq!(ledger.store().count().await.expect("count"), 2);

    let text = handle.render();
    assert!(
        text.contains("ledger_db_errors_total{class=\"data\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("ledger_db_errors_total{class=\"connectivity\"} 0"),
        "{text}"
    );
    assert!(text.contains("ledger_db_batch_size_count 2"), "{text}");
    ctx.teardown().await;
}
