//! The `postgres` backend against a real PostgreSQL: [`Ledger`] with its [`Writer`]
//! (group commit) and [`PostgresLedgerStore`], each test on its own database
//! ([`TestContext`]). Records are always read back through a fresh store, so nothing comes
//! from a cache.

mod common;

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::{TimeZone, Utc};
use common::{TestContext, constraint_name, sqlstate};
use futures::future::join_all;
use ledger_actors::driver::handoff::{Durability, Flush, Persist, PersistReply};
use ledger_actors::pg::store as postgres;
use ledger_actors::pg::store::PostgresLedgerStore;
use ledger_actors::writer::Writer;
use ledger_actors::writer::buffer::OutageBuffer;
use ledger_actors::{
    Backend, Dsn, Ledger, LedgerConfig, LedgerError, LedgerStore, RecordRange, create_ledger_store,
};
use ledger_entities::{LedgerRecord, NewRecord, RecordHash};
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use uuid::Uuid;

// ---------------------------------------------------------------------------------------
// Helpers

fn pg_config(ctx: &TestContext) -> LedgerConfig {
    LedgerConfig {
        backend: Backend::Postgres,
        dsn: Some(Dsn::parse(&ctx.dsn).expect("TestContext DSN parses")),
        pool_size: 4,
        timeout: Duration::from_secs(10),
        // These tests are about the write path; the transparency log's integrator (its own
        // tests: tlog_postgres.rs, tlog_takeover.rs) would only add load on a busy machine.
        checkpoint_interval: Duration::ZERO,
        ..LedgerConfig::default()
    }
}

async fn start(config: LedgerConfig) -> Ledger {
    let ledger = Ledger::start(config).await.expect("ledger starts");
    assert_eq!(
        ledger.store().backend(),
        Backend::Postgres,
        "the ledger fell back to memory"
    );
    ledger
}

/// A store over a new pool: reads through it never see a cache of the ledger.
async fn fresh_store(ctx: &TestContext) -> Arc<dyn LedgerStore> {
    create_ledger_store(&pg_config(ctx))
        .await
        .expect("store connects")
}

fn new_record(anchor: Uuid, payload: Value) -> NewRecord {
    NewRecord::new(anchor, "slot", "kind", payload, "integration-test")
}

async fn append(ledger: &Ledger, anchor: Uuid, payload: Value) -> Arc<LedgerRecord> {
    ledger
        .append(new_record(anchor, payload))
        .await
        .unwrap_or_else(|e| panic!("append to {anchor}: {e}"))
        .record
}

/// Verifies every chain through a fresh store; panics on any break.
async fn assert_intact(ctx: &TestContext) -> ledger_actors::verify::VerifySummary {
    let store = fresh_store(ctx).await;
    let summary = ledger_actors::verify::verify_all(store.as_ref())
        .await
        .expect("verification runs");
    assert!(
        summary.breaks.is_empty(),
        "chain breaks: {:?}",
        summary.breaks
    );
    summary
}

/// A genesis (or successor of `prev`) record sealed by hand, for tests that bypass the
/// chain actors; its `ts` is a fixed base plus `n` µs, and always after `prev`'s.
fn sealed(anchor: Uuid, rid: Uuid, prev: Option<&LedgerRecord>, n: i64) -> LedgerRecord {
    let mut micros = 1_764_000_000_000_000 + n;
    if let Some(p) = prev {
        micros = micros.max(p.ts_micros() + 1);
    }
    let ts = Utc.timestamp_micros(micros).single().expect("valid ts");
    LedgerRecord::seal(
        new_record(anchor, json!({ "n": n })),
        rid,
        ts,
        prev.map(|p| p.hash),
    )
    .expect("record seals")
}

/// Inserts a record with plain SQL, bypassing the ledger.
async fn insert_sql(ctx: &TestContext, r: &LedgerRecord) -> Result<(), sea_orm::DbErr> {
    ctx.db
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "INSERT INTO ledger_records
               (rid, anchor_id, slot, kind, ts, prev_hash, hash, payload, sig, producer, version)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            vec![
                r.rid.into(),
                r.anchor_id.into(),
                r.slot.clone().into(),
                r.kind.clone().into(),
                r.ts.into(),
                r.prev_hash.map(|h| h.to_hex()).into(),
                r.hash.to_hex().into(),
                r.payload.to_value().into(),
                r.sig.clone().into(),
                r.producer.clone().into(),
                r.version.clone().into(),
            ],
        ))
        .await
        .map(|_| ())
}

// ---------------------------------------------------------------------------------------
// Round trips

/// Payloads that JSONB rewrites (key order, number forms, -0.0) and strings full of
/// escapes hash the same after a round trip through PostgreSQL: zero breaks.
#[actix_rt::test]
async fn hostile_payloads_round_trip_without_breaks() {
    let ctx = TestContext::new("pg_hostile_payloads").await;
    let ledger = start(pg_config(&ctx)).await;
    let payloads = vec![
        // UTF-8 order puts U+E000 first, UTF-16 (JCS) order puts U+1F600 first.
        json!({ "\u{e000}": 1, "\u{1f600}": 2, "a": 3, "aa": 4, "b": 5 }),
        json!({ "outer": { "z": [1, { "y": null, "x": [true, false] }], "a": {} } }),
        json!([
            1.0,
            0.1,
            1e-7,
            1e21,
            -0.0,
            9_007_199_254_740_991_i64,
            -9_007_199_254_740_991_i64
        ]),
        json!({ "one": 1.0, "tenth": 0.1, "tiny": 1e-7, "huge": 1e21, "negzero": -0.0 }),
        json!({}),
        json!([]),
        json!({ "q\"uo\\te": "a \"quoted\" \\ back\\slash 😀 \u{7f} \u{2028} \t\n\r" }),
        json!("a bare string with \"quotes\", \\ and 😀"),
        json!(42),
        json!(-0.5),
        json!([1, "two", [3], { "four": 4 }]),
        Value::Null,
        json!(true),
    ];
    let anchor = Uuid::new_v4();
    let mut written = Vec::new();
    for payload in &payloads {
        // Each payload as its own chain and as a link of one shared chain.
        written.push(append(&ledger, Uuid::new_v4(), payload.clone()).await);
        written.push(append(&ledger, anchor, payload.clone()).await);
    }
    ledger.shutdown().await.expect("clean shutdown");

    let store = fresh_store(&ctx).await;
    for w in &written {
        let read = store
            .get(w.rid)
            .await
            .expect("read")
            .unwrap_or_else(|| panic!("record {} missing", w.rid));
        assert!(
            read.hash_matches().expect("hashable"),
            "hash of {:?} broke",
            w.payload
        );
        assert_eq!(read.hash, w.hash);
        assert_eq!(read.ts, w.ts);
        assert_eq!(read.prev_hash, w.prev_hash);
        assert_eq!(
            read.payload, w.payload,
            "payload {} changed meaning",
            w.payload
        );
    }
    let summary = assert_intact(&ctx).await;
    assert_eq!(summary.records, written.len() as u64);
    assert_eq!(summary.anchors, payloads.len() as u64 + 1);
    ctx.teardown().await;
}

/// A record sealed with a nanosecond timestamp (seal truncates to µs) survives the store's
/// insert and read-back with its hash intact, including .999999999 (no carry).
#[actix_rt::test]
async fn nanosecond_clock_never_breaks_a_hash() {
    let ctx = TestContext::new("pg_nanosecond_clock").await;
    let store = fresh_store(&ctx).await;
    let anchor = Uuid::new_v4();
    let mut prev: Option<LedgerRecord> = None;
    let mut records = Vec::new();
    for (i, nanos) in [123_456_789_u32, 999_999_999, 1, 500_000_500]
        .into_iter()
        .enumerate()
    {
        let ts = Utc
            .timestamp_opt(1_764_000_000 + i as i64, nanos)
            .single()
            .expect("valid ts");
        let r = LedgerRecord::seal(
            new_record(anchor, json!({ "i": i })),
            Uuid::now_v7(),
            ts,
            prev.as_ref().map(|p| p.hash),
        )
        .expect("seals");
        assert_eq!(
            r.ts.timestamp_subsec_nanos() % 1000,
            0,
            "seal truncates to µs"
        );
        store.insert(&[Arc::new(r.clone())]).await.expect("insert");
        records.push(r.clone());
        prev = Some(r);
    }
    let back = fresh_store(&ctx)
        .await
        .records(anchor, &RecordRange::default())
        .await
        .expect("read");
    assert_eq!(back.len(), records.len());
    for (read, written) in back.iter().zip(&records) {
        assert_eq!(read.as_ref(), written);
        assert!(read.hash_matches().expect("hashable"));
    }
    assert_intact(&ctx).await;
    ctx.teardown().await;
}

/// Store reads: windows by time, paging, head, anchors in order with `after`, counts.
#[actix_rt::test]
async fn store_reads_windows_heads_and_anchors() {
    let ctx = TestContext::new("pg_store_reads").await;
    let store = fresh_store(&ctx).await;
    let mut anchors: Vec<Uuid> = (0..5).map(|_| Uuid::new_v4()).collect();
    for anchor in &anchors {
        let mut chain: Vec<Arc<LedgerRecord>> = Vec::new();
        for n in 0..10 {
            let r = sealed(*anchor, Uuid::now_v7(), chain.last().map(|r| r.as_ref()), n);
            chain.push(Arc::new(r));
        }
        store
            .insert(&chain)
            .await
            .expect("insert a chain in one call");
    }
    anchors.sort();
    let a = anchors[0];
    let all = store
        .records(a, &RecordRange::default())
        .await
        .expect("read");
    assert_eq!(all.len(), 10);
    let window = RecordRange {
        since: Some(all[2].ts),
        until: Some(all[6].ts),
        limit: 3,
    };
    let page = store.records(a, &window).await.expect("read");
    assert_eq!(page, all[2..5].to_vec());
    let next = store
        .records(a, &window.after(page.last().expect("page")))
        .await
        .expect("read");
    assert_eq!(next, all[5..6].to_vec());
    let head = store
        .head(a)
        .await
        .expect("head")
        .expect("anchor has records");
    assert_eq!(head.hash, all[9].hash);
    assert_eq!(store.head(Uuid::new_v4()).await.expect("head"), None);
    assert_eq!(store.anchors(None, 100).await.expect("anchors"), anchors);
    assert_eq!(
        store.anchors(Some(anchors[1]), 2).await.expect("anchors"),
        anchors[2..4].to_vec()
    );
    assert_eq!(store.count().await.expect("count"), 50);
    assert_eq!(store.count_anchor(a).await.expect("count"), 10);
    assert_eq!(
        store.get_by_hash(all[3].hash).await.expect("get"),
        Some(Arc::clone(&all[3]))
    );
    ctx.teardown().await;
}

/// Many concurrent head look-ups (answered in batches) each get their own anchor's head, or
/// `None` for an anchor without records.
#[actix_rt::test]
async fn concurrent_head_lookups_get_their_own_heads() {
    let ctx = TestContext::new("pg_concurrent_heads").await;
    let store = fresh_store(&ctx).await;
    let mut expected = Vec::new();
    let mut records = Vec::new();
    for i in 0..300 {
        let anchor = Uuid::new_v4();
        let first = sealed(anchor, Uuid::now_v7(), None, i);
        let second = sealed(anchor, Uuid::now_v7(), Some(&first), i + 1);
        expected.push((anchor, Some(second.hash)));
        records.extend([Arc::new(first), Arc::new(second)]);
    }
    store.insert(&records).await.expect("insert");
    expected.extend((0..100).map(|_| (Uuid::new_v4(), None)));
    let fresh = fresh_store(&ctx).await;
    let heads = join_all(expected.iter().map(|(a, _)| fresh.head(*a))).await;
    for ((anchor, want), got) in expected.iter().zip(heads) {
        let got = got.expect("head").map(|h| h.hash);
        assert_eq!(&got, want, "anchor {anchor}");
    }
    ctx.teardown().await;
}

// ---------------------------------------------------------------------------------------
// Lifecycle

/// A ledger restarted on the same database continues every chain: exact counts, no break.
#[actix_rt::test]
async fn restart_continues_every_chain() {
    let ctx = TestContext::new("pg_restart").await;
    let anchors: Vec<Uuid> = (0..20).map(|_| Uuid::new_v4()).collect();
    for round in 0..3 {
        let ledger = start(pg_config(&ctx)).await;
        let appends = anchors.iter().flat_map(|a| {
            let ledger = ledger.clone();
            (0..5).map(move |i| {
                let ledger = ledger.clone();
                async move { append(&ledger, *a, json!({ "round": round, "i": i })).await }
            })
        });
        join_all(appends).await;
        let report = ledger.shutdown().await.expect("clean shutdown");
        assert_eq!(report.unanswered, 0);
    }
    let store = fresh_store(&ctx).await;
    for a in &anchors {
        assert_eq!(store.count_anchor(*a).await.expect("count"), 15);
    }
    let summary = assert_intact(&ctx).await;
    assert_eq!(summary.records, 300);
    ctx.teardown().await;
}

/// With the schema missing the ledger refuses to start (SchemaMissing, naming `ledger
/// migrate up`); with `auto_migrate` it migrates and starts.
#[actix_rt::test]
async fn missing_schema_is_refused_or_auto_migrated() {
    let ctx = TestContext::new_unmigrated("pg_missing_schema").await;
    match Ledger::start(pg_config(&ctx)).await {
        Err(LedgerError::SchemaMissing(msg)) => {
            assert!(msg.contains("ledger migrate up"), "{msg}")
        }
        Err(e) => panic!("expected SchemaMissing, got {e}"),
        Ok(_) => panic!("started without a schema"),
    }
    let config = LedgerConfig {
        auto_migrate: true,
        ..pg_config(&ctx)
    };
    let ledger = start(config).await;
    append(&ledger, Uuid::new_v4(), json!({})).await;
    ledger.shutdown().await.expect("clean shutdown");
    assert_eq!(assert_intact(&ctx).await.records, 1);
    ctx.teardown().await;
}

/// An unreachable database at start: the ledger falls back to memory (and still appends);
/// `create_ledger_store` reports `Unavailable` without the password in the message.
#[actix_rt::test]
async fn unreachable_database_falls_back_to_memory_at_start() {
    let config = LedgerConfig {
        backend: Backend::Postgres,
        dsn: Some(Dsn::parse("postgres://avl:hunter2@127.0.0.1:1/avl").expect("parses")),
        timeout: Duration::from_millis(300),
        ..LedgerConfig::default()
    };
    match create_ledger_store(&config).await {
        Err(LedgerError::Unavailable(msg)) => assert!(!msg.contains("hunter2"), "{msg}"),
        Err(e) => panic!("expected Unavailable, got {e}"),
        Ok(_) => panic!("connected to port 1"),
    }
    let ledger = Ledger::start(config).await.expect("falls back");
    assert_eq!(ledger.store().backend(), Backend::Memory);
    let ack = ledger
        .append(new_record(Uuid::new_v4(), json!({})))
        .await
        .expect("append");
    assert_eq!(ack.durability, Durability::Volatile);
    ledger.shutdown().await.expect("clean shutdown");
}

/// `backend: memory` never touches the network, even with an unreachable DSN configured.
#[actix_rt::test]
async fn memory_backend_store_ignores_the_dsn() {
    let config = LedgerConfig {
        backend: Backend::Memory,
        dsn: Some(Dsn::parse("postgres://avl@127.0.0.1:1/avl").expect("parses")),
        ..LedgerConfig::default()
    };
    let store = create_ledger_store(&config).await.expect("memory store");
    assert_eq!(store.backend(), Backend::Memory);
}

// ---------------------------------------------------------------------------------------
// Concurrency and the fork guard

/// 256 appends in flight to one anchor: one linear chain of exactly 256 records.
#[actix_rt::test]
async fn concurrent_appends_to_one_anchor_form_one_chain() {
    let ctx = TestContext::new("pg_one_anchor").await;
    let ledger = start(pg_config(&ctx)).await;
    let anchor = Uuid::new_v4();
    let acks = join_all((0..256).map(|i| {
        let ledger = ledger.clone();
        async move { append(&ledger, anchor, json!({ "i": i })).await }
    }))
    .await;
    for ack in &acks {
        assert!(ack.hash_matches().expect("hashable"));
    }
    ledger.shutdown().await.expect("clean shutdown");
    assert_eq!(
        fresh_store(&ctx)
            .await
            .count_anchor(anchor)
            .await
            .expect("count"),
        256
    );
    let summary = assert_intact(&ctx).await;
    assert_eq!((summary.anchors, summary.records), (1, 256));
    ctx.teardown().await;
}

/// 3,000 appends in flight over 1,000 anchors: exact counts per anchor, no fork, no break.
#[actix_rt::test]
async fn concurrent_appends_to_many_anchors() {
    let ctx = TestContext::new("pg_many_anchors").await;
    let ledger = start(pg_config(&ctx)).await;
    let anchors: Vec<Uuid> = (0..1000).map(|_| Uuid::new_v4()).collect();
    join_all((0..3000).map(|i| {
        let ledger = ledger.clone();
        let anchor = anchors[i % anchors.len()];
        async move { append(&ledger, anchor, json!({ "i": i })).await }
    }))
    .await;
    ledger.shutdown().await.expect("clean shutdown");
    let store = fresh_store(&ctx).await;
    for a in &anchors {
        assert_eq!(store.count_anchor(*a).await.expect("count"), 3);
    }
    let summary = assert_intact(&ctx).await;
    assert_eq!((summary.anchors, summary.records), (1000, 3000));
    ctx.teardown().await;
}

/// On a chain written by the ledger, a record that copies an existing record's anchor and
/// prev_hash (new rid and hash) is refused by the database itself, by SQL and through the
/// store (typed `ForkRefused`).
#[actix_rt::test]
async fn fork_bypassing_the_actors_is_refused_by_the_database() {
    let ctx = TestContext::new("pg_fork_guard").await;
    let ledger = start(pg_config(&ctx)).await;
    let anchor = Uuid::new_v4();
    let mut chain = Vec::new();
    for i in 0..5 {
        chain.push(append(&ledger, anchor, json!({ "i": i })).await);
    }
    ledger.shutdown().await.expect("clean shutdown");

    for victim in [&chain[0], &chain[2], &chain[4]] {
        let fork = LedgerRecord {
            rid: Uuid::now_v7(),
            hash: RecordHash::digest(Uuid::new_v4().as_bytes()),
            ..(**victim).clone()
        };
        let err = insert_sql(&ctx, &fork).await.expect_err("fork inserted");
        assert_eq!(sqlstate(&err).as_deref(), Some("23505"), "{err}");
        assert_eq!(constraint_name(&err).as_deref(), Some(postgres::FORK_GUARD));
        let err = fresh_store(&ctx)
            .await
            .insert(&[Arc::new(fork)])
            .await
            .expect_err("fork inserted through the store");
        assert_eq!(
            err,
            LedgerError::ForkRefused {
                anchor_id: anchor,
                prev_hash: victim.prev_hash,
            }
        );
    }
    // A record whose predecessor does not exist is refused by the database's foreign key
    // (`ledger_records_prev_fk`), by SQL and through the store.
    let orphan = sealed(
        anchor,
        Uuid::now_v7(),
        Some(&sealed(anchor, Uuid::now_v7(), None, 0)),
        1,
    );
    let err = insert_sql(&ctx, &orphan)
        .await
        .expect_err("orphan inserted");
    assert_eq!(sqlstate(&err).as_deref(), Some("23503"), "{err}");
    assert_eq!(constraint_name(&err).as_deref(), Some(postgres::PREV_FK));
    assert!(matches!(
        fresh_store(&ctx).await.insert(&[Arc::new(orphan)]).await,
        Err(LedgerError::ForkRefused { .. })
    ));
    let summary = assert_intact(&ctx).await;
    assert_eq!(summary.records, 5);
    ctx.teardown().await;
}

// ---------------------------------------------------------------------------------------
// Refusals

/// A NUL character or an oversized payload is refused by validation (`Invalid`) before
/// anything reaches the database: the record count does not change.
#[actix_rt::test]
async fn bad_data_is_refused_before_the_database() {
    let ctx = TestContext::new("pg_bad_data").await;
    let config = LedgerConfig {
        max_payload_bytes: 1024,
        ..pg_config(&ctx)
    };
    let ledger = start(config).await;
    let anchor = Uuid::new_v4();
    append(&ledger, anchor, json!({ "ok": true })).await;
    let bad = vec![
        new_record(anchor, json!({ "s": "nul \u{0} inside" })),
        new_record(anchor, json!({ "nul\u{0}key": 1 })),
        NewRecord::new(anchor, "sl\u{0}t", "kind", json!({}), "p"),
        new_record(anchor, json!({ "big": "x".repeat(2000) })),
    ];
    for record in bad {
        match ledger.append(record).await {
            Err(LedgerError::Invalid(_)) => {}
            other => panic!("expected Invalid, got {other:?}"),
        }
    }
    append(&ledger, anchor, json!({ "still": "fine" })).await;
    ledger.shutdown().await.expect("clean shutdown");
    assert_eq!(fresh_store(&ctx).await.count().await.expect("count"), 2);
    assert_intact(&ctx).await;
    ctx.teardown().await;
}

/// Records refused by the database because their chain actor's head went stale (a successor
/// was inserted by SQL, as another process would) are re-linked onto that record and
/// committed — both appends succeed, in order after it — while an append reusing that SQL
/// row's rid fails with `Conflict` and the appends batched with them commit.
#[actix_rt::test]
async fn database_refusal_does_not_fail_innocent_records() {
    let ctx = TestContext::new("pg_innocent_records").await;
    let config = LedgerConfig {
        // Long enough that the concurrent appends below share one batch.
        batch_linger: Duration::from_millis(200),
        ..pg_config(&ctx)
    };
    let ledger = start(config).await;
    let victim = Uuid::new_v4();
    let head = append(&ledger, victim, json!({ "i": 0 })).await;
    // Extend the chain behind the ledger's back: its chain actor still holds `head`.
    let sneaky = sealed(victim, Uuid::now_v7(), Some(&head), 1);
    insert_sql(&ctx, &sneaky).await.expect("SQL insert");

    let innocents: Vec<Uuid> = (0..100).map(|_| Uuid::new_v4()).collect();
    let victim_appends = (0..2).map(|i| {
        let ledger = ledger.clone();
        async move { ledger.append(new_record(victim, json!({ "v": i }))).await }
    });
    let innocent_appends = innocents.iter().map(|a| {
        let ledger = ledger.clone();
        let a = *a;
        async move {
            ledger
                .append(new_record(a, json!({ "innocent": true })))
                .await
        }
    });
    // A client rid that the SQL insert already used, in another anchor.
    let reused_rid = ledger.append(new_record(Uuid::new_v4(), json!({})).with_rid(sneaky.rid));
    let (victims, innocent, reused) = futures::join!(
        join_all(victim_appends),
        join_all(innocent_appends),
        reused_rid
    );
    for r in &innocent {
        assert!(r.is_ok(), "innocent append failed: {r:?}");
    }
    assert!(
        matches!(&reused, Err(LedgerError::Conflict { rid, .. }) if *rid == sneaky.rid),
        "{reused:?}"
    );
    let victims: Vec<_> = victims
        .into_iter()
        .map(|v| v.expect("re-linked and committed").record)
        .collect();
    let after: Vec<_> = victims.iter().map(|r| r.prev_hash).collect();
    assert!(
        after.contains(&Some(sneaky.hash)),
        "one victim follows the SQL row: {after:?}"
    );
    // The chain actor continues after the re-linked records.
    let next = append(&ledger, victim, json!({ "after": "reload" })).await;
    assert!(victims.iter().any(|v| next.prev_hash == Some(v.hash)));
    ledger.shutdown().await.expect("clean shutdown");
    let store = fresh_store(&ctx).await;
    assert_eq!(store.count_anchor(victim).await.expect("count"), 5);
    assert_eq!(store.count().await.expect("count"), 105);
    assert_intact(&ctx).await;
    ctx.teardown().await;
}

/// Sends records straight to the writer (the PostgreSQL writer) and returns their
/// outcomes, after a flush.
async fn persist_all(
    actor: &Addr<Writer>,
    records: &[LedgerRecord],
) -> Vec<Result<Durability, LedgerError>> {
    let receivers: Vec<_> = records
        .iter()
        .map(|r| {
            let (reply, rx) = oneshot::channel();
            actor.do_send(Persist {
                record: Arc::new(r.clone()),
                rest: Vec::new(),
                strict: false,
                reply: PersistReply::Oneshot(reply),
                wait_committed: false,
                accepted: std::time::Instant::now(),
            });
            rx
        })
        .collect();
    actor
        .send(Flush)
        .await
        .expect("actor alive")
        .expect("flush");
    receivers
        .into_iter()
        .map(|mut rx| rx.try_recv().expect("answered before the flush"))
        .collect()
}

/// In one batch, a record whose rid already exists (in another anchor) is refused (its
/// successor then fails the predecessor check, which takes the anchor's records out of the
/// batch: the first `ForkRefused`, the rest `Aborted`, none written); every other record commits, including a new genesis of the refused anchor, which
/// clears the poison; a successor of a refused record in a later batch is still `Aborted`.
#[actix_rt::test]
async fn group_commit_data_error_spares_innocents_and_poisons_successors() {
    let ctx = TestContext::new("pg_batch_poison").await;
    let config = LedgerConfig {
        batch_linger: Duration::from_secs(3600),
        ..pg_config(&ctx)
    };
    let store = PostgresLedgerStore::connect(&config)
        .await
        .expect("connect");
    let actor = Writer::new(
        config.clone(),
        Arc::new(store),
        Arc::new(OutageBuffer::default()),
        Arc::new(std::sync::OnceLock::new()),
        Arc::default(),
    )
    .expect("writer")
    .start();
    let taken = sealed(Uuid::new_v4(), Uuid::now_v7(), None, 0);
    insert_sql(&ctx, &taken).await.expect("SQL insert");

    let good: Vec<LedgerRecord> = (0..10)
        .map(|n| sealed(Uuid::new_v4(), Uuid::now_v7(), None, n))
        .collect();
    let good_next = sealed(good[0].anchor_id, Uuid::now_v7(), Some(&good[0]), 100);
    let x = Uuid::new_v4();
    let x1 = sealed(x, taken.rid, None, 1); // duplicate rid
    let x2 = sealed(x, Uuid::now_v7(), Some(&x1), 2);
    let x3 = sealed(x, Uuid::now_v7(), Some(&x2), 3);
    let mut batch = vec![good[0].clone(), x1.clone()];
    batch.extend(good[1..5].iter().cloned());
    batch.extend([x2.clone(), good_next.clone(), x3.clone()]);
    batch.extend(good[5..].iter().cloned());
    let outcomes = persist_all(&actor, &batch).await;
    for (r, outcome) in batch.iter().zip(&outcomes) {
        let expected = if r.rid == x1.rid {
            // The statement failed on x2 (its predecessor x1 was skipped): the whole anchor is
            // taken out of the batch, x1 first. A chain actor re-links it and then learns
            // `Conflict` (its rid is stored).
            Err(LedgerError::ForkRefused {
                anchor_id: x,
                prev_hash: Some(x1.hash),
            })
        } else if r.anchor_id == x {
            Err(LedgerError::Aborted { anchor_id: x })
        } else {
            Ok(Durability::Committed)
        };
        assert_eq!(
            outcome, &expected,
            "record {} of anchor {}",
            r.rid, r.anchor_id
        );
    }
    // A later batch: the successor of a refused record is still refused.
    let x4 = sealed(x, Uuid::now_v7(), Some(&x3), 4);
    assert_eq!(
        persist_all(&actor, &[x4]).await,
        vec![Err(LedgerError::Aborted { anchor_id: x })]
    );
    // The chain actor would rebase on the stored head (none): a new genesis clears the poison.
    let x_new = sealed(x, Uuid::now_v7(), None, 5);
    assert_eq!(
        persist_all(&actor, std::slice::from_ref(&x_new)).await,
        vec![Ok(Durability::Committed)]
    );

    let fresh = fresh_store(&ctx).await;
    assert_eq!(fresh.count_anchor(x).await.expect("count"), 1);
    assert_eq!(fresh.count().await.expect("count"), 1 + 10 + 1 + 1);
    assert_intact(&ctx).await;
    ctx.teardown().await;
}

/// The batch write (`pg::insert_records`, a binary COPY that falls back to the INSERT when
/// refused): new records are stored field for field (nanoseconds truncated as the INSERT
/// truncates them, a signature, a payload JSONB rewrites); a batch holding a rid stored with
/// the same hash counts it as written, one stored with another hash is reported and the rest
/// written; a record whose predecessor is missing fails the whole statement, nothing written.
#[actix_rt::test]
async fn batch_write_copies_and_falls_back_to_the_insert_when_refused() {
    let ctx = TestContext::new("pg_batch_copy").await;
    let pool = sea_orm::sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&ctx.dsn)
        .await
        .expect("pool");
    let local = ledger_actors::Replication::Local;
    let anchor = Uuid::new_v4();
    let nanos = Utc.timestamp_nanos(1_764_000_000_123_456_789);
    let mut genesis = LedgerRecord::seal(
        new_record(anchor, json!({ "b": 1.0, "a": [1e-7, "\u{e9}\\\"\n"] })),
        Uuid::now_v7(),
        nanos,
        None,
    )
    .expect("seals");
    genesis.sig = Some(vec![0, 1, 2, 255]);
    let second = sealed(anchor, Uuid::now_v7(), Some(&genesis), 1);
    let other = sealed(Uuid::new_v4(), Uuid::now_v7(), None, 2);
    let batch: Vec<Arc<LedgerRecord>> = [&other, &genesis, &second]
        .into_iter()
        .map(|r| Arc::new(r.clone()))
        .collect();
    // The COPY on its own (no fallback could hide a refused COPY here).
    let mut conn = pool.acquire().await.expect("connection");
    let written = ledger_actors::pg::copy_records(&mut conn, &batch)
        .await
        .expect("COPY written");
    assert_eq!(written, 3);
    // Again: the stored rids fail the COPY (23505), nothing written.
    let again = ledger_actors::pg::copy_records(&mut conn, &batch)
        .await
        .expect_err("a COPY cannot skip a stored rid");
    assert_eq!(sqlstate_of(&again).as_deref(), Some("23505"), "{again}");
    drop(conn);
    let store = fresh_store(&ctx).await;
    let stored = store.get(genesis.rid).await.expect("read").expect("stored");
    assert_eq!(
        stored.ts,
        Utc.timestamp_micros(1_764_000_000_123_456).unwrap()
    );
    assert_eq!(stored.sig.as_deref(), Some(&[0u8, 1, 2, 255][..]));
    assert_eq!(stored.payload.as_str(), genesis.payload.as_str());
    assert_eq!(stored.slot, genesis.slot);
    assert_eq!(stored.producer, genesis.producer);
    assert_eq!(stored.version, genesis.version);
    assert!(stored.prev_hash.is_none());
    let stored_second = store.get(second.rid).await.expect("read").expect("stored");
    assert_eq!(*stored_second, second);

    // Again, with a new record beside them: the stored ones (same rid, same hash) count as
    // written, the new one is written.
    let third = sealed(anchor, Uuid::now_v7(), Some(&second), 3);
    let mut again = batch.clone();
    again.push(Arc::new(third.clone()));
    let taken = ledger_actors::pg::insert_records(&pool, &again, local)
        .await
        .expect("fallback insert");
    assert!(taken.is_empty(), "{taken:?}");
    assert_eq!(store.count().await.expect("count"), 4);

    // A rid stored under another hash is reported (its index), the rest written.
    let clash = sealed(Uuid::new_v4(), other.rid, None, 4);
    let fresh = sealed(Uuid::new_v4(), Uuid::now_v7(), None, 5);
    let mixed = vec![Arc::new(fresh.clone()), Arc::new(clash)];
    let taken = ledger_actors::pg::insert_records(&pool, &mixed, local)
        .await
        .expect("fallback insert");
    assert_eq!(taken, vec![1]);
    assert!(store.get(fresh.rid).await.expect("read").is_some());
    assert_eq!(store.count().await.expect("count"), 5);

    // A missing predecessor fails the statement: nothing of it is written.
    let ghost = sealed(Uuid::new_v4(), Uuid::now_v7(), None, 6);
    let orphan = sealed(ghost.anchor_id, Uuid::now_v7(), Some(&ghost), 7);
    let innocent = sealed(Uuid::new_v4(), Uuid::now_v7(), None, 8);
    let refused = vec![Arc::new(innocent.clone()), Arc::new(orphan)];
    let err = ledger_actors::pg::insert_records(&pool, &refused, local)
        .await
        .expect_err("refused");
    assert!(
        matches!(
            postgres::classify(&err, None),
            LedgerError::ForkRefused { anchor_id, .. } if anchor_id == ghost.anchor_id
        ),
        "{err}"
    );
    assert!(store.get(innocent.rid).await.expect("read").is_none());
    assert_eq!(store.count().await.expect("count"), 5);
    pool.close().await;
    ctx.teardown().await;
}

fn sqlstate_of(e: &sea_orm::sqlx::Error) -> Option<String> {
    e.as_database_error()
        .and_then(|d| d.code())
        .map(|c| c.into_owned())
}
