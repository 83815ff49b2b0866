//! Witnesses (C2SP tlog-witness, tlog-cosignature) against a real PostgreSQL and the test
//! witness over HTTP: the ledger's checkpoints get cosigned and the cosignatures stored;
//! the latest checkpoint and receipts carry them; a quorum check refuses missing and forged
//! cosignatures; a restarted ledger learns the witness's size from its 409; a dead witness
//! stops neither appends nor checkpoints; the test witness answers per the spec (200, 409
//! with its size, 422, 403, 404); and its cosignatures verify with an implementation
//! written independently from the spec (scripts/verify_cosignature.py, Python
//! `cryptography`).

#![allow(clippy::unwrap_used, reason = "a test fails loudly by design")]

mod common;

use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{TestContext, key_file};
use integration_tests::witness::{RunningWitness, spawn};
use ledger_actors::config::WitnessConfig;
use ledger_actors::tlog::{open_log, verify_receipt_text};
use ledger_actors::{Backend, Dsn, Ledger, LedgerConfig};
use ledger_entities::NewRecord;
use ledger_tlog::Error as TlogError;
use ledger_tlog::cosig::{CosignatureSigner, CosignatureVerifier, check_quorum};
use ledger_tlog::merkle::{LeafHashes, consistency_proof, leaf_hash, tree_root};
use ledger_tlog::note::{Checkpoint, NoteSigner};
use ledger_tlog::witness::{AddCheckpoint, Witness};
use serde_json::json;
use uuid::Uuid;

const ORIGIN: &str = "example.com/avl-witness-test";
/// Longest wait for a cosignature to appear (a bound against hanging, not a timed assertion).
const DEADLINE: Duration = Duration::from_secs(60);

fn log_signer(seed: u8) -> NoteSigner {
    NoteSigner::from_seed(ORIGIN, &[seed; 32]).unwrap()
}

fn witness(name: &str, seed: u8, log: &NoteSigner) -> RunningWitness {
    let signer = CosignatureSigner::from_seed(name, &[seed; 32]).unwrap();
    spawn(
        Witness::new(signer, vec![log.verifier()]),
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap()
}

fn config(ctx: &TestContext, log: &NoteSigner, witnesses: Vec<WitnessConfig>) -> LedgerConfig {
    LedgerConfig {
        backend: Backend::Postgres,
        dsn: Some(Dsn::parse(&ctx.dsn).unwrap()),
        pool_size: 4,
        timeout: Duration::from_secs(10),
        checkpoint_interval: Duration::from_millis(200),
        checkpoint_key: Some(key_file(log)),
        witnesses,
        ..LedgerConfig::default()
    }
}

fn rec(anchor: Uuid, i: u64) -> NewRecord {
    NewRecord::new(anchor, "slot", "event", json!({ "i": i }), "tests")
}

async fn append(ledger: &Ledger, anchor: Uuid, from: u64, n: u64) -> Vec<Uuid> {
    let mut rids = Vec::new();
    for i in from..from + n {
        rids.push(ledger.append(rec(anchor, i)).await.unwrap().record.rid);
    }
    rids
}

/// Waits until the latest stored checkpoint has `size` leaves and a valid cosignature by
/// `key`; returns its note.
async fn cosigned(config: &LedgerConfig, size: u64, key: &CosignatureVerifier) -> String {
    let log = open_log(config).unwrap();
    let start = Instant::now();
    loop {
        if let Some(c) = log.latest_checkpoint().await.unwrap()
            && c.size == size
            && let Some(note) = c.note
            && key.verify_note(&note).unwrap().is_some()
        {
            return note;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "no cosigned checkpoint of size {size}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs the independent Python verifier on `note`; returns (exit code, output).
fn python_verify(note: &str, witness: &CosignatureVerifier, log: &NoteSigner) -> (i32, String) {
    let dir = std::env::temp_dir().join(format!("avl-witness-py-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("note"), note).unwrap();
    std::fs::write(dir.join("w.pub"), format!("{}\n", witness.to_key_string())).unwrap();
    std::fs::write(
        dir.join("log.pub"),
        format!("{}\n", log.verifier().to_key_string()),
    )
    .unwrap();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scripts/verify_cosignature.py"
    );
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(dir.join("note"))
        .arg(dir.join("w.pub"))
        .arg(dir.join("log.pub"))
        .output()
        .expect("python3 runs (with the `cryptography` package)");
    let _ = std::fs::remove_dir_all(&dir);
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Flips one bit inside the signature of `name`'s cosignature line.
fn forge(note: &str, name: &str) -> String {
    let prefix = format!("\u{2014} {name} ");
    note.lines()
        .map(|l| match l.strip_prefix(&prefix) {
            Some(b64) => {
                let mut blob = base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .unwrap();
                blob[40] ^= 1;
                format!(
                    "{prefix}{}",
                    base64::engine::general_purpose::STANDARD.encode(blob)
                )
            }
            None => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// See the module doc: cosigned checkpoints, receipts, quorum, restart, Python check.
#[actix_rt::test]
async fn checkpoints_are_cosigned_stored_and_carried_by_receipts() {
    let ctx = TestContext::new("witness_cosign").await;
    let log = log_signer(1);
    let w = witness("witness.example/w1", 11, &log);
    let w_key = w.witness.lock().unwrap().signer().verifier();
    let absent = CosignatureSigner::from_seed("witness.example/absent", &[12; 32])
        .unwrap()
        .verifier();
    let witnesses = vec![WitnessConfig::parse(&w.url(), &w_key.to_key_string()).unwrap()];
    let config = config(&ctx, &log, witnesses.clone());

    let ledger = Ledger::start(config.clone()).await.unwrap();
    let anchor = Uuid::now_v7();
    let rids = append(&ledger, anchor, 0, 20).await;
    let note = cosigned(&config, 20, &w_key).await;
    assert_eq!(w.witness.lock().unwrap().latest(ORIGIN).unwrap().0, 20);
    // The log's own signature still verifies on the cosigned note, byte for byte first.
    let text = log.verifier().open(&note).unwrap().to_owned();
    assert!(note.starts_with(&log.sign(&text).unwrap()));

    // A receipt carries the cosigned note; it verifies, with the quorum.
    let receipt = ledger.prove(rids[5]).await.unwrap();
    assert_eq!(receipt.checkpoint, note);
    let receipt_text = serde_json::to_string(&receipt).unwrap();
    let (r, _) = verify_receipt_text(&receipt_text, &log.verifier(), None).unwrap();
    assert_eq!(
        check_quorum(&r.checkpoint, std::slice::from_ref(&w_key), 1),
        Ok(1)
    );
    // A quorum of two with a witness that never cosigned: refused, naming it.
    assert_eq!(
        check_quorum(&r.checkpoint, &[w_key.clone(), absent.clone()], 2),
        Err(TlogError::QuorumNotMet {
            need: 2,
            have: 1,
            missing: vec!["witness.example/absent".into()]
        })
    );
    // A forged cosignature: refused as invalid, not skipped.
    let forged = forge(&r.checkpoint, w_key.name());
    assert!(matches!(
        check_quorum(&forged, std::slice::from_ref(&w_key), 1),
        Err(TlogError::Invalid(_))
    ));

    // The independent implementation accepts the cosignature and refuses the forgery.
    let (code, out) = python_verify(&note, &w_key, &log);
    assert_eq!(code, 0, "{out}");
    let (code, out) = python_verify(&forged, &w_key, &log);
    assert_eq!(code, 1, "{out}");

    // The log grows: the witness checks the consistency proof from 20 and cosigns 35.
    append(&ledger, anchor, 20, 15).await;
    cosigned(&config, 35, &w_key).await;
    assert_eq!(w.witness.lock().unwrap().latest(ORIGIN).unwrap().0, 35);
    ledger.shutdown().await.unwrap();

    // A restarted ledger starts from old 0, learns 35 from the witness's 409, goes on.
    let ledger = Ledger::start(config.clone()).await.unwrap();
    append(&ledger, anchor, 35, 10).await;
    let note = cosigned(&config, 45, &w_key).await;
    assert_eq!(w.witness.lock().unwrap().latest(ORIGIN).unwrap().0, 45);
    ledger.shutdown().await.unwrap();
    let (code, out) = python_verify(&note, &w_key, &log);
    assert_eq!(code, 0, "{out}");

    // One stored cosignature per cosigned checkpoint, each naming the witness's key.
    let rows = sea_orm::ConnectionTrait::query_all_raw(
        &ctx.db,
        sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT witness, count(*) AS n FROM ledger_cosignatures GROUP BY witness",
        ),
    )
    .await
    .unwrap();
    assert_eq!(rows.len(), 1);
    let stored_key: String = rows[0].try_get("", "witness").unwrap();
    assert_eq!(stored_key, w_key.to_key_string());
    let n: i64 = rows[0].try_get("", "n").unwrap();
    assert!(n >= 3, "20, 35 and 45 were cosigned ({n} rows)");
    w.stop();
    ctx.teardown().await;
}

/// A configured witness with nothing listening: appends and checkpoints go on, receipts
/// verify (without cosignatures), and the quorum check says which witness is missing.
#[actix_rt::test]
async fn a_dead_witness_stops_neither_appends_nor_checkpoints() {
    let ctx = TestContext::new("witness_dead").await;
    let log = log_signer(2);
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dead = CosignatureSigner::from_seed("witness.example/dead", &[21; 32])
        .unwrap()
        .verifier();
    let witnesses = vec![
        WitnessConfig::parse(&format!("http://127.0.0.1:{port}"), &dead.to_key_string()).unwrap(),
    ];
    let config = config(&ctx, &log, witnesses);
    let ledger = Ledger::start(config.clone()).await.unwrap();
    let anchors: Vec<Uuid> = (0..4).map(|_| Uuid::now_v7()).collect();
    let mut rids = Vec::new();
    for round in 0..3 {
        for a in &anchors {
            rids.extend(append(&ledger, *a, round * 10, 10).await);
        }
        ledger
            .await_checkpoint(rids.len() as u64, DEADLINE)
            .await
            .unwrap();
    }
    assert_eq!(rids.len(), 120);
    let receipt = ledger.prove(rids[100]).await.unwrap();
    let text = serde_json::to_string(&receipt).unwrap();
    let (r, v) = verify_receipt_text(&text, &log.verifier(), None).unwrap();
    assert_eq!(v.checkpoint.size, 120);
    assert_eq!(
        check_quorum(&r.checkpoint, std::slice::from_ref(&dead), 1),
        Err(TlogError::QuorumNotMet {
            need: 1,
            have: 0,
            missing: vec!["witness.example/dead".into()]
        })
    );
    ledger.shutdown().await.unwrap();
    ctx.teardown().await;
}

/// The test witness over HTTP, per C2SP tlog-witness: 200 with a cosignature line, 409 with
/// `text/x.tlog.size` and its size for a stale `old`, 422 for an inconsistent checkpoint
/// (a forked tree under the same key) or a bad proof, 403 for a foreign key, 404 for an
/// unknown log.
#[tokio::test]
async fn test_witness_answers_per_the_spec() {
    let log = log_signer(3);
    let w = witness("witness.example/http", 31, &log);
    let w_key = w.witness.lock().unwrap().signer().verifier();
    let leaves: Vec<[u8; 32]> = (0..300u32).map(|i| leaf_hash(&i.to_be_bytes())).collect();
    let mut forked = leaves.clone();
    forked[7] = leaf_hash(b"rewritten");
    let note = |leaves: &[[u8; 32]], size: u64, key: &NoteSigner| {
        let text = Checkpoint {
            origin: key.name().into(),
            size,
            root: tree_root(size, &LeafHashes(leaves)).unwrap(),
        }
        .text();
        key.sign(&text).unwrap()
    };
    let body = |leaves: &[[u8; 32]], old: u64, size: u64, key: &NoteSigner| {
        AddCheckpoint {
            old,
            proof: if old == 0 {
                vec![]
            } else {
                consistency_proof(old, size, &LeafHashes(leaves)).unwrap()
            },
            note: note(leaves, size, key),
        }
        .to_body()
    };
    let client = reqwest::Client::new();
    let url = format!("{}/add-checkpoint", w.url());
    let post = |b: String| {
        let req = client.post(&url).body(b);
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let ctype = resp
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_owned());
            (status, ctype, resp.text().await.unwrap())
        }
    };

    let (status, _, line) = post(body(&leaves, 0, 100, &log)).await;
    assert_eq!(status, 200, "{line}");
    let cosigned = format!("{}{line}", note(&leaves, 100, &log));
    assert!(w_key.verify_note(&cosigned).unwrap().is_some());
    let (code, out) = python_verify(&cosigned, &w_key, &log);
    assert_eq!(code, 0, "{out}");

    assert_eq!(post(body(&leaves, 100, 257, &log)).await.0, 200);
    let (status, ctype, size) = post(body(&leaves, 100, 300, &log)).await;
    assert_eq!(
        (status, ctype.as_deref(), size.as_str()),
        (409, Some("text/x.tlog.size"), "257\n")
    );
    let (status, _, msg) = post(body(&forked, 257, 300, &log)).await;
    assert_eq!(status, 422, "an inconsistent checkpoint: {msg}");
    let mut bad = AddCheckpoint::parse(&body(&leaves, 257, 300, &log)).unwrap();
    bad.proof.pop();
    assert_eq!(post(bad.to_body()).await.0, 422);
    assert_eq!(w.witness.lock().unwrap().latest(ORIGIN).unwrap().0, 257);
    let impostor = NoteSigner::from_seed(ORIGIN, &[99; 32]).unwrap();
    assert_eq!(post(body(&leaves, 257, 300, &impostor)).await.0, 403);
    let stranger = NoteSigner::from_seed("other.example/log", &[98; 32]).unwrap();
    assert_eq!(post(body(&leaves, 0, 10, &stranger)).await.0, 404);
    assert_eq!(post("garbage".into()).await.0, 400);
    assert_eq!(post(body(&leaves, 257, 300, &log)).await.0, 200);
    w.stop();
}

/// The memory backend publishes too: its latest checkpoint and receipts carry the witness's
/// cosignature (no database involved).
#[actix_rt::test]
async fn memory_ledger_checkpoints_are_cosigned_too() {
    let log = log_signer(4);
    let w = witness("witness.example/mem", 41, &log);
    let w_key = w.witness.lock().unwrap().signer().verifier();
    let config = LedgerConfig {
        checkpoint_interval: Duration::from_millis(100),
        checkpoint_key: Some(key_file(&log)),
        witnesses: vec![WitnessConfig::parse(&w.url(), &w_key.to_key_string()).unwrap()],
        ..LedgerConfig::default()
    };
    let ledger = Ledger::start(config).await.unwrap();
    let rids = append(&ledger, Uuid::now_v7(), 0, 12).await;
    let start = Instant::now();
    let note = loop {
        if let Some(c) = ledger.checkpoint().await.unwrap()
            && c.size == 12
            && let Some(n) = c.note
            && w_key.verify_note(&n).unwrap().is_some()
        {
            break n;
        }
        assert!(start.elapsed() < DEADLINE, "never cosigned");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let receipt = ledger.prove(rids[11]).await.unwrap();
    assert_eq!(receipt.checkpoint, note);
    assert_eq!(check_quorum(&note, std::slice::from_ref(&w_key), 1), Ok(1));
    ledger.shutdown().await.unwrap();
    w.stop();
}
