//! A ledger partitioned over two PostgreSQL servers: partition 0 is a fresh database on
//! the shared server, partition 1 a database on a cluster this test makes (and stops, and
//! drops). Checked: every anchor lives wholly in its partition; a list in another order or
//! of another length is refused, naming the mismatch; one server stopped at once mid-load
//! makes only its anchors' appends `Buffered` (no append fails, the other partition stays
//! `Committed`), and after it returns every acknowledged record is stored exactly once;
//! chains and both logs verify; a chain-consistent rewrite in partition 1 is caught by
//! partition 1's log and partition 0's log stays clean; the partition metrics follow.

#![allow(clippy::unwrap_used, reason = "a test fails loudly by design")]

#[path = "support/cluster.rs"]
mod cluster;
mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cluster::Cluster;
use common::TestContext;
use ledger_actors::log_verify::{LogReport, verify_log};
use ledger_actors::partition::{partition_config, partition_of};
use ledger_actors::tlog::open_log;
use ledger_actors::{
    Backend, Dsn, Durability, Ledger, LedgerConfig, LedgerError, PartitionedLedger,
};
use ledger_entities::{LedgerRecord, NewRecord};
use ledger_tlog::note::{NoteSigner, NoteVerifier};
use sea_orm::{
    ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement, TransactionTrait,
};
use serde_json::json;
use uuid::Uuid;

/// rid → (anchor, durability, when called, latency).
type Acks = HashMap<Uuid, (Uuid, Durability, Instant, Duration)>;

fn keys(dir: &std::path::Path) -> Vec<NoteVerifier> {
    (0..2)
        .map(|i| {
            let signer =
                NoteSigner::from_seed(&format!("avl.test/p{i}"), &[i as u8 + 7; 32]).unwrap();
            let sub = dir.join(format!("p{i}"));
            std::fs::create_dir_all(&sub).unwrap();
            let path = sub.join("checkpoint.key");
            std::fs::write(&path, signer.to_key_string()).unwrap();
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            }
            signer.verifier()
        })
        .collect()
}

async fn rids(db: &DatabaseConnection) -> Vec<(Uuid, Uuid)> {
    db.query_all_raw(Statement::from_string(
        DbBackend::Postgres,
        "SELECT rid, anchor_id FROM ledger_records",
    ))
    .await
    .unwrap()
    .into_iter()
    .map(|r| {
        (
            r.try_get::<Uuid>("", "rid").unwrap(),
            r.try_get::<Uuid>("", "anchor_id").unwrap(),
        )
    })
    .collect()
}

fn p50(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

async fn scrape(addr: std::net::SocketAddr) -> String {
    reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn check_log(config: &LedgerConfig, p: usize, key: &NoteVerifier) -> LogReport {
    let log = open_log(&partition_config(config, p).unwrap()).unwrap();
    verify_log(log.as_ref(), Some(key), None).await.unwrap()
}

#[actix_rt::test]
async fn two_partitions_on_two_servers() {
    let metrics_addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    ledger_actors::metrics::install(metrics_addr).unwrap();
    let p0 = TestContext::new_unmigrated("partitions").await;
    let server = Cluster::primary("parts", &[]);
    server.sql("CREATE DATABASE ledger");
    let dsns = [p0.dsn.clone(), server.dsn("ledger")];
    let dir = std::env::temp_dir().join(format!("avl-partitions-{}", Uuid::new_v4()));
    let verifiers = keys(&dir);
    let config = LedgerConfig {
        backend: Backend::Postgres,
        partitions: dsns.iter().map(|d| Dsn::parse(d).unwrap()).collect(),
        pool_size: 4,
        auto_migrate: true,
        failover_after: Duration::from_secs(1),
        checkpoint_interval: Duration::from_millis(200),
        checkpoint_key: Some(dir.join("p{partition}/checkpoint.key")),
        spool_dir: Some(dir.join("spool")),
        ..LedgerConfig::default()
    };

    let ledger = PartitionedLedger::start(config.clone()).await.unwrap();
    assert_eq!(ledger.count(), 2);

    // Another order, and another length, are refused while this list is recorded.
    let swapped = LedgerConfig {
        partitions: config.partitions.iter().rev().cloned().collect(),
        spool_dir: None,
        ..config.clone()
    };
    match PartitionedLedger::start(swapped).await {
        Err(LedgerError::PartitionMismatch(m)) => assert!(
            m.contains("partition 0") && m.contains("records partition 1 of 2"),
            "{m}"
        ),
        Err(e) => panic!("swapped list: {e}"),
        Ok(_) => panic!("a swapped partitions list started"),
    }
    let shorter = LedgerConfig {
        partitions: config.partitions[..1].to_vec(),
        checkpoint_key: None,
        spool_dir: None,
        ..config.clone()
    };
    match PartitionedLedger::open_read_only(shorter).await {
        Err(LedgerError::PartitionMismatch(m)) => {
            assert!(m.contains("partition 0 of 2") && m.contains("of 1"), "{m}")
        }
        Err(e) => panic!("shorter list: {e}"),
        Ok(_) => panic!("a shorter partitions list opened"),
    }
    // A ledger started alone (the library's `Ledger::start`, no list) on a partition's
    // database is refused too: it would take anchors that live on the other server.
    let alone = LedgerConfig {
        partitions: Vec::new(),
        dsn: Some(config.partitions[1].clone()),
        checkpoint_key: None,
        spool_dir: None,
        ..config.clone()
    };
    match Ledger::start(alone).await {
        Err(LedgerError::PartitionMismatch(m)) => assert!(
            m.contains("records partition 1 of 2") && m.contains("alone"),
            "{m}"
        ),
        Err(e) => panic!("alone on a partition: {e}"),
        Ok(_) => panic!("a ledger started alone on a partition's database"),
    }

    // Load: 40 anchors (about half in each partition), one append every 2 ms each.
    let anchors: Vec<Uuid> = (0..40).map(|_| Uuid::new_v4()).collect();
    let on = |p: usize| anchors.iter().filter(|a| partition_of(**a, 2) == p).count();
    assert!(on(0) > 5 && on(1) > 5, "{} / {}", on(0), on(1));
    let acks: Arc<Mutex<Acks>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = anchors
        .iter()
        .map(|&anchor| {
            let (ledger, acks, stop) = (ledger.clone(), Arc::clone(&acks), Arc::clone(&stop));
            actix_rt::spawn(async move {
                let mut failed = Vec::new();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let record =
                        NewRecord::new(anchor, "slot", "event", json!({ "i": i }), "parts");
                    let called = Instant::now();
                    match ledger.append(record).await {
                        Ok(ack) => {
                            acks.lock().unwrap().insert(
                                ack.record.rid,
                                (anchor, ack.durability, called, called.elapsed()),
                            );
                        }
                        Err(e) => failed.push(e.to_string()),
                    }
                    i += 1;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                failed
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    server.crash();
    let crashed = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    ledger.sample_metrics().await;
    let during = scrape(metrics_addr).await;
    assert!(
        during.contains("ledger_partition_on_postgres{partition=\"1\"} 0")
            && during.contains("ledger_partition_on_postgres{partition=\"0\"} 1"),
        "{during}"
    );
    // Each partition's writer records its own series (the `partition` label), so partition
    // 1's outage does not overwrite partition 0's state, nor the other way round.
    for needle in [
        "ledger_backend_active{backend=\"memory\",partition=\"1\"} 1",
        "ledger_backend_active{backend=\"postgres\",partition=\"1\"} 0",
        "ledger_backend_active{backend=\"postgres\",partition=\"0\"} 1",
        "ledger_backend_active{backend=\"memory\",partition=\"0\"} 0",
    ] {
        assert!(during.contains(needle), "{needle} missing:\n{during}");
    }
    let value = |series: &str| {
        during
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.parse::<f64>().ok())
    };
    assert!(
        value("ledger_buffered_records{partition=\"1\"}").is_some_and(|b| b > 0.0)
            && value("ledger_failovers_total{partition=\"1\"}").is_some_and(|f| f >= 1.0)
            && value("ledger_failovers_total{partition=\"0\"}").is_none_or(|f| f == 0.0)
            && value("ledger_anchors_active{partition=\"0\"}").is_some_and(|a| a > 0.0)
            && value("ledger_anchors_active{partition=\"1\"}").is_some_and(|a| a > 0.0),
        "{during}"
    );
    let restarted = Instant::now();
    server.start();
    // Until partition 1 writes to its server again, then a little more load.
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let status = ledger.outage_status().await;
        if status[1].as_ref().is_some_and(|s| {
            s.mode == ledger_actors::writer::Mode::Primary && s.buffered == 0 && s.failovers > 0
        }) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "partition 1 did not drain: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let mut failed = Vec::new();
    for t in tasks {
        failed.extend(t.await.unwrap());
    }
    assert!(failed.is_empty(), "appends failed: {failed:?}");
    let acks = acks.lock().unwrap().clone();
    let status = ledger.outage_status().await;
    assert_eq!(status[0].as_ref().unwrap().failovers, 0, "{status:?}");

    // Partition 0 stayed Committed throughout; partition 1 was Buffered during its outage.
    let mut before0 = Vec::new();
    let mut outage0 = Vec::new();
    let mut buffered1 = 0;
    for (anchor, durability, called, latency) in acks.values() {
        match partition_of(*anchor, 2) {
            0 => {
                assert_eq!(
                    *durability,
                    Durability::Committed,
                    "partition 0 acknowledged {durability:?}"
                );
                if *called < crashed {
                    before0.push(*latency);
                } else if *called > crashed + Duration::from_millis(500) && *called < restarted {
                    outage0.push(*latency);
                }
            }
            _ => {
                if *durability != Durability::Committed {
                    assert!(
                        *called > crashed - Duration::from_secs(1),
                        "buffered before the crash"
                    );
                    buffered1 += 1;
                }
            }
        }
    }
    assert!(
        buffered1 > 0,
        "partition 1 buffered nothing while its server was down"
    );
    assert!(
        !outage0.is_empty(),
        "partition 0 took no appends during the outage"
    );
    eprintln!(
        "partition 0 p50 append latency: {:?} before the crash ({} appends), {:?} while partition 1 was down ({} appends); partition 1 buffered {buffered1}",
        p50(before0.clone()),
        before0.len(),
        p50(outage0.clone()),
        outage0.len()
    );
    let after = scrape(metrics_addr).await;
    for needle in [
        "ledger_partition_appends_total{partition=\"0\",durability=\"committed\"}",
        "ledger_partition_appends_total{partition=\"1\",durability=\"buffered\"}",
        "ledger_partition_appends_total{partition=\"0\",durability=\"buffered\"} 0",
    ] {
        assert!(after.contains(needle), "{needle} missing:\n{after}");
    }

    // Every acknowledged record is stored exactly once, in its anchor's partition, and
    // every anchor lives wholly in one partition.
    let db1 = Database::connect(dsns[1].as_str()).await.unwrap();
    let stored = [rids(&p0.db).await, rids(&db1).await];
    let mut seen: HashMap<Uuid, u32> = HashMap::new();
    let mut anchors_in: [HashSet<Uuid>; 2] = Default::default();
    for (p, rows) in stored.iter().enumerate() {
        for (rid, anchor) in rows {
            *seen.entry(*rid).or_default() += 1;
            anchors_in[p].insert(*anchor);
            assert_eq!(
                partition_of(*anchor, 2),
                p,
                "anchor {anchor} stored in partition {p}"
            );
        }
    }
    assert!(anchors_in[0].is_disjoint(&anchors_in[1]));
    for rid in acks.keys() {
        assert_eq!(seen.get(rid), Some(&1), "acknowledged record {rid}");
    }

    // Chains and both logs verify, each partition's log with its own key.
    for v in ledger.verify_all().await.unwrap() {
        assert!(
            v.summary.breaks.is_empty(),
            "partition {}: {:?}",
            v.partition,
            v.summary.breaks
        );
    }
    for part in ledger.partitions() {
        let n = part.store().count().await.unwrap();
        part.await_checkpoint(n, Duration::from_secs(20))
            .await
            .unwrap();
    }
    ledger.shutdown().await.unwrap();
    for p in 0..2 {
        let report = check_log(&config, p, &verifiers[p]).await;
        assert_eq!(report.problems, vec![], "partition {p}");
        // Partition 0's key does not open partition 1's checkpoints: origins differ.
        assert!(
            !check_log(&config, p, &verifiers[1 - p])
                .await
                .problems
                .is_empty()
        );
    }

    // A chain-consistent rewrite in partition 1: a payload changed and every later hash
    // recomputed. The chains still verify; partition 1's log names the record.
    let victim = *anchors_in[1].iter().next().unwrap();
    let rows = db1
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT rid FROM ledger_records WHERE anchor_id = $1 ORDER BY ts",
            vec![victim.into()],
        ))
        .await
        .unwrap();
    let reader = PartitionedLedger::open_read_only(LedgerConfig {
        spool_dir: None,
        ..config.clone()
    })
    .await
    .unwrap();
    let mut chain: Vec<LedgerRecord> = Vec::new();
    for r in rows {
        let rid: Uuid = r.try_get("", "rid").unwrap();
        chain.push((*reader.get(rid).await.unwrap().unwrap()).clone());
    }
    assert!(chain.len() > 3);
    let mut changed = chain[2].clone();
    changed.payload = ledger_entities::Payload::from_value(&json!({ "i": -1 })).unwrap();
    changed.hash = ledger_entities::record::record_hash(&changed).unwrap();
    let mut rewritten = vec![changed.clone()];
    let mut prev = changed.hash;
    for r in &chain[3..] {
        let mut r = r.clone();
        r.prev_hash = Some(prev);
        r.hash = ledger_entities::record::record_hash(&r).unwrap();
        prev = r.hash;
        rewritten.push(r);
    }
    let txn = db1.begin().await.unwrap();
    for r in rewritten.iter().rev() {
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
    for v in reader.verify_all().await.unwrap() {
        assert!(
            v.summary.breaks.is_empty(),
            "the hash chains alone see nothing"
        );
    }
    reader.shutdown().await.unwrap();
    let report = check_log(&config, 1, &verifiers[1]).await;
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.subject.contains(&changed.rid.to_string())
                && p.reason.contains("record changed")),
        "{report:#?}"
    );
    assert_eq!(check_log(&config, 0, &verifiers[0]).await.problems, vec![]);

    let _ = db1.close().await;
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    p0.teardown().await;
}
