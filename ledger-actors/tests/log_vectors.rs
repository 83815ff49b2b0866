//! The log's test vectors of `docs/HASHING.md` ("The log"), kept in
//! `docs/log-vectors.json`: the RFC 6962 reference tree, and an AVL log over the record
//! vectors of `docs/hash-vectors.json` with a signed checkpoint and a receipt. The code
//! must reproduce every value; `docs/verify_vectors.py` checks the same file independently.

#![allow(clippy::unwrap_used, reason = "a test fails loudly by design")]

use chrono::{DateTime, Utc};
use ledger_actors::tlog::verify_receipt;
use ledger_entities::LedgerRecord;
use ledger_tlog::merkle::{LeafHashes, inclusion_proof, leaf_hash, tree_root};
use ledger_tlog::note::{Checkpoint, NoteSigner, NoteVerifier};
use ledger_tlog::receipt::Receipt;
use serde_json::{Value, json};

/// The record vectors, hashed.
fn records() -> Vec<LedgerRecord> {
    let raw: Vec<Value> =
        serde_json::from_str(include_str!("../../docs/hash-vectors.json")).unwrap();
    let mut out: Vec<LedgerRecord> = Vec::new();
    for v in raw {
        let r = &v["record"];
        let prev_hash = r["prev_hash"].as_str().map(|s| match s.strip_prefix('@') {
            Some(i) => out[i.parse::<usize>().unwrap()].hash,
            None => s.parse().unwrap(),
        });
        let mut record = LedgerRecord {
            rid: r["rid"].as_str().unwrap().parse().unwrap(),
            anchor_id: r["anchor_id"].as_str().unwrap().parse().unwrap(),
            slot: r["slot"].as_str().unwrap().to_owned(),
            kind: r["kind"].as_str().unwrap().to_owned(),
            ts: r["ts"].as_str().unwrap().parse::<DateTime<Utc>>().unwrap(),
            prev_hash,
            hash: ledger_entities::RecordHash([0; 32]),
            payload: ledger_entities::Payload::from_value(&r["payload"]).unwrap(),
            sig: None,
            producer: r["producer"].as_str().unwrap().to_owned(),
            version: r["version"].as_str().unwrap().to_owned(),
        };
        record.hash = ledger_entities::record::record_hash(&record).unwrap();
        out.push(record);
    }
    out
}

/// What the code computes for the AVL log section of the vectors file.
fn computed() -> Value {
    let records = records();
    let leaves: Vec<[u8; 32]> = records.iter().map(|r| leaf_hash(&r.hash.0)).collect();
    let size = leaves.len() as u64;
    let root = tree_root(size, &LeafHashes(&leaves)).unwrap();
    let signer = NoteSigner::from_seed("example.com/avl-vectors", &[1u8; 32]).unwrap();
    let text = Checkpoint {
        origin: signer.name().to_owned(),
        size,
        root,
    }
    .text();
    let note = signer.sign(&text).unwrap();
    let path = inclusion_proof(1, size, &LeafHashes(&leaves)).unwrap();
    let receipt = Receipt::new(
        serde_json::to_value(&records[1]).unwrap(),
        1,
        size,
        &path,
        note.clone(),
    );
    json!({
        "origin": signer.name(),
        "signer_key": signer.to_key_string().as_str(),
        "verifier_key": signer.verifier().to_key_string(),
        "leaf_hashes": leaves.iter().map(hex::encode).collect::<Vec<_>>(),
        "root": hex::encode(root),
        "checkpoint_text": text,
        "signed_note": note,
        "receipt": receipt,
    })
}

/// The AVL log vectors in `docs/log-vectors.json` are exactly what the code computes, the
/// receipt verifies with the verifier key, and the document prints the root and note.
#[test]
fn avl_log_vectors_match_the_code() {
    let file: Value = serde_json::from_str(include_str!("../../docs/log-vectors.json")).unwrap();
    let want = &file["avl_log"];
    assert_eq!(want, &computed());
    let receipt: Receipt = serde_json::from_value(want["receipt"].clone()).unwrap();
    let key = NoteVerifier::parse(want["verifier_key"].as_str().unwrap()).unwrap();
    verify_receipt(&receipt, &key).unwrap();
    let doc = include_str!("../../docs/HASHING.md");
    assert!(doc.contains(want["root"].as_str().unwrap()));
    assert!(doc.contains(want["verifier_key"].as_str().unwrap()));
}

/// The RFC 6962 section of `docs/log-vectors.json` is what the code computes.
#[test]
fn rfc6962_vectors_match_the_code() {
    let file: Value = serde_json::from_str(include_str!("../../docs/log-vectors.json")).unwrap();
    let v = &file["rfc6962"];
    let leaves: Vec<[u8; 32]> = v["leaves_hex"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| leaf_hash(&hex::decode(l.as_str().unwrap()).unwrap()))
        .collect();
    for (i, root) in v["roots"].as_array().unwrap().iter().enumerate() {
        let got = tree_root(i as u64 + 1, &LeafHashes(&leaves)).unwrap();
        assert_eq!(hex::encode(got), root.as_str().unwrap());
    }
    for case in v["inclusion"].as_array().unwrap() {
        let (m, n) = (
            case["index"].as_u64().unwrap(),
            case["size"].as_u64().unwrap(),
        );
        let path: Vec<String> = inclusion_proof(m, n, &LeafHashes(&leaves))
            .unwrap()
            .iter()
            .map(hex::encode)
            .collect();
        assert_eq!(json!(path), case["path"]);
    }
    for case in v["consistency"].as_array().unwrap() {
        let (m, n) = (case["old"].as_u64().unwrap(), case["new"].as_u64().unwrap());
        let proof: Vec<String> = ledger_tlog::merkle::consistency_proof(m, n, &LeafHashes(&leaves))
            .unwrap()
            .iter()
            .map(hex::encode)
            .collect();
        assert_eq!(json!(proof), case["proof"]);
    }
}
