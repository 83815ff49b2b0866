//! The transparency log on the memory backend, through the public API: every record gets
//! one leaf index in commit order, checkpoints are signed and consistent, receipts verify
//! offline and detect an altered record.

#![allow(clippy::unwrap_used, reason = "a test fails loudly by design")]

use std::collections::HashSet;
use std::time::Duration;

use futures::future::join_all;
use ledger_actors::tlog::verify_receipt;
use ledger_actors::{Ledger, LedgerConfig, LedgerError};
use ledger_entities::NewRecord;
use ledger_tlog::merkle::{parse_hash, verify_consistency};
use ledger_tlog::note::{Checkpoint, NoteSigner};
use serde_json::json;
use uuid::Uuid;

/// A signer key file (mode 0600) in a fresh temporary directory.
fn key_file(name: &str) -> (std::path::PathBuf, NoteSigner) {
    let dir = std::env::temp_dir().join(format!("avl-tlog-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let signer = NoteSigner::from_seed(name, &rand::random::<[u8; 32]>()).unwrap();
    let path = dir.join("checkpoint.key");
    std::fs::write(&path, signer.to_key_string().as_bytes()).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    (path, signer)
}

fn config(key: Option<std::path::PathBuf>) -> LedgerConfig {
    LedgerConfig {
        workers: 2,
        checkpoint_interval: Duration::from_millis(100),
        checkpoint_key: key,
        ..LedgerConfig::default()
    }
}

fn rec(anchor: Uuid, i: u64) -> NewRecord {
    NewRecord::new(anchor, "slot", "event", json!({ "i": i }), "tests")
}

/// 20 anchors × 25 appends: every record is logged exactly once, each record's predecessor
/// has a smaller leaf index, every checkpoint is signed, and each checkpoint is consistent
/// with the previous one; a receipt verifies offline and fails once its record is altered.
#[actix_rt::test]
async fn records_are_logged_once_and_receipts_verify() {
    let (path, signer) = key_file("example.com/avl-memory-test");
    let ledger = Ledger::start(config(Some(path))).await.unwrap();
    let anchors: Vec<Uuid> = (0..20).map(|_| Uuid::now_v7()).collect();
    let mut acked = Vec::new();
    for i in 0..25 {
        let acks = join_all(anchors.iter().map(|a| ledger.append(rec(*a, i)))).await;
        acked.extend(acks.into_iter().map(|a| a.unwrap().record));
    }
    let latest = ledger
        .await_checkpoint(acked.len() as u64, Duration::from_secs(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(latest.size, 500);

    let log = ledger.log_store().unwrap();
    let leaves: Vec<(u64, Uuid)> = log
        .leaves(0, 10_000)
        .await
        .unwrap()
        .into_iter()
        .map(|l| (l.index, l.rid))
        .collect();
    assert_eq!(leaves.len(), 500);
    let rids: HashSet<Uuid> = leaves.iter().map(|(_, r)| *r).collect();
    assert_eq!(rids.len(), 500, "no record logged twice");
    for (i, (index, _)) in leaves.iter().enumerate() {
        assert_eq!(*index, i as u64, "no gap");
    }
    for r in &acked {
        let me = log.leaf_index(r.rid).await.unwrap().unwrap();
        if let Some(prev) = &r.prev_hash {
            let p = acked.iter().find(|x| &x.hash == prev).unwrap();
            assert!(log.leaf_index(p.rid).await.unwrap().unwrap() < me);
        }
    }

    let verifier = signer.verifier();
    let checkpoints = log.checkpoints().await.unwrap();
    assert!(!checkpoints.is_empty());
    let mut previous: Option<(u64, [u8; 32])> = None;
    for c in &checkpoints {
        let text = verifier.open(c.note.as_deref().unwrap()).unwrap();
        let parsed = Checkpoint::parse(text).unwrap();
        assert_eq!((parsed.size, parsed.root), (c.size, c.root));
        if let Some((size, root)) = previous {
            let p = ledger.prove_consistency(size, Some(c.size)).await.unwrap();
            let proof: Vec<[u8; 32]> = p.proof.iter().map(|h| parse_hash(h).unwrap()).collect();
            verify_consistency(size, c.size, &root, &c.root, &proof).unwrap();
            assert_eq!(c.range_start, size);
        }
        previous = Some((c.size, c.root));
    }

    let receipt = ledger.prove(acked[137].rid).await.unwrap();
    let ok = verify_receipt(&receipt, &verifier).unwrap();
    assert_eq!(ok.checkpoint.size, 500);
    let mut altered = receipt.clone();
    altered.record["payload"] = json!({ "i": 999 });
    assert!(matches!(
        verify_receipt(&altered, &verifier),
        Err(LedgerError::Log(_))
    ));
    let other = NoteSigner::from_seed("example.com/avl-memory-test", &[9; 32]).unwrap();
    assert!(verify_receipt(&receipt, &other.verifier()).is_err());
    ledger.shutdown().await.unwrap();
}

/// An append with receipt answers once a checkpoint covers the record, and the receipt
/// verifies offline.
#[actix_rt::test]
async fn append_with_receipt_waits_for_a_covering_checkpoint() {
    let (path, signer) = key_file("example.com/avl-receipt-test");
    let ledger = Ledger::start(config(Some(path))).await.unwrap();
    let anchor = Uuid::now_v7();
    ledger.append(rec(anchor, 0)).await.unwrap();
    let (ack, receipt) = ledger
        .append_with_receipt(rec(anchor, 1), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(receipt.record["rid"], json!(ack.record.rid));
    assert_eq!(receipt.leaf_index, 1);
    verify_receipt(&receipt, &signer.verifier()).unwrap();
    ledger.shutdown().await.unwrap();
}

/// A key file readable by others is refused at start, and the error does not show the key.
#[actix_rt::test]
async fn a_world_readable_key_is_refused() {
    let (path, signer) = key_file("example.com/avl-perm-test");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Ledger::start(config(Some(path))).await.err().unwrap();
        let text = format!("{err} {err:?}");
        assert!(matches!(err, LedgerError::Config(_)), "{text}");
        let secret = signer.to_key_string();
        // `PRIVATE+KEY+<name>+<hash>+<base64 key>`: the base64 itself may contain '+', so take
        // everything after the fourth '+' (splitting at the last '+' gave a fragment of a few
        // characters that a message could contain by chance).
        let key_b64 = secret.splitn(5, '+').nth(4).unwrap();
        assert!(key_b64.len() > 40, "{key_b64}");
        assert!(!text.contains(key_b64), "{text}");
    }
}

/// Strict receipts: the verifier refuses what a verifier written from docs/HASHING.md
/// refuses, even where the hash would still match — a payload number rewritten with digits a
/// double cannot hold, a record field in another form, a note signed by the log's key whose
/// origin names another log — and accepts the honest receipt (and another log's name only
/// when it is asked for).
#[actix_rt::test]
async fn forged_receipts_are_refused_even_when_the_hash_matches() {
    use ledger_actors::tlog::{verify_receipt_for, verify_receipt_text};
    let (path, signer) = key_file("example.com/avl-strict-test");
    let ledger = Ledger::start(config(Some(path))).await.unwrap();
    let (ack, receipt) = ledger
        .append_with_receipt(
            NewRecord::new(Uuid::now_v7(), "s", "k", json!({ "n": 30 }), "p"),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    ledger.shutdown().await.unwrap();
    let key = signer.verifier();
    let text = serde_json::to_string_pretty(&receipt).unwrap();
    let (_, ok) = verify_receipt_text(&text, &key, None).unwrap();
    assert_eq!(ok.record_hash, ack.record.hash.to_hex());

    // 1. `30` → `30.00000000000000000001`: the same double, so the parsed receipt still
    //    verifies; its text does not.
    let forged = text.replace("\"n\": 30", "\"n\": 30.00000000000000000001");
    assert_ne!(forged, text);
    let lossy: ledger_tlog::receipt::Receipt = serde_json::from_str(&forged).unwrap();
    assert!(
        verify_receipt(&lossy, &key).is_ok(),
        "the double hides the digits"
    );
    let refused = verify_receipt_text(&forged, &key, None).unwrap_err();
    assert!(matches!(refused, LedgerError::Invalid(_)), "{refused}");
    assert!(
        refused.to_string().contains("/record/payload/n"),
        "{refused}"
    );

    // 2. The record's `ts` in another RFC 3339 form of the same instant.
    let ts = receipt.record["ts"].as_str().unwrap().to_owned();
    assert!(ts.ends_with('Z'), "{ts}");
    let other_form = text.replace(&ts, &ts.replace('Z', "+00:00"));
    let refused = verify_receipt_text(&other_form, &key, None).unwrap_err();
    assert!(refused.to_string().contains("\"ts\""), "{refused}");

    // 3. The same tree signed by the log's key under another log's name.
    let body = key.open(&receipt.checkpoint).unwrap();
    let foreign_body = body.replacen("example.com/avl-strict-test", "example.org/another-log", 1);
    let foreign = ledger_tlog::receipt::Receipt {
        checkpoint: signer.sign(&foreign_body).unwrap(),
        ..receipt.clone()
    };
    let refused = verify_receipt(&foreign, &key).unwrap_err();
    assert!(
        refused.to_string().contains("example.org/another-log"),
        "{refused}"
    );
    verify_receipt_for(&foreign, &key, Some("example.org/another-log")).unwrap();
    assert!(verify_receipt_for(&receipt, &key, Some("example.org/another-log")).is_err());
}
