//! The log's commands end to end against a real PostgreSQL (`LEDGER_TEST_DSN`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`): keygen, loadtest with checkpoints,
//! checkpoint, prove, verify-receipt (offline), verify with --key and --since, and verify
//! naming a tampered record and checkpoint.

#![allow(clippy::unwrap_used, reason = "a test fails loudly by design")]

use std::path::Path;
use std::process::{Command, Output};

use sea_orm::{ConnectionTrait, Database, DbBackend, Statement};

const DEFAULT_DSN: &str = "postgres://postgres@127.0.0.1:5432/postgres";

fn ledger(dsn: Option<&str>, key: Option<&Path>, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ledger"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("LEDGER_") {
            cmd.env_remove(k);
        }
    }
    if let Some(dsn) = dsn {
        cmd.env("LEDGER_BACKEND", "postgres").env("LEDGER_DSN", dsn);
    }
    if let Some(key) = key {
        cmd.env("LEDGER_CHECKPOINT_KEY", key);
    }
    cmd.env("LEDGER_CHECKPOINT_INTERVAL", "0.2");
    cmd.args(args).output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// See the module doc.
#[test]
fn log_commands_end_to_end_on_postgres() {
    let admin = std::env::var("LEDGER_TEST_DSN").unwrap_or_else(|_| DEFAULT_DSN.to_owned());
    let name = format!("avl_cli_tlog_{}", uuid::Uuid::new_v4().simple());
    let dsn = {
        let mut u = url::Url::parse(&admin).unwrap();
        u.set_path(&format!("/{name}"));
        u.to_string()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let admin_db = rt.block_on(Database::connect(&admin)).unwrap_or_else(|e| {
        panic!("PostgreSQL not reachable: set LEDGER_TEST_DSN=postgres://user@host:port/db ({e})")
    });
    rt.block_on(admin_db.execute_unprepared(&format!("CREATE DATABASE \"{name}\"")))
        .unwrap();
    let dir = std::env::temp_dir().join(format!("avl-cli-tlog-{}", uuid::Uuid::new_v4()));

    // keygen: signer 0600, verifier printed and written.
    let out = ledger(
        None,
        None,
        &[
            "keygen",
            "--origin",
            "example.com/avl-cli",
            "--out",
            dir.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let key = dir.join("checkpoint.key");
    let public = dir.join("checkpoint.pub");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let pub_text = std::fs::read_to_string(&public).unwrap();
    assert!(pub_text.starts_with("example.com/avl-cli+"));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), pub_text.trim());
    let again = ledger(
        None,
        None,
        &["keygen", "--origin", "x", "--out", dir.to_str().unwrap()],
    );
    assert_eq!(
        again.status.code(),
        Some(2),
        "an existing key is never overwritten"
    );

    let out = ledger(Some(&dsn), None, &["migrate", "up"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = ledger(
        Some(&dsn),
        Some(&key),
        &[
            "loadtest",
            "--anchors",
            "5",
            "--appends-per-anchor",
            "10",
            "--concurrency",
            "8",
            "--json",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["checkpoint"]["size"], 50);
    assert_eq!(result["integration"]["covers_all_appends"], true);
    assert_eq!(result["errors"], 0);
    assert_eq!(result["errors_by_kind"], serde_json::json!({}));

    let out = ledger(Some(&dsn), None, &["checkpoint", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let cp: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cp["size"], 50);
    assert_eq!(cp["root"], result["checkpoint"]["root"]);
    let saved = dir.join("saved.note");
    std::fs::write(&saved, cp["note"].as_str().unwrap()).unwrap();

    let db = rt.block_on(Database::connect(&dsn)).unwrap();
    let row = rt
        .block_on(db.query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT r.rid::text AS rid FROM ledger_records r JOIN ledger_log l ON l.rid = r.rid \
             WHERE NOT EXISTS (SELECT 1 FROM ledger_records s WHERE s.prev_hash = r.hash) \
             ORDER BY l.leaf_index LIMIT 1",
        )))
        .unwrap()
        .unwrap();
    let rid: String = row.try_get("", "rid").unwrap();

    let out = ledger(Some(&dsn), None, &["prove", &rid]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let receipt = dir.join("receipt.json");
    std::fs::write(&receipt, &out.stdout).unwrap();
    let out = ledger(
        None,
        None,
        &[
            "verify-receipt",
            receipt.to_str().unwrap(),
            "--key",
            public.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("valid:"));
    let mut forged: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&receipt).unwrap()).unwrap();
    forged["record"]["payload"] = serde_json::json!({ "forged": 1 });
    let forged_path = dir.join("forged.json");
    std::fs::write(&forged_path, forged.to_string()).unwrap();
    let out = ledger(
        None,
        None,
        &[
            "verify-receipt",
            forged_path.to_str().unwrap(),
            "--key",
            public.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("invalid:"));

    let out = ledger(
        Some(&dsn),
        None,
        &[
            "verify",
            "--key",
            public.to_str().unwrap(),
            "--since",
            saved.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // A database writer changes that record (the last of its chain) and recomputes its hash.
    let stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&receipt).unwrap()).unwrap();
    let mut record: ledger_entities::LedgerRecord =
        serde_json::from_value(stored["record"].clone()).unwrap();
    record.payload =
        ledger_entities::Payload::from_value(&serde_json::json!({ "changed": true })).unwrap();
    record.hash = ledger_entities::record::record_hash(&record).unwrap();
    rt.block_on(db.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "UPDATE ledger_records SET payload = $2, hash = $3 WHERE rid = $1",
        vec![
            record.rid.into(),
            record.payload.to_value().into(),
            record.hash.to_hex().into(),
        ],
    )))
    .unwrap();
    let out = ledger(
        Some(&dsn),
        None,
        &["verify", "--key", public.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        report.contains(&rid) && report.contains("record changed"),
        "{report}"
    );
    // The receipt taken before still verifies offline.
    let out = ledger(
        None,
        None,
        &[
            "verify-receipt",
            receipt.to_str().unwrap(),
            "--key",
            public.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    rt.block_on(db.close()).unwrap();
    rt.block_on(admin_db.execute_unprepared(&format!("DROP DATABASE \"{name}\" WITH (FORCE)")))
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
