//! Black-box tests of the ledger on the memory backend, through the public API.

#![allow(clippy::unwrap_used, reason = "a test fails loudly by design")]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use ledger_actors::store::MemoryLedgerStore;
use ledger_actors::{Durability, Ledger, LedgerConfig, LedgerError, RecordRange};
use ledger_entities::{LedgerRecord, NewRecord};
use serde_json::json;
use uuid::Uuid;

fn config() -> LedgerConfig {
    LedgerConfig {
        workers: 2,
        ..LedgerConfig::default()
    }
}

fn rec(anchor: Uuid, i: u64) -> NewRecord {
    NewRecord::new(anchor, "slot", "event", json!({ "i": i }), "tests")
}

async fn all_records(ledger: &Ledger, anchor: Uuid) -> Vec<Arc<LedgerRecord>> {
    let mut out = Vec::new();
    let mut range = RecordRange {
        limit: 100,
        ..RecordRange::default()
    };
    loop {
        let page = ledger.records(anchor, &range).await.unwrap();
        let Some(last) = page.last() else { break };
        range = range.after(last);
        let full = page.len() == range.limit;
        out.extend(page);
        if !full {
            break;
        }
    }
    out
}

/// Asserts the anchor's stored chain is exactly `acked` (by rid), linked, with strictly
/// increasing ts, and that verification agrees.
async fn assert_chain_is(ledger: &Ledger, anchor: Uuid, acked: &HashSet<Uuid>) {
    let chain = all_records(ledger, anchor).await;
    assert_eq!(
        chain.len(),
        acked.len(),
        "chain length vs acknowledged appends"
    );
    let stored: HashSet<Uuid> = chain.iter().map(|r| r.rid).collect();
    assert_eq!(&stored, acked);
    assert_eq!(chain[0].prev_hash, None);
    for w in chain.windows(2) {
        assert_eq!(w[1].prev_hash, Some(w[0].hash));
        assert!(w[1].ts > w[0].ts, "ts must strictly increase");
    }
    let report = ledger.verify(anchor).await.unwrap();
    assert!(report.is_intact(), "{:?}", report.broken);
    assert_eq!(report.records, acked.len() as u64);
}

/// 64 concurrent tasks appending to ONE anchor give one continuous chain of exactly the
/// acknowledged appends, with strictly increasing ts.
#[actix_rt::test]
async fn sixty_four_appenders_on_one_anchor_make_one_chain() {
    let ledger = Ledger::start(config()).await.unwrap();
    let anchor = Uuid::new_v4();
    let tasks = (0..64u64).map(|t| {
        let ledger = ledger.clone();
        async move {
            let mut rids = Vec::new();
            for i in 0..25 {
                let ack = ledger.append(rec(anchor, t * 1000 + i)).await.unwrap();
                assert_eq!(ack.durability, Durability::Volatile);
                assert!(!ack.replayed);
                rids.push(ack.record.rid);
            }
            rids
        }
    });
    let acked: HashSet<Uuid> = join_all(tasks).await.into_iter().flatten().collect();
    assert_eq!(acked.len(), 64 * 25);
    assert_chain_is(&ledger, anchor, &acked).await;
    ledger.shutdown().await.unwrap();
}

/// 1,000 anchors appended in parallel all verify, with exact counts.
#[actix_rt::test]
async fn thousand_anchors_in_parallel_all_verify() {
    let ledger = Ledger::start(config()).await.unwrap();
    let anchors: Vec<Uuid> = (0..1000).map(|_| Uuid::new_v4()).collect();
    let tasks = (0..5u64)
        .flat_map(|i| anchors.iter().map(move |a| (*a, i)))
        .collect::<Vec<_>>();
    // 200 appenders, each taking every 200th job, so anchors interleave.
    let jobs = Arc::new(tasks);
    let workers = (0..200).map(|w| {
        let ledger = ledger.clone();
        let jobs = Arc::clone(&jobs);
        async move {
            for (a, i) in jobs.iter().skip(w).step_by(200) {
                ledger.append(rec(*a, *i)).await.unwrap();
            }
        }
    });
    join_all(workers).await;
    let summary = ledger.verify_all().await.unwrap();
    assert_eq!(summary.anchors, 1000);
    assert_eq!(summary.records, 5000);
    assert!(summary.breaks.is_empty());
    assert_eq!(ledger.store().count().await.unwrap(), 5000);
    ledger.shutdown().await.unwrap();
}

/// Each kind of invalid record is refused with its typed error, and nothing is written.
#[actix_rt::test]
async fn invalid_records_are_refused_and_change_nothing() {
    let ledger = Ledger::start(config()).await.unwrap();
    let anchor = Uuid::new_v4();
    ledger.append(rec(anchor, 0)).await.unwrap();
    let head = ledger.head(anchor).await.unwrap();
    let mut nul_slot = rec(anchor, 1);
    nul_slot.slot = "a\0".into();
    let mut empty_kind = rec(anchor, 1);
    empty_kind.kind = String::new();
    let cases = vec![
        nul_slot,
        empty_kind,
        NewRecord::new(anchor, "s", "k", json!({"v": "nul\u{0}"}), "p"),
        NewRecord::new(anchor, "s", "k", json!({"big": (1u64 << 60) + 1}), "p"),
        NewRecord::new(anchor, "s", "k", json!("x".repeat(2 << 20)), "p"),
    ];
    for bad in cases {
        match ledger.append(bad).await {
            Err(LedgerError::Invalid(_)) => {}
            other => panic!("expected Invalid, got {other:?}"),
        }
    }
    assert_eq!(ledger.head(anchor).await.unwrap(), head);
    assert_eq!(ledger.store().count().await.unwrap(), 1);
    // An invalid first record does not create its anchor.
    let fresh = Uuid::new_v4();
    let mut bad = rec(fresh, 0);
    bad.producer = String::new();
    assert!(matches!(
        ledger.append(bad).await,
        Err(LedgerError::Invalid(_))
    ));
    assert_eq!(
        ledger.head(fresh).await,
        Err(LedgerError::UnknownAnchor(fresh))
    );
    ledger.shutdown().await.unwrap();
}

/// Re-appending a client rid with the same content returns the stored record; different
/// content, or the same rid on another anchor, is a Conflict; concurrent repeats of one rid
/// store it once.
#[actix_rt::test]
async fn client_rids_make_appends_idempotent() {
    let ledger = Ledger::start(config()).await.unwrap();
    let anchor = Uuid::new_v4();
    let rid = Uuid::new_v4();
    let first = ledger.append(rec(anchor, 1).with_rid(rid)).await.unwrap();
    assert!(!first.replayed);
    ledger.append(rec(anchor, 2)).await.unwrap();
    let again = ledger.append(rec(anchor, 1).with_rid(rid)).await.unwrap();
    assert!(again.replayed);
    assert_eq!(again.record, first.record);
    assert!(matches!(
        ledger.append(rec(anchor, 99).with_rid(rid)).await,
        Err(LedgerError::Conflict { rid: r, .. }) if r == rid
    ));
    assert!(matches!(
        ledger.append(rec(Uuid::new_v4(), 1).with_rid(rid)).await,
        Err(LedgerError::Conflict { .. })
    ));
    assert_eq!(ledger.store().count().await.unwrap(), 2);

    // 32 concurrent appends of one new rid: all succeed with the same record, stored once.
    let rid2 = Uuid::new_v4();
    let acks = join_all((0..32).map(|_| ledger.append(rec(anchor, 7).with_rid(rid2)))).await;
    let hashes: HashSet<ledger_entities::RecordHash> =
        acks.into_iter().map(|a| a.unwrap().record.hash).collect();
    assert_eq!(hashes.len(), 1);
    assert_eq!(ledger.store().count().await.unwrap(), 3);
    assert!(ledger.verify(anchor).await.unwrap().is_intact());
    ledger.shutdown().await.unwrap();
}

/// An anchor passivated while idle and revived under concurrent load keeps one chain: no
/// append lost, none reordered into a fork.
#[actix_rt::test]
async fn passivation_racing_appends_keeps_one_chain() {
    let config = LedgerConfig {
        passivate_after: Duration::from_millis(3),
        ..config()
    };
    let ledger = Ledger::start(config).await.unwrap();
    let anchor = Uuid::new_v4();
    ledger.append(rec(anchor, 0)).await.unwrap();
    // Idle long enough: the actor passivates and leaves the router.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        ledger.router().active(),
        0,
        "idle anchor was not passivated"
    );
    let before = ledger.router().passivated();
    // 40 rounds of 16 concurrent appends; between rounds the anchor idles for 0..8 ms, so
    // its actor passivates in some gaps and the next round races the retirement in others.
    let mut acked: HashSet<Uuid> = HashSet::new();
    for round in 0..40u64 {
        let appends = (0..16u64).map(|t| ledger.append(rec(anchor, round * 100 + t)));
        for ack in join_all(appends).await {
            acked.insert(ack.unwrap().record.rid);
        }
        tokio::time::sleep(Duration::from_micros(round * 997 % 8000)).await;
    }
    acked.insert(all_records(&ledger, anchor).await[0].rid);
    assert_eq!(acked.len(), 16 * 40 + 1);
    assert!(
        ledger.router().passivated() > before,
        "no passivation happened under load"
    );
    assert_chain_is(&ledger, anchor, &acked).await;
    ledger.shutdown().await.unwrap();
}

/// Above `max_live_actors`, an idle actor passivates at once (not after `passivate_after`):
/// appends to many anchors at a time, several racing per anchor, all land in whole chains
/// while actors come and go, and the actors do not all stay alive.
#[actix_rt::test]
async fn crowded_actors_passivate_when_idle_and_keep_every_chain() {
    let config = LedgerConfig {
        max_live_actors: 4,
        ..config()
    };
    let ledger = Ledger::start(config).await.unwrap();
    let anchors: Vec<Uuid> = (0..64).map(|_| Uuid::new_v4()).collect();
    let mut acked: Vec<HashSet<Uuid>> = vec![HashSet::new(); anchors.len()];
    for round in 0..10u64 {
        let ledger = &ledger;
        let appends = anchors.iter().enumerate().flat_map(|(i, a)| {
            (0..3u64).map(move |t| async move { (i, ledger.append(rec(*a, round * 10 + t)).await) })
        });
        for (i, ack) in join_all(appends).await {
            acked[i].insert(ack.unwrap().record.rid);
        }
    }
    assert!(
        ledger.router().passivated() > 0,
        "no actor passivated above the cap"
    );
    assert!(
        ledger.router().active() < anchors.len(),
        "every actor stayed alive above the cap"
    );
    for (a, rids) in anchors.iter().zip(&acked) {
        assert_eq!(rids.len(), 30);
        assert_chain_is(&ledger, *a, rids).await;
    }
    ledger.shutdown().await.unwrap();
}

/// A new Ledger over the same store continues every chain from its head.
#[actix_rt::test]
async fn restarted_ledger_continues_every_chain() {
    let store = Arc::new(MemoryLedgerStore::new());
    let anchors: Vec<Uuid> = (0..20).map(|_| Uuid::new_v4()).collect();
    let first = Ledger::start_memory(config(), Arc::clone(&store)).unwrap();
    for (i, a) in anchors.iter().enumerate() {
        for j in 0..=i as u64 {
            first.append(rec(*a, j)).await.unwrap();
        }
    }
    first.shutdown().await.unwrap();
    assert!(matches!(
        first.append(rec(anchors[0], 0)).await,
        Err(LedgerError::ShuttingDown)
    ));

    let second = Ledger::start_memory(config(), Arc::clone(&store)).unwrap();
    for a in &anchors {
        let head = second.head(*a).await.unwrap();
        let ack = second.append(rec(*a, 1000)).await.unwrap();
        assert_eq!(ack.record.prev_hash, Some(head.hash));
        assert!(ack.record.ts > head.ts);
    }
    let summary = second.verify_all().await.unwrap();
    assert!(summary.breaks.is_empty());
    assert_eq!(summary.records, (1..=20).sum::<u64>() + 20);
    second.shutdown().await.unwrap();
}

/// Reads of an anchor without records are a typed UnknownAnchor error.
#[actix_rt::test]
async fn unknown_anchors_are_typed_errors() {
    let ledger = Ledger::start(config()).await.unwrap();
    let a = Uuid::new_v4();
    assert_eq!(ledger.head(a).await, Err(LedgerError::UnknownAnchor(a)));
    assert_eq!(
        ledger.records(a, &RecordRange::default()).await,
        Err(LedgerError::UnknownAnchor(a))
    );
    assert_eq!(ledger.verify(a).await, Err(LedgerError::UnknownAnchor(a)));
    assert_eq!(ledger.get(Uuid::new_v4()).await, Ok(None));
    ledger.shutdown().await.unwrap();
}

/// Verification finds an altered record: the break names its rid and the hash mismatch.
#[actix_rt::test]
async fn verify_reports_the_first_altered_record() {
    let ledger = Ledger::start(config()).await.unwrap();
    let anchor = Uuid::new_v4();
    for i in 0..5 {
        ledger.append(rec(anchor, i)).await.unwrap();
    }
    let chain = all_records(&ledger, anchor).await;
    ledger.shutdown().await.unwrap();
    // Copy the chain into a second store with record 2's payload altered (hash kept).
    let tampered = Arc::new(MemoryLedgerStore::new());
    for (i, r) in chain.iter().enumerate() {
        let mut r = (**r).clone();
        if i == 2 {
            r.payload = ledger_entities::Payload::from_value(&json!({"i": 999})).unwrap();
        }
        tampered.insert_now(&[Arc::new(r)]).unwrap();
    }
    let ledger = Ledger::start_memory(config(), tampered).unwrap();
    let report = ledger.verify(anchor).await.unwrap();
    let broken = report.broken.expect("tampering must be found");
    assert_eq!(broken.rid, chain[2].rid);
    assert_eq!(broken.position, 2);
    assert!(matches!(
        broken.reason,
        ledger_actors::verify::BreakReason::HashMismatch { .. }
    ));
    let summary = ledger.verify_all().await.unwrap();
    assert_eq!(summary.breaks.len(), 1);
    ledger.shutdown().await.unwrap();
}

/// Links are checked: a missing predecessor and a non-increasing ts are reported.
#[test]
fn check_link_reports_prev_hash_and_ts_breaks() {
    use ledger_actors::verify::{BreakReason, check_link};
    let a = LedgerRecord::seal(
        rec(Uuid::nil(), 1),
        Uuid::from_u128(1),
        chrono::Utc::now(),
        None,
    )
    .unwrap();
    let b =
        LedgerRecord::seal(rec(Uuid::nil(), 2), Uuid::from_u128(2), a.ts, Some(a.hash)).unwrap();
    assert_eq!(check_link(None, &a), None);
    assert!(matches!(
        check_link(Some(&a), &b),
        Some(BreakReason::TimestampNotIncreasing { .. })
    ));
    assert!(matches!(
        check_link(None, &b),
        Some(BreakReason::PrevHashMismatch { expected: None, .. })
    ));
    assert!(matches!(
        check_link(Some(&b), &a),
        Some(BreakReason::PrevHashMismatch { .. })
    ));
}

/// Under overload, appends fail with Overloaded (certainly not written) or Timeout (outcome
/// unknown); every Ok is stored and no Overloaded record ever is.
#[actix_rt::test]
async fn overload_is_a_typed_error_and_never_writes() {
    let config = LedgerConfig {
        max_in_flight: 2,
        timeout: Duration::from_micros(200),
        ..config()
    };
    let ledger = Ledger::start(config).await.unwrap();
    let anchor = Uuid::new_v4();
    let results = join_all((0..400u64).map(|i| {
        let ledger = ledger.clone();
        async move {
            let rid = Uuid::new_v4();
            (rid, ledger.append(rec(anchor, i).with_rid(rid)).await)
        }
    }))
    .await;
    let mut ok = HashSet::new();
    let mut overloaded = HashSet::new();
    for (rid, r) in results {
        match r {
            Ok(_) => {
                ok.insert(rid);
            }
            Err(LedgerError::Overloaded { .. }) => {
                overloaded.insert(rid);
            }
            Err(LedgerError::Timeout { .. }) => {}
            Err(e) => panic!("unexpected error {e:?}"),
        }
    }
    assert!(
        !overloaded.is_empty(),
        "400 appends through 2 slots in 200 µs must overload"
    );
    // Let anything still in flight settle.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let stored: HashSet<Uuid> = match ledger
        .records(
            anchor,
            &RecordRange {
                limit: 1000,
                ..Default::default()
            },
        )
        .await
    {
        Ok(records) => records.iter().map(|r| r.rid).collect(),
        Err(LedgerError::UnknownAnchor(_)) => HashSet::new(),
        Err(e) => panic!("{e:?}"),
    };
    assert!(ok.is_subset(&stored));
    assert!(overloaded.is_disjoint(&stored));
    ledger.shutdown().await.unwrap();
}
