//! Configuration: the YAML `ledger:` section, `LEDGER_*` overrides, and clear errors.

#![allow(clippy::unwrap_used, reason = "a test fails loudly by design")]

use std::collections::HashMap;
use std::time::Duration;

use ledger_actors::{Backend, Dsn, LedgerConfig, LedgerError};

fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| map.get(k).cloned()
}

fn config_error(r: Result<LedgerConfig, LedgerError>) -> String {
    match r {
        Err(LedgerError::Config(msg)) => msg,
        other => panic!("expected a Config error, got {other:?}"),
    }
}

/// The design's four keys and the ledger's own knobs parse; other sections are ignored.
#[test]
fn yaml_section_parses() {
    let c = LedgerConfig::from_yaml_str(
        "app:\n  name: host\nledger:\n  backend: postgres\n  dsn: postgresql+asyncpg://avl:s3cret@db.example:5433/avl\n  pool_size: 20\n  timeout: 2.5\n  batch_linger: 4\n  passivate_after: 30\n",
    )
    .unwrap();
    assert_eq!(c.backend, Backend::Postgres);
    assert_eq!(c.pool_size, 20);
    assert_eq!(c.timeout, Duration::from_millis(2500));
    assert_eq!(c.batch_linger, Duration::from_millis(4));
    assert_eq!(c.passivate_after, Duration::from_secs(30));
    let dsn = c.dsn.unwrap();
    assert_eq!(dsn.database(), "avl");
    assert!(
        dsn.expose()
            .starts_with("postgres://avl:s3cret@db.example:5433/")
    );
    // An empty section means the defaults: memory backend.
    assert_eq!(
        LedgerConfig::from_yaml_str("other: 1\nledger:\n").unwrap(),
        LedgerConfig::default()
    );
}

/// Unknown keys, malformed numbers and unknown backends name the key and the line.
#[test]
fn malformed_yaml_names_key_and_line() {
    let msg = config_error(LedgerConfig::from_yaml_str(
        "ledger:\n  backend: memory\n  pool_sise: 3\n",
    ));
    assert!(msg.contains("pool_sise") && msg.contains("line 3"), "{msg}");
    let msg = config_error(LedgerConfig::from_yaml_str("ledger:\n  pool_size: many\n"));
    assert!(msg.contains("pool_size") && msg.contains("line 2"), "{msg}");
    let msg = config_error(LedgerConfig::from_yaml_str("ledger:\n  backend: sqlite\n"));
    assert!(msg.contains("sqlite") && msg.contains("line 2"), "{msg}");
    let msg = config_error(LedgerConfig::from_yaml_str("ledger:\n  timeout: -1\n"));
    assert!(msg.contains("timeout"), "{msg}");
    let msg = config_error(LedgerConfig::from_yaml_str("ledger: [\n"));
    assert!(msg.contains("line"), "{msg}");
    let msg = config_error(LedgerConfig::from_yaml_str(
        "ledger:\n  backend: postgres\n",
    ));
    assert!(msg.contains("dsn"), "{msg}");
}

/// LEDGER_* variables override the file; malformed values name the variable.
#[test]
fn environment_overrides_and_errors() {
    let mut c = LedgerConfig::default();
    c.apply_env(env(&[
        ("LEDGER_BACKEND", "postgres"),
        ("LEDGER_DSN", "postgres://u:pw@127.0.0.1/db"),
        ("LEDGER_POOL_SIZE", "7"),
        ("LEDGER_TIMEOUT", "0.25"),
    ]))
    .unwrap();
    assert_eq!(c.backend, Backend::Postgres);
    assert_eq!(c.pool_size, 7);
    assert_eq!(c.timeout, Duration::from_millis(250));

    for (var, value) in [
        ("LEDGER_BACKEND", "mysql"),
        ("LEDGER_POOL_SIZE", "ten"),
        ("LEDGER_POOL_SIZE", "-1"),
        ("LEDGER_TIMEOUT", "soon"),
        ("LEDGER_DSN", "mysql://u@h/db"),
    ] {
        let mut c = LedgerConfig::default();
        let msg = match c.apply_env(env(&[(var, value)])) {
            Err(LedgerError::Config(msg)) => msg,
            other => panic!("{var}={value}: expected a Config error, got {other:?}"),
        };
        assert!(msg.contains(var), "{msg}");
    }
}

/// An unreadable file is a clear error naming the path.
#[test]
fn missing_file_is_a_clear_error() {
    let msg = config_error(LedgerConfig::from_yaml_file(std::path::Path::new(
        "/nonexistent/avl.yaml",
    )));
    assert!(msg.contains("/nonexistent/avl.yaml"), "{msg}");
}

/// A DSN's password appears in no Debug, Display or error output; the three schemes agree.
#[test]
fn dsn_password_never_shows() {
    let dsn = Dsn::parse("postgresql://avl:hunter2@db:5432/ledger").unwrap();
    for shown in [format!("{dsn:?}"), format!("{dsn}"), dsn.redacted()] {
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("****"), "{shown}");
    }
    let c = LedgerConfig::from_yaml_str(
        "ledger:\n  backend: postgres\n  dsn: postgres://a:hunter2@h/d\n",
    )
    .unwrap();
    assert!(!format!("{c:?}").contains("hunter2"));
    assert_eq!(
        Dsn::parse("postgresql+asyncpg://avl:x@db/ledger").unwrap(),
        Dsn::parse("postgres://avl:x@db/ledger").unwrap()
    );
    for bad in [
        "avl:hunter2@db/ledger",
        "postgres://avl:hunter2@/ledger",
        "postgres://avl:hunter2@db",
        "http://avl:hunter2@db/x",
    ] {
        match Dsn::parse(bad) {
            Err(LedgerError::Config(msg)) => assert!(!msg.contains("hunter2"), "{msg}"),
            other => panic!("{bad}: expected an error, got {other:?}"),
        }
    }
    // A malformed DSN inside YAML does not echo it either.
    let msg = config_error(LedgerConfig::from_yaml_str(
        "ledger:\n  dsn: 'postgres://a:hunter2@:99999/d'\n",
    ));
    assert!(!msg.contains("hunter2"), "{msg}");
}
