//! Property tests of the hash: invariant under JSON formatting, sensitive to every field.

#![allow(clippy::unwrap_used, reason = "a test fails loudly by design")]

use chrono::{TimeZone, Utc};
use ledger_entities::record::truncate_to_micros;
use ledger_entities::{LedgerRecord, NewRecord, Payload, RecordHash};
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use uuid::Uuid;

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-(1i64 << 53) + 1..(1i64 << 53)).prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        "[^\u{0}]{0,12}".prop_map(Value::String),
    ]
}

fn payload() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(("[^\u{0}]{0,8}", inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn record(payload: Value, prev: Option<RecordHash>, micros: i64) -> LedgerRecord {
    LedgerRecord::seal(
        NewRecord::new(Uuid::from_u128(7), "slot", "kind", payload, "producer"),
        Uuid::from_u128(42),
        Utc.timestamp_micros(micros).unwrap(),
        prev,
    )
    .unwrap()
}

/// Writes `v` as JSON text with object members in reverse order and extra whitespace.
fn reformat(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let members: Vec<String> = m
                .iter()
                .rev()
                .map(|(k, v)| {
                    format!(
                        "\n  {} :\t{}",
                        serde_json::to_string(k).unwrap(),
                        reformat(v)
                    )
                })
                .collect();
            format!("{{ {} }}", members.join(" ,"))
        }
        Value::Array(a) => format!(
            "[ {} ]",
            a.iter().map(reformat).collect::<Vec<_>>().join(" , ")
        ),
        other => serde_json::to_string(other).unwrap(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Reordering keys and changing whitespace in the payload text leaves the hash unchanged.
    #[test]
    fn hash_ignores_key_order_and_whitespace(p in payload(), micros in -1_000_000_000_000_000i64..4_000_000_000_000_000) {
        let reparsed: Value = ledger_entities::validate::parse_payload(&reformat(&p)).unwrap();
        prop_assert_eq!(record(p, None, micros).hash, record(reparsed, None, micros).hash);
    }

    /// Changing any hashed field changes the hash; changing the signature does not.
    #[test]
    fn hash_changes_with_every_hashed_field(p in payload(), micros in 0i64..4_000_000_000_000_000, which in 0usize..9) {
        let base = record(p.clone(), Some(RecordHash::from_bytes([0xab; 32])), micros);
        let mut other = base.clone();
        match which {
            0 => other.rid = Uuid::from_u128(43),
            1 => other.anchor_id = Uuid::from_u128(8),
            2 => other.slot.push('x'),
            3 => other.kind.push('x'),
            4 => other.ts = base.ts + chrono::Duration::microseconds(1),
            5 => other.prev_hash = Some(RecordHash::from_bytes([0xcd; 32])),
            6 => other.prev_hash = None,
            7 => other.payload = Payload::from_value(&json!([p])).unwrap(),
            _ => other.producer.push('x'),
        }
        let rehashed = ledger_entities::record::record_hash(&other).unwrap();
        prop_assert_ne!(&rehashed, &base.hash);
        other = base.clone();
        other.sig = Some(vec![1, 2, 3]);
        prop_assert_eq!(ledger_entities::record::record_hash(&other).unwrap(), base.hash);
    }

    /// The hash fed part by part (`record_hash`) is SHA-256 of the preimage bytes as
    /// `preimage` lays them out (docs/HASHING.md), with or without a predecessor.
    #[test]
    fn record_hash_is_sha256_of_the_preimage(p in payload(), micros in 0i64..4_000_000_000_000_000, genesis: bool) {
        let prev = (!genesis).then(|| RecordHash::from_bytes([0x5a; 32]));
        let r = record(p, prev, micros);
        let bytes = ledger_entities::record::preimage(&r).unwrap();
        prop_assert_eq!(ledger_entities::record::record_hash(&r).unwrap(), RecordHash::digest(&bytes));
    }

    /// Nanoseconds are truncated before hashing: the hash survives PostgreSQL's µs storage.
    #[test]
    fn nanoseconds_never_reach_the_hash(secs in 0i64..4_000_000_000, nanos in 0u32..1_000_000_000) {
        let t = Utc.timestamp_opt(secs, nanos).unwrap();
        let r = LedgerRecord::seal(
            NewRecord::new(Uuid::nil(), "s", "k", json!(1), "p"), Uuid::nil(), t, None).unwrap();
        prop_assert_eq!(r.ts, truncate_to_micros(t));
        prop_assert_eq!(r.ts.timestamp_subsec_nanos() % 1000, 0);
        prop_assert!(r.hash_matches().unwrap());
    }
}
