//! Never a split view: the signer remembers what it signed in a state file beside its key,
//! and a database whose log does not extend that — shorter (a backup restored, a standby
//! promoted while behind) or another tree of the same length and more — gets no checkpoint
//! signed over it. Appends go on; the integrator reports why it halted and goes on once
//! the ledger is pointed back at a log that extends what was signed.

#![allow(clippy::unwrap_used, reason = "a test fails loudly by design")]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{TestContext, key_file};
use ledger_actors::{Backend, Dsn, Durability, Ledger, LedgerConfig, LedgerError};
use ledger_entities::NewRecord;
use ledger_tlog::note::NoteSigner;
use serde_json::json;
use uuid::Uuid;

fn config(ctx: &TestContext, key: &Path) -> LedgerConfig {
    LedgerConfig {
        backend: Backend::Postgres,
        dsn: Some(Dsn::parse(&ctx.dsn).unwrap()),
        pool_size: 2,
        timeout: Duration::from_secs(10),
        checkpoint_interval: Duration::from_millis(100),
        checkpoint_key: Some(key.to_path_buf()),
        ..LedgerConfig::default()
    }
}

/// Appends `n` records and waits for a checkpoint covering them; returns its size.
async fn append_and_sign(ledger: &Ledger, n: u64) -> u64 {
    let anchor = Uuid::now_v7();
    for i in 0..n {
        let ack = ledger
            .append(NewRecord::new(anchor, "s", "k", json!({ "i": i }), "t"))
            .await
            .unwrap();
        assert_eq!(ack.durability, Durability::Committed);
    }
    let size = ledger.integrator_progress().unwrap().size;
    ledger
        .await_checkpoint(size.max(n), Duration::from_secs(30))
        .await
        .unwrap()
        .expect("a checkpoint")
        .size
}

/// Waits until the integrator reports that it halted; returns why.
async fn halted(ledger: &Ledger) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(why) = ledger.integrator_progress().unwrap().halted {
            return why;
        }
        assert!(Instant::now() < deadline, "the integrator did not halt");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The same key in another directory: the same signer, its own state file.
fn copy_key(key: &Path) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("avl-test-key-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("checkpoint.key");
    std::fs::copy(key, &copy).unwrap();
    copy
}

#[actix_rt::test]
async fn no_checkpoint_is_signed_over_a_log_that_does_not_extend_the_signed_one() {
    let signer = NoteSigner::from_seed("example.com/avl-rollback-test", &[9; 32]).unwrap();
    let key = key_file(&signer);
    let first = TestContext::new("rollback_a").await;
    let second = TestContext::new("rollback_b").await;

    // The key signs a log of 40+ leaves on the first database.
    let ledger = Ledger::start(config(&first, &key)).await.unwrap();
    let signed = append_and_sign(&ledger, 40).await;
    ledger.shutdown().await.unwrap();
    // The last checkpoint may be the one shutdown signed.
    let stored = ledger_actors::tlog::open_log(&config(&first, &key))
        .unwrap()
        .latest_checkpoint()
        .await
        .unwrap()
        .unwrap();
    let signed = signed.max(stored.size);
    assert!(signed >= 40);

    // 1. The same key on an empty database (a rollback to nothing): appends are committed,
    //    nothing is integrated or signed, and the reason names both sizes.
    let ledger = Ledger::start(config(&second, &key)).await.unwrap();
    let ack = ledger
        .append(NewRecord::new(Uuid::now_v7(), "s", "k", json!({}), "t"))
        .await
        .unwrap();
    assert_eq!(ack.durability, Durability::Committed);
    let why = halted(&ledger).await;
    assert!(
        why.contains(&format!(
            "log rollback: signed size {signed}, database has 0"
        )),
        "{why}"
    );
    let health = ledger.health().await;
    assert_eq!(health.status, ledger_actors::HealthStatus::Down, "{health}");
    assert!(
        health.reasons.iter().any(|r| r.contains("log rollback")),
        "{health}"
    );
    // What `ledger health` (read-only, no integrator) sees on connect: the same.
    let reader = Ledger::open_read_only(config(&second, &key)).await.unwrap();
    let seen = reader.health().await;
    assert_eq!(seen.status, ledger_actors::HealthStatus::Down, "{seen}");
    assert!(
        seen.reasons.iter().any(|r| r.contains("log rollback")),
        "{seen}"
    );
    reader.shutdown().await.unwrap();
    let healthy = Ledger::open_read_only(config(&first, &key)).await.unwrap();
    let seen = healthy.health().await;
    assert!(!seen.reasons.iter().any(|r| r.contains("log")), "{seen}");
    healthy.shutdown().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(ledger.checkpoint().await.unwrap(), None, "signed over it");
    assert!(matches!(
        ledger.prove(ack.record.rid).await,
        Err(LedgerError::NotYetLogged(_))
    ));
    ledger.shutdown().await.unwrap();

    // 2. Another tree, longer than the signed one: the second database's log grows under a
    //    copy of the key (its own state), then the original key refuses it by root.
    let other = copy_key(&key);
    let ledger = Ledger::start(config(&second, &other)).await.unwrap();
    let longer = append_and_sign(&ledger, signed + 10).await;
    ledger.shutdown().await.unwrap();
    assert!(longer > signed);
    let ledger = Ledger::start(config(&second, &key)).await.unwrap();
    let why = halted(&ledger).await;
    assert!(
        why.contains(&format!(
            "log rollback: signed size {signed}, database has {longer}"
        )),
        "{why}"
    );
    assert!(why.contains("has root"), "{why}");
    let latest = ledger.checkpoint().await.unwrap().unwrap();
    assert_eq!(
        latest.size, longer,
        "a checkpoint was signed over the other tree"
    );
    ledger.shutdown().await.unwrap();

    // 3. Back on the log that extends what was signed: it integrates and signs again.
    let ledger = Ledger::start(config(&first, &key)).await.unwrap();
    append_and_sign(&ledger, 5).await;
    let grown = ledger
        .await_checkpoint(signed + 5, Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap()
        .size;
    assert!(grown >= signed + 5, "{grown} after {signed}");
    assert_eq!(ledger.integrator_progress().unwrap().halted, None);
    ledger.shutdown().await.unwrap();

    first.teardown().await;
    second.teardown().await;
}
