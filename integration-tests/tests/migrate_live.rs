//! The live memory → PostgreSQL migration ([`Ledger::migrate_to_postgres`]) against a real
//! PostgreSQL, with appends running across the switch. Records are read back through a
//! fresh store over a new pool, so nothing comes from the ledger's memory.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::TestContext;
use ledger_actors::{
    Backend, Dsn, Durability, Ledger, LedgerConfig, LedgerError, LedgerStore, create_ledger_store,
};
use ledger_entities::{NewRecord, RecordHash};
use serde_json::json;
use uuid::Uuid;

fn memory_config() -> LedgerConfig {
    LedgerConfig {
        backend: Backend::Memory,
        timeout: Duration::from_secs(20),
        checkpoint_interval: Duration::ZERO,
        ..LedgerConfig::default()
    }
}

fn pg_config(ctx: &TestContext) -> LedgerConfig {
    LedgerConfig {
        backend: Backend::Postgres,
        dsn: Some(Dsn::parse(&ctx.dsn).expect("TestContext DSN parses")),
        pool_size: 4,
        timeout: Duration::from_secs(20),
        checkpoint_interval: Duration::ZERO,
        ..LedgerConfig::default()
    }
}

fn rec(anchor: Uuid, i: u64) -> NewRecord {
    NewRecord::new(anchor, "slot", "kind", json!({ "i": i }), "migrate-test")
}

async fn fresh_store(ctx: &TestContext) -> Arc<dyn LedgerStore> {
    create_ledger_store(&pg_config(ctx))
        .await
        .expect("store connects")
}

/// One acknowledged append: rid, hash, durability, and whether it was sent after the
/// migration call returned.
type Ack = (Uuid, RecordHash, Durability, bool);

/// Appends to `anchors` round-robin until `stop`, then `after` more once `migrated` is set.
async fn appender(
    ledger: Ledger,
    anchors: Vec<Uuid>,
    migrated: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> Vec<Ack> {
    let mut acks = Vec::new();
    let mut i = 0u64;
    while !stop.load(Ordering::Acquire) {
        let after = migrated.load(Ordering::Acquire);
        let anchor = anchors[(i as usize) % anchors.len()];
        let ack = ledger
            .append(rec(anchor, i))
            .await
            .unwrap_or_else(|e| panic!("append {i} to {anchor} failed: {e}"));
        acks.push((ack.record.rid, ack.record.hash, ack.durability, after));
        i += 1;
        // A host's pace, not a flood: the copy rounds converge (a flood is still correct,
        // with a longer cut-over pause).
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    acks
}

/// With four tasks appending across the switch (anchors shared between tasks), the
/// migration copies in rounds, switches without a restart, and afterwards: every
/// acknowledged record is in PostgreSQL exactly once with its acknowledged hash and nothing
/// else is, every chain verifies, appends sent after the switch are `Committed`, reads and
/// health report PostgreSQL.
#[actix_rt::test]
async fn live_migration_under_load_loses_nothing_and_switches() {
    let ctx = TestContext::new("migrate_live").await;
    let ledger = Ledger::start(memory_config()).await.expect("memory ledger");
    let anchors: Vec<Uuid> = (0..12).map(|_| Uuid::now_v7()).collect();
    let mut prefill = Vec::new();
    for i in 0..3000u64 {
        let ack = ledger
            .append(rec(anchors[(i % 12) as usize], i))
            .await
            .expect("prefill");
        assert_eq!(ack.durability, Durability::Volatile);
        prefill.push((ack.record.rid, ack.record.hash, ack.durability, false));
    }
    let migrated = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..4)
        .map(|t| {
            // Each task writes to 6 of the 12 anchors; every anchor has two writers.
            let mine: Vec<Uuid> = (0..6).map(|k| anchors[(t * 3 + k) % 12]).collect();
            let (l, m, s) = (ledger.clone(), Arc::clone(&migrated), Arc::clone(&stop));
            actix_rt::spawn(appender(l, mine, m, s))
        })
        .collect();
    // Let the appenders get going before the copy starts.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Small batches: several copy rounds while the appenders run.
    let target = LedgerConfig {
        batch_size: 100,
        ..pg_config(&ctx)
    };
    let report = ledger
        .migrate_to_postgres(target)
        .await
        .expect("migration succeeds");
    migrated.store(true, Ordering::Release);
    eprintln!("migration report: {report:?}");
    assert!(report.rounds >= 1, "{report:?}");
    assert!(report.records >= 3000, "{report:?}");
    assert_eq!(report.anchors, 12, "{report:?}");
    assert_eq!(ledger.store().backend(), Backend::Postgres);
    // Keep appending on PostgreSQL for a while.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Release);
    let mut acks = prefill;
    for t in tasks {
        acks.extend(t.await.expect("appender task"));
    }
    let after: Vec<&Ack> = acks.iter().filter(|a| a.3).collect();
    assert!(!after.is_empty(), "no append after the switch");
    for (rid, _, durability, _) in &after {
        assert_eq!(
            *durability,
            Durability::Committed,
            "append {rid} after the switch"
        );
    }
    assert!(
        acks.iter().any(|a| !a.3 && a.2 == Durability::Volatile),
        "appends before the switch were memory appends"
    );

    let store = fresh_store(&ctx).await;
    let rids: Vec<Uuid> = acks.iter().map(|a| a.0).collect();
    let unique: HashSet<Uuid> = rids.iter().copied().collect();
    assert_eq!(unique.len(), rids.len(), "a rid acknowledged twice");
    assert_eq!(
        store.count().await.expect("count"),
        acks.len() as u64,
        "PostgreSQL holds exactly the acknowledged records"
    );
    for chunk in acks.chunks(1000) {
        let rids: Vec<Uuid> = chunk.iter().map(|a| a.0).collect();
        let stored = store.get_many(&rids).await.expect("read back");
        assert_eq!(stored.len(), chunk.len(), "acknowledged records missing");
        let want: HashSet<(Uuid, RecordHash)> = chunk.iter().map(|a| (a.0, a.1)).collect();
        let got: HashSet<(Uuid, RecordHash)> = stored.iter().map(|r| (r.rid, r.hash)).collect();
        assert_eq!(got, want, "stored hashes differ from the acknowledged ones");
    }
    let summary = ledger_actors::verify::verify_all(store.as_ref())
        .await
        .expect("verify runs");
    assert!(summary.breaks.is_empty(), "breaks: {:?}", summary.breaks);
    assert_eq!(summary.records, acks.len() as u64);
    let through_ledger = ledger
        .verify_all()
        .await
        .expect("verify through the ledger");
    assert!(through_ledger.breaks.is_empty());
    assert_eq!(through_ledger.records, acks.len() as u64);
    let health = ledger.health().await;
    assert_eq!(health.backend_active, Backend::Postgres, "{health:?}");
    // A second migration is refused: the ledger runs on PostgreSQL now.
    assert!(matches!(
        ledger.migrate_to_postgres(pg_config(&ctx)).await,
        Err(LedgerError::MigrationRefused(_))
    ));
    ledger.shutdown().await.expect("shutdown");
    ctx.teardown().await;
}

/// The migration is refused with a typed error, and changes nothing, on a ledger that runs
/// on PostgreSQL, and when the target database holds another chain of an anchor the memory
/// ledger has; the memory ledger keeps taking appends afterwards.
#[actix_rt::test]
async fn migration_refuses_postgres_ledgers_and_conflicting_targets() {
    let ctx = TestContext::new("migrate_refuse").await;
    let pg = Ledger::start(pg_config(&ctx)).await.expect("pg ledger");
    let anchor = Uuid::now_v7();
    pg.append(rec(anchor, 0)).await.expect("pg append");
    assert!(matches!(
        pg.migrate_to_postgres(pg_config(&ctx)).await,
        Err(LedgerError::MigrationRefused(_))
    ));
    pg.shutdown().await.expect("shutdown");

    let memory = Ledger::start(memory_config()).await.expect("memory ledger");
    // The same anchor, another chain.
    memory.append(rec(anchor, 1)).await.expect("memory append");
    let err = memory
        .migrate_to_postgres(pg_config(&ctx))
        .await
        .expect_err("conflicting target refused");
    assert!(
        matches!(&err, LedgerError::MigrationRefused(m) if m.contains(&anchor.to_string())),
        "{err}"
    );
    assert!(matches!(
        memory.migrate_to_postgres(memory_config()).await,
        Err(LedgerError::MigrationRefused(_))
    ));
    let ack = memory.append(rec(anchor, 2)).await.expect("still appends");
    assert_eq!(ack.durability, Durability::Volatile);
    assert_eq!(fresh_store(&ctx).await.count().await.expect("count"), 1);
    memory.shutdown().await.expect("shutdown");
    ctx.teardown().await;
}

/// A migration interrupted after part of the records reached PostgreSQL (here: the first
/// records of an export of the memory ledger imported beforehand) is simply run again: the
/// stored records are skipped, the rest copied, every chain intact, nothing twice.
#[actix_rt::test]
async fn an_interrupted_migration_reruns_to_completion() {
    let ctx = TestContext::new("migrate_rerun").await;
    let memory = Ledger::start(memory_config()).await.expect("memory ledger");
    let anchors: Vec<Uuid> = (0..5).map(|_| Uuid::now_v7()).collect();
    for i in 0..500u64 {
        memory
            .append(rec(anchors[(i % 5) as usize], i))
            .await
            .expect("append");
    }
    let mut export = Vec::new();
    memory
        .export(&mut export, &Default::default())
        .await
        .expect("export");
    // The header and the first 200 record lines: an import cut short.
    let partial: Vec<&[u8]> = export.split(|b| *b == b'\n').take(201).collect();
    let mut partial = partial.join(&b'\n');
    partial.push(b'\n');
    let pg = Ledger::start(pg_config(&ctx)).await.expect("pg ledger");
    let summary = pg
        .import(&partial[..], &mut |r| panic!("refused: {r:?}"))
        .await
        .expect("partial import");
    assert_eq!(summary.imported, 200);
    pg.shutdown().await.expect("shutdown");

    let report = memory
        .migrate_to_postgres(pg_config(&ctx))
        .await
        .expect("rerun succeeds");
    assert_eq!(report.records, 500);
    let store = fresh_store(&ctx).await;
    assert_eq!(store.count().await.expect("count"), 500);
    let summary = ledger_actors::verify::verify_all(store.as_ref())
        .await
        .expect("verify");
    assert!(summary.breaks.is_empty(), "{:?}", summary.breaks);
    let ack = memory.append(rec(anchors[0], 999)).await.expect("append");
    assert_eq!(ack.durability, Durability::Committed);
    memory.shutdown().await.expect("shutdown");
    ctx.teardown().await;
}

/// With the transparency log on, the migration moves it too: after the switch the
/// PostgreSQL log integrates every record (copied and new) and a checkpoint covers them,
/// with receipts for records appended before and after the switch.
#[actix_rt::test]
async fn migration_moves_the_transparency_log_to_postgres() {
    let ctx = TestContext::new("migrate_tlog").await;
    let with_log = |c: LedgerConfig| LedgerConfig {
        checkpoint_interval: Duration::from_millis(200),
        ..c
    };
    let ledger = Ledger::start(with_log(memory_config()))
        .await
        .expect("memory ledger");
    let anchor = Uuid::now_v7();
    let before = ledger.append(rec(anchor, 0)).await.expect("append");
    for i in 1..50 {
        ledger.append(rec(anchor, i)).await.expect("append");
    }
    ledger
        .migrate_to_postgres(with_log(pg_config(&ctx)))
        .await
        .expect("migration");
    let after = ledger.append(rec(anchor, 50)).await.expect("append");
    assert_eq!(after.durability, Durability::Committed);
    let checkpoint = ledger
        .await_checkpoint(51, Duration::from_secs(30))
        .await
        .expect("checkpoint read")
        .expect("a checkpoint");
    assert!(checkpoint.size >= 51, "{checkpoint:?}");
    for ack in [&before, &after] {
        let receipt = ledger.prove(ack.record.rid).await.expect("receipt");
        assert_eq!(receipt.record["rid"], json!(ack.record.rid));
    }
    ledger.shutdown().await.expect("shutdown");
    ctx.teardown().await;
}

/// A memory ledger with a spool (the rollback window) migrates into the same `spool_dir`:
/// its records reach PostgreSQL once, the spool is emptied (nothing left to write again at
/// the next start), and later appends are `Committed`.
#[actix_rt::test]
async fn a_spooled_memory_ledger_migrates_and_empties_its_spool() {
    let ctx = TestContext::new("migrate_spooled").await;
    let dir = std::env::temp_dir().join(format!("avl-migrate-spool-{}", Uuid::new_v4().simple()));
    let spooled = |c: LedgerConfig| LedgerConfig {
        spool_dir: Some(dir.clone()),
        ..c
    };
    let ledger = Ledger::start(spooled(memory_config()))
        .await
        .expect("spooled memory ledger");
    let anchor = Uuid::now_v7();
    for i in 0..20 {
        let ack = ledger.append(rec(anchor, i)).await.expect("append");
        assert_eq!(ack.durability, Durability::Spooled);
    }
    let spool_file = dir.join("avl-outage.spool");
    assert!(std::fs::metadata(&spool_file).expect("spool").len() > 0);
    let report = ledger
        .migrate_to_postgres(spooled(pg_config(&ctx)))
        .await
        .expect("migration");
    assert_eq!(report.records, 20);
    assert_eq!(std::fs::metadata(&spool_file).expect("spool").len(), 0);
    let ack = ledger.append(rec(anchor, 20)).await.expect("append");
    assert_eq!(ack.durability, Durability::Committed);
    let store = fresh_store(&ctx).await;
    assert_eq!(store.count().await.expect("count"), 21);
    let summary = ledger_actors::verify::verify_all(store.as_ref())
        .await
        .expect("verify");
    assert!(summary.breaks.is_empty(), "{:?}", summary.breaks);
    ledger.shutdown().await.expect("shutdown");
    let _ = std::fs::remove_dir_all(&dir);
    ctx.teardown().await;
}

/// After the switch every read follows the ledger onto PostgreSQL: `head` names the record
/// appended after the migration (it returned the memory store's frozen head before), and
/// `get` and `records` find it too.
#[actix_rt::test]
async fn reads_after_migration_see_appends_made_on_postgres() {
    let ctx = TestContext::new("migrate_head").await;
    let ledger = Ledger::start(memory_config()).await.expect("memory ledger");
    let anchor = Uuid::now_v7();
    let before = ledger.append(rec(anchor, 0)).await.expect("append");
    assert_eq!(
        ledger.head(anchor).await.expect("head").rid,
        before.record.rid
    );
    ledger
        .migrate_to_postgres(pg_config(&ctx))
        .await
        .expect("migration");
    let after = ledger.append(rec(anchor, 1)).await.expect("append");
    assert_eq!(after.durability, Durability::Committed);
    let head = ledger.head(anchor).await.expect("head after migration");
    assert_eq!(
        head.rid, after.record.rid,
        "head is the record appended on PostgreSQL"
    );
    assert_eq!(head.hash, after.record.hash);
    // A new anchor, only ever appended on PostgreSQL, has a head too.
    let fresh = Uuid::now_v7();
    let first = ledger.append(rec(fresh, 0)).await.expect("append");
    assert_eq!(
        ledger.head(fresh).await.expect("head").rid,
        first.record.rid
    );
    let got = ledger
        .get(after.record.rid)
        .await
        .expect("get")
        .expect("stored");
    assert_eq!(got.hash, after.record.hash);
    let all = ledger
        .records(anchor, &Default::default())
        .await
        .expect("records");
    assert_eq!(all.len(), 2);
    ledger.shutdown().await.expect("shutdown");
    ctx.teardown().await;
}
