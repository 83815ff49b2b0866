//! Several `ledger loadtest` processes on shared anchors through a real stop of their
//! PostgreSQL server (a dedicated cluster made by `support/cluster.rs`; the shared `main`
//! cluster is never touched): `pg_ctlcluster stop -m immediate` (or `-m fast`), about 4 s
//! down, start. Every process must fail over, buffer, drain (re-chaining onto the heads the
//! other processes wrote meanwhile) and exit 0: no failed append, and every record it
//! acknowledged stored exactly once, in its anchor, with its content and its final hash (the
//! load test's own by-rid check, `--anchor-seed`). The test checks the rows in SQL too.

#![allow(clippy::unwrap_used, reason = "a test fails loudly by design")]

#[path = "../../integration-tests/tests/support/cluster.rs"]
mod cluster;
mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cluster::Cluster;
use serde_json::Value;

/// Appending time of each process; the stop comes `STOP_AFTER` into it, for `DOWN_FOR`.
const RUN_FOR: &str = "7s";
const STOP_AFTER: Duration = Duration::from_secs(2);
const DOWN_FOR: Duration = Duration::from_secs(4);
/// Longest a process may take (appends, drain, check) before the test fails: generous, as
/// the processes of a debug build share the machine's cores.
const PROCESS_LIMIT: Duration = Duration::from_secs(120);

fn loadtest(dsn: &str, seed: &str) -> Child {
    support::command(
        dsn,
        &[
            "loadtest",
            "--anchors",
            "20",
            // Few appenders: what the outage buffers is what the drain must write, and a
            // debug build drains slowly; the interleaving across processes is what matters.
            "--concurrency",
            "8",
            "--duration",
            RUN_FOR,
            "--anchor-seed",
            seed,
            "--json",
        ],
    )
    // The log's integrator is not what this test is about (its own outage tests cover it).
    .env("LEDGER_CHECKPOINT_INTERVAL", "0")
    .env("LEDGER_POOL_SIZE", "4")
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap()
}

fn pg_ctl(cluster: &Cluster, args: &[&str]) {
    let version = std::fs::read_dir("/etc/postgresql")
        .unwrap()
        .filter_map(|d| d.ok())
        .map(|d| d.file_name().to_string_lossy().into_owned())
        .filter(|v| v.chars().all(|c| c.is_ascii_digit()))
        .max_by_key(|v| v.parse::<u32>().unwrap_or(0))
        .unwrap();
    let out = Command::new("pg_ctlcluster")
        .args(["--skip-systemctl-redirect", &version, &cluster.name])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pg_ctlcluster {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `processes` load tests on one seed, stops the server (`mode`) while they append,
/// starts it again, and checks every outcome.
fn through_a_stop(processes: usize, mode: &str) {
    let cluster = Cluster::primary("realstop", &[]);
    cluster.sql("CREATE DATABASE ledger");
    let dsn = cluster.dsn("ledger");
    let out = support::ledger(&dsn, &["migrate", "up"], "");
    assert!(out.status.success(), "migrate: {out:?}");

    let seed = processes.to_string();
    let children: Vec<Child> = (0..processes).map(|_| loadtest(&dsn, &seed)).collect();
    std::thread::sleep(STOP_AFTER);
    pg_ctl(&cluster, &["stop", "-m", mode]);
    std::thread::sleep(DOWN_FOR);
    cluster.start();

    let deadline = Instant::now() + PROCESS_LIMIT;
    // Each child's output is read while it runs (a re-chain is logged per record: a full
    // stderr pipe would stall the child).
    let waiters: Vec<(u32, std::sync::mpsc::Receiver<std::process::Output>)> = children
        .into_iter()
        .map(|child| {
            let pid = child.id();
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let _ = tx.send(child.wait_with_output().unwrap());
            });
            (pid, rx)
        })
        .collect();
    let mut appends = 0u64;
    let mut rechained = 0u64;
    for (pid, rx) in waiters {
        let Ok(out) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) else {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("a load test ran longer than {PROCESS_LIMIT:?}");
        };
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        // Its tail: every re-chained record has a line.
        let stderr = &stderr[stderr.floor_char_boundary(stderr.len().saturating_sub(4000))..];
        let report: Value = serde_json::from_str(stdout.trim())
            .unwrap_or_else(|e| panic!("load test JSON ({e}): {stdout}\n{stderr}"));
        assert!(
            out.status.success(),
            "a load test exited {:?}: {report}\n{stderr}",
            out.status
        );
        assert_eq!(report["errors"], 0, "{report}");
        assert_eq!(report["records_missing"], 0, "{report}");
        assert_eq!(report["continuity_breaks"], 0, "{report}");
        assert_eq!(report["buffered_not_in_postgres"], 0, "{report}");
        assert!(
            report["failovers"].as_u64().unwrap() >= 1,
            "the stop went unnoticed: {report}"
        );
        appends += report["appends"].as_u64().unwrap();
        rechained += report["acks_rechained"].as_u64().unwrap();
    }
    assert!(appends > 0);
    // Every acknowledged append is a row, each rid once (the load tests checked each of
    // their own by rid: content, anchor and final hash).
    let counts = cluster.sql_in(
        "ledger",
        "SELECT count(*) || ' ' || count(DISTINCT rid) FROM ledger_records",
    );
    assert_eq!(counts.trim(), format!("{appends} {appends}"));
    // Every chain continuous (the database's fork guard refuses forks by itself).
    let verify = support::ledger(&dsn, &["verify"], "");
    assert!(verify.status.success(), "verify: {verify:?}");
    eprintln!(
        "{processes} processes through a {mode} stop: {appends} appends, {rechained} acknowledged records re-chained"
    );
}

#[test]
fn two_processes_through_an_immediate_stop() {
    through_a_stop(2, "immediate");
}

#[test]
fn four_processes_through_a_fast_stop() {
    through_a_stop(4, "fast");
}
