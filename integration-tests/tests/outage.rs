//! PostgreSQL outages, injected through a TCP proxy the tests control: the writer keeps
//! appends succeeding on the memory fallback and writes every acknowledged record to
//! PostgreSQL, exactly once and in chain order, when it returns.

#![allow(clippy::unwrap_used, reason = "a test fails loudly by design")]

mod common;
#[path = "support/proxy.rs"]
mod proxy;

use std::collections::HashMap;
use std::io::BufRead;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::TestContext;
use futures::future::join_all;
use ledger_actors::writer::Mode as WriterMode;
use ledger_actors::{
    Backend, Dsn, Durability, Ledger, LedgerConfig, LedgerError, LedgerStore, create_ledger_store,
};
use ledger_entities::{LedgerRecord, NewRecord};
use proxy::{Mode, Proxy, upstream};
use serde_json::json;
use uuid::Uuid;

/// The test database's DSN, reached through `proxy`.
fn proxied(ctx: &TestContext, proxy: &Proxy) -> Dsn {
    Dsn::parse(&proxy.dsn(&ctx.dsn)).unwrap()
}

/// Logs to the test output when `RUST_LOG` is set (e.g. `RUST_LOG=ledger_actors=info`).
fn logs() {
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    }
}

fn config(dsn: Dsn) -> LedgerConfig {
    LedgerConfig {
        backend: Backend::Postgres,
        dsn: Some(dsn),
        pool_size: 4,
        // These tests are about the write path under faults; the transparency log's
        // integrator has its own tests and would only add load here.
        checkpoint_interval: std::time::Duration::ZERO,
        ..LedgerConfig::default()
    }
}

async fn direct_store(ctx: &TestContext) -> Arc<dyn LedgerStore> {
    create_ledger_store(&config(Dsn::parse(&ctx.dsn).unwrap()))
        .await
        .unwrap()
}

/// Acknowledged rid -> (anchor, durability, when).
type Acks = HashMap<Uuid, (Uuid, Durability, Instant)>;

fn rec(anchor: Uuid, i: u64) -> NewRecord {
    NewRecord::new(anchor, "slot", "event", json!({ "i": i }), "outage-test")
}

/// Under 64 concurrent appenders over 100 anchors, three outages — connections cut
/// mid-load, black-holed, refused — cost no failed append; afterwards every acknowledged
/// record is in PostgreSQL exactly once and every chain verifies.
#[actix_rt::test]
async fn three_outages_lose_nothing_and_break_no_chain() {
    logs();
    let ctx = TestContext::new("outage_cycles").await;
    let proxy = Proxy::start(upstream());
    // 1 s (default 5 s): the 2.5 s black hole below must be detected — after 1 s without an
    // answer, the liveness probe's new connection is black-holed too, so it fails over.
    let ledger = Ledger::start(LedgerConfig {
        failover_after: Duration::from_secs(1),
        ..config(proxied(&ctx, &proxy))
    })
    .await
    .unwrap();
    let anchors: Arc<Vec<Uuid>> = Arc::new((0..100).map(|_| Uuid::new_v4()).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Acks>> = Arc::default();
    // Each failed append's error and when it was sent.
    let errors: Arc<Mutex<Vec<(LedgerError, Instant)>>> = Arc::default();
    let test_start = Instant::now();
    let overloaded = Arc::new(AtomicU64::new(0));
    let max_latency = Arc::new(Mutex::new(Duration::ZERO));

    let appenders = (0..64u64).map(|w| {
        let (ledger, anchors, stop) = (ledger.clone(), Arc::clone(&anchors), Arc::clone(&stop));
        let (acked, errors, overloaded, max_latency) = (
            Arc::clone(&acked),
            Arc::clone(&errors),
            Arc::clone(&overloaded),
            Arc::clone(&max_latency),
        );
        async move {
            let mut i = w;
            while !stop.load(Ordering::Relaxed) {
                let anchor = anchors[(i % 100) as usize];
                let rid = Uuid::new_v4();
                let started = Instant::now();
                match ledger.append(rec(anchor, i).with_rid(rid)).await {
                    Ok(ack) => {
                        acked
                            .lock()
                            .unwrap()
                            .insert(rid, (anchor, ack.durability, Instant::now()));
                    }
                    Err(LedgerError::Overloaded { .. }) => {
                        overloaded.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => errors.lock().unwrap().push((e, started)),
                }
                let mut max = max_latency.lock().unwrap();
                *max = (*max).max(started.elapsed());
                i += 64;
            }
        }
    });
    let driver = async {
        let mut outages = Vec::new();
        let mut drains = Vec::new();
        // Back on PostgreSQL with an empty buffer, or 60 s: the end of an outage cycle.
        let recovered = || async {
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(60) {
                let s = ledger.outage_status().await.unwrap();
                if s.mode == WriterMode::Primary && s.buffered == 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            t.elapsed()
        };
        let run = || tokio::time::sleep(Duration::from_millis(700));
        run().await;
        // 1. Every connection reset mid-load; the server stays reachable.
        outages.push(Instant::now());
        proxy.cut_all();
        drains.push(recovered().await);
        run().await;
        // 2. Black hole: connections accepted, nothing ever answered.
        outages.push(Instant::now());
        proxy.set(Mode::BlackHole);
        tokio::time::sleep(Duration::from_millis(2500)).await;
        proxy.set(Mode::Pass);
        proxy.cut_all();
        drains.push(recovered().await);
        run().await;
        // 3. Refused: open connections cut, new ones refused.
        outages.push(Instant::now());
        proxy.set(Mode::Refuse);
        proxy.cut_all();
        tokio::time::sleep(Duration::from_millis(2000)).await;
        proxy.set(Mode::Pass);
        drains.push(recovered().await);
        run().await;
        stop.store(true, Ordering::Relaxed);
        eprintln!(
            "outage test: time from restoring PostgreSQL to an empty buffer, per cycle: {drains:?}"
        );
        outages
    };
    let (_, outages) = futures::join!(join_all(appenders), driver);

    let status = ledger.await_drain(Duration::from_secs(60)).await.unwrap();
    assert_eq!(status.buffered, 0, "buffer drained");
    assert_eq!(status.mode, WriterMode::Primary);
    assert_eq!((status.rechained, status.quarantined), (0, 0));
    let records = ledger.outage_records().await.unwrap();
    assert!(records.rechained.is_empty() && records.quarantined.is_empty());
    let errors = errors.lock().unwrap().clone();
    assert!(
        errors.is_empty(),
        "{} failed appends, first: {:?}; sent at (s from start): {:?}; outages began at {:?}",
        errors.len(),
        errors.first().map(|(e, _)| e),
        errors
            .iter()
            .map(|(_, at)| at.duration_since(test_start).as_secs_f64())
            .collect::<Vec<_>>(),
        outages
            .iter()
            .map(|at| at.duration_since(test_start).as_secs_f64())
            .collect::<Vec<_>>()
    );
    assert!(
        status.failovers >= 2,
        "outages were not noticed: {status:?}"
    );
    ledger.shutdown().await.unwrap();

    let acked = acked.lock().unwrap().clone();
    let buffered = acked
        .values()
        .filter(|(_, d, _)| *d != Durability::Committed)
        .count();
    assert!(buffered > 0, "no append was acknowledged on the fallback");
    // Time from each outage's start to the first append acknowledged on the fallback.
    let mut recoveries = Vec::new();
    for start in &outages {
        let first = acked
            .values()
            .filter(|(_, d, at)| *d == Durability::Buffered && at > start)
            .map(|(_, _, at)| at.duration_since(*start))
            .min();
        recoveries.push(first);
    }
    eprintln!(
        "outage test: {} acked ({} on the fallback), {} overloaded, {} failovers, max append latency {:?}, first fallback ack after each outage start: {:?}",
        acked.len(),
        buffered,
        overloaded.load(Ordering::Relaxed),
        status.failovers,
        *max_latency.lock().unwrap(),
        recoveries
    );

    let store = direct_store(&ctx).await;
    for (rid, (anchor, _, _)) in &acked {
        let stored = store.get(*rid).await.unwrap();
        assert_eq!(
            stored.map(|r| r.anchor_id),
            Some(*anchor),
            "acknowledged record {rid} missing"
        );
    }
    assert_eq!(
        store.count().await.unwrap(),
        acked.len() as u64,
        "records beyond the acknowledged ones"
    );
    let summary = ledger_actors::verify::verify_all(store.as_ref())
        .await
        .unwrap();
    assert!(summary.breaks.is_empty(), "{:?}", summary.breaks);
    assert_eq!(summary.records, acked.len() as u64);
    drop(proxy);
    ctx.teardown().await;
}

/// A read that waits on a black-holed connection (accepted, never answered) ends when the
/// writer fails over, with the outage's `Unavailable`, not when its own connect timeout (here
/// a minute) runs out: a chain actor waiting on such a read (a head load, a client rid's
/// look-up) would otherwise hold its appends past their timeout.
#[actix_rt::test]
async fn a_read_hung_on_a_black_hole_ends_at_failover() {
    read_waiting_on_a_new_connection_ends_at_failover(Mode::BlackHole, "outage_read_black_hole")
        .await;
}

async fn read_waiting_on_a_new_connection_ends_at_failover(mode: Mode, name: &str) {
    logs();
    let ctx = TestContext::new(name).await;
    let proxy = Proxy::start(upstream());
    let ledger = Ledger::start(LedgerConfig {
        failover_after: Duration::from_secs(1),
        timeout: Duration::from_secs(60),
        ..config(proxied(&ctx, &proxy))
    })
    .await
    .unwrap();
    let anchor = Uuid::new_v4();
    let first = ledger.append(rec(anchor, 0)).await.unwrap();
    assert_eq!(first.durability, Durability::Committed);
    // Every open connection cut; every new one black-holed or refused.
    proxy.set(mode);
    proxy.cut_all();
    // Reads on the pool's cut connections fail at once (reset); the first one still waiting
    // after 200 ms is waiting on a new connection.
    let mut read = None;
    for _ in 0..20 {
        let ledger = ledger.clone();
        let mut r = actix_rt::spawn(async move { ledger.get(Uuid::new_v4()).await });
        if tokio::time::timeout(Duration::from_millis(200), &mut r)
            .await
            .is_err()
        {
            read = Some(r);
            break;
        }
    }
    let read = read.expect("no read waited on a new connection");
    // Now an append makes the writer find the server gone and fail over.
    let ack = ledger.append(rec(anchor, 1)).await.unwrap();
    assert_eq!(ack.durability, Durability::Buffered);
    let answer = tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("the read still waits on a new connection after the failover")
        .unwrap();
    match answer {
        Err(LedgerError::Unavailable(why)) => {
            assert!(why.contains("outage in progress"), "{why}")
        }
        other => panic!("expected the outage's Unavailable, got {other:?}"),
    }
    proxy.set(Mode::Pass);
    proxy.cut_all();
    let status = ledger.await_drain(Duration::from_secs(60)).await.unwrap();
    assert_eq!((status.mode, status.buffered), (WriterMode::Primary, 0));
    ledger.shutdown().await.unwrap();
    let stored = direct_store(&ctx).await.get(ack.record.rid).await.unwrap();
    assert_eq!(stored.map(|r| r.hash), Some(ack.record.hash));
    ctx.teardown().await;
}

/// A fork refused by the database because another writer extended the anchor is a data
/// error, not an outage: no swap to the fallback; the refused record is re-linked onto the
/// other writer's record and committed (same rid and content), so the append succeeds.
#[actix_rt::test]
async fn data_error_does_not_fail_over() {
    let ctx = TestContext::new("outage_data_error").await;
    let ledger = Ledger::start(config(Dsn::parse(&ctx.dsn).unwrap()))
        .await
        .unwrap();
    let anchor = Uuid::new_v4();
    for i in 0..3 {
        ledger.append(rec(anchor, i)).await.unwrap();
    }
    // Another writer extends the chain behind the ledger's back.
    let head = ledger.head(anchor).await.unwrap();
    let foreign = LedgerRecord::seal(
        rec(anchor, 100),
        Uuid::new_v4(),
        chrono::Utc::now(),
        Some(head.hash),
    )
    .unwrap();
    direct_store(&ctx)
        .await
        .insert(&[Arc::new(foreign.clone())])
        .await
        .unwrap();
    // The chain actor still links to the old head: the database refuses the fork, and the
    // actor re-links the record onto the foreign one.
    let relinked = ledger.append(rec(anchor, 3)).await.unwrap();
    assert_eq!(relinked.record.prev_hash, Some(foreign.hash));
    assert_eq!(relinked.durability, Durability::Committed);
    let stored = ledger.get(relinked.record.rid).await.unwrap().unwrap();
    assert_eq!(
        stored.hash, relinked.record.hash,
        "acknowledged with the stored hash"
    );
    let status = ledger.outage_status().await.unwrap();
    assert_eq!(status.failovers, 0);
    assert_eq!(status.mode, WriterMode::Primary);
    let ack = ledger.append(rec(anchor, 4)).await.unwrap();
    assert_eq!(ack.record.prev_hash, Some(relinked.record.hash));
    assert_eq!(ack.durability, Durability::Committed);
    ledger.shutdown().await.unwrap();
    let summary = ledger_actors::verify::verify_all(direct_store(&ctx).await.as_ref())
        .await
        .unwrap();
    assert!(summary.breaks.is_empty());
    assert_eq!(summary.records, 6);
    ctx.teardown().await;
}

/// `append_durable` answers only once the record is committed, even when it was accepted
/// during an outage.
#[actix_rt::test]
async fn append_durable_waits_through_an_outage() {
    let ctx = TestContext::new("outage_durable").await;
    let proxy = Proxy::start(upstream());
    let ledger = Ledger::start(config(proxied(&ctx, &proxy))).await.unwrap();
    let anchor = Uuid::new_v4();
    ledger.append(rec(anchor, 0)).await.unwrap();
    proxy.set(Mode::Refuse);
    proxy.cut_all();
    // Trigger the failover with a plain append (acknowledged on the fallback).
    let ack = ledger.append(rec(anchor, 1)).await.unwrap();
    assert_eq!(ack.durability, Durability::Buffered);
    let durable = {
        let ledger = ledger.clone();
        actix_rt::spawn(async move {
            ledger
                .append_durable(rec(anchor, 2), Duration::from_secs(60))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !durable.is_finished(),
        "answered before PostgreSQL returned"
    );
    proxy.set(Mode::Pass);
    let ack = durable.await.unwrap().unwrap();
    assert_eq!(ack.durability, Durability::Committed);
    let stored = direct_store(&ctx).await.get(ack.record.rid).await.unwrap();
    assert_eq!(stored.map(|r| r.hash), Some(ack.record.hash));
    ledger.shutdown().await.unwrap();
    drop(proxy);
    ctx.teardown().await;
}

/// A record acknowledged during an outage says its hash is provisional; when another
/// process extends its anchor meanwhile, the drain re-chains it, and the host learns the
/// final record by rid (`get`), both hashes (`rechained`), and every re-chain
/// (`outage_records`). A durable append re-chained by the drain is answered with the stored
/// record, never a stale hash.
#[actix_rt::test]
async fn rechained_records_are_found_by_rid_with_their_final_hash() {
    logs();
    let ctx = TestContext::new("outage_rechain_final").await;
    let proxy = Proxy::start(upstream());
    let ledger = Ledger::start(config(proxied(&ctx, &proxy))).await.unwrap();
    let other = Ledger::start(config(Dsn::parse(&ctx.dsn).unwrap()))
        .await
        .unwrap();
    let anchor = Uuid::new_v4();
    let first = ledger.append(rec(anchor, 0)).await.unwrap();
    assert!(first.hash_is_final() && !first.provisional());
    proxy.set(Mode::Refuse);
    proxy.cut_all();
    let buffered = ledger.append(rec(anchor, 1)).await.unwrap();
    assert_eq!(buffered.durability, Durability::Buffered);
    assert!(buffered.provisional() && !buffered.hash_is_final());
    let durable = {
        let ledger = ledger.clone();
        actix_rt::spawn(async move {
            ledger
                .append_durable(rec(anchor, 2), Duration::from_secs(60))
                .await
        })
    };
    // Another process extends the anchor while this one is cut off.
    let theirs = other.append(rec(anchor, 100)).await.unwrap();
    assert_eq!(theirs.durability, Durability::Committed);
    tokio::time::sleep(Duration::from_millis(200)).await;
    proxy.set(Mode::Pass);
    let status = ledger.await_drain(Duration::from_secs(30)).await.unwrap();
    assert_eq!(status.buffered, 0);
    assert!(status.rechained >= 1, "{status:?}");

    let stored = direct_store(&ctx).await;
    let final_record = ledger.get(buffered.record.rid).await.unwrap().unwrap();
    let in_postgres = stored.get(buffered.record.rid).await.unwrap().unwrap();
    assert_eq!(final_record.hash, in_postgres.hash);
    assert_ne!(final_record.hash, buffered.record.hash, "not re-chained");
    assert_eq!(final_record.prev_hash, Some(theirs.record.hash));
    assert_eq!(final_record.payload, buffered.record.payload);
    let moved = ledger.rechained(buffered.record.rid).await.unwrap();
    assert_eq!(
        (moved.old_hash, moved.new_hash),
        (buffered.record.hash, final_record.hash)
    );
    assert!(ledger.rechained(first.record.rid).await.is_none());
    let listed = ledger.outage_records().await.unwrap().rechained;
    assert!(listed.contains(&(buffered.record.rid, buffered.record.hash, final_record.hash)));

    let durable = durable.await.unwrap().unwrap();
    assert_eq!(durable.durability, Durability::Committed);
    let durable_stored = stored.get(durable.record.rid).await.unwrap().unwrap();
    assert_eq!(
        durable.record.hash, durable_stored.hash,
        "a Committed ack with a stale hash"
    );
    assert_eq!(durable_stored.prev_hash, Some(final_record.hash));
    assert!(ledger.verify(anchor).await.unwrap().is_intact());
    ledger.shutdown().await.unwrap();
    other.shutdown().await.unwrap();
    drop(proxy);
    ctx.teardown().await;
}

/// Shutting down during an outage reports how many acknowledged records are not in
/// PostgreSQL and where the spool keeps them; the next start writes them.
#[actix_rt::test]
async fn shutdown_during_an_outage_reports_what_is_not_in_postgres() {
    let ctx = TestContext::new("outage_shutdown").await;
    let proxy = Proxy::start(upstream());
    let spool_dir = std::env::temp_dir().join(format!("avl-spool-{}", Uuid::new_v4()));
    let cfg = LedgerConfig {
        spool_dir: Some(spool_dir.clone()),
        timeout: Duration::from_millis(500),
        ..config(proxied(&ctx, &proxy))
    };
    let ledger = Ledger::start(cfg).await.unwrap();
    let anchor = Uuid::new_v4();
    ledger.append(rec(anchor, 0)).await.unwrap();
    proxy.set(Mode::Refuse);
    proxy.cut_all();
    let mut rids = Vec::new();
    for i in 1..=10 {
        let ack = ledger.append(rec(anchor, i)).await.unwrap();
        assert_eq!(ack.durability, Durability::Spooled);
        rids.push(ack.record.rid);
    }
    let report = ledger.shutdown().await.unwrap();
    assert_eq!(report.buffered, 10);
    assert_eq!(
        report.spool.as_deref(),
        Some(spool_dir.join(ledger_actors::spool::SPOOL_FILE).as_path())
    );
    proxy.set(Mode::Pass);
    let restarted = LedgerConfig {
        spool_dir: Some(spool_dir.clone()),
        ..config(Dsn::parse(&ctx.dsn).unwrap())
    };
    let ledger = Ledger::start(restarted).await.unwrap();
    let store = direct_store(&ctx).await;
    for rid in &rids {
        assert!(
            store.get(*rid).await.unwrap().is_some(),
            "{rid} not written from the spool"
        );
    }
    assert!(ledger.verify(anchor).await.unwrap().is_intact());
    ledger.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&spool_dir);
    drop(proxy);
    ctx.teardown().await;
}

/// A process killed with SIGKILL during an outage loses no acknowledged record: its spool
/// is written to PostgreSQL by the next start, before that ledger serves.
#[actix_rt::test]
async fn sigkill_during_an_outage_loses_no_acknowledged_record() {
    let ctx = TestContext::new("outage_sigkill").await;
    let proxy = Proxy::start(upstream());
    let spool_dir = std::env::temp_dir().join(format!("avl-spool-{}", Uuid::new_v4()));
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_avl-outage-child"))
        .env("LEDGER_BACKEND", "postgres")
        .env("LEDGER_DSN", proxied(&ctx, &proxy).expose())
        .env("LEDGER_POOL_SIZE", "4")
        .env("AVL_SPOOL_DIR", &spool_dir)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines: Arc<Mutex<Vec<String>>> = Arc::default();
    let reader = {
        let lines = Arc::clone(&lines);
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                lines.lock().unwrap().push(line);
            }
        })
    };
    let count = |what: &str| {
        lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.ends_with(what))
            .count()
    };
    let wait_for = |what: &'static str, n: usize| {
        let count = &count;
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            while count(what) < n {
                assert!(
                    Instant::now() < deadline,
                    "child never reached {n} {what} acks"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    wait_for("Committed", 200).await;
    proxy.set(Mode::Refuse);
    proxy.cut_all();
    wait_for("Spooled", 200).await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    reader.join().unwrap();
    proxy.set(Mode::Pass);

    let acked: Vec<Uuid> = lines
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| l.strip_prefix("ACK "))
        .filter_map(|l| l.split(' ').next()?.parse().ok())
        .collect();
    // A new ledger on the same spool writes it to PostgreSQL before it serves.
    let restarted = LedgerConfig {
        spool_dir: Some(spool_dir.clone()),
        ..config(Dsn::parse(&ctx.dsn).unwrap())
    };
    let ledger = Ledger::start(restarted).await.unwrap();
    let store = direct_store(&ctx).await;
    let mut missing = 0;
    for rid in &acked {
        if store.get(*rid).await.unwrap().is_none() {
            missing += 1;
        }
    }
    assert_eq!(
        missing,
        0,
        "{missing} of {} acknowledged records missing",
        acked.len()
    );
    let summary = ledger_actors::verify::verify_all(store.as_ref())
        .await
        .unwrap();
    assert!(summary.breaks.is_empty(), "{:?}", summary.breaks);
    let spool = std::fs::metadata(spool_dir.join(ledger_actors::spool::SPOOL_FILE)).unwrap();
    assert_eq!(spool.len(), 0, "spool emptied after recovery");
    ledger.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&spool_dir);
    drop(proxy);
    ctx.teardown().await;
}
