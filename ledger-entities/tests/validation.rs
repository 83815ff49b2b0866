//! Validation: every kind of bad input gets its own typed error naming the field.

#![allow(clippy::unwrap_used, reason = "a test fails loudly by design")]

use ledger_entities::validate::{
    Limits, MAX_LABEL_BYTES, MAX_SIG_BYTES, parse_payload, validate_new_record,
};
use ledger_entities::{Error, NewRecord, RecordHash};
use serde_json::json;
use uuid::Uuid;

fn rec(payload: serde_json::Value) -> NewRecord {
    NewRecord::new(Uuid::nil(), "slot", "kind", payload, "producer")
}

fn check(r: &NewRecord) -> Result<Vec<u8>, Error> {
    validate_new_record(r, &Limits::default()).map(|p| p.as_bytes().to_vec())
}

/// A NUL in any label, payload string or payload key is refused, naming where.
#[test]
fn nul_characters_are_refused_everywhere() {
    let mut r = rec(json!({}));
    r.slot = "a\0b".into();
    assert_eq!(
        check(&r),
        Err(Error::NulCharacter {
            field: "slot".into()
        })
    );
    let mut r = rec(json!({}));
    r.kind = "\0".into();
    assert_eq!(
        check(&r),
        Err(Error::NulCharacter {
            field: "kind".into()
        })
    );
    let mut r = rec(json!({}));
    r.producer = "p\0".into();
    assert_eq!(
        check(&r),
        Err(Error::NulCharacter {
            field: "producer".into()
        })
    );
    assert_eq!(
        check(&rec(json!({"a": [1, "x\u{0}y"]}))),
        Err(Error::NulCharacter {
            field: "payload/a/1".into()
        })
    );
    assert_eq!(
        check(&rec(json!({"k\u{0}": 1}))),
        Err(Error::NulCharacter {
            field: "payload/k\u{0} (key)".into()
        })
    );
}

/// One number rule: a number is refused exactly when JCS would record another value for it
/// (`InexactNumber` naming the path and what the hash would hold); numbers a double holds
/// exactly pass, however large.
#[test]
fn numbers_the_hash_cannot_record_exactly_are_refused() {
    assert!(check(&rec(json!(9_007_199_254_740_991_i64))).is_ok());
    assert!(check(&rec(json!(-9_007_199_254_740_991_i64))).is_ok());
    // 2^53 and 2^60 are doubles exactly: JCS writes them digit for digit.
    assert!(check(&rec(json!(9_007_199_254_740_992_i64))).is_ok());
    assert!(check(&rec(json!(1_u64 << 60))).is_ok());
    assert!(matches!(
        check(&rec(json!({"n": 9_007_199_254_740_993_i64}))),
        Err(Error::InexactNumber { field, value, hashed_as })
            if field == "payload/n" && value == "9007199254740993" && hashed_as == "9007199254740992"
    ));
    assert!(matches!(
        check(&rec(json!([-9_007_199_254_740_993_i64]))),
        Err(Error::InexactNumber { field, .. }) if field == "payload/0"
    ));
    assert!(matches!(
        check(&rec(json!(u64::MAX))),
        Err(Error::InexactNumber { hashed_as, .. }) if hashed_as == "18446744073709552000"
    ));
    // Floats are doubles already: JCS prints them exactly.
    assert!(check(&rec(json!(1e300))).is_ok());
}

/// Payload text follows the same rule, literal by literal: an integer beyond u64 that serde
/// would silently turn into a float, and a decimal with more digits than a double keeps, are
/// refused naming their path; `1.0`, `1e21`, `0.1`, `-0` and `2^53` are exact.
#[test]
fn payload_text_numbers_follow_the_same_rule() {
    for (text, field, value) in [
        (
            r#"{"a": [1, 18446744073709551617]}"#,
            "payload/a/1",
            "18446744073709551617",
        ),
        (
            r#"{"x/y": {"p": 0.10000000000000000001}}"#,
            "payload/x~1y/p",
            "0.10000000000000000001",
        ),
        ("9007199254740993", "payload", "9007199254740993"),
        (
            r#"[{"k": "1e400 in a string"}, 1e-400]"#,
            "payload/1",
            "1e-400",
        ),
    ] {
        match parse_payload(text) {
            Err(Error::InexactNumber {
                field: f, value: v, ..
            }) => {
                assert_eq!((f.as_str(), v.as_str()), (field, value), "{text}");
            }
            other => panic!("{text}: expected InexactNumber, got {other:?}"),
        }
    }
    for text in [
        "1.0",
        "1e21",
        "0.1",
        "-0",
        "9007199254740992",
        r#"{"s": "0.10000000000000000001", "n": -12.5e-3}"#,
    ] {
        let v = parse_payload(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert!(check(&rec(v)).is_ok(), "{text}");
    }
}

/// Payload text with a duplicate key is refused; valid text parses; junk is InvalidJson.
#[test]
fn duplicate_keys_in_payload_text_are_refused() {
    assert_eq!(
        parse_payload(r#"{"a": {"b": 1, "b": 2}}"#),
        Err(Error::DuplicateKey {
            field: "payload/a".into(),
            key: "b".into()
        })
    );
    assert_eq!(
        parse_payload(r#"{"a":1,"b":[1,{"c":null}]}"#).unwrap(),
        json!({"a":1,"b":[1,{"c":null}]})
    );
    assert!(matches!(
        parse_payload("{\"a\":"),
        Err(Error::InvalidJson(_))
    ));
    assert!(matches!(parse_payload("{} {}"), Err(Error::InvalidJson(_))));
}

/// The canonical size limit applies, configurable, and the message gives both numbers.
#[test]
fn oversized_payloads_are_refused() {
    let big = rec(json!("x".repeat(1 << 20)));
    assert!(matches!(check(&big), Err(Error::PayloadTooLarge { limit, .. }) if limit == 1 << 20));
    let limits = Limits {
        max_payload_bytes: 10,
        ..Limits::default()
    };
    assert_eq!(
        validate_new_record(&rec(json!("0123456789")), &limits),
        Err(Error::PayloadTooLarge {
            size: 12,
            limit: 10
        })
    );
    assert!(validate_new_record(&rec(json!("01234567")), &limits).is_ok());
}

/// Nesting deeper than the limit is refused before the canonicalizer recurses.
#[test]
fn deep_nesting_is_refused() {
    let mut v = json!(1);
    for _ in 0..100 {
        v = json!([v]);
    }
    assert!(matches!(
        check(&rec(v)),
        Err(Error::NestingTooDeep { limit: 64, .. })
    ));
}

/// Empty and over-long labels and signatures are refused, naming the field.
#[test]
fn labels_and_signatures_have_bounds() {
    let mut r = rec(json!({}));
    r.slot = String::new();
    assert_eq!(check(&r), Err(Error::EmptyField { field: "slot" }));
    let mut r = rec(json!({}));
    r.kind = String::new();
    assert_eq!(check(&r), Err(Error::EmptyField { field: "kind" }));
    let mut r = rec(json!({}));
    r.producer = String::new();
    assert_eq!(check(&r), Err(Error::EmptyField { field: "producer" }));
    let mut r = rec(json!({}));
    r.producer = "p".repeat(MAX_LABEL_BYTES + 1);
    assert_eq!(
        check(&r),
        Err(Error::FieldTooLong {
            field: "producer",
            len: MAX_LABEL_BYTES + 1,
            max: MAX_LABEL_BYTES
        })
    );
    let r = rec(json!({})).with_sig(vec![0; MAX_SIG_BYTES + 1]);
    assert!(matches!(
        check(&r),
        Err(Error::FieldTooLong { field: "sig", .. })
    ));
    let r = rec(json!({})).with_sig(vec![0; MAX_SIG_BYTES]);
    assert!(check(&r).is_ok());
}

/// Malformed hashes and unknown versions cannot be hashed.
#[test]
fn malformed_prev_hash_and_unknown_version_are_typed_errors() {
    let mut r =
        ledger_entities::LedgerRecord::seal(rec(json!(1)), Uuid::nil(), chrono::Utc::now(), None)
            .unwrap();
    assert!(matches!(
        RecordHash::parse("prev_hash", "ABC"),
        Err(Error::MalformedHash {
            field: "prev_hash",
            ..
        })
    ));
    assert!(matches!(
        RecordHash::parse("prev_hash", &"A".repeat(64)),
        Err(Error::MalformedHash { .. })
    ));
    assert!(matches!(
        "zz".repeat(32).parse::<RecordHash>(),
        Err(Error::MalformedHash { .. })
    ));
    // const-hex (the `hex` crate name here) strips a `0x` prefix: 64 characters with one are
    // still refused, never read as 31 bytes.
    assert!(matches!(
        format!("0x{}", "ab".repeat(31)).parse::<RecordHash>(),
        Err(Error::MalformedHash { .. })
    ));
    let h: RecordHash = "ab".repeat(32).parse().unwrap();
    assert_eq!(h.to_string(), "ab".repeat(32));
    assert_eq!(
        serde_json::to_string(&h).unwrap(),
        format!("\"{}\"", "ab".repeat(32))
    );
    r.prev_hash = None;
    r.version = "v2".into();
    assert_eq!(
        r.hash_matches(),
        Err(Error::UnsupportedVersion("v2".into()))
    );
}
