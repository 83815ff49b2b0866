//! The `ledger` binary against bad configuration and unreachable or refusing databases
//! — every case exits non-zero with a clear message, never runs on the wrong
//! backend, and never prints a password.

#![allow(clippy::unwrap_used, reason = "a test fails loudly by design")]

use std::path::PathBuf;
use std::process::{Command, Output};

/// The server the tests may use (trust auth), as the other PostgreSQL tests take it.
fn server_dsn() -> String {
    std::env::var("LEDGER_TEST_DSN")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// Runs `ledger ARGS` with exactly the LEDGER_* variables given (none inherited).
fn ledger(env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ledger"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("LEDGER_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("LEDGER_TIMEOUT", "2");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.args(args).output().unwrap()
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A YAML file with `content` in a fresh temporary directory.
fn yaml(content: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("avl-cli-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("avl.yaml");
    std::fs::write(&path, content).unwrap();
    path
}

const UNREACHABLE: &str = "postgres://u:Pa55w0rdX@127.0.0.1:1/x";

/// Defect 1: `verify` against an unreachable database exits 2 with the reason; it does not
/// verify an empty memory store and report success.
#[test]
fn verify_with_unreachable_database_exits_2_with_the_reason() {
    let out = ledger(
        &[("LEDGER_BACKEND", "postgres"), ("LEDGER_DSN", UNREACHABLE)],
        &["verify"],
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(
        out.status.code(),
        Some(2),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert!(!stdout.contains("verified"), "{stdout}");
    assert!(stderr.contains("database unavailable"), "{stderr}");
    assert!(!stderr.contains("Pa55w0rdX") && !stdout.contains("Pa55w0rdX"));
}

/// Defect 1: `health` against an unreachable database is down (exit 2) with the reason, not
/// a memory fallback.
#[test]
fn health_with_unreachable_database_is_down() {
    let out = ledger(
        &[("LEDGER_BACKEND", "postgres"), ("LEDGER_DSN", UNREACHABLE)],
        &["health", "--json"],
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(report["status"], "down");
    assert!(
        report["reasons"][0]
            .as_str()
            .unwrap()
            .contains("database unavailable"),
        "{report}"
    );
    assert!(!stdout.contains("Pa55w0rdX") && !stderr.contains("Pa55w0rdX"));
}

/// Defect 2: a missing database (3D000) or an unknown role (28000) is a configuration error
/// (exit 2, "access refused"), not an outage served from memory.
#[test]
fn missing_database_or_role_is_refused_not_served_from_memory() {
    let server = url::Url::parse(&server_dsn()).unwrap();
    let mut no_db = server.clone();
    no_db.set_path("/avl_no_such_database_8");
    let mut no_role = server;
    no_role.set_username("avl_no_such_role_8").unwrap();
    for dsn in [no_db.to_string(), no_role.to_string()] {
        for cmd in ["verify", "health"] {
            let out = ledger(
                &[("LEDGER_BACKEND", "postgres"), ("LEDGER_DSN", &dsn)],
                &[cmd],
            );
            let (stdout, stderr) = text(&out);
            assert_eq!(out.status.code(), Some(2), "{cmd} {dsn}: {stdout}{stderr}");
            assert!(
                format!("{stdout}{stderr}").contains("database access refused"),
                "{cmd} {dsn}: {stdout}{stderr}"
            );
        }
    }
}

/// Defect 3: an empty file, a file without `ledger:` (a misspelled `ledgr:`), a YAML list,
/// and an absurd LEDGER_TIMEOUT are each refused with exit 2 and a message naming the
/// problem (and the line for the list).
#[test]
fn misconfigurations_are_refused_naming_the_key_or_line() {
    /// Environment, configuration file, and the words the error must contain.
    type Case<'a> = (Vec<(&'a str, &'a str)>, Option<PathBuf>, Vec<&'a str>);
    let cases: Vec<Case> = vec![
        (vec![], Some(yaml("")), vec!["empty", "ledger:"]),
        (vec![], Some(yaml("# only a comment\n")), vec!["empty"]),
        (
            vec![],
            Some(yaml("ledgr:\n  backend: postgres\n")),
            vec!["no `ledger:` section", "ledgr"],
        ),
        (
            vec![],
            Some(yaml("# a list\n- backend: postgres\n")),
            vec!["line 2", "a list"],
        ),
        (
            vec![("LEDGER_TIMEOUT", "1e9")],
            None,
            vec!["timeout", "out of range"],
        ),
        (
            vec![("LEDGER_POOL_SIZE", "0")],
            None,
            vec!["pool_size", "out of range"],
        ),
        (
            vec![],
            Some(yaml("ledger:\n  batch_size: 100000000\n")),
            vec!["batch_size", "out of range"],
        ),
    ];
    for (env, file, wanted) in cases {
        let mut args = Vec::new();
        let path;
        if let Some(f) = &file {
            path = f.display().to_string();
            args.extend(["--config", path.as_str()]);
        }
        args.push("verify");
        let out = ledger(&env, &args);
        let (stdout, stderr) = text(&out);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{env:?} {file:?}: {stdout}{stderr}"
        );
        for w in wanted {
            assert!(
                stderr.contains(w),
                "{env:?} {file:?}: {w:?} not in {stderr}"
            );
        }
        assert!(!stdout.contains("verified"), "{stdout}");
    }
}

/// Defect 3: a file with `backend: postgres` takes its DSN from LEDGER_DSN (checked once,
/// after both): the error is the unreachable database, not a missing DSN.
#[test]
fn file_backend_with_dsn_from_the_environment_is_accepted() {
    let file = yaml("ledger:\n  backend: postgres\n");
    let out = ledger(
        &[("LEDGER_DSN", UNREACHABLE)],
        &["--config", file.to_str().unwrap(), "verify"],
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    assert!(!stderr.contains("no dsn"), "{stderr}");
    assert!(stderr.contains("database unavailable"), "{stderr}");
}

/// Defect 3: LEDGER_DSN without any backend warns which backend runs and why.
#[test]
fn dsn_without_backend_warns_that_memory_runs() {
    let out = ledger(&[("LEDGER_DSN", UNREACHABLE)], &["health"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stderr.contains("MEMORY backend") && stderr.contains("LEDGER_BACKEND=postgres"),
        "{stderr}"
    );
    assert!(!stderr.contains("Pa55w0rdX"), "{stderr}");
}

/// Defect 4: a DSN typed where it does not belong — under YAML `backend:`, in
/// LEDGER_BACKEND, without a scheme, in a number — never shows its password.
#[test]
fn a_misplaced_dsn_never_shows_its_password() {
    let secret = "S3cr3tPw";
    let dsn = format!("postgres://user:{secret}@db.example:5432/avl");
    let no_scheme = format!("user:{secret}@db.example:5432/avl");
    let keyword = format!("host=db user=u password={secret}");
    let files = [
        format!("ledger:\n  backend: {dsn}\n"),
        format!("ledger:\n  backend: postgres\n  dsn: {no_scheme}\n"),
        format!("ledger:\n  pool_size: {dsn}\n"),
        format!("ledger:\n  timeout: \"{dsn}\"\n"),
        format!("ledger:\n  dsn: \"{keyword}\"\n"),
        format!("ledger:\n  backend: postgres\n  dsn: \"mysql://u:{secret}@h/d\"\n"),
    ];
    for content in &files {
        let file = yaml(content);
        let out = ledger(&[], &["--config", file.to_str().unwrap(), "health"]);
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{content}: {stdout}{stderr}");
        assert!(
            stderr.contains("configuration error"),
            "{content}: {stderr}"
        );
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "{content}: {stdout}{stderr}"
        );
    }
    for (var, value) in [
        ("LEDGER_BACKEND", dsn.as_str()),
        ("LEDGER_DSN", no_scheme.as_str()),
        ("LEDGER_DSN", keyword.as_str()),
        ("LEDGER_POOL_SIZE", dsn.as_str()),
        ("LEDGER_TIMEOUT", dsn.as_str()),
    ] {
        let out = ledger(&[(var, value)], &["health"]);
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{var}: {stdout}{stderr}");
        assert!(stderr.contains(var), "{var}: {stderr}");
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "{var}={value}: {stdout}{stderr}"
        );
    }
}
