//! `ledger tail` through the binary against a real PostgreSQL (a database per test): every
//! integrated record once in position order, as `ledger export` writes it; `--after` resumes
//! exactly after a position; `--follow` goes on live until SIGINT (exit 0); a reader that
//! goes away ends it cleanly; the memory backend is refused.

#![allow(clippy::unwrap_used, reason = "a test fails loudly by design")]

#[path = "../../integration-tests/tests/common/mod.rs"]
mod common;
mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use common::TestContext;
use serde_json::{Value, json};
use support::{command, json_lines, ledger, stderr};
use uuid::Uuid;

fn input(anchors: &[Uuid], per_anchor: usize, from: usize) -> String {
    let mut lines = String::new();
    for i in from..from + per_anchor {
        for a in anchors {
            lines.push_str(
                &json!({ "anchor_id": a, "slot": "s", "kind": "event", "payload": { "n": i }, "producer": "cli" })
                    .to_string(),
            );
            lines.push('\n');
        }
    }
    lines
}

/// The positions of `lines` are `first, first + 1, …`.
fn assert_positions(lines: &[Value], first: u64) {
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["position"], first + i as u64, "line {i}: {l}");
    }
}

#[actix_rt::test]
async fn tail_prints_the_log_in_order_resumes_and_follows() {
    let ctx = TestContext::new("cli_tail").await;
    let anchors: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
    // `ledger append` integrates everything before it exits.
    let out = ledger(&ctx.dsn, &["append"], &input(&anchors, 10, 0));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let out = ledger(&ctx.dsn, &["tail", "--json"], "");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 30);
    assert_positions(&lines, 0);
    assert!(stderr(&out).contains("tailed 30 records, last position 29"));

    // Each record exactly as `ledger export` writes it.
    let export = ledger(&ctx.dsn, &["export"], "");
    assert_eq!(export.status.code(), Some(0), "{}", stderr(&export));
    let exported: HashMap<String, Value> = json_lines(&export)
        .into_iter()
        .filter(|l| l.get("rid").is_some())
        .map(|l| (l["rid"].as_str().unwrap().to_owned(), l))
        .collect();
    assert_eq!(exported.len(), 30);
    for l in &lines {
        let rid = l["record"]["rid"].as_str().unwrap();
        assert_eq!(l["record"], exported[rid], "record {rid}");
    }

    // --after: exactly the records after that position.
    let out = ledger(&ctx.dsn, &["tail", "--json", "--after", "11"], "");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let after = json_lines(&out);
    assert_eq!(after, lines[12..].to_vec());
    // One anchor, text output: its records only, with their log positions.
    let out = ledger(&ctx.dsn, &["tail", "--anchor", &anchors[1].to_string()], "");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    let positions: Vec<u64> = text
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f[1], anchors[1].to_string());
            f[0].parse().unwrap()
        })
        .collect();
    let want: Vec<u64> = lines
        .iter()
        .filter(|l| l["record"]["anchor_id"] == anchors[1].to_string())
        .map(|l| l["position"].as_u64().unwrap())
        .collect();
    assert_eq!(positions, want);

    // --follow: records appended by another process arrive live; SIGINT ends it with 0.
    let mut follow = command(&ctx.dsn, &["tail", "--json", "--follow", "--after", "29"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = ledger(&ctx.dsn, &["append"], &input(&anchors, 4, 10));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mut reader = BufReader::new(follow.stdout.take().unwrap());
    let mut live = Vec::new();
    for _ in 0..12 {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).unwrap() > 0, "tail ended early");
        live.push(serde_json::from_str::<Value>(&line).unwrap());
    }
    assert_positions(&live, 30);
    let pid = follow.id().to_string();
    let kill = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = follow.wait().unwrap();
    assert_eq!(status.code(), Some(0), "SIGINT is a clean exit");

    // A reader that goes away (`| head -1`) ends a following tail without an error.
    let mut follow = command(&ctx.dsn, &["tail", "--json", "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(follow.stdout.take().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert_eq!(serde_json::from_str::<Value>(&line).unwrap()["position"], 0);
    drop(reader);
    // New records make it write to the closed pipe.
    let out = ledger(&ctx.dsn, &["append"], &input(&anchors, 2, 14));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let waited = tokio::task::spawn_blocking(move || follow.wait_with_output().unwrap());
    let done = tokio::time::timeout(Duration::from_secs(60), waited)
        .await
        .expect("tail did not end after its reader went away")
        .unwrap();
    let err = String::from_utf8_lossy(&done.stderr).into_owned();
    assert_eq!(done.status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    ctx.teardown().await;
}

/// The memory backend has no log outside its process: refused with a reason, exit 2.
#[test]
fn tail_refuses_the_memory_backend() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ledger"))
        .env_remove("LEDGER_BACKEND")
        .env_remove("LEDGER_DSN")
        .env_remove("LEDGER_CONFIG")
        .args(["tail"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("memory backend"));
}
