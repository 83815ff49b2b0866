//! Issue 8 against a real PostgreSQL: read-only opening never falls back and never touches
//! the spool, the spool is owned by one ledger at a time, a refused login or a missing
//! database is a configuration error, and server errors are classed as what they are
//! (a read-only standby is an outage; a deadlock or serialization failure is retried).

mod common;

use std::time::Duration;

use common::TestContext;
use ledger_actors::Durability;
use ledger_actors::{Backend, Dsn, Ledger, LedgerConfig, LedgerError};
use ledger_entities::NewRecord;
use sea_orm::ConnectionTrait;
use serde_json::json;
use uuid::Uuid;

fn config(dsn: &str) -> LedgerConfig {
    LedgerConfig {
        backend: Backend::Postgres,
        dsn: Some(Dsn::parse(dsn).expect("DSN parses")),
        pool_size: 2,
        timeout: Duration::from_secs(10),
        workers: 1,
        ..LedgerConfig::default()
    }
}

fn record(anchor: Uuid, i: u64) -> NewRecord {
    NewRecord::new(anchor, "slot", "event", json!({ "i": i }), "test")
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("avl-{name}-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// `open_read_only` against an unreachable database is `Unavailable`, never a ledger on an
/// empty memory store.
#[actix_rt::test]
async fn read_only_open_never_falls_back_to_memory() {
    let got = Ledger::open_read_only(config("postgres://avl:pw@127.0.0.1:1/avl")).await;
    match got {
        Err(LedgerError::Unavailable(reason)) => assert!(!reason.contains("pw@"), "{reason}"),
        Err(e) => panic!("expected Unavailable, got {e:?}"),
        Ok(_) => panic!("a read-only ledger opened on an unreachable database"),
    }
}

/// A read-only ledger over a live database reads its records, refuses appends with
/// `ReadOnly`, and leaves a spool file in `spool_dir` byte for byte as it was (a service
/// starting there would replay and truncate it).
#[actix_rt::test]
async fn read_only_open_reads_and_leaves_the_spool_alone() {
    let ctx = TestContext::new("ro_spool").await;
    let anchor = Uuid::new_v4();
    let writer = Ledger::start(config(&ctx.dsn)).await.expect("starts");
    for i in 0..3 {
        writer.append(record(anchor, i)).await.expect("append");
    }
    writer.shutdown().await.expect("shutdown");

    let dir = temp_dir("ro-spool");
    let spool = dir.join(ledger_actors::spool::SPOOL_FILE);
    let junk = b"not a spool frame, but a live service's bytes".to_vec();
    std::fs::write(&spool, &junk).expect("write spool");
    let reader = Ledger::open_read_only(LedgerConfig {
        spool_dir: Some(dir.clone()),
        ..config(&ctx.dsn)
    })
    .await
    .expect("opens read-only");
    assert!(reader.is_read_only());
    let summary = reader.verify_all().await.expect("verifies");
    assert_eq!((summary.anchors, summary.records), (1, 3));
    assert_eq!(
        reader.append(record(anchor, 9)).await,
        Err(LedgerError::ReadOnly)
    );
    reader.shutdown().await.expect("shutdown");
    assert_eq!(std::fs::read(&spool).expect("spool still there"), junk);
    std::fs::remove_dir_all(&dir).ok();
    ctx.teardown().await;
}

/// Two ledgers with one `spool_dir`: the second is refused with `SpoolLocked` while the
/// first runs, and starts once the first has shut down.
#[actix_rt::test]
async fn a_spool_dir_is_owned_by_one_ledger_at_a_time() {
    let ctx = TestContext::new("spool_lock").await;
    let dir = temp_dir("spool-lock");
    let with_spool = || LedgerConfig {
        spool_dir: Some(dir.clone()),
        ..config(&ctx.dsn)
    };
    let first = Ledger::start(with_spool()).await.expect("first starts");
    match Ledger::start(with_spool()).await {
        Err(LedgerError::SpoolLocked(d)) => assert_eq!(d, dir),
        Err(e) => panic!("expected SpoolLocked, got {e:?}"),
        Ok(_) => panic!("two ledgers own one spool"),
    }
    first.shutdown().await.expect("shutdown");
    let second = Ledger::start(with_spool())
        .await
        .expect("starts after the first");
    second.shutdown().await.expect("shutdown");
    std::fs::remove_dir_all(&dir).ok();
    ctx.teardown().await;
}

/// A missing database (3D000) and an unknown role (28000) at start are `AccessDenied`: the
/// ledger does not start on memory and acknowledge appends as Volatile.
#[actix_rt::test]
async fn refused_login_or_missing_database_does_not_fall_back() {
    let server = url::Url::parse(
        &std::env::var(common::DSN_ENV).unwrap_or_else(|_| common::DEFAULT_DSN.to_owned()),
    )
    .expect("server DSN");
    let mut no_db = server.clone();
    no_db.set_path("/avl_missing_db_issue8");
    let mut no_role = server;
    no_role
        .set_username("avl_missing_role_issue8")
        .expect("user");
    for dsn in [no_db.to_string(), no_role.to_string()] {
        match Ledger::start(config(&dsn)).await {
            Err(LedgerError::AccessDenied(reason)) => {
                assert!(reason.contains("does not exist"), "{reason}");
            }
            Err(e) => panic!("{dsn}: expected AccessDenied, got {e:?}"),
            Ok(_) => panic!("{dsn}: started although the login is refused"),
        }
    }
}

/// Installs a trigger that makes the next `failures` inserts into ledger_records fail with
/// SQLSTATE `state`, as the server would report it.
async fn fail_next_inserts(ctx: &TestContext, state: &str, failures: u32) {
    ctx.db
        .execute_unprepared(&format!(
            // A sequence, because the failing statement's transaction rolls back every
            // other write (nextval is never rolled back).
            "CREATE SEQUENCE avl_fault;
             CREATE FUNCTION avl_fault() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
               IF nextval('avl_fault') <= {failures} THEN
                 RAISE EXCEPTION 'injected fault' USING ERRCODE = '{state}';
               END IF;
               RETURN NULL;
             END $$;
             CREATE TRIGGER avl_fault BEFORE INSERT ON ledger_records
               FOR EACH STATEMENT EXECUTE FUNCTION avl_fault();"
        ))
        .await
        .expect("install fault trigger");
}

/// Deadlocks (40P01) and serialization failures (40001) are retried: the append is
/// committed, with no failover and no error, while the timeout has time left.
#[actix_rt::test]
async fn deadlocks_and_serialization_failures_are_retried_not_failed() {
    for state in ["40P01", "40001"] {
        let ctx = TestContext::new("contention").await;
        let ledger = Ledger::start(config(&ctx.dsn)).await.expect("starts");
        let anchor = Uuid::new_v4();
        ledger
            .append(record(anchor, 0))
            .await
            .expect("first append");
        fail_next_inserts(&ctx, state, 3).await;
        let ack = ledger.append(record(anchor, 1)).await;
        assert!(
            matches!(&ack, Ok(a) if a.durability == Durability::Committed),
            "{state}: {ack:?}"
        );
        let status = ledger.outage_status().await.expect("writer_parts");
        assert_eq!(status.failovers, 0, "{state}: a conflict is not an outage");
        assert_eq!(ledger.verify_all().await.expect("verify").records, 2);
        ledger.shutdown().await.expect("shutdown");
        ctx.teardown().await;
    }
}

/// A read-only transaction (25006, a standby after a switchover) is connectivity: the ledger
/// fails over and acknowledges the append from the fallback instead of failing it as bad
/// data; the record reaches PostgreSQL when the fault clears.
#[actix_rt::test]
async fn read_only_transaction_is_an_outage_not_a_data_error() {
    let ctx = TestContext::new("standby").await;
    let ledger = Ledger::start(config(&ctx.dsn)).await.expect("starts");
    let anchor = Uuid::new_v4();
    ledger
        .append(record(anchor, 0))
        .await
        .expect("first append");
    fail_next_inserts(&ctx, "25006", 1).await;
    let ack = ledger
        .append(record(anchor, 1))
        .await
        .expect("acknowledged");
    assert_ne!(ack.durability, Durability::Committed);
    let status = ledger
        .await_drain(Duration::from_secs(20))
        .await
        .expect("writer_parts");
    assert_eq!(status.failovers, 1);
    assert_eq!(status.buffered, 0, "drained after the fault cleared");
    assert_eq!(ledger.verify_all().await.expect("verify").records, 2);
    ledger.shutdown().await.expect("shutdown");
    ctx.teardown().await;
}
