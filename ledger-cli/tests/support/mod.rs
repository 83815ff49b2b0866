//! Shared support of the `ledger` binary's PostgreSQL tests: running the binary against a
//! test database, building export files, reading every record back.

#![allow(
    dead_code,
    reason = "each test binary compiles this module and uses a different part of it"
)]

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ledger_actors::pg::store::PostgresLedgerStore;
use ledger_actors::transfer::format;
use ledger_actors::{Backend, Dsn, LedgerConfig, LedgerStore, ScanKey};
use ledger_entities::{LedgerRecord, NewRecord};
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use serde_json::{Value, json};
use uuid::Uuid;

/// `ledger ARGS` against `dsn` (postgres backend; no other LEDGER_* variable from the
/// environment), with `stdin` as standard input.
pub fn ledger(dsn: &str, args: &[&str], stdin: &str) -> Output {
    let mut child = command(dsn, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ledger starts");
    let mut input = child.stdin.take().expect("stdin is piped");
    let text = stdin.to_owned();
    // Written from a thread so a large input cannot deadlock against a full stdout pipe.
    let writer = std::thread::spawn(move || {
        // The command may exit before reading everything (--fail-fast): not an error here.
        let _ = input.write_all(text.as_bytes());
    });
    let out = child.wait_with_output().expect("ledger runs");
    writer.join().expect("stdin writer");
    out
}

/// The `ledger` command with the environment of [`ledger`], not started.
pub fn command(dsn: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ledger"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("LEDGER_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("LEDGER_BACKEND", "postgres")
        .env("LEDGER_DSN", dsn)
        .env("LEDGER_TIMEOUT", "10")
        .args(args);
    cmd
}

/// stdout as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("stdout is UTF-8")
}

/// stderr as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).expect("stderr is UTF-8")
}

/// Each stdout line parsed as JSON.
pub fn json_lines(out: &Output) -> Vec<Value> {
    stdout(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

/// A ledger configuration for `dsn`.
pub fn pg_config(dsn: &str) -> LedgerConfig {
    LedgerConfig {
        backend: Backend::Postgres,
        dsn: Some(Dsn::parse(dsn).expect("DSN parses")),
        pool_size: 4,
        timeout: Duration::from_secs(10),
        workers: 2,
        ..LedgerConfig::default()
    }
}

/// A store over `db`.
pub fn store(db: &sea_orm::DatabaseConnection) -> Arc<dyn LedgerStore> {
    Arc::new(PostgresLedgerStore::new(db.clone()))
}

/// Every record in the database, in `(anchor_id, ts, rid)` order.
pub async fn all_records(db: &sea_orm::DatabaseConnection) -> Vec<LedgerRecord> {
    let store = store(db);
    let mut out = Vec::new();
    let mut after: Option<ScanKey> = None;
    loop {
        let page = store.scan(after.as_ref(), None, 5000).await.expect("scan");
        let Some(last) = page.last() else { break };
        after = Some(ScanKey::of(last));
        out.extend(page.iter().map(|r| r.as_ref().clone()));
    }
    out
}

/// `(rid, xmin)` of every row: a row rewritten or re-inserted gets a new `xmin`.
pub async fn row_versions(db: &sea_orm::DatabaseConnection) -> Vec<(String, String)> {
    let rows = db
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT rid::text AS rid, xmin::text AS xmin FROM ledger_records ORDER BY rid",
        ))
        .await
        .expect("query");
    rows.iter()
        .map(|r| {
            (
                r.try_get::<String>("", "rid").expect("rid"),
                r.try_get::<String>("", "xmin").expect("xmin"),
            )
        })
        .collect()
}

/// Rows in `ledger_records`.
pub async fn count(db: &sea_orm::DatabaseConnection) -> i64 {
    let row = db
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT count(*) AS n FROM ledger_records",
        ))
        .await
        .expect("query")
        .expect("one row");
    row.try_get::<i64>("", "n").expect("count")
}

/// `n` hashed records forming one chain of `anchor`, 1 ms apart from `start`, with varied
/// payloads and a signature on every third.
pub fn chain(anchor: Uuid, n: usize, start: DateTime<Utc>) -> Vec<LedgerRecord> {
    let mut out: Vec<LedgerRecord> = Vec::with_capacity(n);
    for i in 0..n {
        let mut new = NewRecord::new(
            anchor,
            format!("slot-{}", i % 3),
            "event",
            json!({ "i": i, "name": "π ≈ 3.14159 \"quoted\" \\ / ✓", "nested": { "z": [1, 2.5, null, true], "a": -7 } }),
            "cli-test",
        );
        if i % 3 == 0 {
            new = new.with_sig(vec![i as u8, 0, 255]);
        }
        let ts = start + chrono::Duration::milliseconds(i as i64);
        let prev = out.last().map(|p| p.hash);
        out.push(LedgerRecord::seal(new, Uuid::now_v7(), ts, prev).expect("seals"));
    }
    out
}

/// An export file (header, record lines, end line) of `records`, in the given order.
pub fn export_text(records: &[LedgerRecord]) -> String {
    let mut buf = Vec::new();
    let header = json!({ format::HEADER_KEY: format::FORMAT_VERSION, "exported_at": "2026-01-01T00:00:00.000000Z", "generator": "test", "anchor": null, "since": null });
    buf.extend_from_slice(header.to_string().as_bytes());
    buf.push(b'\n');
    for r in records {
        format::write_record(&mut buf, r).expect("encodes");
    }
    let end = json!({ format::END_KEY: { "records": records.len() } });
    buf.extend_from_slice(end.to_string().as_bytes());
    buf.push(b'\n');
    String::from_utf8(buf).expect("UTF-8")
}

/// Writes `text` to `dir/name` and returns the path as a string.
pub fn write_file(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write file");
    path.to_string_lossy().into_owned()
}

/// A fresh temporary directory for one test.
pub fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("avl-cli-{name}-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}
