//! Atomic multi-record appends (`Ledger::append_all`) and expected heads on PostgreSQL:
//! all or none (validation, SIGKILL mid-batch, an outage through a proxy, a crash during an
//! outage), one group-commit unit, expected heads across two processes, idempotent re-sends
//! and the limits.

#![allow(clippy::unwrap_used, reason = "a test fails loudly by design")]

mod common;
#[path = "support/proxy.rs"]
mod proxy;

use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::TestContext;
use ledger_actors::writer::Mode as WriterMode;
use ledger_actors::{Backend, Dsn, Durability, Expect, Ledger, LedgerConfig, LedgerError};
use ledger_entities::NewRecord;
use proxy::{Mode, Proxy, upstream};
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use serde_json::json;
use uuid::Uuid;

fn config(dsn: &str) -> LedgerConfig {
    LedgerConfig {
        backend: Backend::Postgres,
        dsn: Some(Dsn::parse(dsn).unwrap()),
        pool_size: 4,
        checkpoint_interval: Duration::ZERO,
        ..LedgerConfig::default()
    }
}

fn rec(anchor: Uuid, i: u64) -> NewRecord {
    NewRecord::new(anchor, "slot", "event", json!({ "i": i }), "batch-test")
}

async fn count(ctx: &TestContext, sql: &str) -> i64 {
    let row = ctx
        .db
        .query_one_raw(Statement::from_string(DbBackend::Postgres, sql.to_owned()))
        .await
        .unwrap()
        .unwrap();
    row.try_get_by_index::<i64>(0).unwrap()
}

/// Every batch stored in the database (by the `batch` field of its records' payloads) has
/// all of its `n` records, contiguous in its anchor's chain; returns the batches stored.
async fn batches_whole(ctx: &TestContext) -> HashSet<Uuid> {
    let rows = ctx
        .db
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT payload->>'batch' AS batch, count(*) AS stored, \
             min((payload->>'n')::bigint) AS n, count(DISTINCT anchor_id) AS anchors \
             FROM ledger_records WHERE payload ? 'batch' GROUP BY 1",
        ))
        .await
        .unwrap();
    let mut whole = HashSet::new();
    for row in rows {
        let batch: String = row.try_get("", "batch").unwrap();
        let stored: i64 = row.try_get("", "stored").unwrap();
        let n: i64 = row.try_get("", "n").unwrap();
        let anchors: i64 = row.try_get("", "anchors").unwrap();
        assert_eq!(
            stored, n,
            "batch {batch}: {stored} of its {n} records stored"
        );
        assert_eq!(anchors, 1, "batch {batch} spans anchors");
        whole.insert(batch.parse().unwrap());
    }
    // Contiguous: no record of another batch between two records of one batch.
    let breaks = count(
        ctx,
        "SELECT count(*) FROM ledger_records c JOIN ledger_records p \
         ON p.anchor_id = c.anchor_id AND p.hash = c.prev_hash \
         WHERE c.payload ? 'batch' AND (c.payload->>'k')::bigint > 0 \
         AND (p.payload->>'batch' IS DISTINCT FROM c.payload->>'batch' \
              OR (p.payload->>'k')::bigint <> (c.payload->>'k')::bigint - 1)",
    )
    .await;
    assert_eq!(breaks, 0, "records of a batch are not contiguous");
    whole
}

/// A batch whose third record is invalid stores none; concurrent batches and single
/// appends land whole and contiguous, each batch with one durability (`Committed`).
#[actix_rt::test]
async fn invalid_third_record_stores_none_and_batches_land_whole() {
    let ctx = TestContext::new("batch_invalid").await;
    let ledger = Ledger::start(config(&ctx.dsn)).await.unwrap();
    let anchor = Uuid::new_v4();
    ledger.append(rec(anchor, 0)).await.unwrap();
    let bad = NewRecord::new(anchor, "", "event", json!({}), "batch-test");
    let batch = vec![rec(anchor, 1), rec(anchor, 2), bad, rec(anchor, 4)];
    assert!(matches!(
        ledger.append_all(anchor, batch, Expect::Any).await,
        Err(LedgerError::BatchRefused { index: 2, .. })
    ));
    assert_eq!(
        count(&ctx, "SELECT count(*) FROM ledger_records").await,
        1,
        "nothing of the refused batch may be stored"
    );

    // 32 tasks on 4 anchors: batches of 5 interleaved with single appends, so group-commit
    // statements carry several batches and singles of one anchor at once.
    let anchors: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
    let tasks = (0..32u64).map(|t| {
        let ledger = ledger.clone();
        let anchor = anchors[(t % 4) as usize];
        async move {
            let mut acked = Vec::new();
            for i in 0..10u64 {
                if (t + i) % 3 == 0 {
                    ledger.append(rec(anchor, i)).await.unwrap();
                } else {
                    let id = Uuid::new_v4();
                    let records = (0..5)
                        .map(|k| {
                            NewRecord::new(
                                anchor,
                                "slot",
                                "event",
                                json!({ "batch": id.to_string(), "k": k, "n": 5 }),
                                "batch-test",
                            )
                        })
                        .collect();
                    let ack = ledger
                        .append_all(anchor, records, Expect::Any)
                        .await
                        .unwrap();
                    assert_eq!(ack.durability, Durability::Committed);
                    for w in ack.records.windows(2) {
                        assert_eq!(w[1].prev_hash, Some(w[0].hash));
                    }
                    acked.push(id);
                }
            }
            acked
        }
    });
    let acked: Vec<Uuid> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .flatten()
        .collect();
    let whole = batches_whole(&ctx).await;
    assert_eq!(whole.len(), acked.len());
    assert!(acked.iter().all(|b| whole.contains(b)));
    let summary = ledger.verify_all().await.unwrap();
    assert!(summary.breaks.is_empty(), "{:?}", summary.breaks);
    ledger.shutdown().await.unwrap();
    ctx.teardown().await;
}

/// Expected heads on PostgreSQL in one process: `NoStream` on an existing anchor is refused
/// with its head; a stale head is refused; concurrent appends expecting one head have one
/// winner and the others get the winner's head; an idempotent re-send answers the stored
/// records; partial overlap and the limits are typed errors; nothing is written by a refusal.
#[actix_rt::test]
async fn expected_head_resend_and_limits() {
    let ctx = TestContext::new("batch_expect").await;
    let ledger = Ledger::start(LedgerConfig {
        max_batch_records: 8,
        ..config(&ctx.dsn)
    })
    .await
    .unwrap();
    let anchor = Uuid::new_v4();
    let rids: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    let with_rids = |rids: &[Uuid]| -> Vec<NewRecord> {
        rids.iter()
            .enumerate()
            .map(|(i, r)| rec(anchor, i as u64).with_rid(*r))
            .collect()
    };
    let first = ledger
        .append_all(anchor, with_rids(&rids), Expect::NoStream)
        .await
        .unwrap();
    let head = first.records[2].hash;
    match ledger
        .append_all(anchor, vec![rec(anchor, 9)], Expect::NoStream)
        .await
    {
        Err(LedgerError::HeadMismatch {
            expected: None,
            current,
            ..
        }) => assert_eq!(current, Some(head)),
        other => panic!("expected a head mismatch, got {other:?}"),
    }
    let again = ledger
        .append_all(anchor, with_rids(&rids), Expect::NoStream)
        .await
        .unwrap();
    assert!(again.replayed);
    assert_eq!(again.records, first.records);
    let mut partial = with_rids(&rids[..1]);
    partial.push(rec(anchor, 5));
    assert!(matches!(
        ledger.append_all(anchor, partial, Expect::Any).await,
        Err(LedgerError::BatchOverlap {
            stored: 1,
            records: 2
        })
    ));
    assert!(matches!(
        ledger
            .append_all(
                anchor,
                (0..9).map(|i| rec(anchor, i)).collect(),
                Expect::Any
            )
            .await,
        Err(LedgerError::BatchTooLarge { records: 9, .. })
    ));
    let stale = first.records[0].hash;
    assert!(matches!(
        ledger.append_expecting(rec(anchor, 6), Expect::Head(stale)).await,
        Err(LedgerError::HeadMismatch { current: Some(c), .. }) if c == head
    ));
    assert_eq!(count(&ctx, "SELECT count(*) FROM ledger_records").await, 3);

    let tries = (0..8u64).map(|k| {
        let ledger = ledger.clone();
        async move {
            ledger
                .append_all(
                    anchor,
                    vec![rec(anchor, 100 + k), rec(anchor, 200 + k)],
                    Expect::Head(head),
                )
                .await
        }
    });
    let results = futures::future::join_all(tries).await;
    let winners: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    let winner = winners[0].records[1].hash;
    for r in &results {
        if let Err(e) = r {
            assert!(
                matches!(e, LedgerError::HeadMismatch { current: Some(c), .. } if *c == winner),
                "{e:?}"
            );
        }
    }
    assert_eq!(count(&ctx, "SELECT count(*) FROM ledger_records").await, 5);
    ledger.shutdown().await.unwrap();
    ctx.teardown().await;
}

/// The same batch (same client rids and content) sent at once through two ledgers on one
/// database, round after round: both answer the one stored batch (the loser as a replay,
/// whether it found it by its rid look-up or was refused by the database), and each batch
/// is stored once. A batch overlapping a stored one in part is `BatchOverlap`.
#[actix_rt::test]
async fn the_same_batch_from_two_ledgers_is_stored_once() {
    let ctx = TestContext::new("batch_idem").await;
    let (a, b) = (
        Ledger::start(config(&ctx.dsn)).await.unwrap(),
        Ledger::start(config(&ctx.dsn)).await.unwrap(),
    );
    const ROUNDS: u64 = 40;
    let mut replayed = 0;
    for i in 0..ROUNDS {
        let anchor = Uuid::now_v7();
        let rids: Vec<Uuid> = (0..4).map(|_| Uuid::now_v7()).collect();
        let batch = || -> Vec<NewRecord> {
            rids.iter()
                .enumerate()
                .map(|(k, r)| rec(anchor, i * 10 + k as u64).with_rid(*r))
                .collect()
        };
        let (x, y) = futures::join!(
            a.append_all(anchor, batch(), Expect::Any),
            b.append_all(anchor, batch(), Expect::Any)
        );
        let (x, y) = (
            x.unwrap_or_else(|e| panic!("first ledger, round {i}: {e}")),
            y.unwrap_or_else(|e| panic!("second ledger, round {i}: {e}")),
        );
        assert_eq!(x.records, y.records, "round {i}");
        assert!(
            !(x.replayed && y.replayed),
            "round {i}: one of them stored it"
        );
        replayed += u32::from(x.replayed) + u32::from(y.replayed);
    }
    eprintln!("{replayed} of {ROUNDS} rounds answered one side as a replay");
    assert_eq!(
        count(&ctx, "SELECT count(*) FROM ledger_records").await,
        (ROUNDS * 4) as i64
    );
    let anchor = Uuid::now_v7();
    let rid = Uuid::now_v7();
    a.append_all(anchor, vec![rec(anchor, 1).with_rid(rid)], Expect::Any)
        .await
        .unwrap();
    let overlap = b
        .append_all(
            anchor,
            vec![
                rec(anchor, 1).with_rid(rid),
                rec(anchor, 2).with_rid(Uuid::now_v7()),
            ],
            Expect::Any,
        )
        .await;
    assert!(
        matches!(
            overlap,
            Err(LedgerError::BatchOverlap {
                stored: 1,
                records: 2
            })
        ),
        "{overlap:?}"
    );
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
    ctx.teardown().await;
}

/// Two processes on one database append a batch with the same expected head, round after
/// round: each round exactly one wins and the other gets `HeadMismatch` carrying the
/// winner's head (whether it lost on its own head check or at the database's fork guard);
/// the chain holds exactly the winners' batches.
#[actix_rt::test]
async fn two_processes_same_expected_head_one_wins() {
    let ctx = TestContext::new("batch_race").await;
    let anchor = Uuid::new_v4();
    let mut children: Vec<_> = (0..2)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_avl-batch-child"))
                .env("LEDGER_BACKEND", "postgres")
                .env("LEDGER_DSN", &ctx.dsn)
                .env("LEDGER_POOL_SIZE", "4")
                .env("LEDGER_CHECKPOINT_INTERVAL", "0")
                .env("AVL_MODE", "race")
                .env("AVL_ANCHOR", anchor.to_string())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut outs: Vec<_> = children
        .iter_mut()
        .map(|c| std::io::BufReader::new(c.stdout.take().unwrap()).lines())
        .collect();
    for out in &mut outs {
        assert_eq!(out.next().unwrap().unwrap(), "READY");
    }
    let mut expected = "none".to_owned();
    let mut wins = [0u32; 2];
    const ROUNDS: usize = 8;
    for round in 0..ROUNDS {
        // Alternate who hears first, so that each process gets its chance to win.
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let stdin = children[i].stdin.as_mut().unwrap();
            writeln!(stdin, "GO {expected}").unwrap();
            stdin.flush().unwrap();
        }
        let answers: Vec<String> = outs
            .iter_mut()
            .map(|o| o.next().unwrap().unwrap())
            .collect();
        let won: Vec<usize> = (0..2).filter(|&i| answers[i].starts_with("OK ")).collect();
        assert_eq!(won.len(), 1, "round {round}: {answers:?}");
        let w = won[0];
        wins[w] += 1;
        let winner_head = answers[w].strip_prefix("OK ").unwrap().to_owned();
        assert_eq!(
            answers[1 - w],
            format!("MISMATCH {winner_head}"),
            "round {round}: the loser must see the winner's head"
        );
        expected = winner_head;
    }
    for c in &mut children {
        drop(c.stdin.take());
        assert!(c.wait().unwrap().success());
    }
    eprintln!("wins per process: {wins:?}");
    assert_eq!(
        count(&ctx, "SELECT count(*) FROM ledger_records").await,
        (ROUNDS * 3) as i64
    );
    let forks = count(
        &ctx,
        "SELECT count(*) FROM (SELECT 1 FROM ledger_records GROUP BY anchor_id, prev_hash HAVING count(*) > 1) f",
    )
    .await;
    assert_eq!(forks, 0);
    ctx.teardown().await;
}

/// Reads a child's stdout lines into a shared list on a thread of its own.
fn collect_lines(
    child: &mut std::process::Child,
) -> (Arc<Mutex<Vec<String>>>, std::thread::JoinHandle<()>) {
    let lines: Arc<Mutex<Vec<String>>> = Arc::default();
    let stdout = child.stdout.take().unwrap();
    let reader = {
        let lines = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                lines.lock().unwrap().push(line);
            }
        })
    };
    (lines, reader)
}

async fn wait_for(lines: &Mutex<Vec<String>>, what: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seen = lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.ends_with(what))
            .count();
        if seen >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "child never reached {n} {what} acks"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn acked_batches(lines: &Mutex<Vec<String>>) -> Vec<Uuid> {
    lines
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| l.strip_prefix("ACK "))
        .filter_map(|l| l.split(' ').next()?.parse().ok())
        .collect()
}

/// A process killed with SIGKILL while appending batches of 20 on PostgreSQL leaves every
/// batch all or none: each batch in the database has all its records, contiguous; every
/// acknowledged batch is there; every chain verifies.
#[actix_rt::test]
async fn sigkill_during_batches_leaves_all_or_none() {
    let ctx = TestContext::new("batch_sigkill").await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_avl-batch-child"))
        .env("LEDGER_BACKEND", "postgres")
        .env("LEDGER_DSN", &ctx.dsn)
        .env("LEDGER_POOL_SIZE", "4")
        .env("LEDGER_CHECKPOINT_INTERVAL", "0")
        .env("AVL_MODE", "flood")
        .env("AVL_BATCH", "20")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines, reader) = collect_lines(&mut child);
    wait_for(&lines, "Committed", 300).await;
    child.kill().unwrap(); // SIGKILL, with batches in flight
    child.wait().unwrap();
    reader.join().unwrap();
    let acked = acked_batches(&lines);
    let whole = batches_whole(&ctx).await;
    let missing = acked.iter().filter(|b| !whole.contains(b)).count();
    assert_eq!(missing, 0, "{missing} acknowledged batches missing");
    eprintln!(
        "{} batches acknowledged, {} stored whole (the rest were in flight)",
        acked.len(),
        whole.len()
    );
    let store = ledger_actors::create_ledger_store(&config(&ctx.dsn))
        .await
        .unwrap();
    let summary = ledger_actors::verify::verify_all(store.as_ref())
        .await
        .unwrap();
    assert!(summary.breaks.is_empty(), "{:?}", summary.breaks);
    ctx.teardown().await;
}

/// Batches appended through an outage (connections cut and refused by a proxy) are
/// buffered and drained as units: after the drain every acknowledged batch is in
/// PostgreSQL whole and contiguous, and no batch is stored in part. An append that expects
/// a head is refused `Unavailable` during the outage (never buffered) and writes nothing.
#[actix_rt::test]
async fn batches_through_an_outage_are_all_or_none_after_the_drain() {
    let ctx = TestContext::new("batch_outage").await;
    let proxy = Proxy::start(upstream());
    let ledger = Ledger::start(config(&proxy.dsn(&ctx.dsn))).await.unwrap();
    let anchors: Vec<Uuid> = (0..6).map(|_| Uuid::new_v4()).collect();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<(Uuid, Durability)>>> = Arc::default();
    let tasks = (0..16usize).map(|t| {
        let (ledger, stop, acked) = (ledger.clone(), Arc::clone(&stop), Arc::clone(&acked));
        let anchor = anchors[t % anchors.len()];
        async move {
            let mut errors = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let id = Uuid::new_v4();
                let records = (0..10)
                    .map(|k| {
                        NewRecord::new(
                            anchor,
                            "slot",
                            "event",
                            json!({ "batch": id.to_string(), "k": k, "n": 10 }),
                            "batch-test",
                        )
                    })
                    .collect();
                match ledger.append_all(anchor, records, Expect::Any).await {
                    Ok(ack) => acked.lock().unwrap().push((id, ack.durability)),
                    Err(LedgerError::Overloaded { .. }) => {}
                    Err(e) => errors.push(e),
                }
            }
            errors
        }
    });
    let solo = Uuid::new_v4();
    let solo_head = ledger.append(rec(solo, 0)).await.unwrap().record.hash;
    let driver = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        proxy.set(Mode::Refuse);
        proxy.cut_all();
        let t = Instant::now();
        while ledger.outage_status().await.unwrap().mode != WriterMode::Outage {
            assert!(t.elapsed() < Duration::from_secs(30), "no failover");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(600)).await;
        // An expected head cannot be checked against other processes now: refused, though
        // it is the anchor's head (nobody else appends to `solo`).
        let strict = ledger
            .append_all(solo, vec![rec(solo, 1)], Expect::Head(solo_head))
            .await;
        proxy.set(Mode::Pass);
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        strict
    };
    let (errors, strict) = futures::join!(futures::future::join_all(tasks), driver);
    assert!(
        matches!(strict, Err(LedgerError::Unavailable(_))),
        "{strict:?}"
    );
    let errors: Vec<_> = errors.into_iter().flatten().collect();
    assert!(
        errors.is_empty(),
        "{} failed: {:?}",
        errors.len(),
        &errors[..errors.len().min(3)]
    );
    let status = ledger.await_drain(Duration::from_secs(60)).await.unwrap();
    assert_eq!(status.buffered, 0);
    assert!(status.failovers >= 1);
    let acked = acked.lock().unwrap().clone();
    let on_fallback = acked
        .iter()
        .filter(|(_, d)| *d != Durability::Committed)
        .count();
    assert!(
        on_fallback > 0,
        "no batch was acknowledged during the outage"
    );
    let whole = batches_whole(&ctx).await;
    let missing = acked.iter().filter(|(b, _)| !whole.contains(b)).count();
    assert_eq!(
        missing, 0,
        "{missing} acknowledged batches missing after the drain"
    );
    eprintln!(
        "{} batches acknowledged ({on_fallback} on the fallback), {} stored",
        acked.len(),
        whole.len()
    );
    let solo_rows = count(
        &ctx,
        &format!("SELECT count(*) FROM ledger_records WHERE anchor_id = '{solo}'"),
    )
    .await;
    assert_eq!(
        solo_rows, 1,
        "the refused append expecting a head wrote nothing"
    );
    let summary = ledger.verify_all().await.unwrap();
    assert!(summary.breaks.is_empty(), "{:?}", summary.breaks);
    ledger.shutdown().await.unwrap();
    drop(proxy);
    ctx.teardown().await;
}

/// A process killed with SIGKILL while spooling batches during an outage: the next start
/// writes the spool to PostgreSQL, and every batch is whole (a batch is one spool frame)
/// and every acknowledged batch is there.
#[actix_rt::test]
async fn sigkill_while_spooling_batches_recovers_all_or_none() {
    let ctx = TestContext::new("batch_spool_kill").await;
    let proxy = Proxy::start(upstream());
    let spool_dir = std::env::temp_dir().join(format!("avl-batch-spool-{}", Uuid::new_v4()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_avl-batch-child"))
        .env("LEDGER_BACKEND", "postgres")
        .env("LEDGER_DSN", proxy.dsn(&ctx.dsn))
        .env("LEDGER_POOL_SIZE", "4")
        .env("LEDGER_CHECKPOINT_INTERVAL", "0")
        .env("AVL_MODE", "flood")
        .env("AVL_BATCH", "20")
        .env("AVL_SPOOL_DIR", &spool_dir)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines, reader) = collect_lines(&mut child);
    wait_for(&lines, "Committed", 50).await;
    proxy.set(Mode::Refuse);
    proxy.cut_all();
    wait_for(&lines, "Spooled", 50).await;
    child.kill().unwrap(); // SIGKILL, mid-spool
    child.wait().unwrap();
    reader.join().unwrap();
    proxy.set(Mode::Pass);
    let acked = acked_batches(&lines);
    let ledger = Ledger::start(LedgerConfig {
        spool_dir: Some(spool_dir.clone()),
        ..config(&ctx.dsn)
    })
    .await
    .unwrap();
    let whole = batches_whole(&ctx).await;
    let missing = acked.iter().filter(|b| !whole.contains(b)).count();
    assert_eq!(
        missing,
        0,
        "{missing} of {} acknowledged batches missing",
        acked.len()
    );
    let summary = ledger.verify_all().await.unwrap();
    assert!(summary.breaks.is_empty(), "{:?}", summary.breaks);
    ledger.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&spool_dir);
    drop(proxy);
    ctx.teardown().await;
}
