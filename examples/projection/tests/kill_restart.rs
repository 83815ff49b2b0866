//! The projection example killed (SIGKILL) and restarted mid-stream, several times, while
//! records are appended: afterwards its per-anchor totals and counts equal a recomputation
//! from every record in the ledger (nothing applied twice, nothing skipped), and its stored
//! position is the log's last.

#![allow(clippy::unwrap_used, reason = "a test fails loudly by design")]

#[path = "../../../integration-tests/tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::TestContext;
use ledger_actors::{Backend, Dsn, Ledger, LedgerConfig};
use ledger_entities::NewRecord;
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use serde_json::json;
use uuid::Uuid;

fn start_projection(dsn: &str) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_avl-projection"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("LEDGER_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("LEDGER_BACKEND", "postgres")
        .env("LEDGER_DSN", dsn)
        // Small transactions: many of them, so a kill lands between or inside one.
        .env("PROJECTION_BATCH", "7")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// The projection's stored position (`None` before its first batch).
async fn stored_position(db: &sea_orm::DatabaseConnection) -> Option<i64> {
    let row = db
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT last FROM projection_position WHERE id = 1",
        ))
        .await
        .ok()
        .flatten()?;
    row.try_get::<Option<i64>>("", "last").ok().flatten()
}

#[actix_rt::test]
async fn projection_totals_survive_sigkill_and_restart() {
    let ctx = TestContext::new("projection").await;
    let ledger = Ledger::start(LedgerConfig {
        backend: Backend::Postgres,
        dsn: Some(Dsn::parse(&ctx.dsn).unwrap()),
        pool_size: 4,
        checkpoint_interval: Duration::from_millis(200),
        ..LedgerConfig::default()
    })
    .await
    .unwrap();
    let anchors: Vec<Uuid> = (0..6).map(|_| Uuid::now_v7()).collect();
    let append_round = |round: u64| {
        let ledger = ledger.clone();
        let anchors = anchors.clone();
        async move {
            for i in 0..50u64 {
                for (k, a) in anchors.iter().enumerate() {
                    // Positive and negative amounts, and some records without one.
                    let n = (round * 50 + i) as i64 * (k as i64 + 1);
                    let payload = if i % 11 == 0 {
                        json!({ "note": "no amount" })
                    } else {
                        json!({ "amount": n % 97 - 40 })
                    };
                    ledger
                        .append(NewRecord::new(*a, "s", "event", payload, "projection-test"))
                        .await
                        .unwrap();
                }
            }
        }
    };

    append_round(0).await;
    let mut kills = 0;
    for round in 1..=4 {
        let mut projection = start_projection(&ctx.dsn);
        // Let it apply some batches while this round appends, then kill it mid-stream.
        let before = stored_position(&ctx.db).await;
        let appending = actix_rt::spawn(append_round(round));
        loop {
            // Killed after a few batches more each round (still behind the appends).
            let now = stored_position(&ctx.db).await;
            if now.is_some_and(|n| n >= before.unwrap_or(-1) + 20 * round as i64) {
                break;
            }
            assert!(
                projection.try_wait().unwrap().is_none(),
                "the projection exited"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        projection.kill().unwrap(); // SIGKILL
        projection.wait().unwrap();
        kills += 1;
        appending.await.unwrap();
    }
    assert_eq!(kills, 4);

    // A last run catches up to the log's end.
    let total = 5 * 50 * anchors.len() as i64;
    let mut projection = start_projection(&ctx.dsn);
    loop {
        if stored_position(&ctx.db).await == Some(total - 1) {
            break;
        }
        assert!(
            projection.try_wait().unwrap().is_none(),
            "the projection exited"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    projection.kill().unwrap();
    projection.wait().unwrap();

    // Recompute from the ledger's records.
    let mut want: HashMap<Uuid, (i64, i64)> = HashMap::new();
    for a in &anchors {
        let records = ledger
            .records(*a, &ledger_actors::RecordRange::default())
            .await
            .unwrap();
        let e = want.entry(*a).or_default();
        for r in records {
            e.0 += r.payload.to_value()["amount"].as_i64().unwrap_or(0);
            e.1 += 1;
        }
    }
    let rows = ctx
        .db
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT anchor_id, total, records FROM projection_totals",
        ))
        .await
        .unwrap();
    let got: HashMap<Uuid, (i64, i64)> = rows
        .iter()
        .map(|r| {
            (
                r.try_get::<Uuid>("", "anchor_id").unwrap(),
                (
                    r.try_get::<i64>("", "total").unwrap(),
                    r.try_get::<i64>("", "records").unwrap(),
                ),
            )
        })
        .collect();
    assert_eq!(got, want, "totals equal a recomputation from the ledger");
    assert_eq!(want.values().map(|v| v.1).sum::<i64>(), total);
    ledger.shutdown().await.unwrap();
    ctx.teardown().await;
}
