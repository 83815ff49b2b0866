//! The test vectors of `docs/HASHING.md` (kept in `docs/hash-vectors.json`).

#![allow(clippy::unwrap_used, reason = "a test fails loudly by design")]

use chrono::{DateTime, Utc};
use ledger_entities::{LedgerRecord, record};
use serde_json::Value;

struct Vector {
    name: String,
    record: LedgerRecord,
    canonical_payload: String,
    preimage_hex: String,
    hash: String,
}

/// Reads the vectors; `"prev_hash": "@N"` names the hash of vector N.
fn vectors() -> Vec<Vector> {
    let text = include_str!("../../docs/hash-vectors.json");
    let raw: Vec<Value> = serde_json::from_str(text).expect("hash-vectors.json parses");
    let mut out: Vec<Vector> = Vec::new();
    for v in raw {
        let r = &v["record"];
        let prev_hash = match r["prev_hash"].as_str() {
            None => None,
            Some(s) if s.starts_with('@') => {
                let i: usize = s[1..].parse().expect("@index");
                Some(out[i].record.hash)
            }
            Some(s) => Some(s.parse().unwrap()),
        };
        let mut record = LedgerRecord {
            rid: r["rid"].as_str().unwrap().parse().unwrap(),
            anchor_id: r["anchor_id"].as_str().unwrap().parse().unwrap(),
            slot: r["slot"].as_str().unwrap().to_owned(),
            kind: r["kind"].as_str().unwrap().to_owned(),
            ts: r["ts"].as_str().unwrap().parse::<DateTime<Utc>>().unwrap(),
            prev_hash,
            hash: ledger_entities::RecordHash::from_bytes([0; 32]),
            payload: ledger_entities::Payload::from_value(&r["payload"]).unwrap(),
            sig: None,
            producer: r["producer"].as_str().unwrap().to_owned(),
            version: r["version"].as_str().unwrap().to_owned(),
        };
        record.hash = record::record_hash(&record).unwrap();
        out.push(Vector {
            name: v["name"].as_str().unwrap().to_owned(),
            canonical_payload: record.payload.as_str().to_owned(),
            preimage_hex: hex::encode(record::preimage(&record).unwrap()),
            hash: record.hash.to_string(),
            record,
        });
    }
    out
}

/// The expected values as written in docs/HASHING.md, one block per vector.
fn expected_in_doc() -> String {
    include_str!("../../docs/HASHING.md").to_owned()
}

/// Every vector's canonical payload, preimage and hash appear verbatim in docs/HASHING.md,
/// so the document and the code cannot drift apart.
#[test]
fn hashing_md_states_the_vectors_the_code_computes() {
    let doc = expected_in_doc();
    let vectors = vectors();
    assert!(vectors.len() >= 6);
    for v in &vectors {
        assert!(
            doc.contains(&format!("hash: {}", v.hash)),
            "HASHING.md lacks the hash of vector {:?}: {}\npreimage {}\njcs {}",
            v.name,
            v.hash,
            v.preimage_hex,
            v.canonical_payload
        );
        assert!(
            doc.contains(&format!("jcs: {}", v.canonical_payload)),
            "HASHING.md lacks the canonical payload of vector {:?}: {}",
            v.name,
            v.canonical_payload
        );
        assert!(
            doc.contains(&v.preimage_hex),
            "HASHING.md lacks the preimage of vector {:?}: {}",
            v.name,
            v.preimage_hex
        );
    }
}

/// The specific JCS behaviours the vectors exist for.
#[test]
fn canonical_forms_follow_rfc_8785() {
    let v = vectors();
    // UTF-16 order puts U+1F600 (D83D DE00) before U+E000; UTF-8 order would not.
    assert_eq!(
        v[2].canonical_payload,
        "{\"a\":1,\"é\":\"e-acute\",\"😀\":\"emoji\",\"\u{e000}\":\"private use\"}"
    );
    assert_eq!(
        v[3].canonical_payload,
        "{\"a\":0.1,\"b\":1,\"c\":1e+21,\"d\":1e-7,\"e\":0,\"f\":9007199254740991,\"g\":-9007199254740991}"
    );
    assert_eq!(
        v[4].canonical_payload,
        "[[1,[2,[3,[]]]],{\"y\":{},\"z\":[true,false,null]},[]]"
    );
    // The second vector links to the first.
    assert_eq!(v[1].record.prev_hash, Some(v[0].record.hash));
    // Pre-1970 timestamps are negative microseconds, two's complement big-endian.
    assert_eq!(v[6].record.ts_micros(), -1);
}

/// A recomputed hash matches, and the record's sig is not hashed.
#[test]
fn sig_is_not_hashed_and_hash_matches() {
    for mut v in vectors() {
        assert!(v.record.hash_matches().unwrap());
        v.record.sig = Some(vec![1, 2, 3]);
        assert!(v.record.hash_matches().unwrap(), "{}", v.name);
    }
}
