//! Several processes, one database: 2 or 4 host processes (`avl-multi-child`), each with 64
//! tasks appending to the same 10 anchors, on one per-test PostgreSQL database, optionally
//! through a fault-injecting proxy that cuts and refuses connections in the middle of the
//! run. Afterwards: no append failed, every acknowledged record is in PostgreSQL exactly
//! once with the hash of its acknowledgement (or, for one acknowledged on the outage
//! fallback and re-chained by the drain, the hash the drain reported), no anchor has a fork,
//! and every chain verifies.

#![allow(clippy::unwrap_used, reason = "a test fails loudly by design")]

mod common;
#[path = "support/proxy.rs"]
mod proxy;

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::TestContext;
use ledger_actors::{Backend, Dsn, LedgerConfig, create_ledger_store};
use proxy::{Mode, Proxy, upstream};
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use uuid::Uuid;

/// Tasks per process, anchors shared by all processes, appends per task.
const TASKS: usize = 64;
const ANCHORS: usize = 10;
const APPENDS_PER_TASK: usize = 12;
/// Longest run of one child before the test fails.
const CHILD_LIMIT: Duration = Duration::from_secs(150);

/// One child's outcome file, parsed.
#[derive(Default)]
struct Outcomes {
    /// rid -> (hash acknowledged, durability).
    acked: HashMap<Uuid, (String, String)>,
    failed: Vec<String>,
    /// Buffered hash -> hash written, from outage drains.
    moved: HashMap<String, String>,
    kept: Vec<String>,
}

fn read_outcomes(path: &std::path::Path, into: &mut Outcomes) {
    let text = std::fs::read_to_string(path).unwrap();
    for line in text.lines() {
        let f: Vec<&str> = line.splitn(5, ' ').collect();
        match f[0] {
            "ACK" => {
                let rid = f[1].parse().unwrap();
                let dup = into.acked.insert(rid, (f[3].to_owned(), f[4].to_owned()));
                assert!(dup.is_none(), "rid {rid} acknowledged twice");
            }
            "ERR" => into.failed.push(line.to_owned()),
            "MOVED" => {
                into.moved.insert(f[1].to_owned(), f[2].to_owned());
            }
            "KEPT" => into.kept.push(line.to_owned()),
            other => panic!("unexpected line {other:?} in {}", path.display()),
        }
    }
}

/// Starts `n` children on `dsn`, waits until each has started its ledger, then lets them
/// all append at once.
fn start_children(n: usize, dsn: &str, anchors: &[Uuid], dir: &std::path::Path) -> Vec<Child> {
    let anchors = anchors
        .iter()
        .map(Uuid::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let mut children: Vec<Child> = (0..n)
        .map(|i| {
            Command::new(env!("CARGO_BIN_EXE_avl-multi-child"))
                .env("LEDGER_BACKEND", "postgres")
                .env("LEDGER_DSN", dsn)
                .env("LEDGER_POOL_SIZE", "4")
                .env("LEDGER_TIMEOUT", "30")
                .env("AVL_ANCHORS", &anchors)
                .env("AVL_TASKS", TASKS.to_string())
                .env("AVL_APPENDS", APPENDS_PER_TASK.to_string())
                .env("AVL_ACKS", dir.join(format!("child-{i}.acks")))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in &mut children {
        let mut line = String::new();
        std::io::BufReader::new(c.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "READY", "a child did not start its ledger");
    }
    for c in &mut children {
        writeln!(c.stdin.as_mut().unwrap(), "GO").unwrap();
    }
    children
}

async fn wait_all(children: Vec<Child>) {
    let deadline = Instant::now() + CHILD_LIMIT;
    for mut c in children {
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                assert!(status.success(), "a child failed: {status}");
                break;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!("a child ran longer than {CHILD_LIMIT:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Runs `processes` children on shared anchors (with an outage in the middle if
/// `outage`) and checks the outcome against the database.
async fn run(name: &str, processes: usize, outage: bool) {
    let ctx = TestContext::new(name).await;
    let proxy = outage.then(|| Proxy::start(upstream()));
    let dsn = proxy
        .as_ref()
        .map_or_else(|| ctx.dsn.clone(), |p| p.dsn(&ctx.dsn));
    let anchors: Vec<Uuid> = (0..ANCHORS).map(|_| Uuid::new_v4()).collect();
    let dir = std::env::temp_dir().join(format!("avl-multi-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();

    let started = Instant::now();
    let children = start_children(processes, &dsn, &anchors, &dir);
    if let Some(p) = &proxy {
        // The outage: every open connection cut, new ones refused, for two seconds.
        tokio::time::sleep(Duration::from_millis(700)).await;
        p.set(Mode::Refuse);
        p.cut_all();
        tokio::time::sleep(Duration::from_secs(2)).await;
        p.set(Mode::Pass);
    }
    wait_all(children).await;
    let seconds = started.elapsed().as_secs_f64();

    let mut out = Outcomes::default();
    for i in 0..processes {
        read_outcomes(&dir.join(format!("child-{i}.acks")), &mut out);
    }
    let _ = std::fs::remove_dir_all(&dir);

    let rows = ctx
        .db
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT rid::text AS rid, hash FROM ledger_records",
        ))
        .await
        .unwrap();
    let mut stored: HashMap<Uuid, String> = HashMap::new();
    for row in rows {
        let rid: String = row.try_get("", "rid").unwrap();
        let hash: String = row.try_get("", "hash").unwrap();
        assert!(
            stored.insert(rid.parse().unwrap(), hash).is_none(),
            "rid {rid} stored twice"
        );
    }
    let forks = ctx
        .db
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT anchor_id, prev_hash FROM ledger_records GROUP BY 1, 2 HAVING count(*) > 1",
        ))
        .await
        .unwrap()
        .len();

    let buffered = out.acked.values().filter(|(_, d)| d != "Committed").count();
    eprintln!(
        "{name}: {processes} processes, {} acknowledged ({buffered} on the outage fallback), {} failed, {} re-chained by drains, {} kept, {} stored, {:.1} s",
        out.acked.len(),
        out.failed.len(),
        out.moved.len(),
        out.kept.len(),
        stored.len(),
        seconds
    );
    assert!(
        out.failed.is_empty(),
        "{} appends failed, e.g. {:?}",
        out.failed.len(),
        &out.failed[..out.failed.len().min(5)]
    );
    assert_eq!(out.acked.len(), processes * TASKS * APPENDS_PER_TASK);
    assert!(
        out.kept.is_empty(),
        "records kept unwritten: {:?}",
        out.kept
    );
    let mut wrong = Vec::new();
    for (rid, (hash, durability)) in &out.acked {
        let ok = match stored.get(rid) {
            Some(h) if h == hash => true,
            Some(h) => durability != "Committed" && out.moved.get(hash) == Some(h),
            None => false,
        };
        if !ok {
            wrong.push((rid, hash, durability, stored.get(rid)));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} acknowledged records missing or with another hash, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
    assert_eq!(stored.len(), out.acked.len(), "records nobody acknowledged");
    assert_eq!(forks, 0, "forked anchors");

    let store = create_ledger_store(&LedgerConfig {
        backend: Backend::Postgres,
        dsn: Some(Dsn::parse(&ctx.dsn).unwrap()),
        pool_size: 2,
        ..LedgerConfig::default()
    })
    .await
    .unwrap();
    let summary = ledger_actors::verify::verify_all(store.as_ref())
        .await
        .unwrap();
    assert!(summary.breaks.is_empty(), "breaks: {:?}", summary.breaks);
    assert_eq!(
        summary.anchors, ANCHORS as u64,
        "every shared anchor has a chain"
    );
    assert_eq!(
        summary.records,
        stored.len() as u64,
        "every stored record is on its anchor's chain"
    );
    drop(store);
    drop(proxy);
    ctx.teardown().await;
}

/// Two processes × 64 tasks on 10 shared anchors: no append fails, nothing is lost or
/// stored twice, each record has the hash it was acknowledged with, no fork, no break.
#[actix_rt::test]
async fn two_processes_share_anchors_without_failures() {
    run("multi_two", 2, false).await;
}

/// Four processes × 64 tasks on 10 shared anchors: the same guarantees under heavier
/// contention.
#[actix_rt::test]
async fn four_processes_share_anchors_without_failures() {
    run("multi_four", 4, false).await;
}

/// Two processes through a proxy that cuts every connection and refuses new ones for two
/// seconds mid-run: appends keep succeeding (on the fallback), and after the drains every
/// acknowledged record is stored exactly once, with no fork and no break.
#[actix_rt::test]
async fn two_processes_through_an_outage() {
    run("multi_two_outage", 2, true).await;
}

/// Four processes through the same outage.
#[actix_rt::test]
async fn four_processes_through_an_outage() {
    run("multi_four_outage", 4, true).await;
}

/// A record acknowledged on the outage fallback whose client rid is stored meanwhile by
/// another writer with other content can never be written: it is kept (in memory, in the
/// spool directory's kept file, counted by health), never dropped, and its anchor's later
/// buffered records are still written, re-chained, with the chain intact.
#[actix_rt::test]
async fn a_record_whose_rid_was_taken_meanwhile_is_kept_and_reported() {
    use ledger_actors::{Durability, HealthStatus, Ledger};
    use ledger_entities::{LedgerRecord, NewRecord};

    let ctx = TestContext::new("multi_rid_taken").await;
    let proxy = Proxy::start(upstream());
    let spool_dir = std::env::temp_dir().join(format!("avl-kept-{}", Uuid::new_v4()));
    let ledger = Ledger::start(LedgerConfig {
        backend: Backend::Postgres,
        dsn: Some(Dsn::parse(&proxy.dsn(&ctx.dsn)).unwrap()),
        pool_size: 2,
        spool_dir: Some(spool_dir.clone()),
        ..LedgerConfig::default()
    })
    .await
    .unwrap();
    let anchor = Uuid::new_v4();
    let rec = |i: u64| NewRecord::new(anchor, "slot", "event", serde_json::json!({ "i": i }), "t");
    let first = ledger.append(rec(0)).await.unwrap();
    assert_eq!(first.durability, Durability::Committed);

    // Outage: the next appends are acknowledged from the fallback (spooled).
    proxy.set(Mode::Refuse);
    proxy.cut_all();
    let taken = Uuid::new_v4();
    let kept = ledger.append(rec(1).with_rid(taken)).await.unwrap();
    let after = ledger.append(rec(2)).await.unwrap();
    assert!(
        matches!(kept.durability, Durability::Spooled | Durability::Buffered),
        "{:?}",
        kept.durability
    );

    // Meanwhile another writer stores the same rid with other content (another anchor).
    let direct = create_ledger_store(&LedgerConfig {
        backend: Backend::Postgres,
        dsn: Some(Dsn::parse(&ctx.dsn).unwrap()),
        pool_size: 1,
        ..LedgerConfig::default()
    })
    .await
    .unwrap();
    let other = NewRecord::new(
        Uuid::new_v4(),
        "slot",
        "event",
        serde_json::json!({ "other": true }),
        "t",
    );
    let other = LedgerRecord::seal(other, taken, chrono::Utc::now(), None).unwrap();
    direct.insert(&[std::sync::Arc::new(other)]).await.unwrap();

    proxy.set(Mode::Pass);
    let status = ledger.await_drain(Duration::from_secs(60)).await.unwrap();
    assert_eq!(status.buffered, 0, "drained");
    assert_eq!(status.quarantined, 1, "the record whose rid was taken");

    // Kept, with its content, in memory and in the kept file; reported by health.
    let records = ledger.outage_records().await.unwrap();
    assert_eq!(records.kept.len(), 1);
    assert_eq!(records.kept[0].rid, taken);
    assert_eq!(records.kept[0].payload, kept.record.payload);
    let file =
        ledger_actors::spool::read_file(&spool_dir.join(ledger_actors::spool::KEPT_FILE)).unwrap();
    assert_eq!(file.records.len(), 1);
    assert_eq!(file.records[0].rid, taken);
    assert_eq!(file.records[0].hash, kept.record.hash);
    let health = ledger.health().await;
    assert_eq!(health.kept_records, 1);
    assert_eq!(
        health.status,
        HealthStatus::Degraded,
        "{:?}",
        health.reasons
    );
    assert!(
        health
            .reasons
            .iter()
            .any(|r| r.contains("cannot be written")),
        "{:?}",
        health.reasons
    );

    // The rest of the anchor is written, re-chained past the kept record, chain intact.
    let stored = direct
        .get(after.record.rid)
        .await
        .unwrap()
        .expect("successor written");
    assert_eq!(stored.prev_hash, Some(first.record.hash));
    let report = ledger.verify(anchor).await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.records, 2);
    ledger.shutdown().await.unwrap();
    drop(direct);
    let _ = std::fs::remove_dir_all(&spool_dir);
    drop(proxy);
    ctx.teardown().await;
}
