//! The `ledger` binary: `health` output and exit codes, and `--metrics-addr` errors.

#![allow(clippy::unwrap_used, reason = "a test fails loudly by design")]

use std::net::TcpListener;
use std::process::{Command, Output};

/// Runs `ledger ARGS` with no LEDGER_* variables from the environment.
fn ledger(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ledger"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("LEDGER_") {
            cmd.env_remove(key);
        }
    }
    cmd.args(args).output().unwrap()
}

/// `ledger health --json` on the default (memory) configuration prints one JSON object with
/// status healthy and exits 0.
#[test]
fn health_json_on_memory_is_healthy_exit_0() {
    let out = ledger(&["health", "--json"]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(report["status"], "healthy");
    assert_eq!(report["backend_configured"], "memory");
    assert_eq!(report["database_reachable"], serde_json::Value::Null);
    assert_eq!(report["reasons"], serde_json::json!([]));
}

/// The text report starts with the status line.
#[test]
fn health_text_starts_with_status() {
    let out = ledger(&["health"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .starts_with("status: healthy\n")
    );
}

/// A `--metrics-addr` that cannot be bound stops the command before it runs: exit 2 and
/// the address in the message.
#[test]
fn taken_metrics_addr_exits_2_naming_the_address() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = ledger(&["--metrics-addr", &addr, "health"]);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&addr) && stderr.contains("cannot bind"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "the command must not have run");
}
