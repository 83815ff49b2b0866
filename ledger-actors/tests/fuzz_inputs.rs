//! Property-based fuzzing (proptest) of everything that takes untrusted text:
//!
//! - payload text: arbitrary strings, mutated JSON and generated JSON with hostile numbers,
//!   through `parse_payload`, validation, sealing and hashing. No panic; whatever is accepted
//!   hashes, verifies, and survives the canonical round trip (the hash records exactly what
//!   was accepted).
//! - configuration: arbitrary YAML and generated `ledger:` sections with DSNs (holding a
//!   random password) in every key, and the same values in `LEDGER_*` variables. No panic,
//!   and the password appears in no error and no `Debug` output.
//!
//! Bounded for CI: `AVL_FUZZ_CASES` cases per target (default 2000, a few seconds). For a
//! long run set `AVL_FUZZ_SECONDS` (e.g. 600): each target then runs batches until that much
//! time has passed, and the number of executions is printed.

#![allow(clippy::unwrap_used, reason = "a test fails loudly by design")]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ledger_actors::LedgerConfig;
use ledger_entities::validate::{Limits, parse_payload, validate_new_record};
use ledger_entities::{LedgerRecord, NewRecord};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

fn cases() -> u32 {
    std::env::var("AVL_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

/// Runs `test` over `strategy`: once with [`cases`] cases, or in batches for
/// `AVL_FUZZ_SECONDS`; returns the number of executions.
fn fuzz<S: Strategy>(
    name: &str,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) -> u64 {
    let runs = AtomicU64::new(0);
    let budget = std::env::var("AVL_FUZZ_SECONDS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_secs);
    let started = Instant::now();
    loop {
        let mut runner = TestRunner::new(Config {
            cases: cases(),
            failure_persistence: None,
            ..Config::default()
        });
        let result = runner.run(&strategy, |v| {
            runs.fetch_add(1, Ordering::Relaxed);
            test(v)
        });
        if let Err(e) = result {
            panic!("{name}: {e}");
        }
        if budget.is_none_or(|b| started.elapsed() >= b) {
            break;
        }
    }
    let n = runs.load(Ordering::Relaxed);
    eprintln!(
        "fuzz {name}: {n} executions in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    n
}

/// Number literals as a hostile client writes them: huge, long, signed, with exponents.
fn number_literal() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| f.to_string()),
        "-?[0-9]{1,40}(\\.[0-9]{1,40})?([eE][-+]?[0-9]{1,4})?",
        Just("18446744073709551617".to_owned()),
        Just("9007199254740993".to_owned()),
        Just("0.10000000000000000001".to_owned()),
        Just("-0".to_owned()),
        Just("1e400".to_owned()),
        Just("1e-400".to_owned()),
    ]
}

/// JSON text: generated values (with hostile numbers, escapes, duplicate keys, deep nesting).
fn json_text() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_owned()),
        Just("true".to_owned()),
        number_literal(),
        "\\PC{0,12}".prop_map(|s| serde_json::to_string(&s).unwrap()),
        Just("\"\\u0000\"".to_owned()),
        Just("\"\\ud800\"".to_owned()),
    ];
    leaf.prop_recursive(8, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec(("[a-c~/]{0,3}", inner), 0..6).prop_map(|kv| {
                let body: Vec<String> = kv
                    .into_iter()
                    .map(|(k, v)| format!("{}:{v}", serde_json::to_string(&k).unwrap()))
                    .collect();
                format!("{{{}}}", body.join(","))
            }),
            (1usize..400).prop_map(|d| format!("{}{}", "[".repeat(d), "]".repeat(d))),
        ]
    })
}

/// Any text: arbitrary strings, generated JSON, and generated JSON with one byte changed.
fn payload_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        json_text(),
        (json_text(), any::<prop::sample::Index>(), any::<char>()).prop_map(|(t, at, c)| {
            let mut chars: Vec<char> = t.chars().collect();
            if !chars.is_empty() {
                let i = at.index(chars.len());
                chars[i] = c;
            }
            chars.into_iter().collect()
        }),
    ]
}

/// parse_payload + validation + sealing + hashing never panic, and every accepted payload
/// hashes to a record that verifies and whose canonical form parses back to itself.
#[test]
fn payload_text_never_panics_and_accepted_payloads_hash_exactly() {
    let limits = Limits::default();
    let n = fuzz("payload", payload_text(), |text| {
        let Ok(value) = parse_payload(&text) else {
            return Ok(());
        };
        let new = NewRecord::new(uuid::Uuid::nil(), "s", "k", value, "p");
        let Ok(canonical) = validate_new_record(&new, &limits) else {
            return Ok(());
        };
        let record = LedgerRecord::seal_canonical(
            new,
            uuid::Uuid::from_u128(1),
            chrono::DateTime::UNIX_EPOCH,
            None,
            canonical.clone(),
        )
        .map_err(|e| TestCaseError::fail(format!("accepted but not sealable: {e}")))?;
        prop_assert!(record.hash_matches().unwrap());
        // The verifier's view: the canonical text, parsed again, canonicalizes the same.
        let text = canonical.as_str().to_owned();
        let again = parse_payload(&text)
            .map_err(|e| TestCaseError::fail(format!("canonical {text} refused: {e}")))?;
        prop_assert_eq!(
            ledger_entities::hash::canonical_payload(&again).unwrap(),
            canonical.as_bytes()
        );
        Ok(())
    });
    assert!(n >= u64::from(cases()));
}

/// A DSN with a random password, in one of the shapes users type.
fn dsn_with_secret() -> impl Strategy<Value = (String, String)> {
    ("Pw[A-Za-z0-9]{8,14}", 0..6usize).prop_map(|(pw, shape)| {
        let dsn = match shape {
            0 => format!("postgres://avl:{pw}@db.example:5432/avl"),
            1 => format!("avl:{pw}@db.example/avl"),
            2 => format!("postgresql+asyncpg://avl:{pw}@db/avl?sslmode=require"),
            3 => format!("host=db user=avl password={pw} dbname=avl"),
            4 => format!("mysql://avl:{pw}@db/avl"),
            _ => format!("postgres://avl:{pw}@/avl"),
        };
        (dsn, pw)
    })
}

const KEYS: &[&str] = &[
    "backend",
    "dsn",
    "pool_size",
    "timeout",
    "max_payload_bytes",
    "max_in_flight",
    "mailbox_capacity",
    "passivate_after",
    "workers",
    "batch_size",
    "batch_linger",
    "auto_migrate",
    "buffer_capacity",
    "failover_after",
    "spool_dir",
    "ledgr",
    "pool_sise",
];

/// A YAML value: a DSN (plain or quoted), a number, a word, a list or a mapping.
fn yaml_value(dsn: String) -> impl Strategy<Value = String> {
    prop_oneof![
        Just(dsn.clone()),
        Just(format!("\"{dsn}\"")),
        Just(format!("[{dsn}, 1]")),
        Just(format!("{{x: {dsn}}}")),
        number_literal(),
        "[a-z0-9 .:/@-]{0,20}",
        Just("postgres".to_owned()),
        Just("memory".to_owned()),
        Just("5s".to_owned()),
        Just("250ms".to_owned()),
        Just("~".to_owned()),
    ]
}

/// Generated configuration files: a top-level section (usually `ledger:`) with random keys
/// and values, DSNs among them; or arbitrary text around a DSN.
fn yaml_text() -> impl Strategy<Value = (String, String)> {
    dsn_with_secret().prop_flat_map(|(dsn, pw)| {
        let entries =
            prop::collection::vec((prop::sample::select(KEYS), yaml_value(dsn.clone())), 0..6);
        let top = prop::sample::select(vec!["ledger", "ledger", "ledger", "ledgr", "- ledger"]);
        let generated = (top, entries).prop_map(|(top, entries)| {
            let mut text = format!("{top}:\n");
            for (k, v) in entries {
                text.push_str(&format!("  {k}: {v}\n"));
            }
            text
        });
        let d = dsn.clone();
        let arbitrary = any::<String>().prop_map(move |s| format!("{s}{d}{s}"));
        let pw2 = pw.clone();
        prop_oneof![3 => generated, 1 => arbitrary].prop_map(move |t| (t, pw2.clone()))
    })
}

/// Loading configuration never panics and never shows the password: not in the error of
/// the YAML, not in the error of any `LEDGER_*` variable holding the DSN or any other
/// generated value, not in the `Debug` of an accepted configuration.
#[test]
fn configuration_never_panics_and_never_shows_a_password() {
    let n = fuzz("config", yaml_text(), |(text, pw)| {
        let shown = match LedgerConfig::from_yaml_str(&text) {
            Ok(config) => format!("{config:?}"),
            Err(e) => format!("{e} {e:?}"),
        };
        prop_assert!(
            !shown.contains(&pw),
            "password shown: {shown}\nfor:\n{text}"
        );
        let value = text.lines().find(|l| l.contains(&pw)).unwrap_or(&text);
        for var in [
            "LEDGER_BACKEND",
            "LEDGER_DSN",
            "LEDGER_POOL_SIZE",
            "LEDGER_TIMEOUT",
        ] {
            let mut config = LedgerConfig::default();
            let got = config
                .apply_env(|k| (k == var).then(|| value.trim().to_owned()))
                .and_then(|()| config.check());
            let shown = match got {
                Ok(()) => format!("{config:?}"),
                Err(e) => format!("{e} {e:?}"),
            };
            prop_assert!(!shown.contains(&pw), "{var}: password shown: {shown}");
        }
        Ok(())
    });
    assert!(n >= u64::from(cases()));
}
