//! Atomic multi-record appends (`Ledger::append_all`) and expected heads on the memory
//! backend (with and without a spool), through the public API.

#![allow(clippy::unwrap_used, reason = "a test fails loudly by design")]

use std::path::PathBuf;
use std::sync::Arc;

use ledger_actors::{Durability, Expect, Ledger, LedgerConfig, LedgerError, RecordRange};
use ledger_entities::{LedgerRecord, NewRecord};
use serde_json::json;
use uuid::Uuid;

fn config() -> LedgerConfig {
    LedgerConfig {
        workers: 2,
        checkpoint_interval: std::time::Duration::ZERO,
        ..LedgerConfig::default()
    }
}

fn rec(anchor: Uuid, i: u64) -> NewRecord {
    NewRecord::new(anchor, "slot", "event", json!({ "i": i }), "tests")
}

/// A record the validator refuses (an empty slot).
fn invalid(anchor: Uuid) -> NewRecord {
    NewRecord::new(anchor, "", "event", json!({ "bad": true }), "tests")
}

/// The anchor's stored chain (empty for an anchor without records).
async fn chain(ledger: &Ledger, anchor: Uuid) -> Vec<Arc<LedgerRecord>> {
    let range = RecordRange {
        limit: 10_000,
        ..RecordRange::default()
    };
    match ledger.records(anchor, &range).await {
        Err(LedgerError::UnknownAnchor(_)) => Vec::new(),
        other => other.unwrap(),
    }
}

/// Records land contiguous, linked, in order, after what the anchor held; one durability.
#[actix_rt::test]
async fn batch_lands_contiguous_after_the_head() {
    let ledger = Ledger::start(config()).await.unwrap();
    let anchor = Uuid::new_v4();
    let first = ledger.append(rec(anchor, 0)).await.unwrap();
    let ack = ledger
        .append_all(
            anchor,
            (1..=5).map(|i| rec(anchor, i)).collect(),
            Expect::Any,
        )
        .await
        .unwrap();
    assert_eq!(ack.durability, Durability::Volatile);
    assert!(!ack.replayed);
    assert_eq!(ack.records.len(), 5);
    assert_eq!(ack.records[0].prev_hash, Some(first.record.hash));
    let stored = chain(&ledger, anchor).await;
    assert_eq!(stored.len(), 6);
    for (s, a) in stored[1..].iter().zip(&ack.records) {
        assert_eq!(s.hash, a.hash);
    }
    for (i, w) in stored.windows(2).enumerate() {
        assert_eq!(w[1].prev_hash, Some(w[0].hash));
        assert_eq!(w[1].payload.as_str(), format!("{{\"i\":{}}}", i + 1));
    }
    let report = ledger.verify(anchor).await.unwrap();
    assert!(report.broken.is_none());
    assert_eq!(report.records, 6);
    ledger.shutdown().await.unwrap();
}

/// A batch whose third record is invalid stores none of them, and the refusal names it.
#[actix_rt::test]
async fn batch_with_an_invalid_third_record_stores_none() {
    let ledger = Ledger::start(config()).await.unwrap();
    let anchor = Uuid::new_v4();
    let before = ledger.append(rec(anchor, 0)).await.unwrap();
    let rid = Uuid::new_v4();
    let batch = vec![
        rec(anchor, 1),
        rec(anchor, 2),
        invalid(anchor).with_rid(rid),
        rec(anchor, 4),
    ];
    match ledger.append_all(anchor, batch, Expect::Any).await {
        Err(LedgerError::BatchRefused {
            index: 2,
            rid: Some(r),
            reason,
        }) => {
            assert_eq!(r, rid);
            assert!(matches!(*reason, LedgerError::Invalid(_)), "{reason:?}");
        }
        other => panic!("expected the third record refused, got {other:?}"),
    }
    let stored = chain(&ledger, anchor).await;
    assert_eq!(stored.len(), 1, "nothing of the batch may be stored");
    assert_eq!(ledger.store().count().await.unwrap(), 1);
    // The chain goes on from where it was.
    let next = ledger.append(rec(anchor, 5)).await.unwrap();
    assert_eq!(next.record.prev_hash, Some(before.record.hash));
    // A record of another anchor in the batch is refused the same way.
    let other = Uuid::new_v4();
    let mixed = vec![rec(anchor, 6), rec(other, 7)];
    assert!(matches!(
        ledger.append_all(anchor, mixed, Expect::Any).await,
        Err(LedgerError::BatchRefused { index: 1, .. })
    ));
    assert_eq!(ledger.store().count().await.unwrap(), 2);
    ledger.shutdown().await.unwrap();
}

/// Expected heads: `NoStream` on a new anchor succeeds and on an existing one is refused
/// with the current head; `Head(h)` succeeds only while `h` is the head; nothing is
/// written by a refusal. A single append expecting a head behaves the same.
#[actix_rt::test]
async fn expected_head_is_checked() {
    let ledger = Ledger::start(config()).await.unwrap();
    let anchor = Uuid::new_v4();
    let created = ledger
        .append_all(
            anchor,
            vec![rec(anchor, 0), rec(anchor, 1)],
            Expect::NoStream,
        )
        .await
        .unwrap();
    let head = created.records[1].hash;
    match ledger
        .append_all(anchor, vec![rec(anchor, 2)], Expect::NoStream)
        .await
    {
        Err(LedgerError::HeadMismatch {
            anchor_id,
            expected: None,
            current: Some(current),
        }) => {
            assert_eq!(anchor_id, anchor);
            assert_eq!(current, head);
        }
        other => panic!("expected a head mismatch, got {other:?}"),
    }
    let stale = created.records[0].hash;
    match ledger
        .append_expecting(rec(anchor, 3), Expect::Head(stale))
        .await
    {
        Err(LedgerError::HeadMismatch {
            expected: Some(e),
            current: Some(c),
            ..
        }) => {
            assert_eq!(e, stale);
            assert_eq!(c, head);
        }
        other => panic!("expected a head mismatch, got {other:?}"),
    }
    assert_eq!(chain(&ledger, anchor).await.len(), 2);
    let next = ledger
        .append_expecting(rec(anchor, 4), Expect::Head(head))
        .await
        .unwrap();
    assert_eq!(next.record.prev_hash, Some(head));
    // A head on an anchor that has none is refused with `current: None`.
    let empty = Uuid::new_v4();
    assert!(matches!(
        ledger
            .append_expecting(rec(empty, 0), Expect::Head(head))
            .await,
        Err(LedgerError::HeadMismatch { current: None, .. })
    ));
    assert_eq!(chain(&ledger, empty).await.len(), 0);
    ledger.shutdown().await.unwrap();
}

/// Concurrent appends expecting the same head: exactly one wins; every other gets the
/// typed error carrying the winner's head.
#[actix_rt::test]
async fn concurrent_expected_head_has_one_winner() {
    let ledger = Ledger::start(config()).await.unwrap();
    let anchor = Uuid::new_v4();
    let base = ledger.append(rec(anchor, 0)).await.unwrap().record.hash;
    let tries = (0..16).map(|k| {
        let ledger = ledger.clone();
        async move {
            ledger
                .append_all(
                    anchor,
                    vec![rec(anchor, 100 + k), rec(anchor, 200 + k)],
                    Expect::Head(base),
                )
                .await
        }
    });
    let results = futures::future::join_all(tries).await;
    let winners: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(winners.len(), 1, "exactly one append may win");
    let winner_head = winners[0].records[1].hash;
    for r in &results {
        match r {
            Ok(_) => {}
            Err(LedgerError::HeadMismatch { current, .. }) => {
                assert_eq!(*current, Some(winner_head));
            }
            Err(e) => panic!("unexpected error {e:?}"),
        }
    }
    assert_eq!(chain(&ledger, anchor).await.len(), 3);
    ledger.shutdown().await.unwrap();
}

/// Re-sending a stored batch (same client rids and content) answers the stored records
/// and writes nothing; a batch overlapping it in part is refused; a rid with other content
/// is a conflict naming the record.
#[actix_rt::test]
async fn resend_is_idempotent_and_overlap_is_refused() {
    let ledger = Ledger::start(config()).await.unwrap();
    let anchor = Uuid::new_v4();
    let rids: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    let batch = |rids: &[Uuid]| -> Vec<NewRecord> {
        rids.iter()
            .enumerate()
            .map(|(i, r)| rec(anchor, i as u64).with_rid(*r))
            .collect()
    };
    let first = ledger
        .append_all(anchor, batch(&rids), Expect::NoStream)
        .await
        .unwrap();
    // The re-send answers the stored records even though its expectation is now false.
    let again = ledger
        .append_all(anchor, batch(&rids), Expect::NoStream)
        .await
        .unwrap();
    assert!(again.replayed);
    assert_eq!(again.records, first.records);
    assert_eq!(ledger.store().count().await.unwrap(), 3);
    let mut partial = batch(&rids[..2]);
    partial.push(rec(anchor, 9).with_rid(Uuid::new_v4()));
    assert!(matches!(
        ledger.append_all(anchor, partial, Expect::Any).await,
        Err(LedgerError::BatchOverlap {
            stored: 2,
            records: 3
        })
    ));
    let mut changed = batch(&rids);
    changed[1] = rec(anchor, 77).with_rid(rids[1]);
    assert!(matches!(
        ledger.append_all(anchor, changed, Expect::Any).await,
        Err(LedgerError::BatchRefused { index: 1, .. })
    ));
    // A rid twice in one batch.
    let twice = vec![
        rec(anchor, 1).with_rid(rids[0]),
        rec(anchor, 2).with_rid(rids[0]),
    ];
    assert!(matches!(
        ledger.append_all(Uuid::new_v4(), twice, Expect::Any).await,
        Err(LedgerError::BatchRefused { .. })
    ));
    assert_eq!(ledger.store().count().await.unwrap(), 3);
    ledger.shutdown().await.unwrap();
}

/// The records-per-call and bytes-per-call limits are enforced with a typed error, and an
/// empty batch is refused; nothing is written.
#[actix_rt::test]
async fn limits_are_enforced() {
    let ledger = Ledger::start(LedgerConfig {
        max_batch_records: 4,
        max_batch_bytes: 64,
        ..config()
    })
    .await
    .unwrap();
    let anchor = Uuid::new_v4();
    match ledger
        .append_all(
            anchor,
            (0..5).map(|i| rec(anchor, i)).collect(),
            Expect::Any,
        )
        .await
    {
        Err(LedgerError::BatchTooLarge {
            records: 5,
            max_records: 4,
            ..
        }) => {}
        other => panic!("expected too many records, got {other:?}"),
    }
    let big = |i| {
        NewRecord::new(
            anchor,
            "slot",
            "event",
            json!({ "pad": "x".repeat(40), "i": i }),
            "tests",
        )
    };
    match ledger
        .append_all(anchor, vec![big(0), big(1)], Expect::Any)
        .await
    {
        Err(LedgerError::BatchTooLarge {
            records: 2,
            bytes,
            max_bytes: 64,
            ..
        }) => assert!(bytes > 64),
        other => panic!("expected too many bytes, got {other:?}"),
    }
    assert!(matches!(
        ledger.append_all(anchor, Vec::new(), Expect::Any).await,
        Err(LedgerError::InvalidBatch(_))
    ));
    assert_eq!(ledger.store().count().await.unwrap(), 0);
    ledger
        .append_all(
            anchor,
            (0..4).map(|i| rec(anchor, i)).collect(),
            Expect::Any,
        )
        .await
        .unwrap();
    assert_eq!(ledger.store().count().await.unwrap(), 4);
    ledger.shutdown().await.unwrap();
}

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("avl-batch-spool-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// With a spool, a batch is one frame: acknowledged `Spooled`, reloaded whole after a
/// restart; a torn batch frame (a crash while writing it) reloads none of its records.
#[actix_rt::test]
async fn spooled_batch_is_one_frame_all_or_none() {
    let dir = temp_dir();
    let cfg = LedgerConfig {
        spool_dir: Some(dir.clone()),
        ..config()
    };
    let anchor = Uuid::new_v4();
    let ledger = Ledger::start(cfg.clone()).await.unwrap();
    ledger.append(rec(anchor, 0)).await.unwrap();
    let ack = ledger
        .append_all(
            anchor,
            (1..=3).map(|i| rec(anchor, i)).collect(),
            Expect::Any,
        )
        .await
        .unwrap();
    assert_eq!(ack.durability, Durability::Spooled);
    ledger.shutdown().await.unwrap();
    let spool = dir.join(ledger_actors::spool::SPOOL_FILE);
    let whole = std::fs::read(&spool).unwrap();
    let contents = ledger_actors::spool::decode(&whole);
    assert_eq!(contents.units, vec![1, 3]);

    let again = Ledger::start(cfg.clone()).await.unwrap();
    assert_eq!(chain(&again, anchor).await.len(), 4);
    again.shutdown().await.unwrap();

    // Cut the file inside the batch's frame: as if the process died while writing it.
    std::fs::write(&spool, &whole[..whole.len() - 10]).unwrap();
    let torn = ledger_actors::spool::decode(&std::fs::read(&spool).unwrap());
    assert_eq!(torn.units, vec![1]);
    assert!(torn.corrupt_tail.is_some());
    let after = Ledger::start(cfg).await.unwrap();
    let stored = chain(&after, anchor).await;
    assert_eq!(
        stored.len(),
        1,
        "a torn batch frame reloads none of its records"
    );
    after.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
