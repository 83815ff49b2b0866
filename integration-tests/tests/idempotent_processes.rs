//! Idempotency across processes: two ledgers on one database appending the same client rid
//! with the same content both get the stored record (one of them `replayed`), never a
//! `Conflict` — as a repeat within one process does. Different content under the same rid is
//! still a `Conflict`.

#![allow(clippy::unwrap_used, reason = "a test fails loudly by design")]

mod common;

use std::time::Duration;

use common::TestContext;
use ledger_actors::{Backend, Dsn, Ledger, LedgerConfig, LedgerError};
use ledger_entities::NewRecord;
use serde_json::json;
use uuid::Uuid;

fn config(ctx: &TestContext) -> LedgerConfig {
    LedgerConfig {
        backend: Backend::Postgres,
        dsn: Some(Dsn::parse(&ctx.dsn).unwrap()),
        pool_size: 2,
        timeout: Duration::from_secs(10),
        checkpoint_interval: Duration::ZERO,
        ..LedgerConfig::default()
    }
}

#[actix_rt::test]
async fn the_same_rid_and_content_from_two_ledgers_is_one_record() {
    let ctx = TestContext::new("idem_procs").await;
    let (a, b) = (
        Ledger::start(config(&ctx)).await.unwrap(),
        Ledger::start(config(&ctx)).await.unwrap(),
    );
    let mut replayed = 0;
    for i in 0..100u64 {
        // Anchors of their own: no re-link, only the rid race.
        let anchor = Uuid::now_v7();
        let rid = Uuid::now_v7();
        let rec = || NewRecord::new(anchor, "s", "k", json!({ "i": i }), "p").with_rid(rid);
        let (x, y) = futures::join!(a.append(rec()), b.append(rec()));
        let (x, y) = (
            x.unwrap_or_else(|e| panic!("first ledger, record {i}: {e}")),
            y.unwrap_or_else(|e| panic!("second ledger, record {i}: {e}")),
        );
        assert_eq!(x.record.hash, y.record.hash, "record {i}");
        assert_eq!(x.record.rid, rid);
        replayed += u32::from(x.replayed) + u32::from(y.replayed);
    }
    // At most one of each pair is a replay; every pair stored one record.
    assert!(replayed <= 100, "{replayed}");
    let anchor = Uuid::now_v7();
    let rid = Uuid::now_v7();
    a.append(NewRecord::new(anchor, "s", "k", json!({ "v": 1 }), "p").with_rid(rid))
        .await
        .unwrap();
    let other = b
        .append(NewRecord::new(anchor, "s", "k", json!({ "v": 2 }), "p").with_rid(rid))
        .await;
    assert!(
        matches!(other, Err(LedgerError::Conflict { .. })),
        "{other:?}"
    );
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
    ctx.teardown().await;
}
