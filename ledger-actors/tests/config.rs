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

/// Durations take a plain number (seconds; milliseconds for `batch_linger`) as before, or a
/// humantime duration, in the file and in LEDGER_TIMEOUT.
#[test]
fn durations_take_numbers_or_humantime() {
    let c = LedgerConfig::from_yaml_str(
        "ledger:\n  timeout: 250ms\n  passivate_after: 2m\n  batch_linger: 1s\n  failover_after: 1.5\n",
    )
    .unwrap();
    assert_eq!(c.timeout, Duration::from_millis(250));
    assert_eq!(c.passivate_after, Duration::from_secs(120));
    assert_eq!(c.batch_linger, Duration::from_secs(1));
    assert_eq!(c.failover_after, Duration::from_millis(1500));
    let c = LedgerConfig::from_yaml_str("ledger:\n  timeout: 5\n  batch_linger: 3\n").unwrap();
    assert_eq!(c.timeout, Duration::from_secs(5));
    assert_eq!(c.batch_linger, Duration::from_millis(3));
    for (v, want) in [("5s", 5000), ("250ms", 250), ("0.5", 500), ("2", 2000)] {
        let mut c = LedgerConfig::default();
        c.apply_env(env(&[("LEDGER_TIMEOUT", v)])).unwrap();
        assert_eq!(c.timeout, Duration::from_millis(want), "{v}");
    }
    let msg = config_error(LedgerConfig::from_yaml_str("ledger:\n  timeout: soon\n"));
    assert!(msg.contains("timeout") && msg.contains("250ms"), "{msg}");
}

/// Every number has a range; out-of-range values name the key (and the variable).
#[test]
fn numbers_out_of_range_are_refused() {
    for yaml in [
        "ledger:\n  pool_size: 0\n",
        "ledger:\n  pool_size: 1000000\n",
        "ledger:\n  timeout: 2h\n",
        "ledger:\n  timeout: 0\n",
        "ledger:\n  max_payload_bytes: 0\n",
        "ledger:\n  max_payload_bytes: 1000000000\n",
        "ledger:\n  max_in_flight: 0\n",
        "ledger:\n  mailbox_capacity: 0\n",
        "ledger:\n  workers: 100000\n",
        "ledger:\n  batch_size: 0\n",
        "ledger:\n  batch_linger: 1m\n",
        "ledger:\n  failover_after: 0\n",
        "ledger:\n  passivate_after: 100d\n",
        "ledger:\n  max_batch_records: 0\n",
        "ledger:\n  max_batch_records: 1000001\n",
        "ledger:\n  max_batch_bytes: 0\n",
        "ledger:\n  max_batch_bytes: 100000000\n",
    ] {
        let key = yaml.trim().split('\n').nth(1).unwrap().trim();
        let key = key.split(':').next().unwrap();
        let msg = config_error(LedgerConfig::from_yaml_str(yaml));
        assert!(
            msg.contains(key) && msg.contains("out of range"),
            "{yaml}: {msg}"
        );
    }
    let msg = config_error(LedgerConfig::load_from(
        None,
        env(&[("LEDGER_TIMEOUT", "1e9")]),
    ));
    assert!(msg.contains("LEDGER_TIMEOUT"), "{msg}");
}

/// The atomic-append limits come from YAML or `LEDGER_MAX_BATCH_*`; a malformed variable
/// names itself.
#[test]
fn batch_limits_from_yaml_and_environment() {
    let c =
        LedgerConfig::from_yaml_str("ledger:\n  max_batch_records: 50\n  max_batch_bytes: 65536\n")
            .unwrap();
    assert_eq!((c.max_batch_records, c.max_batch_bytes), (50, 65_536));
    let c = LedgerConfig::load_from(
        None,
        env(&[
            ("LEDGER_MAX_BATCH_RECORDS", "20"),
            ("LEDGER_MAX_BATCH_BYTES", "1024"),
        ]),
    )
    .unwrap();
    assert_eq!((c.max_batch_records, c.max_batch_bytes), (20, 1024));
    let msg = config_error(LedgerConfig::load_from(
        None,
        env(&[("LEDGER_MAX_BATCH_RECORDS", "many")]),
    ));
    assert!(msg.contains("LEDGER_MAX_BATCH_RECORDS"), "{msg}");
    let msg = config_error(LedgerConfig::load_from(
        None,
        env(&[("LEDGER_MAX_BATCH_BYTES", "0")]),
    ));
    assert!(
        msg.contains("LEDGER_MAX_BATCH_BYTES") && msg.contains("out of range"),
        "{msg}"
    );
}

/// An empty document, one without `ledger:` (a misspelled `ledgr:`), and one that is a list
/// are refused, naming the problem (and the line for the list).
#[test]
fn documents_without_a_ledger_section_are_refused() {
    assert!(config_error(LedgerConfig::from_yaml_str("")).contains("empty"));
    assert!(config_error(LedgerConfig::from_yaml_str("# nothing\n---\n")).contains("empty"));
    let msg = config_error(LedgerConfig::from_yaml_str("ledgr:\n  backend: postgres\n"));
    assert!(
        msg.contains("no `ledger:` section") && msg.contains("ledgr"),
        "{msg}"
    );
    let msg = config_error(LedgerConfig::from_yaml_str("\n# list\n- ledger: {}\n"));
    assert!(msg.contains("line 3") && msg.contains("a list"), "{msg}");
}

/// The file and the environment are checked once, together: a file with `backend: postgres`
/// takes its DSN from LEDGER_DSN.
#[test]
fn file_and_environment_are_checked_together() {
    let dir = std::env::temp_dir().join(format!("avl-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("avl.yaml");
    std::fs::write(&path, "ledger:\n  backend: postgres\n").unwrap();
    let c = LedgerConfig::load_from(
        Some(&path),
        env(&[("LEDGER_DSN", "postgres://u:pw@127.0.0.1/db")]),
    )
    .unwrap();
    assert_eq!(c.backend, Backend::Postgres);
    assert_eq!(c.dsn.unwrap().database(), "db");
    let msg = config_error(LedgerConfig::load_from(Some(&path), env(&[])));
    assert!(msg.contains("no dsn"), "{msg}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `redact_secrets` hides the password of `user:password@host` (with or without a scheme)
/// and of `password=...`, and leaves other text alone.
#[test]
fn redact_secrets_hides_credentials() {
    use ledger_actors::config::redact_secrets;
    assert_eq!(
        redact_secrets("bad `postgres://u:Secret1@h:5/d` here"),
        "bad `postgres://u:****@h:5/d` here"
    );
    assert_eq!(redact_secrets("\"u:Secret1@h/d\","), "\"u:****@h/d\",");
    assert_eq!(
        redact_secrets("host=h password=Secret1 user=u"),
        "host=h password=**** user=u"
    );
    assert_eq!(
        redact_secrets("line 3 column 5: a@b c:d"),
        "line 3 column 5: a@b c:d"
    );
}

#[test]
fn multi_host_dsns_keep_every_host_and_hide_the_password() {
    let dsn = Dsn::parse(
        "postgres://avl:hunter2@db1:5432,db2:5433,[::1]/ledger?sslmode=disable&target_session_attrs=read-write",
    )
    .unwrap();
    assert_eq!(
        dsn.hosts(),
        &[
            ("db1".to_owned(), 5432),
            ("db2".to_owned(), 5433),
            ("[::1]".to_owned(), 5432)
        ]
    );
    assert_eq!(
        dsn.session_attrs(),
        Some(ledger_actors::SessionAttrs::ReadWrite)
    );
    let shown = dsn.redacted();
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("db1:5432,db2:5433,[::1]:5432"), "{shown}");
    assert!(shown.contains("target_session_attrs=read-write"), "{shown}");
    assert!(!format!("{dsn:?}").contains("hunter2"));
    // The driver's DSNs: one host each, the other parameters kept, the attribute taken out.
    let endpoints = dsn.endpoints();
    assert_eq!(endpoints.len(), 3);
    assert!(
        endpoints[1].expose().contains("@db2:5433/ledger"),
        "{}",
        endpoints[1].redacted()
    );
    assert!(endpoints[1].expose().contains("sslmode=disable"));
    assert!(!endpoints[1].expose().contains("target_session_attrs"));
    assert_eq!(dsn.expose(), endpoints[0].expose());
    // A plain DSN is one endpoint, itself.
    let plain = Dsn::parse("postgres://avl:x@db/ledger").unwrap();
    assert_eq!(plain.hosts(), &[("db".to_owned(), 5432)]);
    assert_eq!(plain.endpoints(), vec![plain.clone()]);
    // Malformed lists and attributes are refused without showing the password.
    for bad in [
        "postgres://avl:hunter2@db1:5432,/ledger",
        "postgres://avl:hunter2@db1:99999,db2/ledger",
        "postgres://avl:hunter2@db1,db2/ledger?target_session_attrs=whatever",
    ] {
        let err = Dsn::parse(bad).unwrap_err().to_string();
        assert!(!err.contains("hunter2"), "{err}");
        assert!(err.contains("dsn:"), "{err}");
    }
}

/// The test-only witness key of docs/HASHING.md.
const W_KEY: &str =
    "witness.example/avl-vectors+4395096c+BIE5dw6ofRdfVqNUZsNMfszLjYqRtO43ol32D1uPybOU";
/// The test-only log key of docs/HASHING.md (type 0x01: not a cosigner key).
const LOG_KEY: &str =
    "example.com/avl-vectors+a0453e3e+AYqI4910CfGV/VLbLTy6XXLKZwm/HZQSG/N0iAG0D29c";

/// `witnesses:` and `witness_quorum` from the file and the environment, and every way to get
/// them wrong refused with the key named (a URL's password never shown).
#[test]
fn witnesses_parse_and_bad_ones_are_refused() {
    let yaml = format!(
        "ledger:\n  checkpoint_key: /k\n  witnesses:\n    - url: https://w.example/avl\n      key: {W_KEY}\n  witness_quorum: 1\n"
    );
    let c = LedgerConfig::from_yaml_str(&yaml).unwrap();
    assert_eq!(c.witnesses.len(), 1);
    assert_eq!(c.witnesses[0].key.name(), "witness.example/avl-vectors");
    assert_eq!(
        c.witnesses[0].add_checkpoint_url(),
        "https://w.example/avl/add-checkpoint"
    );
    assert_eq!(c.witness_quorum, Some(1));

    let value = format!("http://a.example {W_KEY}");
    let c = LedgerConfig::load_from(
        None,
        env(&[
            ("LEDGER_CHECKPOINT_KEY", "/k"),
            ("LEDGER_WITNESSES", &value),
            ("LEDGER_WITNESS_QUORUM", "1"),
        ]),
    )
    .unwrap();
    assert_eq!(c.witnesses[0].url.as_str(), "http://a.example/");
    // Empty: none.
    let c = LedgerConfig::load_from(None, env(&[("LEDGER_WITNESSES", " ")])).unwrap();
    assert!(c.witnesses.is_empty());

    let refused = |pairs: &[(&str, &str)]| config_error(LedgerConfig::load_from(None, env(pairs)));
    let e = refused(&[
        ("LEDGER_CHECKPOINT_KEY", "/k"),
        ("LEDGER_WITNESSES", "http://a.example"),
    ]);
    assert!(e.contains("LEDGER_WITNESSES"), "{e}");
    let with_log_key = format!("http://a.example {LOG_KEY}");
    let e = refused(&[
        ("LEDGER_CHECKPOINT_KEY", "/k"),
        ("LEDGER_WITNESSES", &with_log_key),
    ]);
    assert!(e.contains("cosignature/v1"), "{e}");
    let ftp = format!("ftp://a.example {W_KEY}");
    let e = refused(&[("LEDGER_CHECKPOINT_KEY", "/k"), ("LEDGER_WITNESSES", &ftp)]);
    assert!(e.contains("http"), "{e}");
    let twice = format!("http://a.example {W_KEY},http://b.example {W_KEY}");
    let e = refused(&[
        ("LEDGER_CHECKPOINT_KEY", "/k"),
        ("LEDGER_WITNESSES", &twice),
    ]);
    assert!(e.contains("twice"), "{e}");
    let e = refused(&[("LEDGER_WITNESSES", &value)]);
    assert!(e.contains("checkpoint_key"), "{e}");
    let e = refused(&[
        ("LEDGER_CHECKPOINT_KEY", "/k"),
        ("LEDGER_WITNESSES", &value),
        ("LEDGER_WITNESS_QUORUM", "2"),
    ]);
    assert!(e.contains("witness_quorum"), "{e}");
    let e = refused(&[("LEDGER_WITNESS_QUORUM", "1")]);
    assert!(e.contains("witness_quorum"), "{e}");
    let e = refused(&[("LEDGER_WITNESS_QUORUM", "many")]);
    assert!(e.contains("LEDGER_WITNESS_QUORUM"), "{e}");
    // A URL with a password: never in an error or in Debug.
    let secret = format!("ftp://u:hunter2@a.example {W_KEY}");
    let e = refused(&[
        ("LEDGER_CHECKPOINT_KEY", "/k"),
        ("LEDGER_WITNESSES", &secret),
    ]);
    assert!(!e.contains("hunter2"), "{e}");
    let with_password = format!("https://u:hunter2@a.example {W_KEY}");
    let c = LedgerConfig::load_from(
        None,
        env(&[
            ("LEDGER_CHECKPOINT_KEY", "/k"),
            ("LEDGER_WITNESSES", &with_password),
        ]),
    )
    .unwrap();
    assert!(!format!("{c:?}").contains("hunter2"));
}
