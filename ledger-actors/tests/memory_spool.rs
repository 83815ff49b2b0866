//! The memory backend with a `spool_dir` (the rollback window of docs/OPERATIONS.md): each
//! record is spooled before it is acknowledged, and a restarted ledger reloads the spool and
//! continues every chain.

#![allow(clippy::unwrap_used, reason = "a test fails loudly by design")]

use std::io::Write as _;
use std::path::{Path, PathBuf};

use ledger_actors::{Durability, Ledger, LedgerConfig, LedgerError};
use ledger_entities::NewRecord;
use serde_json::json;
use uuid::Uuid;

fn config(dir: &Path) -> LedgerConfig {
    LedgerConfig {
        workers: 2,
        spool_dir: Some(dir.to_path_buf()),
        checkpoint_interval: std::time::Duration::ZERO,
        ..LedgerConfig::default()
    }
}

fn rec(anchor: Uuid, i: u64) -> NewRecord {
    NewRecord::new(anchor, "slot", "event", json!({ "i": i }), "tests")
}

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("avl-memory-spool-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Records acknowledged `Spooled` survive a restart: the next ledger on the same
/// `spool_dir` has them all and links new records onto the reloaded heads; a second ledger
/// on the same `spool_dir` while the first runs is refused (`SpoolLocked`).
#[actix_rt::test]
async fn spooled_records_survive_a_restart_and_chains_continue() {
    let dir = temp_dir();
    let anchors = [Uuid::new_v4(), Uuid::new_v4()];
    let first = Ledger::start(config(&dir)).await.unwrap();
    let mut heads = Vec::new();
    for (k, a) in anchors.iter().enumerate() {
        let mut last = None;
        for i in 0..10 {
            let ack = first.append(rec(*a, i + 100 * k as u64)).await.unwrap();
            assert_eq!(ack.durability, Durability::Spooled);
            last = Some(ack.record.hash);
        }
        heads.push(last.unwrap());
    }
    assert!(matches!(
        Ledger::start(config(&dir)).await,
        Err(LedgerError::SpoolLocked(_))
    ));
    first.shutdown().await.unwrap();

    let second = Ledger::start(config(&dir)).await.unwrap();
    assert_eq!(second.store().count().await.unwrap(), 20);
    for (a, head) in anchors.iter().zip(&heads) {
        let ack = second.append(rec(*a, 999)).await.unwrap();
        assert_eq!(ack.record.prev_hash, Some(*head), "the chain continues");
    }
    let summary = second.verify_all().await.unwrap();
    assert!(summary.breaks.is_empty());
    assert_eq!(summary.records, 22);
    second.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A spool with a torn last frame (a crash mid-write) reloads the complete records before
/// it, keeps the damaged file aside, and rewrites the spool so that records appended after
/// the restart are read back at the next one.
#[actix_rt::test]
async fn a_torn_spool_tail_is_kept_aside_and_later_records_survive() {
    let dir = temp_dir();
    let anchor = Uuid::new_v4();
    let first = Ledger::start(config(&dir)).await.unwrap();
    for i in 0..5 {
        first.append(rec(anchor, i)).await.unwrap();
    }
    first.shutdown().await.unwrap();
    let mut spool = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join("avl-outage.spool"))
        .unwrap();
    spool.write_all(&[0, 0, 1, 0, 9, 9]).unwrap();
    drop(spool);

    let second = Ledger::start(config(&dir)).await.unwrap();
    assert_eq!(second.store().count().await.unwrap(), 5);
    for i in 5..8 {
        second.append(rec(anchor, i)).await.unwrap();
    }
    second.shutdown().await.unwrap();
    let aside = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains(".corrupt-")
        })
        .count();
    assert_eq!(aside, 1, "the damaged spool is kept aside");

    let third = Ledger::start(config(&dir)).await.unwrap();
    assert_eq!(third.store().count().await.unwrap(), 8);
    assert!(third.verify_all().await.unwrap().breaks.is_empty());
    third.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
