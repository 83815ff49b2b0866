//! The transparency log against a real PostgreSQL: integration order, receipts, consistency,
//! and `ledger verify`'s log checks ([`verify_log`]) naming each kind of tampering by
//! someone with write access to the database.

#![allow(clippy::unwrap_used, reason = "a test fails loudly by design")]

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use common::{TestContext, key_file};
use futures::future::join_all;
use ledger_actors::log_verify::{LogReport, verify_log};
use ledger_actors::tlog::{open_log, verify_receipt};
use ledger_actors::{Backend, Dsn, Ledger, LedgerConfig, LedgerStore, RecordRange};
use ledger_entities::{LedgerRecord, NewRecord};
use ledger_tlog::merkle::{parse_hash, verify_consistency};
use ledger_tlog::note::{Checkpoint, NoteSigner, NoteVerifier};
use sea_orm::{ConnectionTrait, DbBackend, Statement, TransactionTrait};
use serde_json::json;
use uuid::Uuid;

const ORIGIN: &str = "example.com/avl-pg-test";

fn signer(seed: u8) -> NoteSigner {
    NoteSigner::from_seed(ORIGIN, &[seed; 32]).unwrap()
}

fn pg_config(ctx: &TestContext, key: std::path::PathBuf) -> LedgerConfig {
    LedgerConfig {
        backend: Backend::Postgres,
        dsn: Some(Dsn::parse(&ctx.dsn).unwrap()),
        pool_size: 4,
        timeout: Duration::from_secs(10),
        checkpoint_interval: Duration::from_millis(200),
        checkpoint_key: Some(key),
        ..LedgerConfig::default()
    }
}

fn rec(anchor: Uuid, i: u64) -> NewRecord {
    NewRecord::new(anchor, "slot", "event", json!({ "i": i }), "tests")
}

async fn chain(store: &dyn LedgerStore, anchor: Uuid) -> Vec<Arc<LedgerRecord>> {
    store
        .records(anchor, &RecordRange::default())
        .await
        .unwrap()
}

async fn exec(ctx: &TestContext, sql: &str, values: Vec<sea_orm::Value>) {
    ctx.db
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            sql,
            values,
        ))
        .await
        .unwrap();
}

/// Writes `records` over the stored rows of the same rids (hash, prev_hash, payload), as
/// someone with write access to the database would.
async fn overwrite(ctx: &TestContext, records: &[LedgerRecord]) {
    let txn = ctx.db.begin().await.unwrap();
    // Later records first: each one's new prev_hash must not collide with the fork guard.
    for r in records.iter().rev() {
        txn.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "UPDATE ledger_records SET payload = $2, prev_hash = $3, hash = $4 WHERE rid = $1",
            vec![
                r.rid.into(),
                r.payload.to_value().into(),
                r.prev_hash.map(|h| h.to_hex()).into(),
                r.hash.to_hex().into(),
            ],
        ))
        .await
        .unwrap();
    }
    txn.commit().await.unwrap();
}

/// Re-links `records` (one anchor's chain from some position) after `prev`, recomputing
/// every hash.
fn relink(
    records: &[Arc<LedgerRecord>],
    mut prev: ledger_entities::RecordHash,
) -> Vec<LedgerRecord> {
    records
        .iter()
        .map(|r| {
            let mut r = (**r).clone();
            r.prev_hash = Some(prev);
            r.hash = ledger_entities::record::record_hash(&r).unwrap();
            prev = r.hash;
            r
        })
        .collect()
}

async fn check(ctx: &TestContext, key: &NoteVerifier) -> LogReport {
    let config = LedgerConfig {
        backend: Backend::Postgres,
        dsn: Some(Dsn::parse(&ctx.dsn).unwrap()),
        ..LedgerConfig::default()
    };
    let log = open_log(&config).unwrap();
    verify_log(log.as_ref(), Some(key), None).await.unwrap()
}

fn named(report: &LogReport, subject: &str, reason: &str) -> bool {
    report
        .problems
        .iter()
        .any(|p| p.subject.contains(subject) && p.reason.contains(reason))
}

/// Concurrent appends on PostgreSQL: every committed record gets exactly one leaf index, no
/// gap, each predecessor first; every checkpoint is signed and consistent with the previous
/// one; a receipt verifies offline; the intact log verifies with no problem.
#[actix_rt::test]
async fn postgres_log_is_gap_free_ordered_and_provable() {
    let ctx = TestContext::new("tlog_order").await;
    let s = signer(1);
    let ledger = Ledger::start(pg_config(&ctx, key_file(&s))).await.unwrap();
    let anchors: Vec<Uuid> = (0..16).map(|_| Uuid::now_v7()).collect();
    let mut acked = Vec::new();
    for i in 0..15 {
        let acks = join_all(anchors.iter().map(|a| ledger.append(rec(*a, i)))).await;
        acked.extend(acks.into_iter().map(|a| a.unwrap().record));
    }
    let (ack, receipt) = ledger
        .append_with_receipt(rec(anchors[0], 99), Duration::from_secs(15))
        .await
        .unwrap();
    acked.push(ack.record);
    verify_receipt(&receipt, &s.verifier()).unwrap();
    ledger.shutdown().await.unwrap();

    let report = check(&ctx, &s.verifier()).await;
    assert_eq!(report.problems, vec![], "an intact log verifies");
    assert_eq!(report.leaves, acked.len() as u64);
    assert_eq!(report.pending, 0);
    assert_eq!(report.latest.as_ref().unwrap().0, acked.len() as u64);

    let config = LedgerConfig {
        checkpoint_interval: Duration::ZERO,
        ..pg_config(&ctx, key_file(&s))
    };
    let log = open_log(&config).unwrap();
    let leaves = log.leaves(0, 100_000).await.unwrap();
    let rids: HashSet<Uuid> = leaves.iter().map(|l| l.rid).collect();
    assert_eq!(rids, acked.iter().map(|r| r.rid).collect::<HashSet<_>>());
    assert!(leaves.iter().enumerate().all(|(i, l)| l.index == i as u64));
    assert_eq!(log.misordered(10).await.unwrap(), vec![]);
    let checkpoints = log.checkpoints().await.unwrap();
    for w in checkpoints.windows(2) {
        let p = ledger_actors::tlog::prove_consistency(log.as_ref(), w[0].size, Some(w[1].size))
            .await
            .unwrap();
        let proof: Vec<[u8; 32]> = p.proof.iter().map(|h| parse_hash(h).unwrap()).collect();
        verify_consistency(w[0].size, w[1].size, &w[0].root, &w[1].root, &proof).unwrap();
    }
    ctx.teardown().await;
}

/// Each tampering by a database writer is detected and named by `ledger verify`'s log
/// check, where the hash chains alone see nothing: a payload change with its chain
/// recomputed, the last record of an anchor deleted, all records of an anchor deleted, a
/// record inserted into an integrated range, a checkpoint's root replaced, and a checkpoint
/// signed by another key. A receipt taken before still verifies offline; one with the
/// altered record does not.
#[actix_rt::test]
async fn tampering_is_detected_and_named() {
    let ctx = TestContext::new("tlog_tamper").await;
    let s = signer(2);
    let key = s.verifier();
    let config = pg_config(&ctx, key_file(&s));
    let ledger = Ledger::start(config.clone()).await.unwrap();
    let anchors: Vec<Uuid> = (0..5).map(|_| Uuid::now_v7()).collect();
    for i in 0..8 {
        for a in &anchors {
            ledger.append(rec(*a, i)).await.unwrap();
        }
    }
    ledger
        .await_checkpoint(40, Duration::from_secs(15))
        .await
        .unwrap();
    let store = ledger.store().clone();
    let a = chain(store.as_ref(), anchors[0]).await;
    let before = ledger.prove(a[3].rid).await.unwrap();
    ledger.shutdown().await.unwrap();
    assert_eq!(check(&ctx, &key).await.problems, vec![]);

    // 1. Payload of anchor 0's 4th record changed, its hash and every later link recomputed.
    let mut changed = (*a[3]).clone();
    changed.payload = ledger_entities::Payload::from_value(&json!({ "i": 1_000_000 })).unwrap();
    changed.hash = ledger_entities::record::record_hash(&changed).unwrap();
    let mut rewritten = vec![changed.clone()];
    rewritten.extend(relink(&a[4..], changed.hash));
    overwrite(&ctx, &rewritten).await;
    let chains = ledger_actors::verify::verify_all(store.as_ref())
        .await
        .unwrap();
    assert!(
        chains.breaks.is_empty(),
        "the hash chains alone see nothing"
    );
    let report = check(&ctx, &key).await;
    assert!(
        named(&report, &a[3].rid.to_string(), "record changed"),
        "{report:#?}"
    );
    verify_receipt(&before, &key).expect("a receipt taken before the tampering still verifies");
    let mut altered = before.clone();
    altered.record = serde_json::to_value(&changed).unwrap();
    assert!(
        verify_receipt(&altered, &key).is_err(),
        "a receipt of the altered record fails"
    );

    // 2. The last record of anchor 1 deleted.
    let b = chain(store.as_ref(), anchors[1]).await;
    let last = b.last().unwrap().rid;
    exec(
        &ctx,
        "DELETE FROM ledger_records WHERE rid = $1",
        vec![last.into()],
    )
    .await;
    let report = check(&ctx, &key).await;
    assert!(named(&report, &last.to_string(), "deleted"), "{report:#?}");

    // 3. Every record of anchor 2 deleted.
    let c = chain(store.as_ref(), anchors[2]).await;
    exec(
        &ctx,
        "DELETE FROM ledger_records WHERE anchor_id = $1",
        vec![anchors[2].into()],
    )
    .await;
    let report = check(&ctx, &key).await;
    for r in &c {
        assert!(named(&report, &r.rid.to_string(), "deleted"), "{report:#?}");
    }

    // 4. A record inserted into anchor 3's integrated range (between its 3rd and 4th).
    let d = chain(store.as_ref(), anchors[3]).await;
    let mut inserted = (*d[2]).clone();
    inserted.rid = Uuid::now_v7();
    inserted.payload = ledger_entities::Payload::from_value(&json!({ "forged": true })).unwrap();
    inserted.ts = d[2].ts + chrono::Duration::microseconds(1);
    inserted.prev_hash = Some(d[2].hash);
    inserted.hash = ledger_entities::record::record_hash(&inserted).unwrap();
    overwrite(&ctx, &relink(&d[3..], inserted.hash)).await;
    exec(
        &ctx,
        "INSERT INTO ledger_records (rid, anchor_id, slot, kind, ts, prev_hash, hash, payload, producer, version) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        vec![
            inserted.rid.into(),
            inserted.anchor_id.into(),
            inserted.slot.clone().into(),
            inserted.kind.clone().into(),
            inserted.ts.into(),
            inserted.prev_hash.map(|h| h.to_hex()).into(),
            inserted.hash.to_hex().into(),
            inserted.payload.to_value().into(),
            inserted.producer.clone().into(),
            inserted.version.clone().into(),
        ],
    )
    .await;
    let report = check(&ctx, &key).await;
    assert!(
        named(&report, &inserted.rid.to_string(), "inserted record"),
        "{report:#?}"
    );

    // 5. A checkpoint's root replaced.
    let log = open_log(&config).unwrap();
    let checkpoints = log.checkpoints().await.unwrap();
    let first = &checkpoints[0];
    exec(
        &ctx,
        "UPDATE ledger_checkpoints SET merkle_root = $2 WHERE cid = $1",
        vec![first.cid.into(), "ab".repeat(32).into()],
    )
    .await;
    let report = check(&ctx, &key).await;
    assert!(
        named(&report, &first.cid.to_string(), "root"),
        "{report:#?}"
    );

    // 6. The latest checkpoint re-signed by another key (same name).
    let latest = checkpoints.last().unwrap();
    let forged = signer(3)
        .sign(
            &Checkpoint {
                origin: ORIGIN.into(),
                size: latest.size,
                root: latest.root,
            }
            .text(),
        )
        .unwrap();
    exec(
        &ctx,
        "UPDATE ledger_checkpoints SET sig = $2 WHERE cid = $1",
        vec![latest.cid.into(), forged.into_bytes().into()],
    )
    .await;
    let report = check(&ctx, &key).await;
    assert!(
        named(&report, &latest.cid.to_string(), "signature"),
        "{report:#?}"
    );
    ctx.teardown().await;
}

/// A number with more digits than a double holds, written into a stored payload by hand
/// (`0.1` → `0.10000000000000000001`), decodes to the same double, so the record's hash still
/// verifies and the chains see nothing; `ledger verify`'s log check names the record.
#[actix_rt::test]
async fn inexact_number_written_by_hand_is_named() {
    let ctx = TestContext::new("tlog_inexact").await;
    let s = signer(3);
    let ledger = Ledger::start(pg_config(&ctx, key_file(&s))).await.unwrap();
    let anchor = Uuid::now_v7();
    let ack = ledger
        .append(NewRecord::new(
            anchor,
            "slot",
            "event",
            json!({ "a": 0.1, "id": "1234567890123456789" }),
            "tests",
        ))
        .await
        .unwrap();
    ledger.append(rec(anchor, 1)).await.unwrap();
    ledger
        .await_checkpoint(2, Duration::from_secs(15))
        .await
        .unwrap();
    let store = ledger.store().clone();
    ledger.shutdown().await.unwrap();
    assert_eq!(
        check(&ctx, &s.verifier()).await.problems,
        vec![],
        "a 19-digit string is no finding"
    );
    exec(
        &ctx,
        "UPDATE ledger_records SET payload = \
         '{\"a\": 0.10000000000000000001, \"id\": \"1234567890123456789\"}'::jsonb WHERE rid = $1",
        vec![ack.record.rid.into()],
    )
    .await;
    let chains = ledger_actors::verify::verify_all(store.as_ref())
        .await
        .unwrap();
    assert!(chains.breaks.is_empty(), "decoded, the hash still matches");
    let report = check(&ctx, &s.verifier()).await;
    assert!(
        named(&report, &ack.record.rid.to_string(), "nearest double"),
        "{report:#?}"
    );
    assert_eq!(report.problems.len(), 1, "{report:#?}");
    ctx.teardown().await;
}
