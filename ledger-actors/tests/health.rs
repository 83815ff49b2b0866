//! `Ledger::health` on the memory backend: healthy when the actors answer, down when a worker
//! thread is stuck (with the saturation and queued appends it causes visible in the report),
//! down once shut down.

#![allow(clippy::unwrap_used, reason = "a test fails loudly by design")]

use std::time::Duration;

use ledger_actors::{Backend, HealthStatus, Ledger, LedgerConfig};
use ledger_entities::NewRecord;
use serde_json::json;
use uuid::Uuid;

fn rec(anchor: Uuid, i: u64) -> NewRecord {
    NewRecord::new(anchor, "slot", "event", json!({ "i": i }), "tests")
}

/// A fresh memory ledger, and the same ledger after appends, are healthy with every
/// field as expected: memory configured and active, no database, nothing buffered or queued.
#[actix_rt::test]
async fn memory_ledger_is_healthy() {
    let ledger = Ledger::start(LedgerConfig {
        workers: 2,
        ..LedgerConfig::default()
    })
    .await
    .unwrap();
    let fresh = ledger.health().await;
    assert_eq!(fresh.status, HealthStatus::Healthy, "{fresh}");
    for i in 0..50 {
        ledger.append(rec(Uuid::new_v4(), i)).await.unwrap();
    }
    let h = ledger.health().await;
    assert_eq!(h.status, HealthStatus::Healthy, "{h}");
    assert!(h.reasons.is_empty());
    assert_eq!(h.backend_configured, Backend::Memory);
    assert_eq!(h.backend_active, Backend::Memory);
    assert_eq!(h.database_reachable, None);
    assert_eq!(h.buffered_records, 0);
    assert!(h.storage_responding);
    assert_eq!((h.workers_responding, h.workers), (2, 2));
    assert_eq!(h.pressure.in_flight_appends, 0);
    assert_eq!(
        h.pressure.max_in_flight,
        LedgerConfig::default().max_in_flight
    );
    assert_eq!(h.pressure.chain_mailbox.sum, 0);
    let text = h.to_string();
    assert!(text.starts_with("status: healthy\n"), "{text}");
    ledger.shutdown().await.unwrap();
}

/// With the only chain worker thread blocked, appends pile up: the report is down (the
/// worker does not answer), lists saturation of the in-flight limit, and counts the queued
/// appends in the chain mailbox depth. Once the thread is released everything drains and the
/// ledger is healthy again.
#[actix_rt::test]
async fn stuck_worker_is_down_and_shows_the_pressure() {
    let ledger = Ledger::start(LedgerConfig {
        workers: 1,
        max_in_flight: 4,
        timeout: Duration::from_secs(30),
        ..LedgerConfig::default()
    })
    .await
    .unwrap();
    let (release, blocked) = std::sync::mpsc::channel::<()>();
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    assert!(ledger.router().workers()[0].spawn(async move {
        let _ = started_tx.send(());
        // Blocks the worker thread (on purpose) until the test releases it.
        let _ = blocked.recv();
    }));
    started_rx.await.unwrap();

    let anchor = Uuid::new_v4();
    let appends: Vec<_> = (0..4)
        .map(|i| {
            let ledger = ledger.clone();
            actix_rt::spawn(async move { ledger.append(rec(anchor, i)).await })
        })
        .collect();
    // Wait until all four appends hold a permit and sit in the anchor's mailbox.
    loop {
        let h = ledger.health().await;
        if h.pressure.chain_mailbox.sum == 4 {
            assert_eq!(h.status, HealthStatus::Down, "{h}");
            assert_eq!(h.pressure.in_flight_appends, 4);
            assert_eq!(h.pressure.chain_mailbox.max, 4);
            assert_eq!(h.workers_responding, 0);
            assert!(h.storage_responding, "{h}");
            assert!(h.reasons[0].contains("chain worker"), "{h}");
            assert!(h.reasons.iter().any(|r| r.contains("saturated")), "{h}");
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }

    release.send(()).unwrap();
    for append in appends {
        append.await.unwrap().unwrap();
    }
    let h = ledger.health().await;
    assert_eq!(h.status, HealthStatus::Healthy, "{h}");
    assert_eq!(h.pressure.chain_mailbox.sum, 0);
    ledger.shutdown().await.unwrap();
}

/// After shutdown the report is down with the one reason "shutting down", and the JSON form
/// says so.
#[actix_rt::test]
async fn shut_down_ledger_is_down() {
    let ledger = Ledger::start(LedgerConfig {
        workers: 1,
        ..LedgerConfig::default()
    })
    .await
    .unwrap();
    ledger.append(rec(Uuid::new_v4(), 0)).await.unwrap();
    ledger.shutdown().await.unwrap();
    let h = ledger.health().await;
    assert_eq!(h.status, HealthStatus::Down);
    assert_eq!(h.reasons, vec!["the ledger is shutting down".to_owned()]);
    assert_eq!(h.pressure.in_flight_appends, 0);
    let json = serde_json::to_value(&h).unwrap();
    assert_eq!(json["status"], "down");
}
